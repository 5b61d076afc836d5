"""The plan phase: what a run will do, from the command and the local files alone (no request is sent).

``make_plan`` reads META and the parts log, checks them against the command and the data, and
decides the part plan, the checksum (a resumed upload keeps its own) and whether the log's
lines can be trusted. ``upload --dry-run`` renders this same object, and ``Uploader.run`` carries
it out, so what the dry run shows is what the run does.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from s3_multipart_upload import checksums
from s3_multipart_upload.errors import BadInput, StateConflict
from s3_multipart_upload.job import UploadRequest
from s3_multipart_upload.plan import DEFAULT_PART_SIZE, Plan, check_equal_parts, human
from s3_multipart_upload.shard import all_logs
from s3_multipart_upload.sources import ChunkDirSource
from s3_multipart_upload.state import COMPLETED, Meta, PartRecord, read_meta, read_parts
from s3_multipart_upload.stream import BLOCK

log = logging.getLogger(__name__)
KEPT = "kept from the upload in progress (meta file)"


@dataclass(frozen=True)
class RunPlan:
    meta: Meta | None  # the upload in progress (or completed); None for a new one, and with --restart
    set_aside: Meta | None  # --restart: the upload META recorded, to forget
    parts: Plan
    part_size_why: str
    checksum: str
    checksum_why: str
    logged: dict[int, PartRecord]  # the log's lines for META's upload id
    trust_log: bool  # False when the log's lines cannot be tied to the data (historical META, adoption)
    upload_id_asked: str | None = None  # --upload-id with no META (or with --restart): adopt that upload
    # --checksum auto, a new multipart upload to a store not known to verify CRC64NVME: the upload is created for
    # CRC64NVME and one empty UploadPart with a wrong CRC64NVME asks the store (Uploader._probe), which decides
    probe: bool = False

    @property
    def adopting(self) -> bool:
        """--upload-id without META: the server's parts decide the part size (see Uploader._adopt)."""
        return self.meta is None and self.upload_id_asked is not None

    @property
    def single_put(self) -> bool:
        if self.meta is not None:
            return self.meta.upload_id is None
        return len(self.parts.parts) == 1 and self.upload_id_asked is None

    def describe(self, req: UploadRequest) -> dict[str, Any]:
        """The plan as ``--dry-run`` prints it (and ``--dry-run --json`` emits it)."""
        meta, plan = self.meta, self.parts
        shard = req.shard
        todo = [p for p in plan.parts if p.number not in self.logged and (shard is None or shard.owns(p.number))]
        if meta is not None and meta.status == COMPLETED:
            todo, requests = [], {}
        elif self.single_put:
            requests = {"PutObject": 1}
        else:
            requests = {"CreateMultipartUpload": 0 if meta or self.adopting else 1,
                        # one to resume, one before completing to repeat the parts' additional checksums
                        "ListParts": (0 if meta is None and not self.adopting else 1)
                        + (self.checksum != "MD5" and not self.probe),
                        "UploadPart": len(todo), "CompleteMultipartUpload": 1}
            if req.shard is not None:  # the list after its parts; the upload is created and completed by one shard
                requests["ListParts"] += 1
        if self.probe:  # the probe is an UploadPart too; the ListParts before completing only if the store verifies
            requests["UploadPart"] += 1
        threads = min(req.threads, max(1, len(todo)))
        return {
            "bucket": req.bucket, "key": req.key, "bytes": plan.total_size, "partSize": plan.part_size,
            "partSizeWhy": self.part_size_why, "parts": len(plan.parts), "lastPartSize": plan.parts[-1].length,
            "singlePut": self.single_put, "threads": req.threads,
            "checksum": f"{checksums.PROBED} or MD5" if self.probe else self.checksum,
            "checksumWhy": self.checksum_why, "memoryBound": threads * min(BLOCK, max(p.length for p in plan.parts)),
            "status": meta.status if meta else "new", "uploadId": meta.upload_id if meta else self.upload_id_asked,
            "partsLogged": len(self.logged), "bytesToSend": sum(p.length for p in todo),
            "requests": requests, "shard": str(shard) if shard else None,
            "shardParts": sum(1 for p in plan.parts if shard.owns(p.number)) if shard else None,
            "objectProperties": req.properties.shown(),
            "maxBandwidth": req.bandwidth.rate if req.bandwidth is not None else None,
        }


def check_paths(req: UploadRequest) -> None:
    """The state files must be files of their own, outside the data."""
    lock = req.meta_path.with_name(req.meta_path.name + ".lock")
    for path, flag in ((req.meta_path, "-m"), (req.parts_path, "-a"), (req.log_path, "-a"), (lock, "-m")):
        if req.source.covers(path):
            raise BadInput(f"{flag} {path} is (or would be taken for) the data to upload",
                           f"give {flag} a path of its own, outside the data (such as ../{path.name})")
    if req.meta_path.resolve() == req.parts_path.resolve():
        raise BadInput(f"-m and -a are the same file ({req.meta_path})", "give each a path of its own")


def check_meta(req: UploadRequest, meta: Meta, check_source: bool = True) -> None:
    """META must be this command's upload, of the data as it is now, with the object's properties it began with
    (``check_source`` False: --restart, which forgets both)."""
    if (meta.bucket, meta.key) != (req.bucket, req.key):
        raise StateConflict(
            f"meta file {req.meta_path} belongs to the upload of s3://{meta.bucket}/{meta.key}, not {req.where}",
            "give the same -b and -k as that upload, or another -m and -a path for this one",
        )
    for name, value in req.meta_extra.items():
        if meta.extra.get(name) != value:
            raise StateConflict(f"meta file {req.meta_path} records {name} {meta.extra.get(name)!r}, "
                                f"not {value!r}", "give the same options as that upload, or another -m and -a "
                                "path for this one")
    if check_source:
        check_properties(req, meta)
    if check_source and meta.source is not None:
        req.source.check_unchanged(meta.source, req.meta_path)


def check_properties(req: UploadRequest, meta: Meta) -> None:
    """A rerun keeps the object's properties: the upload was created with them (and its parts encrypted with its
    SSE-C key), so a command that asks for others is refused (exit 2), before anything is sent. A meta file from
    before properties were recorded holds none."""
    recorded = meta.extra.get("objectProperties") or {}
    asked = req.properties.recorded()
    for name in sorted(set(recorded) | set(asked)):
        if recorded.get(name) == asked.get(name):
            continue
        option = "--sse-c-key-file" if name == "sse_c_key_md5" else "--" + name.replace("_", "-")
        if name == "sse_c_key_md5":
            was = "no SSE-C key" if name not in recorded else f"a key whose MD5 is {recorded[name]}"
            now = "none" if name not in asked else "another key"
        else:
            was = "nothing" if name not in recorded else repr(recorded[name])
            now = "nothing" if name not in asked else repr(asked[name])
        raise BadInput(f"the upload in {req.meta_path} was begun with {option} {was}; this command gives {now}",
                       f"give the same {option} as that upload, or --restart to begin again with the new one")


def _checksum(req: UploadRequest, meta: Meta | None, single: bool, warn: bool) -> tuple[str, str, bool]:
    """(algorithm, why, probe). A resumed upload keeps the checksum it began with: its parts and its
    CreateMultipartUpload were made for it (and what a probe learnt is in META: a rerun never asks again). One begun
    without a recorded algorithm (the historical tool's), or adopted with --upload-id (created by another run or
    tool), continues with MD5 unless another one is asked for. A new multipart upload under auto to a store not
    known to verify CRC64NVME is created for it and asks the store (``probe``); one PutObject does not ask."""
    if meta is None:
        if req.upload_id is not None and req.auto_checksum and (req.checksum != "MD5" or req.checksum_probe):
            return "MD5", "auto: an adopted upload (--upload-id) was not created for an additional checksum", False
        if req.checksum_probe and req.upload_id is None:
            if single:
                return "MD5", checksums.ONE_PART_WHY, False
            return checksums.PROBED, req.checksum_why, True
        return req.checksum, req.checksum_why, False
    learnt = meta.extra.get(checksums.VERIFIES)
    kept = checksums.probed_why(learnt, learnt_now=False) if isinstance(learnt, bool) and req.auto_checksum else KEPT
    recorded = meta.checksum_algorithm or ("MD5" if req.auto_checksum else None)
    if recorded is None or recorded == req.checksum:
        return req.checksum, kept if recorded else req.checksum_why, False
    if warn and not req.auto_checksum:
        log.warning("This upload was started with --checksum %s; it keeps it (not %s).", recorded, req.checksum)
    return recorded, kept, False


def make_plan(req: UploadRequest, warn: bool = True) -> RunPlan:
    """The plan of this run. With ``warn``, says once what the command asked for that the upload cannot change."""
    meta = read_meta(req.meta_path)
    set_aside = None
    if meta is not None and req.restart:
        check_meta(req, meta, check_source=False)  # --restart is how a changed file starts over
        meta, set_aside = None, meta
    if meta is not None:
        check_meta(req, meta)
        if warn and req.split_size is not None and meta.split_size and req.split_size != meta.split_size:
            log.warning("This upload was started with -s %s; it keeps it (not %s).", human(meta.split_size),
                        human(req.split_size))
    plan = req.source.plan(meta.split_size if meta else req.split_size, fixed=meta is not None,
                           max_parts=req.max_parts)
    if req.equal_parts:
        check_equal_parts(plan, req.source.names if isinstance(req.source, ChunkDirSource) else None)
    single = len(plan.parts) == 1 and req.upload_id is None
    checksum, checksum_why, probe = _checksum(req, meta, single, warn)
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
    logged = read_logs(req, meta.upload_id) if meta is not None and meta.upload_id else {}
    return RunPlan(meta=meta, set_aside=set_aside, parts=plan, part_size_why=why, checksum=checksum,
                   checksum_why=checksum_why, logged=logged, trust_log=meta is not None and meta.source is not None,
                   upload_id_asked=req.upload_id if meta is None else None, probe=probe)


def read_logs(req: UploadRequest, upload_id: str) -> dict[int, PartRecord]:
    """The parts of ``upload_id`` in every log of the upload: -a's and each shard's (``PARTS.shard-I``)."""
    logged: dict[int, PartRecord] = {}
    for path in all_logs(req.parts_path):
        logged.update(read_parts(path, upload_id))
    return logged


def with_meta(run: RunPlan, meta: Meta, parts: Plan, logged: dict[int, PartRecord]) -> RunPlan:
    """The plan once an adopted upload's META is written (its part size came from the server)."""
    return dataclasses.replace(run, meta=meta, parts=parts, logged=logged, trust_log=False,
                               part_size_why="taken from the adopted upload's part 1")
