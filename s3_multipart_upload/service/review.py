"""Decisions on uploaded files: a reviewer's accept or reject, the history of an upload's changes, the
reviewers' queue, and what becomes of a rejected object (the ``on_reject`` setting: keep, quarantine
under ``quarantine_prefix``, or delete).

The verifier (verify.py) decides through ``decide`` too, as the actor ``verifier``: one path for both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from s3_multipart_upload.service import db, status
from s3_multipart_upload.service.core import Service
from s3_multipart_upload.service.db import ACCEPTED, REJECTED, UPLOADED, multipart_uploads, status_changes
from s3_multipart_upload.service.model import Caller, ServiceError, Upload, not_found
from s3_multipart_upload.service.storage import StorageError

log = logging.getLogger(__name__)

ON_REJECT = ("keep", "quarantine", "delete")
MAX_QUEUE = 1000


@dataclass(frozen=True)
class Change:
    from_status: str | None
    to_status: str
    actor: str
    by: str
    reason: str | None
    at: str | None


def _locked(conn: Connection, upload_id: str) -> Upload | None:
    if "\x00" in upload_id:
        return None
    row = conn.execute(sa.select(multipart_uploads).where(multipart_uploads.c.s3_upload_id == upload_id)
                       .with_for_update()).first()
    return Upload.from_row(row) if row is not None else None


def dispose(service: Service, upload: Upload) -> None:
    """Apply the on_reject setting to a rejected upload's object (StorageError if the store refuses)."""
    policy, key = service.settings.on_reject, upload.key
    if policy == "delete":
        service.storage.delete(key)
    elif policy == "quarantine":
        service.storage.move(key, service.settings.quarantine_prefix + key)
    if policy != "keep":
        log.info("Upload %s rejected: its object %s is %s.", upload.upload_id, key,
                 "deleted" if policy == "delete" else f"moved under {service.settings.quarantine_prefix}")


def decide(service: Service, upload_id: str, to: str, actor: str, by: str, reason: str) -> Upload | None:
    """Move the upload to accepted or rejected as ``actor``; rejecting applies on_reject in the same transaction
    (if the store refuses, nothing changes). None when the upload is gone."""
    with service.db.transaction() as conn:
        upload = _locked(conn, upload_id)
        if upload is None:
            return None
        status.check(upload.status, to, actor, upload_id)
        if to == REJECTED:
            try:
                dispose(service, upload)
            except StorageError as exc:
                raise ServiceError(exc.status if exc.status >= 500 else 503, exc.code,
                                   f"upload {upload_id}: the rejected object could not be "
                                   f"{'deleted' if service.settings.on_reject == 'delete' else 'quarantined'}: "
                                   f"{exc.message}; retry") from exc
        row = status.move(conn, upload_id, upload.status, to, actor, by, reason, service.settings.destinations)
        log.info("Upload %s: %s -> %s by %s (%s).", upload_id, upload.status, to, by, actor)
    service.changed()
    return Upload.from_row(row)


class Reviews:
    def __init__(self, service: Service) -> None:
        self.service = service

    def decide(self, caller: Caller, upload_id: str, to: str, reason: str) -> Upload:
        """A reviewer's verdict (403 for anyone else); the reason is required and recorded."""
        if not caller.is_reviewer:
            raise ServiceError(403, "ReviewerOnly", "only a principal with the reviewer role may accept or reject "
                                                    "an upload")
        if to not in (ACCEPTED, REJECTED):
            raise ServiceError(422, "InvalidStatus", "a review's status is accepted or rejected")
        if not reason.strip():
            raise ServiceError(422, "MissingReason", "a review needs a reason: it is recorded with the decision")
        decided = decide(self.service, upload_id, to, status.REVIEWER, caller.principal, reason.strip())
        if decided is None:
            raise not_found(upload_id)
        return decided

    def history(self, caller: Caller, upload_id: str) -> list[Change]:
        """Every change of the upload, oldest first: its owner's, or any for a reviewer."""
        with self.service.db.read() as conn:
            owner = conn.execute(sa.select(multipart_uploads.c.owner).where(
                multipart_uploads.c.s3_upload_id == upload_id)).scalar() if "\x00" not in upload_id else None
            if owner is None or (owner != caller.principal and not caller.is_reviewer):
                raise not_found(upload_id)
            rows = conn.execute(sa.select(status_changes).where(status_changes.c.s3_upload_id == upload_id)
                                .order_by(status_changes.c.id)).all()
        return [Change(r.from_status, r.to_status, r.actor, r.by, r.reason, db.iso(r.at)) for r in rows]

    def queue(self, caller: Caller, of_status: str = UPLOADED, limit: int = 100) -> list[Upload]:
        """Uploads in ``of_status`` (by default those awaiting a decision), oldest change first; reviewers only."""
        if not caller.is_reviewer:
            raise ServiceError(403, "ReviewerOnly", "only a principal with the reviewer role sees others' uploads")
        with self.service.db.read() as conn:
            rows = conn.execute(sa.select(multipart_uploads).where(multipart_uploads.c.status == of_status)
                                .order_by(multipart_uploads.c.updated_at, multipart_uploads.c.s3_upload_id)
                                .limit(min(limit, MAX_QUEUE))).all()
        return [Upload.from_row(r) for r in rows]
