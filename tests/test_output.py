"""What the user sees: a bar on a terminal, historical log lines in batch jobs, JSON Lines for scripts."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import S3Server, run_cli, upload_args, write_random
from tests.s3proxy import Fault, S3Proxy, Seen

pytestmark = pytest.mark.integration

LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO\] Done uploading (\d+) - ([0-9a-f]{32})\. "
                      r"Completed in \d+ seconds\. \(progress\.py:\d+\)$")


def test_progress_bar_on_a_terminal(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                    tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 20 * MiB, seed=51)
    args = upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                       endpoint=s3_server.endpoint)
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_env | {"TERM": "xterm-256color",
                                                                                         "COLUMNS": "160"}
    proc = subprocess.Popen([sys.executable, "-m", "s3_multipart_upload", *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    assert proc.wait(timeout=30) == 0
    text = out.decode("utf-8", "replace")
    assert "\x1b[" in text  # a live display, with colours
    assert "parts 4/4" in text and "100.0%" in text and "MiB/s" in text and "20.0/20.0 MiB" in text
    assert "Done uploading" not in text  # per-part lines are for logs, the bar is for people


def test_log_lines_when_stderr_is_not_a_terminal(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 20 * MiB, seed=52)
    r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                            endpoint=s3_server.endpoint), aws_env)
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stderr
    done = [m for m in (LOG_LINE.match(line) for line in r.stderr.splitlines()) if m]
    assert sorted(int(m.group(1)) for m in done) == [1, 2, 3, 4]
    assert r.stdout == ""


def test_quiet_prints_nothing_on_success_and_the_error_on_failure(s3_server: S3Server, bucket: str,
                                                                  aws_env: dict[str, str], tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 12 * MiB, seed=53)
    r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "-q",
                            endpoint=s3_server.endpoint), aws_env)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == ""
    r = run_cli(upload_args("no-bucket-here", "k", f, tmp_path / "m2.json", tmp_path / "p2.jsonl", "-q",
                            endpoint=s3_server.endpoint), aws_env)
    assert r.returncode == 5 and r.stderr.startswith("error: bucket 'no-bucket-here' does not exist")


def test_json_events_and_summary(s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    def fail_once(seen: Seen, index: int) -> Fault | None:
        first = seen.part_number == 2 and not any(s.part_number == 2 for s in proxy.seen[:index])
        return Fault(status=500, code="InternalError") if first else None

    proxy = S3Proxy(s3_server.endpoint, rule=fail_once)
    try:
        f = write_random(tmp_path / "f.bin", 16 * MiB, seed=54)
        r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "--json",
                                endpoint=proxy.endpoint), aws_env)
    finally:
        proxy.close()
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]  # every line is JSON
    names = [e["event"] for e in events]
    assert names[0] == "started" and names[-2:] == ["completed", "summary"]
    assert sorted(e["partNumber"] for e in events if e["event"] == "part_done") == [1, 2, 3, 4]
    retry = next(e for e in events if e["event"] == "retry")
    assert retry["request"] == "UploadPart 2" and retry["attempt"] == 1 and "InternalError" in retry["error"]
    summary = events[-1]
    assert summary["status"] == "completed" and summary["exitCode"] == 0
    assert (summary["bucket"], summary["key"], summary["size"], summary["partsTotal"], summary["partsSent"]) == (
        bucket, "k", 16 * MiB, 4, 4)
    assert all(e["time"].endswith("Z") for e in events)


def test_json_on_failure_ends_with_an_error_and_a_summary(s3_server: S3Server, aws_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 12 * MiB, seed=55)
    r = run_cli(upload_args("no-bucket-here", "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                            "--json", endpoint=s3_server.endpoint), aws_env)
    assert r.returncode == 5
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["event"] for e in events] == ["error", "summary"]
    assert events[-1]["exitCode"] == 5 and "no-bucket-here" in events[-1]["error"]


def test_json_reader_that_goes_away_does_not_stop_the_upload(s3_server: S3Server, bucket: str,
                                                             aws_env: dict[str, str], tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 30 * MiB, seed=56)
    args = upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "--json",
                       endpoint=s3_server.endpoint)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_env
    shell = f"{' '.join(map(repr, [sys.executable, '-m', 's3_multipart_upload', *args]))} | head -n 1"
    r = subprocess.run(["bash", "-o", "pipefail", "-c", shell], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["event"] == "started"
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr
    assert s3_server.client().get_object(Bucket=bucket, Key="k")["Body"].read() == f.read_bytes()
