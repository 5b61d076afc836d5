"""``verify``: proves that a local file and an object hold the same bytes, with the strongest evidence the object
carries, without downloading it.

Evidence, strongest first (the first the object carries is used):

1. a full-object checksum (CRC64NVME, or CRC32/CRC32C of type FULL_OBJECT): HEAD with ChecksumMode ENABLED; the
   local CRC is combined from ranges hashed in parallel;
2. a composite checksum of the parts (CRC32C, CRC32, SHA256, SHA1 of type COMPOSITE, ``value-N``): the parts' sizes
   and checksums from GetObjectAttributes (ObjectParts), else the part size from HEAD PartNumber=1 and the count;
3. a composite MD5 ETag, ``md5(md5_1 || ... || md5_n)-n``: the part size from HEAD PartNumber=1 (or from this
   tool's state of the upload), the count after the dash;
4. the MD5 ETag of a one-part object (not under SSE-KMS or SSE-C, whose ETags are not MD5s);
5. with ``download``: the object's bytes, in ranged GETs (If-Match its ETag) read in parallel at flat memory,
   against the same ranges of the file, each range's CRC64NVME compared.

The local file is read once for the proof, in parallel ranges of ``pread``; when the proof says the bytes differ
and the parts' own checksums are known (ObjectParts, or this tool's parts log of the same object), a second pass
names the first part that differs. Nothing here writes to the terminal or to any state file.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s3_multipart_upload import checksums
from s3_multipart_upload.errors import ExitCode, Failure, failure_of, most_urgent
from s3_multipart_upload.plan import MiB
from s3_multipart_upload.s3 import Requester, error_code, translate
from s3_multipart_upload.state import COMPLETED, Meta, read_meta, read_parts

BLOCK = 1 * MiB
CHUNK = 64 * MiB  # ranges of a full-object CRC or a download when the object's parts are not known
DOWNLOAD_CHUNK = 8 * MiB
MAX_ATTRIBUTE_PAGES = 10  # ObjectParts pages of 1,000 parts: S3's 10,000 parts
_SUFFIX = re.compile(r"^(.*)-(\d+)$")

IDENTICAL = "identical"
DIFFERS = "differs"
MISSING_REMOTE = "missing_remote"
MISSING_LOCAL = "missing_local"
UNPROVEN = "unproven"
ERROR = "error"


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found for one file: ``status`` is identical, differs, missing_remote (no object at the key),
    missing_local (an object under the prefix with no file), unproven (the object carries no evidence; see
    ``download``) or error (``failure`` says why); ``how`` names the evidence, ``detail`` the difference found,
    ``part`` the first differing part where known."""

    file: str | None
    bucket: str
    key: str
    status: str
    how: str | None = None
    detail: str | None = None
    part: int | None = None
    size: int | None = None
    failure: Failure | None = None

    @property
    def code(self) -> ExitCode:
        if self.failure is not None:
            return self.failure.code
        return ExitCode.OK if self.status == IDENTICAL else ExitCode.CONFLICT

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"file": self.file, "bucket": self.bucket, "key": self.key, "status": self.status,
                               "how": self.how, "detail": self.detail, "part": self.part, "size": self.size,
                               "exitCode": int(self.code)}
        if self.failure is not None:
            doc |= {"error": self.failure.message, "hint": self.failure.hint}
        return doc


@dataclass
class VerifyResult:
    """Every file's verdict, in the order found; ``exit_code`` is 0 only when every file is proven identical."""

    verdicts: list[Verdict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> ExitCode:
        failures = [v.failure.code for v in self.verdicts if v.failure is not None]
        if failures:
            return most_urgent(failures + [v.code for v in self.verdicts])
        return ExitCode.OK if all(v.status == IDENTICAL for v in self.verdicts) else ExitCode.CONFLICT

    @property
    def identical(self) -> bool:
        return self.exit_code == ExitCode.OK

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (IDENTICAL, DIFFERS, MISSING_REMOTE, MISSING_LOCAL, UNPROVEN, ERROR)}
        for v in self.verdicts:
            out[v.status] += 1
        return out


@dataclass(frozen=True)
class Layout:
    """The object's parts as (offset, length), and where the layout came from."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def uniform(cls, size: int, part_size: int, count: int) -> Layout | None:
        """``count`` parts of ``part_size`` bytes, the last one the rest; None if that cannot make ``size``."""
        if count < 1 or part_size < 1 or not (count - 1) * part_size < size <= count * part_size:
            return None if size or count != 1 else cls(((0, 0),))
        return cls(tuple((i * part_size, min(part_size, size - i * part_size)) for i in range(count)))

    @classmethod
    def of_sizes(cls, sizes: Iterable[int]) -> Layout:
        ranges, offset = [], 0
        for n in sizes:
            ranges.append((offset, n))
            offset += n
        return cls(tuple(ranges))

    @property
    def size(self) -> int:
        return sum(n for _, n in self.ranges)


def chunks(size: int, chunk: int) -> tuple[tuple[int, int], ...]:
    return tuple((o, min(chunk, size - o)) for o in range(0, size, chunk)) or ((0, 0),)


class LocalHasher:
    """Hashes ranges of local files on a pool of threads (hashlib and awscrt let go of the GIL on large blocks)."""

    def __init__(self, threads: int) -> None:
        self.pool = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hash")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def ranges(self, path: Path, ranges: Iterable[tuple[int, int]], algorithms: tuple[str, ...]
               ) -> list[dict[str, bytes]]:
        """Each range's digests in each of ``algorithms``, in the order of ``ranges``."""
        fd = os.open(path, os.O_RDONLY)
        try:
            return list(self.pool.map(lambda r: hash_range(fd, r[0], r[1], algorithms, path), ranges))
        finally:
            os.close(fd)


class LocalChanged(Exception):
    """The file came out shorter than its size while it was read."""


def hash_range(fd: int, offset: int, length: int, algorithms: tuple[str, ...], path: Path) -> dict[str, bytes]:
    hashers = {a: checksums.new_hasher(a) for a in algorithms}
    end = offset + length
    while offset < end:  # each pass reads at least one byte or raises
        data = os.pread(fd, min(BLOCK, end - offset), offset)
        if not data:
            raise LocalChanged(f"{path} is shorter than it was at the start (read ended at byte {offset})")
        for h in hashers.values():
            h.update(data)
        offset += len(data)
    return {a: h.digest() for a, h in hashers.items()}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _crc_combine(algorithm: str, digests: list[bytes], lengths: list[int]) -> bytes:
    """The CRC of the whole file from its ranges' CRCs (CRCs combine without rereading a byte)."""
    crt = checksums._crt()
    combine = {"CRC64NVME": crt.combine_crc64nvme, "CRC32C": crt.combine_crc32c, "CRC32": crt.combine_crc32}[algorithm]
    total = 0
    for digest, length in zip(digests, lengths, strict=True):
        total = combine(total, int.from_bytes(digest, "big"), length)
    return total.to_bytes(len(digests[0]) if digests else (8 if algorithm == "CRC64NVME" else 4), "big")


def _split_count(value: str) -> tuple[str, int | None]:
    m = _SUFFIX.match(value)
    return (m.group(1), int(m.group(2))) if m else (value, None)


@dataclass(frozen=True)
class Target:
    """One file and the object to compare it with."""

    file: Path | None
    bucket: str
    key: str
    meta: Path | None = None  # this tool's state of the upload, where known: names the part that differs
    parts: Path | None = None


class Prover:
    """Proves targets, one ``prove`` call each (they may run in parallel): the requests go through ``requests``;
    ``optional`` (fewer tries) asks for what a store may lack (GetObjectAttributes, HEAD PartNumber)."""

    def __init__(self, requests: Requester, optional: Requester, hasher: LocalHasher, threads: int,
                 download: bool, state_of: Callable[[Path, str, str], tuple[Path, Path] | None]) -> None:
        self.requests = requests
        self.optional = optional
        self.hasher = hasher
        self.threads = threads
        self.download = download
        self.state_of = state_of

    def prove(self, target: Target) -> Verdict:
        try:
            return self._prove(target)
        except LocalChanged as exc:
            return self._verdict(target, DIFFERS, detail=str(exc) + " (the file changed while it was read)")
        except Exception as exc:
            failure = failure_of(translate(exc, target.bucket, target.key))
            return self._verdict(target, ERROR, failure=failure)

    @staticmethod
    def _verdict(target: Target, status: str, **kw: Any) -> Verdict:
        return Verdict(None if target.file is None else str(target.file), target.bucket, target.key, status, **kw)

    def _head(self, target: Target, **kw: Any) -> dict[str, Any] | None:
        try:
            return dict(self.requests.call("HeadObject", lambda c: c.head_object(
                Bucket=target.bucket, Key=target.key, **kw)))
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _prove(self, target: Target) -> Verdict:
        path = target.file
        assert path is not None
        try:
            st = path.stat()
        except FileNotFoundError:
            exists = self._head(target) is not None
            return self._verdict(target, MISSING_LOCAL,
                                 detail=f"no file {path}" + ("" if exists else "; no object either"))
        if not stat.S_ISREG(st.st_mode):
            return self._verdict(target, ERROR, failure=Failure(ExitCode.USAGE, f"{path} is not a regular file"))
        head = self._head(target, ChecksumMode="ENABLED")
        if head is None:
            return self._verdict(target, MISSING_REMOTE, detail=f"no object at s3://{target.bucket}/{target.key}",
                                 size=st.st_size)
        size = int(head["ContentLength"])
        if size != st.st_size:
            return self._verdict(target, DIFFERS, how="size", size=st.st_size,
                                 detail=f"the file holds {st.st_size} bytes, the object {size}")
        etag = str(head.get("ETag", "")).strip('"')
        trusted = self._trusted_log(target, etag, size)
        how, outcome = self._by_checksum(target, path, head, size, trusted)
        if outcome is None:
            how, outcome = self._by_etag(target, path, head, etag, size, trusted)
        if outcome is None:
            if not self.download:
                return self._verdict(target, UNPROVEN, how=None, size=size, detail=how + "; rerun with --download "
                                     "to compare the object's bytes")
            how, outcome = self._by_download(target, path, etag, size)
        same, detail, part = outcome
        if not same and part is None and self.download and not how.startswith("download"):
            # The object's evidence says a part differs but not which: the bytes say where (asked: --download).
            _, (_, where, _) = self._by_download(target, path, etag, size)
            detail = where or detail
        return self._verdict(target, IDENTICAL if same else DIFFERS, how=how, detail=detail, part=part, size=size)

    # -- evidence ---------------------------------------------------------------------------------------------

    def _by_checksum(self, target: Target, path: Path, head: dict[str, Any], size: int,
                     trusted: _Logged | None) -> tuple[str, tuple[bool, str | None, int | None] | None]:
        found = [(a, str(head[f"Checksum{a}"])) for a in ("CRC64NVME", "CRC32C", "CRC32", "SHA256", "SHA1")
                 if head.get(f"Checksum{a}")]
        if not found:
            return "", None
        algorithm, value = found[0]
        base, count = _split_count(value)
        kind = str(head.get("ChecksumType") or "")
        if not kind:  # stores that do not say (moto): a multipart object's checksum is composite but for CRC64NVME
            etag = str(head.get("ETag", "")).strip('"')
            multipart = count is not None or (checksums.is_composite_etag(etag) and not etag.endswith("-1"))
            kind = "COMPOSITE" if multipart and algorithm != "CRC64NVME" else "FULL_OBJECT"
        if kind != "COMPOSITE":
            return self._full_object(path, algorithm, base, size, trusted)
        return self._composite(target, path, algorithm, base, count, size, trusted)

    def _full_object(self, path: Path, algorithm: str, expected: str, size: int, trusted: _Logged | None
                     ) -> tuple[str, tuple[bool, str | None, int | None] | None]:
        how = f"full-object {algorithm}"
        if algorithm in ("SHA256", "SHA1"):  # a one-part object: its hash cannot be split over threads
            (digest,) = self.hasher.ranges(path, [(0, size)], (algorithm,))
            same = _b64(digest[algorithm]) == expected
        else:
            layout = trusted.layout.ranges if trusted is not None else chunks(size, CHUNK)
            digests = self.hasher.ranges(path, layout, (algorithm,))
            whole = _crc_combine(algorithm, [d[algorithm] for d in digests], [n for _, n in layout])
            same = _b64(whole) == expected
            if not same and trusted is not None and trusted.algorithm == algorithm:
                part = trusted.first_differing({algorithm: [_b64(d[algorithm]) for d in digests]})
                return how, (False, _part_detail(part, trusted.layout), part)
        if same:
            return how, (True, None, None)
        return how, (False, *self._name_part(path, trusted))

    def _composite(self, target: Target, path: Path, algorithm: str, expected: str, count: int | None, size: int,
                   trusted: _Logged | None) -> tuple[str, tuple[bool, str | None, int | None] | None]:
        parts = self._object_parts(target, algorithm)
        if parts is not None:
            layout = Layout.of_sizes(n for n, _ in parts)
            reference: list[str] | None = [v for _, v in parts]
        elif trusted is not None:
            layout, reference = trusted.layout, None
        else:
            found = self._part_layout(target, size, count)
            if found is None:
                return (f"a composite {algorithm} whose part sizes this store does not tell "
                        "(no GetObjectAttributes ObjectParts, no HEAD PartNumber)"), None
            layout, reference = found, None
        if layout.size != size:
            return f"a composite {algorithm} whose parts do not add up to the object's size", None
        digests = self.hasher.ranges(path, layout.ranges, (algorithm,))
        mine = [_b64(d[algorithm]) for d in digests]
        how = f"composite {algorithm} of {len(layout.ranges)} parts"
        whole = checksums.composite_checksum(algorithm, mine)
        if whole is not None and _split_count(whole)[0] == expected:
            return how, (True, None, None)
        if reference is not None:
            part = next((i + 1 for i, (a, b) in enumerate(zip(mine, reference, strict=True)) if a != b), None)
            return how, (False, _part_detail(part, layout), part)
        if trusted is not None and trusted.algorithm == algorithm:
            part = trusted.first_differing({algorithm: mine})
            return how, (False, _part_detail(part, layout), part)
        return how, (False, "a part differs (the object does not say which)", None)

    def _by_etag(self, target: Target, path: Path, head: dict[str, Any], etag: str, size: int,
                 trusted: _Logged | None) -> tuple[str, tuple[bool, str | None, int | None] | None]:
        if head.get("SSECustomerAlgorithm") or str(head.get("ServerSideEncryption", "")).startswith("aws:kms"):
            return "the object carries no checksum, and its ETag is not an MD5 (SSE-KMS or SSE-C)", None
        if checksums.is_composite_etag(etag):
            count = int(etag.rsplit("-", 1)[1])
            layout = trusted.layout if trusted is not None and len(trusted.layout.ranges) == count else \
                self._part_layout(target, size, count)
            if layout is None:
                return "a composite ETag whose part size this store does not tell (no HEAD PartNumber)", None
            digests = self.hasher.ranges(path, layout.ranges, ("MD5",))
            mine = [d["MD5"].hex() for d in digests]
            how = f"composite MD5 ETag of {count} parts"
            if checksums.composite_etag(mine) == etag:
                return how, (True, None, None)
            if trusted is not None:
                part = trusted.first_differing({"MD5": mine})
                return how, (False, _part_detail(part, layout), part)
            return how, (False, "a part differs (the ETag does not say which)", None)
        if checksums.is_md5_etag(etag):
            (digest,) = self.hasher.ranges(path, [(0, size)], ("MD5",))
            how = "MD5 ETag"
            if digest["MD5"].hex() == etag:
                return how, (True, None, None)
            return how, (False, *self._name_part(path, trusted))
        return f"the object carries no checksum, and its ETag ({etag or 'none'}) is not an MD5", None

    def _by_download(self, target: Target, path: Path, etag: str, size: int
                     ) -> tuple[str, tuple[bool, str | None, int | None]]:
        layout = chunks(size, DOWNLOAD_CHUNK)
        if size == 0:
            return "download (empty object)", (True, None, None)
        fd = os.open(path, os.O_RDONLY)
        try:
            def one(r: tuple[int, int]) -> bool:
                local = hash_range(fd, r[0], r[1], ("CRC64NVME",), path)["CRC64NVME"]
                return local == self._remote_crc(target, etag, r)

            with cf.ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="get") as pool:
                results = list(pool.map(one, layout))
        finally:
            os.close(fd)
        how = f"download ({len(layout)} ranged GETs, CRC64NVME of each range)"
        first = next((i for i, ok in enumerate(results) if not ok), None)
        if first is None:
            return how, (True, None, None)
        offset, length = layout[first]
        return how, (False, f"bytes {offset}-{offset + length - 1} differ (the first range that does)", None)

    def _remote_crc(self, target: Target, etag: str, r: tuple[int, int]) -> bytes:
        offset, length = r

        def get(client: Any) -> bytes:
            kw = {"IfMatch": f'"{etag}"'} if etag else {}
            body = client.get_object(Bucket=target.bucket, Key=target.key,
                                     Range=f"bytes={offset}-{offset + length - 1}", **kw)["Body"]
            try:
                hasher = checksums.new_hasher("CRC64NVME")
                got = 0
                for _ in range(length // BLOCK + 2):  # bounded: a body longer than asked is refused below
                    data = body.read(BLOCK)
                    if not data:
                        break
                    got += len(data)
                    hasher.update(data)
                if got != length:
                    raise LocalChanged(f"s3://{target.bucket}/{target.key} answered {got} bytes for a range of "
                                       f"{length}")
                return hasher.digest()
            finally:
                body.close()

        return self.requests.call("GetObject", get)

    # -- what the object and the state say about its parts ----------------------------------------------------

    def _object_parts(self, target: Target, algorithm: str) -> list[tuple[int, str]] | None:
        """(size, checksum) of each part from GetObjectAttributes, or None where the store does not say."""
        parts: list[tuple[int, str]] = []
        marker = 0
        for _ in range(MAX_ATTRIBUTE_PAGES):
            def ask(client: Any, m: int = marker) -> Any:
                return client.get_object_attributes(Bucket=target.bucket, Key=target.key,
                                                    ObjectAttributes=["ObjectParts"], MaxParts=1000,
                                                    PartNumberMarker=m)
            try:
                page = self.optional.call("GetObjectAttributes", ask)
            except Exception:
                return None  # a store without it (rclone answers 500, others 501): the next evidence
            info = page.get("ObjectParts") or {}
            for p in info.get("Parts", []):
                value = p.get(f"Checksum{algorithm}")
                if value is None or "Size" not in p:
                    return None
                parts.append((int(p["Size"]), str(value)))
            if not info.get("IsTruncated"):
                return parts or None
            marker = int(info.get("NextPartNumberMarker", 0))
        return None

    def _part_layout(self, target: Target, size: int, count: int | None) -> Layout | None:
        """The parts' layout from HEAD PartNumber=1 (the first part's size; the part count where ``count`` is not
        known). None where the store ignores PartNumber (it answers the whole object and no PartsCount)."""
        try:
            first = self.optional.call("HeadObject", lambda c: c.head_object(
                Bucket=target.bucket, Key=target.key, PartNumber=1))
        except Exception:
            return None
        parts_count = first.get("PartsCount")
        if count is None:
            count = None if parts_count is None else int(parts_count)
        if count is None or (parts_count is not None and int(parts_count) != count):
            return None
        part_size = int(first["ContentLength"])
        if count > 1 and part_size >= size:
            return None
        return Layout.uniform(size, part_size, count)

    def _trusted_log(self, target: Target, etag: str, size: int) -> _Logged | None:
        """This tool's parts log of this very object (META completed with the object's current ETag): each
        part's size, ETag and checksum as sent. Used to lay out parts and to name the one that differs."""
        where = (target.meta, target.parts) if target.meta is not None else None
        if where is None and target.file is not None:
            where = self.state_of(target.file, target.bucket, target.key)
        if where is None or where[0] is None:
            return None
        meta_path, parts_path = where
        try:
            meta = read_meta(meta_path)
            if meta is None or meta.status != COMPLETED or str(meta.extra.get("eTag", "")).strip('"') != etag \
                    or meta.upload_id is None or (meta.bucket, meta.key) != (target.bucket, target.key):
                return None
            records = read_parts(parts_path or meta_path.with_name("parts.jsonl"), meta.upload_id)
        except Exception:
            return None
        return _Logged.of(meta, records, size)

    def _name_part(self, path: Path, trusted: _Logged | None) -> tuple[str | None, int | None]:
        """After a whole-object check failed: the first part whose bytes differ from the log's, by a second read."""
        algorithms = () if trusted is None else tuple(trusted.algorithms())
        if trusted is None or not algorithms:
            return None, None
        digests = self.hasher.ranges(path, trusted.layout.ranges, algorithms)
        values = {a: [d[a].hex() if a == "MD5" else _b64(d[a]) for d in digests] for a in algorithms}
        part = trusted.first_differing(values)
        return _part_detail(part, trusted.layout), part


def _part_detail(part: int | None, layout: Layout) -> str:
    if part is None:
        return "a part differs (not one the parts log names)"
    offset, length = layout.ranges[part - 1]
    return f"part {part} differs (bytes {offset}-{offset + length - 1})"


@dataclass
class _Logged:
    """A completed upload's parts as this tool logged them."""

    algorithm: str | None
    layout: Layout
    etags: list[str]
    values: list[str | None]

    @classmethod
    def of(cls, meta: Meta, records: dict[int, Any], size: int) -> _Logged | None:
        count = meta.part_count or len(records)
        if not records or sorted(records) != list(range(1, count + 1)):
            return None
        ordered = [records[n] for n in range(1, count + 1)]
        sizes = [r.size if r.size is not None else meta.split_size for r in ordered]
        sizes[-1] = size - sum(sizes[:-1]) if ordered[-1].size is None else sizes[-1]
        layout = Layout.of_sizes(sizes)
        if layout.size != size or any(n < 0 for n in sizes):
            return None
        return cls(meta.checksum_algorithm, layout, [r.etag for r in ordered], [r.checksum for r in ordered])

    def algorithms(self) -> Iterator[str]:
        if self.algorithm and self.algorithm != "MD5" and all(self.values):
            yield self.algorithm
        if all(checksums.is_md5_etag(e) for e in self.etags):
            yield "MD5"

    def first_differing(self, mine: dict[str, list[str]]) -> int | None:
        """The first part whose local value differs from the logged one, in any algorithm both sides have."""
        for i in range(len(self.layout.ranges)):
            for algorithm, values in mine.items():
                logged = self.etags[i] if algorithm == "MD5" else (
                    self.values[i] if algorithm == self.algorithm else None)
                if logged is not None and i < len(values) and values[i] != logged:
                    return i + 1
        return None


MAX_LIST_PAGES = 1_001  # ListObjectsV2 pages of 1,000 keys: the walk's bound of a million files


def keys_under(requests: Requester, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    """Every (key, size) under ``prefix``, page by page."""
    token: str | None = None
    for _ in range(MAX_LIST_PAGES):
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token

        def ask(client: Any, kw: dict[str, Any] = kw) -> Any:
            return client.list_objects_v2(**kw)

        page = requests.call("ListObjectsV2", ask)
        for obj in page.get("Contents", []):
            yield str(obj["Key"]), int(obj.get("Size", 0))
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
    raise RuntimeError(f"s3://{bucket}/{prefix} lists more than {MAX_LIST_PAGES} pages of keys")


def run(prover: Prover, targets: Iterable[Target], window: int, on_verdict: Callable[[Verdict], None]
        ) -> list[Verdict]:
    """Each target proven, ``window`` at a time, the verdicts told in the order of ``targets``."""
    verdicts: list[Verdict] = []
    pool = cf.ThreadPoolExecutor(max_workers=window, thread_name_prefix="verify")
    in_flight: list[cf.Future[Verdict]] = []

    def take(future: cf.Future[Verdict]) -> None:
        verdict = future.result()
        verdicts.append(verdict)
        on_verdict(verdict)

    try:
        for target in targets:
            in_flight.append(pool.submit(prover.prove, target))
            if len(in_flight) >= window * 2:
                take(in_flight.pop(0))
        while in_flight:
            take(in_flight.pop(0))
    finally:
        pool.shutdown(wait=not in_flight, cancel_futures=True)
    return verdicts
