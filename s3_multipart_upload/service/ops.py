"""What operators run the controller with: ``/metrics`` (Prometheus), one JSON access-log line per request
with its request id, and health: ``/health/live`` (the process answers) against ``/health/ready`` (and its
database does; ``/health`` is the same as ready).

Metrics (prometheus-client, a registry of the app's own):

- ``s3mu_http_requests_total{method,route,status}`` and ``s3mu_http_request_duration_seconds{method,route}``,
  by route template (``/multipart_uploads/{upload_id}``), never by raw path;
- from the database at each scrape, so every instance reports the same totals: ``s3mu_uploads{status}``,
  ``s3mu_completed_bytes{status}`` (object bytes of the uploaded, accepted and rejected uploads),
  ``s3mu_outbox_backlog`` and ``s3mu_outbox_oldest_age_seconds`` (events not yet delivered),
  ``s3mu_verification_queue`` (uploads awaiting the verifier), and ``s3mu_database_up``.

The access log (logger ``s3_multipart_upload.service.access``) writes JSON: time, request_id, method, path
(no query string), route, status, duration_ms, client, principal. The request id is the client's
``X-Request-ID`` when it is a short token of safe characters, else a new one; the answer carries it back.
Headers are never logged: they hold the bearer token.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable

import sqlalchemy as sa
import sqlalchemy.exc
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from s3_multipart_upload.service import db, verify
from s3_multipart_upload.service.db import Database, multipart_uploads, outbox

access_log = logging.getLogger("s3_multipart_upload.service.access")
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
COMPLETED = (db.UPLOADED, db.ACCEPTED, db.REJECTED)


class _DatabaseCollector(Collector):
    def __init__(self, database: Database) -> None:
        self.db = database

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("s3mu_database_up", "1 if the database answered this scrape's queries")
        try:
            with self.db.read() as conn:
                by_status = conn.execute(sa.select(multipart_uploads.c.status, sa.func.count(),
                                                   sa.func.coalesce(sa.func.sum(multipart_uploads.c.object_size), 0))
                                         .group_by(multipart_uploads.c.status)).all()
                backlog, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(outbox.c.created_at))
                                               .where(outbox.c.delivered_at.is_(None))).one()
                queue = conn.execute(sa.select(sa.func.count()).select_from(multipart_uploads)
                                     .where(verify.due())).scalar() or 0
        except sqlalchemy.exc.SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        counts = dict((s, (n, b)) for s, n, b in by_status)
        uploads = GaugeMetricFamily("s3mu_uploads", "Uploads by status", labels=["status"])
        completed = GaugeMetricFamily("s3mu_completed_bytes", "Bytes of the completed objects, by their upload's "
                                                              "status", labels=["status"])
        for status in db.STATUSES:
            n, b = counts.get(status, (0, 0))
            uploads.add_metric([status], n)
            if status in COMPLETED:
                completed.add_metric([status], b)
        yield uploads
        yield completed
        yield GaugeMetricFamily("s3mu_outbox_backlog", "Events not yet delivered to a webhook", value=backlog)
        age = 0.0
        if oldest is not None:
            age = max(0.0, (db.now() - (oldest if oldest.tzinfo else oldest.replace(tzinfo=dt.UTC))).total_seconds())
        yield GaugeMetricFamily("s3mu_outbox_oldest_age_seconds", "Age of the oldest undelivered event", value=age)
        yield GaugeMetricFamily("s3mu_verification_queue", "Uploaded uploads awaiting the verifier", value=queue)


class Metrics:
    def __init__(self, database: Database) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("s3mu_http_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("s3mu_http_request_duration_seconds", "Time to answer an HTTP request",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.registry.register(_DatabaseCollector(database))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class AccessLog:
    """The outermost layer: a request id for each request, its metrics, and its JSON log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = sent if REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()
            self.metrics.latency.labels(scope["method"], route).observe(elapsed)
            client = scope.get("client")
            access_log.info(json.dumps({
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "request_id": request_id, "method": scope["method"], "path": scope["path"], "route": route,
                "status": status[0], "duration_ms": round(elapsed * 1000, 1), "client": client[0] if client else None,
                "principal": scope["state"].get("principal"),
            }, ensure_ascii=True))


def add_operations(app: FastAPI, database: Database, metrics: Metrics) -> None:
    """/metrics and the health routes; none needs a token (they show no upload, key or principal)."""

    @app.get("/metrics", tags=["service"], include_in_schema=False)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health/live", tags=["service"])
    def live() -> dict[str, str]:
        """The process answers (restart it if not); says nothing of its database."""
        return {"status": "live"}

    @app.get("/health/ready", tags=["service"])
    @app.get("/health", tags=["service"])
    def ready() -> Response:
        """The database answers at this program's schema version (send traffic here only then)."""
        try:
            with database.read() as conn:
                version = conn.execute(sa.select(sa.func.max(db.schema_version.c.version))).scalar()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            return JSONResponse({"status": "unready", "reason": f"the database does not answer "
                                 f"({type(cause).__name__})"}, status_code=503, headers={"Retry-After": "1"})
        if version != db.SCHEMA_VERSION:
            return JSONResponse({"status": "unready", "reason": f"the database is at schema version {version}, "
                                 f"this program needs {db.SCHEMA_VERSION}"}, status_code=503)
        return JSONResponse({"status": "ok"})
