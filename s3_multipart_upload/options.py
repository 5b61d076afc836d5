"""The options of the API's transfers (``upload``, ``copy``, ``upload_many`` and the plans): their names, which are
the command line's long options with underscores, their defaults, and the checks the command line's types make."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from s3_multipart_upload import checksums
from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.plan import MAX_PARTS, parse_size
from s3_multipart_upload.s3 import ADDRESSING_STYLES, Endpoint, RetryPolicy
from s3_multipart_upload.shard import MAX_SHARDS

PathArg = str | os.PathLike[str]

DEFAULT_THREADS = 8
MAX_THREADS = 256


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

    @classmethod
    def of(cls, options: TransferOptions) -> _Opts:
        given: dict[str, Any] = dict(options)
        unknown = sorted(set(given) - {f.name for f in dataclasses.fields(cls)})
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
        _in_range(given, "thread_count", 1, MAX_THREADS)
        _in_range(given, "retries", 1, 100)
        _in_range(given, "shards", 1, MAX_SHARDS)
        _in_range(given, "max_parts", 1, MAX_PARTS)
        if "checksum" in given and str(given["checksum"]).upper() not in {c.upper() for c in checksums.CHOICES}:
            raise BadInput(f"checksum {given['checksum']!r} is not one of {', '.join(checksums.CHOICES)}")
        return cls(**given)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.endpoint_url, self.profile, self.region, self.addressing_style,
                        None if self.ca_bundle is None else str(self.ca_bundle), not self.no_verify_ssl)


OPTION_NAMES = [f.name for f in dataclasses.fields(_Opts)]


def _in_range(given: dict[str, Any], name: str, low: int, high: int) -> None:
    value = given.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
        raise BadInput(f"{name} {value!r} is not a whole number from {low} to {high}")
