"""The options of the API's transfers (``upload``, ``copy``, ``upload_many`` and the plans): their names, which are
the command line's long options with underscores, their defaults, and the checks the command line's types make."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from s3_multipart_upload import checksums
from s3_multipart_upload.bandwidth import Bandwidth, parse_rate
from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.plan import MAX_PARTS, parse_size
from s3_multipart_upload.properties import ObjectProperties
from s3_multipart_upload.s3 import ADDRESSING_STYLES, Endpoint, RetryPolicy
from s3_multipart_upload.shard import MAX_SHARDS

PathArg = str | os.PathLike[str]

DEFAULT_THREADS = 8
MAX_THREADS = 256


class StoreOptions(TypedDict, total=False):
    """How to reach the store, for the calls that ask it about uploads and objects (status, abort, list_uploads,
    clean, verify), as upload and copy take them.

    Attributes:
        addressing_style: ``path``, ``virtual`` or ``auto`` (default: the AWS config file's ``s3.addressing_style``,
            else path with an endpoint URL).
        ca_bundle: A file of CA certificates to trust for the store's TLS certificate (also ``AWS_CA_BUNDLE``).
        no_verify_ssl: Do not check the store's TLS certificate (warned).
    """

    addressing_style: str | None
    ca_bundle: PathArg | None
    no_verify_ssl: bool


class TransferOptions(TypedDict, total=False):
    """The options of ``upload``, ``copy``, ``upload_many`` and the plans: the CLI's long names, its defaults.

    Attributes:
        meta_file_path: The upload's meta file (``-m``); with ``parts_file_path``. Default: the state folder.
        parts_file_path: The log of finished parts (``-a``).
        state_dir: The state folder (default ``$XDG_STATE_HOME/s3-multipart-upload``).
        thread_count: Parts (or small files) sent at once, 1 to 256. Default 8.
        split_size: Part size in bytes, or ``"64M"``, ``"1G"``. Default 32 MiB, raised past 10,000 parts.
        checksum: ``auto`` (default), ``MD5``, ``CRC64NVME``, ``CRC32C``, ``CRC32``, ``SHA256``.
        retries: Tries per request on transient failures, 1 to 100. Default 10.
        restart: Start a new upload even though the meta file records one.
        upload_id: Adopt this multipart upload of the key (when the meta file was lost).
        no_overwrite: Refuse (exit 3) if an object exists at the key.
        shard: ``"I/N"``, ``"auto"`` or ``"all"``: send only this shard's parts (``--shard``).
        shards: With ``shard="auto"``: the number of shards.
        endpoint_url: S3 endpoint of an S3-compatible store (also ``AWS_ENDPOINT_URL``).
        profile: AWS profile (also ``AWS_PROFILE``).
        region: AWS region (also ``AWS_REGION``).
        addressing_style: ``path``, ``virtual`` or ``auto`` (default: the AWS config file's ``s3.addressing_style``,
            else path with an endpoint URL).
        ca_bundle: A file of CA certificates to trust for the store's TLS certificate (also ``AWS_CA_BUNDLE``).
        no_verify_ssl: Do not check the store's TLS certificate (warned).
        max_parts: The most parts the store takes in one upload, 1 to 10,000 (default 10,000; Scaleway: 1,000):
            the part size is raised to fit, and a folder of more chunks is refused.
        equal_parts: The store needs every part but the last of one size, the last no larger (R2): a chunk folder
            whose chunks differ is refused, naming them (a file's parts are always equal).
        max_bandwidth: At most this rate for the whole call: bytes per second, or ``"50MB/s"``, ``"100MiB/s"``.

    The object's properties (set on CreateMultipartUpload or the one-part PutObject, recorded in the meta file so
    a rerun keeps them; aws-cli's names; see the docs' Object properties page):

    Attributes:
        content_type: Default: guessed from the file's name, as aws-cli does.
        guess_mime_type: False: no guessed content type (``--no-guess-mime-type``).
        content_encoding: Content-Encoding.
        content_language: Content-Language.
        content_disposition: Content-Disposition.
        cache_control: Cache-Control.
        expires: Expires: a datetime, or ISO 8601 / HTTP date text.
        metadata: User metadata: a mapping, ``KEY=VALUE`` items, or a JSON object (at most 2 KB).
        storage_class: STANDARD, STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE, ...
        tagging: Tags, URL-encoded: ``"k=v&k2=v2"`` (at most 10 in all).
        tag: Tags as ``KEY=VALUE`` items.
        acl: A canned ACL: private, bucket-owner-full-control, ...
        sse: Server-side encryption: ``AES256``, ``aws:kms`` or ``aws:kms:dsse``.
        sse_kms_key_id: With ``sse="aws:kms"``: the KMS key (id, ARN or alias).
        sse_kms_encryption_context: With ``sse="aws:kms"``: a mapping or a JSON object.
        bucket_key_enabled: With ``sse="aws:kms"``: an S3 Bucket Key.
        sse_c_key_file: A file of 32 bytes: SSE-C's key (only its MD5 is recorded; never logged).
        object_lock_mode: GOVERNANCE or COMPLIANCE, with ``object_lock_retain_until_date``.
        object_lock_retain_until_date: A datetime or ISO 8601 text, in the future.
        object_lock_legal_hold: ON or OFF.
        expected_bucket_owner: The account id the bucket must belong to (every request says so).
        request_payer: ``requester``, for requester-pays buckets.
    """

    meta_file_path: PathArg | None
    parts_file_path: PathArg | None
    state_dir: PathArg | None
    thread_count: int
    split_size: int | str | None
    checksum: str
    retries: int
    restart: bool
    upload_id: str | None
    no_overwrite: bool
    shard: str | None
    shards: int | None
    endpoint_url: str | None
    profile: str | None
    region: str | None
    addressing_style: str | None
    ca_bundle: PathArg | None
    no_verify_ssl: bool
    max_parts: int
    equal_parts: bool
    max_bandwidth: int | str | None
    content_type: str | None
    guess_mime_type: bool
    content_encoding: str | None
    content_language: str | None
    content_disposition: str | None
    cache_control: str | None
    expires: str | dt.datetime | None
    metadata: Mapping[str, str] | Sequence[str] | str | None
    storage_class: str | None
    tagging: str | None
    tag: Sequence[str]
    acl: str | None
    sse: str | None
    sse_kms_key_id: str | None
    sse_kms_encryption_context: Mapping[str, str] | str | None
    bucket_key_enabled: bool | None
    sse_c_key_file: PathArg | None
    object_lock_mode: str | None
    object_lock_retain_until_date: str | dt.datetime | None
    object_lock_legal_hold: str | None
    expected_bucket_owner: str | None
    request_payer: str | None


# The options that are the object's properties: they go to ObjectProperties.of as they are.
PROPERTY_OPTIONS = ("content_type", "guess_mime_type", "content_encoding", "content_language", "content_disposition",
                    "cache_control", "expires", "metadata", "storage_class", "tagging", "tag", "acl", "sse",
                    "sse_kms_key_id", "sse_kms_encryption_context", "bucket_key_enabled", "sse_c_key_file",
                    "object_lock_mode", "object_lock_retain_until_date", "object_lock_legal_hold",
                    "expected_bucket_owner", "request_payer")


@dataclass(frozen=True)
class _Opts:
    """TransferOptions checked, with their defaults (a field named as one of UploadRequest's reaches the engine by
    that name: see ``_request``)."""

    meta_file_path: Path | None = None
    parts_file_path: Path | None = None
    state_dir: Path | None = None
    thread_count: int = DEFAULT_THREADS
    split_size: int | None = None
    checksum: str = checksums.AUTO
    retries: int = RetryPolicy.attempts
    restart: bool = False
    upload_id: str | None = None
    no_overwrite: bool = False
    shard: str | None = None
    shards: int | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    addressing_style: str | None = None
    ca_bundle: Path | None = None
    no_verify_ssl: bool = False
    max_parts: int = MAX_PARTS
    equal_parts: bool = False
    max_bandwidth: int | None = None  # bytes per second
    props: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # PROPERTY_OPTIONS given, as given

    @classmethod
    def of(cls, options: TransferOptions) -> _Opts:
        given: dict[str, Any] = dict(options)
        props = {name: given.pop(name) for name in PROPERTY_OPTIONS if name in given}
        unknown = sorted(set(given) - {f.name for f in dataclasses.fields(cls)} | ({"props"} & set(given)))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; the options are {', '.join(OPTION_NAMES)}")
        style = given.get("addressing_style")
        if style is not None and style not in ADDRESSING_STYLES:
            raise BadInput(f"addressing_style {style!r} is not one of {', '.join(ADDRESSING_STYLES)}")
        if given.get("ca_bundle") is not None and not Path(given["ca_bundle"]).is_file():
            raise BadInput(f"ca_bundle {given['ca_bundle']} is not a file", "give a PEM file of CA certificates")
        for name in ("meta_file_path", "parts_file_path", "state_dir", "ca_bundle"):
            if given.get(name) is not None:
                given[name] = Path(given[name])
        if given.get("split_size") is not None:
            size = parse_size(given["split_size"])
            if size is None or size < 1:
                raise BadInput(f"split_size {given['split_size']!r} is not a size in bytes",
                               "examples: 67108864, 64M, 64MiB, 1G")
            given["split_size"] = size
        if given.get("max_bandwidth") is not None:
            rate = given["max_bandwidth"]
            given["max_bandwidth"] = parse_rate(rate) if isinstance(rate, str) else parse_rate(str(int(rate)))
        _in_range(given, "thread_count", 1, MAX_THREADS)
        _in_range(given, "retries", 1, 100)
        _in_range(given, "shards", 1, MAX_SHARDS)
        _in_range(given, "max_parts", 1, MAX_PARTS)
        if "checksum" in given and str(given["checksum"]).upper() not in {c.upper() for c in checksums.CHOICES}:
            raise BadInput(f"checksum {given['checksum']!r} is not one of {', '.join(checksums.CHOICES)}")
        opts = cls(**given, props=props)
        opts.properties()  # bad properties are refused here, before anything is asked of the store
        return opts

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.endpoint_url, self.profile, self.region, self.addressing_style,
                        None if self.ca_bundle is None else str(self.ca_bundle), not self.no_verify_ssl)

    def bandwidth(self) -> Bandwidth | None:
        """A new bucket for one call's bytes (the files of a many-files call share it), or None: no cap."""
        return None if self.max_bandwidth is None else Bandwidth(self.max_bandwidth)

    def properties(self, source_name: str | None = None, **more: Any) -> ObjectProperties:
        """The object's properties, the content type guessed from ``source_name`` unless given."""
        return ObjectProperties.of(source_name, **self.props, **more)


OPTION_NAMES = [f.name for f in dataclasses.fields(_Opts) if f.name != "props"] + list(PROPERTY_OPTIONS)


def _in_range(given: dict[str, Any], name: str, low: int, high: int) -> None:
    value = given.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
        raise BadInput(f"{name} {value!r} is not a whole number from {low} to {high}")
