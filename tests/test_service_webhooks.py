"""Events (issue 25, item 2): each status change reaches the configured webhooks, signed, at least once, in
order per upload, retried with backoff, and delivered by one instance when several share PostgreSQL.

The receiver is a real HTTP server on 127.0.0.1 started by the test; it answers 500 to the deliveries it is
told to fail, and can hold one delivery unanswered (an instance killed while delivering).
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from s3_multipart_upload.service import db
from tests.pg import PostgresServer
from tests.service_fixtures import ServiceProcess, StartService, new_bucket
from tests.test_service_api import ok, send_parts

pytestmark = pytest.mark.integration

WAIT = 30.0


@dataclass
class Delivery:
    headers: Message  # names case-insensitive: urllib sends X-s3mu-delivery
    body: bytes
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    url: str
    fail_first: int = 0  # answer 500 to this many deliveries
    hold_first: bool = False  # leave the first delivery unanswered until `release` (or 60 s)
    deliveries: list[Delivery] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acknowledged(self) -> list[dict[str, Any]]:
        with self.lock:
            return [d.event for d in self.deliveries if d.answered == 200]

    def wait_for(self, count: int, timeout: float = WAIT) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(done := self.acknowledged()) < count:
            assert time.monotonic() < deadline, f"{len(done)} of {count} events acknowledged after {timeout} s"
            time.sleep(0.05)
        return done


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                number = len(state.deliveries)
                code = 500 if number < state.fail_first else 200
                delivery = Delivery(self.headers, body, 0)
                state.deliveries.append(delivery)
            if state.hold_first and number == 0:
                state.held.set()
                state.release.wait(60)
                return  # no answer: the connection dies with the test's kill or the server's shutdown
            delivery.answered = code
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/s3mu?token=receiver-query-secret"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def secret_file(folder: Path) -> tuple[Path, bytes]:
    secret = secrets.token_urlsafe(32)
    path = folder / f"webhook-secret-{uuid.uuid4().hex[:6]}"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path, secret.encode()


def config(receiver: Receiver, secret: Path, **more: Any) -> dict[str, Any]:
    return {"webhooks": [receiver.url], "webhook_secret_file": str(secret), "webhook_backoff": 0.2,
            "webhook_timeout": 2.0, "worker_poll": 0.2, **more}


def signature_ok(secret: bytes, delivery: Delivery) -> bool:
    """The receiver's check, written from the documentation: t=...,v1=HMAC-SHA256(secret, "{t}." + body)."""
    fields = dict(item.split("=", 1) for item in delivery.headers["X-S3MU-Signature"].split(","))
    expected = hmac.new(secret, fields["t"].encode() + b"." + delivery.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 300


def complete(c: httpx.Client, file_id: str, body: bytes, **declared: Any) -> str:
    upload = ok(c.post(f"/files/{file_id}/multipart_uploads", json=declared), 201)
    parts = send_parts(c, upload["upload_id"], [body])
    ok(c.patch(f"/multipart_uploads/{upload['upload_id']}", json={"status": "uploaded", "parts": parts}))
    return str(upload["upload_id"])


def test_events_survive_failures_arrive_once_in_order_and_signed(start_service: StartService, database_url: str,
                                                                 receiver: Receiver, tmp_path: Path) -> None:
    receiver.fail_first = 2
    path, secret = secret_file(tmp_path)
    svc = start_service(database_url, config=config(receiver, path))
    with svc.client() as c:
        declared = complete(c, "declared", b"checked bytes", sha256=hashlib.sha256(b"checked bytes").hexdigest())
        plain = complete(c, "plain", b"plain bytes")
        cancelled = ok(c.post("/files/gone/multipart_uploads", json={}), 201)["upload_id"]
        ok(c.patch(f"/multipart_uploads/{cancelled}", json={"status": "cancelled", "reason": "changed my mind"}))
    expected = {declared: ["pending", "uploaded", "accepted"], plain: ["pending", "uploaded"],
                cancelled: ["pending", "cancelled"]}
    events = receiver.wait_for(sum(map(len, expected.values())))
    time.sleep(1.0)  # nothing more comes: no event delivered twice once acknowledged
    events = receiver.acknowledged()
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)) == 7
    for upload_id, statuses in expected.items():
        mine = [e for e in events if e["upload"]["upload_id"] == upload_id]
        assert [e["change"]["to"] for e in mine] == statuses  # in order per upload
        assert [e["change"]["from"] for e in mine] == [None, *statuses[:-1]]
    accepted = next(e for e in events if e["change"]["to"] == "accepted")
    assert (accepted["change"]["actor"], accepted["change"]["by"]) == ("verifier", "verifier")
    assert accepted["upload"]["sha256"] == hashlib.sha256(b"checked bytes").hexdigest()
    assert accepted["schema"] == 1 and accepted["type"] == "upload.status_changed"
    assert accepted["upload"]["key"] == "files/declared" and accepted["occurred_at"].endswith("Z")
    gone = next(e for e in events if e["change"]["to"] == "cancelled")
    assert (gone["change"]["actor"], gone["change"]["by"], gone["change"]["reason"]) == \
        ("owner", "alice", "changed my mind")

    assert [d.answered for d in receiver.deliveries].count(500) == 2
    by_key: dict[str, list[Delivery]] = {}
    for delivery in receiver.deliveries:
        by_key.setdefault(delivery.headers["Idempotency-Key"], []).append(delivery)
    assert set(by_key) == set(ids)
    for tries in by_key.values():  # each event tried until acknowledged once, with its attempt number
        assert [d.answered for d in tries] == [500] * (len(tries) - 1) + [200]
        assert [d.headers["X-S3MU-Delivery"] for d in tries] == [str(n) for n in range(1, len(tries) + 1)]
    for delivery in receiver.deliveries:
        assert delivery.headers["Content-Type"] == "application/json"
        assert delivery.headers["Idempotency-Key"] == delivery.event["id"]
        assert signature_ok(secret, delivery)
        assert not signature_ok(b"another secret of the same length!!", delivery)

    log = svc.log()
    assert "not delivered to http://127.0.0.1" in log and "HTTP 500" in log
    assert secret.decode() not in log and "receiver-query-secret" not in log


def metric(svc: ServiceProcess, name: str) -> float:
    for line in httpx.get(f"{svc.base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


def test_an_instance_killed_mid_delivery_leaves_the_event_to_another(start_service: StartService, s3_server,  # type: ignore[no-untyped-def]
                                                                    postgres_server: PostgresServer,
                                                                    receiver: Receiver, tmp_path: Path) -> None:
    receiver.hold_first = True
    url, bucket = postgres_server.create_database(), new_bucket(s3_server)
    path, secret = secret_file(tmp_path)
    settings = config(receiver, path, webhook_timeout=1.0, webhook_lease=1.0)  # claims last 2 x 1 + 5 = 7 s
    first = start_service(url, bucket=bucket, config=settings)
    with first.client() as c:
        upload_id = ok(c.post("/files/killed/multipart_uploads", json={}), 201)["upload_id"]
    assert receiver.held.wait(WAIT), "the first instance never delivered"
    first.proc.kill()  # claimed, posted, unanswered: the event is in the outbox, undelivered, and claimed
    first.proc.wait(10)
    database = db.Database(url)
    try:  # read from the database, not the second instance's /metrics: under load its start may outlast the claim
        with database.transaction() as conn:
            undelivered = sa.select(sa.func.count()).select_from(db.outbox).where(db.outbox.c.delivered_at.is_(None))
            assert conn.execute(undelivered).scalar() == 1
    finally:
        database.dispose()
    second = start_service(url, bucket=bucket, config=settings)
    events = receiver.wait_for(1)
    assert [e["upload"]["upload_id"] for e in events] == [upload_id]
    held = receiver.deliveries[0]
    assert held.headers["Idempotency-Key"] == events[0]["id"]  # the same event: a receiver drops the repeat
    assert held.headers["X-S3MU-Delivery"] == "1" and receiver.deliveries[-1].headers["X-S3MU-Delivery"] == "2"
    assert signature_ok(secret, receiver.deliveries[-1])
    deadline = time.monotonic() + WAIT
    while "delivered to http://127.0.0.1" not in second.log():  # logged once the receiver's answer is in
        assert time.monotonic() < deadline, second.log()[-2000:]
        time.sleep(0.1)
    while metric(second, "s3mu_outbox_backlog") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_two_instances_deliver_each_event_once(start_service: StartService, s3_server,  # type: ignore[no-untyped-def]
                                               postgres_server: PostgresServer, receiver: Receiver,
                                               tmp_path: Path) -> None:
    url, bucket = postgres_server.create_database(), new_bucket(s3_server)
    path, _secret = secret_file(tmp_path)
    instances = [start_service(url, bucket=bucket, config=config(receiver, path)) for _ in range(2)]
    rounds = 10
    for n in range(rounds):
        svc = instances[n % 2]
        with svc.client() as c:
            upload_id = ok(c.post(f"/files/both-{n}/multipart_uploads", json={}), 201)["upload_id"]
            ok(c.patch(f"/multipart_uploads/{upload_id}", json={"status": "cancelled"}))
    receiver.wait_for(2 * rounds)
    time.sleep(1.5)  # both instances poll every 0.2 s: a second delivery would show by now
    events = receiver.acknowledged()
    assert len(receiver.deliveries) == len(events) == 2 * rounds
    assert len({e["id"] for e in events}) == 2 * rounds
    by_upload: dict[str, list[str]] = {}
    for e in events:
        by_upload.setdefault(e["upload"]["upload_id"], []).append(e["change"]["to"])
    assert all(statuses == ["pending", "cancelled"] for statuses in by_upload.values())


def test_webhooks_need_a_secret_and_a_url(tmp_path: Path) -> None:
    from s3_multipart_upload.errors import BadInput
    from s3_multipart_upload.service.server import ServeConfig, build

    base = {"bucket": "b", "database_url": f"sqlite:///{tmp_path / 'c.sqlite3'}", "tokens_file": None,
            "tokens_env": "alice aaaaaaaaaaaaaaaaaaaaaaaa"}
    short = tmp_path / "short"
    short.write_text("tiny\n")
    for more, said in (({"webhooks": ("http://127.0.0.1:9/x",)}, "--webhook-secret-file"),
                       ({"webhooks": ("ftp://127.0.0.1/x",), "webhook_secret_file": short}, "http:// or https://"),
                       ({"webhooks": ("http://127.0.0.1:9/x",), "webhook_secret_file": short}, "at least 16"),
                       ({"on_reject": "shred"}, "--on-reject")):
        with pytest.raises(BadInput, match=said.replace("/", ".")):
            build(ServeConfig(**base, **more))  # type: ignore[arg-type]
