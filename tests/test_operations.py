"""status, abort, list, --dry-run, --upload-id and --no-overwrite against the real S3 server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from s3_multipart_upload.plan import MiB
from s3_multipart_upload.sources import FileSource
from s3_multipart_upload.state import Meta, PartRecord, PartsLog, write_meta
from tests.conftest import S3Server, run_cli, sent_parts, upload_args, write_random
from tests.s3proxy import S3Proxy

pytestmark = pytest.mark.integration


def begin(server: S3Server, bucket: str, f: Path, meta: Path | None, parts: Path | None, key: str = "k",
          upload: tuple[int, ...] = (1, 2, 3), log: tuple[int, ...] = (1, 2)) -> str:
    """What a killed run leaves: parts ``upload`` on the server, ``log`` of them in the parts log."""
    c = server.client()
    source = FileSource(f)
    plan = source.plan(5 * MiB, fixed=True)
    upload_id = str(c.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"])
    if meta is not None:
        write_meta(meta, Meta(bucket, key, upload_id, 5 * MiB, source=source.identity(), part_count=len(plan.parts),
                              checksum_algorithm="MD5"))
    records = []
    for n in upload:
        etag = c.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n,
                             Body=source.read(plan.parts[n - 1]))["ETag"].strip('"')
        if n in log:
            records.append(PartRecord(etag, n, upload_id, plan.parts[n - 1].length))
    if parts is not None:
        with PartsLog(parts) as plog:
            for r in records:
                plog.append(r)
    return upload_id


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_random(tmp_path / "f.bin", 22 * MiB, seed=41), tmp_path / "m.json", tmp_path / "p.jsonl"


def cli(server: S3Server, env: dict[str, str], *args: str) -> Any:
    return run_cli([*args, "--endpoint-url", server.endpoint], env)


def test_status_of_an_interrupted_upload(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                         files: tuple[Path, Path, Path]) -> None:
    f, meta, parts = files
    upload_id = begin(s3_server, bucket, f, meta, parts)
    r = cli(s3_server, aws_env, "status", "-m", str(meta), "-a", str(parts), "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert (st["bucket"], st["key"], st["upload_id"], st["state"]) == (bucket, "k", upload_id, "in_progress")
    assert (st["parts_done"], st["parts_total"]) == (2, 5)
    assert (st["bytes_done"], st["bytes_total"], st["percent"]) == (10 * MiB, 22 * MiB, 45.5)
    assert st["source_changed"] is False and st["source_missing"] is False
    assert (st["server"], st["server_parts"], st["server_bytes"]) == ("in_progress", 3, 15 * MiB)
    assert st["unlogged_on_server"] == [3] and st["logged_not_on_server"] == []

    r = cli(s3_server, aws_env, "status", "-m", str(meta), "-a", str(parts))
    assert r.returncode == 0
    for line in (f"upload:   s3://{bucket}/k", f"id:       {upload_id}", "parts:    2/5 done",
                 "bytes:    10 MiB of 22 MiB (45.5 %)", f"source:   {f}: unchanged",
                 "server:   upload exists, holds 3 parts (15 MiB)", "missing from the log"):
        assert line in r.stdout


def test_status_sees_a_changed_file_and_a_completed_upload(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                           files: tuple[Path, Path, Path]) -> None:
    f, meta, parts = files
    begin(s3_server, bucket, f, meta, parts)
    with f.open("ab") as fh:
        fh.write(b"!")
    st = json.loads(cli(s3_server, aws_env, "status", "-m", str(meta), "--json").stdout)
    assert st["source_changed"] is True
    f.write_bytes(f.read_bytes()[:-1])
    g = write_random(f.parent / "g.bin", 11 * MiB, seed=42)
    m2, p2 = f.parent / "m2.json", f.parent / "p2.jsonl"
    assert cli(s3_server, aws_env, *upload_args(bucket, "g", g, m2, p2, "-s", "5M")).returncode == 0
    st = json.loads(cli(s3_server, aws_env, "status", "-m", str(m2), "-a", str(p2), "--json").stdout)
    assert (st["state"], st["percent"], st["parts_done"], st["server"]) == ("completed", 100.0, 3, "not_checked")


def test_status_without_a_meta_file_exits_2(s3_server: S3Server, aws_env: dict[str, str], tmp_path: Path) -> None:
    r = cli(s3_server, aws_env, "status", "-m", str(tmp_path / "none.json"))
    assert r.returncode == 2 and "none.json does not exist" in r.stderr


def test_abort_is_idempotent_and_upload_then_says_how_to_start_over(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], files: tuple[Path, Path, Path]) -> None:
    f, meta, parts = files
    upload_id = begin(s3_server, bucket, f, meta, parts)
    r = cli(s3_server, aws_env, "abort", "-m", str(meta), "-a", str(parts))
    assert r.returncode == 0 and "Aborted the upload" in r.stdout, r.stderr
    assert json.loads(meta.read_text())["status"] == "aborted"
    with pytest.raises(s3_server.client().exceptions.NoSuchUpload):
        s3_server.client().list_parts(Bucket=bucket, Key="k", UploadId=upload_id)
    r = cli(s3_server, aws_env, "abort", "-m", str(meta))
    assert r.returncode == 0 and "already aborted" in r.stdout
    r = cli(s3_server, aws_env, *upload_args(bucket, "k", f, meta, parts))
    assert r.returncode == 4 and "was aborted" in r.stderr and "--restart" in r.stderr
    r = cli(s3_server, aws_env, *upload_args(bucket, "k", f, meta, parts, "--restart"))
    assert r.returncode == 0, r.stderr


def test_list_shows_finds_filters_and_cleans_up(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                files: tuple[Path, Path, Path]) -> None:
    f = files[0]
    a = begin(s3_server, bucket, f, None, None, key="logs/a", upload=(1, 2), log=())
    b = begin(s3_server, bucket, f, None, None, key="data/b", upload=(1,), log=())
    r = cli(s3_server, aws_env, "list", "-b", bucket)
    assert r.returncode == 0, r.stderr
    assert "logs/a" in r.stdout and a in r.stdout and "data/b" in r.stdout and b in r.stdout
    assert "2 uploads, 15 MiB in their parts." in r.stdout
    rows = [json.loads(x) for x in cli(s3_server, aws_env, "list", "-b", bucket, "--json").stdout.splitlines()]
    assert {(x["key"], x["uploadId"], x["parts"], x["bytes"]) for x in rows} == {("logs/a", a, 2, 10 * MiB),
                                                                                ("data/b", b, 1, 5 * MiB)}
    assert all(0 <= x["ageSeconds"] < 600 and x["initiated"].endswith("Z") for x in rows)
    r = cli(s3_server, aws_env, "list", "-b", bucket, "--prefix", "logs/", "--json")
    assert [json.loads(x)["key"] for x in r.stdout.splitlines()] == ["logs/a"]
    r = cli(s3_server, aws_env, "list", "-b", bucket, "--older-than", "1h")
    assert r.returncode == 0 and "No multipart uploads in progress" in r.stdout
    r = cli(s3_server, aws_env, "list", "-b", bucket, "--abort")
    assert r.returncode == 2 and "add --yes" in r.stderr
    r = cli(s3_server, aws_env, "list", "-b", bucket, "--abort", "--yes")
    assert r.returncode == 0 and f"Aborted logs/a {a}" in r.stdout
    r = cli(s3_server, aws_env, "list", "-b", bucket, "--json")
    assert r.returncode == 0 and r.stdout == ""


def test_list_rejects_a_bad_duration(s3_server: S3Server, bucket: str, aws_env: dict[str, str]) -> None:
    r = cli(s3_server, aws_env, "list", "-b", bucket, "--older-than", "soon")
    assert r.returncode == 2 and "'soon' is not a duration" in r.stderr


def test_dry_run_prints_the_plan_and_sends_nothing(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                   files: tuple[Path, Path, Path]) -> None:
    f, meta, parts = files
    proxy = S3Proxy(s3_server.endpoint)
    try:
        args = upload_args(bucket, "k", f, meta, parts, "-s", "5M", "-t", "4", "--dry-run", endpoint=proxy.endpoint)
        r = run_cli(args, aws_env)
        assert r.returncode == 0, r.stderr
        for line in ("data:       22 MiB (23068672 bytes)", "part size:  5 MiB (as asked (-s))",
                     "parts:      5, the last 2 MiB", "memory bound 4 MiB of part data in flight",
                     "checksum:   CRC64NVME or MD5 (auto: 127.0.0.1 is not known to verify CRC64NVME; after "
                     "CreateMultipartUpload one empty UploadPart with a wrong CRC64NVME asks it.",
                     "requests:   1 CreateMultipartUpload, 6 UploadPart, 1 CompleteMultipartUpload, and a HeadObject"):
            assert line in r.stdout
        plan = json.loads(run_cli([*args, "--json"], aws_env).stdout)
        assert (plan["parts"], plan["partSize"], plan["memoryBound"], plan["bytesToSend"]) == (
            5, 5 * MiB, 4 * MiB, 22 * MiB)
        assert proxy.seen == [] and not meta.exists() and not parts.exists()
        r = run_cli(upload_args(bucket, "k", f, meta, parts, "-s", "1M", "--dry-run", endpoint=proxy.endpoint),
                    aws_env)
        assert r.returncode == 2 and "below S3's minimum part size" in r.stderr
    finally:
        proxy.close()


def test_upload_id_adopts_an_upload_whose_meta_was_lost(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                        files: tuple[Path, Path, Path]) -> None:
    f, meta, parts = files
    upload_id = begin(s3_server, bucket, f, None, None, upload=(1, 2, 4), log=())
    c = s3_server.client()
    c.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=4, Body=b"?" * (5 * MiB))  # wrong bytes
    r = cli(s3_server, aws_env, *upload_args(bucket, "k", f, meta, parts, "--upload-id", upload_id))
    assert r.returncode == 0, r.stderr
    assert "Adopting multipart upload" in r.stderr and "Adopted 2 parts" in r.stderr
    assert sent_parts(r.stderr) == [3, 4, 5]
    assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == f.read_bytes()
    r = cli(s3_server, aws_env, *upload_args(bucket, "k2", f, meta.with_name("x.json"), parts, "--upload-id", "nope"))
    assert r.returncode == 4 and "there is no multipart upload nope" in r.stderr


@pytest.mark.parametrize("size", [1 * MiB, 12 * MiB], ids=["put", "multipart"])
def test_no_overwrite(s3_server: S3Server, bucket: str, aws_env: dict[str, str], files: tuple[Path, Path, Path],
                      size: int) -> None:
    f, meta, parts = files
    f.write_bytes(f.read_bytes()[:size])
    s3_server.client().put_object(Bucket=bucket, Key="taken", Body=b"old")
    proxy = S3Proxy(s3_server.endpoint)
    try:
        r = run_cli(upload_args(bucket, "taken", f, meta, parts, "-s", "5M", "--no-overwrite",
                                endpoint=proxy.endpoint), aws_env)
        assert r.returncode == 3 and "an object already exists at s3://" in r.stderr
        assert sum(proxy.part_puts().values()) == 0 and not any(s.method == "PUT" for s in proxy.seen)
        assert s3_server.client().get_object(Bucket=bucket, Key="taken")["Body"].read() == b"old"
        r = run_cli(upload_args(bucket, "free", f, meta, parts, "-s", "5M", "--no-overwrite",
                                endpoint=proxy.endpoint), aws_env)
        assert r.returncode == 0, r.stderr
    finally:
        proxy.close()


def test_upload_id_checks_old_log_lines_against_the_file(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                         files: tuple[Path, Path, Path]) -> None:
    """META lost, the file edited in place (same size), the old parts log still there: nothing is trusted."""
    f, meta, parts = files
    upload_id = begin(s3_server, bucket, f, meta, parts, upload=(1, 2), log=(1, 2))
    meta.unlink()
    write_random(f, 22 * MiB, seed=43)
    r = cli(s3_server, aws_env, *upload_args(bucket, "k", f, meta, parts, "--upload-id", upload_id))
    assert r.returncode == 0, r.stderr
    assert sent_parts(r.stderr) == [1, 2, 3, 4, 5]
    assert s3_server.client().get_object(Bucket=bucket, Key="k")["Body"].read() == f.read_bytes()
