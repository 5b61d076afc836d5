"""Uploads from a stream (stdin, a FIFO, ``/dev/fd/N``, a character device): read once, in order, resumable by content.

A stream cannot be read twice, so each part is held from its read until the store has it (a retry needs its
bytes): in memory, or in a spool file when parts are large. ``max_memory`` bounds the parts held in memory, so fewer
go in flight as they grow. Its length is known only at its end, so the part sizes follow a fixed schedule
(``plan.Schedule``, recorded in META) that fits any stream up to 97 % of S3's largest object into 10,000 parts.

Resume by content: a rerun reads the stream again from its start and hashes each part as it holds it; a part whose
bytes match the part the log records and the store holds is not sent again, one that differs is (S3 replaces a part
sent under the same number). The upload completes only once this run reached the stream's end, with exactly this
run's parts, so the object is always one whole stream: the last one.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import logging
import mmap
import os
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from s3_multipart_upload import checksums
from s3_multipart_upload.completion import Completer, refuse_overwrite
from s3_multipart_upload.errors import (
    BadInput,
    Interrupted,
    SourceChanged,
    StateConflict,
    TemporaryFailure,
    UploadError,
    UploadGone,
)
from s3_multipart_upload.job import Stopping, UploadRequest, UploadResult
from s3_multipart_upload.plan import MAX_PARTS, MiB, Part, Plan, Schedule, human, schedule_for
from s3_multipart_upload.progress import Reporter
from s3_multipart_upload.reconcile import ListedPart
from s3_multipart_upload.run_plan import check_meta, check_paths, read_logs
from s3_multipart_upload.s3 import LACKS_API, ClientFactory, Kind, RetryPolicy, classify, describe, error_code
from s3_multipart_upload.sender import Sender
from s3_multipart_upload.sources import read_whole
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
from s3_multipart_upload.stream import BLOCK, RangeReader, digest_part
from s3_multipart_upload.uploader import CONTENT_MD5, ETAGS_NOT_MD5, PROPERTIES, Uploader

log = logging.getLogger(__name__)
STREAM_ID = "stdin"  # a stream upload's source in its state folder's identity: one per endpoint, bucket and key
SCHEDULE = "partSchedule"  # META: the part sizes, fixed at the upload's start
DEFAULT_MAX_MEMORY = 256 * MiB
WAIT = 0.25  # seconds between looks at the parts in flight
PIPE_SIZE = 1 << 20  # bytes a pipe holds (Linux's most for a user: /proc/sys/fs/pipe-max-size)


def is_stream(path: str | os.PathLike[str]) -> bool:
    """``-`` (stdin), or a path that is a pipe or a character device: data read once, in order."""
    if str(path) == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


class _Held:
    """One part's bytes, held until the store has them: a buffer, or a spool file (unlinked at once)."""

    def __init__(self, data: mmap.mmap | None, spool: IO[bytes] | None, length: int) -> None:
        self.data, self.spool, self.length = data, spool, length

    def reader(self) -> RangeReader:
        return _HeldRange(self)

    def close(self) -> None:
        if self.data is not None:
            with contextlib.suppress(BufferError):  # a view the HTTP client still holds: freed with it
                self.data.close()
            self.data = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None


class _HeldRange:
    def __init__(self, held: _Held) -> None:
        self._held, self._at = held, 0

    def read(self, size: int) -> bytes | memoryview:
        held = self._held
        size = min(size, held.length - self._at)
        if size <= 0:
            return b""
        chunk: bytes | memoryview
        if held.data is not None:
            chunk = memoryview(held.data)[self._at:self._at + size]  # no copy: the part stays until it is let go
        elif held.spool is not None:
            chunk = os.pread(held.spool.fileno(), size, self._at)
        else:
            raise RuntimeError("a part's bytes were read after they were let go")
        self._at += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class StreamSource:
    """The stream as the engine's Source: the parts read so far and still held, by number."""

    server_side = False

    def __init__(self, path: str | os.PathLike[str] | IO[bytes], spool_dir: Path | None = None) -> None:
        self._file: IO[bytes] | None = None
        self._fd: int | None = None
        self._own_fd = False
        if not isinstance(path, (str, os.PathLike)):
            self.name, self._file = getattr(path, "name", "stream"), path
        elif str(path) == "-":
            self.name, self._fd = "-", 0
            if os.isatty(0):
                raise BadInput("the data to upload is stdin (-), and stdin is a terminal",
                               "pipe the data in: producer | s3-multipart-upload upload - s3://BUCKET/KEY")
        else:
            self.name = str(path)
            try:
                self._fd, self._own_fd = os.open(path, os.O_RDONLY), True
            except OSError as exc:
                raise BadInput(f"cannot read the stream {path}: {exc.strerror}", "check the path") from None
        self.spool_dir = Path(spool_dir or tempfile.gettempdir())
        self.total_size = 0  # bytes read so far
        self.ended = False
        self.memory = 0  # bytes of the parts held in memory
        self._held: dict[int, _Held] = {}
        self._free: list[mmap.mmap] = []  # buffers of parts let go, of the size being read: no new pages to fault in
        self._lock = threading.Lock()
        if self._fd is not None:
            with contextlib.suppress(OSError, AttributeError):  # a pipe's buffer of 1 MiB: fewer, larger reads
                fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)

    def _readinto(self, view: memoryview, at: int = 0) -> int:
        """Read into ``view``; ``at``: the bytes of the part being read so far (for the message)."""
        try:
            if self._file is None:
                assert self._fd is not None
                return os.readv(self._fd, [view])
            got = self._file.readinto(view) if hasattr(self._file, "readinto") else None
            if got is None:  # a file object without readinto, or a non-blocking one with nothing yet
                data = self._file.read(len(view))
                view[:len(data)] = data
                return len(data)
            return int(got)
        except OSError as exc:
            raise TemporaryFailure(f"cannot read the stream {self.name} at byte {self.total_size + at}: "
                                   f"{exc.strerror or exc}", "rerun with the producer working: the parts already "
                                   "on the store are not sent again if their bytes are the same") from None

    def read_part(self, number: int, size: int, spool: bool) -> Part:
        """The next part: up to ``size`` bytes (fewer only at the stream's end), held until ``release``."""
        held: _Held
        got = 0
        if spool:
            held = _Held(None, self._spool_file(), 0)
            block = bytearray(BLOCK)
            view = memoryview(block)
            for _ in range(size + 1):  # each read takes a byte or more, or ends the stream
                n = self._readinto(view[:min(len(view), size - got)], got) if got < size else 0
                if n == 0:
                    break
                os.write(held.spool.fileno(), view[:n])  # type: ignore[union-attr]
                got += n
        else:
            # Anonymous memory, given back to the system when the part is let go: pages come as bytes are read
            # (a last part shorter than its size costs only its bytes), and none stay in the allocator's pools.
            data = self._buffer(size)
            with memoryview(data) as view:
                for _ in range(size + 1):
                    n = self._readinto(view[got:size], got) if got < size else 0
                    if n == 0:
                        break
                    got += n
            held = _Held(data, None, 0)
        held.length = got
        part = Part(number, self.total_size, got)
        with self._lock:
            self._held[number] = held
            if not spool:
                self.memory += got
        self.total_size += got
        self.ended = got < size
        return part

    def _buffer(self, size: int) -> mmap.mmap:
        """A buffer of ``size`` bytes: one a part let go, or new (parts of one size follow each other)."""
        with self._lock:
            while self._free:
                buffer = self._free.pop()
                if len(buffer) == max(size, 1):
                    return buffer
                buffer.close()  # the parts grew: the smaller buffers are of no more use
        return mmap.mmap(-1, max(size, 1))

    def _spool_file(self) -> IO[bytes]:
        try:
            return tempfile.TemporaryFile(dir=self.spool_dir, prefix="s3mu-part-")
        except OSError as exc:
            raise BadInput(f"cannot write a spool file in {self.spool_dir}: {exc.strerror}",
                           "give --spool-dir a writable folder with room for the large parts in flight") from None

    def more(self) -> bool:
        """Whether the stream has another byte (read and kept: for the check past the last part allowed)."""
        one = bytearray(1)
        return self._readinto(memoryview(one)) == 1

    def release(self, number: int) -> None:
        """Let a part go (once the store has it, or its sending ended): its buffer is kept for the next part read,
        its spool file deleted."""
        with self._lock:
            held = self._held.pop(number, None)
            if held is None:
                return
            if held.data is not None:
                self.memory -= held.length
                self._free.append(held.data)
                held.data = None
        held.close()

    def close(self) -> None:
        for number in list(self._held):
            self.release(number)
        with self._lock:
            for buffer in self._free:
                with contextlib.suppress(BufferError):
                    buffer.close()
            self._free.clear()
        if self._own_fd and self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- the Source protocol -------------------------------------------------------------------------------------

    def plan(self, split_size: int | None, fixed: bool, max_parts: int = MAX_PARTS) -> Plan:
        if not self.ended or len(self._held) != 1:
            raise ValueError("a stream's plan is known only once it was read whole, in one part")
        return Plan(split_size or self.total_size, (Part(1, 0, self.total_size),), self.total_size)

    def open_range(self, part: Part) -> RangeReader:
        with self._lock:
            held = self._held.get(part.number)
        if held is None:
            raise RuntimeError(f"part {part.number} of the stream is no longer held")
        return held.reader()

    def read(self, part: Part) -> bytes:
        return read_whole(self, part)

    def identity(self) -> dict[str, Any]:
        return {"kind": "stream", "path": self.name}

    def check_unchanged(self, recorded: dict[str, Any], meta_path: Path) -> None:
        if recorded.get("kind") != "stream":
            raise StateConflict(f"meta file {meta_path} belongs to an upload of {recorded.get('path')}, not of a "
                                "stream", "give another -m and -a path for the stream")

    def covers(self, path: Path) -> bool:
        return self.name != "-" and Path(self.name).resolve() == path.resolve()

    def recheck(self) -> None:
        pass  # a stream's parts are checked by their content on every run

    def server_side_copy(self, part: Part) -> dict[str, Any] | None:
        return None


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
        self._in_flight: dict[cf.Future[tuple[PartRecord, str]], Part] = {}
        self._records: dict[int, PartRecord] = {}
        self._counts = {"sent": 0, "matched": 0, "adopted": 0, "bytesSent": 0}
        self._failure: BaseException | None = None

    # -- the plan ----------------------------------------------------------------------------------------------

    def _plan(self, warn: bool) -> tuple[Meta | None, Schedule, str, str, str]:
        """The upload in progress (or None), the part schedule and why, the checksum and why."""
        req = self.req
        meta = read_meta(req.meta_path)
        if meta is not None and req.restart:
            check_meta(req, meta, check_source=False)
            if warn:
                self.engine.set_aside(meta)
            meta = None
        if meta is not None:
            check_meta(req, meta)
            if meta.status == ABORTED:
                raise UploadGone(f"the upload for {req.where} in {req.meta_path} was aborted",
                                 "rerun with --restart to start a new upload")
            if meta.status == COMPLETED or meta.upload_id is None:
                if warn:
                    log.info("The last upload of a stream to %s completed (meta file %s); this run uploads the "
                             "stream again.", req.where, req.meta_path)
                meta = None
        if meta is None:
            schedule, why = schedule_for(req.split_size, self.expected_size, req.max_parts)
            return None, schedule, why, req.checksum, req.checksum_why
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
        """What a run would do, from META and the options alone: reads nothing of the stream."""
        req = self.req
        check_paths(req)
        meta, schedule, why, checksum, checksum_why = self._plan(warn=False)
        tiers = schedule.tiers()
        logged = read_logs(req, meta.upload_id) if meta is not None and meta.upload_id else {}
        in_memory = [size for _, _, size, _ in tiers if not self.spooled(size)]
        return {
            "bucket": req.bucket, "key": req.key, "stream": True, "source": self.source.name,
            "bytes": self.expected_size, "partSize": schedule.first, "partSizeWhy": why,
            "schedule": [{"firstPart": first, "lastPart": last, "partSize": size, "upTo": end}
                         for first, last, size, end in tiers],
            "capacity": schedule.capacity(), "maxParts": schedule.max_parts,
            "status": meta.status if meta else "new", "uploadId": meta.upload_id if meta else None,
            "partsLogged": len(logged), "threads": req.threads, "maxMemory": self.max_memory,
            "memoryBound": min(self.max_memory, max(in_memory, default=0) * (req.threads + 1)),
            "spoolFrom": next((size for _, _, size, _ in tiers if self.spooled(size)), None),
            "spoolDir": str(self.source.spool_dir), "checksum": checksum, "checksumWhy": checksum_why,
            "objectProperties": req.properties.shown(),
            "maxBandwidth": req.bandwidth.rate if req.bandwidth is not None else None,
        }

    # -- the run -----------------------------------------------------------------------------------------------

    def run(self) -> UploadResult:
        req = self.req
        if req.upload_id is not None:
            raise BadInput("--upload-id cannot go with a stream: an upload is resumed from its meta file, by "
                           "content", "leave out --upload-id")
        check_paths(req)
        check_writable_dir(req.meta_path, "meta file")
        check_writable_dir(req.parts_path, "parts file")
        started = time.monotonic()
        try:
            with meta_lock(req.meta_path):
                result = self._run()
        finally:
            self.source.close()
        result.seconds = time.monotonic() - started
        return result

    def _run(self) -> UploadResult:
        req, job = self.req, self.job
        meta, schedule, why, checksum, checksum_why = self._plan(warn=True)
        log.info("Reading %s as a stream: parts of %s (%s); %s.", "stdin" if self.source.name == "-" else
                 self.source.name, human(schedule.first), why, f"up to {human(schedule.capacity())} in "
                 f"{schedule.max_parts:,} parts")
        log.info("Checksum %s: %s.", checksum, checksum_why)
        if req.bandwidth is not None:
            log.info("Bandwidth: at most %s/s for this command (--max-bandwidth).", human(req.bandwidth.rate))
        listed: dict[int, ListedPart] | None = {}
        logged: dict[int, PartRecord] = {}
        if meta is not None:
            assert meta.upload_id is not None
            logged = read_logs(req, meta.upload_id)
            listed = self._listed(meta.upload_id)
            if listed is not None and not listed and not logged:
                log.info("Continuing multipart upload %s (no part held yet).", meta.upload_id)
            else:
                log.info("Continuing multipart upload %s: each part read is compared with the %d parts logged; "
                         "only parts that differ are sent.", meta.upload_id, len(logged))
        sender = Sender(job, checksum, content_md5=meta is not None and meta.extra.get(CONTENT_MD5) is True,
                        etags_not_md5=(meta is not None and meta.extra.get(ETAGS_NOT_MD5) is True)
                        or req.properties.opaque_etags)
        job.progress.started(self.expected_size, None, 0, 0)
        pool = cf.ThreadPoolExecutor(max_workers=req.threads, thread_name_prefix="part")
        interrupted = False
        try:
            with PartsLog(req.log_path) as parts_log:
                try:
                    meta, single = self._read_and_send(meta, schedule, checksum, (listed, logged), sender,
                                                       parts_log, pool)
                except KeyboardInterrupt:
                    interrupted = True
                    job.stop.set()
                    log.warning("Stopping: waiting for the %d parts in flight to finish (press Ctrl-C again to "
                                "stop at once).", len(self._in_flight))
                    meta, single = None, None
                except BaseException:  # the stream could not be read, the upload not created: the parts in flight
                    job.stop.set()  # end (logged if sent) before the error is raised, and no thread outlives the call
                    self._drain()
                    raise
                self._drain()
        finally:
            pool.shutdown(wait=not self._in_flight, cancel_futures=True)
            if meta is not None:
                self.engine.remember_store(meta, sender)
        done = len(self._records)
        if self._failure is not None:
            if isinstance(self._failure, UploadError):
                self._failure.partial = self._partial(meta, checksum)
                raise self._failure
            raise job.fail(self._failure, done) from self._failure
        if interrupted:
            raise Interrupted(f"interrupted; {done} parts are done and logged (a rerun reads the stream again and "
                              "sends only the parts that differ)")
        if single is not None:
            return single
        assert meta is not None and meta.upload_id is not None
        return self._complete(meta, schedule, checksum, sender)

    def _listed(self, upload_id: str) -> dict[int, ListedPart] | None:
        """The parts the store holds; None from a store without ListParts (the log is then trusted)."""
        completer = Completer(self.job, "MD5", Plan(1, (), 0))
        try:
            return {p["PartNumber"]: ListedPart(p["PartNumber"], str(p["ETag"]).strip('"'), int(p["Size"]))
                    for p in completer.list_parts(upload_id)}
        except Exception as exc:
            if error_code(exc) in LACKS_API:
                log.info("The store does not list parts (%s): parts are compared with the parts log only.",
                         describe(exc))
                return None
            if classify(exc) is Kind.GONE:
                raise UploadGone(f"the multipart upload {upload_id} of {self.req.where} is gone (aborted, or "
                                 "completed by a run that was stopped before it could record it)",
                                 "rerun with --restart to upload the stream anew") from exc
            raise self.job.fail(exc) from exc

    def _read_and_send(self, meta: Meta | None, schedule: Schedule, checksum: str,
                       known: tuple[dict[int, ListedPart] | None, dict[int, PartRecord]], sender: Sender,
                       parts_log: PartsLog, pool: cf.ThreadPoolExecutor) -> tuple[Meta | None, UploadResult | None]:
        """Read the stream part by part, each sent (or found held) from the pool; a one-part stream goes in one
        PutObject. Returns META, and the result when it was one PutObject."""
        source = self.source
        for number in range(1, schedule.max_parts + 2):
            if self._failure is not None or self.job.stop.is_set():
                return meta, None
            if number > schedule.max_parts:
                if source.more():
                    self._failure = BadInput(
                        f"the stream is longer than the {human(schedule.capacity())} that {schedule.max_parts:,} "
                        f"parts of this upload's schedule hold ({human(source.total_size)} read): nothing was "
                        "completed", "give --expected-size (about the stream's length) or a larger -s, with "
                        "--restart; the parts sent stay on the store until `s3-multipart-upload abort`")
                return meta, None
            size = schedule.size(number)
            spool = self.spooled(size)
            if spool and not self.spooled(schedule.size(number - 1)):
                log.info("Parts of %s and more go to spool files in %s (half of --max-memory %s is %s).",
                         human(size), source.spool_dir, human(self.max_memory), human(self.max_memory // 2))
            self._wait_for_room(size, spool)
            if self._failure is not None:
                return meta, None
            part = source.read_part(number, size, spool)
            if number > 1 and part.length == 0:
                source.release(number)
                return meta, None
            if number == 1 and source.ended:
                return meta, self._put_one(meta, part, schedule, checksum)
            if meta is None:
                meta = self._create(schedule, checksum)
            assert meta.upload_id is not None
            future = pool.submit(self._part, part, meta.upload_id, known, sender, parts_log, checksum)
            self._in_flight[future] = part
            if source.ended:
                return meta, None
        return meta, None

    def _wait_for_room(self, size: int, spool: bool) -> None:
        """Until one more part may be read: fewer parts in flight than allowed, and room in memory for it."""
        for _ in range(10**7):  # bounded by the parts in flight, whose requests time out
            allowed = min(self.req.threads, self.job.throttle.allowed())
            fits = spool or self.source.memory + size <= self.max_memory
            if self._failure is not None or not self._in_flight or (len(self._in_flight) < allowed and fits):
                return
            self._collect(WAIT)

    def _collect(self, timeout: float) -> None:
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

    def _create(self, schedule: Schedule, checksum: str) -> Meta:
        req = self.req
        if req.no_overwrite:
            refuse_overwrite(self.job)
        upload_id = self.engine.create_upload(checksum)
        extra: dict[str, Any] = {**req.meta_extra, SCHEDULE: schedule.to_json()}
        if req.properties.recorded():
            extra[PROPERTIES] = req.properties.recorded()
        meta = new_meta(req.bucket, req.key, upload_id, schedule.first, self.source.identity(), 0, checksum, extra)
        meta.part_count = None  # known at the stream's end
        write_meta(req.meta_path, meta)
        return meta

    def _part(self, part: Part, upload_id: str, known: tuple[dict[int, ListedPart] | None, dict[int, PartRecord]],
              sender: Sender, parts_log: PartsLog, checksum: str) -> tuple[PartRecord, str]:
        """Send a part, unless the store already holds these very bytes under its number."""
        held, how = self._held_already(part, upload_id, known, checksum, sender.etags_not_md5)
        if held is None:
            return sender.send_part(part, upload_id, parts_log), "sent"
        if how == "adopted":
            parts_log.append(held)
        self.job.progress.part_done(part.number, held.etag, part.length, 0.0)
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

    def _put_one(self, meta: Meta | None, part: Part, schedule: Schedule, checksum: str) -> UploadResult:
        """A stream of one part: one PutObject, as for a small file (an upload in progress is left, and said)."""
        req = self.req
        if meta is not None:
            log.warning("This stream is one part: it goes in one PutObject. The multipart upload %s of an earlier "
                        "run still holds its parts on the store: `s3-multipart-upload abort --upload-id %s -b %s "
                        "-k %s` removes them.", meta.upload_id, meta.upload_id, req.bucket, req.key)
        plan = Plan(schedule.first, (part,), part.length)
        result = UploadResult(req.bucket, req.key, None, part.length, 1, checksum=checksum)
        self.engine.put_object(plan, checksum, result)
        self._counts["sent"], self._counts["bytesSent"] = 1, part.length
        extra = {**req.meta_extra, SCHEDULE: schedule.to_json()}
        if req.properties.recorded():
            extra[PROPERTIES] = req.properties.recorded()
        self.engine.mark_completed(new_meta(req.bucket, req.key, None, schedule.first, self.source.identity(), 1,
                                            checksum, extra), result)
        result.parts_sent, result.bytes_sent = 1, part.length
        return result

    def _complete(self, meta: Meta, schedule: Schedule, checksum: str, sender: Sender) -> UploadResult:
        """CompleteMultipartUpload of exactly this run's parts (the store drops any others the upload holds)."""
        assert meta.upload_id is not None
        numbers = sorted(self._records)
        if numbers != list(range(1, len(numbers) + 1)):
            raise SourceChanged(f"parts {numbers} of the stream are not every part from 1", "rerun")
        offset, parts = 0, []
        for number in numbers:
            size = self._records[number].size or 0
            parts.append(Part(number, offset, size))
            offset += size
        plan = Plan(schedule.first, tuple(parts), offset)
        result = self._partial(meta, checksum)
        completer = Completer(self.job, checksum, plan)
        completed = completer.complete(meta.upload_id, self._records)
        result.etag = completer.verify(completed, [self._records[n].etag for n in numbers], sender.etags_not_md5)
        result.full_checksum = completed.full_checksum
        meta.part_count = len(parts)
        self.engine.mark_completed(meta, result)
        if self._counts["matched"] or self._counts["adopted"]:
            log.info("%d parts matched the parts already on the store and were not sent again.",
                     self._counts["matched"] + self._counts["adopted"])
        return result

    def _partial(self, meta: Meta | None, checksum: str) -> UploadResult:
        req = self.req
        result = UploadResult(req.bucket, req.key, meta.upload_id if meta else None, self.source.total_size,
                              len(self._records), checksum=checksum)
        result.parts_sent, result.bytes_sent = self._counts["sent"], self._counts["bytesSent"]
        result.parts_logged, result.parts_adopted = self._counts["matched"], self._counts["adopted"]
        return result
