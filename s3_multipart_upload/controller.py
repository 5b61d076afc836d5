"""Client mode: upload through an upload controller (``upload --controller URL --file-id ID``), no AWS credentials.

The controller (``s3-multipart-upload serve``) creates the multipart upload and signs one URL
per part; this side PUTs the bytes to S3 with a plain HTTP client (urllib3, which botocore
already brings). The engine is the same as for direct uploads: ``ControllerS3`` answers the
few S3 calls the engine makes (UploadPart, ListParts, CompleteMultipartUpload, HeadObject)
through the controller, and fails the way botocore fails, so retries, error classes, the
parts log and resume all work unchanged.

Neither the token nor a presigned URL is ever logged or written to the state files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import botocore.exceptions
import urllib3

from s3_multipart_upload.errors import BadInput, ServerRefused, StateConflict, TemporaryFailure
from s3_multipart_upload.s3 import (
    ClientFactory,
    Endpoint,
    Kind,
    Requester,
    RetryPolicy,
    Timeouts,
    classify,
    describe,
    error_code,
    translate,
)
from s3_multipart_upload.state import Meta

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
T = TypeVar("T")

TOKEN_ENV = "S3MU_CONTROLLER_TOKEN"
FILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")  # a file id, as the controller takes it (and checks it)
FILE_ID_RULE = "1 to 255 letters, digits, '.', '_' or '-', starting with a letter or digit"
_S3_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")
# The controller's codes that mean "this upload is no more" to the engine (exit 4 unless already built).
_GONE = {"NoSuchUpload", "UploadGone", "NotPending"}
_EXPIRED = {"AccessDenied", "RequestExpired", "ExpiredToken"}


def _error(status: int, code: str, message: str, operation: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},  # type: ignore[typeddict-item]
        operation)


def read_token(token_file: Path | None, env_value: str | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text("utf-8").strip()
        except OSError as exc:
            raise BadInput(f"cannot read the token file {token_file}: {exc.strerror}",
                           "give --token-file a readable file that holds the controller's API token") from exc
        if not token:
            raise BadInput(f"the token file {token_file} is empty", "put the controller's API token in it")
        return token
    if env_value:
        return env_value.strip()
    raise BadInput("--controller needs an API token", f"give --token-file FILE, or set {TOKEN_ENV}")


class Http:
    """urllib3 pools that go as every other client of the machine does: through HTTP_PROXY / HTTPS_PROXY except for
    the hosts NO_PROXY names, trusting AWS_CA_BUNDLE (or ``ca_bundle``) where given, else the system's CAs. One
    direct pool manager, one per proxy; thread-safe as urllib3's are."""

    def __init__(self, ca_bundle: str | None = None, **pool: Any) -> None:
        self._tls: dict[str, Any] = {"ca_certs": ca_bundle or os.environ.get("AWS_CA_BUNDLE") or None}
        self._pool = pool
        # urllib's reading of the proxy variables (either case) and of NO_PROXY, as pip and requests read them.
        self._proxies = urllib.request.getproxies_environment()
        self.direct = urllib3.PoolManager(**self._tls, **pool)
        self._via: dict[str, urllib3.ProxyManager] = {}
        self._lock = threading.Lock()

    def proxy_for(self, url: str) -> str | None:
        parts = urllib.parse.urlsplit(url)
        proxy = self._proxies.get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
                parts.hostname or "", self._proxies):
            return None
        return proxy

    def request(self, method: str, url: str, **kw: Any) -> urllib3.BaseHTTPResponse:
        proxy = self.proxy_for(url)
        if proxy is None:
            return self.direct.request(method, url, **kw)
        with self._lock:
            manager = self._via.get(proxy)
            if manager is None:
                manager = self._via[proxy] = urllib3.ProxyManager(proxy, **self._tls, **self._pool)
        return manager.request(method, url, **kw)


class ControllerAPI:
    """The controller's JSON API over one pooled HTTP client (thread-safe)."""

    def __init__(self, base_url: str, token: str, pool_size: int = 10, timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise BadInput(f"--controller {base_url!r} is not an http(s) URL", "give the controller's base URL, "
                           "such as https://uploads.example.org or http://127.0.0.1:8080")
        self.base_url = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"}
        self.http = Http(num_pools=4, maxsize=pool_size, block=True,
                         timeout=urllib3.Timeout(connect=10, read=timeout), retries=False)

    def call(self, method: str, path: str, operation: str, body: Any = None,
             query: dict[str, str] | None = None) -> Any:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = dict(self._auth)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        response = _send(self.http, method, url, data, headers, operation, where=f"the controller {self.base_url}")
        text = response.data
        if response.status >= 300:
            try:
                doc = json.loads(text)
                detail = doc.get("detail")
                code = str(doc.get("code") or response.status)
                message = detail if isinstance(detail, str) else json.dumps(detail)
            except (ValueError, AttributeError):
                code, message = str(response.status), text[:200].decode("utf-8", "replace")
            if response.status == 401:
                message = f"the controller refused the API token ({message})"
            raise _error(response.status, code, message, operation)
        return json.loads(text) if text else None

    # -- the file-centric endpoints ---------------------------------------------------------------

    def pending(self, file_id: str) -> dict[str, Any] | None:
        found = self.call("GET", f"/files/{_seg(file_id)}/multipart_uploads", "GetPendingUpload",
                          query={"status": "pending"})
        return cast("dict[str, Any] | None", found)

    def create(self, file_id: str, size: int, part_size: int | None,
               described: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A new upload of the file; ``described``: its content_type and metadata, as the API takes them."""
        body: dict[str, Any] = {"size": size, **(described or {})}
        if part_size is not None:
            body["part_size"] = part_size
        return cast("dict[str, Any]", self.call("POST", f"/files/{_seg(file_id)}/multipart_uploads",
                                                "CreateMultipartUpload", body=body))

    def get(self, upload_id: str) -> dict[str, Any]:
        return cast("dict[str, Any]", self.call("GET", f"/multipart_uploads/{_seg(upload_id)}", "GetUpload"))


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _send(http: Http, method: str, url: str, body: Any, headers: dict[str, str], operation: str,
          where: str, timeout: urllib3.Timeout | None = None) -> urllib3.BaseHTTPResponse:
    """One request; connection failures become the builtin errors the engine retries."""
    extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}  # None would mean no timeout at all
    try:
        return http.request(method, url, body=body, headers=headers, redirect=False, preload_content=True, **extra)
    except urllib3.exceptions.TimeoutError as exc:
        raise TimeoutError(f"{operation}: no answer from {where} in time") from exc
    except urllib3.exceptions.HTTPError as exc:
        # The URL may be a presigned one: name the host only.
        raise ConnectionError(f"{operation}: connection to {where} failed ({type(exc).__name__})") from exc


class Declared:
    """The whole file's checksums to declare to the controller (``--declare-checksum``), computed by a thread of its
    own while the parts are sent; the completion, which declares them, waits for it."""

    def __init__(self, compute: Callable[[], dict[str, str]]) -> None:
        self._values: dict[str, str] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(compute,), name="declare-checksum", daemon=True)
        self._thread.start()

    def _run(self, compute: Callable[[], dict[str, str]]) -> None:
        try:
            self._values = compute()
        except BaseException as exc:  # raised where the values are wanted
            self._error = exc

    def values(self) -> dict[str, str]:
        self._thread.join()  # one read of the file, which the parts' sending has mostly overlapped
        if self._error is not None:
            raise self._error
        return dict(self._values)


DeclaredArg = Mapping[str, str] | Declared | None


def declared_values(declared: DeclaredArg) -> dict[str, str]:
    return declared.values() if isinstance(declared, Declared) else dict(declared or {})


class ControllerS3:
    """The S3 calls of the engine for one upload, made through the controller and its presigned URLs."""

    def __init__(self, api: ControllerAPI, upload_id: str, timeouts: Timeouts | None = None,
                 declared: DeclaredArg = None) -> None:
        self.api = api
        self.upload_id = upload_id
        self.timeouts = timeouts or Timeouts()
        self.declared = declared  # the whole file's sha256/crc64nvme, declared at completion

    def _check_upload(self, upload_id: str) -> None:
        if upload_id != self.upload_id:
            raise AssertionError(f"this client serves upload {self.upload_id}, not {upload_id}")

    def list_parts(self, *, UploadId: str, PartNumberMarker: int = 0, **_: Any) -> dict[str, Any]:
        self._check_upload(UploadId)
        upload = self.api.get(UploadId)
        if upload["status"] != "pending":
            raise _error(404, "NoSuchUpload", f"upload {UploadId} is {upload['status']} at the controller",
                         "ListParts")
        if PartNumberMarker:
            return {"Parts": [], "IsTruncated": False}  # the controller answers with every part at once
        listed = self.api.call("GET", f"/multipart_uploads/{_seg(UploadId)}/parts", "ListParts")
        return {"Parts": listed["parts"], "IsTruncated": False}

    def upload_part(self, *, UploadId: str, PartNumber: int, Body: Any, ContentMD5: str | None = None,
                    **args: Any) -> dict[str, Any]:
        self._check_upload(UploadId)
        if any(name.startswith("Checksum") for name in args):
            raise BadInput("through a controller, parts are checked with Content-MD5 only",
                           "leave out --checksum (S3 refuses unsigned x-amz-checksum headers on presigned URLs)")
        headers = {"Content-Length": str(len(Body))}  # Body: the engine's PartStream, read as it is sent
        # Stalls: as for botocore's part uploads (s3.Timeouts), here for a part this size.
        timeout = urllib3.Timeout(connect=self.timeouts.send, read=self.timeouts.for_body(len(Body)))
        if ContentMD5:
            headers["Content-MD5"] = ContentMD5
        for attempt in (1, 2):
            signed = self.api.call("POST", f"/multipart_uploads/{_seg(UploadId)}/part/{PartNumber}/presigned_post",
                                   "GetPartUrl")
            Body.seek(0)  # a second try reads the part again from the file (and hashes it again)
            response = _send(self.api.http, signed.get("method", "PUT"), signed["url"], Body, headers,
                             f"UploadPart {PartNumber}", where=_host(signed["url"]), timeout=timeout)
            code = _s3_code(response.data) if response.status >= 300 else None
            if attempt == 1 and (response.status == 403 or code in _EXPIRED):
                # Expired (the part waited, or the clocks differ): a fresh URL, once. S3 answers 403
                # AccessDenied "Request has expired"; some stores answer 400 AccessDenied.
                log.warning("Part %d: the presigned URL was refused (%d %s); asking the controller for a fresh "
                            "one.", PartNumber, response.status, code or "")
                continue
            if response.status >= 300:
                code = code or str(response.status)
                raise _error(response.status, code, f"S3 answered {response.status} {code} to the part's "
                                                    "presigned PUT", "UploadPart")
            etag = response.headers.get("ETag")
            if not etag:
                raise _error(502, "MissingETag", "S3 answered the part's PUT without an ETag", "UploadPart")
            return {"ETag": etag}
        raise AssertionError("unreachable: two tries")

    def complete_multipart_upload(self, *, UploadId: str, MultipartUpload: dict[str, Any],
                                  **_: Any) -> dict[str, Any]:
        self._check_upload(UploadId)
        parts = {str(p["PartNumber"]): str(p["ETag"]).strip('"') for p in MultipartUpload["Parts"]}
        try:
            done = self.api.call("PATCH", f"/multipart_uploads/{_seg(UploadId)}", "CompleteMultipartUpload",
                                 body={"status": "uploaded", "parts": parts, **declared_values(self.declared)})
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in _GONE or code == "InvalidTransition":
                # Already completed by an earlier try, or cancelled: the engine checks which (HeadObject).
                raise _error(404, "NoSuchUpload", str(exc.response["Error"].get("Message")),
                             "CompleteMultipartUpload") from exc
            raise
        return {"ETag": done.get("etag") or ""}

    def abort_multipart_upload(self, *, UploadId: str, **_: Any) -> dict[str, Any]:
        self._check_upload(UploadId)
        try:
            self.api.call("PATCH", f"/multipart_uploads/{_seg(UploadId)}", "AbortMultipartUpload",
                          body={"status": "cancelled"})
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (*_GONE, "InvalidTransition"):
                upload = self.api.get(UploadId)
                if upload["status"] in ("cancelled", "failed"):
                    raise _error(404, "NoSuchUpload", f"upload {UploadId} is {upload['status']}",
                                 "AbortMultipartUpload") from exc
            raise
        return {}

    def head_object(self, **_: Any) -> dict[str, Any]:
        upload = self.api.get(self.upload_id)
        if upload["status"] not in ("uploaded", "accepted") or upload.get("object_size") is None:
            raise _error(404, "NotFound", f"upload {self.upload_id} is {upload['status']}: no object yet",
                         "HeadObject")
        return {"ContentLength": int(upload["object_size"]), "ETag": f'"{upload.get("etag") or ""}"'}

    def delete_object(self, **_: Any) -> NoReturn:
        raise _error(403, "AccessDenied", "the controller does not delete objects; ask its operators",
                     "DeleteObject")

    def __getattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{name} is not available through an upload controller")


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _s3_code(body: bytes) -> str | None:
    match = _S3_ERROR_CODE.search(body[:4096])
    return match.group(1).decode("ascii", "replace") if match else None


class ControllerClients(ClientFactory):
    """What the engine asks for clients: here, always the one controller-backed client of this upload."""

    def __init__(self, api: ControllerAPI, upload_id: str, declared: DeclaredArg = None) -> None:
        super().__init__(Endpoint(), pool_size=0)
        self.api = api
        self.upload_id = upload_id
        self.declared = declared

    def _build(self, read_timeout: float) -> S3Client:
        return cast("S3Client", ControllerS3(self.api, self.upload_id, self.timeouts, self.declared))

    def client(self, body_size: int | None = None) -> S3Client:
        return super().client()  # one for every request: each part's PUT takes a timeout for its size

    def refresh(self, seen_generation: int) -> bool:
        return False  # no AWS credentials here: a refused token is final (exit 5)


@dataclass(frozen=True)
class ControllerUpload:
    """The upload the controller keeps for a file: where it goes and in which parts."""

    bucket: str
    key: str
    upload_id: str | None  # None: resume the one META records
    part_size: int
    clients: ControllerClients
    created: bool = False  # created by this run: the store holds none of its parts (nothing to list)


def controller_upload(api: ControllerAPI, file_id: str, size: int, part_size: int | None, retries: int,
                      meta: Meta | None, meta_path: Path, described: Mapping[str, Any] | None = None,
                      declared: DeclaredArg = None) -> ControllerUpload:
    """The file's upload at the controller: the one META records (checked to be that file's), else the pending
    one the controller holds, else a new one. Two runs creating it at once: the loser takes the winner's.
    ``described``: the object's content_type and metadata, for a new one; ``declared``: the whole file's sha256
    and/or crc64nvme, declared when it is completed (--declare-checksum; also when it is created, if known then)."""
    where = f"file {file_id} at {api.base_url}"
    if meta is not None:
        if meta.extra.get("controller") != api.base_url or meta.extra.get("fileId") != file_id:
            raise StateConflict(f"meta file {meta_path} is not that of {where}",
                                "give the same --controller and --file-id as that upload, or another -m and -a path")
        return ControllerUpload(meta.bucket, meta.key, None, meta.split_size,
                                ControllerClients(api, meta.upload_id or "", declared))
    requests = Requester(ControllerClients(api, ""), RetryPolicy(attempts=retries))
    upload = _call(requests, lambda: api.pending(file_id), where)
    created = False
    if upload is None:
        try:
            known = {} if isinstance(declared, Declared) else dict(declared or {})
            upload = _call(requests, lambda: api.create(file_id, size, part_size, {**(described or {}), **known}),
                           where)
            created = True
        except ServerRefused as exc:
            if exc.__cause__ is None or error_code(exc.__cause__) != "UploadExists":
                raise
            upload = _call(requests, lambda: api.pending(file_id), where)  # a twin run won the race
            if upload is None:
                raise StateConflict(f"{where} already has an upload ({exc.message})",
                                    "nothing to send; the controller says which upload it is") from exc
    log.debug("Controller upload %s of %s: s3://%s/%s in parts of %d bytes.", upload["upload_id"], where,
              upload["bucket"], upload["key"], upload["part_size"])
    return ControllerUpload(upload["bucket"], upload["key"], upload["upload_id"], upload["part_size"],
                            ControllerClients(api, upload["upload_id"], declared), created)


def _call(requests: Requester, call: Callable[[], T], where: str) -> T:
    """A request to the controller outside the engine: same retries, same error classes."""
    try:
        return requests.call("controller", lambda _client: call())
    except Exception as exc:
        kind = classify(exc)
        if kind is Kind.TRANSIENT:
            raise TemporaryFailure(f"{where} did not answer ({describe(exc)})",
                                   "check that the controller is up, then rerun the same command") from exc
        if kind is Kind.REFUSED:
            raise ServerRefused(f"{where} refused: {describe(exc)}",
                                "check --controller, --file-id and the token") from exc
        raise translate(exc, "", "", where=where) from exc


def clients_for(meta: Meta | None, meta_path: Path, token_file: Path | None, endpoint: Endpoint) -> ClientFactory:
    """S3 directly, or, for an upload made through a controller (its META says which), that controller."""
    controller = meta.extra.get("controller") if meta is not None else None
    if meta is None or not isinstance(controller, str):
        if token_file is not None:
            raise BadInput(f"--token-file is for uploads through a controller, and {meta_path} is not one",
                           "leave out --token-file")
        return ClientFactory(endpoint, pool_size=4)
    api = ControllerAPI(controller, read_token(token_file, os.environ.get(TOKEN_ENV)))
    return ControllerClients(api, meta.upload_id or "")
