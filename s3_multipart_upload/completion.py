"""The complete and verify phases: assemble the object from its parts, then make sure it is the source.

``Completer.complete`` sends CompleteMultipartUpload (with the whole file's checksum where the
algorithm has one) and says whether its answer already proves the object; ``Completer.verify``
HEADs the object when it does not. An object that proves wrong is deleted: no object is better
than a wrong one. A completion whose upload is gone may have happened in an earlier run (killed
before it recorded it): ``already_built`` recognises the object by its size and ETag.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from s3_multipart_upload import checksums
from s3_multipart_upload.errors import IntegrityError, ServerRefused, StateConflict, UploadGone
from s3_multipart_upload.job import Job, ObjectMissing
from s3_multipart_upload.plan import Part, Plan, human, ranges
from s3_multipart_upload.s3 import LACKS_API, Kind, classify, describe, error_code, list_all_parts
from s3_multipart_upload.sources import Source
from s3_multipart_upload.state import PartRecord
from s3_multipart_upload.stream import PartStream, digest_part

log = logging.getLogger(__name__)
SPOT_CHECKS = 8  # parts sampled after a server-side copy, plus the last one
SPOT_CHECK_BYTES = 64 * 1024
# A completion refused with these while it carries additional checksums: the store does not take them (SeaweedFS 4.48
# answered InvalidRequest when the part checksums were missing; S3 answers InvalidPart/BadDigest for wrong ones).
CHECKSUM_REFUSALS = frozenset({"InvalidRequest", "InvalidArgument", "InvalidDigest", "BadDigest", "InvalidChecksum",
                               "NotImplemented", "XAmzContentChecksumMismatch"})


@dataclass(frozen=True)
class Completed:
    etag: str | None  # the object's ETag as the completion (or the HEAD that found it built) answered
    full_checksum: str | None = None  # the whole object's checksum (base64) where the algorithm has that form
    proven: bool = False  # the answer alone proves the object is the source's bytes: no HEAD needed
    by_earlier_run: bool = False  # the upload was gone and the object found built: an earlier run completed it


class Completer:
    def __init__(self, job: Job, checksum: str, plan: Plan) -> None:
        self.job = job
        self.checksum = checksum
        self.plan = plan

    def list_parts(self, upload_id: str, info: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        req = self.job.req
        return self.job.call("ListParts", lambda c: list_all_parts(c, req.bucket, req.key, upload_id, info))

    def complete(self, upload_id: str, done: dict[int, PartRecord]) -> Completed:
        """CompleteMultipartUpload of every planned part, in order."""
        job, req, plan, algorithm = self.job, self.job.req, self.plan, self.checksum
        req.source.recheck()  # a file edited, or an object overwritten, during the run: do not complete
        if req.source.server_side:
            self._check_copied_sizes(upload_id)
        parts: list[dict[str, Any]] = [{"PartNumber": p.number, "ETag": f'"{done[p.number].etag}"'}
                                       for p in plan.parts]
        listing_matches = False
        listed_checksums: list[str] = []
        if algorithm != "MD5":
            # Additional checksums are repeated in the completion; S3 lists the values it verified on arrival. Stores
            # that list parts without them (SeaweedFS 4.48) or not at all (s3rver) refuse a completion that lacks
            # them: those come from the log, computed on the local bytes when each part was sent and verified.
            listed = {p["PartNumber"]: p for p in self._listing(upload_id)}
            logged = self._logged_checksums(done)
            for entry, own in zip(parts, logged, strict=True):
                value = listed.get(entry["PartNumber"], {}).get(f"Checksum{algorithm}")
                value = value if isinstance(value, str) else own
                if value is None:  # adopted by an older version, which logged no checksum: read the part again
                    value = digest_part(req.source, plan.parts[entry["PartNumber"] - 1], algorithm).value
                entry[f"Checksum{algorithm}"] = value
            # The same listing shows each part's size: with the completion's answer, that can make a HEAD of the
            # object redundant (see _proves).
            listing_matches = len(listed) == len(plan.parts) and all(
                p.number in listed and listed[p.number].get("Size") == p.length
                and str(listed[p.number].get("ETag", "")).strip('"') == done[p.number].etag for p in plan.parts)
            listed_checksums = [str(listed.get(p.number, {}).get(f"Checksum{algorithm}") or "") for p in plan.parts]
            if not all(listed_checksums):
                listed_checksums = []  # the store's composite answer cannot be foretold from a partial listing
        conditional: dict[str, Any] = {}
        full: str | None = None
        if algorithm in checksums.FULL_OBJECT:
            # The whole file's checksum, from the parts' checksums computed on the local bytes (never from the
            # server's listing): S3 computes its own over the object it builds and refuses to complete if the
            # two differ. Each part goes with its own local value as well.
            local = self._part_checksums(done)
            for entry, value in zip(parts, local, strict=True):
                entry[f"Checksum{algorithm}"] = value
            full = checksums.full_object_checksum(algorithm,
                                                  [(v, p.length) for v, p in zip(local, plan.parts, strict=True)])
            conditional = {f"Checksum{algorithm}": full, "ChecksumType": "FULL_OBJECT"}
        if req.no_overwrite:
            refuse_overwrite(job)  # stores that ignore If-None-Match on completion are checked here
            conditional["IfNoneMatch"] = "*"
        try:
            response = job.call("CompleteMultipartUpload", lambda c: c.complete_multipart_upload(
                Bucket=req.bucket, Key=req.key, UploadId=upload_id, MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                **conditional))
        except Exception as exc:
            refused = overwrite_refused(job, exc)
            if refused is not None:
                raise refused from exc
            if classify(exc) is Kind.GONE:
                etag = self.already_built(done)
                if etag is not None:
                    return Completed(etag, full, proven=True, by_earlier_run=True)  # a retry whose first try went
            if error_code(exc) == "EntityTooSmall":
                raise StateConflict(
                    f"the server refused to complete {req.where}: a part other than the last is below its "
                    f"minimum size (S3: 5 MiB); this upload's parts are {human(plan.part_size)} "
                    f"({plan.part_size} bytes, as recorded in {req.meta_path})",
                    "rerun with --restart to upload again with valid parts (the default is 32 MiB)",
                ) from exc
            if error_code(exc) == "InvalidPart":
                raise UploadGone(
                    f"the server refused to assemble {req.where} from the parts it lists (InvalidPart): its "
                    f"multipart upload {upload_id} is damaged. rclone serve s3 does this when a part upload was cut "
                    "off while it streamed parts to disk; run it with --disable-multipart-streaming",
                    "rerun with --restart to start a new upload (the old parts log is kept aside)",
                ) from exc
            if algorithm != "MD5" and error_code(exc) in CHECKSUM_REFUSALS:
                raise ServerRefused(
                    f"the server refused to complete {req.where} with the parts' {algorithm} checksums "
                    f"({describe(exc)}): this store does not take --checksum {algorithm} in a multipart upload",
                    f"rerun with --restart --checksum MD5 (or --checksum auto); the parts stay on the server until "
                    f"`s3-multipart-upload abort -m {req.meta_path}`. See the Stores page of the docs",
                ) from exc
            raise job.fail(exc, len(done), len(plan.parts)) from exc
        etag = str(response.get("ETag", "")).strip('"') or None
        expected = full or checksums.composite_checksum(algorithm, listed_checksums)
        checksum_proven = bool(expected) and response.get(f"Checksum{algorithm}") == expected
        part_etags = [done[p.number].etag for p in plan.parts]
        return Completed(etag, full, self._proves(etag, part_etags, listing_matches, checksum_proven))

    def _proves(self, etag: str | None, part_etags: list[str], listing_matches: bool, checksum_proven: bool) -> bool:
        """Whether CompleteMultipartUpload's answer already proves the object, so that a HEAD adds nothing.

        Each part was proven on arrival (its MD5 ETag, Content-MD5 or an additional checksum: this run's, earlier
        runs', or parts adopted after an MD5 check), and an answer ETag equal to md5(part ETags)-N says that
        exactly those parts, in order, make the object: its content, and so its size, are the file's. Stores that
        answer otherwise (and copies, whose parts no checksum covered) get the HEAD check.
        """
        if self.job.req.source.server_side or len(part_etags) < 2 or not etag:
            return False
        if self.checksum == "MD5":
            return etag == checksums.composite_etag(part_etags)
        # An additional checksum: the listing taken for the completion showed every part with its size and logged
        # ETag. An answer that names exactly those parts, by their checksums (the full-object one, or the composite
        # S3 answers) or by the composite of their MD5 ETags (stores that ignore x-amz-checksum-*), says the object
        # is those parts in order: its size is the file's. A HEAD would show no more.
        return listing_matches and (checksum_proven or etag == checksums.composite_etag(part_etags))

    def full_checksum(self, done: dict[int, PartRecord]) -> str | None:
        """The whole object's checksum where the algorithm has that form (an object found already built by an
        earlier run, whose completion this run did not see), from the log's part checksums and the file."""
        if self.checksum not in checksums.FULL_OBJECT:
            return None
        local = self._part_checksums(done)
        return checksums.full_object_checksum(self.checksum,
                                              [(v, p.length) for v, p in zip(local, self.plan.parts, strict=True)])

    def _part_checksums(self, done: dict[int, PartRecord]) -> list[str]:
        """Each part's checksum as computed from the local bytes: from the log, or read again where the log has
        none (a part adopted by an older version, or not logged)."""
        return [value if value is not None else digest_part(self.job.req.source, part, self.checksum).value
                for part, value in zip(self.plan.parts, self._logged_checksums(done), strict=True)]

    def _logged_checksums(self, done: dict[int, PartRecord]) -> list[str | None]:
        """Each part's checksum as the log holds it (None where it holds none)."""
        records = [done.get(part.number) for part in self.plan.parts]
        return [record.checksum if record is not None else None for record in records]

    def _listing(self, upload_id: str) -> list[dict[str, Any]]:
        """The parts the server lists before a completion; none from a store that has no ListParts (s3rver), whose
        completion then takes every part's checksum from the log and whose object is checked by a HEAD."""
        try:
            return self.list_parts(upload_id)
        except Exception as exc:
            if error_code(exc) not in LACKS_API:
                raise
            log.info("The store does not list parts (%s); completing with the checksums of the parts log.",
                     describe(exc))
            return []

    def already_built(self, done: dict[int, PartRecord]) -> str | None:
        """After NoSuchUpload: the object's ETag if it is there, complete and ours (killed after completion)."""
        req, plan = self.job.req, self.plan
        try:
            head = self.job.call("HeadObject", lambda c: c.head_object(Bucket=req.bucket, Key=req.key))
        except Exception:
            return None
        if head["ContentLength"] != plan.total_size:
            return None
        etag = head["ETag"].strip('"')
        if checksums.is_composite_etag(etag) and len(done) < len(plan.parts):
            log.info("Checking the MD5 of every part of %s against the object's ETag.", req.where)
            ok = etag == checksums.composite_etag([digest_part(req.source, p, "MD5").md5_hex or ""
                                                   for p in plan.parts])
        elif len(done) == len(plan.parts) and etag == checksums.composite_etag(
                [done[p.number].etag for p in plan.parts]):
            ok = True
        elif checksums.is_md5_etag(etag):
            log.info("Checking the MD5 of %s against the whole local file.", req.where)
            ok = etag == _md5_of(req.source, plan)
        else:
            ok = False
        if not ok:
            return None
        log.info("The upload was already completed by an earlier run; %s matches the local bytes.", req.where)
        return etag

    def verify(self, completed: Completed, part_etags: list[str], etags_not_md5: bool) -> str | None:
        """The object's ETag once it is proven to be the source (HEAD unless the completion proved it); a wrong
        object is deleted."""
        try:
            if completed.proven:
                log.debug("The completion answer names exactly the parts sent (by composite ETag or checksum): "
                          "no HEAD needed.")
                etag = completed.etag
            else:
                etag = self._head_check(completed.etag, part_etags, etags_not_md5)
            if self.job.req.source.server_side:
                self._spot_check_copy()
        except IntegrityError as exc:
            raise delete_wrong_object(self.job, exc) from exc
        return etag

    def _head_check(self, answered: str | None, part_etags: list[str], etags_not_md5: bool) -> str | None:
        job, req, plan = self.job, self.job.req, self.plan
        try:
            head = job.call("HeadObject", lambda c: c.head_object(Bucket=req.bucket, Key=req.key))
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectMissing(f"{req.where} is not there after the server said it completed it",
                                    "rerun with --restart to upload it again") from exc
            if error_code(exc) in ("403", "AccessDenied"):
                log.warning("Could not check %s after completing it: these credentials may not read it (%s).",
                            req.where, describe(exc))
                return answered
            raise job.fail(exc) from exc
        size, etag = head["ContentLength"], head["ETag"].strip('"')
        if size != plan.total_size:
            raise IntegrityError(f"{req.where} is {size} bytes on the server, but the local data is "
                                 f"{plan.total_size}", "rerun with --restart to upload it again")
        if etags_not_md5:
            expected: str | None = None
        elif len(part_etags) == 1 and checksums.is_md5_etag(etag) and self.checksum == "MD5":
            expected = part_etags[0]
        else:
            expected = checksums.composite_etag(part_etags) if len(part_etags) > 1 else None
        for label, got in (("HEAD", etag), ("CompleteMultipartUpload", answered or "")):
            comparable = checksums.is_composite_etag(got) or len(part_etags) == 1
            if expected and got and comparable and got != expected:
                raise IntegrityError(f"{req.where}: the {label} ETag {got} is not the one the parts "
                                     f"make ({expected})", "rerun with --restart to upload it again")
        return etag

    def _spot_check_copy(self) -> None:
        """The store copied the parts itself: compare samples of the object with the source, since its ETags
        alone cannot prove that the bytes were copied (and from the right offsets)."""
        job, req, plan = self.job, self.job.req, self.plan
        step = max(1, len(plan.parts) // SPOT_CHECKS)
        samples = {p.number: p for p in [*plan.parts[::step][:SPOT_CHECKS], plan.parts[-1]]}
        for part in samples.values():
            sample = Part(part.number, part.offset, min(SPOT_CHECK_BYTES, part.length))
            if sample.length == 0:
                continue
            wanted = req.source.read(sample)
            byte_range = f"bytes={sample.offset}-{sample.offset + sample.length - 1}"
            got = job.call(f"GetObject {req.where} {byte_range}", lambda c, r=byte_range: c.get_object(  # type: ignore[misc]
                Bucket=req.bucket, Key=req.key, Range=r)["Body"].read())
            if got != wanted:
                raise IntegrityError(f"{req.where} differs from the source at {byte_range}: the store's "
                                     "UploadPartCopy did not copy the bytes it claimed",
                                     "delete the object and copy again with --restart --through-client")

    def _check_copied_sizes(self, upload_id: str) -> None:
        """Server-side copies: the server must hold every part at its planned size before completion."""
        held = {p["PartNumber"]: int(p["Size"]) for p in self.list_parts(upload_id)}
        wrong = [p.number for p in self.plan.parts if held.get(p.number) != p.length]
        if wrong:
            raise IntegrityError(f"after UploadPartCopy the server holds parts {ranges(wrong)} of "
                                 f"{self.job.req.where} at sizes other than the ranges copied",
                                 "rerun with --restart --through-client")


def refuse_overwrite(job: Job, plan: Plan | None = None) -> str | None:
    """--no-overwrite: stop before sending anything if an object is already at the key. When ``plan`` is one part
    and the object is byte for byte that part (size and MD5 ETag), returns its ETag: an earlier run's PutObject
    went through and the run was killed before it could record it, so there is nothing to refuse."""
    req = job.req
    if not req.no_overwrite:
        return None
    opaque = req.properties.opaque_etags  # SSE-KMS, SSE-C: the ETag is no MD5; the part's checksum may prove it
    try:
        mode: dict[str, Any] = {"ChecksumMode": "ENABLED"} if opaque else {}
        head = job.call("HeadObject", lambda c: c.head_object(Bucket=req.bucket, Key=req.key, **mode))
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise job.fail(exc) from exc
    etag = str(head.get("ETag", "")).strip('"')
    if plan is not None and len(plan.parts) == 1 and not req.source.server_side \
            and head.get("ContentLength") == plan.total_size:
        if not opaque and etag == digest_part(req.source, plan.parts[0], "MD5").md5_hex:
            return etag
        held = head.get(f"Checksum{req.checksum}") if opaque and req.checksum != "MD5" else None
        if held is not None and held == digest_part(req.source, plan.parts[0], req.checksum).value:
            return etag
    raise StateConflict(f"an object already exists at {req.where} and --no-overwrite was given",
                        "choose another key, or leave out --no-overwrite to replace it")


def overwrite_refused(job: Job, exc: BaseException) -> StateConflict | None:
    if job.req.no_overwrite and error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
        return StateConflict(f"an object appeared at {job.req.where} during the upload, and --no-overwrite was "
                             "given; the parts stay on the server", "choose another key and --restart, or "
                             "rerun without --no-overwrite to replace the object")
    return None


def delete_changed_object(job: Job, exc: StateConflict) -> StateConflict:
    """The one-part object was sent while its source changed: remove it rather than keep a mixed one."""
    req = job.req
    try:
        job.call("DeleteObject", lambda c: c.delete_object(Bucket=req.bucket, Key=req.key))
    except Exception:
        return StateConflict(f"{exc.message}; {req.where} may hold a mix of versions: delete it", exc.hint)
    return StateConflict(f"{exc.message}; the object just sent was deleted", exc.hint)


def delete_wrong_object(job: Job, exc: IntegrityError) -> IntegrityError:
    """The object this run just completed is not the source: no object is better than a wrong one."""
    if isinstance(exc, ObjectMissing):
        return exc
    req = job.req
    try:
        job.call("DeleteObject", lambda c: c.delete_object(Bucket=req.bucket, Key=req.key))
    except Exception as delete_failed:
        return IntegrityError(f"{exc.message}; deleting the wrong object failed too ({describe(delete_failed)})",
                              f"delete {req.where} yourself; {exc.hint or ''}")
    return IntegrityError(f"{exc.message}; the wrong object was deleted", exc.hint)


def _md5_of(source: Source, plan: Plan) -> str:
    """The MD5 of all the source's bytes, read block by block."""
    h = hashlib.md5(usedforsecurity=False)
    for part in plan.parts:
        stream = PartStream(source, part)
        try:
            for block in stream.chunks():
                h.update(block)
        finally:
            stream.close()
    return h.hexdigest()
