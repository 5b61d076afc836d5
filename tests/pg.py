"""A real PostgreSQL server for the tests, and a fresh database per test on SQLite or PostgreSQL.

The server (initdb + pg_ctl from the machine's PostgreSQL) runs once per session on a free port of
127.0.0.1, with its data in a temporary folder and trust authentication on loopback only. As root,
it runs as the ``postgres`` user: PostgreSQL refuses to run as root. Without PostgreSQL on the
machine, the PostgreSQL variants are skipped, or fail when S3MU_REQUIRE_POSTGRES=1 (CI).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE_ENV = "S3MU_REQUIRE_POSTGRES"
SUPERUSER = "postgres"
RUN_AS = "postgres"  # the system user that owns the data folder when the tests run as root


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    data_dir: Path
    log_path: Path

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "s3mu") -> str:
        """A new, empty database with a unique name; returns its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires PostgreSQL", pytrace=False)
    pytest.skip(f"{reason} (install PostgreSQL, e.g. apt-get install postgresql, to run these tests)")


def find_bindir() -> Path | None:
    """The folder of initdb and pg_ctl: pg_config's, Debian's newest version, or the PATH's."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(debian, key=lambda p: int(Path(p).parent.name)
                                           if Path(p).parent.name.isdigit() else 0, reverse=True)]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb") or "").resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres(timeout: float = 60) -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        _unavailable("PostgreSQL's initdb and pg_ctl were not found (pg_config --bindir, /usr/lib/postgresql/*/bin, "
                     "PATH)")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="s3mu-pg-"))  # not under pytest's tmp: that is private to this user
    if os.geteuid() == 0:
        import pwd

        try:
            account = pwd.getpwnam(RUN_AS)
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            _unavailable(f"running as root, and there is no {RUN_AS!r} user to run PostgreSQL as")
        if not shutil.which("runuser"):
            shutil.rmtree(base, ignore_errors=True)
            _unavailable("running as root, and runuser (util-linux) is missing")
        os.chown(base, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", RUN_AS, "--"]
    data, log_path = base / "data", base / "postgres.log"
    port = _free_port()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=timeout, cwd=base)

    def log_text() -> str:
        try:
            return log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    started = False
    try:
        init = run(str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                   "--locale=C", "--no-sync")
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}): {init.stdout}{init.stderr}", pytrace=False)
        # Loopback TCP only; the socket file goes in our folder (the system's may not be writable). No durability:
        # the data dies with the session.
        options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        start = run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log_path), "-o", options, "-w",
                    "-t", str(int(timeout)), "start")
        started = True
        if start.returncode != 0:
            pytest.fail(f"PostgreSQL did not start ({start.returncode}): {start.stdout}{start.stderr}\n{log_text()}",
                        pytrace=False)
        yield PostgresServer("127.0.0.1", port, data, log_path)
    finally:
        if started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-t", "30", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with postgres() as server:
        yield server


def fresh_database_url(kind: str, request: pytest.FixtureRequest, folder: Path) -> str:
    """A new, empty database: a SQLite file in ``folder``, or a new database on the session's PostgreSQL."""
    if kind == "sqlite":
        return f"sqlite:///{folder / f'controller-{uuid.uuid4().hex[:8]}.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database per test, on each of the service's two databases."""
    return fresh_database_url(request.param, request, tmp_path)
