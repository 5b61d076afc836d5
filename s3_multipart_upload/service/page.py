"""The upload page: ``GET /`` and its static files (``/static/...``), shipped in the package.

The page needs no token to load; it asks for one and keeps it in the tab's sessionStorage. Its
JavaScript calls this controller (same origin, so the controller sends no CORS headers) and PUTs
the parts straight to the storage with the presigned URLs. The Content-Security-Policy allows
scripts (the SHA-256 worker too: worker-src falls back to script-src) and styles from this origin only,
and connections to this origin and the storage's.

``/docs`` (Swagger UI) is served from here too: its script and style come from the swagger-ui-bundle-v2
package (Swagger UI 5, which renders OpenAPI 3.1) at ``/docs/assets/...``, so it works on a site with no
way out; its Content-Security-Policy lets it load from and connect to this origin only (its one inline
script by its hash).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
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


def add_api_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` for ``app.openapi_url``, its assets from the swagger-ui-bundle-v2 package."""
    import swagger_ui_bundle  # type: ignore[import-untyped]  # ships Swagger UI's dist folder, no Python API

    assets = "/docs/assets"
    html = get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
                               swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                               swagger_css_url=f"{assets}/swagger-ui.css",
                               swagger_favicon_url=f"{assets}/favicon-32x32.png")

    # Its one inline script (FastAPI's, which starts Swagger UI) is allowed by its hash; the rest comes from here,
    # and it connects only here: /docs works, and stays, offline.
    inline = re.findall(r"<script>(.*?)</script>", bytes(html.body).decode(), re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline)
    policy = (f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
              "img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(bytes(html.body), headers={"Content-Security-Policy": policy,
                                                       "X-Content-Type-Options": "nosniff"})

    app.mount(assets, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
