"""Operations (issue 25, items 3 and 6): /metrics, the JSON access log with request ids, /health/live against
/health/ready, the limit on failed sign-ins per address, and /docs off. Against the real service process."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.pg import PostgresServer
from tests.service_fixtures import ServiceProcess, StartService
from tests.test_service_api import ok, refused, send_parts

pytestmark = pytest.mark.integration


def metrics(svc: ServiceProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    response = httpx.get(f"{svc.base_url}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_metrics_move_with_requests_and_uploads(module_service: ServiceProcess) -> None:
    me = ("s3mu_http_requests_total", (("method", "GET"), ("route", "/me"), ("status", "200")))
    pending = ("s3mu_uploads", (("status", "pending"),))
    uploaded = ("s3mu_uploads", (("status", "uploaded"),))
    completed = ("s3mu_completed_bytes", (("status", "uploaded"),))
    denied = ("s3mu_http_requests_total", (("method", "GET"), ("route", "/multipart_uploads/{upload_id}"),
                                           ("status", "404")))
    before = metrics(module_service)
    with module_service.client() as c:
        for _ in range(3):
            ok(c.get("/me"))
        upload = ok(c.post(f"/files/m-{uuid.uuid4().hex[:8]}/multipart_uploads", json={}), 201)
        refused(c.get("/multipart_uploads/no-such-upload"), 404)
        refused(c.get("/multipart_uploads/another-one"), 404)
        middle = metrics(module_service)
        ok(c.patch(f"/multipart_uploads/{upload['upload_id']}",
                   json={"status": "uploaded", "parts": send_parts(c, upload["upload_id"], [b"x" * 1234])}))
    after = metrics(module_service)
    assert middle[me] - before.get(me, 0) == 3
    assert middle[denied] - before.get(denied, 0) == 2  # by route template, not by the ids asked for
    assert middle[pending] - before[pending] == 1
    assert (after[pending], after[uploaded]) == (middle[pending] - 1, middle[uploaded] + 1)
    assert after[completed] - middle[completed] == 1234
    assert after[("s3mu_database_up", ())] == 1
    assert ("s3mu_outbox_backlog", ()) in after and ("s3mu_verification_queue", ()) in after
    latency = ("s3mu_http_request_duration_seconds_count", (("method", "GET"), ("route", "/me")))
    assert after[latency] - before.get(latency, 0) == 3
    assert not any("no-such-upload" in str(labels) for _name, labels in after)


def test_access_log_is_json_with_a_request_id(module_service: ServiceProcess) -> None:
    marker = uuid.uuid4().hex
    with module_service.client() as c:
        given = c.get("/me", headers={"X-Request-ID": f"client-{marker}"})
        made = c.get(f"/multipart_uploads/{marker}")
        refused_id = c.get("/me", headers={"X-Request-ID": "bad id with spaces\t" + marker})
    assert given.headers["X-Request-ID"] == f"client-{marker}"
    assert len(made.headers["X-Request-ID"]) == 32 and refused_id.headers["X-Request-ID"] != "bad id"
    deadline = time.monotonic() + 10
    while True:  # the line is written after the answer is sent
        lines = [json.loads(line) for line in module_service.log().splitlines() if line.startswith("{")]
        ours = {line["request_id"]: line for line in lines}
        if made.headers["X-Request-ID"] in ours and refused_id.headers["X-Request-ID"] in ours:
            break
        assert time.monotonic() < deadline, "the access log lines never came"
        time.sleep(0.05)
    line = ours[f"client-{marker}"]
    assert (line["method"], line["path"], line["route"], line["status"], line["principal"]) == \
        ("GET", "/me", "/me", 200, "alice")
    assert line["time"].endswith("Z") and line["duration_ms"] >= 0 and line["client"] == "127.0.0.1"
    other = ours[made.headers["X-Request-ID"]]
    assert (other["path"], other["route"], other["status"]) == \
        (f"/multipart_uploads/{marker}", "/multipart_uploads/{upload_id}", 404)
    assert "bad id" not in module_service.log()
    for token in module_service.tokens.values():
        assert token not in module_service.log()


def test_live_is_the_process_ready_is_its_database(start_service: StartService,
                                                   postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    svc = start_service(url)
    assert ok(httpx.get(f"{svc.base_url}/health/live")) == {"status": "live"}
    assert ok(httpx.get(f"{svc.base_url}/health/ready")) == {"status": "ok"}
    assert ok(httpx.get(f"{svc.base_url}/health")) == {"status": "ok"}
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # its connections are cut, and it is gone
    ready = httpx.get(f"{svc.base_url}/health/ready", timeout=30)
    assert ready.status_code == 503 and ready.json()["status"] == "unready", ready.text
    assert "database" in ready.json()["reason"]
    assert httpx.get(f"{svc.base_url}/health", timeout=30).status_code == 503
    assert ok(httpx.get(f"{svc.base_url}/health/live")) == {"status": "live"}  # no restart for a database outage
    up = metrics(svc)
    assert up[("s3mu_database_up", ())] == 0  # /metrics still answers, and says so


def test_failed_sign_ins_are_limited_per_address(start_service: StartService, tmp_path: Path) -> None:
    svc = start_service(f"sqlite:///{tmp_path / 'c.sqlite3'}", config={"sign_in_limit": 3, "sign_in_window": 30})
    wrong = {"Authorization": "Bearer not-a-token-of-this-service"}
    with httpx.Client(base_url=svc.base_url, timeout=10) as c:
        for _ in range(5):  # no token at all is no attempt
            refused(c.get("/me"), 401, "Unauthorized")
        for _ in range(3):
            refused(c.get("/me", headers=wrong), 401, "Unauthorized")
        limited = c.get("/me", headers=wrong)
        refused(limited, 429, "TooManyFailedSignIns")
        assert 1 <= int(limited.headers["Retry-After"]) <= 30
        refused(c.get("/me", headers={"Authorization": "Bearer another-wrong-token-000"}), 429, "TooManyFailedSignIns")
        # A right token from the same address (a neighbour behind the same NAT) still signs in.
        assert ok(c.get("/me", headers=svc.headers()))["principal"] == "alice"
        refused(c.get("/me"), 401, "Unauthorized")  # and no token is still told so
    # Another address is not held up by this one's failures (all of 127.0.0.0/8 is this machine).
    with httpx.Client(base_url=svc.base_url, timeout=10,
                      transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
        refused(other.get("/me", headers=wrong), 401, "Unauthorized")
    assert "not-a-token-of-this-service" not in svc.log()


def test_docs_are_served_from_the_package(module_service: ServiceProcess) -> None:
    """/docs names no other host: Swagger UI's script, style and icon come from the controller, each answered."""
    import re

    with httpx.Client(base_url=module_service.base_url, timeout=10) as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sorted(assets) == ["/docs/assets/favicon-32x32.png", "/docs/assets/swagger-ui-bundle.js",
                                  "/docs/assets/swagger-ui.css"]
        assert "http://" not in page.text.replace(module_service.base_url, "") and "https://" not in page.text
        for asset in assets:
            r = c.get(asset)
            assert r.status_code == 200 and len(r.content) > 500, asset
        assert "/docs" not in c.get("/openapi.json").json()["paths"]


def test_docs_can_be_off(start_service: StartService, tmp_path: Path) -> None:
    svc = start_service(f"sqlite:///{tmp_path / 'c.sqlite3'}", config={"docs": False})
    assert httpx.get(f"{svc.base_url}/docs", timeout=10).status_code == 404
    assert httpx.get(f"{svc.base_url}/redoc", timeout=10).status_code == 404
    assert httpx.get(f"{svc.base_url}/openapi.json", timeout=10).status_code == 200  # the document stays
