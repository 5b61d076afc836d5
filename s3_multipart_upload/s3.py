"""The S3 client and the one place that knows botocore's exceptions.

``classify`` sorts every failure into what the engine does next: retry it (transient),
refresh the session (credentials), or stop with the matching exit code. ``Timeouts`` bounds how
long a request may go with no byte moving; ``SigningClock`` signs with the server's time once a
server refused this machine's as too far off.

Hooks for tests only (environment variables, not options; a user never needs them):
``S3MU_TEST_TIMEOUTS`` (``Timeouts`` fields, e.g. ``send=1,answer=2,answer_per_gib=0``) and
``S3MU_TEST_CLOCK_SHIFT`` (seconds added to this machine's clock for signing, as faketime would).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email.utils
import enum
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
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
from s3_multipart_upload.plan import GiB

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
    "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
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


# A store that lacks the request altogether (s3rver 3.7.1 answers ListParts, ListMultipartUploads and
# AbortMultipartUpload with MethodNotAllowed).
LACKS_API = frozenset({"MethodNotAllowed", "NotImplemented", "405", "501"})


MISSING_API_HINT = "see what works on which store on the Stores page of the docs"
# What to do on a store that lacks a request (s3rver has none of these four).
MISSING_API_HINTS = {
    "ListParts": "a resume and status need it: rerun with --restart to upload from the start (a new upload needs no "
                 "ListParts); see the Stores page of the docs",
    "ListMultipartUploads": "the uploads this machine started are in its state folder: s3-multipart-upload list "
                            "(without -b); see the Stores page of the docs",
    "AbortMultipartUpload": "this store keeps an unfinished upload's parts until its data is removed; see the Stores "
                            "page of the docs",
    "UploadPartCopy": "copy through this machine instead: add --through-client; see the Stores page of the docs",
}


# A wrong additional checksum refused as wrong: the store computed its own over the body and compared (what proves,
# to --checksum auto's probe, that the store verifies it). LocalStack and SeaweedFS answer BadDigest.
CHECKSUM_MISMATCH_CODES = frozenset({"BadDigest", "XAmzContentChecksumMismatch"})
# An additional checksum header refused as such (B2 refused x-amz-checksum-algorithm on a create): not taken.
CHECKSUM_HEADER_REFUSED = frozenset({"InvalidArgument", "InvalidRequest", "NotImplemented"})


THROTTLING_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
})


def is_throttling(exc: BaseException) -> bool:
    """The server asks for fewer requests (SlowDown, 503, 429), as opposed to failing one."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return error_code(exc) in THROTTLING_CODES or status in (429, 503)


# A request signed at a time too far from the server's (S3 allows 15 minutes). S3, MinIO and Ceph answer
# RequestTimeTooSkewed; rclone serve s3 answers AccessDenied with the second message.
SKEW_CODES = frozenset({"RequestTimeTooSkewed"})
SKEW_MESSAGES = ("the difference between the request time and the current time is too large",
                 "the difference between the request time and the server's time exceeds")


def is_clock_skew(exc: BaseException) -> bool:
    """The server refused the request because the time it was signed at is too far from the server's."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    message = str(exc.response.get("Error", {}).get("Message") or "").lower()
    return error_code(exc) in SKEW_CODES or any(m in message for m in SKEW_MESSAGES)


def stall_of(exc: BaseException) -> str | None:
    """Where a request's bytes stopped moving, if that is why it failed: "send" (the network took no byte of the
    body for ``Timeouts.send``) or "answer" (no byte of the answer came for the read timeout)."""
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return "answer"
    if isinstance(exc, botocore.exceptions.ConnectionClosedError):
        cause = exc.kwargs.get("error")  # urllib3's ProtocolError("Connection aborted.", TimeoutError(...))
        if any(isinstance(arg, TimeoutError) for arg in getattr(cause, "args", ())):
            return "send"
    return None


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
        if is_clock_skew(exc):
            return Kind.TRANSIENT  # the Requester signs the next try with the server's time
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
    if isinstance(exc, botocore.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return Kind.REFUSED  # a certificate this machine does not trust: the same on every try
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
        if isinstance(exc, botocore.exceptions.SSLError):
            return ServerRefused(f"the store's TLS certificate for {where} is not one this machine trusts "
                                 f"({describe(exc)})", "give its CA certificate with --ca-bundle FILE (or "
                                 "AWS_CA_BUNDLE); --no-verify-ssl skips the check")
        op = getattr(exc, "operation_name", None)
        if code in LACKS_API and op:
            return ServerRefused(f"the store at this endpoint does not implement {op}, which this needs for {where} "
                                 f"({describe(exc)})", MISSING_API_HINTS.get(op, MISSING_API_HINT))
        if code in ("NotImplemented", "MethodNotAllowed"):
            hint = MISSING_API_HINT
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
    if is_clock_skew(exc):
        return TemporaryFailure(
            f"the server refuses the time this machine signs requests for {where} with, even corrected by its Date "
            f"header ({describe(exc)}).{detail}",
            "set this machine's clock right (NTP: timedatectl set-ntp true), then rerun the same command")
    if kind is Kind.TRANSIENT:
        after = f" after {tries} tries" if tries else ""
        return TemporaryFailure(f"the server did not accept a request for {where}{after} ({describe(exc)}).{detail}",
                                "check the network and the endpoint, then rerun the same command")
    return UploadError(f"unexpected failure for {where}: {describe(exc)}.{detail}",
                       "rerun the same command; if it happens again, report it with -v output")


ADDRESSING_STYLES = ("auto", "path", "virtual")


@dataclass(frozen=True)
class Endpoint:
    """How to reach the store. Credentials come from boto3's usual chain (AWS_* variables, profile, SSO).

    ``addressing_style``: path (``host/bucket/key``), virtual (``bucket.host/key``) or auto; None: the AWS config
    file's ``s3.addressing_style``, else path with an endpoint URL and auto without. ``ca_bundle``: the certificates
    to trust (None: AWS_CA_BUNDLE or the system's); ``verify_ssl`` False: no certificate check (warned)."""

    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    addressing_style: str | None = None
    ca_bundle: str | None = None
    verify_ssl: bool = True


@dataclass(frozen=True)
class Timeouts:
    """How long a request may go with no byte moving before it is abandoned; it then counts as a transient failure
    and is retried on a new connection (urllib3 discards a connection that timed out).

    ``send``: to connect, and for the network to take each block of a body (urllib3 applies the connect timeout
    to every write of the body: a body stalls when nothing reads it). ``answer`` plus ``answer_per_gib`` for each GiB
    of the body: from a body's last byte to its answer's first, and between the answer's bytes. A store may work on a
    part after its last byte (rclone serve s3 in streaming mode answers an out-of-order 1 GiB part about 40 s later),
    so this wait grows with the part size: 20.5 s for 5 MiB, 23 s for 32 MiB, 120 s for 1 GiB, 520 s for 5 GiB.
    ``other``: the answer to a request without a body (a CompleteMultipartUpload assembles the object first)."""

    # 30 s, not less: stores pause reading for seconds at a time (a disk flush, a loaded machine; a 15 s pause is
    # tests/test_store_bugs.py's), and a part abandoned then is sent again from its first byte.
    send: float = 30.0
    answer: float = 20.0
    answer_per_gib: float = 100.0
    other: float = 120.0

    def for_body(self, size: int) -> float:
        """The read timeout for the answer to a request that sends ``size`` bytes."""
        return round(self.answer + self.answer_per_gib * size / GiB, 1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Timeouts:
        """The defaults, or what ``S3MU_TEST_TIMEOUTS`` (a test hook: ``send=1,answer=2``) sets."""
        given = environ.get("S3MU_TEST_TIMEOUTS", "").strip()
        if not given:
            return cls()
        pairs = dict(item.split("=", 1) for item in given.split(","))
        return dataclasses.replace(cls(), **{name.strip(): float(value) for name, value in pairs.items()})


_signing = threading.local()  # .shift: seconds the requests signed in this thread add to this machine's clock


def _signing_time(remove_tzinfo: bool = True) -> dt.datetime:
    """What botocore's signers call for the time to sign with (``botocore.compat.get_current_datetime``)."""
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=getattr(_signing, "shift", 0.0))
    return now.replace(tzinfo=None) if remove_tzinfo else now


def _install_signing_time() -> None:
    """Make botocore's SigV4 signers (its own and awscrt's) take the time from ``_signing_time``. botocore has no
    clock setting or skew correction (boto/boto3#1252), and its signers call the function they imported by name, so
    it is replaced in their modules. With no shift set in the thread, the time is exactly botocore's."""
    import botocore.auth

    botocore.auth.get_current_datetime = _signing_time  # type: ignore[attr-defined]
    try:
        import botocore.crt.auth
    except ImportError:  # no awscrt: botocore signs with its own signers only
        return
    botocore.crt.auth.get_current_datetime = _signing_time  # type: ignore[attr-defined]


class SigningClock:
    """The time this process signs requests to one store with: the machine's clock, plus the offset learnt from a
    server that refused a request as signed too far from its own time (the server's Date header says its time).
    Said once; later corrections (a clock stepped by NTP, a laptop that slept) are logged at debug level."""

    def __init__(self, shift: float = 0.0) -> None:
        self.shift = shift  # the test hook S3MU_TEST_CLOCK_SHIFT: this machine's clock, as a test fakes it
        self.offset = 0.0
        self.corrections = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def signing(self) -> Iterator[None]:
        """Requests signed in this thread within the block use this clock (nested blocks: the innermost)."""
        before = getattr(_signing, "shift", 0.0)
        _signing.shift = self.shift + self.offset
        try:
            yield
        finally:
            _signing.shift = before

    def correct(self, exc: BaseException, what: str) -> None:
        """Take the offset from the server's answer to a request it refused as skewed."""
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) \
            if isinstance(exc, botocore.exceptions.ClientError) else {}
        try:
            server = email.utils.parsedate_to_datetime(headers["date"]).timestamp() + 0.5  # Date is whole seconds
        except (KeyError, TypeError, ValueError):
            log.warning("%s: the server refused this machine's clock, and its answer has no Date header to take "
                        "the time from.", what)
            return
        offset = server - (time.time() + self.shift)
        with self._lock:
            if abs(offset - self.offset) < 2:
                return  # already corrected (by another thread's answer)
            self.offset = offset
            self.corrections += 1
            first = self.corrections == 1
        (log.warning if first else log.debug)(
            "This machine's clock is %s the server's (%s: %s); requests are now signed with the server's time. "
            "Set the clock right (NTP) to avoid this.", _ahead_or_behind(-offset), what, describe(exc))


def _ahead_or_behind(seconds: float) -> str:
    amount = abs(seconds)
    text = f"{amount:.0f} s" if amount < 120 else f"{amount / 60:.0f} min" if amount < 7200 \
        else f"{amount / 3600:.1f} h"
    return f"{text} {'ahead of' if seconds > 0 else 'behind'}"


class ClientFactory:
    """Builds the shared S3 clients, one per read timeout (requests without a body, and part uploads of the run's part
    size: see ``Timeouts``); ``refresh`` rebuilds them to pick up renewed credentials."""

    def __init__(self, endpoint: Endpoint, pool_size: int, timeouts: Timeouts | None = None,
                 request_args: Callable[[str], dict[str, Any]] | None = None) -> None:
        self.endpoint = endpoint
        # What every request of an operation carries besides what the engine passes (properties.py: SSE-C's key,
        # RequestPayer, ExpectedBucketOwner): added to each client's requests, so no call can forget them.
        self.request_args = request_args
        self.pool_size = pool_size
        self.timeouts = timeouts or Timeouts.from_env()
        self.clock = SigningClock(float(os.environ.get("S3MU_TEST_CLOCK_SHIFT") or 0))
        _install_signing_time()
        self._lock = threading.Lock()
        self._clients: dict[float, S3Client] = {}
        self.generation = 0

    def _build(self, read_timeout: float) -> S3Client:
        session = boto3.session.Session(profile_name=self.endpoint.profile, region_name=self.endpoint.region)
        configured = session._session.get_scoped_config().get("s3", {})  # the AWS config file's s3 settings
        style = str(self.endpoint.addressing_style or (configured.get("addressing_style") if isinstance(
            configured, dict) else None) or ("path" if self.endpoint.endpoint_url else "auto"))
        if style not in ADDRESSING_STYLES:
            style = "auto"
        config = Config(
            max_pool_connections=self.pool_size,
            # One retry layer: the engine retries with tenacity, so botocore sends each request once.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=self.timeouts.send,
            read_timeout=read_timeout,
            # We send Content-MD5 or an explicit checksum ourselves; botocore's default trailing
            # checksums break several S3-compatible stores (boto/boto3#4435).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # The part checksum already protects the body; do not SHA-256 it a second time over http.
            s3={"payload_signing_enabled": False, "addressing_style": style},  # type: ignore[arg-type]
        )
        verify: str | bool | None = self.endpoint.ca_bundle or (None if self.endpoint.verify_ssl else False)
        if verify is False:
            _warn_unverified()
        client = session.client("s3", endpoint_url=self.endpoint.endpoint_url, config=config, verify=verify)
        if self.request_args is not None:
            for operation in client.meta.service_model.operation_names:
                extra = self.request_args(operation)
                if extra:
                    client.meta.events.register_first(f"before-parameter-build.s3.{operation}",
                                                      functools.partial(_add_params, extra))
        return client

    def client(self, body_size: int | None = None) -> S3Client:
        """The client for requests that send ``body_size`` bytes (the run's part size, so that its parts share one
        connection pool), or no body."""
        read_timeout = self.timeouts.other if body_size is None else self.timeouts.for_body(body_size)
        with self._lock:
            if read_timeout not in self._clients:
                self._clients[read_timeout] = self._build(read_timeout)
            return self._clients[read_timeout]

    def refresh(self, seen_generation: int) -> bool:
        """Rebuild once per generation; False if a refresh already happened (credentials still bad)."""
        with self._lock:
            if self.generation != seen_generation:
                return True  # another thread refreshed since this caller's request: just retry
            if self.generation >= 1:
                return False
            self._clients.clear()
            self.generation += 1
            return True


def _add_params(extra: dict[str, Any], params: dict[str, Any], **_: Any) -> None:
    for name, value in extra.items():
        params.setdefault(name, value)


_unverified_warned = threading.Event()


def _warn_unverified() -> None:
    """--no-verify-ssl: said once a process, instead of urllib3's warning on every request."""
    import warnings

    import urllib3

    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
    if not _unverified_warned.is_set():
        _unverified_warned.set()
        log.warning("--no-verify-ssl: the store's TLS certificate is not checked; anyone on the way can read and "
                    "change what is sent. Prefer --ca-bundle with the store's CA certificate.")


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


# (what, attempt, error, seconds to wait, time.monotonic() when the failed try began)
RetryHook = Callable[[str, int, BaseException, float, float], None]


class Requester:
    """Runs S3 requests with tenacity retries (the only retry layer) and one credentials refresh per process."""

    def __init__(self, clients: ClientFactory, policy: RetryPolicy | None = None, on_retry: RetryHook | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.clients = clients
        self.policy = policy or RetryPolicy()
        self._on_retry = on_retry
        self._sleep = sleep

    def call(self, what: str, fn: Callable[[S3Client], T], body_size: int | None = None) -> T:
        """``fn(client)`` with retries. ``body_size``: the request sends a body of up to this many bytes, so its answer
        may take longer (``Timeouts.for_body``)."""
        clock = self.clients.clock
        began = [0.0]  # when the latest try began

        def attempt(client: S3Client) -> T:
            began[0] = time.monotonic()
            with clock.signing():
                try:
                    return fn(client)
                except botocore.exceptions.ClientError as exc:
                    if is_clock_skew(exc):
                        clock.correct(exc, what)
                    raise

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning("%s: %s; retry %d in %.1f s.", what, describe(exc) if exc else "failed",
                        state.attempt_number, wait)
            if exc is not None and self._on_retry is not None:
                self._on_retry(what, state.attempt_number, exc, wait, began[0])

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
                return retrying(attempt, self.clients.client(body_size))
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

