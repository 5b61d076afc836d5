"""The controller's database: two tables, created or migrated at start, on SQLite or PostgreSQL.

SQLAlchemy Core (no ORM): the same statements run on both. A transaction that changes an upload
holds a lock on its row (PostgreSQL: SELECT ... FOR UPDATE; SQLite: BEGIN IMMEDIATE, one writer
at a time) across the S3 call it guards, so two requests, or two service instances, never both
complete, abort or create the same thing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

PENDING, CANCELLED, FAILED, UPLOADED, ACCEPTED, REJECTED = (
    "pending", "cancelled", "failed", "uploaded", "accepted", "rejected")
STATUSES = (PENDING, CANCELLED, FAILED, UPLOADED, ACCEPTED, REJECTED)
ACTIVE = (PENDING, UPLOADED, ACCEPTED)  # a file has at most one upload in these
TRANSITIONS: dict[str, tuple[str, ...]] = {
    PENDING: (UPLOADED, CANCELLED, FAILED),
    UPLOADED: (ACCEPTED, REJECTED),
    CANCELLED: (), FAILED: (), ACCEPTED: (), REJECTED: (),
}

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

multipart_uploads = sa.Table(
    "multipart_uploads", metadata,
    sa.Column("s3_upload_id", sa.String(1024), primary_key=True),
    sa.Column("file_id", sa.String(255), nullable=True),
    sa.Column("bucket", sa.String(255), nullable=False),
    sa.Column("key", sa.String(1024), nullable=False),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("part_size", sa.BigInteger, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=True),  # declared by the client, when it did
    sa.Column("content_type", sa.String(255), nullable=True),
    sa.Column("etag", sa.String(255), nullable=True),  # of the object, once completed
    sa.Column("object_size", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="ck_multipart_uploads_status"),
)
# At most one active upload per file, whatever the service instance: the database says no to the second.
sa.Index(
    "uq_multipart_uploads_active_file", multipart_uploads.c.file_id, unique=True,
    sqlite_where=multipart_uploads.c.status.in_(ACTIVE),
    postgresql_where=multipart_uploads.c.status.in_(ACTIVE),
)
sa.Index("ix_multipart_uploads_owner", multipart_uploads.c.owner)

files = sa.Table(
    "files", metadata,
    sa.Column("file_id", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("s3_upload_id", sa.String(1024), sa.ForeignKey("multipart_uploads.s3_upload_id"), unique=True,
              nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[multipart_uploads, files])


# Migrations in order; each runs once, in the transaction that records its number. Append, never edit.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    """UTC, second precision, with Z (SQLite hands back naive datetimes: they were stored as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3, not the psycopg2 default
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            # One connection per thread of the server's pool; the writer lock is the database file's.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60, "isolation_level": None}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", _sqlite_begin)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction that may write (on SQLite it holds the database's write lock from its start)."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A transaction that only reads: on SQLite it neither waits for nor blocks a writer (WAL)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(s3mu_read_only=True)
            with conn.begin():
                yield conn

    def migrate(self) -> int:
        """Create or migrate the schema; several instances starting at once take turns. Returns the version."""
        with self.transaction() as conn:
            if not self.is_sqlite:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7338201)"))  # any fixed number: ours
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
            for number, migration in enumerate(MIGRATIONS, start=1):
                if number > current:
                    log.info("Database: applying schema migration %d.", number)
                    migration(conn)
                    conn.execute(schema_version.insert().values(version=number))
            if current > len(MIGRATIONS):
                raise RuntimeError(f"the database {self.safe_url} has schema version {current}, newer than this "
                                   f"program's {len(MIGRATIONS)}: upgrade s3-multipart-upload")
            return max(current, len(MIGRATIONS))

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # pysqlite's deferred BEGIN lets two transactions read, then fail to upgrade to writing; take the
    # write lock up front (SQLAlchemy's documented recipe), which also serialises check-then-act.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("s3mu_read_only") else "BEGIN IMMEDIATE")
