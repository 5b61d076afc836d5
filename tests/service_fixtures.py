"""The upload controller as a user runs it: ``python -m s3_multipart_upload serve`` in a process of its own.

Fixtures (imported by conftest.py):

- ``service``: a fresh service per test, on a fresh bucket and a fresh database, once on SQLite and
  once on PostgreSQL, talking to the session's rclone server.
- ``module_service``: the same, shared by the tests of one module (starting a process costs ~1.5 s);
  tests keep apart by their own file ids and keys.
- ``start_service``: a factory, for a service in front of another endpoint (the fault proxy) or with
  other options; each one it starts is stopped at the end of the test.

Each service knows two principals, alice and bob, with tokens of their own, and carol, a reviewer.

``start_service(url, config={...})`` starts the service from a ServeConfig (its fields as JSON) instead of
the ``serve`` command's options: for the settings the command does not offer yet (webhooks, the
verifier's timing, the sign-in limit); ``launch`` is that process's main.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.pg import fresh_database_url

if TYPE_CHECKING:
    from tests.conftest import S3Server

PRINCIPALS = ("alice", "bob", "carol")
ROLES = {"carol": "reviewer"}  # the tokens file's third field
REGION = "us-east-1"


@dataclass
class ServiceProcess:
    base_url: str  # http://127.0.0.1:PORT
    bucket: str
    s3: S3Server  # the rclone server behind it (directly, or behind ``endpoint``)
    endpoint: str  # the S3 endpoint the service was given
    database_url: str
    tokens: dict[str, str]  # principal -> API token
    tokens_file: Path  # the service's: 'PRINCIPAL TOKEN' lines
    folder: Path
    log_path: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    def token_file(self, principal: str = "alice") -> Path:
        """A file holding only ``principal``'s token (what a client is given)."""
        path = self.folder / f"{principal}.token"
        path.write_text(self.tokens[principal] + "\n")
        path.chmod(0o600)
        return path

    def headers(self, principal: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[principal]}"}

    def client(self, principal: str | None = "alice", timeout: float = 60) -> httpx.Client:
        """An HTTP client for the API, with ``principal``'s token (none with None)."""
        return httpx.Client(base_url=self.base_url, headers=self.headers(principal) if principal else None,
                            timeout=timeout)

    def log(self) -> str:
        """What the service wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def s3_client(self):  # type: ignore[no-untyped-def]
        """boto3 straight to the rclone server, with the service's credentials."""
        return self.s3.client()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(s3: S3Server) -> dict[str, str]:
    """The environment of the service: the test server's credentials, nothing of the developer's AWS or S3MU setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3MU_"))}
    return env | {
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",  # the log file is read while the service runs
    }


@contextlib.contextmanager
def run_service(s3: S3Server, bucket: str, database_url: str, folder: Path, *extra: str,
                endpoint: str | None = None, startup_timeout: float = 30,
                config: dict[str, Any] | None = None) -> Iterator[ServiceProcess]:
    """``s3-multipart-upload serve`` on a free port until the block ends (with ``config``: ``launch`` with those
    ServeConfig fields); fails with its log if /health never answers."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = {p: secrets.token_urlsafe(24) for p in PRINCIPALS}
    tokens_file = folder / "tokens.txt"
    tokens_file.write_text("".join(f"{p} {t} {ROLES.get(p, '')}\n" for p, t in tokens.items()))
    tokens_file.chmod(0o600)
    port = free_port()
    log_path = folder / f"service-{port}.log"
    endpoint = endpoint or s3.endpoint
    args = [sys.executable, "-m", "s3_multipart_upload", "serve", "--bucket", bucket, "--endpoint-url", endpoint,
            "--tokens-file", str(tokens_file), "--port", str(port), "--database-url", database_url, *extra]
    if config is not None:
        assert not extra, "options go in config"
        fields = {"bucket": bucket, "endpoint_url": endpoint, "tokens_file": str(tokens_file), "tokens_env": None,
                  "database_url": database_url, **config}
        config_path = folder / f"config-{port}.json"
        config_path.write_text(json.dumps({"config": fields, "port": port}))
        args = [sys.executable, "-c", "from tests.service_fixtures import launch; launch()", str(config_path)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=service_env(s3), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    service = ServiceProcess(f"http://127.0.0.1:{port}", bucket, s3, endpoint, database_url, tokens, tokens_file,
                             folder, log_path, proc)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                if httpx.get(f"{service.base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"the service exited with {proc.returncode} at start:\n{service.log()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"the service did not answer /health within {startup_timeout:.0f} s:\n{service.log()}",
                            pytrace=False)
            time.sleep(0.1)
        yield service
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def new_bucket(s3: S3Server) -> str:
    name = f"svc-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


StartService = Callable[..., ServiceProcess]


def launch() -> None:
    """The main of a service started with a config: ``python -c ... CONFIG.json`` (see run_service)."""
    from s3_multipart_upload.service.server import ServeConfig, run

    given = json.loads(Path(sys.argv[1]).read_text())
    types = {f.name: str(f.type) for f in dataclasses.fields(ServeConfig)}
    fields: dict[str, Any] = {}
    for name, value in given["config"].items():
        if "Path" in types[name] and value is not None:
            value = Path(value)
        elif "tuple" in types[name]:
            value = tuple(value)
        fields[name] = value
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(levelname)s] %(message)s (%(filename)s:%(lineno)d)")
    run(ServeConfig(**fields), "127.0.0.1", given["port"])


@pytest.fixture
def start_service(s3_server: S3Server, tmp_path: Path) -> Iterator[StartService]:
    """``start_service(database_url, *extra_args, endpoint=None, bucket=None, config=None)``: a running service,
    stopped at the end of the test. A bucket of its own unless ``bucket`` is given."""
    with contextlib.ExitStack() as stack:
        def start(database_url: str, *extra: str, endpoint: str | None = None, bucket: str | None = None,
                  config: dict[str, Any] | None = None) -> ServiceProcess:
            folder = tmp_path / f"service-{uuid.uuid4().hex[:8]}"
            return stack.enter_context(run_service(s3_server, bucket or new_bucket(s3_server), database_url, folder,
                                                   *extra, endpoint=endpoint, config=config))

        yield start


@pytest.fixture
def service(start_service: StartService, database_url: str) -> ServiceProcess:
    """A fresh service (bucket, database) per test, on SQLite and on PostgreSQL, in front of the rclone server."""
    return start_service(database_url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_service(request: pytest.FixtureRequest, s3_server: S3Server,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One service per test module and database; tests share its bucket and database."""
    folder = tmp_path_factory.mktemp(f"service-{request.param}")
    url = fresh_database_url(request.param, request, folder)
    # --verbose: debug lines too, so that the tests that read the log see everything it could leak.
    with run_service(s3_server, new_bucket(s3_server), url, folder, "--verbose") as running:
        yield running
