"""Checksums: which one proves a part on which store, computing them at the least CPU per byte, and S3's
composite and full-object forms.

``MD5`` works with every S3-compatible store: their part ETags are the MD5 of the bytes they
stored. The engine streams a part while hashing it and compares the ETag the store answers with
the MD5 of what it sent (see ``stream.py``); where the ETags turn out not to be MD5s (SSE-KMS,
SSE-C, some stores) it sends Content-MD5, which the store checks before it keeps the bytes.
``CRC64NVME``, ``CRC32C``, ``CRC32`` and ``SHA256`` go as S3's additional checksums
(x-amz-checksum-*): AWS S3 verifies them on arrival, other stores may ignore them. CRC64NVME
uploads are full-object uploads: S3 also checks, at completion, the CRC64NVME of the whole file,
which this module combines from the part CRCs (awscrt: 20+ GB/s, against MD5's 0.7 GB/s).

``--checksum auto`` (``choose``): CRC64NVME on AWS S3; elsewhere a new multipart upload asks the store
whether it verifies CRC64NVME, by one empty UploadPart with a wrong value (``probe_value``, sent by
``Uploader._probe``): refused, CRC64NVME; accepted, MD5. META records the answer (``VERIFIES``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

ALGORITHMS = ("MD5", "CRC64NVME", "CRC32C", "CRC32", "SHA256")
AUTO = "auto"
CHOICES = (AUTO, *ALGORITHMS)
FULL_OBJECT = frozenset({"CRC64NVME"})  # S3 checks the whole object's checksum at completion
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_COMPOSITE = re.compile(r"^([0-9a-f]{32})-(\d+)$")


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A running CRC with hashlib's interface."""

    def __init__(self, fn: Callable[[bytes | memoryview, int], int], width: int) -> None:
        self._fn = fn
        self._width = width
        self.value = 0

    def update(self, data: bytes | memoryview, /) -> None:
        self.value = self._fn(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(self._width // 8, "big")


def _crt() -> Any:
    """awscrt's checksums, imported when first needed: the import costs ~0.15 s of CPU, which an MD5 upload
    (the choice on every store but AWS S3) does not need to pay."""
    from awscrt import checksums

    return checksums


def new_hasher(algorithm: str) -> Hasher:
    if algorithm == "MD5":
        return hashlib.md5(usedforsecurity=False)
    if algorithm == "SHA256":
        return hashlib.sha256()
    if algorithm == "CRC32":
        return _Crc(zlib.crc32, 32)
    if algorithm == "CRC32C":
        return _Crc(_crt().crc32c, 32)
    if algorithm == "CRC64NVME":
        return _Crc(_crt().crc64nvme, 64)
    raise ValueError(f"unknown checksum algorithm {algorithm}")


@dataclass(frozen=True)
class PartChecksum:
    algorithm: str
    value: str  # base64, as S3 sends it in headers

    @property
    def md5_hex(self) -> str | None:
        """The MD5 as hex (what an MD5 ETag looks like) when the algorithm is MD5."""
        return base64.b64decode(self.value).hex() if self.algorithm == "MD5" else None

    def upload_part_args(self) -> dict[str, str]:
        if self.algorithm == "MD5":
            return {"ContentMD5": self.value}
        return {f"Checksum{self.algorithm}": self.value}


def finish(algorithm: str, hasher: Hasher) -> PartChecksum:
    return PartChecksum(algorithm, base64.b64encode(hasher.digest()).decode())


def compute(algorithm: str, data: bytes | memoryview) -> PartChecksum:
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return finish(algorithm, hasher)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def is_md5_etag(etag: str) -> bool:
    return bool(_MD5_HEX.match(etag.strip('"')))


def composite_etag(part_etags: list[str]) -> str | None:
    """S3's ETag for a multipart object, ``md5(md5_1 || ... || md5_n)-n``; None if a part ETag is not an MD5."""
    digests = []
    for etag in part_etags:
        etag = etag.strip('"')
        if not _MD5_HEX.match(etag):
            return None
        digests.append(bytes.fromhex(etag))
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def composite_checksum(algorithm: str, part_values: list[str]) -> str | None:
    """S3's checksum of a multipart object built from parts' additional checksums (base64): the checksum
    of their concatenated digests, then ``-N``; None if a part has none, or the algorithm has no such form."""
    if algorithm in ("MD5", *FULL_OBJECT) or not part_values or not all(part_values):
        return None
    try:
        joined = b"".join(base64.b64decode(v, validate=True) for v in part_values)
    except ValueError:
        return None
    return f"{compute(algorithm, joined).value}-{len(part_values)}"


def full_object_checksum(algorithm: str, parts: Sequence[tuple[str, int]]) -> str:
    """The checksum of the whole object from its parts' (base64 checksum, length), in order, without reading
    a byte: CRCs combine (crc(a || b) from crc(a), crc(b) and len(b)), which is what lets a resumed upload
    prove the whole file although no single run read it all."""
    if algorithm != "CRC64NVME":
        raise ValueError(f"{algorithm} has no full-object form here")
    crt = _crt()
    total = 0
    for value, length in parts:
        crc = int.from_bytes(base64.b64decode(value), "big")
        total = crt.combine_crc64nvme(total, crc, length)
    return base64.b64encode(total.to_bytes(8, "big")).decode()


def is_composite_etag(etag: str) -> bool:
    return bool(_COMPOSITE.match(etag.strip('"')))


def is_aws(endpoint_url: str | None) -> bool:
    """AWS S3 itself: the endpoint the client resolved (from --endpoint-url, AWS_ENDPOINT_URL, a profile, or
    boto3's own for the region) is an amazonaws.com host."""
    if not endpoint_url:
        return True
    host = urllib.parse.urlsplit(endpoint_url).hostname or ""
    return any(host == domain or host.endswith("." + domain) for domain in ("amazonaws.com", "amazonaws.com.cn"))


class Choice(NamedTuple):
    """What ``--checksum`` decides for a new upload: the algorithm, why, and whether a multipart upload first asks
    the store whether it verifies CRC64NVME (``probe``; then ``algorithm`` is what goes without asking: MD5)."""

    algorithm: str
    why: str
    probe: bool = False


PROBED = "CRC64NVME"  # what auto asks a store about, and uses where the store verifies it
VERIFIES = "verifiesCRC64NVME"  # META: what the probe learnt (true: the store refused a wrong CRC64NVME)
# The probe's value: the CRC64NVME of these bytes, sent with an empty body (whose CRC64NVME is 0).
PROBE_VALUE_OF = b"s3-multipart-upload checksum probe"


def probe_value() -> str:
    """A well-formed CRC64NVME (base64) that is wrong for an empty body."""
    return compute(PROBED, PROBE_VALUE_OF).value


ONE_PART_WHY = ("auto: one PutObject goes with Content-MD5, which every store verifies (a store other than AWS S3 is "
                "asked whether it verifies CRC64NVME only for a multipart upload)")


def probe_why(host: str | None) -> str:
    return (f"auto: {host} is not known to verify CRC64NVME; after CreateMultipartUpload one empty UploadPart with "
            "a wrong CRC64NVME asks it. Refused (BadDigest): the store verifies it, so CRC64NVME on every part and a "
            "full-object CRC64NVME at completion (and a ListParts before completing); accepted: MD5 by ETag. One "
            "part (a PutObject) goes with Content-MD5, which every store verifies, without asking")


def probed_why(verifies: bool, learnt_now: bool = True) -> str:
    """Why auto uses what it uses once the store's answer to the probe is known (now, or recorded in META)."""
    how = ("refused a wrong CRC64NVME (it verifies it)" if verifies
           else "accepted a wrong CRC64NVME (it does not verify it)")
    when = "" if learnt_now else ", as recorded in the meta file"
    if verifies:
        return f"auto: the store {how}{when}: CRC64NVME on every part and the whole file's at completion"
    return f"auto: the store {how}{when}: MD5, each part's ETag compared with the MD5 of the bytes sent"


def choose(requested: str, endpoint_url: str | None, controller: bool = False, copy: bool = False) -> Choice:
    """The checksum of a new upload and why: ``--checksum auto`` picks what the store proves."""
    if requested.upper() != AUTO.upper():
        return Choice(requested.upper(), "as asked (--checksum)")
    if controller:
        return Choice("MD5", "auto: through a controller's presigned URLs, each part's ETag is compared with the MD5 "
                             "of the bytes sent")
    if copy:
        return Choice("MD5", "auto: a copy reads each part once (a CRC sent up front would need every part read "
                             "twice from the source); its ETag is compared with the MD5 of the bytes sent")
    if is_aws(endpoint_url):
        return Choice("CRC64NVME", "auto: AWS S3 verifies each part's CRC64NVME on arrival and the whole file's at "
                                   "completion")
    host = urllib.parse.urlsplit(endpoint_url or "").hostname or endpoint_url
    return Choice("MD5", probe_why(host), probe=True)
