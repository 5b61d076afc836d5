"""The controller's database: its tables, created or migrated at start, on SQLite or PostgreSQL.

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
# Which status may follow which, and who may make each move: status.py (the one table).

metadata = sa.MetaData()
_Stamp = sa.DateTime(timezone=True)
_Serial = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

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
    sa.Column("created_at", _Stamp, nullable=False),
    sa.Column("updated_at", _Stamp, nullable=False),
    # v2: what the client declared of the whole file (verified once uploaded), and the last change's who and why.
    sa.Column("sha256", sa.String(64), nullable=True),  # lowercase hex
    sa.Column("crc64nvme", sa.String(12), nullable=True),  # base64 of 8 bytes, as S3 writes it
    sa.Column("status_by", sa.String(255), nullable=True),
    sa.Column("reason", sa.String(1024), nullable=True),
    # v2: the verifier's lease on an uploaded upload, or the time of its next try after a failure.
    sa.Column("verify_after", _Stamp, nullable=True),
    sa.Column("verify_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("metadata", sa.Text, nullable=True),  # v3: the client's user metadata (JSON), as sent to S3
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
    sa.Column("created_at", _Stamp, nullable=False),
)

# v2: every status change, with who made it, as what (status.py's actors), when and why. Append only.
status_changes = sa.Table(
    "status_changes", metadata,
    sa.Column("id", _Serial, primary_key=True, autoincrement=True),
    sa.Column("s3_upload_id", sa.String(1024), nullable=False, index=True),
    sa.Column("from_status", sa.String(16), nullable=True),  # None: the upload was created
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(16), nullable=False),
    sa.Column("by", sa.String(255), nullable=False),
    sa.Column("reason", sa.String(1024), nullable=True),
    sa.Column("at", _Stamp, nullable=False),
)

# v2: the events to deliver, one row per event and webhook, written in the transaction of the change (outbox.py).
outbox = sa.Table(
    "outbox", metadata,
    sa.Column("id", _Serial, primary_key=True, autoincrement=True),  # the order of events
    sa.Column("event_id", sa.String(36), nullable=False),  # the idempotency key: the same for every webhook
    sa.Column("destination", sa.String(32), nullable=False),  # a digest of the webhook's URL, never the URL
    sa.Column("s3_upload_id", sa.String(1024), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the event's JSON, as delivered
    sa.Column("created_at", _Stamp, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", _Stamp, nullable=False),
    sa.Column("claimed_until", _Stamp, nullable=True),  # an instance is delivering it until then
    sa.Column("delivered_at", _Stamp, nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
)
sa.Index("ix_outbox_undelivered", outbox.c.destination, outbox.c.s3_upload_id, outbox.c.id,
         sqlite_where=outbox.c.delivered_at.is_(None), postgresql_where=outbox.c.delivered_at.is_(None))


def _v1(conn: Connection) -> None:
    """The first schema, as it was, written out: the tables above have grown since (later migrations add to them)."""
    v1 = sa.MetaData()
    uploads = sa.Table(
        "multipart_uploads", v1,
        sa.Column("s3_upload_id", sa.String(1024), primary_key=True),
        sa.Column("file_id", sa.String(255), nullable=True),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("part_size", sa.BigInteger, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("content_type", sa.String(255), nullable=True),
        sa.Column("etag", sa.String(255), nullable=True),
        sa.Column("object_size", sa.BigInteger, nullable=True),
        sa.Column("created_at", _Stamp, nullable=False),
        sa.Column("updated_at", _Stamp, nullable=False),
        sa.CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})",
                           name="ck_multipart_uploads_status"),
    )
    sa.Index("uq_multipart_uploads_active_file", uploads.c.file_id, unique=True,
             sqlite_where=uploads.c.status.in_(ACTIVE), postgresql_where=uploads.c.status.in_(ACTIVE))
    sa.Index("ix_multipart_uploads_owner", uploads.c.owner)
    sa.Table(
        "files", v1,
        sa.Column("file_id", sa.String(255), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("s3_upload_id", sa.String(1024), sa.ForeignKey("multipart_uploads.s3_upload_id"), unique=True,
                  nullable=True),
        sa.Column("created_at", _Stamp, nullable=False),
    )
    v1.create_all(conn)


_V2_UPLOAD_COLUMNS = ("sha256", "crc64nvme", "status_by", "reason", "verify_after", "verify_attempts")


def _v2(conn: Connection) -> None:
    """Declared checksums, who/why of the status, the verifier's schedule; the change history and the outbox."""
    for name in _V2_UPLOAD_COLUMNS:
        column = multipart_uploads.c[name]
        kind = column.type.compile(dialect=conn.dialect)
        default = " NOT NULL DEFAULT 0" if name == "verify_attempts" else ""
        conn.exec_driver_sql(f"ALTER TABLE multipart_uploads ADD COLUMN {name} {kind}{default}")
    metadata.create_all(conn, tables=[status_changes, outbox])


def _v3(conn: Connection) -> None:
    """The user metadata a client set on its upload (JSON), as sent to S3."""
    conn.exec_driver_sql("ALTER TABLE multipart_uploads ADD COLUMN metadata TEXT")


# Migrations in order; each runs once, in the transaction that records its number. Append, never edit.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3]
SCHEMA_VERSION = len(MIGRATIONS)


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
