"""Operating uploads besides sending them: status, abort, and listing (and cleaning up) the
multipart uploads in progress in a bucket. No printing here: the CLI shows what these return.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s3_multipart_upload import checksums
from s3_multipart_upload.errors import BadInput, TemporaryFailure, UploadError
from s3_multipart_upload.s3 import (
    LACKS_API,
    Kind,
    Requester,
    classify,
    describe,
    error_code,
    list_all_parts,
    translate,
)
from s3_multipart_upload.shard import all_logs
from s3_multipart_upload.sources import ChunkDirSource, FileSource, Source
from s3_multipart_upload.state import (
    ABORTED,
    COMPLETED,
    IN_PROGRESS,
    Meta,
    PartRecord,
    StateFolder,
    mark_aborted,
    meta_lock,
    read_meta,
    read_parts,
    state_folders,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

ABORT_ROUNDS = 5  # S3: "it might be necessary to abort a given multipart upload multiple times"


def load_meta(meta_path: Path) -> Meta:
    meta = read_meta(meta_path)
    if meta is None:
        raise BadInput(f"meta file {meta_path} does not exist", "give the -m path of an upload")
    return meta


def source_of(meta: Meta) -> Source | None:
    """The local data META records, as it is now; None if META does not say (historical) or it is gone."""
    recorded = meta.source or {}
    try:
        if recorded.get("kind") in ("file", "device"):
            return FileSource(Path(recorded["path"]))
        if recorded.get("kind") == "chunks":
            return ChunkDirSource(Path(recorded["path"]), str(recorded.get("prefix", "")))
    except UploadError:
        return None
    return None


@dataclass
class Status:
    """Where an upload stands, from its files and from the server (``status``)."""

    meta_file: str
    bucket: str
    key: str
    upload_id: str | None
    state: str  # META's status: in_progress, completed, aborted
    source: str | None
    source_changed: bool | None  # None: unknown (historical META, or the data is gone)
    source_missing: bool
    parts_total: int | None
    parts_done: int
    bytes_total: int | None
    bytes_done: int
    server: str  # in_progress, gone, not_checked, unreachable
    checksum_algorithm: str | None = None  # how the parts are proven (META's checksumAlgorithm)
    full_object_checksum: str | None = None  # a completed full-object upload's checksum (base64), to compare
    # --checksum auto's probe: whether the store refused a wrong CRC64NVME (META's verifiesCRC64NVME); None: not asked
    store_verifies_crc64nvme: bool | None = None
    shards: int | None = None  # an upload begun with --shard I/N: N
    shard_logs: list[str] = field(default_factory=list)  # the shards' logs that hold parts of it (PARTS.shard-I)
    server_error: str | None = None
    server_parts: int | None = None
    server_bytes: int | None = None
    unlogged_on_server: list[int] = field(default_factory=list)  # parts S3 holds that the log lacks
    logged_not_on_server: list[int] = field(default_factory=list)
    object_properties: dict[str, Any] = field(default_factory=dict)  # as asked (properties.py), secrets excepted

    @property
    def percent(self) -> float | None:
        if not self.bytes_total:
            return 100.0 if self.state == COMPLETED else None
        return round(100.0 * self.bytes_done / self.bytes_total, 1)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "percent": self.percent}


def upload_status(meta_path: Path, parts_path: Path | None, requests: Requester | None) -> Status:
    """Where an upload stands, from its files and from the server (unless ``requests`` is None). Sends no data."""
    meta = load_meta(meta_path)
    recorded = meta.source or {}
    source = source_of(meta)
    changed: bool | None = None
    if source is not None:
        try:
            source.check_unchanged(recorded, meta_path)
            changed = False
        except UploadError:
            changed = True
    total = recorded.get("size") if isinstance(recorded.get("size"), int) else None
    logged: dict[int, PartRecord] = {}
    logs: list[str] = []
    if parts_path is not None and meta.upload_id:
        for path in all_logs(parts_path):  # -a's and every shard's (--shard)
            found = read_parts(path, meta.upload_id)
            logged.update(found)
            if path != parts_path and found:
                logs.append(path.name)
    part_size = meta.split_size
    parts_total = meta.part_count
    if meta.status == COMPLETED:
        done_parts = parts_total or len(logged)
        done_bytes = total or 0
    else:
        done_parts = len(logged)
        done_bytes = sum(r.size if r.size is not None else part_size for r in logged.values())
        if total is not None:
            done_bytes = min(done_bytes, total)  # historical lines carry no size; the last part is shorter
    remote = recorded.get("kind") == "s3"  # a copy's source: its ETag is checked by every run, not here
    streamed = recorded.get("kind") == "stream"  # read again by every run, and compared part by part
    status = Status(
        meta_file=str(meta_path), bucket=meta.bucket, key=meta.key, upload_id=meta.upload_id, state=meta.status,
        source=f"s3://{recorded.get('bucket')}/{recorded.get('key')}" if remote else
        f"a stream ({'stdin' if recorded.get('path') == '-' else recorded.get('path')})" if streamed
        else recorded.get("path"),
        source_changed=changed, source_missing=bool(recorded) and not remote and not streamed and source is None,
        parts_total=parts_total, parts_done=done_parts, bytes_total=total, bytes_done=done_bytes,
        server="not_checked", checksum_algorithm=meta.checksum_algorithm,
        full_object_checksum=meta.extra.get(f"checksum{meta.checksum_algorithm}") if meta.checksum_algorithm else None,
        store_verifies_crc64nvme=verifies if isinstance(verifies := meta.extra.get(checksums.VERIFIES), bool) else None,
        shards=meta.extra.get("shards") if isinstance(meta.extra.get("shards"), int) else None, shard_logs=logs,
        object_properties=dict(meta.extra.get("objectProperties") or {}),
    )
    if meta.upload_id is None or meta.status in (COMPLETED, ABORTED) or requests is None:
        return status
    upload_id = meta.upload_id
    try:
        listed = requests.call("ListParts", lambda c: list_all_parts(c, meta.bucket, meta.key, upload_id))
    except Exception as exc:
        if classify(exc) is Kind.GONE:
            status.server = "gone"
        else:
            lacks = error_code(exc) in LACKS_API
            status.server = "unreachable"
            status.server_error = f"the store does not implement ListParts ({describe(exc)})" if lacks \
                else describe(exc)
        return status
    held = {p["PartNumber"]: p for p in listed}
    status.server = "in_progress"
    status.server_parts = len(held)
    status.server_bytes = sum(int(p["Size"]) for p in listed)
    status.unlogged_on_server = sorted(set(held) - set(logged))
    status.logged_not_on_server = sorted(set(logged) - set(held))
    return status


def abort_until_gone(requests: Requester, bucket: str, key: str, upload_id: str) -> None:
    """Abort, then check with ListParts, as S3 documents: parts being uploaded meanwhile may survive one abort."""
    for _ in range(ABORT_ROUNDS):
        try:
            requests.call("AbortMultipartUpload", lambda c: c.abort_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id))
            left = requests.call("ListParts", lambda c: list_all_parts(c, bucket, key, upload_id))
        except Exception as exc:
            if classify(exc) is Kind.GONE:
                return
            raise _final(exc, bucket, key) from exc
        if not left:
            return
    raise TemporaryFailure(f"s3://{bucket}/{key}: upload {upload_id} still lists parts after {ABORT_ROUNDS} aborts",
                           "wait until no upload is running for it, then run abort again")


def _final(exc: BaseException, bucket: str, key: str) -> UploadError:
    return translate(exc, bucket, key)


def abort(meta_path: Path, requests: Requester) -> str:
    """Abort the upload META records and mark META aborted; idempotent. Returns what was done."""
    with meta_lock(meta_path):
        meta = load_meta(meta_path)
        if meta.status == COMPLETED:
            return "completed"  # the object exists; there is nothing left to abort
        if meta.status == ABORTED:
            return "already_aborted"
        if meta.upload_id is not None:
            abort_until_gone(requests, meta.bucket, meta.key, meta.upload_id)
        mark_aborted(meta_path, meta)
        return "aborted"


@dataclass
class InProgress:
    """A multipart upload in progress in a bucket, as ``list`` finds it."""

    key: str
    upload_id: str
    initiated: dt.datetime
    age_seconds: int  # since Initiated; where that date is not credible, since the earliest part (a lower bound)
    parts: int
    bytes: int
    bucket: str = ""
    initiated_credible: bool = True  # False: the store's Initiated cannot be right (see ``credible_initiated``)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "uploadId": self.upload_id,
                "initiated": self.initiated.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
                "ageSeconds": self.age_seconds, "parts": self.parts, "bytes": self.bytes,
                "initiatedCredible": self.initiated_credible}


CLOCK_SLACK = dt.timedelta(minutes=15)  # S3 refuses requests signed further than this from its clock
FIRST_PART_SLACK = dt.timedelta(days=30)  # an upload created this long before its first part: a date made up


def credible_initiated(initiated: dt.datetime, now: dt.datetime, bucket_created: dt.datetime | None,
                       first_part: dt.datetime | None) -> bool:
    """Whether a store's Initiated date of an upload can be right, so that ``--older-than`` may act on it. It cannot
    when it lies in the future, before the bucket was created (moto answers 2010-11-10 for every upload), or more
    than 30 days before the upload's first part. A date that fails is never used: the upload's age is taken from
    its earliest part instead (it began no later than that: a lower bound), and one with no part gets age 0."""
    if initiated > now + CLOCK_SLACK:
        return False
    if bucket_created is not None and initiated < bucket_created - CLOCK_SLACK:
        return False
    return first_part is None or initiated >= first_part - FIRST_PART_SLACK


def _bucket_created(requests: Requester, bucket: str) -> dt.datetime | None:
    """The bucket's CreationDate as ListBuckets says it; None where these credentials may not list buckets. (Some
    stores give a folder's last change instead, which is later: the check then only errs towards not aborting.)"""
    try:
        answer = requests.call("ListBuckets", lambda c: c.list_buckets())
    except Exception as exc:
        log.debug("ListBuckets: %s; upload dates are checked against their parts only.", describe(exc))
        return None
    for b in answer.get("Buckets", []):
        if b.get("Name") == bucket and isinstance(b.get("CreationDate"), dt.datetime):
            return b["CreationDate"]
    return None


def list_in_progress(requests: Requester, bucket: str, prefix: str = "", older_than: float | None = None,
                     now: dt.datetime | None = None) -> list[InProgress]:
    """The multipart uploads in progress in ``bucket`` (all pages), with the parts and bytes each holds. With
    ``older_than``, only those whose age is known to be at least that (``credible_initiated``)."""
    now = now or dt.datetime.now(dt.UTC)
    uploads: list[dict[str, Any]] = []
    key_marker, id_marker = "", ""
    try:
        for _ in range(100_000):  # 1,000 uploads a page: bounded far above any real bucket
            page = requests.call("ListMultipartUploads", _uploads_page(bucket, prefix, key_marker, id_marker))
            uploads.extend(dict(u) for u in page.get("Uploads", []))
            if not page.get("IsTruncated"):
                break
            key_marker, id_marker = page.get("NextKeyMarker", ""), page.get("NextUploadIdMarker", "")
            if not key_marker and not id_marker:
                break
    except Exception as exc:
        if classify(exc) is not Kind.GONE:  # rclone answers NoSuchUpload when a bucket has none
            raise _final(exc, bucket, prefix) from exc
    bucket_created = _bucket_created(requests, bucket) if uploads else None
    found = []
    for u in uploads:
        initiated = u["Initiated"] if isinstance(u.get("Initiated"), dt.datetime) else now
        age = max(0, int((now - initiated).total_seconds()))
        if older_than is not None and age < older_than:
            continue  # younger by its own date: a date in the future is not credible, and not acted on either
        key, upload_id = str(u["Key"]), str(u["UploadId"])
        try:
            parts = requests.call("ListParts", functools.partial(list_all_parts, bucket=bucket, key=key,
                                                                 upload_id=upload_id))
        except Exception as exc:
            if classify(exc) is Kind.GONE:
                continue  # completed or aborted since the listing
            raise _final(exc, bucket, key) from exc
        dates = [p["LastModified"] for p in parts if isinstance(p.get("LastModified"), dt.datetime)]
        first_part = min(dates) if dates else None
        credible = credible_initiated(initiated, now, bucket_created, first_part)
        if not credible:
            age = max(0, int((now - first_part).total_seconds())) if first_part is not None else 0
            log.warning("s3://%s/%s upload %s: the store says it began %s, which cannot be right; its age is taken "
                        "from its earliest part (%s).", bucket, key, upload_id, initiated.isoformat(),
                        first_part.isoformat() if first_part else "none: age unknown, taken as 0")
            if older_than is not None and age < older_than:
                continue
        found.append(InProgress(key, upload_id, initiated, age, len(parts), sum(int(p["Size"]) for p in parts),
                                bucket, credible))
    return sorted(found, key=lambda x: (x.initiated, x.key))


def _uploads_page(bucket: str, prefix: str, key_marker: str, id_marker: str) -> Callable[[S3Client], Any]:
    def page(client: S3Client) -> Any:
        return client.list_multipart_uploads(Bucket=bucket, Prefix=prefix, KeyMarker=key_marker,
                                             UploadIdMarker=id_marker)
    return page


@dataclass
class LocalUpload:
    """An upload in the state folder, as its files tell (no request): for ``status`` and ``list`` without META."""

    folder: StateFolder
    state: str  # in_progress, completed, aborted; "new" when no META was written yet (a PutObject not finished)
    bucket: str
    key: str
    source: str
    upload_id: str | None
    age_seconds: int  # since the upload last moved (its newest file)
    bytes_done: int
    bytes_total: int | None
    controller: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"folder": str(self.folder.path), "state": self.state, "bucket": self.bucket, "key": self.key,
                "source": self.source, "uploadId": self.upload_id, "ageSeconds": self.age_seconds,
                "bytesDone": self.bytes_done, "bytesTotal": self.bytes_total}


def local_uploads(root: Path, now: float | None = None) -> list[LocalUpload]:
    """The uploads kept in the state folder ``root``, least recently active first; a folder whose META cannot be
    read is listed as ``unreadable`` rather than hiding the others."""
    now = time.time() if now is None else now
    found = []
    for folder in state_folders(root):
        record = folder.record()
        age = max(0, int(now - folder.last_activity()))
        def local(state: str, upload_id: str | None = None, done: int = 0, total: int | None = None,
                  controller: bool = False, record: dict[str, Any] = record, folder: StateFolder = folder,
                  age: int = age) -> LocalUpload:
            return LocalUpload(folder, state, str(record.get("bucket", "")), str(record.get("key", "")),
                               str(record.get("source", "")), upload_id, age, done, total, controller)

        try:
            meta = read_meta(folder.meta)
            st = upload_status(folder.meta, folder.parts, None) if meta is not None else None
        except UploadError:
            found.append(local("unreadable"))
            continue
        if st is None or meta is None:
            found.append(local("new"))
            continue
        found.append(local(st.state, st.upload_id, st.bytes_done, st.bytes_total, "controller" in meta.extra))
    return found


def clean_upload(upload: LocalUpload, requests: Callable[[Meta], Requester]) -> str:
    """Remove an upload's folder from the state folder; an upload in progress is aborted on the server first
    (``requests`` gives the way to its server). Returns what was done; StateConflict while a run holds it."""
    with meta_lock(upload.folder.meta):
        meta = read_meta(upload.folder.meta)
        done = "removed"
        if meta is not None and meta.status == IN_PROGRESS:
            if meta.upload_id is not None:
                abort_until_gone(requests(meta), meta.bucket, meta.key, meta.upload_id)
            mark_aborted(upload.folder.meta, meta)
            done = "aborted and removed"
        shutil.rmtree(upload.folder.path)
    return done


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise BadInput(f"{text!r} is not a duration", "use a number and a unit: 90s, 30m, 12h, 7d or 2w")
    return float(match.group(1)) * _UNIT[match.group(2).lower()]


def human_age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
