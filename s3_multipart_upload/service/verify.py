"""The verifier: a few background threads that check each uploaded object against the checksums its client
declared at init, and move the upload to accepted, or rejected with the reason (review.decide, as the actor
``verifier``). The API never waits on it.

The queue is the database: an upload is due while it is ``uploaded``, declared a SHA-256 or CRC64NVME,
and its ``verify_after`` is empty or past. A worker claims one by setting ``verify_after`` to a lease
(PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, so instances claim different uploads), renews the lease
while it reads, and on a store failure sets it to the time of the next try (backoff). An instance that
dies mid-check leaves the lease to run out; another then takes the upload.

The check: the object must exist, with the declared size if one was. A declared CRC64NVME is compared
with the store's full-object CRC64NVME when the store gives one (no read); otherwise, and for a
declared SHA-256 (S3 keeps none of a multipart object), the object is read once, in blocks.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
import sqlalchemy.exc

from s3_multipart_upload.service import db, review, status
from s3_multipart_upload.service.core import Service
from s3_multipart_upload.service.db import ACCEPTED, REJECTED, UPLOADED, multipart_uploads
from s3_multipart_upload.service.model import ServiceError, Upload
from s3_multipart_upload.service.storage import StorageError
from s3_multipart_upload.service.workers import Background

log = logging.getLogger(__name__)

VERIFIER = "verifier"


@dataclass(frozen=True)
class Verdict:
    to: str  # accepted or rejected
    reason: str


def due() -> sa.ColumnElement[bool]:
    """The uploads the verifier has to check (now or later)."""
    c = multipart_uploads.c
    return sa.and_(c.status == UPLOADED, sa.or_(c.sha256.is_not(None), c.crc64nvme.is_not(None)))


def check(service: Service, upload: Upload, progress: Callable[[int], None]) -> Verdict:
    """The verdict on ``upload``'s object; StorageError when the store cannot say now."""
    storage = service.storage
    head = storage.head(upload.key, checksums=True)
    if head is None:
        return Verdict(REJECTED, f"there is no object at {upload.key}")
    if upload.size is not None and head.size != upload.size:
        return Verdict(REJECTED, f"the object is {head.size} bytes; the client declared {upload.size}")
    checked: list[str] = []
    if upload.crc64nvme is not None and head.crc64nvme is not None:
        if head.crc64nvme != upload.crc64nvme:
            return Verdict(REJECTED, f"the store's CRC64NVME of the object is {head.crc64nvme}; the client declared "
                                     f"{upload.crc64nvme}")
        checked.append("CRC64NVME (the store's full-object checksum)")
    read_crc = upload.crc64nvme is not None and head.crc64nvme is None
    if upload.sha256 is not None or read_crc:
        found = storage.digest(upload.key, upload.sha256 is not None, read_crc, progress)
        if upload.size is not None and found.size != upload.size:
            return Verdict(REJECTED, f"the object read is {found.size} bytes; the client declared {upload.size}")
        if upload.sha256 is not None:
            if found.sha256 != upload.sha256:
                return Verdict(REJECTED, f"the object's SHA-256 is {found.sha256}; the client declared "
                                         f"{upload.sha256}")
            checked.append("SHA-256")
        if read_crc:
            if found.crc64nvme != upload.crc64nvme:
                return Verdict(REJECTED, f"the object's CRC64NVME is {found.crc64nvme}; the client declared "
                                         f"{upload.crc64nvme}")
            checked.append("CRC64NVME (read)")
    return Verdict(ACCEPTED, f"the object matches the declared {' and '.join(checked)}")


class Verifier(Background):
    name = "verifier"
    passing = (sqlalchemy.exc.SQLAlchemyError, ServiceError)

    def __init__(self, service: Service, workers: int = 2, lease: float = 300.0, poll: float = 2.0,
                 backoff: float = 5.0, max_backoff: float = 600.0) -> None:
        super().__init__(workers, poll)
        self.service = service
        self.lease = lease
        self.backoff = backoff
        self.max_backoff = max_backoff

    def run_once(self) -> bool:
        """Claim one due upload and decide it (or schedule its next try); False if none was due."""
        upload, attempts = self._claim()
        if upload is None:
            return False
        renewed = [dt.datetime.now(dt.UTC)]

        def progress(_read: int) -> None:  # a long read keeps its claim
            now = dt.datetime.now(dt.UTC)
            if (now - renewed[0]).total_seconds() > self.lease / 3:
                renewed[0] = now
                self._schedule(upload.upload_id, self.lease)

        try:
            verdict = check(self.service, upload, progress)
        except StorageError as exc:
            delay = min(self.max_backoff, self.backoff * 2 ** max(0, attempts - 1))
            log.warning("Verifier: upload %s could not be checked (%s); next try in %.0f s.", upload.upload_id,
                        exc.message, delay)
            self._schedule(upload.upload_id, delay)
            return True
        try:
            review.decide(self.service, upload.upload_id, verdict.to, status.VERIFIER, VERIFIER, verdict.reason)
        except ServiceError as exc:
            if exc.code == "InvalidTransition":  # a reviewer decided while we read: theirs stands
                return True
            self._schedule(upload.upload_id, min(self.max_backoff, self.backoff * 2 ** max(0, attempts - 1)))
            raise
        return True

    def _claim(self) -> tuple[Upload | None, int]:
        now = db.now()
        c = multipart_uploads.c
        with self.service.db.transaction() as conn:
            row = conn.execute(sa.select(multipart_uploads).where(
                due(), sa.or_(c.verify_after.is_(None), c.verify_after <= now))
                .order_by(c.updated_at).limit(1).with_for_update(skip_locked=True)).first()
            if row is None:
                return None, 0
            attempts = row.verify_attempts + 1
            conn.execute(multipart_uploads.update().where(c.s3_upload_id == row.s3_upload_id).values(
                verify_after=now + dt.timedelta(seconds=self.lease), verify_attempts=attempts))
        return Upload.from_row(row), attempts

    def _schedule(self, upload_id: str, delay: float) -> None:
        with self.service.db.transaction() as conn:
            conn.execute(multipart_uploads.update().where(
                multipart_uploads.c.s3_upload_id == upload_id, multipart_uploads.c.status == UPLOADED)
                .values(verify_after=db.now() + dt.timedelta(seconds=delay)))
