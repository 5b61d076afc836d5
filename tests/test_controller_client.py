"""upload --controller: the CLI with no AWS credentials, through the upload controller's presigned URLs.

The service runs as a real process (uvicorn) in front of the real S3 server, through the counting
proxy: every part PUT the client makes with a presigned URL is seen there.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import run_cli, write_random
from tests.s3proxy import Fault, S3Proxy, Seen
from tests.service_fixtures import ServiceProcess, StartService

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PART = 5 * MiB


def client_env(tmp_path: Path) -> dict[str, str]:
    """A client machine with no AWS credentials at all."""
    return {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true"}


def controller_args(svc: ServiceProcess, file_id: str, f: Path, meta: Path, parts: Path, *extra: str) -> list[str]:
    return ["upload", "--controller", svc.base_url, "--file-id", file_id, "--token-file", str(svc.token_file()),
            "-f", str(f), "-m", str(meta), "-a", str(parts), *extra]


def logged(parts: Path) -> set[int]:
    if not parts.exists():
        return set()
    out = set()
    for line in parts.read_text().splitlines():
        try:
            out.add(json.loads(line)["partNumber"])
        except (json.JSONDecodeError, KeyError):
            continue  # a torn last line
    return out


def object_bytes(svc: ServiceProcess, key: str) -> bytes:
    return bytes(svc.s3_client().get_object(Bucket=svc.bucket, Key=key)["Body"].read())


def upload_of(svc: ServiceProcess, file_id: str, status: str) -> dict[str, object] | None:
    with svc.client() as c:
        r = c.get(f"/files/{file_id}/multipart_uploads", params={"status": status})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def proxy(s3_server) -> S3Proxy:  # type: ignore[no-untyped-def]
    p = S3Proxy(s3_server.endpoint)
    yield p  # type: ignore[misc]
    p.close()


def test_sigkill_then_resume_sends_only_missing_parts(start_service: StartService, database_url: str,
                                                      proxy: S3Proxy, tmp_path: Path) -> None:
    svc = start_service(database_url, "--part-size", "5M", endpoint=proxy.endpoint)
    f = write_random(tmp_path / "data.bin", 9 * PART + 4321, seed=11)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    args = controller_args(svc, "run-42", f, meta, parts, "-t", "2")
    env = client_env(tmp_path)

    proxy.delay = 0.15  # slow parts, so that the kill lands mid-upload
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3MU_"))} | env
    proc = subprocess.Popen([sys.executable, "-m", "s3_multipart_upload", *args], env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and len(logged(parts)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the upload finished before it could be killed"
    proxy.wait_idle()
    before = logged(parts)
    assert 3 <= len(before) < 10
    assert json.loads(meta.read_text())["fileId"] == "run-42"
    pending = upload_of(svc, "run-42", "pending")
    assert pending is not None and pending["upload_id"] == json.loads(meta.read_text())["uploadId"]

    proxy.reset()
    proxy.delay = 0.0
    r = run_cli(args, env)
    assert r.returncode == 0, r.stderr
    resent = set(proxy.part_puts()) & before
    assert not resent, f"parts in the log were sent again: {sorted(resent)}"
    assert set(proxy.part_puts()) <= set(range(1, 11)) - before
    assert all(n == 1 for n in proxy.part_puts().values())

    assert hashlib.sha256(object_bytes(svc, "files/run-42")).digest() == hashlib.sha256(f.read_bytes()).digest()
    done = upload_of(svc, "run-42", "uploaded")
    assert done is not None and done["object_size"] == f.stat().st_size
    assert json.loads(meta.read_text())["status"] == "completed"

    proxy.reset()
    r = run_cli(args, env)
    assert r.returncode == 0 and "already complete" in r.stderr
    assert proxy.seen == [], "a rerun after completion sends nothing to S3"


def test_expired_part_url_gets_a_fresh_one(start_service: StartService, proxy: S3Proxy, tmp_path: Path) -> None:
    """A URL that expires before its part is sent: refused by S3, asked for again, sent once more."""
    # 3 s: long enough for the other parts' URLs to be used in time on a loaded machine, short enough to wait out.
    svc = start_service(f"sqlite:///{tmp_path / 'c.db'}", "--part-size", "5M", "--url-expiry", "3s",
                        endpoint=proxy.endpoint)
    f = write_random(tmp_path / "data.bin", 3 * PART + 10, seed=12)
    first_put_of_2: list[int] = []

    def hold_part_2_once(seen: Seen, index: int) -> Fault | None:
        if seen.part_number == 2 and not first_put_of_2:
            first_put_of_2.append(index)
            return Fault(hold=6.0)  # past the URL's 3 s: S3 refuses it as expired
        return None

    proxy.rule = hold_part_2_once
    r = run_cli(controller_args(svc, "exp-1", f, tmp_path / "m.json", tmp_path / "p.jsonl"), client_env(tmp_path))
    assert r.returncode == 0, r.stderr
    # S3 refused the expired URL (rclone answers 400 AccessDenied at once and drops the body, which reaches
    # the client as a 4xx or as a reset connection): either way part 2 went again, with a URL asked anew.
    assert proxy.part_puts()[2] == 2 and proxy.part_puts()[1] == 1
    assert svc.log().count("/part/2/presigned_post") == 2
    assert svc.log().count("/part/1/presigned_post") == 1
    assert object_bytes(svc, "files/exp-1") == f.read_bytes()


def test_lost_state_files_adopt_the_pending_upload(start_service: StartService, proxy: S3Proxy,
                                                   tmp_path: Path) -> None:
    """META and PARTS lost: the pending upload is found by file id, and each part it holds is kept only after its
    MD5 matches the local bytes."""
    svc = start_service(f"sqlite:///{tmp_path / 'c.db'}", "--part-size", "5M", endpoint=proxy.endpoint)
    f = write_random(tmp_path / "data.bin", 4 * PART, seed=13)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    args = controller_args(svc, "lost-1", f, meta, parts, "-t", "1")
    proxy.rule = lambda seen, i: Fault(500, "InternalError") if seen.part_number == 3 else None
    r = run_cli([*args, "--retries", "1"], client_env(tmp_path))
    assert r.returncode == 75, r.stderr
    held = logged(parts)
    assert held == {1, 2}
    meta.unlink()
    parts.unlink()

    proxy.rule = None
    proxy.reset()
    r = run_cli(args, client_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "Adopted 2 parts" in r.stderr
    assert set(proxy.part_puts()) == {3, 4}
    assert object_bytes(svc, "files/lost-1") == f.read_bytes()


def test_refusals_have_their_exit_codes(service: ServiceProcess, tmp_path: Path) -> None:
    f = write_random(tmp_path / "data.bin", 1000, seed=14)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    env = client_env(tmp_path)

    bad = tmp_path / "bad.token"
    bad.write_text("not-a-token-of-this-service\n")
    args = ["upload", "--controller", service.base_url, "--file-id", "r-1", "-f", str(f), "-m", str(meta),
            "-a", str(parts)]
    r = run_cli([*args, "--token-file", str(bad)], env)
    assert r.returncode == 5, r.stderr
    assert "refused the API token" in r.stderr
    assert "not-a-token-of-this-service" not in r.stderr + r.stdout
    assert not meta.exists() and not parts.exists()

    r = run_cli([*args, "--token-file", str(tmp_path / "missing.token")], env)
    assert r.returncode == 2 and "missing.token" in r.stderr

    r = run_cli([*args, "--token-file", str(service.token_file()), "-b", "x", "-k", "y"], env)
    assert r.returncode == 2 and "-b, -k cannot go with --controller" in r.stderr

    r = run_cli(["upload", "--controller", service.base_url, "-f", str(f), "-m", str(meta), "-a", str(parts)], env)
    assert r.returncode == 2 and "--file-id" in r.stderr

    # bob's file: alice is told there is no such file (not whose it is), exit 5
    with service.client("bob") as c:
        assert c.post("/files/bobs-file/multipart_uploads", json={"size": 1000}).status_code == 201
    r = run_cli(["upload", "--controller", service.base_url, "--file-id", "bobs-file", "--token-file",
                 str(service.token_file()), "-f", str(f), "-m", str(meta), "-a", str(parts)], env)
    assert r.returncode == 5 and "no file 'bobs-file'" in r.stderr

    # an uploaded file cannot be uploaded again from other state files: exit 3, nothing sent
    r = run_cli([*args, "--token-file", str(service.token_file())], env)
    assert r.returncode == 0, r.stderr
    r = run_cli([*args[:-4], "-m", str(tmp_path / "m2.json"), "-a", str(tmp_path / "p2.jsonl"), "--token-file",
                 str(service.token_file())], env)
    assert r.returncode == 3, r.stderr
    assert "already has an upload that is uploaded" in r.stderr


def test_no_token_nor_signed_url_in_output_or_state(start_service: StartService, proxy: S3Proxy,
                                                    tmp_path: Path) -> None:
    svc = start_service(f"sqlite:///{tmp_path / 'c.db'}", "--part-size", "5M", endpoint=proxy.endpoint)
    f = write_random(tmp_path / "data.bin", 2 * PART + 1, seed=15)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    slowed: list[int] = []

    def slow_down_part_1_twice(seen: Seen, index: int) -> Fault | None:
        if seen.part_number == 1 and len(slowed) < 2:
            slowed.append(index)
            return Fault(503, "SlowDown")
        return None

    proxy.rule = slow_down_part_1_twice
    r = run_cli([*controller_args(svc, "sec-1", f, meta, parts), "-v", "--json"], client_env(tmp_path))
    assert r.returncode == 0, r.stderr
    everything = r.stdout + r.stderr + meta.read_text() + parts.read_text()
    assert svc.tokens["alice"] not in everything
    assert "X-Amz-Signature" not in everything and "X-Amz-Credential" not in everything
    events = [json.loads(line)["event"] for line in r.stdout.splitlines()]
    assert events.count("retry") == 2 and events[-1] == "summary"  # the SlowDowns were seen and retried


def test_status_and_abort_go_through_the_controller(start_service: StartService, proxy: S3Proxy,
                                                    tmp_path: Path) -> None:
    svc = start_service(f"sqlite:///{tmp_path / 'c.db'}", "--part-size", "5M", endpoint=proxy.endpoint)
    f = write_random(tmp_path / "data.bin", 3 * PART, seed=16)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    env = client_env(tmp_path)
    proxy.rule = lambda seen, i: Fault(500, "InternalError") if seen.part_number == 3 else None
    r = run_cli([*controller_args(svc, "op-1", f, meta, parts, "-t", "1"), "--retries", "1"], env)
    assert r.returncode == 75, r.stderr

    token = ["--token-file", str(svc.token_file())]
    r = run_cli(["status", "-m", str(meta), "-a", str(parts), "--json", *token], env)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert (st["server"], st["server_parts"], st["parts_done"], st["parts_total"]) == ("in_progress", 2, 2, 3)

    r = run_cli(["status", "-m", str(meta)], env)  # no token: says how to give one
    assert r.returncode == 2 and "S3MU_CONTROLLER_TOKEN" in r.stderr

    r = run_cli(["abort", "-m", str(meta), *token], env)
    assert r.returncode == 0, r.stderr
    assert upload_of(svc, "op-1", "cancelled") is not None
    assert upload_of(svc, "op-1", "pending") is None
    r = run_cli(["abort", "-m", str(meta), *token], env)
    assert r.returncode == 0 and "already aborted" in r.stdout

    proxy.rule = None
    r = run_cli(controller_args(svc, "op-1", f, meta, parts), env)
    assert r.returncode == 4 and "--restart" in r.stderr
    r = run_cli([*controller_args(svc, "op-1", f, meta, parts), "--restart"], env)  # a new upload for the file
    assert r.returncode == 0, r.stderr
    assert object_bytes(svc, "files/op-1") == f.read_bytes()


def test_declared_checksums_get_the_upload_accepted(service: ServiceProcess, tmp_path: Path) -> None:
    """--declare-checksum: the file's SHA-256 and CRC64NVME go to the controller, whose verifier then accepts the
    object; a file that is not what was declared (changed after the declaration) would be rejected instead."""
    f = write_random(tmp_path / "data.bin", 2 * PART + 99, seed=21)
    args = [*controller_args(service, "decl-1", f, tmp_path / "m.json", tmp_path / "p.jsonl"),
            "--declare-checksum", "sha256", "--declare-checksum", "crc64nvme"]
    r = run_cli(args, client_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "to declare its crc64nvme and sha256" in r.stderr
    deadline = time.monotonic() + 30
    while upload_of(service, "decl-1", "accepted") is None:
        assert time.monotonic() < deadline, "the controller never accepted the declared upload"
        time.sleep(0.2)
    accepted = upload_of(service, "decl-1", "accepted")
    assert accepted is not None and accepted["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()

    r = run_cli(["upload", "-b", "b", "-k", "k", "-f", str(f), "--declare-checksum", "sha256"], client_env(tmp_path))
    assert r.returncode == 2 and "--declare-checksum goes with --controller" in r.stderr


def test_a_file_id_the_controller_cannot_take_is_refused_before_anything_is_asked(aws_env: dict[str, str],
                                                                                   tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    (tmp_path / "t").write_text("token\n")
    r = run_cli(["upload", "-f", str(f), "--controller", "http://127.0.0.1:9", "--file-id", "run-1/f.bin",
                 "--token-file", str(tmp_path / "t")], aws_env)
    assert r.returncode == 2, r.stderr
    assert "--file-id 'run-1/f.bin' is not a file id the controller takes" in r.stderr and "run-1_f.bin" in r.stderr
