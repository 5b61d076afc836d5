"""The upload engine: one run, its phases tied together.

    plan       run_plan.make_plan      META, the part plan, the checksum, trust in the log (no request)
    start      Uploader._start         create the multipart upload, or adopt one (--upload-id)
    reconcile  Uploader._reconcile     the log against ListParts: done / adopted / to send
    send       sender.Sender           the pool, the throttle, each part streamed and proven
    complete   completion.Completer    CompleteMultipartUpload, with the whole file's checksum where it has one
    verify     completion.Completer    HEAD unless the completion's answer proved the object

Each phase hands the next a value (RunPlan, Reconciled, Sent, Completed). The multipart upload
is never aborted here: only ``abort`` does that.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s3_multipart_upload import checksums
from s3_multipart_upload.completion import (
    Completed,
    Completer,
    delete_changed_object,
    overwrite_refused,
    refuse_overwrite,
)
from s3_multipart_upload.errors import StateConflict, UploadGone
from s3_multipart_upload.job import Job, Throttle, UploadRequest, UploadResult
from s3_multipart_upload.plan import Part, human, ranges
from s3_multipart_upload.progress import Reporter
from s3_multipart_upload.reconcile import ListedPart, reconcile
from s3_multipart_upload.run_plan import RunPlan, check_paths, make_plan, with_meta
from s3_multipart_upload.s3 import ClientFactory, Kind, RetryPolicy, classify, error_code
from s3_multipart_upload.sender import Sender
from s3_multipart_upload.sources import S3ObjectSource
from s3_multipart_upload.state import (
    ABORTED,
    COMPLETED,
    IN_PROGRESS,
    Meta,
    PartRecord,
    PartsLog,
    check_writable_dir,
    meta_lock,
    read_parts,
    write_meta,
)
from s3_multipart_upload.stream import digest_part

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["Throttle", "UploadRequest", "UploadResult", "Uploader"]
log = logging.getLogger(__name__)
# META keys for what a run learnt about the store (see Sender): MD5 goes as Content-MD5; part ETags are not MD5s.
CONTENT_MD5 = "contentMD5"
ETAGS_NOT_MD5 = "eTagsNotMD5"


@dataclass
class Reconciled:
    """Where a multipart upload stands after its log is checked against the server's part list."""

    done: dict[int, PartRecord] = field(default_factory=dict)  # logged and held, or adopted: not sent again
    logged: int = 0  # of those, found in the log
    adopted: int = 0  # held by the server, missing from the log, checked against the local bytes
    to_send: list[Part] = field(default_factory=list)


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
        self.job = Job(request, clients, progress, retry, sleep)

    def dry_run(self) -> dict[str, Any]:
        """The plan of this run, from the command and the local files only: sends nothing."""
        check_paths(self.req)
        return make_plan(self.req, warn=False).describe(self.req)

    def run(self) -> UploadResult:
        req = self.req
        check_paths(req)
        check_writable_dir(req.meta_path, "meta file")
        check_writable_dir(req.parts_path, "parts file")
        with meta_lock(req.meta_path):
            started = time.monotonic()
            result = self._run(make_plan(req))
            result.seconds = time.monotonic() - started
            return result

    def _run(self, run: RunPlan) -> UploadResult:
        req, meta = self.req, run.meta
        if run.set_aside is not None:
            self._set_aside(run.set_aside)
        if meta is not None and meta.status == COMPLETED:
            log.info("Upload of %s is already complete (meta file %s); nothing to send.", req.where, req.meta_path)
            return UploadResult(req.bucket, req.key, meta.upload_id, req.source.total_size, meta.part_count or 0,
                                checksum=run.checksum, etag=meta.extra.get("eTag"), already_complete=True,
                                full_checksum=meta.extra.get(f"checksum{run.checksum}"))
        if meta is not None and meta.status == ABORTED:
            raise UploadGone(f"the upload for {req.where} in {req.meta_path} was aborted",
                             "rerun with --restart to start a new upload")
        if meta is not None and req.upload_id is not None and meta.upload_id != req.upload_id:
            raise StateConflict(f"meta file {req.meta_path} records upload {meta.upload_id}, not {req.upload_id}",
                                "leave out --upload-id to resume the recorded one, or give another -m and -a path")
        adopted = run.adopting
        if run.upload_id_asked is not None and adopted:
            run = self._adopt(run, run.upload_id_asked)
        log.info("Checksum %s: %s.", run.checksum, run.checksum_why)
        if run.parts.note:
            log.warning("%s.", run.parts.note)
        if run.meta is None:
            # --no-overwrite before a new upload. A resumed one is checked again at completion, and its own
            # object (an earlier run completed it, then was killed) must not count as someone else's.
            identical = refuse_overwrite(self.job, run.parts)
            if identical is not None:
                return self._identical_single(run, identical)
            run = self._create(run)
        elif not adopted:
            log.info("Continuing multipart upload from %s.", req.meta_path)
        assert run.meta is not None
        result = UploadResult(req.bucket, req.key, run.meta.upload_id, run.parts.total_size, len(run.parts.parts),
                              checksum=run.checksum)
        if run.meta.upload_id is None:
            self._put_single(run, run.meta, result)
        else:
            self._multipart(run, run.meta, run.meta.upload_id, result)
        return result

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

    # -- start: a new upload, or one adopted --------------------------------------------------------

    def _adopt(self, run: RunPlan, upload_id: str) -> RunPlan:
        """--upload-id with no META: take over that upload; its parts are checked against the local bytes."""
        req = self.req
        info: dict[str, Any] = {}
        try:
            held = Completer(self.job, run.checksum, run.parts).list_parts(upload_id, info)
        except Exception as exc:
            if classify(exc) is Kind.GONE:
                raise UploadGone(f"there is no multipart upload {upload_id} for {req.where}",
                                 f"list the uploads in progress with: s3-multipart-upload list -b {req.bucket}") \
                    from exc
            raise self.job.fail(exc) from exc
        first = next((p for p in held if p["PartNumber"] == 1), None)
        split = int(first["Size"]) if first is not None else None
        plan = req.source.plan(split if split is not None else req.split_size, fixed=split is not None)
        if held:
            log.info("Adopting multipart upload %s of %s: the server holds %d parts; parts of %s.",
                     upload_id, req.where, len(held), human(plan.part_size))
        else:
            log.info("Taking up multipart upload %s of %s (no parts on the server yet); parts of %s.",
                     upload_id, req.where, human(plan.part_size))
        checksum, why = run.checksum, run.checksum_why
        created = str(info.get("ChecksumAlgorithm") or "").upper()
        if req.auto_checksum and created in checksums.ALGORITHMS and \
                (created in checksums.FULL_OBJECT) == (info.get("ChecksumType") == "FULL_OBJECT"):
            checksum, why = created, "auto: the adopted upload was created for it (ListParts says so)"
        meta = Meta(bucket=req.bucket, key=req.key, upload_id=upload_id, split_size=plan.part_size,
                    source=req.source.identity(), part_count=len(plan.parts), checksum_algorithm=checksum,
                    created_at=_now_iso(), extra={"adopted": True, **req.meta_extra})
        write_meta(req.meta_path, meta)
        # Lines of that upload id in the log predate the lost META: they are read, and checked like the rest.
        return dataclasses.replace(with_meta(run, meta, plan, read_parts(req.parts_path, upload_id)),
                                   checksum=checksum, checksum_why=why)

    def _new_meta(self, run: RunPlan, upload_id: str | None) -> Meta:
        req = self.req
        return Meta(bucket=req.bucket, key=req.key, upload_id=upload_id, split_size=run.parts.part_size,
                    source=req.source.identity(), part_count=len(run.parts.parts), checksum_algorithm=run.checksum,
                    created_at=_now_iso(), extra=dict(req.meta_extra))

    def _create(self, run: RunPlan) -> RunPlan:
        """A new multipart upload (META written before any part is sent), or, for one part, META for the end."""
        req = self.req
        if run.single_put:
            return _replace_meta(run, self._new_meta(run, None))  # a PutObject has nothing to resume
        log.info("Initiating multipart upload in %s.", req.meta_path)
        args: dict[str, Any] = {"Bucket": req.bucket, "Key": req.key}
        if run.checksum != "MD5":
            args["ChecksumAlgorithm"] = run.checksum
        if run.checksum in checksums.FULL_OBJECT:
            args["ChecksumType"] = "FULL_OBJECT"
        try:
            upload_id = self.job.call("CreateMultipartUpload",
                                      lambda c: c.create_multipart_upload(**args)["UploadId"])
        except Exception as exc:
            raise self.job.fail(exc) from exc
        meta = self._new_meta(run, upload_id)
        write_meta(req.meta_path, meta)
        return _replace_meta(run, meta)

    def _identical_single(self, run: RunPlan, etag: str) -> UploadResult:
        req = self.req
        log.info("%s already holds exactly this data (size and MD5); recording it as done.", req.where)
        result = UploadResult(req.bucket, req.key, None, run.parts.total_size, 1, checksum=run.checksum, etag=etag,
                              already_complete=True)
        self._mark_completed(self._new_meta(run, None), result)
        return result

    # -- one PutObject for an object of one part ---------------------------------------------------

    def _put_single(self, run: RunPlan, meta: Meta, result: UploadResult) -> None:
        job, req, plan = self.job, self.req, run.parts
        part = plan.parts[0]
        job.progress.started(plan.total_size, 1, 0, 0)
        began = time.monotonic()
        # Content-MD5 here, not the ETag comparison: the first request already makes the object, and damaged
        # bytes must never be one, not even until a second request replaces them.
        sender = Sender(job, run.checksum, content_md5=True)
        conditional: dict[str, Any] = {"IfNoneMatch": "*"} if req.no_overwrite else {}

        def put(client: S3Client) -> Completed:
            copy = req.source.server_side_copy(part)
            if copy is not None:
                copy.pop("CopySourceRange", None)  # CopyObject takes the whole object
                response = client.copy_object(Bucket=req.bucket, Key=req.key, **copy, **conditional)
                return Completed(str(response["CopyObjectResult"]["ETag"]).strip('"'))
            answer, digest = sender.send_verified(part, lambda body, args: client.put_object(
                Bucket=req.bucket, Key=req.key, Body=body, **args, **conditional))  # type: ignore[arg-type]
            etag = str(answer["ETag"]).strip('"')
            # An MD5 ETag equal to the bytes' MD5, or the store's echo of the checksum it verified, proves them.
            proven = etag == digest.md5_hex or answer.get(f"Checksum{digest.algorithm}") == digest.value
            full = digest.value if digest.algorithm in checksums.FULL_OBJECT else None
            return Completed(etag, full, proven)

        try:
            completed = job.call(f"PutObject {req.where}", put, body_size=part.length)
        except Exception as exc:
            if req.source.server_side and error_code(exc) in ("PreconditionFailed", "412"):
                req.source.recheck()  # CopySourceIfMatch or --no-overwrite's If-None-Match: which one?
            raise overwrite_refused(job, exc) or job.fail(exc, 0, 1) from exc
        job.progress.part_done(1, completed.etag or "", part.length, time.monotonic() - began)
        result.parts_sent, result.bytes_sent = 1, part.length
        try:
            if not isinstance(req.source, S3ObjectSource):  # one conditional GET or CopyObject cannot mix versions
                req.source.recheck()  # read and sent while the file was changing? (the object is then removed)
        except StateConflict as exc:
            raise delete_changed_object(job, exc) from exc
        completer = Completer(job, run.checksum, plan)
        result.etag = completer.verify(completed, [completed.etag or ""], sender.etags_not_md5)
        result.full_checksum = completed.full_checksum
        self._mark_completed(meta, result)

    # -- multipart ---------------------------------------------------------------------------------

    def _multipart(self, run: RunPlan, meta: Meta, upload_id: str, result: UploadResult) -> None:
        job, req, plan = self.job, self.req, run.parts
        completer = Completer(job, run.checksum, plan)
        try:
            listed = {p["PartNumber"]: ListedPart(p["PartNumber"], p["ETag"].strip('"'), p["Size"])
                      for p in completer.list_parts(upload_id)}
        except Exception as exc:
            if classify(exc) is Kind.GONE:
                logged = run.logged if run.trust_log else {}
                etag = completer.already_built(logged)
                if etag is not None:
                    result.etag, result.full_checksum = etag, completer.full_checksum(logged)
                    self._mark_completed(meta, result)
                    return
            raise job.fail(exc) from exc
        sender = Sender(job, run.checksum, content_md5=meta.extra.get(CONTENT_MD5) is True,
                        etags_not_md5=meta.extra.get(ETAGS_NOT_MD5) is True)
        with PartsLog(req.parts_path) as parts_log:
            state = self._reconcile(run, upload_id, listed, parts_log)
            result.parts_logged, result.parts_adopted = state.logged, state.adopted
            if meta.source is None:  # historical META: its parts are now checked; record the file from here on
                meta.source = req.source.identity()
                meta.part_count = len(plan.parts)
                meta.checksum_algorithm = run.checksum
                write_meta(req.meta_path, meta)
            log.info("Will upload %d chunks.", len(state.to_send))
            job.progress.started(plan.total_size, len(plan.parts),
                                 sum(plan.parts[n - 1].length for n in state.done), len(state.done))
            try:
                sent = sender.send_all(state.to_send, upload_id, parts_log, len(state.done), len(plan.parts))
            finally:
                self._remember_store(meta, sender)
        result.parts_sent, result.bytes_sent = sent.parts, sent.bytes
        done = state.done | sent.records
        completed = completer.complete(upload_id, done)
        result.etag = completer.verify(completed, [done[p.number].etag for p in plan.parts], sender.etags_not_md5)
        result.full_checksum = completed.full_checksum
        self._mark_completed(meta, result)

    def _remember_store(self, meta: Meta, sender: Sender) -> None:
        """What the parts taught about the store, kept in META so that a rerun does not learn it again by
        sending its first parts twice."""
        learnt = {CONTENT_MD5: sender.content_md5 and not self.req.content_md5, ETAGS_NOT_MD5: sender.etags_not_md5}
        if any(value and meta.extra.get(key) is not True for key, value in learnt.items()):
            meta.extra.update({key: True for key, value in learnt.items() if value})
            write_meta(self.req.meta_path, meta)

    def _reconcile(self, run: RunPlan, upload_id: str, listed: dict[int, ListedPart],
                   parts_log: PartsLog) -> Reconciled:
        """The log (a cache) against the server's part list (the truth); parts the server holds that the log lacks
        are adopted, and logged, when they prove to be the source's bytes."""
        plan = run.parts
        decision = reconcile(plan.parts, run.logged, listed, trust_log=run.trust_log)
        if decision.logged_not_listed:
            log.warning("%d parts in the log are not on the server and will be sent again: %s.",
                        len(decision.logged_not_listed), ranges(decision.logged_not_listed))
        if decision.stray:
            log.warning("The server holds parts beyond this file's %d (%s); they are left out of the object.",
                        len(plan.parts), ranges(decision.stray))
        state = Reconciled(done=dict(decision.done), logged=len(decision.done), to_send=list(decision.send))
        if state.done:
            log.info("%d parts have already been uploaded.", len(state.done))
        for part, held in decision.verify:
            record = self._adoptable(run.checksum, part, held, upload_id)
            if record is None:
                state.to_send.append(part)
                continue
            parts_log.append(record)
            state.done[part.number] = record
            state.adopted += 1
        if state.adopted:
            log.info("Adopted %d parts the server holds but the log lacked (size and MD5 match).", state.adopted)
        state.to_send.sort(key=lambda p: p.number)
        return state

    def _adoptable(self, checksum: str, part: Part, held: ListedPart, upload_id: str) -> PartRecord | None:
        """The log line for a part the server holds and the log lacks, if its MD5 ETag shows it is the source's
        bytes; None when it is not, or when that cannot be told (then it is sent again)."""
        source = self.req.source
        if source.server_side:
            return None  # copying again on the server is cheaper than reading the source to check
        if not checksums.is_md5_etag(held.etag) or digest_part(source, part, "MD5").md5_hex != held.etag:
            return None  # other bytes, or a store whose ETags are not MD5s: send it again
        value = None if checksum == "MD5" else digest_part(source, part, checksum).value
        return PartRecord(held.etag, part.number, upload_id, part.length, value)

    def _mark_completed(self, meta: Meta, result: UploadResult) -> None:
        meta.status = COMPLETED
        meta.extra["completedAt"] = _now_iso()
        if result.etag:
            meta.extra["eTag"] = result.etag
        if result.full_checksum:
            # What `aws s3api head-object --checksum-mode ENABLED` shows for the object, to compare later.
            meta.extra[f"checksum{result.checksum}"] = result.full_checksum
        write_meta(self.req.meta_path, meta)
        log.info("Completed %s: %s in %d parts, ETag %s.", self.req.where, human(result.size), result.parts_total,
                 result.etag)


def _replace_meta(run: RunPlan, meta: Meta) -> RunPlan:
    return dataclasses.replace(run, meta=meta)
