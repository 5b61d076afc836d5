"""The controller's guards: request bodies, pending uploads per principal, the tokens, a database that is gone.

Each guard is seen as a client sees it: a live service (``serve`` in a process of its own) answering
413, 409 or 503 with its code and a sentence, and S3 left with nothing a refused request made.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest

from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.service import auth
from s3_multipart_upload.service.api import MAX_BODY_BYTES
from s3_multipart_upload.service.auth import Tokens
from tests.conftest import run_cli, write_random
from tests.pg import PostgresServer
from tests.service_fixtures import ServiceProcess, StartService
from tests.test_service_api import new_file_id, ok, refused


def s3_uploads(svc: ServiceProcess, prefix: str = "") -> list[dict[str, Any]]:
    """The multipart uploads S3 holds under ``prefix`` (rclone answers NoSuchUpload for a bucket with none)."""
    try:
        listed = svc.s3_client().list_multipart_uploads(Bucket=svc.bucket, Prefix=prefix)
    except botocore.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchUpload":
            return []
        raise
    return list(listed.get("Uploads", []))

# -- the tokens (no server) ------------------------------------------------------------------------------------


def test_a_token_is_compared_with_every_known_one_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit whichever entry matches, or none: each lookup makes one hmac.compare_digest per entry."""
    known = {f"user{n}": secrets.token_urlsafe(24) for n in range(5)}
    tokens = Tokens.parse("\n".join(f"{p} {t}" for p, t in known.items()), "test")
    calls: list[int] = []
    real = hmac.compare_digest

    def counted(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counted)
    for principal, token in known.items():
        calls.clear()
        assert tokens.principal(token) == principal
        assert len(calls) == len(known)
    for wrong in (known["user0"][:-1], known["user0"] + "x", "", known["user0"].upper()):
        calls.clear()
        assert tokens.principal(wrong) is None
        assert len(calls) == len(known)


@pytest.mark.parametrize("line", [
    "{token} alice",  # swapped: the token is no principal name ('-' first)
    "{plain} alice",  # swapped, and the token passes for a principal name: then "alice" is a token too short
    "alice-{token}",  # one field
    "alice {short}",  # a token too short: a secret all the same
])
def test_tokens_file_errors_never_print_a_token(line: str) -> None:
    token = "-_" + secrets.token_urlsafe(24)
    plain = secrets.token_hex(16)  # letters and digits only
    short = secrets.token_hex(5)
    text = line.format(token=token, plain=plain, short=short)
    with pytest.raises(BadInput) as caught:
        Tokens.parse(f"bob {secrets.token_urlsafe(24)}\n{text}\n", "tokens file t.txt")
    said = f"{caught.value.message} {caught.value.hint or ''}"
    assert "entry 2" in said
    for secret in (token, plain, short):
        assert secret not in said


def test_a_tokens_file_others_can_read_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"alice {secrets.token_urlsafe(24)}\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="s3_multipart_upload.service.auth"):
        assert len(Tokens.load(path, None)) == 1
    assert f"chmod 600 {path}" in caplog.text and "644" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="s3_multipart_upload.service.auth"):
        Tokens.load(path, None)
    assert caplog.text == ""


# -- request bodies --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_service(s3_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:  # type: ignore[no-untyped-def]
    from tests.service_fixtures import new_bucket, run_service

    folder = tmp_path_factory.mktemp("hardening")
    with run_service(s3_server, new_bucket(s3_server), f"sqlite:///{folder / 'c.sqlite3'}", folder) as svc:
        yield svc


def test_a_body_over_the_limit_is_413_before_it_is_read(sqlite_service: ServiceProcess) -> None:
    file_id = new_file_id()
    big = b'{"size": 1, "content_type": "' + b"a" * MAX_BODY_BYTES + b'"}'
    with sqlite_service.client() as c:
        detail = refused(c.post(f"/files/{file_id}/multipart_uploads", content=big,
                                headers={"Content-Type": "application/json"}), 413, "BodyTooLarge")
        assert f"{len(big)} bytes" in detail and str(MAX_BODY_BYTES) in detail

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        yield b'{"size": 1, "content_type": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b"a" * 65536
        yield b'"}'

    with sqlite_service.client() as c:
        response = c.post(f"/files/{file_id}/multipart_uploads", content=chunks(),
                          headers={"Content-Type": "application/json"})
        refused(response, 413, "BodyTooLarge")
        assert response.headers["Cache-Control"] == "no-store"
    with sqlite_service.client() as c:
        # Nothing was created, and the service answers as before.
        assert ok(c.get(f"/files/{file_id}/multipart_uploads")) is None
        assert s3_uploads(sqlite_service, f"files/{file_id}") == []
        # A small chunked body goes through whole.
        small = ok(c.post(f"/files/{file_id}/multipart_uploads", content=iter([b'{"size": ', b'7}']),
                          headers={"Content-Type": "application/json"}), 201)
        assert small["size"] == 7


def test_the_largest_real_completion_fits_under_the_limit(sqlite_service: ServiceProcess) -> None:
    """10,000 parts with quoted MD5 ETags, in both completion shapes: refused for what they say, not their size."""
    etag = '"' + "0" * 32 + '"'
    with sqlite_service.client() as c:
        upload = ok(c.post(f"/files/{new_file_id()}/multipart_uploads", json={"size": 1}), 201)
        patch = {"status": "uploaded", "parts": {str(n): etag for n in range(1, 10_001)}}
        assert len(httpx.Request("PATCH", "http://x", json=patch).content) < MAX_BODY_BYTES
        refused(c.patch(f"/multipart_uploads/{upload['upload_id']}", json=patch), 422, "WrongParts")
        complete = {"key": "k", "upload_id": "nope", "parts": [{"PartNumber": n, "ETag": etag}
                                                               for n in range(1, 10_001)]}
        assert len(httpx.Request("POST", "http://x", json=complete).content) < MAX_BODY_BYTES
        refused(c.post("/uploads/multipart/complete", json=complete), 404, "NoSuchUpload")


# -- pending uploads per principal -----------------------------------------------------------------------------

LIMIT = 3


def test_pending_uploads_per_principal_are_limited(start_service: StartService, database_url: str,
                                                   tmp_path: Path) -> None:
    svc = start_service(database_url, "--max-pending-uploads", str(LIMIT))
    # Twice the limit at once, both families: exactly LIMIT win, whichever instance of the race, and the others
    # leave no S3 upload behind.
    barrier = threading.Barrier(2 * LIMIT)

    def create(n: int) -> httpx.Response:
        with svc.client("alice") as c:
            ok(c.get("/health"))
            barrier.wait(timeout=30)
            if n % 2:
                return c.post("/uploads/multipart/init", json={"key": f"race/{n}"})
            return c.post(f"/files/race-{n}/multipart_uploads", json={"size": 1})

    results: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda n=n: results.append(create(n))) for n in range(2 * LIMIT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    codes = sorted(r.status_code for r in results)
    assert codes.count(409) == LIMIT and len(codes) == 2 * LIMIT, [r.text for r in results]
    for r in results:
        if r.status_code == 409:
            detail = refused(r, 409, "TooManyPendingUploads")
            assert f"alice has {LIMIT} pending uploads" in detail and f"allows {LIMIT}" in detail
    listed = s3_uploads(svc)
    assert len(listed) == LIMIT, listed

    with svc.client("alice") as alice, svc.client("bob") as bob:
        ok(bob.post(f"/files/{new_file_id()}/multipart_uploads", json={"size": 1}), 201)  # per principal
        refused(alice.post("/uploads/multipart/init", json={"key": "one-more"}), 409, "TooManyPendingUploads")
        # An upload that ends frees its place.
        mine = next(r.json() for r in results if r.status_code in (200, 201))
        ok(alice.patch(f"/multipart_uploads/{mine['upload_id']}", json={"status": "cancelled"}))
        ok(alice.post("/uploads/multipart/init", json={"key": "one-more"}))
        refused(alice.post(f"/files/{new_file_id()}/multipart_uploads", json={"size": 1}), 409,
                "TooManyPendingUploads")

    # The CLI says so and stops (exit 5), without retrying what will not change by itself.
    if database_url.startswith("sqlite"):
        source = write_random(tmp_path / "f.bin", 1000)
        out = run_cli(["upload", "--controller", svc.base_url, "--file-id", new_file_id(), "--token-file",
                       str(svc.token_file("alice")), "-f", str(source), "-m", str(tmp_path / "m.json"),
                       "-a", str(tmp_path / "p.jsonl")], env={"AWS_EC2_METADATA_DISABLED": "true"}, timeout=60)
        assert out.returncode == 5, out.stderr
        assert "TooManyPendingUploads" in out.stderr or "pending uploads" in out.stderr, out.stderr


# -- a database that does not answer ---------------------------------------------------------------------------


def test_a_database_that_is_gone_is_503_then_served_again(start_service: StartService,
                                                        postgres_server: PostgresServer) -> None:
    """PostgreSQL refuses the service's connections (a restart, a failover): 503 DatabaseUnavailable with
    Retry-After, which clients retry, not a 500; once it is back, the same service answers."""
    import psycopg

    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    svc = start_service(url)
    admin = postgres_server.url("postgres")

    def database(allow: bool) -> None:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
            if not allow:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

    file_id = new_file_id()
    with svc.client() as c:
        ok(c.post(f"/files/{file_id}/multipart_uploads", json={"size": 1}), 201)
        database(allow=False)
        try:
            answers: list[httpx.Response] = [
                c.get(f"/files/{file_id}/multipart_uploads"),
                c.post(f"/files/{new_file_id()}/multipart_uploads", json={"size": 1}),
            ]
            for response in answers:
                refused(response, 503, "DatabaseUnavailable")
                assert response.headers["Retry-After"] == "1"
        finally:
            database(allow=True)
        found: Any = ok(c.get(f"/files/{file_id}/multipart_uploads"))
        assert found["status"] == "pending"
    assert "Database unavailable" in svc.log()
    assert " 500 " not in svc.log() and "Traceback" not in svc.log()


# -- a completion whose answer was lost ------------------------------------------------------------------------


def _parts_sent(c: httpx.Client, upload: dict[str, Any], chunks: list[bytes]) -> dict[str, str]:
    etags = {}
    for n, chunk in enumerate(chunks, start=1):
        signed = ok(c.post(f"/multipart_uploads/{upload['upload_id']}/part/{n}/presigned_post"))
        response = httpx.put(signed["url"], content=chunk, timeout=60)
        assert response.status_code == 200, response.text
        etags[str(n)] = response.headers["ETag"].strip('"')
    return etags


def test_a_completion_done_by_an_instance_that_died_is_uploaded_on_the_retry(sqlite_service: ServiceProcess) -> None:
    """The load test's kill: S3 completed the upload, the instance died before its transaction committed, the
    client's retry reaches a service that still has it pending and S3 answers NoSuchUpload. rclone's ETag of
    the object is its MD5, which the parts' ETags cannot prove: the declared size and the object's time do."""
    svc = sqlite_service
    chunks = [secrets.token_bytes(5 * 2**20), secrets.token_bytes(1000)]
    with svc.client() as c:
        upload = ok(c.post(f"/files/{new_file_id()}/multipart_uploads",
                           json={"size": sum(map(len, chunks)), "part_size": 5 * 2**20}), 201)
        etags = _parts_sent(c, upload, chunks)
        svc.s3_client().complete_multipart_upload(  # what the instance that died did
            Bucket=svc.bucket, Key=upload["key"], UploadId=upload["upload_id"],
            MultipartUpload={"Parts": [{"PartNumber": int(n), "ETag": e} for n, e in etags.items()]})
        done = ok(c.patch(f"/multipart_uploads/{upload['upload_id']}", json={"status": "uploaded", "parts": etags}))
        assert done["status"] == "uploaded" and done["object_size"] == sum(map(len, chunks))
    body = svc.s3_client().get_object(Bucket=svc.bucket, Key=upload["key"])["Body"].read()
    assert body == b"".join(chunks)


def test_an_older_object_at_the_key_is_no_proof_of_completion(sqlite_service: ServiceProcess) -> None:
    """The file's earlier upload left an object of the same size; the new upload is aborted behind the service's
    back. Completing it must not take the old object for its own: failed, as before."""
    import time

    svc = sqlite_service
    file_id = new_file_id()
    chunk = secrets.token_bytes(1000)
    with svc.client() as c:
        first = ok(c.post(f"/files/{file_id}/multipart_uploads", json={"size": 1000}), 201)
        ok(c.patch(f"/multipart_uploads/{first['upload_id']}",
                   json={"status": "uploaded", "parts": _parts_sent(c, first, [chunk])}))
        with svc.client("carol") as reviewer:
            ok(reviewer.post(f"/multipart_uploads/{first['upload_id']}/review",
                             json={"status": "rejected", "reason": "the test wants a new upload"}))
        time.sleep(1.1)  # the object's time has whole seconds: the new upload begins in a later one
        second = ok(c.post(f"/files/{file_id}/multipart_uploads", json={"size": 1000}), 201)
        etags = _parts_sent(c, second, [secrets.token_bytes(1000)])
        svc.s3_client().abort_multipart_upload(Bucket=svc.bucket, Key=second["key"], UploadId=second["upload_id"])
        refused(c.patch(f"/multipart_uploads/{second['upload_id']}", json={"status": "uploaded", "parts": etags}),
                409, "UploadGone")
        assert ok(c.get(f"/multipart_uploads/{second['upload_id']}"))["status"] == "failed"
