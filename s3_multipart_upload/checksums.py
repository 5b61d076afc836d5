"""Per-part checksums that the server verifies on arrival, each byte hashed once.

``MD5`` (the default) goes as Content-MD5, which every S3-compatible store checks, and its
digest is also what such stores return as the part's ETag, so it verifies the completed
object's composite ETag too. ``CRC32`` and ``SHA256`` go as S3's additional checksums
(x-amz-checksum-*): cheaper to compute, but only stores that implement them check them.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from dataclasses import dataclass

ALGORITHMS = ("MD5", "CRC32", "SHA256")
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_COMPOSITE = re.compile(r"^([0-9a-f]{32})-(\d+)$")


@dataclass(frozen=True)
class PartChecksum:
    algorithm: str
    value: str  # base64, as S3 sends it in headers
    md5_hex: str | None  # the MD5 as hex when the algorithm is MD5

    def upload_part_args(self) -> dict[str, str]:
        if self.algorithm == "MD5":
            return {"ContentMD5": self.value}
        return {f"Checksum{self.algorithm}": self.value}


def compute(algorithm: str, data: bytes | memoryview) -> PartChecksum:
    if algorithm == "MD5":
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        return PartChecksum("MD5", base64.b64encode(digest).decode(), digest.hex())
    if algorithm == "CRC32":
        return PartChecksum("CRC32", base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode(), None)
    if algorithm == "SHA256":
        return PartChecksum("SHA256", base64.b64encode(hashlib.sha256(data).digest()).decode(), None)
    raise ValueError(f"unknown checksum algorithm {algorithm}")


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
    of their concatenated digests, then ``-N``; None if a part has none or the algorithm is MD5."""
    if algorithm == "MD5" or not part_values or not all(part_values):
        return None
    try:
        joined = b"".join(base64.b64decode(v, validate=True) for v in part_values)
    except ValueError:
        return None
    if algorithm == "CRC32":
        digest = zlib.crc32(joined).to_bytes(4, "big")
    elif algorithm == "SHA256":
        digest = hashlib.sha256(joined).digest()
    else:
        return None
    return f"{base64.b64encode(digest).decode()}-{len(part_values)}"


def is_composite_etag(etag: str) -> bool:
    return bool(_COMPOSITE.match(etag.strip('"')))
