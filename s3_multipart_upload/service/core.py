"""The service layer of the upload controller: every rule lives here, once.

Both endpoint families (api.py: the plain presigned-upload API keyed by object key, and the
file-centric upload controller API) are thin routers over these methods. A caller is a
principal; an upload belongs to the principal that created it, and to anyone else it does not
exist (404).

Object keys: the key-centric family writes under ``{prefix}users/{principal}/{key}``, so one
principal can neither read nor overwrite another's objects; a file's upload goes to
``{prefix}files/{file_id}``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from s3_multipart_upload.checksums import composite_etag
from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.plan import MAX_PART_SIZE, MIN_PART_SIZE, choose_part_size
from s3_multipart_upload.properties import METADATA_LIMIT
from s3_multipart_upload.service import db, status
from s3_multipart_upload.service.db import (
    ACTIVE,
    CANCELLED,
    FAILED,
    PENDING,
    UPLOADED,
    Database,
    files,
    multipart_uploads,
)
from s3_multipart_upload.service.model import (
    CONTROL,
    Declared,
    ServiceError,
    Upload,
    check_file_id,
    check_key,
    check_part_number,
    not_found,
)
from s3_multipart_upload.service.storage import Head, Presigned, Storage, StorageError

__all__ = ["Service", "ServiceError", "Settings", "Upload", "not_found"]

log = logging.getLogger(__name__)

PENDING_LOCK = 7338202  # PostgreSQL advisory-lock class of the per-principal count (db.migrate uses one key alone)
GONE_REASON = "the S3 multipart upload no longer exists (aborted, or expired by a lifecycle rule)"


class _Gone(Exception):
    """S3 no longer has the multipart upload the database says is pending."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id

    def error(self) -> ServiceError:
        return ServiceError(409, "UploadGone", f"the S3 multipart upload {self.upload_id} no longer exists (aborted, "
                                               "or expired by a lifecycle rule); it is now failed: start a new upload")


@dataclass(frozen=True)
class Settings:
    part_size: int = 16 * 2**20  # for files whose size is not declared; a declared size may raise it
    key_prefix: str = ""
    max_pending: int = 1000  # pending uploads per principal: each holds an S3 upload and its parts until it ends
    destinations: tuple[str, ...] = ()  # the webhooks' ids (events.destination_id): each change's event goes to each
    on_reject: str = "keep"  # what becomes of a rejected upload's object: keep, quarantine or delete (review.py)
    quarantine_prefix: str = "quarantine/"
    metadata_keys: frozenset[str] = frozenset()  # the user-metadata keys clients may set (serve --metadata-key)


def _completed_from(upload: Upload, parts: dict[int, str], head: Head) -> bool:
    """Whether the object S3 holds at the upload's key is this upload's completion with ``parts``.

    S3's ETag of a multipart object is the MD5 of the parts' MD5s, "-" and their count: a proof. Stores
    whose ETag is the whole object's MD5 (rclone serve s3) allow no such proof; there, an object of
    exactly the declared size, written no earlier than the upload began, at a key that only this
    upload's principal reaches through the controller, is taken for it. Anything else stays failed.
    """
    if head.etag == composite_etag([parts[n].strip('"') for n in sorted(parts)]):
        return True
    if ("-" in head.etag or upload.size is None or head.size != upload.size or head.last_modified is None
            or upload.created_at is None):
        return False
    began = dt.datetime.strptime(upload.created_at or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return head.last_modified >= began


def _late_declaration(upload: Upload, declared: Declared) -> dict[str, str]:
    """The columns a declaration made at completion sets; 409 if it differs from the one made at init."""
    values = {}
    for name, given, known in (("sha256", declared.sha256, upload.sha256),
                               ("crc64nvme", declared.crc64nvme, upload.crc64nvme)):
        if given is None:
            continue
        if known is not None and given != known:
            raise ServiceError(409, "DeclarationMismatch", f"upload {upload.upload_id} was declared at init with "
                                                           f"{name} {known}; the completion says {given}")
        values[name] = given
    return values


class Service:
    def __init__(self, database: Database, storage: Storage, settings: Settings | None = None) -> None:
        self.db = database
        self.storage = storage
        self.settings = settings or Settings()
        self.changed: Callable[[], None] = lambda: None  # after each committed change: wakes the background workers

    # -- keys -------------------------------------------------------------------------------------

    def user_key(self, principal: str, key: str) -> str:
        check_key(key)
        full = f"{self.settings.key_prefix}users/{principal}/{key}"
        check_key(full)  # the namespace counts against the 1,024 bytes too
        return full

    def file_key(self, file_id: str) -> str:
        check_file_id(file_id)
        return f"{self.settings.key_prefix}files/{file_id}"

    # -- single objects ---------------------------------------------------------------------------

    def presign_put(self, principal: str, key: str, content_type: str | None) -> tuple[str, Presigned]:
        return key, self.storage.presign_put(self.user_key(principal, key), content_type)

    def presign_get(self, principal: str, key: str) -> Presigned:
        full = self.user_key(principal, key)
        if self._storage(lambda: self.storage.head(full)) is None:
            raise ServiceError(404, "NoSuchKey", f"no object {key!r}")
        return self.storage.presign_get(full)

    # -- uploads ----------------------------------------------------------------------------------

    def _part_size(self, size: int | None, part_size: int | None) -> int:
        if part_size is not None and not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ServiceError(422, "InvalidPartSize", f"part_size must be {MIN_PART_SIZE} to {MAX_PART_SIZE} "
                                                       f"bytes, not {part_size}")
        if size is None:
            return part_size or self.settings.part_size
        try:
            chosen, _note = choose_part_size(size, part_size or self.settings.part_size)
        except BadInput as exc:
            raise ServiceError(422, "InvalidSize", exc.message) from None
        return chosen

    def init_upload(self, principal: str, key: str, content_type: str | None = None, size: int | None = None,
                    part_size: int | None = None, declared: Declared | None = None,
                    metadata: dict[str, str] | None = None) -> Upload:
        """A multipart upload of ``key`` in the principal's namespace (key-centric family)."""
        full = self.user_key(principal, key)
        metadata = self._metadata(metadata)
        chosen = self._part_size(size, part_size)
        declared = (declared or Declared()).normalised()
        with self.db.read() as conn:
            self._check_pending(conn, principal)  # before S3 is asked: the usual refusal costs no S3 call
        upload_id = self._storage(lambda: self.storage.create(full, content_type, metadata))
        try:
            with self.db.transaction() as conn:
                self._check_pending(conn, principal, lock=True)  # again, exactly: another request may have won
                self._insert(conn, upload_id, None, full, principal, chosen, size, content_type, declared, metadata)
                created = self._get(conn, principal, upload_id)
        except Exception:
            self._abort_quietly(full, upload_id)  # no S3 upload without its row
            raise
        self.changed()
        return created

    def create_for_file(self, principal: str, file_id: str, size: int | None = None, part_size: int | None = None,
                        content_type: str | None = None, declared: Declared | None = None,
                        metadata: dict[str, str] | None = None) -> Upload:
        """A new upload for a file, unless it has one that is pending, uploaded or accepted (409)."""
        key = self.file_key(file_id)
        metadata = self._metadata(metadata)
        chosen = self._part_size(size, part_size)
        declared = (declared or Declared()).normalised()
        with self.db.transaction() as conn:
            self._claim_file(conn, principal, file_id)  # locks the file's row until this transaction ends
            active = conn.execute(sa.select(multipart_uploads.c.s3_upload_id, multipart_uploads.c.status).where(
                multipart_uploads.c.file_id == file_id, multipart_uploads.c.status.in_(ACTIVE))).first()
            if active is not None:
                raise ServiceError(409, "UploadExists", f"file {file_id!r} already has an upload that is "
                                                        f"{active.status} ({active.s3_upload_id})")
            self._check_pending(conn, principal)
            upload_id = self._storage(lambda: self.storage.create(key, content_type, metadata))
            try:
                self._check_pending(conn, principal, lock=True)
                self._insert(conn, upload_id, file_id, key, principal, chosen, size, content_type, declared,
                             metadata)
                conn.execute(files.update().where(files.c.file_id == file_id).values(s3_upload_id=upload_id))
            except Exception:
                self._abort_quietly(key, upload_id)
                raise
            log.info("Upload %s created for file %s by %s.", upload_id, file_id, principal)
            created = self._get(conn, principal, upload_id)
        self.changed()
        return created

    def pending_for_file(self, principal: str, file_id: str, status: str = PENDING) -> Upload | None:
        check_file_id(file_id)
        if status not in db.STATUSES:
            raise ServiceError(422, "InvalidStatus", f"status is one of {', '.join(db.STATUSES)}")
        with self.db.read() as conn:
            owner = conn.execute(sa.select(files.c.owner).where(files.c.file_id == file_id)).scalar()
            if owner is None or owner != principal:
                return None  # another principal's file looks like a file with no upload
            row = conn.execute(sa.select(multipart_uploads).where(
                multipart_uploads.c.file_id == file_id, multipart_uploads.c.status == status)
                .order_by(multipart_uploads.c.created_at.desc())).first()
            return Upload.from_row(row) if row is not None else None

    def list_own(self, principal: str, status: str | None = None, limit: int = 100) -> list[Upload]:
        """The principal's file uploads (those with a file id), newest first, at most ``limit`` (1 to 1,000);
        only those in ``status`` when it is given. The page lists them with their statuses."""
        if status is not None and status not in db.STATUSES:
            raise ServiceError(422, "InvalidStatus", f"status is one of {', '.join(db.STATUSES)}")
        c = multipart_uploads.c
        query = sa.select(multipart_uploads).where(c.owner == principal, c.file_id.is_not(None))
        if status is not None:
            query = query.where(c.status == status)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(c.created_at.desc(), c.s3_upload_id)
                                .limit(max(1, min(limit, 1000)))).all()
        return [Upload.from_row(r) for r in rows]

    def get(self, principal: str, upload_id: str) -> Upload:
        with self.db.read() as conn:
            return self._get(conn, principal, upload_id)

    def part_url(self, principal: str, upload_id: str, part_number: int, key: str | None = None) -> Presigned:
        check_part_number(part_number)
        upload = self.get(principal, upload_id)
        self._check_user_key(upload, key)
        if upload.status != PENDING:
            raise ServiceError(409, "NotPending", f"upload {upload_id} is {upload.status}: no more parts")
        if upload.size is not None:
            parts = max(1, -(-upload.size // upload.part_size))
            if part_number > parts:
                raise ServiceError(422, "InvalidPartNumber", f"upload {upload_id} has {parts} parts of "
                                   f"{upload.part_size} bytes; there is no part {part_number}")
        return self.storage.presign_part(upload.key, upload_id, part_number)

    def list_parts(self, principal: str, upload_id: str, key: str | None = None) -> list[dict[str, Any]]:
        upload = self.get(principal, upload_id)
        self._check_user_key(upload, key)
        if upload.status != PENDING:
            return []  # completed or aborted uploads hold no parts
        try:
            listed = self._storage(lambda: self.storage.list_parts(upload.key, upload_id), upload)
        except _Gone as gone:
            self._mark_failed(upload_id)
            raise gone.error() from gone
        return [{"PartNumber": int(p["PartNumber"]), "ETag": str(p["ETag"]).strip('"'), "Size": int(p["Size"])}
                for p in listed]

    def change_status(self, principal: str, upload_id: str, to: str, parts: dict[int, str] | None = None,
                      key: str | None = None, reason: str | None = None, declared: Declared | None = None) -> Upload:
        """The owner's moves: uploaded completes the upload on S3; cancelled and failed abort it (status.py).

        ``declared`` goes with uploaded: the whole file's checksums, for a client that computed them while sending
        (a declaration made at init must be repeated the same, or left out)."""
        declared = (declared or Declared()).normalised()
        if to != UPLOADED and (declared.sha256 or declared.crc64nvme):
            raise ServiceError(422, "UnexpectedChecksum", "checksums are declared at init, or with status uploaded")
        if to not in db.STATUSES:
            raise ServiceError(422, "InvalidStatus", f"status is one of {', '.join(db.STATUSES)}")
        if to == UPLOADED and not parts:
            raise ServiceError(422, "MissingParts", "completing an upload needs its parts: part number -> ETag")
        if to != UPLOADED and parts:
            raise ServiceError(422, "UnexpectedParts", "parts go only with status uploaded")
        for number in parts or {}:
            check_part_number(number)
        gone: _Gone | None = None
        with self.db.transaction() as conn:
            upload = self._get(conn, principal, upload_id, lock=True)
            self._check_user_key(upload, key)
            status.check(upload.status, to, status.OWNER, upload_id)
            values: dict[str, Any] = {}
            actor, by = status.OWNER, principal
            try:
                if to == UPLOADED:
                    assert parts is not None
                    late = _late_declaration(upload, declared)  # before S3 is asked: a refusal changes nothing
                    values = self._complete(upload, parts) | late
                elif to in (CANCELLED, FAILED):
                    self._storage(lambda: self.storage.abort(upload.key, upload_id), gone_ok=True)
            except _Gone as exc:  # recorded, then answered
                gone, to, values, actor, by, reason = exc, FAILED, {}, status.CONTROLLER, "controller", GONE_REASON
            status.move(conn, upload_id, upload.status, to, actor, by, reason, self.settings.destinations, values)
            log.info("Upload %s: %s -> %s by %s.", upload_id, upload.status, to, by)
            changed = self._get(conn, principal, upload_id)
        self.changed()
        if gone is not None:
            raise gone.error() from gone
        return changed

    # -- inside -----------------------------------------------------------------------------------

    def _complete(self, upload: Upload, parts: dict[int, str]) -> dict[str, Any]:
        if upload.size is not None:
            expected = max(1, -(-upload.size // upload.part_size))
            missing = sorted(set(range(1, expected + 1)) - set(parts))
            if missing or len(parts) != expected:
                raise ServiceError(422, "WrongParts", f"upload {upload.upload_id} has {expected} parts; the "
                                                      f"request gives {len(parts)}" +
                                                      (f" and lacks part {missing[0]}" if missing else ""))
        for number, etag in parts.items():
            if not etag or len(etag) > 255 or CONTROL.search(etag):
                raise ServiceError(422, "InvalidETag", f"part {number}'s ETag is not an ETag")
        try:
            etag = self._storage(lambda: self.storage.complete(upload.key, upload.upload_id, parts), upload)
        except _Gone:
            # A completion that went through, and whose answer was lost (an instance that died after S3
            # completed the upload and before its transaction committed, a retry of ours, or of the store's
            # client): the object is there, made of these parts.
            head = self._storage(lambda: self.storage.head(upload.key))
            if head is None or not _completed_from(upload, parts, head):
                raise
            log.info("Upload %s: S3 no longer has it, and its object is there: it was completed by an earlier "
                     "request whose answer was lost.", upload.upload_id)
            etag = head.etag
        head = self._storage(lambda: self.storage.head(upload.key))
        return {"etag": etag or (head.etag if head else None), "object_size": head.size if head else None}

    def _storage(self, call: Any, upload: Upload | None = None, gone_ok: bool = False) -> Any:
        try:
            return call()
        except StorageError as exc:
            if exc.code == "NoSuchUpload" and gone_ok:
                return None
            if exc.code == "NoSuchUpload" and upload is not None:
                raise _Gone(upload.upload_id) from exc
            raise ServiceError(exc.status, exc.code, exc.message) from exc

    def _mark_failed(self, upload_id: str) -> None:
        with self.db.transaction() as conn:
            current = conn.execute(sa.select(multipart_uploads.c.status).where(
                multipart_uploads.c.s3_upload_id == upload_id).with_for_update()).scalar()
            if current != PENDING:
                return
            status.move(conn, upload_id, PENDING, FAILED, status.CONTROLLER, "controller", GONE_REASON,
                        self.settings.destinations)
        self.changed()

    def _abort_quietly(self, key: str, upload_id: str) -> None:
        try:
            self.storage.abort(key, upload_id)
        except StorageError:
            log.warning("Could not abort S3 upload %s of %s after a failed insert.", upload_id, key)

    def _check_pending(self, conn: Connection, principal: str, lock: bool = False) -> None:
        """409 if the principal already has the most pending uploads allowed. With ``lock``, exact: on PostgreSQL
        the principal's advisory lock is held until the transaction ends, so two creates cannot both count
        one below the limit (SQLite's write transactions take turns anyway)."""
        if lock and not self.db.is_sqlite:
            key = int.from_bytes(hashlib.sha256(principal.encode()).digest()[:4], "big", signed=True)
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PENDING_LOCK, key)))
        count = conn.execute(sa.select(sa.func.count()).select_from(multipart_uploads).where(
            multipart_uploads.c.owner == principal, multipart_uploads.c.status == PENDING)).scalar() or 0
        if count >= self.settings.max_pending:
            raise ServiceError(409, "TooManyPendingUploads",
                               f"{principal} has {count} pending uploads, and this controller allows "
                               f"{self.settings.max_pending}: complete or cancel some (status uploaded or cancelled) "
                               "before starting another")

    def _claim_file(self, conn: Connection, principal: str, file_id: str) -> None:
        insert = sqlite_insert(files) if self.db.is_sqlite else postgresql_insert(files)
        conn.execute(insert.values(file_id=file_id, owner=principal, created_at=db.now())
                     .on_conflict_do_nothing(index_elements=["file_id"]))
        owner = conn.execute(sa.select(files.c.owner).where(files.c.file_id == file_id).with_for_update()).scalar()
        if owner != principal:
            raise ServiceError(404, "NoSuchFile", f"no file {file_id!r} (or it belongs to someone else)")

    def _metadata(self, metadata: dict[str, str] | None) -> dict[str, str] | None:
        """A client's user metadata: only the keys serve allows (--metadata-key), at most S3's 2 KB."""
        if not metadata:
            return None
        metadata = {k.lower(): v for k, v in metadata.items()}
        refused = sorted(set(metadata) - self.settings.metadata_keys)
        if refused:
            allowed = ", ".join(sorted(self.settings.metadata_keys)) or "none"
            raise ServiceError(400, "MetadataNotAllowed", f"metadata keys {', '.join(refused)} are not allowed here "
                                                         f"(allowed: {allowed})")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
        if size > METADATA_LIMIT:
            raise ServiceError(400, "MetadataTooLarge", f"metadata of {size} bytes; S3 takes at most {METADATA_LIMIT}")
        return metadata

    def _insert(self, conn: Connection, upload_id: str, file_id: str | None, key: str, owner: str, part_size: int,
                size: int | None, content_type: str | None, declared: Declared,
                metadata: dict[str, str] | None = None) -> None:
        stamp = db.now()
        conn.execute(multipart_uploads.insert().values(
            s3_upload_id=upload_id, file_id=file_id, bucket=self.storage.bucket, key=key, owner=owner,
            metadata=None if metadata is None else json.dumps(metadata, sort_keys=True),
            status=PENDING, part_size=part_size, size=size, content_type=content_type, created_at=stamp,
            updated_at=stamp, sha256=declared.sha256, crc64nvme=declared.crc64nvme, status_by=owner))
        row = conn.execute(sa.select(multipart_uploads).where(multipart_uploads.c.s3_upload_id == upload_id)).one()
        status.record(conn, row, None, status.OWNER, owner, None, self.settings.destinations)

    def _get(self, conn: Connection, principal: str, upload_id: str, lock: bool = False) -> Upload:
        if "\x00" in upload_id:  # no upload has one, and PostgreSQL would refuse the query (text holds no NUL)
            raise not_found(upload_id)
        query = sa.select(multipart_uploads).where(multipart_uploads.c.s3_upload_id == upload_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None or row.owner != principal:
            raise not_found(upload_id)
        return Upload.from_row(row)

    def _check_user_key(self, upload: Upload, key: str | None) -> None:
        """The key-centric endpoints name the key too: it must be this upload's."""
        if key is not None and (upload.file_id is not None or upload.user_key != key):
            raise not_found(upload.upload_id)
