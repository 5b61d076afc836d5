"""Real bytes to a real S3 API server over HTTP (`rclone serve s3`), the CLI as a separate process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import S3Server, run_cli, sent_parts, upload_args, write_random
from tests.s3proxy import Fault, S3Proxy, Seen

pytestmark = pytest.mark.integration


def stored(server: S3Server, bucket: str, key: str) -> bytes:
    return bytes(server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.mark.parametrize("checksum", ["MD5", "CRC32", "SHA256"])
def test_round_trip_is_byte_identical(s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path,
                                      checksum: str) -> None:
    f = write_random(tmp_path / "f.bin", 23 * MiB + 7, seed=1)
    r = run_cli(upload_args(bucket, "dir/f.bin", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "-t", "4",
                            "--checksum", checksum, endpoint=s3_server.endpoint), aws_env)
    assert r.returncode == 0, r.stderr
    assert stored(s3_server, bucket, "dir/f.bin") == f.read_bytes()
    assert sent_parts(r.stderr) == [1, 2, 3, 4, 5]
    assert json.loads((tmp_path / "m.json").read_text())["checksumAlgorithm"] == checksum


@pytest.mark.parametrize(("content_md5", "said"), [
    ("0", "Part 2 reached the server damaged"),  # MD5 by ETag: stored damaged, caught by its ETag, sent again
    ("1", "UploadPart 2: UploadPart failed: BadDigest"),  # Content-MD5 (the fallback): refused on arrival
], ids=["etag", "content-md5"])
def test_a_part_damaged_in_transit_is_caught_and_sent_again(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path, content_md5: str, said: str) -> None:
    proxy = S3Proxy(s3_server.endpoint, rule=lambda seen, i: Fault(corrupt=True) if seen.part_number == 2
                    and sum(1 for s in proxy.seen[:i] if s.part_number == 2) == 0 else None)
    try:
        f = write_random(tmp_path / "f.bin", 12 * MiB, seed=2)
        r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                                endpoint=proxy.endpoint), aws_env | {"S3MU_CONTENT_MD5": content_md5})
        assert r.returncode == 0, r.stderr
        assert proxy.part_puts() == {1: 1, 2: 2, 3: 1}
        assert said in r.stderr
        assert stored(s3_server, bucket, "k") == f.read_bytes()
    finally:
        proxy.close()


def test_chunk_files_made_by_split(s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 20 * MiB + 5, seed=3)
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    subprocess.run(["split", "-b", "6M", str(f), str(chunks / "input_data_")], check=True)
    r = run_cli(upload_args(bucket, "joined.bin", chunks, tmp_path / "m.json", tmp_path / "p.jsonl", "-p",
                            "input_data_", endpoint=s3_server.endpoint), aws_env)
    assert r.returncode == 0, r.stderr
    assert sent_parts(r.stderr) == [1, 2, 3, 4]
    assert stored(s3_server, bucket, "joined.bin") == f.read_bytes()


def test_killed_after_completion_rerun_recognises_the_object(s3_server: S3Server, bucket: str,
                                                             aws_env: dict[str, str], tmp_path: Path) -> None:
    """Killed between CompleteMultipartUpload and the META update: the rerun verifies and marks it done."""
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=4)
    meta = tmp_path / "m.json"
    args = upload_args(bucket, "k", f, meta, tmp_path / "p.jsonl", "-s", "5M", endpoint=s3_server.endpoint)
    assert run_cli(args, aws_env).returncode == 0
    doc = json.loads(meta.read_text())
    doc["status"] = "in_progress"
    meta.write_text(json.dumps(doc))
    r = run_cli(args, aws_env)
    assert r.returncode == 0, r.stderr
    assert "already completed by an earlier run" in r.stderr and sent_parts(r.stderr) == []
    assert json.loads(meta.read_text())["status"] == "completed"


def test_historical_state_files_resume(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                       tmp_path: Path) -> None:
    """META with only bucket/key/uploadId/splitSize and PARTS lines of the old tool: parts are checked, then kept."""
    f = write_random(tmp_path / "f.bin", 16 * MiB, seed=5)
    data = f.read_bytes()
    c = s3_server.client()
    upload_id = c.create_multipart_upload(Bucket=bucket, Key="old")["UploadId"]
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    meta.write_text(json.dumps({"bucket": bucket, "key": "old", "uploadId": upload_id, "splitSize": 8 * MiB}))
    etag = c.upload_part(Bucket=bucket, Key="old", UploadId=upload_id, PartNumber=1, Body=data[:8 * MiB])["ETag"]
    parts.write_text(json.dumps({"eTag": etag.strip('"'), "partNumber": 1, "uploadId": upload_id}) + "\n")
    r = run_cli(upload_args(bucket, "old", f, meta, parts, endpoint=s3_server.endpoint), aws_env)
    assert r.returncode == 0, r.stderr
    assert sent_parts(r.stderr) == [2]
    assert stored(s3_server, bucket, "old") == data


@pytest.mark.parametrize("entry", ["console-script", "python-m", "main.py"])
def test_every_documented_way_to_run_it(s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path,
                                        entry: str) -> None:
    import os
    import sys

    repo = Path(__file__).parent.parent
    cmd = {"console-script": [str(Path(sys.executable).parent / "s3-multipart-upload")],
           "python-m": [sys.executable, "-m", "s3_multipart_upload"],
           "main.py": [sys.executable, str(repo / "s3_multipart_upload" / "main.py")]}[entry]
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=8)
    args = upload_args(bucket, entry, f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                       endpoint=s3_server.endpoint)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_env
    r = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert stored(s3_server, bucket, entry) == f.read_bytes()


def _completes(seen: Seen) -> bool:
    return seen.method == "POST" and "uploadId" in seen.query


@pytest.mark.parametrize(("store", "checksum", "heads"), [
    ("moto", "MD5", 0),  # answers md5(part ETags)-N: proof enough
    ("moto", "CRC32", 0),  # the listing taken for the completion showed each part's size; the answer names them
    ("rclone", "MD5", 1),  # rclone without streaming answers the whole object's MD5: HEAD it
    ("rclone", "CRC32", 1),  # the same answer, which names no parts
])
def test_a_completion_answer_that_proves_the_object_saves_the_head(
        s3_server: S3Server, moto_server: S3Server, aws_env: dict[str, str], tmp_path: Path, store: str,
        checksum: str, heads: int) -> None:
    """A completion ETag equal to md5(part ETags)-N proves the object: with Content-MD5 its content, with
    CRC32 (after a listing showed every part at its size) its size; otherwise the object is checked with a HEAD."""
    server = moto_server if store == "moto" else s3_server
    bucket = f"b-{store}-{checksum.lower()}-{tmp_path.name[-6:].lower().replace('_', '-')}"
    server.client().create_bucket(Bucket=bucket)
    proxy = S3Proxy(server.endpoint)
    try:
        f = write_random(tmp_path / "f.bin", 12 * MiB, seed=9)
        r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                                "--checksum", checksum, endpoint=proxy.endpoint), aws_env)
        assert r.returncode == 0, r.stderr
        assert sum(1 for s in proxy.seen if s.method == "HEAD") == heads
        assert stored(server, bucket, "k") == f.read_bytes()
        # neither store checks x-amz-checksum-crc32, and the tool says so, once
        assert r.stderr.count("The server did not confirm part") == (checksum == "CRC32")
    finally:
        proxy.close()


@pytest.mark.parametrize("checksum", ["MD5", "CRC32"])
def test_a_completion_answer_that_proves_nothing_is_checked(s3_server: S3Server, bucket: str,
                                                            aws_env: dict[str, str], tmp_path: Path,
                                                            checksum: str) -> None:
    """The proxy answers CompleteMultipartUpload with a success of its own and an ETag the parts do not make."""
    fake = ('<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>'
            '<ETag>"00000000000000000000000000000000-3"</ETag></CompleteMultipartUploadResult>')
    proxy = S3Proxy(s3_server.endpoint, rule=lambda seen, i: Fault(status=200, body=fake) if _completes(seen) else None)
    try:
        f = write_random(tmp_path / "f.bin", 12 * MiB, seed=10)
        r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                                "--checksum", checksum, endpoint=proxy.endpoint), aws_env)
    finally:
        proxy.close()
    assert r.returncode == 1, r.stderr
    assert f"s3://{bucket}/k is not there after the server said it completed it" in r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["status"] == "in_progress"
