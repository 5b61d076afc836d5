"""Every bad input: the documented exit code, a message naming the file/bucket/key and the next step,
and META, PARTS and the bucket left as they were."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from s3_multipart_upload.plan import MiB
from s3_multipart_upload.sources import FileSource
from s3_multipart_upload.state import Meta, PartRecord, PartsLog, write_meta
from tests.conftest import S3Server, run_cli, upload_args, write_random

pytestmark = pytest.mark.integration


@dataclass
class Ctx:
    tmp: Path
    server: S3Server
    bucket: str
    file: Path
    meta: Path
    parts: Path
    env: dict[str, str]

    def args(self, *extra: str, source: Path | None = None, bucket: str | None = None, meta: Path | None = None,
             parts: Path | None = None) -> list[str]:
        return upload_args(bucket or self.bucket, "k", source or self.file, meta or self.meta, parts or self.parts,
                           *extra, endpoint=self.server.endpoint)

    def start_upload(self, log_parts: int = 1, key: str = "k", bucket: str | None = None) -> str:
        """What an interrupted run leaves: an upload on the server, META, and ``log_parts`` parts logged."""
        c = self.server.client()
        source = FileSource(self.file)
        plan = source.plan(5 * MiB, fixed=True)
        upload_id = str(c.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"])
        write_meta(self.meta, Meta(bucket or self.bucket, key, upload_id, 5 * MiB, source=source.identity(),
                                   part_count=len(plan.parts), checksum_algorithm="MD5"))
        with PartsLog(self.parts) as log:
            for part in plan.parts[:log_parts]:
                etag = c.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=part.number,
                                     Body=source.read(part))["ETag"].strip('"')
                log.append(PartRecord(etag, part.number, upload_id, part.length))
        return upload_id


def _snapshot(ctx: Ctx) -> tuple[Any, ...]:
    c = ctx.server.client()
    keys = sorted(o["Key"] for o in c.list_objects_v2(Bucket=ctx.bucket).get("Contents", []))
    try:
        listing = c.list_multipart_uploads(Bucket=ctx.bucket)
    except c.exceptions.NoSuchUpload:  # rclone's answer when the bucket has none in progress
        listing = {}
    uploads = sorted(u["UploadId"] for u in listing.get("Uploads", []))
    read = lambda p: p.read_bytes() if p.exists() else None  # noqa: E731
    return read(ctx.meta), read(ctx.parts), keys, uploads


def chunks(ctx: Ctx, sizes: list[int]) -> Path:
    folder = ctx.tmp / "chunks"
    folder.mkdir(exist_ok=True)
    for i, size in enumerate(sizes):
        (folder / f"part_{i:02d}").write_bytes(b"c" * size)
    return folder


Case = tuple[str, Callable[[Ctx], list[str]], int, list[str]]

CASES: list[Case] = [
    ("missing file", lambda c: c.args(source=c.tmp / "nope.bin"), 2, ["nope.bin does not exist"]),
    ("directory as -f", lambda c: ["upload", "-b", c.bucket, "-k", "k", "-f", str(c.tmp), "-m", str(c.meta),
                                   "-a", str(c.parts)], 2, ["is a directory", "-d DIR -p PREFIX"]),
    ("a socket as -f", lambda c: c.args(source=_socket(c.tmp / "sock")), 2,
     ["is not a regular file, a block device or a stream", "- (stdin), a named pipe"]),
    ("META inside the chunk folder", lambda c: c.args("-p", "", source=chunks(c, [6 * MiB]),
                                                      meta=c.tmp / "chunks" / "m.json"), 2,
     ["-m", "is (or would be taken for) the data to upload"]),
    ("empty -d folder", lambda c: c.args("-p", "x", source=chunks(c, [])), 2, ["no file in", "starting with 'x'"]),
    ("no file with the prefix", lambda c: c.args("-p", "zz", source=chunks(c, [6 * MiB])), 2,
     ["no file in", "'zz'", "check -d and -p"]),
    ("small chunk not last", lambda c: c.args("-p", "part_", source=chunks(c, [6 * MiB, 1000, 6 * MiB])), 2,
     ["part_01 is 1000 bytes", "not the last chunk", "split -b"]),
    ("-f and -d both", lambda c: [*c.args(), "-d", str(c.tmp), "-p", "x"], 2, ["either -f FILE or -d DIR"]),
    ("-d without -p", lambda c: c.args(source=chunks(c, [6 * MiB])), 2, ["-d DIR needs -p PREFIX"]),
    ("split below 5 MiB", lambda c: c.args("-s", "1M"), 2, ["below S3's minimum part size of 5 MiB", "-s 5242880"]),
    ("historical split 5000000", lambda c: c.args("-s", "5000000"), 2, ["split size 5000000 bytes is below"]),
    ("split above 5 GiB", lambda c: c.args("-s", "6G"), 2, ["above S3's maximum part size of 5 GiB"]),
    ("split not a size", lambda c: c.args("-s", "lots"), 2, ["'lots' is not a size in bytes"]),
    ("threads 0", lambda c: c.args("-t", "0"), 2, ["Invalid value for '-t'"]),
    ("threads negative", lambda c: c.args("-t", "-3"), 2, ["Invalid value for '-t'"]),
    ("threads absurd", lambda c: c.args("-t", "100000"), 2, ["Invalid value for '-t'", "1<=x<=256"]),
    ("META is the file", lambda c: c.args(meta=c.file), 2, ["-m", "is (or would be taken for) the data to upload"]),
    ("PARTS is the file", lambda c: c.args(parts=c.file), 2, ["-a", "is (or would be taken for) the data to upload"]),
    ("META equals PARTS", lambda c: c.args(parts=c.meta), 2, ["-m and -a are the same file"]),
    ("META folder missing", lambda c: c.args(meta=c.tmp / "no" / "m.json"), 2, ["does not exist", "create"]),
    ("META folder not writable", lambda c: c.args(meta=Path("/sys/m.json")), 2,
     ["cannot write the meta file /sys/m.json", "make /sys writable"]),
    ("no such bucket", lambda c: c.args(bucket="no-such-bucket-here"), 5,
     ["bucket 'no-such-bucket-here' does not exist", "check -b, --endpoint-url"]),
    ("wrong credentials", lambda c: (c.env.update(AWS_SECRET_ACCESS_KEY="wrong-secret"), c.args())[1], 5,
     ["the server refused a request for s3://", "SignatureDoesNotMatch", "check the credentials"]),
    ("META of another bucket", lambda c: (c.start_upload(bucket="other-bucket"), c.args())[1], 3,
     ["belongs to the upload of s3://other-bucket/k", "another -m and -a path"]),
    ("META of another key", lambda c: (c.start_upload(key="other-key"), c.args())[1], 3,
     ["belongs to the upload of s3://", "/other-key, not s3://"]),
    ("META of another file", lambda c: (c.start_upload(), c.args(source=write_random(c.tmp / "g.bin", 11 * MiB)))[1],
     3, ["belongs to an upload of", "f.bin, not", "g.bin"]),
    ("file changed: size", lambda c: (c.start_upload(), c.file.open("ab").write(b"x"), c.args())[2], 3,
     ["f.bin changed since the upload began", "--restart"]),
    ("file changed: mtime", lambda c: (c.start_upload(), os.utime(c.file, ns=(1, 1)), c.args())[2], 3,
     ["f.bin changed since the upload began", "mtime"]),
    ("META not JSON", lambda c: (c.meta.write_text("{oops"), c.args())[1], 3,
     ["is not valid JSON", "move it aside"]),
    ("PARTS garbage in the middle", lambda c: (c.start_upload(log_parts=2), _garble(c.parts), c.args())[2], 3,
     ["line 2 is not a part record", "fix or delete line 2"]),
    ("upload aborted on the server", lambda c: (_abort(c, c.start_upload()), c.args())[1], 4,
     ["no longer exists on the server", "--restart"]),
]


def _socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.close()  # the file stays, a socket nobody listens on
    return path


def _garble(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "garbage\n" + "".join(lines[1:]))


def _abort(c: Ctx, upload_id: str) -> None:
    c.server.client().abort_multipart_upload(Bucket=c.bucket, Key="k", UploadId=upload_id)


@pytest.fixture
def ctx(tmp_path: Path, s3_server: S3Server, bucket: str, aws_env: dict[str, str]) -> Ctx:
    return Ctx(tmp_path, s3_server, bucket, write_random(tmp_path / "f.bin", 11 * MiB, seed=21),
               tmp_path / "m.json", tmp_path / "p.jsonl", dict(aws_env))


@pytest.mark.parametrize(("name", "setup", "code", "says"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(ctx: Ctx, name: str, setup: Callable[[Ctx], list[str]], code: int, says: list[str]) -> None:
    args = setup(ctx)
    before = _snapshot(ctx)
    r = run_cli(args, ctx.env)
    assert r.returncode == code, r.stderr
    for text in says:
        assert text in r.stderr
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert _snapshot(ctx) == before, "a refused run must leave META, PARTS and the bucket as they were"


def test_parts_lines_of_another_upload_are_ignored(ctx: Ctx) -> None:
    ctx.parts.write_text(json.dumps({"eTag": "0" * 32, "partNumber": 1, "uploadId": "someone-else"}) + "\n")
    r = run_cli(ctx.args("-s", "5M"), ctx.env)
    assert r.returncode == 0, r.stderr
    assert "Done uploading 1 -" in r.stderr  # not taken from the foreign line


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file whatever its permissions")
def test_unreadable_file(ctx: Ctx) -> None:
    ctx.file.chmod(0)
    r = run_cli(ctx.args(), ctx.env)
    assert r.returncode == 2 and "permission denied" in r.stderr
