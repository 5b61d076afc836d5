"""What the controller's layers share: an upload as read from the database, the error every layer answers
with, who is asking (a principal and its roles), and the checks of the names a caller sends."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from s3_multipart_upload.controller import FILE_ID, FILE_ID_RULE
from s3_multipart_upload.plan import MAX_PARTS
from s3_multipart_upload.service import db

MAX_KEY_BYTES = 1024
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
REVIEWER = "reviewer"  # the role that may accept or reject an upload (status.py)


class ServiceError(Exception):
    """An answer other than success: HTTP status, a stable machine code, and a sentence for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def not_found(upload_id: str) -> ServiceError:
    return ServiceError(404, "NoSuchUpload", f"no upload {upload_id!r} (or it belongs to someone else)")


@dataclass(frozen=True)
class Caller:
    """Who sends a request: a principal (a tokens file's name, or a JWT's claim) and its roles."""

    principal: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_reviewer(self) -> bool:
        return REVIEWER in self.roles


@dataclass(frozen=True)
class Upload:
    upload_id: str
    file_id: str | None
    bucket: str
    key: str
    owner: str
    status: str
    part_size: int
    size: int | None
    etag: str | None
    object_size: int | None
    created_at: str | None
    updated_at: str | None
    sha256: str | None = None
    crc64nvme: str | None = None
    status_by: str | None = None
    reason: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Upload:
        return cls(row.s3_upload_id, row.file_id, row.bucket, row.key, row.owner, row.status, row.part_size,
                   row.size, row.etag, row.object_size, db.iso(row.created_at), db.iso(row.updated_at),
                   row.sha256, row.crc64nvme, row.status_by, row.reason)

    @property
    def user_key(self) -> str:
        """The key as its owner named it (key-centric family): without the service's namespace."""
        marker = f"users/{self.owner}/"
        return self.key.split(marker, 1)[1] if marker in self.key else self.key

    @property
    def declared(self) -> bool:
        """Whether the client declared a checksum of the whole file, which the verifier then checks."""
        return self.sha256 is not None or self.crc64nvme is not None


def check_key(key: str) -> None:
    if not key:
        raise ServiceError(422, "InvalidKey", "the key is empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ServiceError(422, "InvalidKey", f"the key is {len(key.encode('utf-8', 'surrogatepass'))} bytes; "
                                              f"S3 allows at most {MAX_KEY_BYTES}")
    if CONTROL.search(key):
        raise ServiceError(422, "InvalidKey", "the key contains control characters")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ServiceError(422, "InvalidKey", "the key is not valid UTF-8 text") from None
    if key.startswith("/") or any(seg in (".", "..") for seg in key.split("/")):
        raise ServiceError(422, "InvalidKey", "the key may not start with / nor contain . or .. segments")


def check_file_id(file_id: str) -> None:
    if not FILE_ID.fullmatch(file_id):
        raise ServiceError(422, "InvalidFileId", f"a file id is {FILE_ID_RULE}")


def check_part_number(part_number: int) -> None:
    if not 1 <= part_number <= MAX_PARTS:
        raise ServiceError(422, "InvalidPartNumber", f"part numbers go from 1 to {MAX_PARTS}, not {part_number}")


@dataclass(frozen=True)
class Declared:
    """The whole file's checksums as a client declares them at init; the verifier checks the object against them."""

    sha256: str | None = None  # hex
    crc64nvme: str | None = None  # base64 of the 8 bytes, big-endian (S3's ChecksumCRC64NVME)

    def normalised(self) -> Declared:
        sha = None
        if self.sha256 is not None:
            if not SHA256_HEX.fullmatch(self.sha256):
                raise ServiceError(422, "InvalidChecksum", "sha256 is 64 hexadecimal digits")
            sha = self.sha256.lower()
        crc = None
        if self.crc64nvme is not None:
            try:
                raw = base64.b64decode(self.crc64nvme, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 8:
                raise ServiceError(422, "InvalidChecksum", "crc64nvme is the base64 of 8 bytes, as S3 writes "
                                                           "ChecksumCRC64NVME (12 characters ending in '=')")
            crc = base64.b64encode(raw).decode()
        return Declared(sha, crc)
