"""How each part is proven, against a real store: rclone serve s3 behind a proxy that, where asked, checks S3's
additional checksums as AWS does (with an implementation other than the client's) and damages bytes on the way.

- MD5 (what `auto` picks for an S3-compatible store): a damaged part is caught by its ETag and sent again.
- CRC64NVME (what `auto` picks for AWS S3): every part checked on arrival, and the whole file's checksum,
  combined across resumed runs, checked at completion.
"""

from __future__ import annotations

import base64
import filecmp
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anycrc
import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import S3Server, run_cli, upload_args, write_random
from tests.s3proxy import Fault, S3Proxy, Seen

pytestmark = pytest.mark.integration


def stored(server: S3Server, bucket: str, key: str) -> bytes:
    return bytes(server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def crc64nvme_b64(data: bytes) -> str:
    return base64.b64encode(int(anycrc.Model("CRC64-NVME").calc(data)).to_bytes(8, "big")).decode()


def methods(proxy: S3Proxy) -> list[str]:
    return [s.method for s in proxy.seen]


@pytest.fixture
def verifying(s3_server: S3Server) -> object:
    proxies: list[S3Proxy] = []

    def make(rule=None, delay: float = 0.0) -> S3Proxy:  # type: ignore[no-untyped-def]
        p = S3Proxy(s3_server.endpoint, rule=rule, delay=delay, verify_checksums=True)
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.close()


def corrupt_first_try_of(number: int) -> object:
    def rule(seen: Seen, index: int) -> Fault | None:
        return Fault(corrupt=True) if seen.part_number == number and index == first[number] else None
    first: dict[int, int] = {}

    def track(seen: Seen, index: int) -> Fault | None:
        if seen.part_number is not None:
            first.setdefault(seen.part_number, index)
        return rule(seen, index)
    return track


def test_auto_on_an_s3_compatible_store_catches_a_damaged_part_by_its_etag(request: pytest.FixtureRequest,
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    """A store that does not verify CRC64NVME (rclone; auto's probe finds out): MD5 by ETag catches the damage."""
    proxy = S3Proxy(s3_server.endpoint, rule=corrupt_first_try_of(2))
    request.addfinalizer(proxy.close)
    f = write_random(tmp_path / "f.bin", 15 * MiB + 7, seed=21)
    r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "-t", "2",
                            "--json", endpoint=proxy.endpoint), aws_env)
    assert r.returncode == 0, r.stderr
    assert "Checksum MD5: auto: the store accepted a wrong CRC64NVME" in r.stderr
    assert "Part 2 reached the server damaged" in r.stderr
    assert proxy.part_puts() == {1: 1, 2: 2, 3: 1, 4: 1}  # the damaged part once more, nothing else
    assert stored(s3_server, bucket, "k") == f.read_bytes()
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["checksumAlgorithm"] == "MD5" and summary["fullObjectChecksum"] is None


def test_a_damaged_one_part_object_never_stands_at_the_key(
        verifying, s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A PutObject makes the object with its first request, so it goes with Content-MD5 (not checked by its ETag
    afterwards): the store refuses the damaged body, and no damaged object ever stands at the key."""
    proxy = verifying(lambda seen, index: Fault(corrupt=True) if index == 0 else None)
    f = write_random(tmp_path / "f.bin", 3 * MiB, seed=26)
    r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", endpoint=proxy.endpoint),
                aws_env)
    assert r.returncode == 0, r.stderr
    assert "PutObject s3://" in r.stderr and "BadDigest" in r.stderr  # refused on arrival, then sent again
    assert methods(proxy) == ["PUT", "PUT"]
    assert stored(s3_server, bucket, "k") == f.read_bytes()


def test_auto_looks_at_the_endpoint_boto3_resolves_not_only_the_flag(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    """AWS_ENDPOINT_URL (or a profile's endpoint_url) points at an S3-compatible store: auto must not take it for
    AWS S3 (CRC64NVME unasked); it asks the store, and rclone does not verify CRC64NVME: MD5."""
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=27)
    r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M"),
                aws_env | {"AWS_ENDPOINT_URL": s3_server.endpoint})
    assert r.returncode == 0, r.stderr
    assert "Checksum MD5: auto: the store accepted a wrong CRC64NVME" in r.stderr
    assert stored(s3_server, bucket, "k") == f.read_bytes()


def test_crc64nvme_full_object_is_checked_on_every_part_and_on_the_whole_file(
        verifying, s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proxy = verifying(corrupt_first_try_of(3))
    f = write_random(tmp_path / "f.bin", 20 * MiB + 3, seed=22)
    meta = tmp_path / "m.json"
    r = run_cli(upload_args(bucket, "k", f, meta, tmp_path / "p.jsonl", "-s", "5M", "-t", "3",
                            "--checksum", "CRC64NVME", "--json", endpoint=proxy.endpoint), aws_env)
    assert r.returncode == 0, r.stderr
    assert len(proxy.refused) == 1 and "crc64nvme" in proxy.refused[0]  # the damaged part, refused on arrival
    assert proxy.part_puts() == {1: 1, 2: 1, 3: 2, 4: 1, 5: 1}
    whole = crc64nvme_b64(f.read_bytes())
    assert json.loads(meta.read_text())["checksumCRC64NVME"] == whole
    assert json.loads(r.stdout.splitlines()[-1])["fullObjectChecksum"] == whole
    status = run_cli(["status", "-m", str(meta), "--endpoint-url", proxy.endpoint], aws_env)
    assert f"checksum: CRC64NVME, whole object {whole}" in status.stdout, status.stderr
    assert "HEAD" not in methods(proxy)  # the completion's answer named the checksum the proxy verified
    assert "did not confirm" not in r.stderr
    assert stored(s3_server, bucket, "k") == f.read_bytes()


def test_the_full_object_checksum_holds_across_a_kill_and_a_lost_log(
        verifying, s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Parts from the first run (logged, and held but not logged) combine with the rerun's into the whole
    file's CRC64NVME, which the proxy checks independently at completion."""
    proxy = verifying(delay=0.3)
    f = write_random(tmp_path / "f.bin", 40 * MiB + 11, seed=23)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    args = upload_args(bucket, "k", f, meta, parts, "-s", "5M", "-t", "2", "--checksum", "CRC64NVME",
                       endpoint=proxy.endpoint)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_env
    proc = subprocess.Popen([sys.executable, "-m", "s3_multipart_upload", *args], env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not parts.exists() or len(parts.read_text().splitlines()) < 4):
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=30)
    proxy.wait_idle()
    lines = parts.read_text().splitlines()
    assert 4 <= len(lines) < 9
    assert all("checksum" in json.loads(line) for line in lines)  # each part's CRC64NVME, for the combine
    parts.write_text("\n".join(lines[:2]) + "\n")  # lose two lines: those parts must be adopted, not resent
    proxy.delay = 0.0
    upload_id = json.loads(meta.read_text())["uploadId"]
    held = {p["PartNumber"] for p in s3_server.client().list_parts(Bucket=bucket, Key="k",
                                                                    UploadId=upload_id).get("Parts", [])}
    assert len(held) >= 4
    before = proxy.part_puts()
    r = run_cli(args, aws_env)
    assert r.returncode == 0, r.stderr
    assert f"Adopted {len(held) - 2} parts" in r.stderr
    resent = {n for n, c in (proxy.part_puts() - before).items() if c}
    assert resent == set(range(1, 10)) - held  # only what the server lacked
    whole = crc64nvme_b64(f.read_bytes())
    assert json.loads(meta.read_text())["checksumCRC64NVME"] == whole
    assert not proxy.refused
    assert stored(s3_server, bucket, "k") == f.read_bytes()


def test_a_one_part_file_with_crc64nvme_is_proven_by_the_put_answer(
        verifying, s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proxy = verifying()
    f = write_random(tmp_path / "f.bin", 3 * MiB, seed=24)
    meta = tmp_path / "m.json"
    r = run_cli(upload_args(bucket, "k", f, meta, tmp_path / "p.jsonl", "--checksum", "CRC64NVME",
                            endpoint=proxy.endpoint), aws_env)
    assert r.returncode == 0, r.stderr
    assert methods(proxy) == ["PUT"]  # one PutObject, no HEAD: its answer echoed the verified checksum
    assert json.loads(meta.read_text())["checksumCRC64NVME"] == crc64nvme_b64(f.read_bytes())
    assert stored(s3_server, bucket, "k") == f.read_bytes()


@pytest.mark.parametrize("algorithm", ["CRC32C", "CRC32", "SHA256"])
def test_composite_checksums_are_verified_per_part(verifying, s3_server: S3Server, bucket: str,  # type: ignore[no-untyped-def]
                                                   aws_env: dict[str, str], tmp_path: Path, algorithm: str) -> None:
    proxy = verifying(corrupt_first_try_of(1))
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=25)
    r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                            "--checksum", algorithm, endpoint=proxy.endpoint), aws_env)
    assert r.returncode == 0, r.stderr
    assert len(proxy.refused) == 1 and algorithm.lower() in proxy.refused[0]
    assert proxy.part_puts() == {1: 2, 2: 1, 3: 1}
    assert stored(s3_server, bucket, "k") == f.read_bytes()


def test_memory_does_not_grow_with_the_part_size(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    """A 1 GiB file in two 512 MiB parts sent at once: parts are streamed, so the process stays far below one
    part's size (before streaming it held both parts: over 1 GiB)."""
    f = tmp_path / "sparse.bin"
    with open(f, "wb") as out:
        out.truncate(1024 * MiB)
    args = upload_args(bucket, "big", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "512M", "-t", "2",
                       endpoint=s3_server.endpoint)
    # A fresh interpreter whose only child is the CLI: its children's peak RSS is the CLI's.
    measure = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
               "sys.stderr.buffer.write(r.stderr); "
               "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_env
    r = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "s3_multipart_upload", *args],
                       env=full_env, capture_output=True, text=True, timeout=300)
    code, peak_kib = (int(x) for x in r.stdout.split())
    assert code == 0, r.stderr
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib // 1024} MiB"
    assert filecmp.cmp(f, s3_server.data_dir / bucket / "big", shallow=False)  # rclone keeps objects as files
