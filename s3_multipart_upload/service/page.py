"""The upload page: ``GET /`` and its static files (``/static/...``), shipped in the package.

The page needs no token to load; it asks for one and keeps it in the tab's sessionStorage. Its
JavaScript calls this controller (same origin, so the controller sends no CORS headers) and PUTs
the parts straight to the storage with the presigned URLs. The Content-Security-Policy allows
scripts and styles from this origin only, and connections to this origin and the storage's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def content_security_policy(storage_origin: str | None) -> str:
    connect = "'self'" + (f" {storage_origin}" if storage_origin else " https:")
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {connect}; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


def add_page(app: FastAPI, storage_origin: Callable[[], str | None]) -> None:
    """Serve the page at ``/`` and its files at ``/static``; ``storage_origin`` gives the origin the parts go to."""
    page = (STATIC / "index.html").read_text("utf-8")
    policy: list[str] = []  # computed at the first request: it signs a URL, which needs the service's credentials

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        if not policy:
            policy.append(content_security_policy(storage_origin()))
        return HTMLResponse(page, headers={
            "Content-Security-Policy": policy[0],
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        })

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
