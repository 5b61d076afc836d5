"""The controller's side of S3: it holds the credentials, creates and completes uploads, and signs URLs.

Presigned URLs are returned to the caller and never logged.
"""

from __future__ import annotations

import base64
import datetime as dt
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.exceptions
from botocore.config import Config

from s3_multipart_upload.s3 import Kind, classify, error_code
from s3_multipart_upload.s3 import list_all_parts as _list_all_parts

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


T = TypeVar("T")
# Refusals that are about the service's own credentials or bucket, not about what the caller asked.
SERVICE_SIDE = frozenset({"AccessDenied", "403", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                          "AllAccessDisabled", "InvalidBucketName"})


class StorageError(Exception):
    """S3 said no; ``status`` is what the API answers with, ``code`` is S3's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Head:
    size: int
    etag: str  # without quotes
    last_modified: dt.datetime | None
    crc64nvme: str | None = None  # the store's full-object CRC64NVME (base64), when asked for and given


@dataclass(frozen=True)
class Digests:
    """What reading an object found: its size, and the checksums asked for."""

    size: int
    sha256: str | None  # hex
    crc64nvme: str | None  # base64, as S3 writes it


READ_BLOCK = 8 * 2**20  # bytes hashed at a time while reading an object: the memory a verification holds


@dataclass(frozen=True)
class Presigned:
    url: str
    method: str
    expires_at: str
    headers: dict[str, str] = field(default_factory=dict)  # to send with the request, as they are (signed in)


# The headers of the serve policy's create arguments (``--storage-class``, ``--sse``, ...), for presigned PUTs.
_POLICY_HEADERS = {"StorageClass": "x-amz-storage-class", "ServerSideEncryption": "x-amz-server-side-encryption",
                   "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id", "Tagging": "x-amz-tagging",
                   "BucketKeyEnabled": "x-amz-server-side-encryption-bucket-key-enabled"}


def _header_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class Storage:
    def __init__(self, bucket: str, endpoint_url: str | None = None, profile: str | None = None,
                 region: str | None = None, url_expiry: int = 900, policy: Mapping[str, Any] | None = None) -> None:
        self.bucket = bucket
        # serve's policy for every object it creates (storage class, encryption, tags): CreateMultipartUpload's and
        # PutObject's arguments (properties.ObjectProperties.create_args)
        self.policy = dict(policy or {})
        self.url_expiry = url_expiry
        session = boto3.session.Session(profile_name=profile, region_name=region)
        config = Config(
            signature_version="s3v4",
            retries={"max_attempts": 4, "mode": "standard"},  # a request of the service: short retries
            connect_timeout=10, read_timeout=120,
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        self.client: S3Client = session.client("s3", endpoint_url=endpoint_url, config=config)

    def _presign(self, operation: str, params: dict[str, Any], method: str) -> Presigned:
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.url_expiry)
        url = self.client.generate_presigned_url(operation, Params={"Bucket": self.bucket, **params},
                                                 ExpiresIn=self.url_expiry, HttpMethod=method)
        return Presigned(url, method, expires.strftime("%Y-%m-%dT%H:%M:%SZ"))

    def presign_part(self, key: str, upload_id: str, part_number: int) -> Presigned:
        return self._presign("upload_part", {"Key": key, "UploadId": upload_id, "PartNumber": part_number}, "PUT")

    def presign_put(self, key: str, content_type: str | None) -> Presigned:
        """A one-request upload. The policy's headers are signed into the URL, so the client must send them: they
        come back in ``headers`` (S3 refuses the PUT without them, SignatureDoesNotMatch)."""
        params: dict[str, Any] = {"Key": key, **self.policy}
        if content_type:
            params["ContentType"] = content_type
        signed = self._presign("put_object", params, "PUT")
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(signed.url).query))
        names = query.get("X-Amz-SignedHeaders", "").split(";")
        headers = {header: _header_value(self.policy[arg]) for arg, header in _POLICY_HEADERS.items()
                   if arg in self.policy and header in names}
        if content_type and "content-type" in names:
            headers["content-type"] = content_type
        return Presigned(signed.url, signed.method, signed.expires_at, headers)

    def presign_get(self, key: str) -> Presigned:
        return self._presign("get_object", {"Key": key}, "GET")

    def origin(self) -> str | None:
        """scheme://host[:port] of the presigned URLs (where browsers send the parts), or None if signing fails
        (no credentials yet)."""
        try:
            url = self.presign_part("k", "u", 1).url
        except botocore.exceptions.BotoCoreError:
            return None
        parts = urllib.parse.urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    def create(self, key: str, content_type: str | None, metadata: Mapping[str, str] | None = None) -> str:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, **self.policy}
        if content_type:
            args["ContentType"] = content_type
        if metadata:
            args["Metadata"] = dict(metadata)
        return _mapped("CreateMultipartUpload", key, lambda: self.client.create_multipart_upload(**args)["UploadId"])

    def complete(self, key: str, upload_id: str, parts: dict[int, str]) -> str:
        listed = [{"PartNumber": n, "ETag": f'"{etag.strip(chr(34))}"'} for n, etag in sorted(parts.items())]
        response = _mapped("CompleteMultipartUpload", key, lambda: self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}))  # type: ignore[typeddict-item]
        return str(response.get("ETag", "")).strip('"')

    def abort(self, key: str, upload_id: str) -> None:
        _mapped("AbortMultipartUpload", key,
                lambda: self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id))

    def list_parts(self, key: str, upload_id: str) -> list[dict[str, Any]]:
        return _mapped("ListParts", key, lambda: _list_all_parts(self.client, self.bucket, key, upload_id))

    def head(self, key: str, checksums: bool = False) -> Head | None:
        """Size, ETag and time of the object at ``key`` (with ``checksums``, its full-object CRC64NVME where the
        store keeps one), or None if there is none."""
        extra: dict[str, Any] = {"ChecksumMode": "ENABLED"} if checksums else {}
        try:
            head = _mapped("HeadObject", key, lambda: self.client.head_object(Bucket=self.bucket, Key=key, **extra))
        except StorageError as exc:
            if exc.code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        modified = head.get("LastModified")
        crc = head.get("ChecksumCRC64NVME")
        full = crc if isinstance(crc, str) and "-" not in crc and head.get("ChecksumType", "FULL_OBJECT") == \
            "FULL_OBJECT" else None
        return Head(int(head["ContentLength"]), str(head["ETag"]).strip('"'),
                    modified if isinstance(modified, dt.datetime) else None, full)

    def digest(self, key: str, sha256: bool, crc64nvme: bool, progress: Callable[[int], None]) -> Digests:
        """Read the object at ``key`` once, in blocks, hashing as it goes (memory: one block); ``progress`` is told
        the bytes read after each block."""
        from s3_multipart_upload.checksums import new_hasher

        def read() -> Digests:
            sha = new_hasher("SHA256") if sha256 else None
            crc = new_hasher("CRC64NVME") if crc64nvme else None
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            size = 0
            try:
                for block in body.iter_chunks(READ_BLOCK):
                    size += len(block)
                    for hasher in (sha, crc):
                        if hasher is not None:
                            hasher.update(block)
                    progress(size)
            finally:
                body.close()
            return Digests(size, sha.digest().hex() if sha else None,
                           base64.b64encode(crc.digest()).decode() if crc else None)

        return _mapped("GetObject", key, read)

    def delete(self, key: str) -> None:
        _mapped("DeleteObject", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def move(self, key: str, to: str) -> None:
        """Copy the object to ``to`` in the same bucket (a multipart copy when it is large), then delete it."""
        _mapped("CopyObject", key, lambda: self.client.copy({"Bucket": self.bucket, "Key": key}, self.bucket, to))
        self.delete(key)


def _mapped(operation: str, key: str, call: Callable[[], T]) -> T:
    """Run ``call``, turning botocore's failures into StorageError: S3's 4xx answers are the caller's problem
    (400/404/409); anything else means the store is unavailable to the service (503)."""
    try:
        return call()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        code = error_code(exc) or type(exc).__name__
        kind = classify(exc)
        where = f"{operation} of {key!r}"
        if kind is Kind.GONE:
            raise StorageError(409, code, f"{where}: the S3 multipart upload no longer exists") from exc
        if code in ("404", "NoSuchKey", "NotFound"):
            raise StorageError(404, code, f"{where}: no such object") from exc
        if kind is Kind.REFUSED and code not in SERVICE_SIDE:
            raise StorageError(400, code, f"{where} refused by S3: {code}") from exc
        # The store is down, or it refuses the service's own credentials or bucket: not the caller's fault.
        raise StorageError(503, code, f"{where} failed in the storage backend: {code}") from exc
