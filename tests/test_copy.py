"""S3-to-S3 copy in parts: streamed between two stores, or UploadPartCopy within one; resumable."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import ACCESS_KEY_B, SECRET_KEY_B, S3Server, run_cli
from tests.s3proxy import Fault, S3Proxy

pytestmark = pytest.mark.integration


def put_source(server: S3Server, size: int, seed: int) -> tuple[str, str, bytes]:
    data = os.urandom(size) if seed < 0 else __import__("random").Random(seed).randbytes(size)
    c = server.client()
    bucket = f"src-{uuid.uuid4().hex[:10]}"
    c.create_bucket(Bucket=bucket)
    c.put_object(Bucket=bucket, Key="big/object.bin", Body=data)
    return bucket, "big/object.bin", data


def new_bucket(server: S3Server) -> str:
    name = f"dst-{uuid.uuid4().hex[:10]}"
    server.client().create_bucket(Bucket=name)
    return name


def logged(parts: Path) -> set[int]:
    out = set()
    for line in parts.read_text().splitlines() if parts.exists() else []:
        with contextlib.suppress(json.JSONDecodeError):
            out.add(json.loads(line)["partNumber"])
    return out


def kill_after(args: list[str], env: dict[str, str], parts: Path, n: int) -> int:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    proc = subprocess.Popen([sys.executable, "-m", "s3_multipart_upload", *args], env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and len(logged(parts)) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=30)


@pytest.fixture
def two_stores_env(aws_env: dict[str, str], tmp_path: Path, s3_server: S3Server) -> dict[str, str]:
    """Destination (store B) credentials in the environment; the source's (store A) in profile "store-a"."""
    creds = tmp_path / "credentials"
    creds.write_text(f"[store-a]\naws_access_key_id = {s3_server.access_key}\n"
                     f"aws_secret_access_key = {s3_server.secret_key}\n")
    return aws_env | {"AWS_ACCESS_KEY_ID": ACCESS_KEY_B, "AWS_SECRET_ACCESS_KEY": SECRET_KEY_B,
                      "AWS_SHARED_CREDENTIALS_FILE": str(creds)}


def test_streamed_copy_between_two_stores_survives_sigkill(s3_server: S3Server, s3_server_b: S3Server,
                                                           two_stores_env: dict[str, str], tmp_path: Path) -> None:
    src_bucket, src_key, data = put_source(s3_server, 20 * 5 * MiB + 333, seed=61)
    dst = new_bucket(s3_server_b)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    proxy = S3Proxy(s3_server_b.endpoint, delay=0.05)
    try:
        args = ["copy", "--source", f"s3://{src_bucket}/{src_key}", "--source-endpoint-url", s3_server.endpoint,
                "--source-profile", "store-a", "-b", dst, "-k", "copied.bin", "-m", str(meta), "-a", str(parts),
                "-s", "5M", "-t", "4", "--endpoint-url", proxy.endpoint]
        assert kill_after(args, two_stores_env, parts, 6) == -signal.SIGKILL
        assert json.loads(meta.read_text())["source"] == {
            "kind": "s3", "bucket": src_bucket, "key": src_key, "size": len(data),
            "eTag": s3_server.client().head_object(Bucket=src_bucket, Key=src_key)["ETag"],
            "lastModified": json.loads(meta.read_text())["source"]["lastModified"]}
        proxy.wait_idle()
        upload_id = json.loads(meta.read_text())["uploadId"]
        held = {p["PartNumber"] for p in s3_server_b.client().list_parts(
            Bucket=dst, Key="copied.bin", UploadId=upload_id).get("Parts", [])}
        proxy.reset()
        r = run_cli(args, two_stores_env)
        assert r.returncode == 0, r.stderr
        assert set(proxy.part_puts()) == set(range(1, 22)) - held
        got = s3_server_b.client().get_object(Bucket=dst, Key="copied.bin")["Body"].read()
        assert got == data
    finally:
        proxy.close()


def test_server_side_copy_sends_no_bytes_and_resumes(moto_server: S3Server, aws_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    src_bucket, src_key, data = put_source(moto_server, 8 * 5 * MiB + 10, seed=62)
    dst = new_bucket(moto_server)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    proxy = S3Proxy(moto_server.endpoint, delay=0.2)
    try:
        args = ["copy", "--source", f"s3://{src_bucket}/{src_key}", "-b", dst, "-k", "copied.bin",
                "-m", str(meta), "-a", str(parts), "-s", "5M", "-t", "2", "--endpoint-url", proxy.endpoint]
        assert kill_after(args, aws_env, parts, 3) == -signal.SIGKILL
        before = logged(parts)
        proxy.wait_idle()
        proxy.delay = 0
        proxy.reset()
        r = run_cli(args, aws_env)
        assert r.returncode == 0, r.stderr
        assert "UploadPartCopy" not in r.stderr  # no retries were needed
        copies = [s for s in proxy.seen if s.part_number is not None]
        assert copies and all(s.size == 0 for s in copies), "UploadPartCopy carries no bytes"
        # The source is read only by the spot check after completion: 64 KiB samples of at most 9 parts (and its
        # tags are asked for once, to keep them).
        reads = [s for s in proxy.seen if s.method == "GET" and s.path.endswith(src_key)]
        assert sum(1 for s in reads if "tagging" not in s.query) <= 9
        assert sum(1 for s in reads if "tagging" in s.query) == 1
        assert not {s.part_number for s in copies} & before, "logged parts were copied again"
        assert moto_server.client().get_object(Bucket=dst, Key="copied.bin")["Body"].read() == data
    finally:
        proxy.close()


def test_through_client_in_one_store(moto_server: S3Server, aws_env: dict[str, str], tmp_path: Path) -> None:
    src_bucket, src_key, data = put_source(moto_server, 12 * MiB, seed=63)
    dst = new_bucket(moto_server)
    proxy = S3Proxy(moto_server.endpoint)
    try:
        r = run_cli(["copy", "--source", f"s3://{src_bucket}/{src_key}", "-b", dst, "-k", "c", "--through-client",
                     "-m", str(tmp_path / "m.json"), "-a", str(tmp_path / "p.jsonl"), "-s", "5M",
                     "--endpoint-url", proxy.endpoint], aws_env)
        assert r.returncode == 0, r.stderr
        assert sum(s.size for s in proxy.seen if s.part_number) == 12 * MiB
        assert moto_server.client().get_object(Bucket=dst, Key="c")["Body"].read() == data
    finally:
        proxy.close()


@pytest.mark.parametrize("size", [3 * MiB, 0], ids=["one-part", "empty"])
def test_small_objects_copy_in_one_request(moto_server: S3Server, aws_env: dict[str, str], tmp_path: Path,
                                           size: int) -> None:
    src_bucket, src_key, data = put_source(moto_server, size, seed=64)
    dst = new_bucket(moto_server)
    r = run_cli(["copy", "--source", f"s3://{src_bucket}/{src_key}", "-b", dst, "-k", "c", "-m",
                 str(tmp_path / "m.json"), "-a", str(tmp_path / "p.jsonl"), "--endpoint-url", moto_server.endpoint],
                aws_env)
    assert r.returncode == 0, r.stderr
    assert moto_server.client().get_object(Bucket=dst, Key="c")["Body"].read() == data


def _overwrite_when(server: S3Server, bucket: str, key: str, parts: Path, n: int, proc: Any) -> None:
    deadline = time.monotonic() + 60
    while len(logged(parts)) < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    server.client().put_object(Bucket=bucket, Key=key, Body=b"a new version of the source")


@pytest.mark.parametrize("mode", ["streamed", "server-side"])
def test_a_source_overwritten_mid_copy_stops_it_with_exit_3(s3_server: S3Server, s3_server_b: S3Server,
                                                            moto_server: S3Server, two_stores_env: dict[str, str],
                                                            aws_env: dict[str, str], tmp_path: Path,
                                                            mode: str) -> None:
    src_server, dst_server, env = ((s3_server, s3_server_b, two_stores_env) if mode == "streamed"
                                   else (moto_server, moto_server, aws_env))
    src_bucket, src_key, _ = put_source(src_server, 8 * 5 * MiB, seed=65)
    dst = new_bucket(dst_server)
    parts = tmp_path / "p.jsonl"
    proxy = S3Proxy(dst_server.endpoint, delay=0.3)
    try:
        args = ["copy", "--source", f"s3://{src_bucket}/{src_key}", "-b", dst, "-k", "c", "-m",
                str(tmp_path / "m.json"), "-a", str(parts), "-s", "5M", "-t", "2", "--endpoint-url", proxy.endpoint]
        if mode == "streamed":
            args += ["--source-endpoint-url", src_server.endpoint, "--source-profile", "store-a"]
        full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
        proc = subprocess.Popen([sys.executable, "-m", "s3_multipart_upload", *args], env=full,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _overwrite_when(src_server, src_bucket, src_key, parts, 2, proc)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, err
        assert f"s3://{src_bucket}/{src_key} changed" in err or "source object changed" in err
        assert "--restart" in err
        with pytest.raises(dst_server.client().exceptions.ClientError):
            dst_server.client().head_object(Bucket=dst, Key="c")  # no object mixing two versions
    finally:
        proxy.close()


def test_status_abort_and_list_work_on_a_copy(moto_server: S3Server, aws_env: dict[str, str], tmp_path: Path) -> None:
    src_bucket, src_key, _ = put_source(moto_server, 6 * 5 * MiB, seed=66)
    dst = new_bucket(moto_server)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    proxy = S3Proxy(moto_server.endpoint, delay=0.3)
    try:
        args = ["copy", "--source", f"s3://{src_bucket}/{src_key}", "-b", dst, "-k", "c", "-m", str(meta),
                "-a", str(parts), "-s", "5M", "-t", "1", "--endpoint-url", proxy.endpoint]
        assert kill_after(args, aws_env, parts, 2) == -signal.SIGKILL
    finally:
        proxy.close()
    e = ["--endpoint-url", moto_server.endpoint]
    st = json.loads(run_cli(["status", "-m", str(meta), "-a", str(parts), "--json", *e], aws_env).stdout)
    assert st["source"] == f"s3://{src_bucket}/{src_key}" and st["parts_total"] == 6 and st["parts_done"] >= 2
    assert st["server"] == "in_progress" and st["source_missing"] is False
    listing = run_cli(["list", "-b", dst, "--json", *e], aws_env)
    assert [json.loads(x)["uploadId"] for x in listing.stdout.splitlines()] == [st["upload_id"]]
    r = run_cli(["abort", "-m", str(meta), *e], aws_env)
    assert r.returncode == 0 and "Aborted" in r.stdout
    assert run_cli(["list", "-b", dst, "--json", *e], aws_env).stdout == ""


def test_bad_source_url_and_missing_source(moto_server: S3Server, aws_env: dict[str, str], tmp_path: Path) -> None:
    dst = new_bucket(moto_server)
    base = ["-b", dst, "-k", "c", "-m", str(tmp_path / "m.json"), "-a", str(tmp_path / "p.jsonl"),
            "--endpoint-url", moto_server.endpoint]
    r = run_cli(["copy", "--source", "bucket/key", *base], aws_env)
    assert r.returncode == 2 and "is not an S3 object URL" in r.stderr
    r = run_cli(["copy", "--source", f"s3://{dst}/nothing-here", *base], aws_env)
    assert r.returncode == 2 and f"source object s3://{dst}/nothing-here does not exist" in r.stderr


def _copy_through_a_faulty_store(server: S3Server, env: dict[str, str], tmp_path: Path, rule: Any,
                                 seed: int) -> tuple[Any, str]:
    """A server-side copy of a 3-part object through a proxy applying ``rule``: (the CLI's result, dest bucket)."""
    src_bucket, src_key, _ = put_source(server, 3 * 5 * MiB, seed=seed)
    dst = new_bucket(server)
    proxy = S3Proxy(server.endpoint, rule=rule)
    try:
        r = run_cli(["copy", "--source", f"s3://{src_bucket}/{src_key}", "-b", dst, "-k", "c", "-m",
                     str(tmp_path / "m.json"), "-a", str(tmp_path / "p.jsonl"), "-s", "5M",
                     "--endpoint-url", proxy.endpoint], env)
    finally:
        proxy.close()
    return r, dst


def test_a_store_that_answers_uploadpartcopy_without_copying_is_caught(moto_server: S3Server, aws_env: dict[str, str],
                                                                       tmp_path: Path) -> None:
    """The proxy answers part 2's UploadPartCopy with a plausible 200 and copies nothing."""
    fake = ('<?xml version="1.0" encoding="UTF-8"?><CopyPartResult><ETag>"0123456789abcdef0123456789abcdef"</ETag>'
            "<LastModified>2026-11-22T00:00:00.000Z</LastModified></CopyPartResult>")
    r, dst = _copy_through_a_faulty_store(moto_server, aws_env, tmp_path, lambda seen, i: Fault(
        status=200, body=fake) if seen.part_number == 2 else None, seed=67)
    assert r.returncode == 1, r.stderr
    assert "after UploadPartCopy the server holds parts 2" in r.stderr and "--through-client" in r.stderr
    with pytest.raises(moto_server.client().exceptions.ClientError):
        moto_server.client().head_object(Bucket=dst, Key="c")


def test_a_store_that_copies_the_wrong_bytes_is_caught_by_the_spot_check(moto_server: S3Server,
                                                                          aws_env: dict[str, str],
                                                                          tmp_path: Path) -> None:
    """Part 2's UploadPartCopy is sent with part 1's range: sizes and ETags look right, the bytes are not."""
    wrong = {"x-amz-copy-source-range": f"bytes=0-{5 * MiB - 1}"}
    r, dst = _copy_through_a_faulty_store(moto_server, aws_env, tmp_path, lambda seen, i: Fault(
        headers=wrong) if seen.part_number == 2 else None, seed=68)
    assert r.returncode == 1, r.stderr
    assert f"differs from the source at bytes={5 * MiB}-" in r.stderr and "the wrong object was deleted" in r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["status"] == "in_progress"
    with pytest.raises(moto_server.client().exceptions.ClientError):
        moto_server.client().head_object(Bucket=dst, Key="c")


def test_copying_an_object_onto_itself_is_refused(moto_server: S3Server, aws_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    src_bucket, src_key, _ = put_source(moto_server, 1 * MiB, seed=69)
    r = run_cli(["copy", "--source", f"s3://{src_bucket}/{src_key}", "-b", src_bucket, "-k", src_key, "-m",
                 str(tmp_path / "m.json"), "-a", str(tmp_path / "p.jsonl"), "--endpoint-url", moto_server.endpoint],
                aws_env)
    assert r.returncode == 2 and "the source and the destination are the same object" in r.stderr
