"""The CLI in-process against moto: fast checks of behaviour a user sees."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from s3_multipart_upload.main import cli
from s3_multipart_upload.plan import MiB
from s3_multipart_upload.sources import FileSource
from s3_multipart_upload.state import Meta, PartRecord, PartsLog, write_meta
from tests.conftest import sent_parts, upload_args, write_random

BUCKET = "moto-bucket"


@pytest.fixture
def s3(aws_env: dict[str, str]) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def obj(s3: Any, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_round_trip_in_parts(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 17 * MiB + 3)
    r = invoke(*upload_args(BUCKET, "a/f.bin", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "-t", "3"))
    assert r.exit_code == 0, r.output
    assert obj(s3, "a/f.bin") == f.read_bytes()
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["status"] == "completed" and meta["partCount"] == 4 and meta["splitSize"] == 5 * MiB
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert sorted(x["partNumber"] for x in lines) == [1, 2, 3, 4]
    assert sent_parts(r.stderr) == [1, 2, 3, 4]


def test_rerun_after_completion_sends_nothing(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 11 * MiB)
    args = upload_args(BUCKET, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M")
    assert invoke(*args).exit_code == 0
    r = invoke(*args)
    assert r.exit_code == 0
    assert "already complete" in r.stderr and sent_parts(r.stderr) == []


@pytest.mark.parametrize("size", [0, 1, 5 * MiB])
def test_empty_and_small_files_go_in_one_put(s3: Any, tmp_path: Path, size: int) -> None:
    f = write_random(tmp_path / "f.bin", size)
    r = invoke(*upload_args(BUCKET, "small", f, tmp_path / "m.json", tmp_path / "p.jsonl"))
    assert r.exit_code == 0, r.output
    assert obj(s3, "small") == f.read_bytes()
    assert json.loads((tmp_path / "m.json").read_text())["uploadId"] is None


def _start_by_hand(s3: Any, f: Path, meta_path: Path, parts_path: Path, key: str, upload: list[int],
                   log: list[int]) -> str:
    """An upload that a killed run left behind: parts ``upload`` on the server, parts ``log`` in the log."""
    source = FileSource(f)
    plan = source.plan(5 * MiB, fixed=True)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    write_meta(meta_path, Meta(BUCKET, key, upload_id, 5 * MiB, source=source.identity(), part_count=len(plan.parts),
                               checksum_algorithm="MD5"))
    with PartsLog(parts_path) as plog:
        for n in upload:
            part = plan.parts[n - 1]
            etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=n,
                                  Body=source.read(part))["ETag"].strip('"')
            if n in log:
                plog.append(PartRecord(etag, n, upload_id, part.length))
    return str(upload_id)


def test_resume_sends_only_missing_parts_and_adopts_unlogged_ones(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 21 * MiB)  # 5 parts of 5 MiB
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    _start_by_hand(s3, f, meta, parts, "k", upload=[1, 2, 4], log=[1, 2])
    r = invoke(*upload_args(BUCKET, "k", f, meta, parts))
    assert r.exit_code == 0, r.output
    assert sent_parts(r.stderr) == [3, 5]
    assert "Adopted 1 parts" in r.stderr and "2 parts have already been uploaded" in r.stderr
    assert obj(s3, "k") == f.read_bytes()


def test_a_part_on_the_server_with_other_bytes_is_sent_again(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 11 * MiB)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    upload_id = _start_by_hand(s3, f, meta, parts, "k", upload=[1], log=[])
    s3.upload_part(Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=2, Body=b"x" * (5 * MiB))  # wrong bytes
    r = invoke(*upload_args(BUCKET, "k", f, meta, parts))
    assert r.exit_code == 0, r.output
    assert sent_parts(r.stderr) == [2, 3]
    assert obj(s3, "k") == f.read_bytes()


def test_chunk_folder_is_one_object(s3: Any, tmp_path: Path) -> None:
    data = write_random(tmp_path / "all.bin", 13 * MiB).read_bytes()
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    for i, off in enumerate(range(0, len(data), 6 * MiB)):
        (chunks / f"input_data_{i:02d}").write_bytes(data[off:off + 6 * MiB])
    (chunks / "other").write_bytes(b"not mine")
    r = invoke(*upload_args(BUCKET, "joined", chunks, tmp_path / "m.json", tmp_path / "p.jsonl", "-p", "input_data_"))
    assert r.exit_code == 0, r.output
    assert obj(s3, "joined") == data


@pytest.mark.parametrize("size", [1 * MiB, 11 * MiB])  # one PutObject; a multipart upload
def test_no_such_bucket_exits_5_naming_it(s3: Any, tmp_path: Path, size: int) -> None:
    f = write_random(tmp_path / "f.bin", size)
    r = invoke(*upload_args("no-such-bucket", "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M"))
    assert r.exit_code == 5
    assert "bucket 'no-such-bucket' does not exist" in r.stderr
    assert not (tmp_path / "m.json").exists()


def test_changed_file_stops_before_sending(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 11 * MiB)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    _start_by_hand(s3, f, meta, parts, "k", upload=[1], log=[1])
    before = meta.read_text(), parts.read_text()
    with open(f, "ab") as fh:
        fh.write(b"more")
    r = invoke(*upload_args(BUCKET, "k", f, meta, parts))
    assert r.exit_code == 3
    assert f"{f} changed since the upload began" in r.stderr and "--restart" in r.stderr
    assert (meta.read_text(), parts.read_text()) == before


def test_aborted_upload_exits_4_and_restart_starts_over_keeping_the_old_log(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 11 * MiB)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    upload_id = _start_by_hand(s3, f, meta, parts, "k", upload=[1], log=[1])
    s3.abort_multipart_upload(Bucket=BUCKET, Key="k", UploadId=upload_id)
    args = upload_args(BUCKET, "k", f, meta, parts)
    r = invoke(*args)
    assert r.exit_code == 4
    assert "no longer exists" in r.stderr and "--restart" in r.stderr
    r = invoke(*args, "--restart")
    assert r.exit_code == 0, r.output
    assert obj(s3, "k") == f.read_bytes()
    kept = [p for p in os.listdir(tmp_path) if p.startswith("p.jsonl.") and p.endswith(".old")]
    assert len(kept) == 1 and upload_id in (tmp_path / kept[0]).read_text()


def test_restart_after_the_file_changed_uploads_the_new_bytes(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 11 * MiB)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    _start_by_hand(s3, f, meta, parts, "k", upload=[1], log=[1])
    write_random(f, 12 * MiB, seed=99)
    args = upload_args(BUCKET, "k", f, meta, parts)
    assert invoke(*args).exit_code == 3
    r = invoke(*args, "--restart")
    assert r.exit_code == 0, r.output
    assert obj(s3, "k") == f.read_bytes()


def test_a_historical_upload_completed_before_the_file_changed_is_not_taken_for_done(s3: Any, tmp_path: Path) -> None:
    """META of the old tool (no file identity), object completed from v1, file now v2 of the same size."""
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=1)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k")["UploadId"]
    data = f.read_bytes()
    done = []
    for n, off in enumerate(range(0, len(data), 5 * MiB), start=1):
        etag = s3.upload_part(Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=n,
                              Body=data[off:off + 5 * MiB])["ETag"]
        done.append({"PartNumber": n, "ETag": etag})
    s3.complete_multipart_upload(Bucket=BUCKET, Key="k", UploadId=upload_id, MultipartUpload={"Parts": done})
    meta.write_text(json.dumps({"bucket": BUCKET, "key": "k", "uploadId": upload_id, "splitSize": 5 * MiB}))
    parts.write_text("".join(json.dumps({"eTag": d["ETag"].strip('"'), "partNumber": d["PartNumber"],
                                         "uploadId": upload_id}) + "\n" for d in done))
    write_random(f, 11 * MiB, seed=2)
    r = invoke(*upload_args(BUCKET, "k", f, meta, parts))
    assert r.exit_code == 4, r.output
    assert json.loads(meta.read_text()).get("status", "in_progress") != "completed"


@pytest.mark.parametrize(("asked", "said"), [
    (["--checksum", "MD5"], "This upload was started with --checksum CRC32; it keeps it (not MD5)"),
    ([], "Checksum CRC32: kept from the upload in progress"),  # auto: the upload's own, without a warning
], ids=["explicit", "auto"])
def test_the_checksum_of_an_upload_is_kept_on_resume(s3: Any, tmp_path: Path, asked: list[str], said: str) -> None:
    import base64
    import zlib

    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=3)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    source = FileSource(f)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    write_meta(meta, Meta(BUCKET, "k", upload_id, 5 * MiB, source=source.identity(), part_count=3,
                          checksum_algorithm="CRC32"))
    first = source.read(source.plan(5 * MiB, fixed=True).parts[0])
    crc = base64.b64encode(zlib.crc32(first).to_bytes(4, "big")).decode()
    etag = s3.upload_part(Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=1, Body=first,
                          ChecksumCRC32=crc)["ETag"].strip('"')
    with PartsLog(parts) as plog:
        plog.append(PartRecord(etag, 1, upload_id, 5 * MiB))
    dry = invoke(*upload_args(BUCKET, "k", f, meta, parts, *asked, "--dry-run"))
    assert "checksum:   CRC32 (kept from the upload in progress (meta file))" in dry.stdout, dry.output
    r = invoke(*upload_args(BUCKET, "k", f, meta, parts, *asked))
    assert r.exit_code == 0, r.output
    assert said in r.stderr
    assert ("it keeps it" in r.stderr) == bool(asked)
    assert obj(s3, "k") == f.read_bytes()


def test_no_overwrite_rerun_after_a_kill_between_completion_and_meta_exits_0(s3: Any, tmp_path: Path) -> None:
    """The object at the key is this upload's own result: --no-overwrite must not refuse it on the rerun."""
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=31)
    meta = tmp_path / "m.json"
    args = upload_args(BUCKET, "k", f, meta, tmp_path / "p.jsonl", "-s", "5M", "--no-overwrite")
    assert invoke(*args).exit_code == 0
    record = json.loads(meta.read_text())
    record["status"] = "in_progress"  # as if killed after CompleteMultipartUpload, before META was rewritten
    meta.write_text(json.dumps(record))
    r = invoke(*args)
    assert r.exit_code == 0, r.stderr
    assert "already completed by an earlier run" in r.stderr and sent_parts(r.stderr) == []
    assert json.loads(meta.read_text())["status"] == "completed"


def test_no_overwrite_one_part_already_there_is_done_and_a_different_one_is_refused(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 1 * MiB, seed=32)
    s3.put_object(Bucket=BUCKET, Key="same", Body=f.read_bytes())  # an earlier run's PutObject, killed before META
    r = invoke(*upload_args(BUCKET, "same", f, tmp_path / "m.json", tmp_path / "p.jsonl", "--no-overwrite"))
    assert r.exit_code == 0, r.stderr
    assert "already holds exactly this data" in r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["status"] == "completed"

    s3.put_object(Bucket=BUCKET, Key="other", Body=b"someone else's")
    r = invoke(*upload_args(BUCKET, "other", f, tmp_path / "m2.json", tmp_path / "p2.jsonl", "--no-overwrite"))
    assert r.exit_code == 3
    assert "an object already exists at s3://moto-bucket/other and --no-overwrite was given" in r.stderr
    assert obj(s3, "other") == b"someone else's"


@pytest.mark.parametrize(("option", "value", "message"), [
    ("-b", "Bad_Bucket!", "was refused before sending"),
    ("--endpoint-url", "notaurl", "Invalid endpoint: notaurl (--endpoint-url)"),
])
def test_names_botocore_refuses_before_sending_are_bad_input(s3: Any, tmp_path: Path, option: str, value: str,
                                                             message: str) -> None:
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=33)
    args = upload_args(BUCKET, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M")
    args = [*args, option, value] if option != "-b" else [a if a != BUCKET else value for a in args]
    r = invoke(*args)
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr and "unexpected" not in r.stderr


def test_a_parts_file_that_is_a_directory_is_refused_before_anything_is_sent(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=34)
    (tmp_path / "st").mkdir()
    r = invoke(*upload_args(BUCKET, "k", f, tmp_path / "m.json", tmp_path / "st", "-s", "5M"))
    assert r.exit_code == 2
    assert f"the parts file {tmp_path / 'st'} is a directory" in r.stderr
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert not (tmp_path / "m.json").exists()


def test_a_resume_says_it_keeps_the_part_size_it_started_with(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=35)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    assert invoke(*upload_args(BUCKET, "k", f, meta, parts, "-s", "5M", "--dry-run")).exit_code == 0
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k")["UploadId"]
    write_meta(meta, Meta(bucket=BUCKET, key="k", upload_id=upload_id, split_size=5 * MiB,
                          source=FileSource(f).identity(), part_count=3, checksum_algorithm="MD5"))
    r = invoke(*upload_args(BUCKET, "k", f, meta, parts, "-s", "8M"))
    assert r.exit_code == 0, r.stderr
    assert "This upload was started with -s 5 MiB; it keeps it (not 8 MiB)." in r.stderr
    assert sent_parts(r.stderr) == [1, 2, 3]
    assert obj(s3, "k") == f.read_bytes()


def test_a_one_part_upload_warns_when_the_store_ignores_its_crc32(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 1 * MiB, seed=36)
    r = invoke(*upload_args(BUCKET, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "--checksum", "CRC32"))
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("The server did not confirm part 1's CRC32 checksum") == 1
    assert obj(s3, "k") == f.read_bytes()


def test_a_full_disk_under_the_parts_log_stops_with_75_naming_it_and_the_rerun_finishes(
        s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write_random(tmp_path / "f.bin", 21 * MiB, seed=37)
    parts = tmp_path / "p.jsonl"
    args = upload_args(BUCKET, "k", f, tmp_path / "m.json", parts, "-s", "5M", "-t", "1")
    real_fsync, calls = os.fsync, []

    def fsync(fd: int) -> None:  # the second line of the parts log meets a full disk
        if os.readlink(f"/proc/self/fd/{fd}") == str(parts):
            calls.append(fd)
            if len(calls) >= 2:
                raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    r = invoke(*args)
    assert r.exit_code == 75, r.stderr
    assert f"cannot write the parts log {parts}: No space left on device" in r.stderr
    assert "to resume, rerun" in r.stderr
    monkeypatch.setattr(os, "fsync", real_fsync)
    r = invoke(*args)
    assert r.exit_code == 0, r.stderr
    assert obj(s3, "k") == f.read_bytes()
