"""The S3 client and the one place that knows botocore's exceptions.

``classify`` sorts every failure into what the engine does next: retry it (transient),
refresh the session (credentials), or stop with the matching exit code.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.exceptions
from botocore.config import Config
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_random_exponential

from s3_multipart_upload.errors import (
    BadInput,
    CredentialsExpired,
    ServerRefused,
    TemporaryFailure,
    UploadError,
    UploadGone,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

log = logging.getLogger(__name__)
T = TypeVar("T")


class Kind(enum.Enum):
    TRANSIENT = "transient"  # retry the request after a pause
    CREDENTIALS = "credentials"  # refresh the session once, then stop with exit 75
    GONE = "gone"  # the multipart upload is no more (exit 4)
    REFUSED = "refused"  # access denied, no such bucket, invalid name (exit 5)
    FATAL = "fatal"  # anything else: a bug or an answer we do not understand


TRANSIENT_CODES = frozenset({
    "SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "BadDigest",  # bytes damaged in transit: send them again
    "IncompleteBody", "XAmzContentSHA256Mismatch", "OperationAborted", "500", "502", "503", "504",
})
CREDENTIAL_CODES = frozenset({
    "ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired", "InvalidToken",
    "InvalidClientTokenId", "UnrecognizedClientException", "ExpiredSessionToken",
})
GONE_CODES = frozenset({"NoSuchUpload"})
REFUSED_CODES = frozenset({
    "AccessDenied", "AllAccessDisabled", "NoSuchBucket", "InvalidBucketName", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "KeyTooLongError", "InvalidArgument", "AccountProblem", "InvalidObjectState",
    "MethodNotAllowed", "NotImplemented", "PermanentRedirect", "AuthorizationHeaderMalformed", "403", "404",
    "EntityTooLarge", "EntityTooSmall", "InvalidPart", "InvalidPartOrder", "PreconditionFailed",
})


THROTTLING_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
})


def is_throttling(exc: BaseException) -> bool:
    """The server asks for fewer requests (SlowDown, 503, 429), as opposed to failing one."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return error_code(exc) in THROTTLING_CODES or status in (429, 503)


def needs_content_md5(exc: BaseException) -> bool:
    """The store refused a body sent without Content-MD5 or an additional checksum (S3 and others do so where
    Object Lock retention applies: "Content-MD5 OR x-amz-checksum- HTTP header is required")."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    message = str(exc.response.get("Error", {}).get("Message") or "")
    return error_code(exc) == "MissingContentMD5" or (error_code(exc) == "InvalidRequest" and "Content-MD5" in message)


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
    return None


def classify(exc: BaseException) -> Kind:
    if isinstance(exc, botocore.exceptions.ClientError):
        code = error_code(exc) or ""
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in CREDENTIAL_CODES:
            return Kind.CREDENTIALS
        if code in GONE_CODES:
            return Kind.GONE
        if code in TRANSIENT_CODES or status in (429, 500, 502, 503, 504):
            return Kind.TRANSIENT
        if code in REFUSED_CODES or status in (400, 401, 403, 404, 405, 409, 411, 412, 416):
            return Kind.REFUSED
        return Kind.FATAL
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return Kind.REFUSED
    if isinstance(exc, botocore.exceptions.TokenRetrievalError | botocore.exceptions.SSOTokenLoadError
                  | botocore.exceptions.CredentialRetrievalError):
        return Kind.CREDENTIALS
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return Kind.REFUSED
    if isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError
                  | botocore.exceptions.ResponseStreamingError | botocore.exceptions.IncompleteReadError
                  | ConnectionError | TimeoutError):
        # EndpointConnectionError, ConnectTimeout, ReadTimeout, ConnectionClosedError, reset by peer.
        return Kind.TRANSIENT
    return Kind.FATAL


def describe(exc: BaseException) -> str:
    """A one-line account of a failure that never includes credentials or signed URLs."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "request")
        message = err.get("Message") or ""
        return f"{op} failed: {error_code(exc)}{': ' + message if message and message != error_code(exc) else ''}"
    text = str(exc)
    # botocore's connection errors quote the endpoint URL, which for presigned requests carries a
    # signature: keep only what precedes the query string.
    return text.split("?", 1)[0] if "X-Amz-" in text else text


def as_upload_error(exc: BaseException, bucket: str, key: str, where: str | None = None) -> UploadError | None:
    """The final error to report for a failure that will not be retried, if it has a fixed meaning."""
    kind = classify(exc)
    where = where or f"s3://{bucket}/{key}"
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return BadInput(f"the request for {where} was refused before sending: {exc}", "check -b and -k")
    if isinstance(exc, UnicodeEncodeError):
        return BadInput(f"the key {key!r} cannot be sent: it is not valid UTF-8 ({exc.reason})",
                        "give -k as UTF-8 text")
    if isinstance(exc, ValueError) and str(exc).startswith("Invalid endpoint"):
        return BadInput(f"{exc} (--endpoint-url)", "give a URL such as http://127.0.0.1:9000 or https://s3.example.com")
    if kind is Kind.GONE:
        return UploadGone(f"the multipart upload for {where} no longer exists on the server (aborted or expired)",
                          "rerun with --restart to start a new upload; the old parts log is kept aside")
    if kind is Kind.REFUSED:
        code = error_code(exc)
        if code == "NoSuchBucket":
            return ServerRefused(f"bucket {bucket!r} does not exist at this endpoint",
                                 "check -b, --endpoint-url and --region")
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return ServerRefused(f"no AWS credentials found for {where}",
                                 "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass --profile")
        if isinstance(exc, botocore.exceptions.ProfileNotFound):
            return ServerRefused(str(exc), "check --profile / AWS_PROFILE against ~/.aws/config")
        if code in ("NotImplemented", "MethodNotAllowed"):
            hint = "this store does not support the request; see the README's notes on stores"
        elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthorizationHeaderMalformed", "403"):
            hint = "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, --profile) and --region"
        elif code == "AccessDenied":
            hint = f"check that these credentials may write {where} (s3:PutObject, s3:ListMultipartUploadParts)"
        else:
            hint = "check the bucket and key names, the endpoint and your permissions"
        return ServerRefused(f"the server refused a request for {where}: {describe(exc)}", hint)
    return None


def translate(exc: BaseException, bucket: str, key: str, *, where: str | None = None, tries: int | None = None,
              detail: str = "") -> UploadError:
    """The one translator from a failure that retries did not fix (botocore's, the controller's, the network's) to
    the project's errors: a known meaning (gone, refused, bad input), else expired credentials or a temporary
    failure (exit 75), else an unexpected failure (exit 1). ``where`` names what was asked for when it is not an
    object (a controller); ``detail`` ends the message (how far the upload got)."""
    if isinstance(exc, UploadError):
        return exc
    where = where or f"s3://{bucket}/{key}"
    known = as_upload_error(exc, bucket, key, where)
    if known is not None:
        return known
    detail = f" {detail}" if detail else ""
    kind = classify(exc)
    if kind is Kind.CREDENTIALS:
        return CredentialsExpired(
            f"the credentials for {where} expired or were refused ({describe(exc)}).{detail}",
            "refresh your credentials (aws sso login, aws-vault, a new session), then rerun the same command")
    if kind is Kind.TRANSIENT:
        after = f" after {tries} tries" if tries else ""
        return TemporaryFailure(f"the server did not accept a request for {where}{after} ({describe(exc)}).{detail}",
                                "check the network and the endpoint, then rerun the same command")
    return UploadError(f"unexpected failure for {where}: {describe(exc)}.{detail}",
                       "rerun the same command; if it happens again, report it with -v output")


@dataclass(frozen=True)
class Endpoint:
    """How to reach the store. Credentials come from boto3's usual chain (AWS_* variables, profile, SSO)."""

    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None


class ClientFactory:
    """Builds the shared S3 client; ``refresh`` rebuilds the session to pick up renewed credentials."""

    def __init__(self, endpoint: Endpoint, pool_size: int) -> None:
        self.endpoint = endpoint
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self._client: S3Client | None = None
        self.generation = 0

    def _build(self) -> S3Client:
        session = boto3.session.Session(profile_name=self.endpoint.profile, region_name=self.endpoint.region)
        config = Config(
            max_pool_connections=self.pool_size,
            # One retry layer: the engine retries with tenacity, so botocore sends each request once.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
            # We send Content-MD5 or an explicit checksum ourselves; botocore's default trailing
            # checksums break several S3-compatible stores (boto/boto3#4435).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # The part checksum already protects the body; do not SHA-256 it a second time over http.
            s3={"payload_signing_enabled": False, "addressing_style": "path" if self.endpoint.endpoint_url else "auto"},
        )
        return session.client("s3", endpoint_url=self.endpoint.endpoint_url, config=config)

    def client(self) -> S3Client:
        with self._lock:
            if self._client is None:
                self._client = self._build()
            return self._client

    def refresh(self, seen_generation: int) -> bool:
        """Rebuild once per generation; False if a refresh already happened (credentials still bad)."""
        with self._lock:
            if self.generation != seen_generation:
                return True  # another thread refreshed since this caller's request: just retry
            if self.generation >= 1:
                return False
            self._client = self._build()
            self.generation += 1
            return True


def resolved_endpoint(clients: ClientFactory, given: str | None) -> str | None:
    """The endpoint boto3 will use: --endpoint-url, or AWS_ENDPOINT_URL(_S3), or a profile's, or AWS's own."""
    try:
        return str(clients.client().meta.endpoint_url)
    except Exception:  # a bad endpoint or profile: the engine reports it with its own message
        return given


@dataclass(frozen=True)
class RetryPolicy:
    """Per request: up to ``attempts`` tries, waiting random times in [0, min(cap, base * 2^n)] and at most
    ``max_seconds`` in all (time spent sending is not counted: a 5 GiB part may take longer than that)."""

    attempts: int = 10
    base: float = 0.5
    cap: float = 20.0
    max_seconds: float = 300.0


class _waited(stop_base):
    """Stop once the waits between tries add up to ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.idle_for >= self.seconds


RetryHook = Callable[[str, int, BaseException, float], None]  # (what, attempt, error, seconds to wait)


class Requester:
    """Runs S3 requests with tenacity retries (the only retry layer) and one credentials refresh per process."""

    def __init__(self, clients: ClientFactory, policy: RetryPolicy | None = None, on_retry: RetryHook | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.clients = clients
        self.policy = policy or RetryPolicy()
        self._on_retry = on_retry
        self._sleep = sleep

    def call(self, what: str, fn: Callable[[S3Client], T]) -> T:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning("%s: %s; retry %d in %.1f s.", what, describe(exc) if exc else "failed",
                        state.attempt_number, wait)
            if exc is not None and self._on_retry is not None:
                self._on_retry(what, state.attempt_number, exc, wait)

        for _ in range(3):  # at most: the first client, a refreshed one, and one refreshed by another thread
            generation = self.clients.generation
            try:
                retrying = Retrying(
                    retry=retry_if_exception(lambda e: classify(e) is Kind.TRANSIENT),
                    stop=stop_after_attempt(self.policy.attempts) | _waited(self.policy.max_seconds),
                    wait=wait_random_exponential(multiplier=self.policy.base, max=self.policy.cap),
                    before_sleep=before_sleep,
                    sleep=self._sleep,
                    reraise=True,
                )
                return retrying(fn, self.clients.client())
            except Exception as exc:
                if classify(exc) is Kind.CREDENTIALS and self.clients.refresh(generation):
                    log.warning("%s: credentials refused (%s); rebuilt the session to pick up refreshed "
                                "credentials.", what, describe(exc))
                    continue
                raise
        raise AssertionError("unreachable: the credentials loop is bounded by ClientFactory.refresh")


MAX_LIST_PAGES = 10_000  # one part a page is the worst a server may answer with


def list_all_parts(client: S3Client, bucket: str, key: str, upload_id: str,
                   info: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every part of an upload (ListParts pages of up to 1,000; at most 10,000 parts, so a bounded loop). With
    ``info``, also the upload's ChecksumAlgorithm and ChecksumType, as the first page says them."""
    parts: list[dict[str, Any]] = []
    marker = 0
    for _ in range(MAX_LIST_PAGES):
        page = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker)
        if info is not None and not marker:
            info.update({k: page[k] for k in ("ChecksumAlgorithm", "ChecksumType") if page.get(k)})
        parts.extend(dict(p) for p in page.get("Parts", []))
        if not page.get("IsTruncated"):
            return parts
        next_marker = int(page.get("NextPartNumberMarker", 0))
        if next_marker <= marker:
            raise RuntimeError(f"ListParts for s3://{bucket}/{key} did not advance past part {marker}")
        marker = next_marker
    raise RuntimeError(f"ListParts for s3://{bucket}/{key} returned more pages than 10,000 parts can fill")

