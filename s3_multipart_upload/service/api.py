"""The HTTP API of the upload controller: two thin routers over one service layer (core.Service).

- ``/uploads/...``: a plain presigned-upload API keyed by object key (in the caller's namespace).
- ``/files/...`` and ``/multipart_uploads/...``: an upload controller with one status per upload.
- ``/me``: the principal of the token (the page's sign-in).

Every route needs ``Authorization: Bearer TOKEN`` (401 without a known one), except /health and the
upload page (``/`` and ``/static/...``, page.py). A request body over MAX_BODY_BYTES is refused (413)
before it is read; a database that does not answer is a 503 the client may retry, never a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import sqlalchemy.exc
from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from s3_multipart_upload import __version__
from s3_multipart_upload.plan import MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE
from s3_multipart_upload.service import db
from s3_multipart_upload.service.auth import Tokens
from s3_multipart_upload.service.core import Service, ServiceError, Upload
from s3_multipart_upload.service.page import add_page
from s3_multipart_upload.service.storage import Presigned

log = logging.getLogger(__name__)

# The largest JSON body: a completion of 10,000 parts with their quoted ETags is about 650 KB.
MAX_BODY_BYTES = 2**20
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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    detail: str
    code: str


class Me(BaseModel):
    principal: str


class PresignedUrl(BaseModel):
    url: str = Field(description="use it as is; it expires at expires_at")
    method: str
    expires_at: str


class PresignedObject(PresignedUrl):
    key: str


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


class InitIn(Strict):
    key: Key
    content_type: ContentType = None
    size: Size = None
    part_size: PartSize = None


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


class AbortIn(Strict):
    key: Key
    upload_id: Annotated[str, Field(min_length=1, max_length=1024)]


class CreateIn(Strict):
    size: Size = None
    part_size: PartSize = None
    content_type: ContentType = None


class PatchIn(Strict):
    status: Annotated[str, Field(description=f"one of {', '.join(db.STATUSES)}", pattern=STATUS_PATTERN)]
    parts: Annotated[dict[PartNumber, ETag] | None, Field(default=None, max_length=MAX_PARTS,
                                                          description="part number -> ETag; with status uploaded")]


def _upload(u: Upload) -> UploadOut:
    key = u.user_key if u.file_id is None else u.key
    return UploadOut(upload_id=u.upload_id, file_id=u.file_id, bucket=u.bucket, key=key, status=u.status,
                     part_size=u.part_size, size=u.size, etag=u.etag, object_size=u.object_size,
                     created_at=u.created_at, updated_at=u.updated_at)


def _url(p: Presigned) -> dict[str, Any]:
    return {"url": p.url, "method": p.method, "expires_at": p.expires_at}


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "no token, or an unknown one"},
    404: {"model": Error, "description": "no such upload or file, or it belongs to another principal"},
    409: {"model": Error, "description": "the upload's status does not allow this, or the principal has the most "
                                         "pending uploads allowed (TooManyPendingUploads)"},
    413: {"model": Error, "description": f"the request body is over {MAX_BODY_BYTES} bytes"},
    503: {"model": Error, "description": "the storage or the database did not answer: retry later"},
}


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


_bearer = HTTPBearer(auto_error=False, description="an API token of the service's tokens file")


def _principal(request: Request,
               credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    tokens: Tokens = request.app.state.tokens
    who = tokens.principal(credentials.credentials) if credentials is not None else None
    if who is None:
        raise ServiceError(401, "Unauthorized", "a valid API token is needed: Authorization: Bearer TOKEN")
    return who


Principal = Annotated[str, Depends(_principal)]


def create_app(service: Service, tokens: Tokens) -> FastAPI:
    app = FastAPI(title="s3-multipart-upload controller", version=__version__,
                  description="Hands out presigned URLs for multipart uploads to S3 and keeps each upload's status.")
    app.state.tokens = tokens

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
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.status, headers=headers)

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        with service.db.read() as conn:
            conn.exec_driver_sql("SELECT 1")
        return {"status": "ok"}

    @app.get("/me", tags=["service"], responses={401: ERRORS[401]})
    def me(who: Principal) -> Me:
        """The principal the token belongs to."""
        return Me(principal=who)

    # -- the plain presigned-upload API, keyed by object key --------------------------------------

    @app.post("/uploads/url", tags=["uploads"], responses=ERRORS)
    def put_url(body: PutUrlIn, who: Principal) -> PresignedObject:
        key, signed = service.presign_put(who, body.key, body.content_type)
        return PresignedObject(key=key, **_url(signed))

    @app.get("/uploads/download/{key:path}", tags=["uploads"], responses=ERRORS)
    def download_url(key: Annotated[str, Path(min_length=1, max_length=1024)], who: Principal) -> PresignedObject:
        return PresignedObject(key=key, **_url(service.presign_get(who, key)))

    @app.post("/uploads/multipart/init", tags=["uploads"], responses=ERRORS)
    def init(body: InitIn, who: Principal) -> InitOut:
        upload = service.init_upload(who, body.key, body.content_type, body.size, body.part_size)
        return InitOut(upload_id=upload.upload_id, key=upload.user_key, part_size=upload.part_size)

    @app.post("/uploads/multipart/part-url", tags=["uploads"], responses=ERRORS)
    def part_url(body: PartUrlIn, who: Principal) -> PresignedPart:
        signed = service.part_url(who, body.upload_id, body.part_number, key=body.key)
        return PresignedPart(part_number=body.part_number, **_url(signed))

    @app.post("/uploads/multipart/complete", tags=["uploads"], responses=ERRORS)
    def complete(body: CompleteIn, who: Principal) -> UploadOut:
        parts = {p.PartNumber: p.ETag for p in body.parts}
        if len(parts) != len(body.parts):
            raise ServiceError(422, "DuplicatePart", "a part number appears twice in parts")
        return _upload(service.change_status(who, body.upload_id, db.UPLOADED, parts, key=body.key))

    @app.delete("/uploads/multipart/abort", tags=["uploads"], responses=ERRORS)
    def abort(body: AbortIn, who: Principal) -> UploadOut:
        return _upload(service.change_status(who, body.upload_id, db.CANCELLED, key=body.key))

    @app.get("/uploads/multipart/parts", tags=["uploads"], responses=ERRORS)
    def parts(key: Annotated[str, Query(min_length=1, max_length=1024)],
              upload_id: Annotated[str, Query(min_length=1, max_length=1024)], who: Principal) -> PartsOut:
        listed = service.list_parts(who, upload_id, key=key)
        return PartsOut(upload_id=upload_id, parts=[PartOut(**p) for p in listed])

    # -- the upload controller, one status per upload of a file ----------------------------------

    @app.post("/files/{file_id}/multipart_uploads", tags=["files"], status_code=201, responses=ERRORS)
    def create_for_file(file_id: FileId, who: Principal, body: CreateIn | None = None) -> UploadOut:
        body = body or CreateIn()
        return _upload(service.create_for_file(who, file_id, body.size, body.part_size, body.content_type))

    @app.get("/files/{file_id}/multipart_uploads", tags=["files"], responses=ERRORS)
    def file_upload(file_id: FileId, who: Principal,
                    status: Annotated[str, Query(pattern=STATUS_PATTERN)] = db.PENDING,
                    ) -> UploadOut | None:
        found = service.pending_for_file(who, file_id, status)
        return _upload(found) if found is not None else None

    @app.get("/multipart_uploads/{upload_id}", tags=["files"], responses=ERRORS)
    def get_upload(upload_id: UploadId, who: Principal) -> UploadOut:
        return _upload(service.get(who, upload_id))

    @app.get("/multipart_uploads/{upload_id}/parts", tags=["files"], responses=ERRORS)
    def upload_parts(upload_id: UploadId, who: Principal) -> PartsOut:
        return PartsOut(upload_id=upload_id, parts=[PartOut(**p) for p in service.list_parts(who, upload_id)])

    @app.post("/multipart_uploads/{upload_id}/part/{part_no}/presigned_post", tags=["files"], responses=ERRORS)
    def presigned_post(upload_id: UploadId, part_no: Annotated[int, Path(ge=1, le=MAX_PARTS)],
                       who: Principal) -> PresignedPart:
        """A presigned PUT for one part (S3 takes parts by PUT; the name is the controller's historical one)."""
        return PresignedPart(part_number=part_no, **_url(service.part_url(who, upload_id, part_no)))

    @app.patch("/multipart_uploads/{upload_id}", tags=["files"], responses=ERRORS)
    def patch_upload(upload_id: UploadId, body: PatchIn, who: Principal) -> UploadOut:
        return _upload(service.change_status(who, upload_id, body.status, body.parts))

    add_page(app, service.storage.origin)

    @app.middleware("http")
    async def no_store(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"  # answers carry signed URLs
        return response

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)  # outermost of the app's own: before anything reads
    return app
