"""A block device (here a loop device over a file) uploads as a file does: its size from the device, its parts read at
offsets by several threads, killed and resumed by offset; it is known by its device number and size."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import S3Server, kill_when, run_cli, write_random
from tests.s3proxy import S3Proxy


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    if shutil.which("losetup") is None:
        pytest.skip("no losetup on this machine")
    backing = write_random(tmp_path / "disk.img", 24 * MiB, seed=31)
    made = subprocess.run(["losetup", "--find", "--show", "--read-only", str(backing)], capture_output=True,
                          text=True, timeout=30)
    if made.returncode != 0:
        pytest.skip(f"this kernel or sandbox gives no loop device: {made.stderr.strip()}")
    device = Path(made.stdout.strip())
    try:
        yield device, backing.read_bytes()
    finally:
        subprocess.run(["losetup", "--detach", str(device)], capture_output=True, timeout=30)


@pytest.mark.e2e
def test_a_block_device_uploads_and_resumes(loop_device: tuple[Path, bytes], s3_server: S3Server, bucket: str,
                                            aws_env: dict[str, str], tmp_path: Path) -> None:
    device, data = loop_device
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    proxy = S3Proxy(s3_server.endpoint, delay=0.1)
    try:
        args = ["upload", "-b", bucket, "-k", "disk.img", "-f", str(device), "-m", str(meta), "-a", str(parts),
                "-s", "5M", "-t", "2", "--endpoint-url", proxy.endpoint]
        r = run_cli([*args, "--dry-run"], aws_env)
        assert r.returncode == 0 and f"{len(data)} bytes" in r.stdout, r.stdout + r.stderr
        code = kill_when(args, aws_env, lambda: parts.exists() and len(parts.read_text().splitlines()) >= 2)
        assert code == -signal.SIGKILL
        assert json.loads(meta.read_text())["source"]["kind"] == "device"
        proxy.wait_idle()
        before = {json.loads(line)["partNumber"] for line in parts.read_text().splitlines() if line.strip()}
        proxy.reset()
        r = run_cli(args, aws_env)
        assert r.returncode == 0, r.stderr
        assert not set(proxy.part_puts()) & before, "parts done before the kill were sent again"
    finally:
        proxy.close()
    assert s3_server.client().get_object(Bucket=bucket, Key="disk.img")["Body"].read() == data
