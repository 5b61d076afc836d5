"""Faults a long upload meets, injected by a proxy in front of the real S3 server: the upload rides
through what is temporary, stops cleanly on what is not, and never loses a finished part."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import (
    ACCESS_KEY,
    ACCESS_KEY_2,
    SECRET_KEY,
    SECRET_KEY_2,
    S3Server,
    run_cli,
    upload_args,
    write_random,
)
from tests.s3proxy import Fault, S3Proxy, Seen

pytestmark = pytest.mark.integration


def stored(server: S3Server, bucket: str, key: str) -> bytes:
    return bytes(server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def first_tries(parts: set[int], fault: Fault, proxy_ref: list[S3Proxy]) -> Callable[[Seen, int], Fault | None]:
    """A rule: ``fault`` for the first attempt at each part in ``parts``, pass everything else."""
    def rule(seen: Seen, index: int) -> Fault | None:
        n = seen.part_number
        if n in parts and not any(s.part_number == n for s in proxy_ref[0].seen[:index]):
            return fault
        return None
    return rule


@pytest.fixture
def faulty(s3_server: S3Server) -> object:
    proxies: list[S3Proxy] = []

    def make(rule: Callable[[Seen, int], Fault | None] | None = None, delay: float = 0.0) -> S3Proxy:
        p = S3Proxy(s3_server.endpoint, rule=rule, delay=delay)
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.close()


@pytest.mark.parametrize("fault", [
    Fault(cut_after=64 * 1024),  # connection cut mid-body
    Fault(status=500, code="InternalError"),
    Fault(status=503, code="ServiceUnavailable"),
    Fault(status=400, code="RequestTimeout"),
], ids=["cut-mid-body", "500-InternalError", "503-ServiceUnavailable", "400-RequestTimeout"])
def test_transient_failures_are_retried_per_part(faulty, bucket: str, aws_env: dict[str, str],  # type: ignore[no-untyped-def]
                                                 tmp_path: Path, s3_server: S3Server, fault: Fault) -> None:
    ref: list[S3Proxy] = []
    proxy = faulty(first_tries({1, 3}, fault, ref))
    ref.append(proxy)
    f = write_random(tmp_path / "f.bin", 15 * MiB + 1, seed=11)
    r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "-t", "2",
                            endpoint=proxy.endpoint), aws_env)
    assert r.returncode == 0, r.stderr
    assert proxy.part_puts() == {1: 2, 2: 1, 3: 2, 4: 1}
    assert "retry 1 in" in r.stderr
    assert stored(s3_server, bucket, "k") == f.read_bytes()


def test_slowdown_lowers_the_parts_in_flight(faulty, bucket: str, aws_env: dict[str, str],  # type: ignore[no-untyped-def]
                                             tmp_path: Path, s3_server: S3Server) -> None:
    ref: list[S3Proxy] = []
    proxy = faulty(first_tries({1, 2, 3, 4}, Fault(status=503, code="SlowDown"), ref))
    ref.append(proxy)
    f = write_random(tmp_path / "f.bin", 30 * MiB, seed=12)
    r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "-t", "4",
                            endpoint=proxy.endpoint), aws_env)
    assert r.returncode == 0, r.stderr
    assert "The server asks to slow down: 2 parts in flight instead of 4" in r.stderr
    assert stored(s3_server, bucket, "k") == f.read_bytes()


def test_retries_are_bounded_then_exit_75(faulty, bucket: str, aws_env: dict[str, str],  # type: ignore[no-untyped-def]
                                          tmp_path: Path) -> None:
    proxy = faulty(lambda seen, i: Fault(status=500, code="InternalError") if seen.part_number == 2 else None)
    f = write_random(tmp_path / "f.bin", 15 * MiB, seed=13)
    parts = tmp_path / "p.jsonl"
    r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", parts, "-s", "5M", "-t", "1", "--retries", "3",
                            "--restart", endpoint=proxy.endpoint), aws_env)
    assert r.returncode == 75, r.stderr
    assert "--restart" not in r.stderr.split("to resume, rerun:")[1]  # resuming must not start over
    assert proxy.part_puts()[2] == 3
    assert "after 3 tries" in r.stderr and "to resume, rerun: s3-multipart-upload upload" in r.stderr
    assert {json.loads(x)["partNumber"] for x in parts.read_text().splitlines()} == {1}


def test_expired_credentials_stop_with_75_and_the_rerun_sends_only_what_is_missing(
        faulty, bucket: str, aws_env: dict[str, str], tmp_path: Path, s3_server: S3Server) -> None:  # type: ignore[no-untyped-def]
    def expire_after_3_parts(seen: Seen, index: int) -> Fault | None:
        done = sum(1 for s in proxy.seen[:index] if s.part_number is not None)
        return Fault(status=400, code="ExpiredToken") if done >= 3 else None

    proxy = faulty(expire_after_3_parts)
    f = write_random(tmp_path / "f.bin", 40 * MiB, seed=14)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    args = upload_args(bucket, "k", f, meta, parts, "-s", "5M", "-t", "2", endpoint=proxy.endpoint)
    r = run_cli(args, aws_env)
    assert r.returncode == 75, r.stderr
    logged = {json.loads(x)["partNumber"] for x in parts.read_text().splitlines()}
    assert len(logged) == 3
    assert "credentials refused" in r.stderr  # the session was rebuilt once before giving up
    assert "3 of 8 parts are done and logged" in r.stderr
    assert "refresh your credentials" in r.stderr
    assert f"to resume, rerun: s3-multipart-upload upload -b {bucket} -k k" in r.stderr

    proxy.rule = None  # the user has refreshed the credentials
    proxy.reset()
    r = run_cli(args, aws_env)
    assert r.returncode == 0, r.stderr
    assert set(proxy.part_puts()) == set(range(1, 9)) - logged
    assert stored(s3_server, bucket, "k") == f.read_bytes()


def test_refreshed_credentials_are_picked_up_without_stopping(
        faulty, bucket: str, aws_env: dict[str, str], tmp_path: Path, s3_server: S3Server,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Like aws-vault or SSO renewing ~/.aws/credentials mid-upload: the old key expires, the file has a new one."""
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    env = {k: v for k, v in aws_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)

    def expire_first_key(seen: Seen, index: int) -> Fault | None:
        if seen.access_key == ACCESS_KEY and sum(1 for s in proxy.seen[:index] if s.part_number) >= 2:
            creds.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY_2}\n"
                             f"aws_secret_access_key = {SECRET_KEY_2}\n")
            return Fault(status=400, code="ExpiredToken")
        return None

    proxy = faulty(expire_first_key)
    f = write_random(tmp_path / "f.bin", 30 * MiB, seed=15)
    r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "-t", "2",
                            endpoint=proxy.endpoint), env)
    assert r.returncode == 0, r.stderr
    assert "rebuilt the session to pick up refreshed credentials" in r.stderr
    assert {s.access_key for s in proxy.seen[-3:]} == {ACCESS_KEY_2}
    assert stored(s3_server, bucket, "k") == f.read_bytes()


def _popen(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    return subprocess.Popen([sys.executable, "-m", "s3_multipart_upload", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond: Callable[[], bool], limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_in_order_with_130_and_a_valid_log(faulty, bucket: str, aws_env: dict[str, str],  # type: ignore[no-untyped-def]
                                                          tmp_path: Path, s3_server: S3Server, sig: int) -> None:
    proxy = faulty(delay=0.3)
    f = write_random(tmp_path / "f.bin", 60 * MiB, seed=16)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    args = upload_args(bucket, "k", f, meta, parts, "-s", "5M", "-t", "2", endpoint=proxy.endpoint)
    proc = _popen(args, aws_env)
    _wait_for(lambda: len(_lines(parts)) >= 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted;" in err and "parts are done and logged" in err and "to resume, rerun" in err
    logged = {int(str(x["partNumber"])) for x in _lines(parts)}  # every line parses
    assert 2 <= len(logged) < 12
    assert json.loads(meta.read_text())["status"] == "in_progress"

    proxy.delay = 0
    proxy.reset()
    r = run_cli(args, aws_env)
    assert r.returncode == 0, r.stderr
    assert not set(proxy.part_puts()) & logged
    assert stored(s3_server, bucket, "k") == f.read_bytes()


def test_a_second_ctrl_c_exits_at_once(faulty, bucket: str, aws_env: dict[str, str],  # type: ignore[no-untyped-def]
                                       tmp_path: Path, s3_server: S3Server) -> None:
    proxy = faulty(delay=20)  # every part takes 20 s: an orderly stop would wait that long
    f = write_random(tmp_path / "f.bin", 20 * MiB, seed=17)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    args = upload_args(bucket, "k", f, meta, parts, "-s", "5M", "-t", "2", endpoint=proxy.endpoint)
    proc = _popen(args, aws_env)
    _wait_for(lambda: sum(proxy.part_puts().values()) >= 2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert time.monotonic() - began < 5
    assert proc.returncode == 130, err
    assert "stopped at once" in err
    assert _lines(parts) == []  # nothing finished; the log is still a valid (empty) log

    proxy.delay = 0
    r = run_cli(args, aws_env)
    assert r.returncode == 0, r.stderr
    assert stored(s3_server, bucket, "k") == f.read_bytes()


def test_one_process_per_meta_file(faulty, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proxy = faulty(delay=2)
    f = write_random(tmp_path / "f.bin", 20 * MiB, seed=18)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    args = upload_args(bucket, "k", f, meta, parts, "-s", "5M", "-t", "1", endpoint=proxy.endpoint)
    first = _popen(args, aws_env)
    try:
        _wait_for(parts.exists)  # the first process holds the lock and has opened its log; its part takes 2 s
        before = meta.read_bytes(), parts.read_bytes()
        r = run_cli(args, aws_env, timeout=20)
        assert r.returncode == 3, r.stderr
        assert f"another s3-multipart-upload process is working on {meta}" in r.stderr
        assert (meta.read_bytes(), parts.read_bytes()) == before
        assert sum(proxy.part_puts().values()) == 1  # the first process's part only
    finally:
        first.kill()
        first.wait()


@pytest.mark.parametrize("change", ["append", "touch"])
def test_a_file_changed_during_the_run_is_not_completed(faulty, bucket: str, aws_env: dict[str, str],  # type: ignore[no-untyped-def]
                                                        tmp_path: Path, s3_server: S3Server, change: str) -> None:
    proxy = faulty(delay=0.3)
    f = write_random(tmp_path / "f.bin", 30 * MiB, seed=19)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    proc = _popen(upload_args(bucket, "k", f, meta, parts, "-s", "5M", "-t", "2", endpoint=proxy.endpoint), aws_env)
    _wait_for(lambda: len(_lines(parts)) >= 1)
    if change == "append":
        with f.open("ab") as fh:
            fh.write(b"more data")
    else:
        os.utime(f)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "changed" in err and "--restart" in err
    assert json.loads(meta.read_text())["status"] == "in_progress"
    with pytest.raises(s3_server.client().exceptions.ClientError):
        s3_server.client().head_object(Bucket=bucket, Key="k")


def test_a_signal_stops_parts_that_are_waiting_to_retry(faulty, bucket: str, aws_env: dict[str, str],  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    """The server fails every part (500): each waits out backoffs of up to 20 s between tries. SIGINT must stop the
    run (exit 130) without serving those waits; before the fix the run went on for its tries and exited 75."""
    proxy = faulty(rule=lambda seen, i: Fault(status=500, code="InternalError") if seen.part_number else None)
    f = write_random(tmp_path / "f.bin", 12 * MiB, seed=18)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    proc = _popen(upload_args(bucket, "k", f, meta, parts, "-s", "5M", "-t", "2", endpoint=proxy.endpoint), aws_env)
    _wait_for(lambda: sum(proxy.part_puts().values()) >= 4)  # retrying, deeper into the backoff schedule
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)  # the remaining waits and tries would take more than 30 s
    assert proc.returncode == 130, err
    assert "interrupted;" in err and "0 of 3 parts are done and logged" in err
    assert json.loads(meta.read_text())["status"] == "in_progress"
