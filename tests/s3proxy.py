"""A loopback HTTP proxy in front of a real S3 server that counts requests and injects faults.

Tests point the CLI's --endpoint-url at it. SigV4 signs the Host header, so the proxy forwards
every header unchanged and the server verifies the client's signature as if it were direct.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    size: int
    access_key: str = ""  # from the SigV4 Authorization header

    @property
    def part_number(self) -> int | None:
        n = self.query.get("partNumber")
        return int(n) if n is not None and self.method == "PUT" else None


@dataclass(frozen=True)
class Fault:
    """What to do instead of forwarding: answer ``status`` with an S3 error ``code``, or cut the connection."""

    status: int = 503
    code: str = "SlowDown"
    cut_after: int | None = None  # read this many body bytes, then close the socket without answering
    corrupt: bool = False  # forward the request with one body byte flipped, as a bad link would
    body: str | None = None  # answer with this body (and ``status``) instead of an S3 error
    headers: dict[str, str] | None = None  # forward with these request headers replaced (moto checks no signature)
    hold: float = 0.0  # hold the request this long, then forward it as it is (until a presigned URL expires)


Rule = Callable[[Seen, int], Fault | None]  # (request, index of the request) -> fault or None


@dataclass
class S3Proxy:
    upstream: str  # http://127.0.0.1:PORT
    rule: Rule | None = None
    delay: float = 0.0  # seconds to hold each part upload, so that a test can stop the client mid-upload
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        up = urllib.parse.urlsplit(self.upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                url = urllib.parse.urlsplit(self.path)
                auth = self.headers.get("Authorization") or ""
                access_key = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else ""
                seen = Seen(self.command, url.path, dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True)),
                            length, access_key)
                with proxy._lock:
                    index = len(proxy.seen)
                    proxy.seen.append(seen)
                    proxy._busy += 1
                try:
                    self._forward(seen, index, length)
                finally:
                    with proxy._lock:
                        proxy._busy -= 1

            def _forward(self, seen: Seen, index: int, length: int) -> None:
                fault = proxy.rule(seen, index) if proxy.rule else None
                if proxy.delay and seen.part_number is not None:
                    time.sleep(proxy.delay)
                if fault is not None and fault.hold:
                    time.sleep(fault.hold)
                    fault = None
                if fault is not None and fault.cut_after is not None:
                    self.rfile.read(min(fault.cut_after, length))
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else b""
                if len(body) < length:  # the client died mid-body: the server sees the connection drop
                    self.close_connection = True
                    return
                if fault is not None and fault.corrupt and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                    fault = None
                replaced = fault.headers if fault is not None and fault.headers else {}
                if replaced:
                    fault = None
                if fault is not None:
                    xml = (fault.body or f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}</Code>'
                           f"<Message>injected by the test proxy</Message></Error>").encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    self.wfile.write(xml)
                    return
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in
                               {r.lower() for r in replaced}} | replaced
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                else:
                    self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients killed mid-request are what these tests do

        self._busy = 0
        self._server = Server(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def part_puts(self) -> Counter[int]:
        """How many times each part number was sent (UploadPart requests that reached the proxy)."""
        with self._lock:
            return Counter(s.part_number for s in self.seen if s.part_number is not None)

    def wait_idle(self, timeout: float = 30) -> None:
        """Until no request is being forwarded: one a killed client sent may still reach the server."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._busy == 0:
                    return
            time.sleep(0.01)
        raise TimeoutError("the proxy still forwards requests")

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
