"""The shapes of the controller's HTTP API: what each route takes and answers (pydantic), and the errors
it may answer with. The routes are in api.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from s3_multipart_upload.plan import MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE
from s3_multipart_upload.service import db
from s3_multipart_upload.service.model import Upload
from s3_multipart_upload.service.review import Change
from s3_multipart_upload.service.storage import Presigned

MAX_BODY_BYTES = 2**20  # a completion of 10,000 parts with their quoted ETags is about 650 KB

PRINTABLE = r"^[\x20-\x7e]*$"
STATUS_PATTERN = f"^({'|'.join(db.STATUSES)})$"
Key = Annotated[str, Field(min_length=1, max_length=1024, description="object key (at most 1,024 bytes of UTF-8)")]
ContentType = Annotated[str | None, Field(default=None, max_length=255, pattern=PRINTABLE)]
Size = Annotated[int | None, Field(default=None, ge=0, le=MAX_OBJECT_SIZE, description="bytes of the whole file")]
PartSize = Annotated[int | None, Field(default=None, ge=MIN_PART_SIZE, le=MAX_PART_SIZE)]
PartNumber = Annotated[int, Field(ge=1, le=MAX_PARTS)]
UploadId = Annotated[str, Path(min_length=1, max_length=1024)]
FileId = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
ETag = Annotated[str, Field(min_length=1, max_length=255, pattern=PRINTABLE)]
Sha256 = Annotated[str | None, Field(default=None, pattern=r"^[0-9a-fA-F]{64}$",
                                     description="SHA-256 of the whole file, hex: the controller checks the object "
                                                 "against it once uploaded, and accepts or rejects it")]
Crc64 = Annotated[str | None, Field(default=None, pattern=r"^[A-Za-z0-9+/]{11}=$",
                                    description="CRC64NVME of the whole file, base64 of its 8 bytes (as S3's "
                                                "ChecksumCRC64NVME): checked like sha256")]
Reason = Annotated[str, Field(min_length=1, max_length=1024, description="why: recorded with the change")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    detail: str
    code: str


class Me(BaseModel):
    principal: str
    roles: list[str]


class PresignedUrl(BaseModel):
    url: str = Field(description="use it as is; it expires at expires_at")
    method: str
    expires_at: str


class PresignedObject(PresignedUrl):
    key: str
    headers: dict[str, str] = Field(default_factory=dict, description="send these headers with the PUT, as they "
                                    "are: the controller's policy (storage class, encryption, tags) is signed in")


class PresignedPart(PresignedUrl):
    part_number: int


class UploadOut(BaseModel):
    upload_id: str
    file_id: str | None
    bucket: str
    key: str
    status: str
    part_size: int
    size: int | None
    etag: str | None
    object_size: int | None
    created_at: str | None
    updated_at: str | None
    sha256: str | None = Field(description="the SHA-256 its client declared at init")
    crc64nvme: str | None = Field(description="the CRC64NVME its client declared at init")
    status_by: str | None = Field(description="who made the last change: a principal, 'verifier' or 'controller'")
    reason: str | None = Field(description="why the last change was made (a rejection always says)")


class PartOut(BaseModel):
    PartNumber: int
    ETag: str
    Size: int


class PartsOut(BaseModel):
    upload_id: str
    parts: list[PartOut]


class PutUrlIn(Strict):
    key: Key
    content_type: ContentType = None


Metadata = Annotated[dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")],
                          Annotated[str, Field(max_length=2048)]] | None,
                     Field(max_length=64, description="user metadata (x-amz-meta-*): the keys serve allows "
                                                      "(--metadata-key), at most 2 KB in all")]


class InitIn(Strict):
    key: Key
    content_type: ContentType = None
    metadata: Metadata = None
    size: Size = None
    part_size: PartSize = None
    sha256: Sha256 = None
    crc64nvme: Crc64 = None


class InitOut(BaseModel):
    upload_id: str
    key: str
    part_size: int


class PartUrlIn(Strict):
    key: Key
    upload_id: Annotated[str, Field(min_length=1, max_length=1024)]
    part_number: PartNumber


class CompletedPart(Strict):
    PartNumber: PartNumber
    ETag: ETag


class CompleteIn(Strict):
    key: Key
    upload_id: Annotated[str, Field(min_length=1, max_length=1024)]
    parts: Annotated[list[CompletedPart], Field(min_length=1, max_length=MAX_PARTS)]
    sha256: Sha256 = None  # if not declared at init: computed while sending
    crc64nvme: Crc64 = None


class AbortIn(Strict):
    key: Key
    upload_id: Annotated[str, Field(min_length=1, max_length=1024)]


class CreateIn(Strict):
    size: Size = None
    part_size: PartSize = None
    content_type: ContentType = None
    metadata: Metadata = None
    sha256: Sha256 = None
    crc64nvme: Crc64 = None


class PatchIn(Strict):
    status: Annotated[str, Field(description=f"one of {', '.join(db.STATUSES)}", pattern=STATUS_PATTERN)]
    parts: Annotated[dict[PartNumber, ETag] | None, Field(default=None, max_length=MAX_PARTS,
                                                          description="part number -> ETag; with status uploaded")]
    reason: Annotated[str | None, Field(default=None, max_length=1024, description="why (recorded)")] = None
    sha256: Sha256 = None  # with status uploaded, if not declared at init: computed while sending
    crc64nvme: Crc64 = None


class ReviewIn(Strict):
    status: Annotated[str, Field(pattern="^(accepted|rejected)$")]
    reason: Reason


class ChangeOut(BaseModel):
    from_status: str | None = Field(description="None: the upload's creation")
    to_status: str
    actor: str = Field(description="owner, reviewer, verifier or controller")
    by: str
    reason: str | None
    at: str | None


class HistoryOut(BaseModel):
    upload_id: str
    changes: list[ChangeOut]


class UploadsOut(BaseModel):
    uploads: list[UploadOut]


def upload_out(u: Upload, full_key: bool = False) -> UploadOut:
    """The upload as the API shows it: to its owner, a key-centric upload's key is the one the owner named."""
    key = u.user_key if u.file_id is None and not full_key else u.key
    return UploadOut(upload_id=u.upload_id, file_id=u.file_id, bucket=u.bucket, key=key, status=u.status,
                     part_size=u.part_size, size=u.size, etag=u.etag, object_size=u.object_size,
                     created_at=u.created_at, updated_at=u.updated_at, sha256=u.sha256, crc64nvme=u.crc64nvme,
                     status_by=u.status_by, reason=u.reason)


def change_out(c: Change) -> ChangeOut:
    return ChangeOut(from_status=c.from_status, to_status=c.to_status, actor=c.actor, by=c.by, reason=c.reason,
                     at=c.at)


def url_fields(p: Presigned) -> dict[str, Any]:
    return {"url": p.url, "method": p.method, "expires_at": p.expires_at}


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "no token, or an unknown one"},
    403: {"model": Error, "description": "the move is someone else's: a reviewer's or the verifier's"},
    404: {"model": Error, "description": "no such upload or file, or it belongs to another principal"},
    409: {"model": Error, "description": "the upload's status does not allow this, or the principal has the most "
                                         "pending uploads allowed (TooManyPendingUploads)"},
    413: {"model": Error, "description": f"the request body is over {MAX_BODY_BYTES} bytes"},
    429: {"model": Error, "description": "too many failed sign-ins from this address: wait Retry-After seconds"},
    503: {"model": Error, "description": "the storage or the database did not answer: retry later"},
}
