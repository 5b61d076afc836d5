"""--max-bandwidth: the rate parsed as users write it, the bucket's arithmetic, and one cap for a whole command."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from s3_multipart_upload.bandwidth import Bandwidth, parse_rate
from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.plan import MiB
from tests.conftest import S3Server, run_cli, write_random


@pytest.mark.parametrize(("text", "rate"), [
    ("50MB/s", 50_000_000), ("50M", 50_000_000), ("100MiB/s", 100 * MiB), ("800Mbit/s", 100_000_000),
    ("1.5GB/s", 1_500_000_000), ("100Mb/s", 12_500_000), ("20mB/s", 20_000_000), ("65536", 65536),
    ("10KiB/s", 10240), ("1gbps", 125_000_000),
])
def test_rates_as_users_write_them(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "-5MB/s", "10 MB per second", "100"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(BadInput, match="--max-bandwidth"):
        parse_rate(text)


def test_the_bucket_holds_the_rate_and_lets_no_burst_through_after_a_pause() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = Bandwidth(1_000_000, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        bucket.take(1_000_000)
    assert sum(slept) == pytest.approx(10 - 0.25)  # a quarter of a second's bytes go at once, the rest at the rate
    now[0] += 60  # a long pause: at most a quarter of a second's worth is saved up
    slept.clear()
    bucket.take(1_000_000)
    assert sum(slept) == pytest.approx(0.75)


def test_one_cap_for_a_whole_command(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                     tmp_path: Path) -> None:
    """The three files of one command share the cap (each alone would be under it), so the command takes at least
    their bytes over the rate; the plan and the first lines say so. (A lower bound only: a cap cannot make it
    faster, and a slow machine only makes it slower.)"""
    files = [write_random(tmp_path / f"f{i}.bin", 2 * MiB + i, seed=i) for i in range(3)]
    rate = 2 * MiB
    r = run_cli(["upload", str(files[0]), f"s3://{bucket}/cap/one.bin", "--dry-run", "--max-bandwidth", "2MiB/s",
                 "--endpoint-url", s3_server.endpoint, "--state-dir", str(tmp_path / "s")], aws_env)
    assert r.returncode == 0 and "bandwidth:  at most 2 MiB/s" in r.stdout, r.stdout + r.stderr
    began = time.monotonic()
    r = run_cli(["upload", *map(str, files), f"s3://{bucket}/cap/", "-t", "3", "--max-bandwidth", "2MiB/s",
                 "--endpoint-url", s3_server.endpoint, "--state-dir", str(tmp_path / "s"), "-v"], aws_env)
    elapsed = time.monotonic() - began
    assert r.returncode == 0, r.stderr
    total = sum(f.stat().st_size for f in files)
    assert elapsed >= (total - rate / 4) / rate, f"{total} bytes in {elapsed:.2f} s is over the cap"
    for f in files:
        got = s3_server.client().get_object(Bucket=bucket, Key=f"cap/{f.name}")["Body"].read()
        assert got == f.read_bytes()
    r = run_cli(["upload", str(files[0]), f"s3://{bucket}/cap/x.bin", "--max-bandwidth", "fast",
                 "--endpoint-url", s3_server.endpoint], aws_env)
    assert r.returncode == 2 and "--max-bandwidth 'fast' is not a rate" in r.stderr
