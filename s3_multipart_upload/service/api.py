"""The HTTP API of the upload controller: two thin routers over one service layer (core.Service).

- ``/uploads/...``: a plain presigned-upload API keyed by object key (in the caller's namespace).
- ``/files/...`` and ``/multipart_uploads/...``: an upload controller with one status per upload.
- ``/me``: the principal of the token (the page's sign-in).
- ``/multipart_uploads/{id}/review`` and ``/reviews``: the reviewer role's decisions (review.py).

Every route needs ``Authorization: Bearer TOKEN`` (401 without a known one; 429 after too many
failures from one address), except /health..., /metrics (ops.py) and the upload page (``/`` and
``/static/...``, page.py). A request body over MAX_BODY_BYTES is refused (413)
before it is read; a database that does not answer is a 503 the client may retry, never a 500.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Protocol

import sqlalchemy.exc
from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from s3_multipart_upload import __version__
from s3_multipart_upload.plan import MAX_PARTS
from s3_multipart_upload.service import db
from s3_multipart_upload.service.auth import Authenticator, SignInLimiter, Tokens
from s3_multipart_upload.service.core import Service, ServiceError
from s3_multipart_upload.service.model import Caller, Declared
from s3_multipart_upload.service.ops import AccessLog, Metrics, add_operations
from s3_multipart_upload.service.page import add_api_docs, add_page
from s3_multipart_upload.service.review import Reviews
from s3_multipart_upload.service.schemas import (
    ERRORS,
    MAX_BODY_BYTES,
    STATUS_PATTERN,
    AbortIn,
    CompleteIn,
    CreateIn,
    FileId,
    HistoryOut,
    InitIn,
    InitOut,
    Me,
    PartOut,
    PartsOut,
    PartUrlIn,
    PatchIn,
    PresignedObject,
    PresignedPart,
    PutUrlIn,
    ReviewIn,
    UploadId,
    UploadOut,
    UploadsOut,
    change_out,
    upload_out,
    url_fields,
)

__all__ = ["MAX_BODY_BYTES", "Worker", "create_app"]

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A background worker that runs while the app serves (the verifier, the webhook deliverer)."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...


class BodyLimit:
    """413 for a request body over ``limit`` bytes, without reading it: by its Content-Length, or, for a chunked
    body, as soon as the bytes received pass the limit (what was received is then replayed to the app)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:  # the server has checked that it is a number, and reads no more than it says
            if int(length) > self.limit:
                await self._refuse(scope, receive, send, int(length))
                return
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        size = 0
        while True:  # bounded: each message brings bytes, and more than the limit ends it
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, receive, send, None)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, length: int | None) -> None:
        said = f"{length} bytes" if length is not None else f"more than {self.limit} bytes"
        response = JSONResponse({"detail": f"the request body is {said}; this controller takes at most "
                                           f"{self.limit}", "code": "BodyTooLarge"},
                                status_code=413, headers={"Connection": "close", "Cache-Control": "no-store"})
        await response(scope, receive, send)


_bearer = HTTPBearer(auto_error=False, description="an API token of the service's tokens file, or a JWT of its "
                                                    "identity provider")


def _caller(request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    """The token's principal; 401 without a known one. An address past the limit of wrong tokens gets 429 for each
    further wrong one (Retry-After: when to try again), while a right token still signs in: clients behind one
    address (a NAT, a proxy) are not locked out by a neighbour's storm, and a guess still learns nothing."""
    auth: Authenticator = request.app.state.auth
    limiter: SignInLimiter = request.app.state.sign_ins
    who = auth.caller(credentials.credentials) if credentials is not None else None
    if who is None:
        if credentials is not None:  # a wrong token counts; no token at all is no sign-in attempt
            address = request.client.host if request.client else "unknown"
            wait = limiter.retry_after(address)
            if wait is not None:
                raise ServiceError(429, "TooManyFailedSignIns", f"too many wrong tokens from {address}: wait {wait} s "
                                   "before trying another", headers={"Retry-After": str(wait)})
            limiter.failed(address)
        raise ServiceError(401, "Unauthorized", "a valid API token is needed: Authorization: Bearer TOKEN")
    request.state.principal = who.principal  # for the access log
    return who


def _principal(who: Annotated[Caller, Depends(_caller)]) -> str:
    return who.principal


CallerDep = Annotated[Caller, Depends(_caller)]
Principal = Annotated[str, Depends(_principal)]


def _declared(sha256: str | None, crc64nvme: str | None) -> Declared:
    return Declared(sha256, crc64nvme)


def create_app(service: Service, auth: Authenticator | Tokens, *, metrics: Metrics | None = None,
               workers: Sequence[Worker] = (), sign_ins: SignInLimiter | None = None, docs: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for worker in workers:
            worker.start()
        try:
            yield
        finally:
            for worker in workers:
                worker.stop()

    app = FastAPI(title="s3-multipart-upload controller", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="Hands out presigned URLs for multipart uploads to S3 and keeps each upload's status.")
    app.state.auth = auth if isinstance(auth, Authenticator) else Authenticator(auth)
    app.state.sign_ins = sign_ins or SignInLimiter()
    reviews = Reviews(service)
    metrics = metrics or Metrics(service.db)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own answer, but ASCII-escaped: the errors echo the input, and JSON input can hold a lone
        # surrogate ("\ud800"), which cannot be encoded as UTF-8 (FastAPI's handler then fails with a 500).
        body = json.dumps({"detail": jsonable_encoder(exc.errors())})
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # The database is down, restarting, or every connection of the pool is busy: the client may retry.
        cause = getattr(exc, "orig", None) or exc
        log.warning("Database unavailable: %s: %s", type(cause).__name__, str(cause).splitlines()[0][:200])
        return JSONResponse({"detail": "the database did not answer; retry in a moment", "code": "DatabaseUnavailable"},
                            status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        headers = dict(exc.headers)
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.status, headers=headers or None)

    add_operations(app, service.db, metrics)

    @app.get("/me", tags=["service"], responses={401: ERRORS[401]})
    def me(who: CallerDep) -> Me:
        """The principal the token belongs to, and its roles."""
        return Me(principal=who.principal, roles=sorted(who.roles))

    # -- the plain presigned-upload API, keyed by object key --------------------------------------

    @app.post("/uploads/url", tags=["uploads"], responses=ERRORS)
    def put_url(body: PutUrlIn, who: Principal) -> PresignedObject:
        key, signed = service.presign_put(who, body.key, body.content_type)
        return PresignedObject(key=key, headers=signed.headers, **url_fields(signed))

    @app.get("/uploads/download/{key:path}", tags=["uploads"], responses=ERRORS)
    def download_url(key: Annotated[str, Path(min_length=1, max_length=1024)], who: Principal) -> PresignedObject:
        return PresignedObject(key=key, **url_fields(service.presign_get(who, key)))

    @app.post("/uploads/multipart/init", tags=["uploads"], responses=ERRORS)
    def init(body: InitIn, who: Principal) -> InitOut:
        upload = service.init_upload(who, body.key, body.content_type, body.size, body.part_size,
                                     _declared(body.sha256, body.crc64nvme), body.metadata)
        return InitOut(upload_id=upload.upload_id, key=upload.user_key, part_size=upload.part_size)

    @app.post("/uploads/multipart/part-url", tags=["uploads"], responses=ERRORS)
    def part_url(body: PartUrlIn, who: Principal) -> PresignedPart:
        signed = service.part_url(who, body.upload_id, body.part_number, key=body.key)
        return PresignedPart(part_number=body.part_number, **url_fields(signed))

    @app.post("/uploads/multipart/complete", tags=["uploads"], responses=ERRORS)
    def complete(body: CompleteIn, who: Principal) -> UploadOut:
        parts = {p.PartNumber: p.ETag for p in body.parts}
        if len(parts) != len(body.parts):
            raise ServiceError(422, "DuplicatePart", "a part number appears twice in parts")
        return upload_out(service.change_status(who, body.upload_id, db.UPLOADED, parts, key=body.key,
                                                declared=_declared(body.sha256, body.crc64nvme)))

    @app.delete("/uploads/multipart/abort", tags=["uploads"], responses=ERRORS)
    def abort(body: AbortIn, who: Principal) -> UploadOut:
        return upload_out(service.change_status(who, body.upload_id, db.CANCELLED, key=body.key))

    @app.get("/uploads/multipart/parts", tags=["uploads"], responses=ERRORS)
    def parts(key: Annotated[str, Query(min_length=1, max_length=1024)],
              upload_id: Annotated[str, Query(min_length=1, max_length=1024)], who: Principal) -> PartsOut:
        listed = service.list_parts(who, upload_id, key=key)
        return PartsOut(upload_id=upload_id, parts=[PartOut(**p) for p in listed])

    # -- the upload controller, one status per upload of a file ----------------------------------

    @app.post("/files/{file_id}/multipart_uploads", tags=["files"], status_code=201, responses=ERRORS)
    def create_for_file(file_id: FileId, who: Principal, body: CreateIn | None = None) -> UploadOut:
        body = body or CreateIn()
        return upload_out(service.create_for_file(who, file_id, body.size, body.part_size, body.content_type,
                                                  _declared(body.sha256, body.crc64nvme), body.metadata))

    @app.get("/files/{file_id}/multipart_uploads", tags=["files"], responses=ERRORS)
    def file_upload(file_id: FileId, who: Principal,
                    status: Annotated[str, Query(pattern=STATUS_PATTERN)] = db.PENDING,
                    ) -> UploadOut | None:
        found = service.pending_for_file(who, file_id, status)
        return upload_out(found) if found is not None else None

    @app.get("/multipart_uploads", tags=["files"], responses=ERRORS)
    def own_uploads(who: Principal, status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> UploadsOut:
        """The caller's file uploads, newest first (``status``: only those in it), each with its status and, when
        it was accepted or rejected, who decided and why (``status_by``, ``reason``)."""
        return UploadsOut(uploads=[upload_out(u) for u in service.list_own(who, status, limit)])

    @app.get("/multipart_uploads/{upload_id}", tags=["files"], responses=ERRORS)
    def get_upload(upload_id: UploadId, who: Principal) -> UploadOut:
        return upload_out(service.get(who, upload_id))

    @app.get("/multipart_uploads/{upload_id}/parts", tags=["files"], responses=ERRORS)
    def upload_parts(upload_id: UploadId, who: Principal) -> PartsOut:
        return PartsOut(upload_id=upload_id, parts=[PartOut(**p) for p in service.list_parts(who, upload_id)])

    @app.post("/multipart_uploads/{upload_id}/part/{part_no}/presigned_post", tags=["files"], responses=ERRORS)
    def presigned_post(upload_id: UploadId, part_no: Annotated[int, Path(ge=1, le=MAX_PARTS)],
                       who: Principal) -> PresignedPart:
        """A presigned PUT for one part (S3 takes parts by PUT; the name is the controller's historical one)."""
        return PresignedPart(part_number=part_no, **url_fields(service.part_url(who, upload_id, part_no)))

    @app.patch("/multipart_uploads/{upload_id}", tags=["files"], responses=ERRORS)
    def patch_upload(upload_id: UploadId, body: PatchIn, who: Principal) -> UploadOut:
        """The owner's moves: uploaded (with the parts), cancelled, failed. Accepted and rejected are the
        verifier's or a reviewer's (403 here: see /review)."""
        return upload_out(service.change_status(who, upload_id, body.status, body.parts, reason=body.reason,
                                                declared=_declared(body.sha256, body.crc64nvme)))

    @app.get("/multipart_uploads/{upload_id}/history", tags=["files"], responses=ERRORS)
    def history(upload_id: UploadId, who: CallerDep) -> HistoryOut:
        """Every status change of the upload, oldest first: who (as owner, reviewer, verifier or controller),
        when and why. Its owner's, or any upload's for a reviewer."""
        return HistoryOut(upload_id=upload_id, changes=[change_out(c) for c in reviews.history(who, upload_id)])

    # -- review --------------------------------------------------------------------------------------

    @app.post("/multipart_uploads/{upload_id}/review", tags=["review"], responses=ERRORS)
    def review(upload_id: UploadId, body: ReviewIn, who: CallerDep) -> UploadOut:
        """A reviewer accepts or rejects an uploaded upload (or rejects an accepted one), with a reason."""
        return upload_out(reviews.decide(who, upload_id, body.status, body.reason), full_key=True)

    @app.get("/reviews", tags=["review"], responses=ERRORS)
    def review_queue(who: CallerDep, status: Annotated[str, Query(pattern=STATUS_PATTERN)] = db.UPLOADED,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> UploadsOut:
        """Every principal's uploads in ``status`` (by default those awaiting a decision); reviewers only."""
        return UploadsOut(uploads=[upload_out(u, full_key=True) for u in reviews.queue(who, status, limit)])

    add_page(app, service.storage.origin)
    if docs:
        add_api_docs(app)

    @app.middleware("http")
    async def no_store(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"  # answers carry signed URLs
        return response

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)  # before anything reads the body
    app.add_middleware(AccessLog, metrics=metrics)  # outermost: every answer is counted and logged, 413s too
    return app
