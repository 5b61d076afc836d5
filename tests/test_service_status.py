"""The controller's transition table, move by move and actor by actor, and the schema migration that brought
the columns and tables of verification, review and events (v1 -> v2) with the rows already there."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
import sqlalchemy as sa

from s3_multipart_upload.service import db, status
from s3_multipart_upload.service.model import ServiceError

STATUSES = ("pending", "uploaded", "cancelled", "failed", "accepted", "rejected")
ACTORS = ("owner", "reviewer", "verifier", "controller")
# Written out, not imported: (from, to) -> who may; None is the creation. Every other move is refused.
EXPECTED = {
    (None, "pending"): {"owner"},
    ("pending", "uploaded"): {"owner"},
    ("pending", "cancelled"): {"owner"},
    ("pending", "failed"): {"owner", "controller"},
    ("uploaded", "accepted"): {"verifier", "reviewer"},
    ("uploaded", "rejected"): {"verifier", "reviewer"},
    ("accepted", "rejected"): {"reviewer"},
}


@pytest.mark.parametrize(("before", "after", "actor"), list(itertools.product((None, *STATUSES), STATUSES, ACTORS)))
def test_every_move_by_every_actor(before: str | None, after: str, actor: str) -> None:
    allowed = EXPECTED.get((before, after))
    if allowed is not None and actor in allowed:
        status.check(before, after, actor, "u1")
        assert after in status.next_statuses(before, actor)
        return
    with pytest.raises(ServiceError) as refused:
        status.check(before, after, actor, "u1")
    assert after not in status.next_statuses(before, actor)
    if allowed is None:
        assert (refused.value.status, refused.value.code) == (409, "InvalidTransition")
        assert f"is {before} and cannot become {after}" in refused.value.message
    else:
        assert (refused.value.status, refused.value.code) == (403, "NotAllowed")
        assert all(who in refused.value.message for who in allowed)


def test_the_final_statuses_have_no_way_out() -> None:
    for final in ("cancelled", "failed", "rejected"):
        with pytest.raises(ServiceError, match="none: it is final"):
            status.check(final, "pending", "owner", "u1")


def test_v1_database_migrates_to_the_latest_with_its_rows(database_url: str) -> None:
    database = db.Database(database_url)
    try:
        with database.transaction() as conn:  # a controller of the first schema, with an upload in it
            db.schema_version.create(conn)
            db.MIGRATIONS[0](conn)
            conn.execute(db.schema_version.insert().values(version=1))
            stamp = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
            conn.execute(sa.text("INSERT INTO multipart_uploads (s3_upload_id, file_id, bucket, key, owner, status, "
                                 "part_size, created_at, updated_at) VALUES ('old', 'f1', 'b', 'files/f1', 'alice', "
                                 "'uploaded', 5242880, :t, :t)"), {"t": stamp})
        assert database.migrate() == db.SCHEMA_VERSION == 3
        assert database.migrate() == 3  # a second start changes nothing
        with database.read() as conn:
            row = conn.execute(sa.select(db.multipart_uploads)).one()
            assert (row.s3_upload_id, row.status, row.owner, row.sha256, row.reason, row.verify_attempts,
                    row.metadata) == ("old", "uploaded", "alice", None, None, 0, None)
            assert conn.execute(sa.select(sa.func.count()).select_from(db.outbox)).scalar() == 0
            assert conn.execute(sa.select(sa.func.count()).select_from(db.status_changes)).scalar() == 0
        with database.transaction() as conn:  # the old upload moves like a new one, and its move is recorded
            conn.execute(sa.select(db.multipart_uploads).with_for_update()).one()
            status.move(conn, "old", "uploaded", "accepted", "reviewer", "carol", "looked at it", ["d1", "d2"])
        with database.read() as conn:
            change = conn.execute(sa.select(db.status_changes)).one()
            assert (change.from_status, change.to_status, change.actor, change.by, change.reason) == \
                ("uploaded", "accepted", "reviewer", "carol", "looked at it")
            events = conn.execute(sa.select(db.outbox).order_by(db.outbox.c.destination)).all()
            assert [e.destination for e in events] == ["d1", "d2"]
            assert events[0].event_id == events[1].event_id and events[0].delivered_at is None
    finally:
        database.dispose()


def test_a_move_from_a_status_the_row_no_longer_has_writes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    database = db.Database(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    database.migrate()
    stamp = db.now()
    with database.transaction() as conn:
        conn.execute(db.multipart_uploads.insert().values(
            s3_upload_id="u", bucket="b", key="k", owner="alice", status="accepted", part_size=1, created_at=stamp,
            updated_at=stamp))
    with pytest.raises(RuntimeError, match="no longer uploaded"), database.transaction() as conn:
        status.move(conn, "u", "uploaded", "rejected", "verifier", "verifier", "late", ["d"])
    with database.read() as conn:
        assert conn.execute(sa.select(db.multipart_uploads.c.status)).scalar() == "accepted"
        assert conn.execute(sa.select(sa.func.count()).select_from(db.status_changes)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(db.outbox)).scalar() == 0
    database.dispose()
