"""Uploads from a stream (stdin, a FIFO, ``/dev/fd/N``, a character device): read once, in order, resumable by content.

A stream cannot be read twice, so each part is held from its read until the store has it (a retry needs its
bytes): in memory, or in a spool file when parts are large. ``max_memory`` bounds the parts held in memory, so fewer
go in flight as they grow (the parts and their buffers: ``held.StreamSource``). Its length is known only at its
end, so the part sizes follow a fixed schedule (``plan.Schedule``, recorded in META): at the defaults, any stream up
to 97 % of S3's largest object fits into 10,000 parts.

Resume by content: a rerun reads the stream again from its start and hashes each part as it holds it; a part whose
bytes match the part the log records and the store holds is not sent again, one that differs is (S3 replaces a part
sent under the same number). The upload completes only once this run reached the stream's end, with exactly this
run's parts, so the object is always one whole stream: the last one.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from typing import Any

from s3_multipart_upload import checksums
from s3_multipart_upload.completion import Completer, refuse_overwrite
from s3_multipart_upload.errors import (
    BadInput,
    Interrupted,
    SourceChanged,
    StateConflict,
    UploadError,
)
from s3_multipart_upload.held import StreamSource
from s3_multipart_upload.job import Stopping, UploadRequest, UploadResult
from s3_multipart_upload.options import MAX_THREADS
from s3_multipart_upload.plan import MiB, Part, Plan, Schedule, human, schedule_for
from s3_multipart_upload.progress import Reporter
from s3_multipart_upload.reconcile import ListedPart
from s3_multipart_upload.run_plan import check_meta, check_paths, read_logs
from s3_multipart_upload.s3 import (
    LACKS_API,
    ClientFactory,
    Kind,
    RetryPolicy,
    classify,
    describe,
    error_code,
    list_all_parts,
)
from s3_multipart_upload.sender import Sender
from s3_multipart_upload.state import (
    ABORTED,
    COMPLETED,
    Meta,
    PartRecord,
    PartsLog,
    check_writable_dir,
    meta_lock,
    new_meta,
    read_meta,
    write_meta,
)
from s3_multipart_upload.stream import digest_part
from s3_multipart_upload.uploader import CONTENT_MD5, ETAGS_NOT_MD5, PROPERTIES, WHY, Uploader

log = logging.getLogger(__name__)
STREAM_ID = "stdin"  # a stream upload's source in its state folder's identity: one per endpoint, bucket and key
SCHEDULE = "partSchedule"  # META: the part sizes, fixed at the upload's start
DEFAULT_MAX_MEMORY = 256 * MiB
WAIT = 0.25  # seconds between looks at the parts in flight
SPOOLED_IN_FLIGHT = 4  # spooled parts (the largest: up to 5 GiB each) in flight at most, whatever -t
REPLACING = "replacing"  # a parts log line's ETag: the part under this number is being replaced (see _part)


class StreamUploader:
    """One run of a stream's upload (see the module docstring)."""

    def __init__(self, request: UploadRequest, clients: ClientFactory, progress: Reporter | None = None,
                 retry: RetryPolicy | None = None, expected_size: int | None = None,
                 max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        if not isinstance(request.source, StreamSource):
            raise TypeError("a StreamUploader uploads a StreamSource")
        self.req, self.source = request, request.source
        self.engine = Uploader(request, clients, progress, retry)  # creates, puts and completes as for files
        self.job = self.engine.job
        self.expected_size, self.max_memory = expected_size, max_memory
        self.meta: Meta | None = None  # the upload's, once there is one (created, or resumed)
        self.checksum = request.checksum  # the upload's: what auto's probe of the store decides, once it is created
        self.probe = False  # a new upload under auto to a store not known to verify CRC64NVME: ask it (Uploader.probe)
        self._in_flight: dict[cf.Future[tuple[PartRecord, str]], Part] = {}
        self._records: dict[int, PartRecord] = {}
        self._counts = {"sent": 0, "matched": 0, "adopted": 0, "bytesSent": 0}
        self._failure: BaseException | None = None

    # -- the plan ----------------------------------------------------------------------------------------------

    def _plan(self, warn: bool) -> tuple[Meta | None, Schedule, str, str, str]:
        """The upload in progress (or None), the part schedule and why, the checksum and why. A stream is read from
        its start on every run, so an upload that is over (completed, aborted) just makes way for a new one."""
        req = self.req
        meta = read_meta(req.meta_path)
        if meta is not None and (req.restart or meta.status in (COMPLETED, ABORTED) or meta.upload_id is None):
            check_meta(req, meta, check_source=False)  # this key's and these options' (not its properties)
            if warn:
                if meta.status == COMPLETED or meta.upload_id is None:
                    log.info("The last upload of a stream to %s completed (meta file %s); this run uploads the "
                             "stream again.", req.where, req.meta_path)
                elif meta.status == ABORTED:
                    log.info("The last upload of a stream to %s was aborted; this run uploads the stream anew.",
                             req.where)
                if req.restart:
                    self.engine.set_aside(meta)
                elif req.parts_path.exists():  # the log of an upload that is over: kept once, as PARTS.last
                    req.parts_path.replace(req.parts_path.with_name(req.parts_path.name + ".last"))
            meta = None
        if meta is not None:
            check_meta(req, meta)
        if meta is None:
            schedule, why = schedule_for(req.split_size, self.expected_size, req.max_parts, req.equal_parts)
            self.probe = req.checksum_probe
            return None, schedule, why, checksums.PROBED if self.probe else req.checksum, req.checksum_why
        recorded = Schedule.from_json(meta.extra.get(SCHEDULE))
        if recorded is None:
            raise StateConflict(f"meta file {req.meta_path} records no part schedule for its stream",
                                "rerun with --restart to upload the stream anew")
        if warn and (req.split_size or self.expected_size):
            log.warning("This upload was started with parts of %s; it keeps its schedule (-s and --expected-size "
                        "apply to a new upload).", human(recorded.first))
        return meta, recorded, "fixed by the upload in progress (meta file)", \
            meta.checksum_algorithm or "MD5", "kept from the upload in progress (meta file)"

    def spooled(self, size: int) -> bool:
        """Parts this large go to a spool file: in memory, fewer than two would fit in ``max_memory``."""
        return 2 * size > self.max_memory

    def dry_run(self) -> dict[str, Any]:
        """What a run would do, from META and the options alone: opens and reads nothing of the stream."""
        req = self.req
        check_paths(req)
        meta, schedule, why, checksum, checksum_why = self._plan(warn=False)
        tiers = schedule.tiers()
        logged = read_logs(req, meta.upload_id) if meta is not None and meta.upload_id else {}
        spool_from = next((size for _, _, size, _ in tiers if self.spooled(size)), None)
        # Unknown counts are None: the parts are as many as the stream makes (one PutObject if it is one part).
        requests: dict[str, int | None] = {
            # one to resume, one before completing to repeat the parts' additional checksums (if a probe says so)
            "ListParts": (meta is not None) + (checksum != "MD5" and not self.probe),
            "CreateMultipartUpload": 0 if meta else 1,
            "UploadPart": None, "CompleteMultipartUpload": 1}
        return {
            "bucket": req.bucket, "key": req.key, "stream": True, "source": self.source.name,
            "bytes": self.expected_size, "partSize": schedule.first, "partSizeWhy": why,
            "schedule": [{"firstPart": first, "lastPart": last, "partSize": size, "upTo": end}
                         for first, last, size, end in tiers],
            "capacity": schedule.capacity(), "maxParts": schedule.max_parts,
            "status": meta.status if meta else "new", "uploadId": meta.upload_id if meta else None,
            "partsLogged": len(logged), "threads": req.threads, "maxMemory": self.max_memory,
            "spoolFrom": spool_from, "spoolDir": str(self.source.spool_dir),
            "spoolBound": None if spool_from is None else
            (min(req.threads, SPOOLED_IN_FLIGHT) + 1) * max(size for _, _, size, _ in tiers),
            "checksum": f"{checksums.PROBED} or MD5" if self.probe else checksum, "checksumWhy": checksum_why,
            "requests": requests,
            "objectProperties": req.properties.shown(),
            "maxBandwidth": req.bandwidth.rate if req.bandwidth is not None else None,
        }

    # -- the run -----------------------------------------------------------------------------------------------

    def run(self) -> UploadResult:
        req = self.req
        if req.upload_id is not None:
            raise BadInput("--upload-id cannot go with a stream: an upload is resumed from its meta file, by "
                           "content", "leave out --upload-id")
        started = time.monotonic()
        try:
            check_paths(req)
            check_writable_dir(req.meta_path, "meta file")
            check_writable_dir(req.parts_path, "parts file")
            with meta_lock(req.meta_path):
                result = self._run()
        finally:
            self.source.close()
        result.seconds = time.monotonic() - started
        return result

    def _run(self) -> UploadResult:
        req, job = self.req, self.job
        meta, schedule, why, checksum, checksum_why = self._plan(warn=True)
        self.checksum = checksum
        if any(self.spooled(size) for _, _, size, _ in schedule.tiers()):
            kind = self.source.check_spool()
            if kind == "tmpfs":
                log.warning("The spool folder %s is in memory (tmpfs): the parts of %s and more spooled there take "
                            "RAM beyond --max-memory. Give --spool-dir a folder on a disk.", self.source.spool_dir,
                            human(next(size for _, _, size, _ in schedule.tiers() if self.spooled(size))))
        self.source.open()  # last: opening a named pipe waits for its writer
        log.info("Reading %s as a stream: parts of %s (%s); %s.", "stdin" if self.source.name == "-" else
                 self.source.name, human(schedule.first), why, f"up to {human(schedule.capacity())} in "
                 f"{schedule.max_parts:,} parts")
        log.info("Checksum %s: %s.", f"{checksums.PROBED} or MD5" if self.probe else checksum, checksum_why)
        if req.bandwidth is not None:
            log.info("Bandwidth: at most %s/s for this command (--max-bandwidth).", human(req.bandwidth.rate))
        listed: dict[int, ListedPart] | None = {}
        logged: dict[int, PartRecord] = {}
        if meta is not None:
            assert meta.upload_id is not None
            logged = read_logs(req, meta.upload_id)
            try:
                listed = self._listed(meta.upload_id)
            except _Gone:
                meta, logged, listed = None, {}, {}
        if meta is not None:
            if listed is not None and not listed and not logged:
                log.info("Continuing multipart upload %s (no part held yet).", meta.upload_id)
            else:
                log.info("Continuing multipart upload %s: each part read is compared with the %d parts logged; "
                         "only parts that differ are sent.", meta.upload_id, len(logged))
        self.meta = meta
        sender = Sender(job, checksum, content_md5=meta is not None and meta.extra.get(CONTENT_MD5) is True,
                        etags_not_md5=(meta is not None and meta.extra.get(ETAGS_NOT_MD5) is True)
                        or req.properties.opaque_etags)
        job.progress.started(self.expected_size, None, 0, 0)
        pool = cf.ThreadPoolExecutor(max_workers=req.threads, thread_name_prefix="part")
        interrupted = False
        single: UploadResult | None = None
        try:
            with PartsLog(req.log_path) as parts_log:
                try:
                    single = self._read_and_send(schedule, (listed, logged), sender, parts_log, pool)
                except KeyboardInterrupt:
                    interrupted = True
                    job.stop.set()
                    log.warning("Stopping: waiting for the %d parts in flight to finish (press Ctrl-C again to "
                                "stop at once).", len(self._in_flight))
                except BaseException:  # the stream could not be read, the upload not created: the parts in flight
                    job.stop.set()  # end (logged if sent) before the error is raised, and no thread outlives the call
                    self._drain()
                    raise
                self._drain()
        finally:
            pool.shutdown(wait=not self._in_flight, cancel_futures=True)
            if self.meta is not None and single is None:  # (a PutObject's META is the completed one it wrote)
                self.engine.remember_store(self.meta, sender)
        done = len(self._records)
        if self._failure is not None:
            if isinstance(self._failure, UploadError):
                self._failure.partial = self._partial()
                raise self._failure
            raise job.fail(self._failure, done) from self._failure
        if interrupted:
            raise Interrupted(f"interrupted; {done} parts are done and logged (a rerun reads the stream again and "
                              "sends only the parts that differ)")
        if single is not None:
            return single
        return self._complete(schedule, sender)

    def _listed(self, upload_id: str) -> dict[int, ListedPart] | None:
        """The parts the store holds; None from a store without ListParts (the log is then trusted). An upload that
        is gone (aborted, or completed by a run stopped before it could say so) makes way for a new one: {}."""
        req = self.req
        try:
            held = self.job.call("ListParts", lambda c: list_all_parts(c, req.bucket, req.key, upload_id))
        except Exception as exc:
            if error_code(exc) in LACKS_API:
                log.info("The store does not list parts (%s): parts are compared with the parts log only.",
                         describe(exc))
                return None
            if classify(exc) is Kind.GONE:
                log.warning("The multipart upload %s of %s is gone (aborted, or completed by a run stopped before "
                            "it could record it): this run uploads the stream anew.", upload_id, req.where)
                assert self.meta is None
                raise _Gone() from exc
            raise self.job.fail(exc) from exc
        return {p["PartNumber"]: ListedPart(p["PartNumber"], str(p["ETag"]).strip('"'), int(p["Size"]))
                for p in held}

    def _read_and_send(self, schedule: Schedule,
                       known: tuple[dict[int, ListedPart] | None, dict[int, PartRecord]], sender: Sender,
                       parts_log: PartsLog, pool: cf.ThreadPoolExecutor) -> UploadResult | None:
        """Read the stream part by part, each sent (or found held) from the pool; a one-part stream goes in one
        PutObject, whose result this returns."""
        source = self.source
        for number in range(1, schedule.max_parts + 2):
            self._collect(0)  # a part that failed stops the reading now, not once the pool is full
            if self._failure is not None or self.job.stop.is_set():
                return None
            if number > schedule.max_parts:
                if source.more():
                    self._failure = BadInput(
                        f"the stream is longer than the {human(schedule.capacity())} that {schedule.max_parts:,} "
                        f"parts of this upload's schedule hold ({human(source.total_size)} read): nothing was "
                        "completed", "give --expected-size (about the stream's length) or a larger -s, with "
                        "--restart; the parts sent stay on the store until `s3-multipart-upload abort`")
                return None
            size = schedule.size(number)
            spool = self.spooled(size)
            if spool and not self.spooled(schedule.size(number - 1)):
                log.info("Parts of %s and more go to spool files in %s (half of --max-memory %s is %s).",
                         human(size), source.spool_dir, human(self.max_memory), human(self.max_memory // 2))
            self._wait_for_room(size, spool)
            if self._failure is not None:
                return None
            part = source.read_part(number, size, spool)
            if number > 1 and part.length == 0:
                source.release(number)
                return None
            if number == 1 and source.ended:
                return self._put_one(part, schedule)
            if self.meta is None:
                self.meta = self._create(schedule)
                sender.checksum = self.checksum  # (the probe's answer)
            assert self.meta.upload_id is not None
            future = pool.submit(self._part, part, self.meta.upload_id, known, sender, parts_log, self.checksum)
            self._in_flight[future] = part
            if source.ended:
                return None
        return None

    def _wait_for_room(self, size: int, spool: bool) -> None:
        """Until one more part may be read: fewer parts in flight than allowed, and room in memory for it."""
        for _ in range(10**7):  # bounded by the parts in flight, whose requests time out
            allowed = min(self.req.threads, self.job.throttle.allowed(), SPOOLED_IN_FLIGHT if spool else MAX_THREADS)
            fits = spool or self.source.memory + size <= self.max_memory
            if self._failure is not None or not self._in_flight or (len(self._in_flight) < allowed and fits):
                return
            self._collect(WAIT)

    def _collect(self, timeout: float) -> None:
        if not self._in_flight:
            return
        finished, _ = cf.wait(self._in_flight, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        for future in finished:
            part = self._in_flight.pop(future)
            self.source.release(part.number)
            try:
                record, how = future.result()
            except Stopping:
                continue
            except Exception as exc:
                if self._failure is None:
                    self._failure = exc
                    self.job.stop.set()
                    if self._in_flight:
                        log.warning("Part %d failed (%s); letting the %d parts in flight finish.", part.number,
                                    describe(exc), len(self._in_flight))
                continue
            self._records[record.number] = record
            self._counts[how] += 1
            if how == "sent":
                self._counts["bytesSent"] += part.length

    def _drain(self) -> None:
        for _ in range(10**7):
            if not self._in_flight:
                return
            try:
                self._collect(WAIT)
            except KeyboardInterrupt:
                raise Interrupted(f"stopped at once; {len(self._records)} parts are done and logged") from None

    def _create(self, schedule: Schedule) -> Meta:
        """The new multipart upload and its META, written before any part is sent; under auto, once the store said
        whether it verifies CRC64NVME (the answer in META: a rerun never asks again)."""
        req = self.req
        if req.no_overwrite:
            refuse_overwrite(self.job)
        upload_id, self.checksum, learnt = self.engine.create_for(self.checksum, self.probe)
        learnt.pop(WHY, None)
        self.probe = False
        meta = new_meta(req.bucket, req.key, upload_id, schedule.first, self.source.identity(), 0, self.checksum,
                        {**self._extra(schedule), **learnt})
        meta.part_count = None  # known at the stream's end
        write_meta(req.meta_path, meta)
        return meta

    def _extra(self, schedule: Schedule) -> dict[str, Any]:
        req = self.req
        extra: dict[str, Any] = {**req.meta_extra, SCHEDULE: schedule.to_json()}
        if req.properties.recorded():
            extra[PROPERTIES] = req.properties.recorded()
        return extra

    def _part(self, part: Part, upload_id: str, known: tuple[dict[int, ListedPart] | None, dict[int, PartRecord]],
              sender: Sender, parts_log: PartsLog, checksum: str) -> tuple[PartRecord, str]:
        """Send a part, unless the store already holds these very bytes under its number."""
        held, how = self._held_already(part, upload_id, known, checksum, sender.etags_not_md5)
        if held is None:
            listed, logged = known
            if listed is None and part.number in logged:
                # No listing to tell later runs which bytes the store holds under this number: the log line of the
                # bytes being replaced is struck out before they are, so that no run matches them again.
                parts_log.append(PartRecord(REPLACING, part.number, upload_id, part.length))
            return sender.send_part(part, upload_id, parts_log), "sent"
        if how == "adopted":
            parts_log.append(held)
        progress = self.job.progress
        getattr(progress, "part_held", progress.part_done)(part.number, held.etag, part.length, 0.0)
        return held, how

    def _held_already(self, part: Part, upload_id: str,
                      known: tuple[dict[int, ListedPart] | None, dict[int, PartRecord]], checksum: str,
                      etags_not_md5: bool) -> tuple[PartRecord | None, str]:
        """The record of the part the store holds under this number if it is these bytes: ("matched") logged and
        held with the same checksum or MD5, or ("adopted") held but not logged (a run killed between the store's
        answer and the log) with the MD5 ETag of these bytes."""
        listed, logged = known
        held = None if listed is None else listed.get(part.number)
        if listed is not None and (held is None or held.size != part.length):
            return None, "sent"
        record = logged.get(part.number)
        md5_comparable = not etags_not_md5
        if record is not None and record.size == part.length and (held is None or held.etag == record.etag):
            if checksum == "MD5":
                if md5_comparable and checksums.is_md5_etag(record.etag) and \
                        digest_part(self.source, part, "MD5").md5_hex == record.etag:
                    return record, "matched"
            elif record.checksum and digest_part(self.source, part, checksum).value == record.checksum:
                return record, "matched"
            return None, "sent"
        if held is not None and md5_comparable and checksums.is_md5_etag(held.etag) and \
                digest_part(self.source, part, "MD5").md5_hex == held.etag:
            value = None if checksum == "MD5" else digest_part(self.source, part, checksum).value
            return PartRecord(held.etag, part.number, upload_id, part.length, value), "adopted"
        return None, "sent"

    def _put_one(self, part: Part, schedule: Schedule) -> UploadResult:
        """A stream of one part: one PutObject, as for a small file (an upload in progress is left, and said)."""
        req, meta = self.req, self.meta
        if self.probe:  # (a PutObject goes with Content-MD5, which every store verifies: nothing to ask)
            self.checksum, self.probe = "MD5", False
            log.info("Checksum MD5: %s.", checksums.ONE_PART_WHY)
        checksum = self.checksum
        if meta is not None:
            log.warning("This stream is one part: it goes in one PutObject. The multipart upload %s of an earlier "
                        "run still holds its parts on the store: `s3-multipart-upload abort --upload-id %s -b %s "
                        "-k %s` removes them.", meta.upload_id, meta.upload_id, req.bucket, req.key)
        plan = Plan(schedule.first, (part,), part.length)
        result = UploadResult(req.bucket, req.key, None, part.length, 1, checksum=checksum)
        self.engine.put_object(plan, checksum, result, report_start=False)
        self._counts["sent"], self._counts["bytesSent"] = 1, part.length
        identity = {**self.source.identity(), "size": part.length}
        self.engine.mark_completed(new_meta(req.bucket, req.key, None, schedule.first, identity, 1, checksum,
                                            self._extra(schedule)), result)
        result.parts_sent, result.bytes_sent = 1, part.length
        return result

    def _complete(self, schedule: Schedule, sender: Sender) -> UploadResult:
        """CompleteMultipartUpload of exactly this run's parts (the store drops any others the upload holds)."""
        meta, checksum = self.meta, self.checksum
        assert meta is not None and meta.upload_id is not None
        numbers = sorted(self._records)
        if numbers != list(range(1, len(numbers) + 1)):
            raise SourceChanged(f"parts {numbers} of the stream are not every part from 1", "rerun")
        offset, parts = 0, []
        for number in numbers:
            size = self._records[number].size or 0
            parts.append(Part(number, offset, size))
            offset += size
        plan = Plan(schedule.first, tuple(parts), offset)
        result = self._partial()
        completer = Completer(self.job, checksum, plan)
        completed = completer.complete(meta.upload_id, self._records)
        result.etag = completer.verify(completed, [self._records[n].etag for n in numbers], sender.etags_not_md5)
        result.full_checksum = completed.full_checksum
        meta.part_count = len(parts)
        meta.source = {**self.source.identity(), "size": offset}  # what status shows of a completed stream
        self.engine.mark_completed(meta, result)
        if self._counts["matched"] or self._counts["adopted"]:
            log.info("%d parts matched the parts already on the store and were not sent again.",
                     self._counts["matched"] + self._counts["adopted"])
        return result

    def _partial(self) -> UploadResult:
        req, meta = self.req, self.meta
        result = UploadResult(req.bucket, req.key, meta.upload_id if meta else None, self.source.total_size,
                              len(self._records), checksum=self.checksum)
        result.parts_sent, result.bytes_sent = self._counts["sent"], self._counts["bytesSent"]
        result.parts_logged, result.parts_adopted = self._counts["matched"], self._counts["adopted"]
        return result


class _Gone(Exception):
    """The upload META records is gone from the store: a new one is made."""
