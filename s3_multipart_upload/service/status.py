"""Which status may follow which, who may make each move, and the one function that makes it.

An upload's life (docs/controller-events.md draws it)::

    (new) -> pending -> uploaded -> accepted -> rejected
                |          \\-----> rejected
                +-> cancelled
                +-> failed

Who (the actor) may make a move is part of the table: the owner finishes or gives up its own upload; only
the verifier (the controller's check of a declared checksum) or a principal with the reviewer role decides
accepted or rejected; the controller itself marks an upload failed when S3 no longer has it. A reviewer may
still reject an accepted upload (a problem found later); rejected, cancelled and failed are final.

``move`` is the only writer of a status: in the caller's transaction it updates the row (only if it still
has the status the caller read under its lock), appends the change to ``status_changes`` (who, as what,
when, why) and writes its event to the outbox (events.py), so the three are committed together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from s3_multipart_upload.service import db, events
from s3_multipart_upload.service.db import ACCEPTED, CANCELLED, FAILED, PENDING, REJECTED, UPLOADED
from s3_multipart_upload.service.model import ServiceError

OWNER, REVIEWER, VERIFIER, CONTROLLER = "owner", "reviewer", "verifier", "controller"
ACTORS = (OWNER, REVIEWER, VERIFIER, CONTROLLER)
MAX_REASON = 1024

# (from, to) -> the actors that may make the move; None as "from" is the upload's creation. Nothing else moves.
MOVES: dict[tuple[str | None, str], frozenset[str]] = {
    (None, PENDING): frozenset({OWNER}),
    (PENDING, UPLOADED): frozenset({OWNER}),
    (PENDING, CANCELLED): frozenset({OWNER}),
    (PENDING, FAILED): frozenset({OWNER, CONTROLLER}),
    (UPLOADED, ACCEPTED): frozenset({VERIFIER, REVIEWER}),
    (UPLOADED, REJECTED): frozenset({VERIFIER, REVIEWER}),
    (ACCEPTED, REJECTED): frozenset({REVIEWER}),
}


def next_statuses(current: str | None, actor: str) -> list[str]:
    """The statuses ``actor`` may move an upload in ``current`` to, in the order of db.STATUSES."""
    return [to for to in db.STATUSES if actor in MOVES.get((current, to), ())]


def check(current: str | None, to: str, actor: str, upload_id: str) -> None:
    """Nothing if ``actor`` may move the upload from ``current`` to ``to``; else 409 (no such move) or 403 (a move
    someone else makes)."""
    who = MOVES.get((current, to))
    if who is None:
        allowed = ", ".join(to for (frm, to) in MOVES if frm == current) or "none: it is final"
        raise ServiceError(409, "InvalidTransition", f"upload {upload_id} is {current} and cannot become {to} "
                                                     f"(allowed: {allowed})")
    if actor not in who:
        raise ServiceError(403, "NotAllowed", f"upload {upload_id}: only the {' or the '.join(sorted(who))} may "
                                              f"move it from {current} to {to}")


def record(conn: Connection, row: Any, current: str | None, actor: str, by: str, reason: str | None,
           destinations: Sequence[str]) -> None:
    """Append the change that brought ``row`` (as it now is) to its status, and its event, to the transaction."""
    conn.execute(db.status_changes.insert().values(
        s3_upload_id=row.s3_upload_id, from_status=current, to_status=row.status, actor=actor, by=by,
        reason=reason, at=row.updated_at))
    events.write(conn, row, current, actor, by, reason, destinations)


def move(conn: Connection, upload_id: str, current: str, to: str, actor: str, by: str, reason: str | None,
         destinations: Sequence[str], values: dict[str, Any] | None = None) -> Any:
    """Move the upload (its row locked by the caller, and read as ``current``) to ``to``; returns the new row."""
    check(current, to, actor, upload_id)
    if reason is not None:
        reason = reason[:MAX_REASON]
    done = conn.execute(db.multipart_uploads.update().where(
        db.multipart_uploads.c.s3_upload_id == upload_id, db.multipart_uploads.c.status == current)
        .values(status=to, updated_at=db.now(), status_by=by, reason=reason, verify_after=None, **(values or {})))
    if done.rowcount != 1:  # the caller's lock should make this impossible: say so rather than write half
        raise RuntimeError(f"upload {upload_id} is no longer {current}: its row was not locked")
    row = conn.execute(sa.select(db.multipart_uploads).where(db.multipart_uploads.c.s3_upload_id == upload_id)).one()
    record(conn, row, current, actor, by, reason, destinations)
    return row
