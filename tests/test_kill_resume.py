"""End to end: the CLI is SIGKILLed mid-upload at several moments, then rerun to completion."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import S3Server, kill_when, run_cli, upload_args, write_random
from tests.s3proxy import S3Proxy

pytestmark = pytest.mark.e2e

PARTS = 41


def logged_parts(path: Path, upload_id: str) -> set[int]:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if doc["uploadId"] == upload_id:
            out.add(doc["partNumber"])
    return out


def held_parts(server: S3Server, bucket: str, key: str, upload_id: str) -> set[int]:
    page = server.client().list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    assert not page.get("IsTruncated")
    return {p["PartNumber"] for p in page.get("Parts", [])}


def test_sigkill_at_several_moments_then_resume(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", (PARTS - 1) * 5 * MiB + 12345, seed=7)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    proxy = S3Proxy(s3_server.endpoint, delay=0.05)
    try:
        args = upload_args(bucket, "big/f.bin", f, meta, parts, "-s", "5M", "-t", "4", endpoint=proxy.endpoint)

        def upload_id() -> str:
            return str(json.loads(meta.read_text())["uploadId"])

        # 0: as soon as the upload exists; then after 5, 17 and 30 parts are in the log.
        for threshold in (0, 5, 17, 30):
            before = logged_parts(parts, upload_id()) if meta.exists() else set()
            proxy.reset()
            code = kill_when(args, aws_env, lambda t=threshold: meta.exists() and len(
                logged_parts(parts, upload_id())) >= t)
            assert code == -signal.SIGKILL, "the upload finished before it could be killed"
            resent = set(proxy.part_puts()) & before
            assert not resent, f"parts already in the log were sent again: {sorted(resent)}"

        proxy.wait_idle()  # requests the killed runs had sent may still be on their way to the server
        held = held_parts(s3_server, bucket, "big/f.bin", upload_id())
        logged = logged_parts(parts, upload_id())
        assert logged <= held
        assert len(held) < PARTS

        proxy.reset()
        r = run_cli(args, aws_env)
        assert r.returncode == 0, r.stderr
        sent = proxy.part_puts()
        assert set(sent) == set(range(1, PARTS + 1)) - held, "the rerun must send exactly the parts S3 lacked"
        assert all(n == 1 for n in sent.values())

        got = s3_server.client().get_object(Bucket=bucket, Key="big/f.bin")["Body"].read()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(f.read_bytes()).hexdigest()

        proxy.reset()
        r = run_cli(args, aws_env)
        assert r.returncode == 0 and "already complete" in r.stderr
        assert proxy.seen == [], "a rerun after completion sends nothing"
    finally:
        proxy.close()
