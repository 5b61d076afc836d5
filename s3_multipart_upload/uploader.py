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

import contextlib
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
from s3_multipart_upload.errors import (
    CredentialsExpired,
    ServerRefused,
    SourceChanged,
    StateConflict,
    TemporaryFailure,
    UploadError,
    UploadGone,
)
from s3_multipart_upload.job import Job, Throttle, UploadRequest, UploadResult
from s3_multipart_upload.plan import Part, Plan, human, ranges
from s3_multipart_upload.progress import Reporter
from s3_multipart_upload.reconcile import ListedPart, reconcile
from s3_multipart_upload.run_plan import RunPlan, check_paths, make_plan, read_logs, with_meta
from s3_multipart_upload.s3 import (
    CHECKSUM_HEADER_REFUSED,
    CHECKSUM_MISMATCH_CODES,
    ClientFactory,
    Kind,
    RetryPolicy,
    classify,
    describe,
    error_code,
)
from s3_multipart_upload.sender import Sender
from s3_multipart_upload.shard import Claim, claim_path, read_claim, release, try_claim
from s3_multipart_upload.sources import S3ObjectSource
from s3_multipart_upload.state import (
    ABORTED,
    COMPLETED,
    IN_PROGRESS,
    Meta,
    PartRecord,
    PartsLog,
    check_writable_dir,
    file_lock,
    mark_completed,
    meta_lock,
    new_meta,
    read_meta,
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
SHARDS = "shards"  # META: the count of shards of an upload begun with --shard
WHY = "_why"  # (create_for's answer only: never written to META)
ACCESS_REFUSALS = frozenset({"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"})
PROPERTIES = "objectProperties"  # META: the object's properties as asked, secrets excepted (properties.py)
CREATE_WAIT = 900.0  # how long a shard waits for the one creating the upload (its CreateMultipartUpload retries)
CREATE_STALE = 600.0  # a create claim this old with no META is a dead task's (10 tries of a create take < 4 min)
CLAIM_POLL = 0.25


def _kms_refusal(req: UploadRequest, error: Exception) -> Exception:
    """A refused create or put of an SSE-KMS object: most often the KMS key, which the error then names."""
    key = req.properties.sse_kms_key_id
    if isinstance(error, ServerRefused) and (req.properties.sse or "").startswith("aws:kms"):
        which = f"the KMS key {key}" if key else "the account's aws/s3 KMS key"
        error.message += f" (with --sse {req.properties.sse}: {which})"
        error.hint = (f"check that this identity may use {which} (kms:GenerateDataKey and kms:Decrypt), or give "
                      "--sse-kms-key-id a key it may use")
    return error


@dataclass
class Reconciled:
    """Where a multipart upload stands after its log is checked against the server's part list."""

    done: dict[int, PartRecord] = field(default_factory=dict)  # logged and held, or adopted: not sent again
    logged: int = 0  # of those, found in the log
    adopted: int = 0  # held by the server, missing from the log, checked against the local bytes
    to_send: list[Part] = field(default_factory=list)


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
        self._claims: list[Claim] = []  # shard claims this run holds (released when it ends)

    def dry_run(self) -> dict[str, Any]:
        """The plan of this run, from the command and the local files only: sends nothing."""
        check_paths(self.req)
        return make_plan(self.req, warn=False).describe(self.req)

    def run(self) -> UploadResult:
        req = self.req
        check_paths(req)
        check_writable_dir(req.meta_path, "meta file")
        check_writable_dir(req.log_path, "parts file")
        with contextlib.ExitStack() as held:
            held.enter_context(meta_lock(req.meta_path, shared=req.shard is not None))
            if req.shard is not None:
                held.enter_context(file_lock(
                    req.log_path.with_name(req.log_path.name + ".lock"), False,
                    (f"another s3-multipart-upload process is running shard {req.shard} of {req.meta_path}",
                     "wait for it to finish, or stop it, then rerun"),
                    f"make {req.log_path.parent} writable or choose another -a path"))
                held.callback(self._release_claims)
            else:
                self._clear_claims()
            started = time.monotonic()
            try:
                run = make_plan(req)
                if req.shard is not None:
                    run = self._join(run)
                result = self._run(run)
            except SourceChanged as exc:
                if req.shard is not None:  # tell the other shards, which may not see it (NFS attribute caches)
                    self._mark_changed(exc)
                raise
            result.seconds = time.monotonic() - started
            return result

    # -- shards: one upload, many processes (see shard.py) -----------------------------------------

    def _join(self, run: RunPlan) -> RunPlan:
        """Under --shard with no META yet: create the upload if this shard claims it first, else wait until the
        shard that did has written META, and plan with it. Never a second multipart upload."""
        req, shard = self.req, self.req.shard
        assert shard is not None
        if run.meta is not None or run.adopting or run.single_put:
            return run  # (one part: shard 0 sends it, see _run)
        path = claim_path(req.meta_path, "create")
        deadline = time.monotonic() + CREATE_WAIT
        told = False
        for _ in range(int(CREATE_WAIT / CLAIM_POLL) + 10):
            claim = try_claim(path, shard, stale_after=CREATE_STALE)
            if claim is not None:
                fresh = make_plan(req, warn=False)  # created by another shard between the plan and the claim?
                if fresh.meta is not None:
                    release(claim)
                    return fresh
                self._claims.append(claim)
                return run
            if req.meta_path.exists():
                return make_plan(req)
            if not told:
                held = read_claim(path)
                log.info("Shard %s: %s is creating the upload; waiting for %s.", shard,
                         held.describe() if held else "another shard", req.meta_path)
                told = True
            if time.monotonic() > deadline:
                break
            time.sleep(CLAIM_POLL)
        held = read_claim(path)
        raise TemporaryFailure(
            f"shard {shard}: {held.describe() if held else 'another shard'} has been creating the upload of "
            f"{req.where} for {CREATE_WAIT:.0f} s and {req.meta_path} is still missing",
            f"rerun; if that task is dead, remove {path} first")

    def _release_claims(self) -> None:
        while self._claims:
            release(self._claims.pop())

    def _clear_claims(self) -> None:
        """A run of the whole upload holds META.lock alone, so no shard is running: claims left by dead shards
        (killed between claiming and releasing) are stale."""
        for what in ("create", "complete"):
            held = read_claim(claim_path(self.req.meta_path, what))
            if held is not None:
                log.info("Removing %s, left by %s, which is no longer running.", held.path, held.describe())
                release(held)

    def _check_shards(self, meta: Meta) -> None:
        shard, recorded = self.req.shard, meta.extra.get(SHARDS)
        if shard is not None and recorded is not None and recorded != shard.count:
            raise StateConflict(f"meta file {self.req.meta_path} records an upload in {recorded} shards, not "
                                f"{shard.count} ({shard.origin})",
                                f"give every task of the upload the same count: --shard I/{recorded}")
        changed = read_claim(claim_path(self.req.meta_path, "changed"))
        if changed is not None and meta.status != COMPLETED:
            raise SourceChanged(f"{changed.describe()} found that the data of {self.req.where} changed during the "
                                f"upload ({changed.holder.get('why', 'see its output')}); no shard completes it",
                                f"once the data is final, run without --shard with --restart (which removes "
                                f"{changed.path.name}), or abort the upload")

    def _mark_changed(self, exc: SourceChanged) -> None:
        claim = try_claim(claim_path(self.req.meta_path, "changed"), self.req.shard, take_over=False,
                          why=exc.message)
        if claim is not None:
            log.warning("Recorded in %s: no shard will complete this upload.", claim.path)

    def _run(self, run: RunPlan) -> UploadResult:
        req, meta = self.req, run.meta
        if meta is not None:
            self._check_shards(meta)
        if run.set_aside is not None:
            self.set_aside(run.set_aside)
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
        if req.shard is not None and run.single_put and not req.shard.owns(1):
            log.info("Shard %s: %s is one part, which shard 0 sends; nothing to do here.", req.shard, req.where)
            return UploadResult(req.bucket, req.key, None, run.parts.total_size, 1, checksum=run.checksum,
                                parts_left=1)
        adopted = run.adopting
        if run.upload_id_asked is not None and adopted:
            run = self._adopt(run, run.upload_id_asked)
        if not run.probe:  # (a probe's outcome is said once the store answered it: Uploader._probe)
            log.info("Checksum %s: %s.", run.checksum, run.checksum_why)
        if req.bandwidth is not None:
            log.info("Bandwidth: at most %s/s for this command (--max-bandwidth).", human(req.bandwidth.rate))
        if run.parts.note:
            log.warning("%s.", run.parts.note)
        # by this run (or by a controller for it just now): the server holds none of its parts, so no ListParts
        created = run.meta is None or (adopted and req.upload_is_new)
        if run.meta is None:
            # --no-overwrite before a new upload. A resumed one is checked again at completion, and its own
            # object (an earlier run completed it, then was killed) must not count as someone else's.
            identical = refuse_overwrite(self.job, run.parts)
            if identical is None and req.skip_identical and not req.restart and not req.source.server_side \
                    and not req.properties.opaque_etags:  # (SSE-KMS, SSE-C: an ETag is no MD5 to compare)
                identical = Completer(self.job, run.checksum, run.parts).already_built({})
            if identical is not None:
                return self._identical(run, identical)
            run = self._create(run)
            self._release_claims()  # META is written: the waiting shards may read it
        elif not adopted:
            log.info("Continuing multipart upload from %s.", req.meta_path)
        assert run.meta is not None
        result = UploadResult(req.bucket, req.key, run.meta.upload_id, run.parts.total_size, len(run.parts.parts),
                              checksum=run.checksum)
        try:
            if run.meta.upload_id is None:
                self._put_single(run, run.meta, result)
            else:
                self._multipart(run, run.meta, run.meta.upload_id, result, created)
        except UploadError as exc:
            exc.partial = result  # what the run knew when it stopped, for the caller's summary
            raise
        return result

    def set_aside(self, meta: Meta) -> None:
        """--restart: keep the old parts log under another name and forget the old upload."""
        req = self.req
        changed = read_claim(claim_path(req.meta_path, "changed"))
        if changed is not None:
            release(changed)
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
            held = [] if req.upload_is_new else Completer(self.job, run.checksum, run.parts).list_parts(upload_id, info)
        except Exception as exc:
            if classify(exc) is Kind.GONE:
                raise UploadGone(f"there is no multipart upload {upload_id} for {req.where}",
                                 f"list the uploads in progress with: s3-multipart-upload list -b {req.bucket}") \
                    from exc
            raise self.job.fail(exc) from exc
        # Part 1's size is the upload's part size, unless it is the empty part auto's probe left (then part 2's, when
        # a part 3 shows that part 2 is not the last).
        sizes = {p["PartNumber"]: int(p["Size"]) for p in held}
        split = sizes.get(1) or (sizes.get(2) if 3 in sizes else None)
        plan = req.source.plan(split if split is not None else req.split_size, fixed=split is not None,
                               max_parts=req.max_parts)
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
        extra: dict[str, Any] = {"adopted": True, **req.meta_extra}
        if req.shard is not None:
            extra[SHARDS] = req.shard.count
        meta = new_meta(req.bucket, req.key, upload_id, plan.part_size, req.source.identity(), len(plan.parts),
                        checksum, extra)
        write_meta(req.meta_path, meta)
        # Lines of that upload id in the logs predate the lost META: they are read, and checked like the rest. An
        # upload that held no part when taken up has no such past: every line of it is a run's that proved its part
        # (the shards that take up one upload through a controller at the same moment).
        return dataclasses.replace(with_meta(run, meta, plan, read_logs(req, upload_id)),
                                   checksum=checksum, checksum_why=why, trust_log=not held)

    def _new_meta(self, run: RunPlan, upload_id: str | None, learnt: dict[str, Any] | None = None) -> Meta:
        req = self.req
        extra = {**req.meta_extra, **(learnt or {})}
        if req.properties.recorded():
            extra[PROPERTIES] = req.properties.recorded()
        if req.shard is not None:
            extra[SHARDS] = req.shard.count  # every task of the upload must count the same shards
        return new_meta(req.bucket, req.key, upload_id, run.parts.part_size, req.source.identity(),
                        len(run.parts.parts), run.checksum, extra)

    def _create(self, run: RunPlan) -> RunPlan:
        """A new multipart upload (META written before any part is sent), or, for one part, META for the end."""
        req = self.req
        if run.single_put:
            return _replace_meta(run, self._new_meta(run, None))  # a PutObject has nothing to resume
        upload_id, checksum, learnt = self.create_for(run.checksum, run.probe)
        if run.probe:
            run = dataclasses.replace(run, checksum=checksum, probe=False,
                                      checksum_why=learnt.pop(WHY, run.checksum_why))
        meta = self._new_meta(run, upload_id, learnt)
        write_meta(req.meta_path, meta)
        # Its META records the source: lines of this upload id (other shards' logs, read at completion) are of
        # these bytes, as for a run that found META, and need not be read again to be proven.
        return dataclasses.replace(_replace_meta(run, meta), trust_log=True)

    def create_upload(self, checksum: str) -> str:
        """CreateMultipartUpload with the object's properties and for ``checksum``: the new upload's id."""
        req = self.req
        log.info("Initiating multipart upload in %s.", req.meta_path)
        args: dict[str, Any] = {"Bucket": req.bucket, "Key": req.key, **req.properties.create_args()}
        if checksum != "MD5":
            args["ChecksumAlgorithm"] = checksum
        if checksum in checksums.FULL_OBJECT:
            args["ChecksumType"] = "FULL_OBJECT"
        try:
            return str(self.job.call("CreateMultipartUpload", lambda c: c.create_multipart_upload(**args)["UploadId"]))
        except Exception as exc:
            raise _kms_refusal(self.req, self.job.fail(exc)) from exc

    def create_for(self, checksum: str, probe: bool) -> tuple[str, str, dict[str, Any]]:
        """A new multipart upload for ``checksum``; with ``probe`` (auto, a store not known to verify CRC64NVME),
        created for CRC64NVME and the store asked (``probe``). Returns its id, the checksum it goes by, and what META
        records of the store (``VERIFIES``; the why under ``WHY``, popped by the caller).

        - verified (a wrong CRC64NVME refused): CRC64NVME, as created;
        - not verified (a wrong value accepted: the store ignores checksums): MD5 on that upload, which the store
          holds to no algorithm;
        - not known (no answer, another refusal): the upload is aborted and a plain one created for MD5, so that an
          upload declared for CRC64NVME is never filled with parts that carry none;
        - the checksum header refused on the create itself (InvalidArgument...: B2 did): a plain upload, MD5."""
        if not probe:
            return self.create_upload(checksum), checksum, {}
        try:
            upload_id = self.create_upload(checksums.PROBED)
        except UploadError as exc:
            cause = exc.__cause__
            if cause is None or error_code(cause) not in CHECKSUM_HEADER_REFUSED:
                raise
            why = f"auto: the store refused an upload declared for CRC64NVME ({exc.message}): MD5 by ETag"
            log.info("Checksum MD5: %s.", why)
            return self.create_upload("MD5"), "MD5", {checksums.VERIFIES: False, WHY: why}
        verifies, why, failed = self.probe(upload_id)
        if verifies is not None:
            return upload_id, checksums.PROBED if verifies else "MD5", {checksums.VERIFIES: verifies, WHY: why}
        self._abort_quietly(upload_id, "the checksum probe had no answer")
        if failed is not None:  # refused (access denied, ...): the parts would be too
            raise failed
        return self.create_upload("MD5"), "MD5", {WHY: why}

    def _abort_quietly(self, upload_id: str, why: str) -> None:
        try:
            self.job.call("AbortMultipartUpload", lambda c: c.abort_multipart_upload(
                Bucket=self.req.bucket, Key=self.req.key, UploadId=upload_id))
        except Exception as exc:
            log.warning("Could not abort the multipart upload %s (%s; %s): it holds no part of the data; "
                        "`s3-multipart-upload list -b %s` shows it.", upload_id, why, describe(exc), self.req.bucket)

    def probe(self, upload_id: str) -> tuple[bool | None, str, UploadError | None]:
        """--checksum auto on a store not known to verify CRC64NVME, its upload just created for CRC64NVME (with a
        full-object checksum): ask the store with one empty UploadPart of part 1 carrying a wrong CRC64NVME. A store
        that verifies refuses it as wrong (BadDigest) and stores nothing; one that does not stores an empty part 1,
        which the real part 1 replaces (a rerun after a kill sends it too: an empty part is not the file's). The
        answer goes into META before any part is sent, so that every later run (and shard) uses the same checksum
        and never asks again; it is not retried as a damaged body would be. META is written after it, as after the
        create: a run killed in between leaves an upload with no part of the file, which ``list`` and ``clean``
        find (as one killed during the create would).

        A probe that fails otherwise (no answer after the retries, access denied) teaches nothing: the upload goes
        by MD5, which every store proves, and nothing is recorded; a refusal is returned to be raised once META
        holds the upload, so that the rerun continues it."""
        req, wrong = self.req, checksums.probe_value()  # (whether it verifies, or None if not known; why; failure)

        def ask(client: S3Client) -> tuple[bool, str]:
            try:
                client.upload_part(Bucket=req.bucket, Key=req.key, UploadId=upload_id, PartNumber=1, Body=b"",
                                   ChecksumCRC64NVME=wrong)
            except Exception as exc:
                code = error_code(exc)
                if code in CHECKSUM_MISMATCH_CODES:
                    return True, describe(exc)
                if code in CHECKSUM_HEADER_REFUSED:  # the header itself is refused: not verified, not taken
                    return False, describe(exc)
                raise
            return False, "accepted"

        try:
            verifies, answer = self.job.call("UploadPart (checksum probe)", ask)
        except Exception as exc:
            error = self.job.fail(exc)
            why = (f"auto: the store gave no answer to whether it verifies CRC64NVME (the probe: {error.message}): "
                   "MD5 by ETag")
            log.warning("Checksum MD5: %s.", why)
            # Only a refusal of this identity stops the run (the parts would be refused too); any other answer
            # (a 4xx of the store's own, no answer) just leaves the question open.
            refused = error if error_code(exc) in ACCESS_REFUSALS or isinstance(error, CredentialsExpired) else None
            return None, why, refused
        checksum = checksums.PROBED if verifies else "MD5"
        why = checksums.probed_why(verifies)
        log.info("Checksum %s: %s (probe: %s).", checksum, why, answer)
        return verifies, why, None

    def _identical(self, run: RunPlan, etag: str) -> UploadResult:
        """The object at the key is already this data (size and MD5, or the parts' MD5s): record it as done."""
        req = self.req
        log.info("%s already holds exactly this data (size and MD5); recording it as done.", req.where)
        if run.probe:  # nothing was asked of the store: the object was proven by its MD5
            run = dataclasses.replace(run, checksum="MD5", probe=False)
        result = UploadResult(req.bucket, req.key, None, run.parts.total_size, len(run.parts.parts),
                              checksum=run.checksum, etag=etag, already_complete=True)
        self.mark_completed(self._new_meta(run, None), result)
        return result

    # -- one PutObject for an object of one part ---------------------------------------------------

    def put_small(self) -> UploadResult:
        """A one-part file of a batch in one PutObject, with no state of its own (no META, no lock): the batch's
        journal records it once done. The same request, proof and checks as a one-part upload's."""
        req = self.req
        started = time.monotonic()
        plan = req.source.plan(req.split_size, fixed=False)
        if len(plan.parts) != 1:
            raise ValueError(f"{req.where} is {len(plan.parts)} parts, not one")
        result = UploadResult(req.bucket, req.key, None, plan.total_size, 1, checksum=req.checksum)
        self.put_object(plan, req.checksum, result)
        result.seconds = time.monotonic() - started
        return result

    def _put_single(self, run: RunPlan, meta: Meta, result: UploadResult) -> None:
        self.put_object(run.parts, run.checksum, result)
        self.mark_completed(meta, result)

    def put_object(self, plan: Plan, checksum: str, result: UploadResult, report_start: bool = True) -> None:
        job, req = self.job, self.req
        part = plan.parts[0]
        if report_start:  # (a stream's run said it started before it knew it was one part)
            job.progress.started(plan.total_size, 1, 0, 0)
        began = time.monotonic()
        # Content-MD5 here, not the ETag comparison: the first request already makes the object, and damaged
        # bytes must never be one, not even until a second request replaces them.
        sender = Sender(job, checksum, content_md5=True, etags_not_md5=req.properties.opaque_etags)
        conditional: dict[str, Any] = {"IfNoneMatch": "*"} if req.no_overwrite else {}
        properties = req.properties.create_args()
        if checksum != "MD5" and ({"ObjectLockMode", "ObjectLockLegalHoldStatus"} & set(properties)):
            # S3 wants Content-MD5 or x-amz-sdk-checksum-algorithm on a PutObject under Object Lock: say which
            # checksum the x-amz-checksum-* header holds (MD5 goes as Content-MD5 here anyway).
            properties["ChecksumAlgorithm"] = checksum

        def put(client: S3Client) -> Completed:
            copy = req.source.server_side_copy(part)
            if copy is not None:
                copy.pop("CopySourceRange", None)  # CopyObject takes the whole object
                # The properties were taken from the source (copy's default) or given: they replace the source's.
                directives: dict[str, Any] = {"MetadataDirective": "REPLACE", "TaggingDirective": "REPLACE"}
                response = client.copy_object(Bucket=req.bucket, Key=req.key, **copy, **conditional, **directives,
                                              **properties)
                return Completed(str(response["CopyObjectResult"]["ETag"]).strip('"'))
            answer, digest = sender.send_verified(part, lambda body, args: client.put_object(
                Bucket=req.bucket, Key=req.key, Body=body, **args, **conditional, **properties))  # type: ignore
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
            raise overwrite_refused(job, exc) or _kms_refusal(req, job.fail(exc, 0, 1)) from exc
        job.progress.part_done(1, completed.etag or "", part.length, time.monotonic() - began)
        result.parts_sent, result.bytes_sent = 1, part.length
        try:
            if not isinstance(req.source, S3ObjectSource):  # one conditional GET or CopyObject cannot mix versions
                req.source.recheck()  # read and sent while the file was changing? (the object is then removed)
        except StateConflict as exc:
            raise delete_changed_object(job, exc) from exc
        completer = Completer(job, checksum, plan)
        result.etag = completer.verify(completed, [completed.etag or ""], sender.etags_not_md5)
        result.full_checksum = completed.full_checksum

    # -- multipart ---------------------------------------------------------------------------------

    def _multipart(self, run: RunPlan, meta: Meta, upload_id: str, result: UploadResult, created: bool) -> None:
        job, req, plan, shard = self.job, self.req, run.parts, self.req.shard
        completer = Completer(job, run.checksum, plan)
        # An upload this run created holds no part yet: nothing to list (stores without ListParts upload too).
        listed = {} if created else self._listed(completer, upload_id, run, meta, result)
        if listed is None:
            return
        sender = Sender(job, run.checksum, content_md5=meta.extra.get(CONTENT_MD5) is True,
                        etags_not_md5=meta.extra.get(ETAGS_NOT_MD5) is True or req.properties.opaque_etags)
        with PartsLog(req.log_path) as parts_log:
            state = self._reconcile(run, upload_id, listed, parts_log)
            result.parts_logged, result.parts_adopted = state.logged, state.adopted
            if meta.source is None and shard is None:
                # historical META: its parts are now checked; record the file from here on
                meta.source = req.source.identity()
                meta.part_count = len(plan.parts)
                meta.checksum_algorithm = run.checksum
                write_meta(req.meta_path, meta)
            if shard is not None:
                log.info("Shard %s: %d of this shard's %d parts to send (%s).", shard, len(state.to_send),
                         sum(1 for p in plan.parts if shard.owns(p.number)), shard.origin)
            log.info("Will upload %d chunks.", len(state.to_send))
            job.progress.started(plan.total_size, len(plan.parts),
                                 sum(plan.parts[n - 1].length for n in state.done), len(state.done))
            try:
                sent = sender.send_all(state.to_send, upload_id, parts_log, len(state.done), len(plan.parts))
            finally:
                result.parts_sent, result.bytes_sent = sender.sent.parts, sender.sent.bytes
                if shard is None:  # shards share META: only the one that creates or completes writes it
                    self.remember_store(meta, sender)
            result.parts_sent, result.bytes_sent = sent.parts, sent.bytes
            done = state.done | sent.records
            if shard is not None:
                shard_done = self._shard_done(run, meta, upload_id, completer, sender, parts_log, result)
                if shard_done is None:
                    return
                done = shard_done
        try:
            completed = completer.complete(upload_id, done)
            result.etag = completer.verify(completed, [done[p.number].etag for p in plan.parts],
                                           sender.etags_not_md5)
            result.full_checksum = completed.full_checksum
            self.mark_completed(meta, result)
        finally:
            self._release_claims()

    def _listed(self, completer: Completer, upload_id: str, run: RunPlan, meta: Meta,
                result: UploadResult) -> dict[int, ListedPart] | None:
        """The server's parts of the upload; None when the upload is gone because it was completed (by an earlier
        run killed before it said so, or by another shard): then ``result`` says so and META records it."""
        try:
            return {p["PartNumber"]: ListedPart(p["PartNumber"], p["ETag"].strip('"'), p["Size"])
                    for p in completer.list_parts(upload_id)}
        except Exception as exc:
            if classify(exc) is Kind.GONE:
                if self.req.shard is not None:
                    fresh = read_meta(self.req.meta_path)
                    if fresh is not None and fresh.status == COMPLETED:  # another shard completed it
                        result.already_complete, result.etag = True, fresh.extra.get("eTag")
                        return None
                # Under --shard, the other shards' logs as they are now: one of them may have sent the last parts.
                logged = {} if not run.trust_log else \
                    read_logs(self.req, upload_id) if self.req.shard is not None else run.logged
                etag = completer.already_built(logged)
                if etag is not None:
                    result.etag, result.full_checksum = etag, completer.full_checksum(logged)
                    result.already_complete = self.req.shard is not None
                    self.mark_completed(meta, result)
                    return None
            raise self.job.fail(exc) from exc

    def _shard_done(self, run: RunPlan, meta: Meta, upload_id: str, completer: Completer, sender: Sender,
                    parts_log: PartsLog, result: UploadResult) -> dict[int, PartRecord] | None:
        """After a shard sent its parts: the server's part list says whether every part is held. If so, and this
        shard is the one to claim the completion, the records of every part (from every log; parts no log has
        yet are checked against the local bytes as on a resume); else None, and ``result`` says what is left."""
        req, plan, shard = self.req, run.parts, self.req.shard
        assert shard is not None
        listed = self._listed(completer, upload_id, run, meta, result)
        if listed is None:
            return None
        missing = [p.number for p in plan.parts
                   if p.number not in listed or listed[p.number].size != p.length]
        if missing:
            result.parts_left = len(missing)
            log.info("Shard %s: done; %d parts left to other shards (%s). The last shard to finish completes the "
                     "upload; a run without --shard finishes whatever is left.", shard, len(missing),
                     ranges(missing))
            return None
        claim = try_claim(claim_path(req.meta_path, "complete"), shard)
        if claim is None:
            held = read_claim(claim_path(req.meta_path, "complete"))
            log.info("Shard %s: done; every part is on the server and %s is completing the upload.", shard,
                     held.describe() if held else "another shard")
            result.completed_by = held.describe() if held else "another shard"
            return None
        self._claims.append(claim)
        fresh = read_meta(req.meta_path)
        if fresh is not None:
            self._check_shards(fresh)
            if fresh.status == COMPLETED:
                result.already_complete, result.etag = True, fresh.extra.get("eTag")
                self._release_claims()
                return None
        log.info("Shard %s: every part is on the server; completing the upload.", shard)
        everyone = dataclasses.replace(run, logged=read_logs(req, upload_id))
        state = self._reconcile(everyone, upload_id, listed, parts_log, owned_only=False)
        if state.to_send:  # another shard's part the server holds with other bytes: the object must not have it
            log.warning("Shard %s: sending %d parts of other shards again (%s).", shard, len(state.to_send),
                        ranges([p.number for p in state.to_send]))
            again = sender.send_all(state.to_send, upload_id, parts_log, len(state.done), len(plan.parts))
            result.parts_sent += again.parts
            result.bytes_sent += again.bytes
            state.done |= again.records
        return state.done

    def remember_store(self, meta: Meta, sender: Sender) -> None:
        """What the parts taught about the store, kept in META so that a rerun does not learn it again by
        sending its first parts twice."""
        learnt = {CONTENT_MD5: sender.content_md5 and not self.req.content_md5, ETAGS_NOT_MD5: sender.etags_not_md5}
        if any(value and meta.extra.get(key) is not True for key, value in learnt.items()):
            meta.extra.update({key: True for key, value in learnt.items() if value})
            write_meta(self.req.meta_path, meta)

    def _reconcile(self, run: RunPlan, upload_id: str, listed: dict[int, ListedPart],
                   parts_log: PartsLog, owned_only: bool = True) -> Reconciled:
        """The log (a cache) against the server's part list (the truth); parts the server holds that the log lacks
        are adopted, and logged, when they prove to be the source's bytes. A shard sends and checks only its own
        parts (``owned_only``): the others are other shards' business until every part is held."""
        plan, shard = run.parts, self.req.shard
        decision = reconcile(plan.parts, run.logged, listed, trust_log=run.trust_log)
        if shard is not None and owned_only:
            decision.send = [p for p in decision.send if shard.owns(p.number)]
            decision.verify = [(p, held) for p, held in decision.verify if shard.owns(p.number)]
            decision.logged_not_listed = [n for n in decision.logged_not_listed if shard.owns(n)]
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

    def mark_completed(self, meta: Meta, result: UploadResult) -> None:
        full = (result.checksum or "", result.full_checksum) if result.full_checksum else None
        mark_completed(self.req.meta_path, meta, result.etag, full)
        log.info("Completed %s: %s in %d parts, ETag %s.", self.req.where, human(result.size), result.parts_total,
                 result.etag)


def _replace_meta(run: RunPlan, meta: Meta) -> RunPlan:
    return dataclasses.replace(run, meta=meta)
