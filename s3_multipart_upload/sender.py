"""The send phase: the pool of threads, the throttle, and each part's streaming body and its proof.

Parts go out from a thread pool, at most ``Throttle.allowed()`` in flight. Each part is streamed
from its source (``stream.PartStream``) and sent so that the server's answer proves the server
holds the source's bytes (``Sender.send_verified``); a part counts as done once its line is in
the parts log. A failure stops scheduling, lets the parts in flight finish, and is raised as the
run's error; so is a first Ctrl-C (a second one stops at once).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from s3_multipart_upload import checksums
from s3_multipart_upload.errors import IntegrityError, Interrupted, StateConflict
from s3_multipart_upload.job import Job, Stopping
from s3_multipart_upload.plan import Part, human
from s3_multipart_upload.s3 import Timeouts, describe, error_code, needs_content_md5, stall_of
from s3_multipart_upload.state import PartRecord, PartsLog
from s3_multipart_upload.stream import PartStream, digest_part

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
Request = Callable[[PartStream, dict[str, str]], Any]  # (body, checksum arguments) -> the server's answer


@dataclass
class Sent:
    """What the send phase did: the parts it finished (each logged), and their bytes."""

    records: dict[int, PartRecord]
    parts: int = 0
    bytes: int = 0


class Stalled(TimeoutError):
    """A part's request whose bytes stopped moving (``s3.Timeouts``): its connection is dropped and the part is
    retried on a new one, as any transient failure."""


class Sender:
    def __init__(self, job: Job, checksum: str, content_md5: bool = False, etags_not_md5: bool = False) -> None:
        self.job = job
        self.checksum = checksum
        # MD5 goes as Content-MD5 (hash, then send) rather than by ETag comparison: asked for, a one-part PutObject
        # (its first request already makes the object), or a store found to need it (below).
        self.content_md5 = content_md5 or etags_not_md5 or job.req.content_md5
        # Set when a part's ETag proved not to be the MD5 of its bytes although the server verified the bytes
        # (SSE-KMS, SSE-C, stores of their own kind): the object's ETag cannot be checked against the parts either.
        self.etags_not_md5 = etags_not_md5
        self._unconfirmed = False  # an answer did not echo the additional checksum (said once)
        self.timeouts: Timeouts = job.requests.clients.timeouts
        self.body_size: int | None = None  # the largest part of this run: its answer timeout is every part's
        self.sent = Sent({})  # what the last send_all sent (so far)

    def send_all(self, parts: list[Part], upload_id: str, parts_log: PartsLog, done_before: int, total: int) -> Sent:
        """Send ``parts`` from the pool. The first Ctrl-C (or SIGTERM) stops scheduling and lets the parts in
        flight finish; a second one stops at once (the CLI's signal handler exits the process)."""
        job = self.job
        sent = self.sent = Sent({})  # (read by the uploader when this raises: how far the run got)
        if not parts:
            return sent
        self.body_size = max(part.length for part in parts)
        pending = iter(parts)
        failure: BaseException | None = None
        interrupted = False
        pool = cf.ThreadPoolExecutor(max_workers=job.req.threads, thread_name_prefix="part")
        in_flight: dict[cf.Future[PartRecord], Part] = {}

        def done_text() -> str:
            return f"{done_before + sent.parts} of {total} parts are done and logged"

        def fill() -> None:
            while not job.stop.is_set() and len(in_flight) < job.throttle.allowed():
                part = next(pending, None)
                if part is None:
                    return
                in_flight[pool.submit(self.send_part, part, upload_id, parts_log)] = part

        try:
            fill()
            while in_flight:  # each part ends: its requests time out and its retries are bounded
                try:
                    finished, _ = cf.wait(in_flight, timeout=0.25, return_when=cf.FIRST_COMPLETED)
                    for future in finished:
                        part = in_flight.pop(future)
                        try:
                            record = future.result()
                        except Stopping:
                            pass  # gave up its retries because the run is stopping: not done, not the cause
                        except Exception as exc:
                            if failure is None:
                                failure = exc
                                job.stop.set()
                                if in_flight:
                                    log.warning("Part %d failed (%s); letting the %d parts in flight finish.",
                                                part.number, describe(exc), len(in_flight))
                        else:
                            sent.records[record.number] = record
                            sent.parts += 1
                            sent.bytes += part.length
                    fill()
                except KeyboardInterrupt:
                    if interrupted:  # the CLI exits on a second signal itself; a library caller gets this
                        raise Interrupted(f"stopped at once; {done_text()}") from None
                    interrupted = True
                    job.stop.set()
                    log.warning("Stopping: waiting for the %d parts in flight to finish "
                                "(press Ctrl-C again to stop at once).", len(in_flight))
        finally:
            pool.shutdown(wait=not in_flight, cancel_futures=True)
        if failure is not None:
            raise job.fail(failure, done_before + sent.parts, total) from failure
        if interrupted:
            raise Interrupted(f"interrupted; {done_text()}")
        return sent

    def send_part(self, part: Part, upload_id: str, parts_log: PartsLog) -> PartRecord:
        """One part, retried as a whole (re-read from its source each time), then logged."""
        req = self.job.req
        began = time.monotonic()

        def send(client: S3Client) -> tuple[str, str | None]:
            copy = req.source.server_side_copy(part)
            if copy is not None:
                return self._copy_part(client, part, upload_id, copy), None
            answer, digest = self.send_verified(part, lambda body, args: client.upload_part(
                Bucket=req.bucket, Key=req.key, UploadId=upload_id, PartNumber=part.number, Body=body,  # type: ignore[arg-type]
                **args))  # type: ignore[arg-type]
            return str(answer["ETag"]).strip('"'), digest.value if digest.algorithm != "MD5" else None

        what = "UploadPartCopy" if req.source.server_side else "UploadPart"
        # A copy has no body, but the store's work before it answers grows with the part as well.
        etag, checksum = self.job.call(f"{what} {part.number}", send, body_size=self.body_size or part.length)
        record = PartRecord(etag, part.number, upload_id, part.length, checksum)
        parts_log.append(record)  # on disk before the part counts as done
        self.job.progress.part_done(part.number, etag, part.length, time.monotonic() - began)
        return record

    def send_verified(self, part: Part, request: Request) -> tuple[Any, checksums.PartChecksum]:
        """Send a part (or a one-part object) so that the server's answer proves it holds the source's bytes.

        MD5 on a store whose ETags are MD5s: one pass, the part streamed and hashed as it goes, and the ETag
        compared with that hash; a part whose ETag differs is sent again with Content-MD5, which tells bytes
        damaged on the way (the store refuses or accepts them with the right ETag) from a store whose ETags are
        not MD5s (then every later part goes with Content-MD5). Any other checksum goes in a header, so it is
        computed first: one pass to hash (at 20 GB/s for the CRCs), one to send, both from the page cache."""
        source = self.job.req.source
        first: tuple[str, checksums.PartChecksum | None] | None = None  # a try by ETag that did not prove the part
        if self.checksum == "MD5" and not self.content_md5:
            body = PartStream(source, part, "MD5", self.job.req.bandwidth)
            try:
                answer = self._sending(body, request, {})
                sent = body.digest()
                etag = str(answer["ETag"]).strip('"')
                if sent is not None and etag == sent.md5_hex:
                    return answer, sent
                first = (etag, sent)
            except Exception as exc:
                if not needs_content_md5(exc):
                    raise
                self.content_md5 = True  # every later part too: this store wants the checksum up front
                log.warning("The server requires Content-MD5 on every part (%s): each part is now hashed, then "
                            "sent with it.", describe(exc))
            finally:
                body.close()
        digest = digest_part(source, part, self.checksum)
        body = PartStream(source, part, bandwidth=self.job.req.bandwidth)
        try:
            answer = self._sending(body, request, digest.upload_part_args())
        finally:
            body.close()
        self._check_confirmed(answer, digest, part.number)
        etag = str(answer["ETag"]).strip('"')
        if digest.md5_hex is None or self.etags_not_md5:
            return answer, digest
        if etag == digest.md5_hex:
            if first is not None and first[1] is not None:
                log.warning("Part %d reached the server damaged (its ETag %s was not the MD5 of the bytes sent); "
                            "sent again with Content-MD5, and the server now holds the right bytes.", part.number,
                            first[0])
        else:
            # The server checked Content-MD5 on arrival; an ETag that is not the MD5 means a store that makes
            # ETags another way (SSE-KMS, SSE-C, some S3-compatible stores), not damaged bytes.
            self.content_md5 = self.etags_not_md5 = True
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
        req = self.job.req
        try:
            response = client.upload_part_copy(Bucket=req.bucket, Key=req.key, UploadId=upload_id,
                                               PartNumber=part.number, **copy)
        except Exception as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                raise StateConflict(f"the source object changed during the copy to {req.where}",
                                    "the copy would mix two versions; rerun with --restart to copy the new "
                                    "version") from exc
            raise
        etag = str(response.get("CopyPartResult", {}).get("ETag", "")).strip('"')
        if not etag or (part.length > 0 and etag == EMPTY_MD5):
            req.source.recheck()  # a source that shrank under us explains an empty copy
            raise IntegrityError(f"UploadPartCopy of part {part.number} for {req.where} answered without copying "
                                 f"(ETag {etag or 'missing'})", "this store's UploadPartCopy cannot be trusted; "
                                 "rerun with --restart --through-client")
        return etag

    def _sending(self, body: PartStream, request: Request, args: dict[str, str]) -> Any:
        """``request(body, args)``, raising what the source raised while it was read (see PartStream.failure), and
        saying where a stalled request stopped."""
        try:
            return request(body, args)
        except Exception as exc:
            if body.failure is not None:
                raise body.failure from None
            stalled = stall_of(exc)
            if stalled == "send":
                raise Stalled(f"stalled: the network took no byte of the body for {self.timeouts.send:g} s "
                              f"({human(body.tell())} of {human(len(body))} handed over)") from exc
            if stalled == "answer":
                wait = self.timeouts.for_body(self.body_size or len(body))
                raise Stalled(f"stalled: no answer {wait:g} s after the body's last byte "
                              f"({human(len(body))})") from exc
            raise
