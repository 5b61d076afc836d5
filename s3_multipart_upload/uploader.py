"""The upload engine: resume reconciliation, the thread pool, retries, completion, verification.

One run: lock the meta file, check it against the command and the file on disk, create the
multipart upload (or resume it), reconcile the parts log with the server's part list, send
what is missing from a pool of threads, complete, verify, mark the meta file completed.
The multipart upload is never aborted here: only ``abort`` does that.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from s3_multipart_upload import checksums
from s3_multipart_upload.errors import (
    BadInput,
    CredentialsExpired,
    IntegrityError,
    Interrupted,
    StateConflict,
    TemporaryFailure,
    UploadError,
    UploadGone,
)
from s3_multipart_upload.plan import DEFAULT_PART_SIZE, Part, Plan, human, ranges
from s3_multipart_upload.progress import NullProgress, Reporter
from s3_multipart_upload.reconcile import ListedPart, reconcile
from s3_multipart_upload.s3 import (
    ClientFactory,
    Kind,
    Requester,
    RetryPolicy,
    as_upload_error,
    classify,
    describe,
    error_code,
    is_throttling,
    list_all_parts,
)
from s3_multipart_upload.sources import ChunkDirSource, S3ObjectSource, Source
from s3_multipart_upload.state import (
    ABORTED,
    COMPLETED,
    IN_PROGRESS,
    Meta,
    PartRecord,
    PartsLog,
    check_writable_dir,
    meta_lock,
    read_meta,
    read_parts,
    write_meta,
)
from s3_multipart_upload.stream import BLOCK, PartStream, digest_part

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
T = TypeVar("T")
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SPOT_CHECKS = 8  # parts sampled after a server-side copy, plus the last one
SPOT_CHECK_BYTES = 64 * 1024


@dataclass(frozen=True)
class UploadRequest:
    bucket: str
    key: str
    source: Source
    meta_path: Path
    parts_path: Path
    threads: int = 8
    split_size: int | None = None
    checksum: str = "MD5"  # what a new upload uses (``checksums.choose``); a resumed one keeps META's
    checksum_why: str = "as asked (--checksum)"
    content_md5: bool = False  # MD5 as Content-MD5 from the first part (hash, then send), not by ETag comparison
    restart: bool = False
    upload_id: str | None = None  # adopt this multipart upload (META was lost)
    no_overwrite: bool = False  # complete only if no object exists at the key
    meta_extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # recorded in META; a rerun must match


@dataclass
class UploadResult:
    bucket: str
    key: str
    upload_id: str | None
    size: int
    parts_total: int
    etag: str | None = None
    already_complete: bool = False
    parts_logged: int = 0  # found done in the log and on the server
    parts_adopted: int = 0  # held by the server, missing from the log, verified against the local bytes
    parts_sent: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    full_checksum: str | None = None  # the whole object's checksum (base64) where the algorithm has that form


class ObjectMissing(IntegrityError):
    """The server said it completed the object, and it is not there."""


class Throttle:
    """How many parts may be in flight: halved when the server says SlowDown, doubled back after a calm spell."""

    def __init__(self, limit: int, cool_down: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 on_slow_down: Callable[[int, int], None] | None = None) -> None:
        self.limit = limit
        self._on_slow_down = on_slow_down
        self.current = limit
        self._cool_down = cool_down
        self._clock = clock
        self._calm_at = 0.0
        self._lock = threading.Lock()

    def slow_down(self) -> None:
        with self._lock:
            self._calm_at = self._clock() + self._cool_down
            lowered = max(1, self.current // 2)
            if lowered < self.current:
                log.warning("The server asks to slow down: %d parts in flight instead of %d for at least %.0f s.",
                            lowered, self.current, self._cool_down)
                if self._on_slow_down is not None:
                    self._on_slow_down(lowered, self.current)
                self.current = lowered

    def allowed(self) -> int:
        with self._lock:
            if self.current < self.limit and self._clock() >= self._calm_at:
                self.current = min(self.limit, self.current * 2)
                self._calm_at = self._clock() + self._cool_down
                log.info("The server has been calm: up to %d parts in flight again.", self.current)
            return self.current


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Uploader:
    def __init__(
        self,
        request: UploadRequest,
        clients: ClientFactory,
        progress: Reporter | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.req = request
        self.clients = clients
        self.progress = progress or NullProgress()
        self.retry = retry or RetryPolicy()
        self._stop = threading.Event()
        self.requests = Requester(clients, self.retry, on_retry=self._on_retry, sleep=sleep or self._backoff)
        self._where = f"s3://{request.bucket}/{request.key}"
        # Set when a part's ETag proved not to be the MD5 of its bytes although the server verified the bytes
        # (SSE-KMS, SSE-C, stores of their own kind): from then on MD5 goes as Content-MD5, checked on arrival.
        self._etags_not_md5 = request.content_md5
        self._listing_matches = False  # the listing before completion showed every part, its size and ETag
        self._checksum_proven = False  # the completion answered the composite of that listing's checksums
        self._unconfirmed = False  # set when an UploadPart answer did not echo the additional checksum
        self._single_etag = ""  # --no-overwrite found this one-part data already at the key
        self._trust_log = True  # False when the log's lines cannot be tied to the file (historical META, adoption)
        self.throttle = Throttle(max(1, request.threads), on_slow_down=self.progress.throttled)

    def _on_retry(self, what: str, attempt: int, exc: BaseException, wait: float) -> None:
        if is_throttling(exc):
            self.throttle.slow_down()
        self.progress.retry(what, attempt, describe(exc), wait)

    def _backoff(self, seconds: float) -> None:
        """Wait before a retry; once the run is stopping (Ctrl-C, SIGTERM, a failed part), retry no more:
        a part waiting out a backoff of up to 20 s would otherwise hold the stop that long, try after try."""
        if self._stop.wait(seconds):
            raise _Stopping()

    def _call(self, what: str, fn: Callable[[S3Client], T]) -> T:
        return self.requests.call(what, fn)

    def _fail(self, exc: BaseException, parts_done: int | None = None, parts_total: int | None = None) -> UploadError:
        """The error to stop with for a failure that retries did not fix."""
        if isinstance(exc, UploadError):
            return exc
        known = as_upload_error(exc, self.req.bucket, self.req.key)
        if known is not None:
            return known
        done = "" if parts_done is None else f" {parts_done} of {parts_total} parts are done and logged."
        kind = classify(exc)
        if kind is Kind.CREDENTIALS:
            return CredentialsExpired(
                f"the credentials for {self._where} expired or were refused ({describe(exc)}).{done}",
                "refresh your credentials (aws sso login, aws-vault, a new session), then rerun the same command",
            )
        if kind is Kind.TRANSIENT:
            return TemporaryFailure(
                f"the server did not accept a request for {self._where} after {self.retry.attempts} tries "
                f"({describe(exc)}).{done}",
                "check the network and the endpoint, then rerun the same command",
            )
        return UploadError(f"unexpected failure for {self._where}: {describe(exc)}.{done}",
                           "rerun the same command; if it happens again, report it with -v output")

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> UploadResult:
        req = self.req
        self._check_paths()
        check_writable_dir(req.meta_path, "meta file")
        check_writable_dir(req.parts_path, "parts file")
        with meta_lock(req.meta_path):
            return self._run_locked()

    def _check_paths(self) -> None:
        req = self.req
        lock = req.meta_path.with_name(req.meta_path.name + ".lock")
        for path, flag in ((req.meta_path, "-m"), (req.parts_path, "-a"), (lock, "-m")):
            if req.source.covers(path):
                raise BadInput(f"{flag} {path} is (or would be taken for) the data to upload",
                               f"give {flag} a path of its own, outside the data (such as ../{path.name})")
        if req.meta_path.resolve() == req.parts_path.resolve():
            raise BadInput(f"-m and -a are the same file ({req.meta_path})", "give each a path of its own")

    def _run_locked(self) -> UploadResult:
        req = self.req
        started = time.monotonic()
        meta = read_meta(req.meta_path)
        if meta is not None and req.restart:
            self._check_meta(meta, check_source=False)  # --restart is how a changed file starts over
            self._set_aside(meta)
            meta = None
        if meta is not None:
            self._check_meta(meta)
            req = self._keep_recorded_checksum(meta, warn=True)
            if req.split_size is not None and meta.split_size and req.split_size != meta.split_size:
                log.warning("This upload was started with -s %s; it keeps it (not %s).", human(meta.split_size),
                            human(req.split_size))
        if meta is not None and meta.status == COMPLETED:
            log.info("Upload of %s is already complete (meta file %s); nothing to send.", self._where, req.meta_path)
            return UploadResult(req.bucket, req.key, meta.upload_id, req.source.total_size, meta.part_count or 0,
                                etag=meta.extra.get("eTag"), already_complete=True,
                                full_checksum=meta.extra.get(f"checksum{req.checksum}"))
        if meta is not None and meta.status == ABORTED:
            raise UploadGone(f"the upload for {self._where} in {req.meta_path} was aborted",
                             "rerun with --restart to start a new upload")

        if meta is not None and req.upload_id is not None and meta.upload_id != req.upload_id:
            raise StateConflict(f"meta file {req.meta_path} records upload {meta.upload_id}, not {req.upload_id}",
                                "leave out --upload-id to resume the recorded one, or give another -m and -a path")
        adopted = meta is None and req.upload_id is not None
        if adopted:
            assert req.upload_id is not None
            meta = self._adopt(req.upload_id)
            self._trust_log = False  # lines of that upload id in the log predate the lost META: check them
            req = self.req
        log.info("Checksum %s: %s.", req.checksum, req.checksum_why)
        plan = req.source.plan(meta.split_size if meta else req.split_size, fixed=meta is not None)
        if plan.note:
            log.warning("%s.", plan.note)
        if meta is None:
            # --no-overwrite before a new upload. A resumed one is checked again at completion, and its own
            # object (an earlier run completed it, then was killed) must not count as someone else's.
            if self._refuse_overwrite(plan):
                return self._identical_single(plan, started)
            meta = self._create(plan)
        elif not adopted:
            log.info("Continuing multipart upload from %s.", req.meta_path)
        result = UploadResult(req.bucket, req.key, meta.upload_id, plan.total_size, len(plan.parts))
        if meta.upload_id is None:
            self._put_single(plan, meta, result)
        else:
            self._multipart(plan, meta, meta.upload_id, result)
        result.seconds = time.monotonic() - started
        return result

    def _keep_recorded_checksum(self, meta: Meta, warn: bool) -> UploadRequest:
        """A resumed upload keeps the checksum it began with: its parts and its CreateMultipartUpload were made
        for it. One begun without a recorded algorithm (the historical tool's) continues with MD5."""
        req = self.req
        recorded = meta.checksum_algorithm
        if recorded is None and req.checksum_why.startswith("auto"):
            recorded = "MD5"
        if recorded is not None and recorded != req.checksum:
            if warn and not req.checksum_why.startswith("auto"):
                log.warning("This upload was started with --checksum %s; it keeps it (not %s).", recorded,
                            req.checksum)
            self.req = dataclasses.replace(req, checksum=recorded,
                                           checksum_why="kept from the upload in progress (meta file)")
        return self.req

    def _check_meta(self, meta: Meta, check_source: bool = True) -> None:
        req = self.req
        if (meta.bucket, meta.key) != (req.bucket, req.key):
            raise StateConflict(
                f"meta file {req.meta_path} belongs to the upload of s3://{meta.bucket}/{meta.key}, not {self._where}",
                "give the same -b and -k as that upload, or another -m and -a path for this one",
            )
        for name, value in req.meta_extra.items():
            if meta.extra.get(name) != value:
                raise StateConflict(f"meta file {req.meta_path} records {name} {meta.extra.get(name)!r}, "
                                    f"not {value!r}", "give the same options as that upload, or another -m and -a "
                                    "path for this one")
        if check_source and meta.source is not None:
            req.source.check_unchanged(meta.source, req.meta_path)

    def _set_aside(self, meta: Meta) -> None:
        """--restart: keep the old parts log under another name and forget the old upload."""
        req = self.req
        if req.parts_path.exists():
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = req.parts_path.with_name(f"{req.parts_path.name}.{stamp}.old")
            req.parts_path.rename(aside)
            log.warning("--restart: kept the old parts log as %s.", aside)
        if meta.upload_id and meta.status == IN_PROGRESS:
            log.warning("--restart: the old multipart upload %s still holds its parts on the server; "
                        "abort it with `s3-multipart-upload abort` or a lifecycle rule.", meta.upload_id)

    def dry_run(self) -> dict[str, Any]:
        """The plan of this run, from the command and the local files only: sends nothing."""
        req = self.req
        self._check_paths()
        meta = read_meta(req.meta_path)
        if meta is not None and req.restart:
            meta = None
        if meta is not None:
            self._check_meta(meta)
            req = self._keep_recorded_checksum(meta, warn=False)
        plan = req.source.plan(meta.split_size if meta else req.split_size, fixed=meta is not None)
        if meta is not None:
            why = "fixed by the upload in progress (meta file)"
        elif plan.note:
            why = plan.note
        elif isinstance(req.source, ChunkDirSource):
            why = "one part per chunk file"
        elif req.split_size is not None:
            why = "as asked (-s)"
        else:
            why = f"the default, {human(DEFAULT_PART_SIZE)}"
        logged = read_parts(req.parts_path, meta.upload_id) if meta is not None and meta.upload_id else {}
        todo = [p for p in plan.parts if p.number not in logged]
        single = (meta is None and len(plan.parts) == 1) or (meta is not None and meta.upload_id is None)
        threads = min(req.threads, max(1, len(todo)))
        if meta is not None and meta.status == COMPLETED:
            todo, requests = [], {}
        elif single:
            requests = {"PutObject": 1}
        else:
            requests = {"CreateMultipartUpload": 0 if meta else 1, "ListParts": 0 if meta is None else 1,
                        "UploadPart": len(todo), "CompleteMultipartUpload": 1}
        return {
            "bucket": req.bucket, "key": req.key, "bytes": plan.total_size, "partSize": plan.part_size,
            "partSizeWhy": why, "parts": len(plan.parts), "lastPartSize": plan.parts[-1].length,
            "singlePut": single, "threads": req.threads, "checksum": req.checksum, "checksumWhy": req.checksum_why,
            "memoryBound": threads * min(BLOCK, max(p.length for p in plan.parts)),
            "status": meta.status if meta else "new", "uploadId": meta.upload_id if meta else None,
            "partsLogged": len(logged), "bytesToSend": sum(p.length for p in todo),
            "requests": requests,
        }

    def _adopt(self, upload_id: str) -> Meta:
        """--upload-id with no META: take over that upload; its parts are checked against the local bytes."""
        req = self.req
        try:
            held = self._list_parts(upload_id)
        except Exception as exc:
            if classify(exc) is Kind.GONE:
                raise UploadGone(f"there is no multipart upload {upload_id} for {self._where}",
                                 f"list the uploads in progress with: s3-multipart-upload list -b {req.bucket}") \
                    from exc
            raise self._fail(exc) from exc
        first = next((p for p in held if p["PartNumber"] == 1), None)
        split = int(first["Size"]) if first is not None else None
        plan = req.source.plan(split if split is not None else req.split_size, fixed=split is not None)
        if held:
            log.info("Adopting multipart upload %s of %s: the server holds %d parts; parts of %s.",
                     upload_id, self._where, len(held), human(plan.part_size))
        else:
            log.info("Taking up multipart upload %s of %s (no parts on the server yet); parts of %s.",
                     upload_id, self._where, human(plan.part_size))
        if req.checksum_why.startswith("auto") and req.checksum != "MD5":
            # Made by another run or tool: its CreateMultipartUpload named no checksum this run knows of.
            self.req = req = dataclasses.replace(req, checksum="MD5", checksum_why="auto: an adopted upload "
                                                 "(--upload-id) was not created for an additional checksum")
        meta = Meta(bucket=req.bucket, key=req.key, upload_id=upload_id, split_size=plan.part_size,
                    source=req.source.identity(), part_count=len(plan.parts), checksum_algorithm=req.checksum,
                    created_at=_now_iso(), extra={"adopted": True, **req.meta_extra})
        write_meta(req.meta_path, meta)
        return meta

    def _refuse_overwrite(self, plan: Plan | None = None) -> bool:
        """--no-overwrite: stop before sending anything if an object is already at the key. True when ``plan``
        is one part and the object is byte for byte that part (size and MD5 ETag): an earlier run's PutObject
        went through and the run was killed before it could record it, so there is nothing to refuse."""
        if not self.req.no_overwrite:
            return False
        try:
            head = self._call("HeadObject", lambda c: c.head_object(Bucket=self.req.bucket, Key=self.req.key))
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(exc) from exc
        if (plan is not None and len(plan.parts) == 1 and not self.req.source.server_side
                and head.get("ContentLength") == plan.total_size
                and str(head.get("ETag", "")).strip('"') == digest_part(self.req.source, plan.parts[0], "MD5").md5_hex):
            self._single_etag = str(head["ETag"]).strip('"')
            return True
        raise StateConflict(f"an object already exists at {self._where} and --no-overwrite was given",
                            "choose another key, or leave out --no-overwrite to replace it")

    def _identical_single(self, plan: Plan, started: float) -> UploadResult:
        log.info("%s already holds exactly this data (size and MD5); recording it as done.", self._where)
        meta = self._create(plan)  # one part: no request, META only
        result = UploadResult(self.req.bucket, self.req.key, None, plan.total_size, 1, etag=self._single_etag,
                              already_complete=True)
        self._mark_completed(meta, result)
        result.seconds = time.monotonic() - started
        return result

    def _create(self, plan: Plan) -> Meta:
        req = self.req
        upload_id: str | None = None
        if len(plan.parts) > 1:
            log.info("Initiating multipart upload in %s.", req.meta_path)
            args: dict[str, Any] = {"Bucket": req.bucket, "Key": req.key}
            if req.checksum != "MD5":
                args["ChecksumAlgorithm"] = req.checksum
            if req.checksum in checksums.FULL_OBJECT:
                args["ChecksumType"] = "FULL_OBJECT"
            try:
                upload_id = self._call("CreateMultipartUpload",
                                       lambda c: c.create_multipart_upload(**args)["UploadId"])
            except Exception as exc:
                raise self._fail(exc) from exc
        meta = Meta(
            bucket=req.bucket, key=req.key, upload_id=upload_id, split_size=plan.part_size,
            source=req.source.identity(), part_count=len(plan.parts), checksum_algorithm=req.checksum,
            created_at=_now_iso(), extra=dict(req.meta_extra),
        )
        if upload_id is not None:
            write_meta(req.meta_path, meta)  # a single PutObject has nothing to resume: META comes at the end
        return meta

    # -- one PutObject for an object of one part ---------------------------------------------------

    def _put_single(self, plan: Plan, meta: Meta, result: UploadResult) -> None:
        req = self.req
        part = plan.parts[0]
        self.progress.started(plan.total_size, 1, 0, 0)
        began = time.monotonic()

        proven: list[bool] = [False]
        conditional: dict[str, Any] = {"IfNoneMatch": "*"} if req.no_overwrite else {}

        def put(client: S3Client) -> str:
            copy = req.source.server_side_copy(part)
            if copy is not None:
                copy.pop("CopySourceRange", None)  # CopyObject takes the whole object
                response = client.copy_object(Bucket=req.bucket, Key=req.key, **copy, **conditional)
                return str(response["CopyObjectResult"]["ETag"]).strip('"')
            answer, digest = self._send_verified(part, lambda body, args: client.put_object(
                Bucket=req.bucket, Key=req.key, Body=body, **args, **conditional))  # type: ignore[arg-type]
            etag = str(answer["ETag"]).strip('"')
            # An MD5 ETag equal to the bytes' MD5, or the store's echo of the checksum it verified, proves them.
            proven[0] = etag == digest.md5_hex or answer.get(f"Checksum{digest.algorithm}") == digest.value
            if digest.algorithm in checksums.FULL_OBJECT:
                result.full_checksum = digest.value
            return etag

        try:
            etag = self._call(f"PutObject {self._where}", put)
        except Exception as exc:
            if req.source.server_side and error_code(exc) in ("PreconditionFailed", "412"):
                req.source.recheck()  # CopySourceIfMatch or --no-overwrite's If-None-Match: which one?
            raise self._overwrite_refused(exc) or self._fail(exc, 0, 1) from exc
        self.progress.part_done(1, etag, part.length, time.monotonic() - began)
        result.parts_sent, result.bytes_sent = 1, part.length
        try:
            if not isinstance(req.source, S3ObjectSource):  # one conditional GET or CopyObject cannot mix versions
                req.source.recheck()  # read and sent while the file was changing? (the object is then removed)
            if proven[0]:
                result.etag = etag
            else:
                self._verify_object(plan, [etag], result)
            if req.source.server_side:
                self._spot_check_copy(plan)
        except IntegrityError as exc:
            raise self._delete_wrong_object(exc) from exc
        except StateConflict as exc:
            raise self._delete_changed_object(exc) from exc
        self._mark_completed(meta, result)

    # -- multipart ---------------------------------------------------------------------------------

    def _list_parts(self, upload_id: str) -> list[dict[str, Any]]:
        req = self.req
        return self._call("ListParts", lambda c: list_all_parts(c, req.bucket, req.key, upload_id))

    def _multipart(self, plan: Plan, meta: Meta, upload_id: str, result: UploadResult) -> None:
        req = self.req
        logged = read_parts(req.parts_path, upload_id)
        trusted = self._trust_log and meta.source is not None
        try:
            listed = {p["PartNumber"]: ListedPart(p["PartNumber"], p["ETag"].strip('"'), p["Size"])
                      for p in self._list_parts(upload_id)}
        except Exception as exc:
            if classify(exc) is Kind.GONE and self._already_built(plan, logged if trusted else {}, result):
                self._mark_completed(meta, result)
                return
            raise self._fail(exc) from exc
        decision = reconcile(plan.parts, logged, listed, trust_log=trusted)
        if decision.logged_not_listed:
            log.warning("%d parts in the log are not on the server and will be sent again: %s.",
                        len(decision.logged_not_listed), ranges(decision.logged_not_listed))
        if decision.stray:
            log.warning("The server holds parts beyond this file's %d (%s); they are left out of the object.",
                        len(plan.parts), ranges(decision.stray))
        done: dict[int, PartRecord] = dict(decision.done)
        result.parts_logged = len(done)
        if done:
            log.info("%d parts have already been uploaded.", len(done))

        with PartsLog(req.parts_path) as parts_log:
            to_send = list(decision.send)
            for part, held in decision.verify:
                record = self._adoptable(part, held, upload_id)
                if record is not None:
                    parts_log.append(record)
                    done[part.number] = record
                    result.parts_adopted += 1
                else:
                    to_send.append(part)
            if result.parts_adopted:
                log.info("Adopted %d parts the server holds but the log lacked (size and MD5 match).",
                         result.parts_adopted)
            if meta.source is None:  # historical META: its parts are now checked; record the file from here on
                meta.source = req.source.identity()
                meta.part_count = len(plan.parts)
                meta.checksum_algorithm = req.checksum
                write_meta(req.meta_path, meta)
            to_send.sort(key=lambda p: p.number)
            log.info("Will upload %d chunks.", len(to_send))
            self.progress.started(plan.total_size, len(plan.parts),
                                  sum(plan.parts[n - 1].length for n in done), len(done))
            self._send_all(to_send, upload_id, parts_log, done, result, len(plan.parts))

        etags = [done[p.number].etag for p in plan.parts]
        self._complete(plan, upload_id, done, result)
        try:
            server_side = req.source.server_side
            if self._completion_proves_content(etags, result, server_side):
                log.debug("The completion answer names exactly the parts sent (by composite ETag or checksum): "
                          "no HEAD needed.")
            else:
                self._verify_object(plan, etags, result)
            if server_side:
                self._spot_check_copy(plan)
        except IntegrityError as exc:
            raise self._delete_wrong_object(exc) from exc
        self._mark_completed(meta, result)

    def _adoptable(self, part: Part, held: ListedPart, upload_id: str) -> PartRecord | None:
        """The log line for a part the server holds and the log lacks, if its MD5 ETag shows it is the source's
        bytes; None when it is not, or when that cannot be told (then it is sent again)."""
        source = self.req.source
        if source.server_side:
            return None  # copying again on the server is cheaper than reading the source to check
        if not checksums.is_md5_etag(held.etag) or digest_part(source, part, "MD5").md5_hex != held.etag:
            return None  # other bytes, or a store whose ETags are not MD5s: send it again
        algorithm = self.req.checksum
        checksum = None if algorithm == "MD5" else digest_part(source, part, algorithm).value
        return PartRecord(held.etag, part.number, upload_id, part.length, checksum)

    def _send_all(self, parts: list[Part], upload_id: str, parts_log: PartsLog, done: dict[int, PartRecord],
                  result: UploadResult, total: int) -> None:
        """Send ``parts`` from the pool, at most Throttle.allowed() in flight. The first Ctrl-C (or SIGTERM)
        stops scheduling and lets the parts in flight finish; a second one stops at once (the CLI's signal
        handler exits the process; here it raises Interrupted(at_once=True))."""
        if not parts:
            return
        pending = iter(parts)
        failure: BaseException | None = None
        interrupted = False
        pool = cf.ThreadPoolExecutor(max_workers=self.req.threads, thread_name_prefix="part")
        in_flight: dict[cf.Future[PartRecord], Part] = {}

        def fill() -> None:
            while not self._stop.is_set() and len(in_flight) < self.throttle.allowed():
                part = next(pending, None)
                if part is None:
                    return
                in_flight[pool.submit(self._send_part, part, upload_id, parts_log)] = part

        try:
            fill()
            while in_flight:
                try:
                    finished, _ = cf.wait(in_flight, timeout=0.25, return_when=cf.FIRST_COMPLETED)
                    for future in finished:
                        part = in_flight[future]
                        try:
                            record = future.result()
                        except _Stopping:
                            pass  # gave up its retries because the run is stopping: not done, not the cause
                        except Exception as exc:
                            if failure is None:
                                failure = exc
                                self._stop.set()
                                if len(in_flight) > 1:
                                    log.warning("Part %d failed (%s); letting the %d parts in flight finish.",
                                                part.number, describe(exc), len(in_flight) - 1)
                        else:
                            done[record.number] = record
                            result.parts_sent += 1
                            result.bytes_sent += part.length
                        del in_flight[future]
                    fill()
                except KeyboardInterrupt:
                    if interrupted:
                        raise Interrupted(f"stopped at once; {len(done)} of {total} parts are done and logged",
                                          at_once=True) from None
                    interrupted = True
                    self._stop.set()
                    log.warning("Stopping: waiting for the %d parts in flight to finish "
                                "(press Ctrl-C again to stop at once).", len(in_flight))
        finally:
            pool.shutdown(wait=not in_flight, cancel_futures=True)
        if failure is not None:
            raise self._fail(failure, len(done), total) from failure
        if interrupted:
            raise Interrupted(f"interrupted; {len(done)} of {total} parts are done and logged")

    def _send_part(self, part: Part, upload_id: str, parts_log: PartsLog) -> PartRecord:
        req = self.req
        began = time.monotonic()

        def send(client: S3Client) -> tuple[str, str | None]:
            copy = req.source.server_side_copy(part)
            if copy is not None:
                return self._copy_part(client, part, upload_id, copy), None
            answer, digest = self._send_verified(part, lambda body, args: client.upload_part(
                Bucket=req.bucket, Key=req.key, UploadId=upload_id, PartNumber=part.number, Body=body,  # type: ignore[arg-type]
                **args))  # type: ignore[arg-type]
            return str(answer["ETag"]).strip('"'), digest.value if digest.algorithm != "MD5" else None

        what = "UploadPartCopy" if req.source.server_side else "UploadPart"
        etag, checksum = self._call(f"{what} {part.number}", send)
        record = PartRecord(etag, part.number, upload_id, part.length, checksum)
        parts_log.append(record)  # on disk before the part counts as done
        self.progress.part_done(part.number, etag, part.length, time.monotonic() - began)
        return record

    def _send_verified(self, part: Part, request: Callable[[PartStream, dict[str, str]], Any],
                       ) -> tuple[Any, checksums.PartChecksum]:
        """Send a part (or a one-part object) so that the server's answer proves it holds the source's bytes.

        MD5 on a store whose ETags are MD5s: one pass, the part streamed and hashed as it goes, and the ETag
        compared with that hash; a part whose ETag differs is sent again with Content-MD5, which tells bytes
        damaged on the way (the store refuses or accepts them with the right ETag) from a store whose ETags are
        not MD5s (then every later part goes with Content-MD5). Any other checksum goes in a header, so it is
        computed first: one pass to hash (at 20 GB/s for the CRCs), one to send, both from the page cache."""
        source = self.req.source
        algorithm = self.req.checksum
        etag_first = ""
        if algorithm == "MD5" and not self._etags_not_md5:
            body = PartStream(source, part, "MD5")
            try:
                answer = _sending(body, request, {})
                sent = body.digest()
            finally:
                body.close()
            etag_first = str(answer["ETag"]).strip('"')
            if sent is not None and etag_first == sent.md5_hex:
                return answer, sent
        digest = digest_part(source, part, algorithm)
        body = PartStream(source, part)
        try:
            answer = _sending(body, request, digest.upload_part_args())
        finally:
            body.close()
        self._check_confirmed(answer, digest, part.number)
        etag = str(answer["ETag"]).strip('"')
        if digest.md5_hex is not None and etag == digest.md5_hex and etag_first:
            log.warning("Part %d reached the server damaged (its ETag %s was not the MD5 of the bytes sent); sent "
                        "again with Content-MD5, and the server now holds the right bytes.", part.number, etag_first)
        elif digest.md5_hex is not None and etag != digest.md5_hex and not self._etags_not_md5:
            # The server checked Content-MD5 on arrival; an ETag that is not the MD5 means a store that makes
            # ETags another way (SSE-KMS, SSE-C, some S3-compatible stores), not damaged bytes.
            self._etags_not_md5 = True
            log.warning("The server's part ETags are not the MD5s of the parts (SSE-KMS or a store of its own "
                        "kind): every part now goes with Content-MD5, which the server checks on arrival; the "
                        "object's ETag cannot be checked.")
        return answer, digest

    def _check_confirmed(self, response: Any, digest: checksums.PartChecksum, number: int) -> None:
        """S3 answers an additional checksum it verified with the same header; a store that says nothing most
        likely ignored it (rclone serve s3 and moto do), and then nothing checked the bytes: say so, once."""
        if digest.md5_hex is None and not response.get(f"Checksum{digest.algorithm}") and not self._unconfirmed:
            self._unconfirmed = True
            log.warning("The server did not confirm part %d's %s checksum: it may not check x-amz-checksum-%s, "
                        "and then nothing verifies the parts on arrival. --checksum MD5 is verified with every "
                        "S3-compatible store.", number, digest.algorithm, digest.algorithm.lower())

    def _copy_part(self, client: S3Client, part: Part, upload_id: str, copy: dict[str, Any]) -> str:
        """UploadPartCopy: the store copies the range itself. Its answer is checked, not trusted."""
        try:
            response = client.upload_part_copy(Bucket=self.req.bucket, Key=self.req.key, UploadId=upload_id,
                                               PartNumber=part.number, **copy)
        except Exception as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                raise StateConflict(f"the source object changed during the copy to {self._where}",
                                    "the copy would mix two versions; rerun with --restart to copy the new "
                                    "version") from exc
            raise
        etag = str(response.get("CopyPartResult", {}).get("ETag", "")).strip('"')
        if not etag or (part.length > 0 and etag == EMPTY_MD5):
            self.req.source.recheck()  # a source that shrank under us explains an empty copy
            raise IntegrityError(f"UploadPartCopy of part {part.number} for {self._where} answered without copying "
                                 f"(ETag {etag or 'missing'})", "this store's UploadPartCopy cannot be trusted; "
                                 "rerun with --restart --through-client")
        return etag

    def _delete_changed_object(self, exc: StateConflict) -> StateConflict:
        """The one-part object was sent while its source changed: remove it rather than keep a mixed one."""
        try:
            self._call("DeleteObject", lambda c: c.delete_object(Bucket=self.req.bucket, Key=self.req.key))
        except Exception:
            return StateConflict(f"{exc.message}; {self._where} may hold a mix of versions: delete it", exc.hint)
        return StateConflict(f"{exc.message}; the object just sent was deleted", exc.hint)

    def _delete_wrong_object(self, exc: IntegrityError) -> IntegrityError:
        """The object this run just completed is not the source: no object is better than a wrong one."""
        if isinstance(exc, ObjectMissing):
            return exc
        req = self.req
        try:
            self._call("DeleteObject", lambda c: c.delete_object(Bucket=req.bucket, Key=req.key))
        except Exception as delete_failed:
            return IntegrityError(f"{exc.message}; deleting the wrong object failed too ({describe(delete_failed)})",
                                  f"delete s3://{req.bucket}/{req.key} yourself; {exc.hint or ''}")
        return IntegrityError(f"{exc.message}; the wrong object was deleted", exc.hint)

    def _spot_check_copy(self, plan: Plan) -> None:
        """The store copied the parts itself: compare samples of the object with the source, since its ETags
        alone cannot prove that the bytes were copied (and from the right offsets)."""
        req = self.req
        step = max(1, len(plan.parts) // SPOT_CHECKS)
        samples = {p.number: p for p in [*plan.parts[::step][:SPOT_CHECKS], plan.parts[-1]]}
        for part in samples.values():
            sample = Part(part.number, part.offset, min(SPOT_CHECK_BYTES, part.length))
            if sample.length == 0:
                continue
            wanted = req.source.read(sample)
            byte_range = f"bytes={sample.offset}-{sample.offset + sample.length - 1}"
            got = self._call(f"GetObject {self._where} {byte_range}", lambda c, r=byte_range: c.get_object(  # type: ignore[misc]
                Bucket=req.bucket, Key=req.key, Range=r)["Body"].read())
            if got != wanted:
                raise IntegrityError(f"{self._where} differs from the source at {byte_range}: the store's "
                                     "UploadPartCopy did not copy the bytes it claimed",
                                     "delete the object and copy again with --restart --through-client")

    def _check_copied_sizes(self, plan: Plan, upload_id: str) -> None:
        """Server-side copies: the server must hold every part at its planned size before completion."""
        held = {p["PartNumber"]: int(p["Size"]) for p in self._list_parts(upload_id)}
        wrong = [p.number for p in plan.parts if held.get(p.number) != p.length]
        if wrong:
            raise IntegrityError(f"after UploadPartCopy the server holds parts {ranges(wrong)} of {self._where} "
                                 "at sizes other than the ranges copied", "rerun with --restart --through-client")

    def _complete(self, plan: Plan, upload_id: str, done: dict[int, PartRecord], result: UploadResult) -> None:
        req = self.req
        req.source.recheck()  # a file edited, or an object overwritten, during the run: do not complete
        if req.source.server_side:
            self._check_copied_sizes(plan, upload_id)
        parts: list[dict[str, Any]] = []
        for p in plan.parts:
            entry: dict[str, Any] = {"PartNumber": p.number, "ETag": f'"{done[p.number].etag}"'}
            parts.append(entry)
        self._listing_matches = self._checksum_proven = False
        listed_checksums: list[str] = []
        if req.checksum != "MD5":
            # Additional checksums must be repeated in the completion; the log keeps ETags only, so ask
            # the server for the values it verified on arrival.
            listed = {p["PartNumber"]: p for p in self._list_parts(upload_id)}
            for entry in parts:
                value = listed.get(entry["PartNumber"], {}).get(f"Checksum{req.checksum}")
                if isinstance(value, str):
                    entry[f"Checksum{req.checksum}"] = value
            # The same listing shows each part's size: with the completion's answer, that can make a HEAD
            # of the object redundant (see _completion_proves_content).
            self._listing_matches = len(listed) == len(plan.parts) and all(
                p.number in listed and listed[p.number].get("Size") == p.length
                and str(listed[p.number].get("ETag", "")).strip('"') == done[p.number].etag for p in plan.parts)
            listed_checksums = [str(listed.get(p.number, {}).get(f"Checksum{req.checksum}") or "")
                                for p in plan.parts]
        conditional: dict[str, Any] = {}
        if req.checksum in checksums.FULL_OBJECT:
            # The whole file's checksum, from the parts' checksums computed on the local bytes (never from the
            # server's listing): S3 computes its own over the object it builds and refuses to complete if the
            # two differ. Each part goes with its own local value as well.
            local = self._part_checksums(plan, done)
            for entry, value in zip(parts, local, strict=True):
                entry[f"Checksum{req.checksum}"] = value
            result.full_checksum = checksums.full_object_checksum(
                req.checksum, [(v, p.length) for v, p in zip(local, plan.parts, strict=True)])
            conditional = {f"Checksum{req.checksum}": result.full_checksum, "ChecksumType": "FULL_OBJECT"}
        if req.no_overwrite:
            self._refuse_overwrite()  # stores that ignore If-None-Match on completion are checked here
            conditional["IfNoneMatch"] = "*"
        try:
            response = self._call("CompleteMultipartUpload", lambda c: c.complete_multipart_upload(
                Bucket=req.bucket, Key=req.key, UploadId=upload_id, MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                **conditional))
        except Exception as exc:
            refused = self._overwrite_refused(exc)
            if refused is not None:
                raise refused from exc
            if classify(exc) is Kind.GONE and self._already_built(plan, done, result):
                return  # a retried completion whose first try went through
            if error_code(exc) == "EntityTooSmall":
                raise StateConflict(
                    f"the server refused to complete {self._where}: a part other than the last is below its "
                    f"minimum size (S3: 5 MiB); this upload's parts are {human(plan.part_size)} "
                    f"({plan.part_size} bytes, as recorded in {req.meta_path})",
                    "rerun with --restart to upload again with valid parts (the default is 32 MiB)",
                ) from exc
            if error_code(exc) == "InvalidPart":
                raise UploadGone(
                    f"the server refused to assemble {self._where} from the parts it lists (InvalidPart): its "
                    f"multipart upload {upload_id} is damaged. rclone serve s3 does this when a part upload was cut "
                    "off while it streamed parts to disk; run it with --disable-multipart-streaming",
                    "rerun with --restart to start a new upload (the old parts log is kept aside)",
                ) from exc
            raise self._fail(exc, len(done), len(plan.parts)) from exc
        result.etag = str(response.get("ETag", "")).strip('"') or None
        expected = result.full_checksum or checksums.composite_checksum(req.checksum, listed_checksums)
        self._checksum_proven = bool(expected) and response.get(f"Checksum{req.checksum}") == expected

    def _part_checksums(self, plan: Plan, done: dict[int, PartRecord]) -> list[str]:
        """Each part's checksum as computed from the local bytes: from the log, or read again where the log has
        none (a part adopted by an older version)."""
        values = []
        for part in plan.parts:
            value = done[part.number].checksum
            if value is None:
                value = digest_part(self.req.source, part, self.req.checksum).value
            values.append(value)
        return values

    def _overwrite_refused(self, exc: BaseException) -> StateConflict | None:
        if self.req.no_overwrite and error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            return StateConflict(f"an object appeared at {self._where} during the upload, and --no-overwrite was "
                                 "given; the parts stay on the server", "choose another key and --restart, or "
                                 "rerun without --no-overwrite to replace the object")
        return None

    def _already_built(self, plan: Plan, done: dict[int, PartRecord], result: UploadResult) -> bool:
        """After NoSuchUpload: is the object there, complete and ours (killed after completion)?"""
        req = self.req
        try:
            head = self._call("HeadObject", lambda c: c.head_object(Bucket=req.bucket, Key=req.key))
        except Exception:
            return False
        if head["ContentLength"] != plan.total_size:
            return False
        etag = head["ETag"].strip('"')
        if checksums.is_composite_etag(etag) and len(done) < len(plan.parts):
            log.info("Checking the MD5 of every part of %s against the object's ETag.", self._where)
            ok = etag == checksums.composite_etag([digest_part(req.source, p, "MD5").md5_hex or "" for p in plan.parts])
        elif len(done) == len(plan.parts) and etag == checksums.composite_etag(
                [done[p.number].etag for p in plan.parts]):
            ok = True
        elif checksums.is_md5_etag(etag):
            log.info("Checking the MD5 of %s against the whole local file.", self._where)
            ok = etag == _md5_of(req.source, plan)
        else:
            ok = False
        if ok:
            log.info("The upload was already completed by an earlier run; %s matches the local bytes.", self._where)
            result.etag = etag
        return ok

    def _completion_proves_content(self, part_etags: list[str], result: UploadResult, server_side: bool) -> bool:
        """Whether CompleteMultipartUpload's answer already proves the object, so that a HEAD adds nothing.

        With Content-MD5 the server verified every part's bytes on arrival (this run's, earlier runs',
        or parts adopted after an MD5 check), and an answer ETag equal to md5(part ETags)-N says that
        exactly those parts, in order, make the object: its content, and so its size, are the file's.
        Stores that answer otherwise (and copies, whose parts no checksum covered) get the HEAD check.
        """
        if server_side or len(part_etags) < 2 or not result.etag:
            return False
        if self.req.checksum == "MD5":
            return result.etag == checksums.composite_etag(part_etags)
        # An additional checksum (CRC32, SHA256): the listing taken for the completion showed every part
        # with its size and logged ETag. An answer that names exactly those parts, by the composite of
        # their checksums (S3 answers so) or of their MD5 ETags (stores that ignore x-amz-checksum-*),
        # says the object is those parts in order: its size is the file's. A HEAD would show no more: it
        # cannot check content that no part MD5 covered.
        if not self._listing_matches:
            return False
        return self._checksum_proven or result.etag == checksums.composite_etag(part_etags)

    def _verify_object(self, plan: Plan, part_etags: list[str], result: UploadResult) -> None:
        req = self.req
        try:
            head = self._call("HeadObject", lambda c: c.head_object(Bucket=req.bucket, Key=req.key))
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectMissing(f"{self._where} is not there after the server said it completed it",
                                    "rerun with --restart to upload it again") from exc
            if error_code(exc) in ("403", "AccessDenied"):
                log.warning("Could not check %s after completing it: these credentials may not read it (%s).",
                            self._where, describe(exc))
                return
            raise self._fail(exc) from exc
        size, etag = head["ContentLength"], head["ETag"].strip('"')
        if size != plan.total_size:
            raise IntegrityError(f"{self._where} is {size} bytes on the server, but the local data is "
                                 f"{plan.total_size}", "rerun with --restart to upload it again")
        if self._etags_not_md5:
            expected: str | None = None
        elif len(part_etags) == 1 and checksums.is_md5_etag(etag) and req.checksum == "MD5":
            expected = part_etags[0]
        else:
            expected = checksums.composite_etag(part_etags) if len(part_etags) > 1 else None
        for label, got in (("HEAD", etag), ("CompleteMultipartUpload", result.etag or "")):
            comparable = checksums.is_composite_etag(got) or len(part_etags) == 1
            if expected and got and comparable and got != expected:
                raise IntegrityError(f"{self._where}: the {label} ETag {got} is not the one the parts "
                                     f"make ({expected})", "rerun with --restart to upload it again")
        result.etag = etag

    def _mark_completed(self, meta: Meta, result: UploadResult) -> None:
        meta.status = COMPLETED
        meta.extra["completedAt"] = _now_iso()
        if result.etag:
            meta.extra["eTag"] = result.etag
        if result.full_checksum:
            # What `aws s3api head-object --checksum-mode ENABLED` shows for the object, to compare later.
            meta.extra[f"checksum{self.req.checksum}"] = result.full_checksum
        write_meta(self.req.meta_path, meta)
        log.info("Completed %s: %s in %d parts, ETag %s.", self._where, human(result.size), result.parts_total,
                 result.etag)


def _sending(body: PartStream, request: Callable[[PartStream, dict[str, str]], Any], args: dict[str, str]) -> Any:
    """``request(body, args)``, raising what the source raised while it was read (see PartStream.failure)."""
    try:
        return request(body, args)
    except Exception:
        if body.failure is not None:
            raise body.failure from None
        raise


class _Stopping(Exception):
    """A part gave up retrying because the run is stopping."""


def _md5_of(source: Source, plan: Plan) -> str:
    """The MD5 of all the source's bytes, read block by block."""
    h = hashlib.md5(usedforsecurity=False)
    for part in plan.parts:
        stream = PartStream(source, part)
        try:
            while block := stream.read(BLOCK):
                h.update(block)
        finally:
            stream.close()
    return h.hexdigest()
