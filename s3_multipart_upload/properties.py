"""The object as its users need it: content type and headers, metadata, storage class, tags, ACL, encryption
(SSE-S3, SSE-KMS, DSSE-KMS, SSE-C), Object Lock, and the bucket-owner and requester-pays guards (pure: no request).

``ObjectProperties.of`` checks what was asked (aws-cli's option names) and says what is wrong, naming the option,
before anything is sent. ``create_args`` go on CreateMultipartUpload and the one-part PutObject; ``request_args``
on every request of the upload that takes them (SSE-C's key, RequestPayer, ExpectedBucketOwner: s3.ClientFactory
adds them); ``recorded`` is what META keeps, secrets excepted (the SSE-C key's MD5 only), so that a rerun keeps the
same properties or is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email.utils
import hashlib
import json
import logging
import mimetypes
import os
import re
import stat
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from s3_multipart_upload.errors import BadInput

log = logging.getLogger(__name__)

STORAGE_CLASSES = ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER",
                   "DEEP_ARCHIVE", "OUTPOSTS", "GLACIER_IR", "SNOW", "EXPRESS_ONEZONE")
ACLS = ("private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read", "bucket-owner-read",
        "bucket-owner-full-control")
SSE = ("AES256", "aws:kms", "aws:kms:dsse")
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
LEGAL_HOLD = ("ON", "OFF")
METADATA_LIMIT = 2048  # S3: user-defined metadata, keys and values as UTF-8 bytes
MAX_TAGS = 10
SSE_C_KEY_BYTES = 32
# The one-word header names S3 accepts in x-amz-meta-*: an HTTP token (RFC 9110), no spaces or separators.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Requests that carry the SSE-C key of the object being built, and those of a copy's source.
SSE_C_OPERATIONS = ("CreateMultipartUpload", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload", "ListParts",
                    "PutObject", "CopyObject", "HeadObject", "GetObject")
SOURCE_SSE_C_OPERATIONS = ("UploadPartCopy", "CopyObject")
# Requests that take RequestPayer / ExpectedBucketOwner (every one the engine sends but ListMultipartUploads, which
# takes ExpectedBucketOwner only).
GUARDED_OPERATIONS = ("CreateMultipartUpload", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload",
                      "AbortMultipartUpload", "ListParts", "PutObject", "CopyObject", "HeadObject", "GetObject",
                      "GetObjectTagging")


@dataclass(frozen=True)
class ObjectProperties:
    """What the object gets, as checked; the field names are the API's options (the CLI's with underscores)."""

    content_type: str | None = None
    content_type_guessed: bool = False  # from the file's name (aws-cli's rule), not asked for
    guess_mime_type: bool = True  # --no-guess-mime-type: False
    content_encoding: str | None = None
    content_language: str | None = None
    content_disposition: str | None = None
    cache_control: str | None = None
    expires: str | None = None  # ISO 8601, UTC
    metadata: Mapping[str, str] = field(default_factory=dict)
    storage_class: str | None = None
    tagging: str | None = None  # URL-encoded k=v&k2=v2
    acl: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    sse_kms_encryption_context: str | None = None  # base64 of a JSON object, as S3 takes it
    bucket_key_enabled: bool | None = None
    sse_c_key: bytes | None = field(default=None, repr=False)  # a secret: never recorded, logged or printed
    copy_source_sse_c_key: bytes | None = field(default=None, repr=False)
    object_lock_mode: str | None = None
    object_lock_retain_until_date: str | None = None  # ISO 8601, UTC
    object_lock_legal_hold: str | None = None
    expected_bucket_owner: str | None = None
    request_payer: str | None = None

    # -- what goes where ---------------------------------------------------------------------------

    def create_args(self) -> dict[str, Any]:
        """CreateMultipartUpload's and PutObject's arguments (boto3 names); SSE-C's key comes with request_args."""
        args: dict[str, Any] = {}
        for name, arg in (("content_type", "ContentType"), ("content_encoding", "ContentEncoding"),
                          ("content_language", "ContentLanguage"), ("content_disposition", "ContentDisposition"),
                          ("cache_control", "CacheControl"), ("storage_class", "StorageClass"),
                          ("tagging", "Tagging"), ("acl", "ACL"), ("sse", "ServerSideEncryption"),
                          ("sse_kms_key_id", "SSEKMSKeyId"), ("sse_kms_encryption_context", "SSEKMSEncryptionContext"),
                          ("bucket_key_enabled", "BucketKeyEnabled"), ("object_lock_mode", "ObjectLockMode"),
                          ("object_lock_legal_hold", "ObjectLockLegalHoldStatus")):
            value = getattr(self, name)
            if value is not None:
                args[arg] = value
        if self.expires is not None:
            args["Expires"] = dt.datetime.fromisoformat(self.expires)
        if self.object_lock_retain_until_date is not None:
            args["ObjectLockRetainUntilDate"] = dt.datetime.fromisoformat(self.object_lock_retain_until_date)
        if self.metadata:
            args["Metadata"] = dict(self.metadata)
        return args

    def request_args(self, operation: str) -> dict[str, Any]:
        """What ``operation`` carries on every request of this upload: SSE-C's key (boto3 adds its MD5), the copy
        source's SSE-C key, RequestPayer and ExpectedBucketOwner."""
        args: dict[str, Any] = {}
        # The key base64-encoded and its MD5 given: botocore's own handler then leaves them as they are.
        if self.sse_c_key is not None and operation in SSE_C_OPERATIONS:
            args |= {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": _b64(self.sse_c_key),
                     "SSECustomerKeyMD5": key_md5(self.sse_c_key)}
        if self.copy_source_sse_c_key is not None and operation in SOURCE_SSE_C_OPERATIONS:
            args |= {"CopySourceSSECustomerAlgorithm": "AES256",
                     "CopySourceSSECustomerKey": _b64(self.copy_source_sse_c_key),
                     "CopySourceSSECustomerKeyMD5": key_md5(self.copy_source_sse_c_key)}
        if operation in GUARDED_OPERATIONS:
            if self.request_payer is not None:
                args["RequestPayer"] = self.request_payer
            if self.expected_bucket_owner is not None:
                args["ExpectedBucketOwner"] = self.expected_bucket_owner
        return args

    @property
    def opaque_etags(self) -> bool:
        """SSE-KMS, DSSE-KMS and SSE-C objects' ETags are not the MD5 of their bytes: never compare them."""
        return self.sse_c_key is not None or (self.sse or "").startswith("aws:kms")

    @property
    def has_request_args(self) -> bool:
        return any(self.request_args(op) for op in set(SSE_C_OPERATIONS) | set(GUARDED_OPERATIONS))

    def recorded(self) -> dict[str, Any]:
        """What META keeps of them: every property asked for (by option name), the SSE-C key's MD5 in place of the
        key. The guessed content type is not recorded: it was not asked for, and the key fixes it."""
        doc: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("sse_c_key", "copy_source_sse_c_key", "content_type_guessed", "guess_mime_type") or \
                    value in (None, {}):
                continue
            if f.name == "content_type" and self.content_type_guessed:
                continue
            doc[f.name] = dict(value) if f.name == "metadata" else value
        if self.sse_c_key is not None:
            doc["sse_c_key_md5"] = key_md5(self.sse_c_key)
        return doc

    def shown(self) -> dict[str, Any]:
        """For ``--dry-run``, ``status`` and the JSON summary: what was recorded, and the guessed content type."""
        doc = self.recorded()
        if self.content_type_guessed and self.content_type is not None:
            doc["content_type"] = self.content_type
        return doc

    def for_name(self, source_name: str) -> ObjectProperties:
        """The same properties for another file (of many): its content type guessed from its name, unless one was
        given. No option is read or checked again."""
        if not self.guess_mime_type or (self.content_type is not None and not self.content_type_guessed):
            return self
        guessed = mimetypes.guess_type(source_name, strict=False)[0]
        return dataclasses.replace(self, content_type=guessed, content_type_guessed=guessed is not None)

    # -- from the options ----------------------------------------------------------------------------

    @classmethod
    def of(cls, source_name: str | None = None, *, guess_mime_type: bool = True, content_type: str | None = None,
           content_encoding: str | None = None, content_language: str | None = None,
           content_disposition: str | None = None, cache_control: str | None = None,
           expires: str | dt.datetime | None = None, metadata: Mapping[str, str] | Sequence[str] | str | None = None,
           storage_class: str | None = None, tagging: str | None = None, tag: Sequence[str] = (),
           acl: str | None = None, sse: str | None = None, sse_kms_key_id: str | None = None,
           sse_kms_encryption_context: Mapping[str, str] | str | None = None, bucket_key_enabled: bool | None = None,
           sse_c_key_file: str | os.PathLike[str] | None = None,
           copy_source_sse_c_key_file: str | os.PathLike[str] | None = None, object_lock_mode: str | None = None,
           object_lock_retain_until_date: str | dt.datetime | None = None, object_lock_legal_hold: str | None = None,
           expected_bucket_owner: str | None = None, request_payer: str | None = None,
           now: dt.datetime | None = None) -> ObjectProperties:
        """The properties asked for, checked; ``source_name`` is the name the content type is guessed from."""
        guessed = None
        if content_type is None and guess_mime_type and source_name:
            guessed = mimetypes.guess_type(source_name, strict=False)[0]
        kms = {"--sse-kms-key-id": sse_kms_key_id, "--sse-kms-encryption-context": sse_kms_encryption_context,
               "--bucket-key-enabled": bucket_key_enabled}
        asked = [flag for flag, value in kms.items() if value is not None]
        if asked and (sse or "").lower() not in ("aws:kms", "aws:kms:dsse"):
            raise BadInput(f"{asked[0]} goes with --sse aws:kms (or aws:kms:dsse), not {sse or 'no --sse'}",
                           "add --sse aws:kms")
        sse_c = read_key_file(sse_c_key_file, "--sse-c-key-file")
        if sse_c is not None and sse is not None:
            raise BadInput(f"--sse-c-key-file and --sse {sse} are two kinds of encryption; an object has one",
                           "give one of them")
        if (object_lock_mode is None) != (object_lock_retain_until_date is None):
            raise BadInput("--object-lock-mode and --object-lock-retain-until-date go together",
                           "give both (a retention needs its mode and its date)")
        return cls(
            content_type=content_type or guessed, content_type_guessed=content_type is None and guessed is not None,
            guess_mime_type=guess_mime_type,
            content_encoding=content_encoding, content_language=content_language,
            content_disposition=content_disposition, cache_control=cache_control,
            expires=None if expires is None else _date(expires, "--expires").isoformat(),
            metadata=_metadata(metadata), storage_class=_choice(storage_class, STORAGE_CLASSES, "--storage-class"),
            tagging=_tagging(tagging, tag), acl=_choice(acl, ACLS, "--acl"),
            sse=_choice(sse, SSE, "--sse"), sse_kms_key_id=sse_kms_key_id,
            sse_kms_encryption_context=_context(sse_kms_encryption_context), bucket_key_enabled=bucket_key_enabled,
            sse_c_key=sse_c,
            copy_source_sse_c_key=read_key_file(copy_source_sse_c_key_file, "--copy-source-sse-c-key-file"),
            object_lock_mode=_choice(object_lock_mode, LOCK_MODES, "--object-lock-mode"),
            object_lock_retain_until_date=_retain_until(object_lock_retain_until_date, now),
            object_lock_legal_hold=_choice(object_lock_legal_hold, LEGAL_HOLD, "--object-lock-legal-hold"),
            expected_bucket_owner=_account(expected_bucket_owner), request_payer=_choice(
                request_payer, ("requester",), "--request-payer"))

    def check_endpoint(self, endpoint_url: str | None, aws: bool) -> None:
        """SSE-C's key goes in a header: never over plain HTTP to AWS (S3 refuses it, after the key was sent)."""
        if (self.sse_c_key or self.copy_source_sse_c_key) and aws and (endpoint_url or "https:").startswith("http:"):
            raise BadInput(f"SSE-C keys go only over HTTPS, and the endpoint is {endpoint_url}",
                           "use the https:// endpoint")


def source_request_args(key: bytes | None, operation: str) -> dict[str, Any]:
    """A copy's reads of its source (HeadObject, ranged GetObject) carry the source's SSE-C key, if it has one."""
    if key is None or operation not in ("HeadObject", "GetObject"):
        return {}
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": _b64(key), "SSECustomerKeyMD5": key_md5(key)}


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def key_md5(key: bytes) -> str:
    """The SSE-C key's MD5, base64: what S3 and META know of it."""
    return base64.b64encode(hashlib.md5(key).digest()).decode()


def _choice(value: str | None, choices: Sequence[str], option: str) -> str | None:
    """``value`` as S3 spells it, whatever its case; refused unless one of ``choices``."""
    if value is None:
        return None
    found = next((c for c in choices if c.lower() == value.strip().lower()), None)
    if found is None:
        raise BadInput(f"{option} {value!r} is not one of {', '.join(choices)}")
    return found


def _date(value: str | dt.datetime, option: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        when = value
    else:
        try:
            when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                raise BadInput(f"{option} {value!r} is not a date",
                               "write it as ISO 8601 (2030-01-31T00:00:00Z) or an HTTP date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def _retain_until(value: str | dt.datetime | None, now: dt.datetime | None) -> str | None:
    if value is None:
        return None
    when = _date(value, "--object-lock-retain-until-date")
    if when <= (now or dt.datetime.now(dt.UTC)):
        raise BadInput(f"--object-lock-retain-until-date {when.isoformat()} is in the past",
                       "give a date to come: the object is kept until then")
    return when.isoformat()


def _metadata(value: Mapping[str, str] | Sequence[str] | str | None) -> dict[str, str]:
    """``KEY=VALUE`` items (repeated ``--metadata``), or one JSON object, or a mapping (the API)."""
    if value is None:
        return {}
    items: dict[str, Any] = {}
    if isinstance(value, Mapping):
        items = dict(value)
    else:
        for item in [value] if isinstance(value, str) else list(value):
            if item.lstrip().startswith("{"):
                try:
                    doc = json.loads(item)
                except ValueError as exc:
                    raise BadInput(f"--metadata {item!r} is not a JSON object: {exc}") from None
                if not isinstance(doc, dict):
                    raise BadInput(f"--metadata {item!r} is not a JSON object")
                items |= doc
                continue
            name, eq, val = item.partition("=")
            if not eq:
                raise BadInput(f"--metadata {item!r} is not KEY=VALUE", "write --metadata KEY=VALUE, or a JSON object")
            items[name] = val
    for name, val in items.items():
        if not isinstance(name, str) or not _TOKEN.match(name) or not isinstance(val, str):
            raise BadInput(f"--metadata key {name!r} (value {val!r}) is not allowed",
                           "keys are letters, digits and -_.; values are strings")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in items.items())
    if size > METADATA_LIMIT:
        raise BadInput(f"--metadata holds {size} bytes; S3 takes at most {METADATA_LIMIT} (keys and values, UTF-8)")
    return {k.lower(): v for k, v in items.items()}


def _tagging(tagging: str | None, tags: Sequence[str]) -> str | None:
    """``--tagging k=v&k2=v2`` (URL-encoded) and repeated ``--tag k=v``: one URL-encoded set, checked."""
    pairs: list[tuple[str, str]] = []
    if tagging is not None:
        try:
            pairs += urllib.parse.parse_qsl(tagging, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise BadInput(f"--tagging {tagging!r} is not URL-encoded key=value pairs",
                           "write --tagging 'project=x&team=y' (or repeat --tag k=v)") from None
    for item in tags:
        name, eq, val = item.partition("=")
        if not eq or not name:
            raise BadInput(f"--tag {item!r} is not KEY=VALUE")
        pairs.append((name, val))
    if not pairs:
        return None
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        raise BadInput(f"tags name a key twice: {', '.join(sorted({k for k in names if names.count(k) > 1}))}")
    if len(pairs) > MAX_TAGS:
        raise BadInput(f"{len(pairs)} tags; S3 takes at most {MAX_TAGS} on an object")
    for k, v in pairs:
        if not 1 <= len(k) <= 128 or len(v) > 256:
            raise BadInput(f"tag {k[:40]!r}: S3 takes keys of 1 to 128 characters and values of up to 256")
    return urllib.parse.urlencode(pairs)


def _context(value: Mapping[str, str] | str | None) -> str | None:
    """``--sse-kms-encryption-context``: a JSON object (or its base64, as aws-cli takes it) -> S3's base64."""
    if value is None:
        return None
    doc: Any = value
    if isinstance(value, str):
        text = value
        if not text.lstrip().startswith("{"):
            try:
                text = base64.b64decode(text, validate=True).decode()
            except ValueError:
                raise BadInput("--sse-kms-encryption-context is neither a JSON object nor its base64") from None
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise BadInput(f"--sse-kms-encryption-context is not a JSON object: {exc}") from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise BadInput("--sse-kms-encryption-context must be a JSON object of strings")
    return base64.b64encode(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()).decode()


def _account(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"\d{12}", value.strip()):
        raise BadInput(f"--expected-bucket-owner {value!r} is not an AWS account id (12 digits)")
    return None if value is None else value.strip()


def read_key_file(path: str | os.PathLike[str] | None, option: str) -> bytes | None:
    """A 32-byte SSE-C key from a file (never from the command line): refused unless 32 bytes, warned when others
    may read it."""
    if path is None:
        return None
    p = Path(path)
    try:
        st = p.stat()
        key = p.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read the key file {p} ({option}): {exc.strerror}") from None
    if len(key) != SSE_C_KEY_BYTES:
        raise BadInput(f"the key file {p} ({option}) holds {len(key)} bytes; an SSE-C key is {SSE_C_KEY_BYTES} bytes",
                       f"make one with: head -c 32 /dev/urandom > {p.name}; chmod 600 {p.name}")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and p not in _WARNED:
        _WARNED.add(p)  # once a process: the options are checked first, then used
        log.warning("The key file %s (%s) can be read by others than its owner: chmod 600 %s.", p, option, p)
    return key


_WARNED: set[Path] = set()
