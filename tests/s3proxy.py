"""A loopback HTTP proxy in front of a real S3 server that counts requests and injects faults.

Tests point the CLI's --endpoint-url at it. SigV4 signs the Host header, so the proxy forwards
every header unchanged and the server verifies the client's signature as if it were direct.

With ``verify_checksums`` it also does what AWS S3 does with additional checksums and what no
store here does: it recomputes every x-amz-checksum-* of a part or object body with an
implementation of its own (anycrc, hashlib; not the client's awscrt), answers BadDigest on a
mismatch, echoes the value it verified, checks a full-object checksum at completion by
combining the CRCs of the parts it saw, and answers the completion with the object's checksum.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import random
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anycrc

_CRC_MODELS = {"crc32": "CRC32-ISO-HDLC", "crc32c": "CRC32-ISCSI", "crc64nvme": "CRC64-NVME"}
_PART_NUMBER = re.compile(rb"<PartNumber>(\d+)</PartNumber>")


def _digest(algorithm: str, data: bytes) -> bytes:
    """The checksum S3 computes, by implementations independent of the client's."""
    if algorithm == "sha256":
        return hashlib.sha256(data).digest()
    model = anycrc.Model(_CRC_MODELS[algorithm])
    return int(model.calc(data)).to_bytes(8 if algorithm == "crc64nvme" else 4, "big")


@dataclass
class _PartSeen:
    algorithm: str
    digest: bytes
    data_crc: int  # the part's CRC (for a full-object combine), 0 for SHA-256
    length: int


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    size: int
    access_key: str = ""  # from the SigV4 Authorization header
    connection: int = 0  # the client's port: a request on a new connection has another one
    amz_date: str = ""  # X-Amz-Date, the time the client signed the request at
    headers: Mapping[str, str] = field(default_factory=dict)  # the request's headers, names in lower case

    @property
    def part_number(self) -> int | None:
        """The part an UploadPart sends (None for other requests, and for --checksum auto's probe)."""
        n = self.query.get("partNumber")
        return int(n) if n is not None and self.method == "PUT" and not self.is_probe else None

    @property
    def is_probe(self) -> bool:
        """--checksum auto's probe: an empty UploadPart with an x-amz-checksum-crc64nvme (a wrong one), which asks
        the store whether it verifies CRC64NVME. It sends none of the file: fault rules and part counts skip it."""
        return (self.method == "PUT" and "partNumber" in self.query and self.size == 0
                and "x-amz-checksum-crc64nvme" in self.headers)


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
    # A stalled connection: read this many body bytes (-1: all of them) and then neither read nor answer, until the
    # client gives up (or the proxy closes; at most ``STALL_LIMIT`` s).
    stall_after: int | None = None
    # A slow store: read the body at ``read_rate`` bytes/s, and stop reading for ``pause`` s after ``pause_after``
    # bytes; then forward it as it is.
    read_rate: float | None = None
    pause_after: int = 0
    pause: float = 0.0
    # A store that answers late: read the whole body, forward it, and hold the store's answer this many seconds.
    answer_after: float = 0.0


STALL_LIMIT = 120.0


@dataclass(frozen=True)
class CorsRule:
    """A bucket's CORS rule as S3 applies it to browsers' preflight requests (OPTIONS). rclone serve s3 answers
    preflights itself with a fixed list of headers that lacks Content-MD5, so the proxy answers them by this rule;
    the other requests go to rclone, whose --allow-origin and --response-header add the CORS headers of answers."""

    origins: tuple[str, ...]
    methods: tuple[str, ...] = ("PUT",)
    headers: tuple[str, ...] = ("Content-MD5",)
    max_age: int = 600


Rule = Callable[[Seen, int], Fault | None]  # (request, index of the request) -> fault or None


def storm(seconds: float, share: float = 0.5, seed: int = 0) -> Rule:
    """A throttling storm: SlowDown to ``share`` of the part uploads (drawn at random, seeded) for ``seconds`` from
    the first part upload on, then nothing."""
    draw = random.Random(seed)
    lock = threading.Lock()
    began: list[float] = []

    def rule(seen: Seen, index: int) -> Fault | None:
        if seen.part_number is None:
            return None
        with lock:
            now = time.monotonic()
            began[:] = began or [now]
            if now - began[0] < seconds and draw.random() < share:
                return Fault(status=503, code="SlowDown")
        return None
    return rule


@dataclass
class S3Proxy:
    upstream: str  # http://127.0.0.1:PORT
    rule: Rule | None = None
    delay: float = 0.0  # seconds to hold each part upload, so that a test can stop the client mid-upload
    seen: list[Seen] = field(default_factory=list)
    verify_checksums: bool = False  # act as AWS S3 does with x-amz-checksum-* (see the module docstring)
    refused: list[str] = field(default_factory=list)  # why each BadDigest was answered
    cors: CorsRule | None = None  # answer preflight requests by this rule instead of forwarding them
    hide_headers: tuple[str, ...] = ()  # answer headers not passed on (a bucket whose CORS rule lacks some)
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each part upload, monotonic
    # The store's answer to each request the proxy forwarded whole, by its index in ``seen`` (a request whose
    # client died before its body was in never reached the store, and has none).
    answered: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[tuple[str, int], _PartSeen] = {}
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
                            length, access_key, self.client_address[1], self.headers.get("X-Amz-Date", ""),
                            {name.lower(): value for name, value in self.headers.items()})
                with proxy._lock:
                    index = len(proxy.seen)
                    proxy.seen.append(seen)
                    proxy._busy += 1
                began = time.monotonic()
                try:
                    self._forward(seen, index, length)
                finally:
                    with proxy._lock:
                        proxy._busy -= 1
                        if seen.part_number is not None:
                            proxy.spans.append((began, time.monotonic()))

            def _preflight(self, rule: CorsRule) -> None:
                origin = self.headers.get("Origin", "")
                method = self.headers.get("Access-Control-Request-Method", "")
                asked = [h.strip().lower() for h in self.headers.get("Access-Control-Request-Headers", "").split(",")
                         if h.strip()]
                allowed = origin in rule.origins and method in rule.methods and \
                    all(h in {a.lower() for a in rule.headers} for h in asked)
                self.send_response(200 if allowed else 403)
                if allowed:
                    self.send_header("Access-Control-Allow-Origin", origin)
                    self.send_header("Access-Control-Allow-Methods", ", ".join(rule.methods))
                    self.send_header("Access-Control-Allow-Headers", ", ".join(rule.headers))
                    self.send_header("Access-Control-Max-Age", str(rule.max_age))
                    self.send_header("Vary", "Origin")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _forward(self, seen: Seen, index: int, length: int) -> None:
                if proxy.cors is not None and seen.method == "OPTIONS" and "Origin" in self.headers:
                    self._preflight(proxy.cors)
                    return
                fault = proxy.rule(seen, index) if proxy.rule else None
                if proxy.delay and seen.part_number is not None:
                    time.sleep(proxy.delay)
                if fault is not None and fault.hold:
                    time.sleep(fault.hold)
                    fault = None
                if fault is not None and fault.stall_after is not None:
                    self.rfile.read(length if fault.stall_after < 0 else min(fault.stall_after, length))
                    proxy._closing.wait(STALL_LIMIT)
                    self.close_connection = True
                    return
                if fault is not None and fault.cut_after is not None:
                    self.rfile.read(min(fault.cut_after, length))
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if fault is not None and (fault.read_rate or fault.pause):
                    body = self._read_slowly(length, fault)
                    fault = None
                else:
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
                late = fault.answer_after if fault is not None else 0.0
                if late:
                    fault = None
                add_headers: dict[str, str] = {}
                add_xml = b""
                if fault is None and proxy.verify_checksums:
                    fault, add_headers, add_xml = proxy._checksums(self.command, seen, self.headers, body)
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
                    with proxy._lock:
                        proxy.answered[index] = resp.status
                finally:
                    conn.close()
                if late:
                    time.sleep(late)
                if resp.status == 200 and add_xml:
                    end = b"</CompleteMultipartUploadResult>"
                    data = data.replace(end, add_xml + end)
                self.send_response(resp.status)
                hidden = {"transfer-encoding", "content-length", "connection", *(h.lower() for h in proxy.hide_headers)}
                for k, v in resp.getheaders():
                    if k.lower() not in hidden:
                        self.send_header(k, v)
                if resp.status == 200:
                    for k, v in add_headers.items():
                        self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                else:
                    self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _read_slowly(self, length: int, fault: Fault) -> bytes:
                chunks: list[bytes] = []
                got, began, paused = 0, time.monotonic(), False
                while got < length:  # bounded: each read takes at least one byte, or ends the loop
                    if not paused and fault.pause and got >= fault.pause_after:
                        paused = True
                        time.sleep(fault.pause)
                        began = time.monotonic() - (got / fault.read_rate if fault.read_rate else 0)
                    block = self.rfile.read(min(64 * 1024, length - got,
                                                max(1, fault.pause_after - got) if not paused and fault.pause
                                                else 64 * 1024))
                    if not block:
                        break
                    chunks.append(block)
                    got += len(block)
                    if fault.read_rate:
                        ahead = got / fault.read_rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)
                return b"".join(chunks)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients killed mid-request are what these tests do

        self._busy = 0
        self._closing = threading.Event()
        self._server = Server(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def _checksums(self, method: str, seen: Seen, headers: object, body: bytes,
                   ) -> tuple[Fault | None, dict[str, str], bytes]:
        """What AWS S3 would do with this request's additional checksums: (an error, headers, XML to add)."""
        get = headers.get  # type: ignore[attr-defined]
        upload_id = seen.query.get("uploadId")
        if method == "PUT" and "x-amz-copy-source" not in {k.lower() for k in headers}:  # type: ignore[attr-defined]
            for algorithm in ("crc64nvme", "crc32c", "crc32", "sha256"):
                claimed = get(f"x-amz-checksum-{algorithm}")
                if claimed is None:
                    continue
                digest = _digest(algorithm, body)
                if base64.b64encode(digest).decode() != claimed:
                    return self._bad_digest(f"{algorithm} of {seen.path} part {seen.part_number}: sent {claimed}, "
                                            f"body {base64.b64encode(digest).decode()}"), {}, b""
                if seen.part_number is not None and upload_id:
                    crc = int.from_bytes(digest, "big") if algorithm != "sha256" else 0
                    with self._lock:
                        self._parts[(upload_id, seen.part_number)] = _PartSeen(algorithm, digest, crc, len(body))
                return None, {f"x-amz-checksum-{algorithm}": claimed}, b""
        if method == "POST" and upload_id:
            numbers = [int(n) for n in _PART_NUMBER.findall(body)]
            with self._lock:
                parts = [self._parts.get((upload_id, n)) for n in numbers]
            if not numbers or any(p is None for p in parts):
                return None, {}, b""
            known = [p for p in parts if p is not None]
            algorithm = known[0].algorithm
            tag = f"Checksum{algorithm.upper()}"
            claimed = get(f"x-amz-checksum-{algorithm}")
            # As S3 does: a completion of an upload made with an additional checksum names each part's value.
            given = {}
            for block in re.findall(r"<Part>(.*?)</Part>", body.decode(errors="replace"), re.S):
                number, value = re.search(r"<PartNumber>(\d+)<", block), re.search(f"<{tag}>([^<]*)<", block)
                if number is not None:
                    given[number.group(1)] = value.group(1) if value is not None else None
            for n, p in zip(numbers, known, strict=True):
                value = base64.b64encode(p.digest).decode()
                if given.get(str(n)) != value:
                    with self._lock:
                        self.refused.append(f"completion of {seen.path}: part {n} {algorithm} "
                                            f"{given.get(str(n))!r}, the part's is {value}")
                    return Fault(400, "InvalidRequest", body=(
                        '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidRequest</Code><Message>The upload '
                        f"was created using a {algorithm} checksum. The complete request must include the checksum "
                        "for each part. It was missing for part 1 in the request.</Message></Error>"),
                    ), {}, b""
            if get("x-amz-checksum-type") == "FULL_OBJECT" and algorithm != "sha256":
                model = anycrc.Model(_CRC_MODELS[algorithm])
                crc = known[0].data_crc
                for p in known[1:]:
                    crc = model.combine(crc, p.data_crc, p.length)
                whole = base64.b64encode(int(crc).to_bytes(len(known[0].digest), "big")).decode()
                if claimed != whole:
                    return self._bad_digest(f"full-object {algorithm} of {seen.path}: sent {claimed}, parts make "
                                            f"{whole}"), {}, b""
                return None, {}, f"<{tag}>{whole}</{tag}><ChecksumType>FULL_OBJECT</ChecksumType>".encode()
            joined = b"".join(p.digest for p in known)
            composite = f"{base64.b64encode(_digest(algorithm, joined)).decode()}-{len(known)}"
            return None, {}, f"<{tag}>{composite}</{tag}><ChecksumType>COMPOSITE</ChecksumType>".encode()
        return None, {}, b""

    def _bad_digest(self, why: str) -> Fault:
        with self._lock:
            self.refused.append(why)
        return Fault(400, "BadDigest")

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
            self.answered.clear()

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
