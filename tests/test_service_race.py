"""Two clients at the same moment: the database lets exactly one win, and S3 is left with no orphan upload.

The service talks to rclone through the test proxy, which holds each CreateMultipartUpload (or
CompleteMultipartUpload) for a moment: the winner is still inside its transaction when the other
request arrives, so the race is a real one, every round, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import S3Server
from tests.pg import fresh_database_url
from tests.s3proxy import Fault, S3Proxy, Seen
from tests.service_fixtures import ServiceProcess, new_bucket, run_service
from tests.test_service_api import new_file_id, ok, put, refused, s3_object, s3_uploads

pytestmark = pytest.mark.integration

ROUNDS = 10
HOLD = 0.3  # seconds the proxy holds the S3 call that the database lock guards


@dataclass(frozen=True)
class Result:
    response: httpx.Response
    started: float
    ended: float


Call = tuple[str, str, str, dict[str, Any]]  # principal, method, path, JSON body


def race(service: ServiceProcess, calls: list[Call]) -> list[Result]:
    """Each request in a thread of its own, released together once every connection is open."""
    barrier = threading.Barrier(len(calls))

    def run(call: Call) -> Result:
        principal, method, path, body = call
        with service.client(principal) as c:
            ok(c.get("/health"))  # the connection is open before the start signal
            barrier.wait(timeout=30)
            started = time.monotonic()
            response = c.request(method, path, json=body)
            return Result(response, started, time.monotonic())

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def overlapped(results: list[Result]) -> bool:
    return max(r.started for r in results) < min(r.ended for r in results)


def holding(method: str, query: str) -> Callable[[Seen, int], Fault | None]:
    def rule(seen: Seen, _index: int) -> Fault | None:
        if seen.method == method and query in seen.query:
            time.sleep(HOLD)
        return None

    return rule


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def _proxied(request: pytest.FixtureRequest, s3_server: S3Server,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, S3Proxy]]:
    """One service per database for the module, talking to rclone through a proxy of its own."""
    folder = tmp_path_factory.mktemp(f"race-{request.param}")
    proxy = S3Proxy(s3_server.endpoint)
    try:
        with run_service(s3_server, new_bucket(s3_server), fresh_database_url(request.param, request, folder),
                         folder, endpoint=proxy.endpoint) as service:
            yield service, proxy
    finally:
        proxy.close()


@pytest.fixture
def proxied(_proxied: tuple[ServiceProcess, S3Proxy]) -> Iterator[ServiceProcess]:
    yield _proxied[0]
    _proxied[1].rule = None


@pytest.fixture
def proxy(_proxied: tuple[ServiceProcess, S3Proxy]) -> S3Proxy:
    return _proxied[1]


def test_two_simultaneous_creations_for_one_file_one_wins(proxied: ServiceProcess, proxy: S3Proxy) -> None:
    proxy.rule = holding("POST", "uploads")  # CreateMultipartUpload
    together = 0
    for _ in range(ROUNDS):
        file_id = new_file_id()
        results = race(proxied, [("alice", "POST", f"/files/{file_id}/multipart_uploads", {})] * 2)
        together += overlapped(results)
        statuses = sorted(r.response.status_code for r in results)
        assert statuses == [201, 409], [r.response.text for r in results]
        winner = next(r.response.json() for r in results if r.response.status_code == 201)
        loser = next(r.response for r in results if r.response.status_code == 409)
        refused(loser, 409, "UploadExists")
        assert s3_uploads(proxied, f"files/{file_id}") == [winner["upload_id"]]
        with proxied.client() as c:
            assert ok(c.get(f"/files/{file_id}/multipart_uploads"))["upload_id"] == winner["upload_id"]
    assert together >= ROUNDS // 2, f"only {together} of {ROUNDS} rounds had both requests in flight at once"


def test_two_principals_racing_for_one_file_id(proxied: ServiceProcess, proxy: S3Proxy) -> None:
    """The first to claim a file id owns it: the other one is told there is no such file, and nothing is left on S3."""
    proxy.rule = holding("POST", "uploads")
    for _ in range(ROUNDS // 2):
        file_id = new_file_id()
        path = f"/files/{file_id}/multipart_uploads"
        results = race(proxied, [("alice", "POST", path, {}), ("bob", "POST", path, {})])
        assert sorted(r.response.status_code for r in results) == [201, 404], [r.response.text for r in results]
        winner = next(r.response.json() for r in results if r.response.status_code == 201)
        refused(next(r.response for r in results if r.response.status_code == 404), 404, "NoSuchFile")
        assert s3_uploads(proxied, f"files/{file_id}") == [winner["upload_id"]]


def _pending_with_a_part(service: ServiceProcess) -> tuple[dict[str, str], dict[str, str]]:
    with service.client() as c:
        upload = ok(c.post(f"/files/{new_file_id()}/multipart_uploads", json={}), 201)
        signed = ok(c.post(f"/multipart_uploads/{upload['upload_id']}/part/1/presigned_post"))
        return upload, {"1": put(signed["url"], f"part of {uuid.uuid4()}".encode())}


def test_two_simultaneous_completions_one_succeeds(proxied: ServiceProcess, proxy: S3Proxy) -> None:
    proxy.rule = holding("POST", "uploadId")  # CompleteMultipartUpload
    for _ in range(3):
        upload, parts = _pending_with_a_part(proxied)
        path = f"/multipart_uploads/{upload['upload_id']}"
        results = race(proxied, [("alice", "PATCH", path, {"status": "uploaded", "parts": parts})] * 2)
        assert overlapped(results)
        assert sorted(r.response.status_code for r in results) == [200, 409], [r.response.text for r in results]
        detail = refused(next(r.response for r in results if r.response.status_code == 409), 409, "InvalidTransition")
        assert "is uploaded" in detail
        with proxied.client() as c:
            assert ok(c.get(path))["status"] == "uploaded"
        assert s3_object(proxied, upload["key"]).startswith(b"part of ")


def test_completion_racing_cancellation_ends_consistent(proxied: ServiceProcess, proxy: S3Proxy) -> None:
    """Whichever wins, the database and S3 agree: an object and uploaded, or no upload left and cancelled."""
    proxy.rule = holding("POST", "uploadId")
    for _ in range(3):
        upload, parts = _pending_with_a_part(proxied)
        path = f"/multipart_uploads/{upload['upload_id']}"
        results = race(proxied, [("alice", "PATCH", path, {"status": "uploaded", "parts": parts}),
                                 ("alice", "PATCH", path, {"status": "cancelled"})])
        assert sorted(r.response.status_code for r in results) == [200, 409], [r.response.text for r in results]
        refused(next(r.response for r in results if r.response.status_code == 409), 409, "InvalidTransition")
        with proxied.client() as c:
            final = ok(c.get(path))["status"]
        listed = proxied.s3_client().list_objects_v2(Bucket=proxied.bucket, Prefix=upload["key"]).get("Contents", [])
        if final == "uploaded":
            assert [o["Key"] for o in listed] == [upload["key"]]
        else:
            assert final == "cancelled" and listed == []
        assert s3_uploads(proxied, upload["key"]) == []
