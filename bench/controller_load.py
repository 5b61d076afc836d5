"""The upload controller under load: many clients at once, each uploading one file through it.

    .venv/bin/python bench/controller_load.py [--clients 50] [--parts 10] [--part-size 5M,64K]

For each part size, three scenarios, each on a fresh bucket and database:

- ``sqlite``: one ``s3-multipart-upload serve`` on SQLite;
- ``postgresql``: two instances on one PostgreSQL database, the clients spread over both;
- ``postgresql-kill``: the same, and the second instance is killed (SIGKILL) once 40 % of the parts are sent;
  its clients retry against the first.

Every client makes the requests `upload --controller` makes for a new file (read from controller.py and
main.py, and checked against the service's access log of a real CLI run): GET the file's
pending upload (none), POST a new one declaring the size, GET the upload and its parts twice (the engine
adopts the upload, then reconciles), then per part a presigned URL and a real PUT of the bytes to
``rclone serve s3`` on 127.0.0.1 (its ETag compared with the part's MD5), ``--threads`` parts at a time as
the CLI's -t, then the PATCH that completes it. Each client has its own principal and token, accepted by
both instances.

5 MiB is S3's smallest part (but the last). rclone serve s3 does not enforce it, so the 64K rows measure
the controller with little S3 traffic around it; those clients do not declare the size (the service
hands out parts of 5 MiB at least and would count the parts of a declared size), and the part size is
theirs.

After the load: every upload must be ``uploaded`` at the controller, its object's bytes (GET, MD5 of the
whole) those the client sent, no service answered 5xx, and no client saw an error it could not retry.
Results: bench/results/controller-load-<date>.json and controller-load-latest.md. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import urllib3

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from run import BenchError, free_port, human, log, machine_info, parse_size, rclone_server  # noqa: E402

from s3_multipart_upload.controller import ControllerAPI  # noqa: E402

RESULTS = HERE / "results"
ACCESS_KEY, SECRET_KEY = "controller-load-key", secrets.token_hex(16)
TAG = 64  # each part starts with 64 bytes naming its client and number: no two parts are alike
TRIES = 6  # per controller request, over the instances


def quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


# -- the services ---------------------------------------------------------------------------------


@dataclass
class Instance:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    killed_at: float | None = None

    def cpu_s(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")


def service_env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3MU_"))}
    return env | {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                  "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
                  "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def services(count: int, bucket: str, endpoint: str, database_url: str, tokens_file: Path,
             folder: Path, extra: list[str]) -> Iterator[list[Instance]]:
    started: list[Instance] = []
    try:
        for n in range(count):
            port = free_port()
            log_path = folder / f"service-{n}.log"
            with open(log_path, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "s3_multipart_upload", "serve", "--bucket", bucket, "--endpoint-url",
                     endpoint, "--tokens-file", str(tokens_file), "--port", str(port), "--database-url",
                     database_url, *extra],
                    env=service_env(endpoint), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            instance = Instance(f"http://127.0.0.1:{port}", proc, log_path)
            started.append(instance)
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{instance.url}/health", timeout=1).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"the service did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.1)
        yield started
    finally:
        for instance in started:
            if instance.proc.poll() is None:
                instance.proc.terminate()
                try:
                    instance.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    instance.proc.kill()
                    instance.proc.wait(timeout=15)


# -- the data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    clients: int
    parts: int
    part_size: int
    declare_size: bool
    declare_sha256: bool = False  # --declare sha256: each client declares its file's SHA-256; the verifier accepts it

    @property
    def size(self) -> int:
        """Every part full but the last, which is half a part."""
        return (self.parts - 1) * self.part_size + self.part_size // 2

    def part_length(self, number: int) -> int:
        return self.part_size if number < self.parts else self.size - (self.parts - 1) * self.part_size


class Data:
    """Each client's file, made on demand from one random block; the MD5s are computed before the load."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.block = os.urandom(layout.size)
        self.part_md5: dict[tuple[int, int], str] = {}
        self.file_md5: dict[int, str] = {}
        self.file_sha256: dict[int, str] = {}
        for client in range(layout.clients):
            whole, sha = hashlib.md5(), hashlib.sha256()
            for number in range(1, layout.parts + 1):
                body = self.part(client, number)
                self.part_md5[client, number] = hashlib.md5(body).hexdigest()
                whole.update(body)
                sha.update(body)
            self.file_md5[client] = whole.hexdigest()
            self.file_sha256[client] = sha.hexdigest()

    def part(self, client: int, number: int) -> bytes:
        start = (number - 1) * self.layout.part_size
        tag = f"client {client} part {number} ".encode().ljust(TAG, b".")
        return tag + self.block[start + TAG:start + self.layout.part_length(number)]


# -- the clients ----------------------------------------------------------------------------------


@dataclass
class Stats:
    latency: dict[str, list[float]] = field(default_factory=dict)  # request kind -> seconds
    requests: int = 0  # to the controller, answered
    failovers: int = 0  # requests that went to the other instance after a connection error
    recovered: list[str] = field(default_factory=list)  # answers to a retry that told of the first try's effect
    errors: list[str] = field(default_factory=list)  # what a client could not get past
    parts_sent: int = 0
    started: float = 0.0  # time.monotonic() at the start of the load
    part_retries: int = 0  # PUTs that failed on the way (timeout, reset) and were sent again
    bytes_sent: int = 0
    uploads: dict[int, str] = field(default_factory=dict)  # client -> upload id

    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latency.setdefault(kind, []).append(seconds)
            self.requests += kind != "put"

    def count(self, name: str, by: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + by)


class Failed(Exception):
    pass


class Refused(Exception):
    """A 4xx answer of the controller."""

    def __init__(self, status: int, code: str, attempt: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.attempt, self.message = status, code, attempt, message


class Client:
    """One user's upload, with the CLI's own HTTP client (controller.ControllerAPI: urllib3, one pool per client)
    and its part concurrency; a connection error sends the request to the next instance."""

    def __init__(self, number: int, token: str, instances: list[Instance], data: Data, stats: Stats,
                 file_id: str, threads: int) -> None:
        self.number = number
        self.apis = [ControllerAPI(i.url, token, pool_size=threads + 2) for i in instances]
        self.home = number % len(instances)
        self.data = data
        self.stats = stats
        self.file_id = file_id
        self.threads = threads

    def call(self, kind: str, method: str, path: str, body: Any = None,
             query: dict[str, str] | None = None) -> tuple[Any, int]:
        """(answer, attempt); refusals raise Refused, 5xx and no instance at all raise Failed."""
        last: Exception | None = None
        for attempt in range(TRIES):
            at = self.home
            started = time.monotonic()
            try:
                answer = self.apis[at].call(method, path, kind, body=body, query=query)
            except (ConnectionError, TimeoutError) as exc:
                last = exc
                self.stats.count("failovers")
                self.home = (at + 1) % len(self.apis)  # after the one that failed, wherever home is now
                time.sleep(0.05 * (attempt + 1))
                continue
            except botocore.exceptions.ClientError as exc:
                self.stats.timed(kind, time.monotonic() - started)
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if status >= 500:
                    raise Failed(f"client {self.number}: {kind} answered {status}: {exc}") from exc
                raise Refused(status, str(exc.response.get("Error", {}).get("Code")), attempt, str(exc)) from exc
            self.stats.timed(kind, time.monotonic() - started)
            return answer, attempt
        raise Failed(f"client {self.number}: {kind}: no instance answered ({last!r})")

    def run(self) -> None:
        layout = self.data.layout
        fid = self.file_id
        pending = ("pending", "GET", f"/files/{fid}/multipart_uploads")
        found, _ = self.call(*pending, query={"status": "pending"})
        if found is not None:
            raise Failed(f"client {self.number}: file {fid} already has an upload")
        body: dict[str, Any] = {"size": layout.size, "part_size": layout.part_size} if layout.declare_size else {}
        if layout.declare_sha256:
            body["sha256"] = self.data.file_sha256[self.number]
        try:
            upload, _ = self.call("create", "POST", f"/files/{fid}/multipart_uploads", body=body)
        except Refused as exc:
            if exc.code != "UploadExists" or exc.attempt == 0:
                raise Failed(f"client {self.number}: create: {exc.message}") from exc
            # The first try created it before its instance died: as the CLI does, take the pending one.
            self.stats.recovered.append(f"client {self.number}: create answered UploadExists on a retry")
            upload, _ = self.call(*pending, query={"status": "pending"})
        upload_id = upload["upload_id"]
        self.stats.uploads[self.number] = upload_id
        seg = urllib.parse.quote(upload_id, safe="")
        for _ in range(2):  # the engine asks twice: when it adopts the upload, and before it plans what to send
            self.call("get", "GET", f"/multipart_uploads/{seg}")
            held, _ = self.call("parts", "GET", f"/multipart_uploads/{seg}/parts")
            if held["parts"]:
                raise Failed(f"client {self.number}: a new upload already holds parts")
        with ThreadPoolExecutor(min(self.threads, layout.parts)) as pool:
            etags = dict(zip((str(n) for n in range(1, layout.parts + 1)),
                             pool.map(lambda n: self.send(seg, n), range(1, layout.parts + 1)), strict=True))
        try:
            self.call("complete", "PATCH", f"/multipart_uploads/{seg}", body={"status": "uploaded", "parts": etags})
        except Refused as exc:
            if exc.code != "InvalidTransition" or exc.attempt == 0:
                raise Failed(f"client {self.number}: complete: {exc.message}") from exc
            self.stats.recovered.append(f"client {self.number}: complete answered InvalidTransition on a retry")

    def send(self, seg: str, number: int) -> str:
        """A fresh URL and a PUT; a PUT that fails on the way (a timeout, a reset) is tried again, as the CLI's
        engine does (bounded), and counted."""
        payload = self.data.part(self.number, number)
        for attempt in range(TRIES):
            signed, _ = self.call("part_url", "POST", f"/multipart_uploads/{seg}/part/{number}/presigned_post")
            started = time.monotonic()
            try:
                put = self.apis[0].http.request(signed["method"], signed["url"], body=payload, redirect=False,
                                                headers={"Content-Length": str(len(payload))})
            except urllib3.exceptions.HTTPError as exc:
                if attempt == TRIES - 1:
                    raise Failed(f"client {self.number}: PUT of part {number} failed {TRIES} times: {exc!r}") from exc
                self.stats.count("part_retries")
                time.sleep(0.2 * (attempt + 1))
                continue
            self.stats.timed("put", time.monotonic() - started)
            etag = (put.headers.get("ETag") or "").strip('"')
            if put.status != 200 or etag != self.data.part_md5[self.number, number]:
                raise Failed(f"client {self.number}: PUT of part {number}: {put.status} ETag {etag!r}")
            self.stats.count("parts_sent")
            self.stats.count("bytes_sent", len(payload))
            return etag
        raise AssertionError("unreachable")


# -- a scenario -----------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    database: str
    instances: int
    kill_at: float | None  # fraction of all parts sent when the second instance is killed


SCENARIOS = [Scenario("sqlite", "sqlite", 1, None), Scenario("postgresql", "postgresql", 2, None),
             Scenario("postgresql-kill", "postgresql", 2, 0.4)]


def s3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        region_name="us-east-1", config=Config(request_checksum_calculation="when_required",
                                                               s3={"addressing_style": "path"},
                                                               max_pool_connections=8))


def object_md5(s3: Any, bucket: str, key: str) -> str:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    h = hashlib.md5()
    for chunk in body.iter_chunks(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def load(scenario: Scenario, instances: list[Instance], tokens: list[str], data: Data, run_id: str,
         timeout: float, threads: int) -> tuple[Stats, float]:
    stats = Stats()
    clients = [Client(n, tokens[n], instances, data, stats, f"{run_id}-{n:03d}", threads)
               for n in range(data.layout.clients)]
    total_parts = data.layout.clients * data.layout.parts
    finished = threading.Event()

    def killer() -> None:
        assert scenario.kill_at is not None
        for _ in range(int(timeout * 20)):
            if finished.is_set():
                return
            if stats.parts_sent >= scenario.kill_at * total_parts:
                victim = instances[1]
                victim.proc.send_signal(signal.SIGKILL)
                victim.killed_at = time.monotonic()
                log(f"  killed instance 1 (pid {victim.proc.pid}) at {stats.parts_sent}/{total_parts} parts")
                return
            time.sleep(0.05)

    def one(client: Client) -> None:
        try:
            client.run()
        except (Failed, Refused) as exc:
            stats.errors.append(str(exc))
        except Exception as exc:  # the bench's own bug: count it, do not hide it
            stats.errors.append(f"client {client.number}: {exc!r}")

    started = stats.started = time.monotonic()
    kill = threading.Thread(target=killer, daemon=True) if scenario.kill_at is not None else None
    if kill is not None:
        kill.start()
    with ThreadPoolExecutor(len(clients)) as pool:
        futures = [pool.submit(one, c) for c in clients]
        _done, late = wait(futures, timeout=timeout)
        for _ in late:
            stats.errors.append("a client did not finish in time")
    wall = time.monotonic() - started
    finished.set()
    return stats, wall


def run_scenario(scenario: Scenario, layout: Layout, data: Data, endpoint: str, work: Path, pg: Any,
                 timeout: float, threads: int) -> dict[str, Any]:
    run_id = f"{scenario.name}-{human(layout.part_size).replace(' ', '')}-{uuid.uuid4().hex[:6]}"
    folder = work / run_id
    folder.mkdir(parents=True)
    bucket = f"load-{uuid.uuid4().hex[:10]}"
    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket=bucket)
    tokens = [secrets.token_urlsafe(24) for _ in range(layout.clients)]
    tokens_file = folder / "tokens.txt"
    tokens_file.write_text("".join(f"client-{n:03d} {t}\n" for n, t in enumerate(tokens)))
    database_url = (f"sqlite:///{folder / 'controller.sqlite3'}" if scenario.database == "sqlite"
                    else pg.create_database("load"))
    with services(scenario.instances, bucket, endpoint, database_url, tokens_file, folder, []) as instances:
        cpu_before = [i.cpu_s() for i in instances]
        own_before, s3_before = time.process_time(), s3_cpu()
        load_before = os.getloadavg()[0]
        log(f"{run_id}: {layout.clients} clients x {layout.parts} parts of {human(layout.part_size)} "
            f"on {scenario.instances} instance(s), {scenario.database}")
        stats, wall = load(scenario, instances, tokens, data, run_id, timeout, threads)
        cpu = [round(i.cpu_s() - b, 2) for i, b in zip(instances, cpu_before, strict=True)]
        own_cpu, s3_cpu_s = round(time.process_time() - own_before, 2), round(s3_cpu() - s3_before, 2)
        load_after = os.getloadavg()[0]
        # The state the controller keeps, asked of the instance that is still up.
        survivor = instances[0]
        statuses: dict[str, int] = {}
        wrong: list[str] = []
        ok_clients: set[int] = set()
        done = "accepted" if layout.declare_sha256 else "uploaded"
        accepted_at = time.monotonic()
        if layout.declare_sha256:  # the verifiers read every object: wait (bounded) until none is left uploaded
            for _ in range(int(timeout * 10)):
                queue = _metric(survivor.url, "s3mu_verification_queue")
                if queue == 0:
                    break
                time.sleep(0.1)
            accepted_at = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            def verify(n: int) -> None:
                upload_id = stats.uploads.get(n)
                if upload_id is None:
                    wrong.append(f"client {n}: no upload")
                    return
                got = httpx.get(f"{survivor.url}/multipart_uploads/{upload_id.replace('/', '%2F')}",
                                headers={"Authorization": f"Bearer {tokens[n]}"}, timeout=60).json()
                statuses[got["status"]] = statuses.get(got["status"], 0) + 1
                if got["status"] == done:
                    md5 = object_md5(s3, bucket, got["key"])
                    if md5 != data.file_md5[n]:
                        wrong.append(f"client {n}: object {got['key']} has MD5 {md5}, the file {data.file_md5[n]}")
                    else:
                        ok_clients.add(n)
                else:
                    wrong.append(f"client {n}: upload {upload_id} is {got['status']}")

            list(pool.map(verify, range(layout.clients)))
        try:
            left = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        except botocore.exceptions.ClientError:  # rclone's answer for a bucket with none: NoSuchUpload
            left = []
        known = {u for n, u in stats.uploads.items() if n not in ok_clients}
        orphans = [u["UploadId"] for u in left if u["UploadId"] not in known]
    logs = "".join(i.log_path.read_text(errors="replace") for i in instances)
    server_5xx = len(re.findall(r'"status": 5\d\d', logs))  # the service's JSON access log, a line a request
    tracebacks = logs.count("Traceback")
    shutil.rmtree(Path(endpoint_data(endpoint)) / bucket, ignore_errors=True)  # free the disk for the next one
    part_url = stats.latency.get("part_url", [])
    row = {
        "scenario": scenario.name, "part_size": layout.part_size, "clients": layout.clients, "parts": layout.parts,
        "instances": scenario.instances, "database": scenario.database, "wall_s": round(wall, 2),
        "requests": stats.requests, "requests_per_s": round(stats.requests / wall, 1),
        "part_url_p50_ms": _ms(quantile(part_url, 0.5)), "part_url_p99_ms": _ms(quantile(part_url, 0.99)),
        "part_url_max_ms": _ms(max(part_url) if part_url else None),
        "latency_p50_ms": {k: _ms(quantile(v, 0.5)) for k, v in sorted(stats.latency.items())},
        "latency_p99_ms": {k: _ms(quantile(v, 0.99)) for k, v in sorted(stats.latency.items())},
        "put_mib_s": round(stats.bytes_sent / 2**20 / wall, 1),
        "errors": stats.errors, "failovers": stats.failovers, "recovered": stats.recovered,
        "server_5xx": server_5xx, "tracebacks": tracebacks,
        "statuses": statuses, "objects_wrong": wrong, "objects_right": layout.clients - len(wrong),
        "s3_uploads_left": len(left), "orphan_s3_uploads": len(orphans),
        "part_retries": stats.part_retries, "service_cpu_s": cpu,
        "clients_cpu_s": own_cpu, "s3_server_cpu_s": s3_cpu_s,
        "loadavg": [round(load_before, 2), round(load_after, 2)],
        "declared": "sha256" if layout.declare_sha256 else None,
        "verified_after_load_s": round(accepted_at - stats.started - wall, 1) if layout.declare_sha256 else None,
        "killed_after_s": (round(instances[1].killed_at - stats.started, 1)
                           if scenario.kill_at is not None and instances[1].killed_at else None),
    }
    ok = not stats.errors and not wrong and server_5xx == 0 and statuses == {done: layout.clients}
    row["ok"] = ok
    log(f"  {'OK' if ok else 'FAILED'}: {row['requests_per_s']} req/s, part-url p50 {row['part_url_p50_ms']} ms "
        f"p99 {row['part_url_p99_ms']} ms, {len(stats.errors)} errors, {server_5xx} 5xx, {stats.failovers} "
        f"failovers, {row['objects_right']}/{layout.clients} objects right, {len(orphans)} orphan S3 uploads, "
        f"{stats.part_retries} part retries")
    for line in (stats.errors + wrong)[:10]:
        log(f"    {line}")
    return row


_DATA_DIRS: dict[str, str] = {}
_S3_PROC: list[Any] = []


def s3_cpu() -> float:
    return float(_S3_PROC[0].cpu_s()) if _S3_PROC else float("nan")


def endpoint_data(endpoint: str) -> str:
    return _DATA_DIRS[endpoint]


def _metric(url: str, name: str) -> float | None:
    """One gauge of the service's /metrics (None when it does not answer)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# -- the report -----------------------------------------------------------------------------------


def report(result: dict[str, Any]) -> str:
    lines = [f"# Controller under load, {result['started']}", "",
             f"{result['clients']} concurrent clients, one file of {result['parts']} parts each (the last half a "
             "part), through `s3-multipart-upload serve` to `rclone serve s3`, all on 127.0.0.1. Machine: "
             f"{result['machine']['cores']} cores ({result['machine']['cpu']}), {result['machine']['memory_gib']} GiB, "
             f"Python {result['machine']['python']}; load average before/after: {result['loadavg'][0]} / "
             f"{result['loadavg'][1]}. Busiest other processes at the start: {result['others']}.", "",
             "| part size | scenario | instances | wall s | controller requests/s | part-url p50 ms | part-url p99 ms "
             "| PUT MiB/s | errors | 5xx | failovers | PUTs retried | uploaded, object right | orphan S3 uploads "
             "| CPU s: service(s) / clients / S3 server |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        lines.append(f"| {human(r['part_size'])} | {r['scenario']} | {r['instances']} | {r['wall_s']} | "
                     f"{r['requests_per_s']} | {r['part_url_p50_ms']} | {r['part_url_p99_ms']} | {r['put_mib_s']} | "
                     f"{len(r['errors'])} | {r['server_5xx']} | {r['failovers']} | {r['part_retries']} | "
                     f"{r['objects_right']}/{r['clients']} | {r['orphan_s3_uploads']} | "
                     f"{' + '.join(str(c) for c in r['service_cpu_s'])} / {r['clients_cpu_s']} / "
                     f"{r['s3_server_cpu_s']} |")
    lines += ["", "p50 / p99 latency of each request kind, ms:", ""]
    for r in result["rows"]:
        kinds = ", ".join(f"{k} {r['latency_p50_ms'][k]} / {r['latency_p99_ms'][k]}" for k in r["latency_p50_ms"])
        lines.append(f"- {human(r['part_size'])} {r['scenario']}: {kinds}")
    declared = [r for r in result["rows"] if r.get("declared")]
    if declared:
        lines += ["", "Clients declared their files' SHA-256; every upload was accepted by the controller's verifiers "
                  "(which read each object) this long after the load ended:", ""]
        lines += [f"- {human(r['part_size'])} {r['scenario']}: {r['verified_after_load_s']} s" for r in declared]
    failed = [f"{human(r['part_size'])} {r['scenario']}: {e}" for r in result["rows"]
              for e in r["errors"] + r["objects_wrong"]]
    if failed:
        lines += ["", "## Errors", "", *[f"- {e}" for e in failed[:50]]]
    return "\n".join(lines) + "\n"


def busiest_processes() -> str:
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[1:6]
    except (OSError, subprocess.SubprocessError):
        return "(ps failed)"
    return ", ".join(" ".join(line.split()[::-1]) + "%" for line in out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--threads", type=int, default=8, help="parts in flight per client (the CLI's -t default)")
    parser.add_argument("--part-size", default="5M,64K", help="comma-separated; below 5M the size is not declared")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument("--timeout", type=float, default=300, help="seconds one scenario's load may take")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--declare", choices=("none", "sha256"), default="none",
                        help="sha256: each client declares its file's SHA-256, and the run waits until the "
                             "controller's verifiers have accepted every upload")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    from tests.pg import postgres

    started = dt.datetime.now(dt.UTC)
    result: dict[str, Any] = {"started": started.strftime("%Y-%m-%d %H:%M UTC"), "clients": args.clients,
                              "parts": args.parts, "threads": args.threads, "machine": machine_info(),
                              "others": busiest_processes(),
                              "loadavg": [round(os.getloadavg()[0], 2)], "rows": []}
    work = Path(tempfile.mkdtemp(prefix="s3mu-load-", dir=args.tmp))
    try:
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(rclone_server("load", work / "s3", ACCESS_KEY, SECRET_KEY, [], work))
            _DATA_DIRS[server.endpoint] = str(work / "s3")
            _S3_PROC.append(server)
            pg = stack.enter_context(postgres()) if any(s.database == "postgresql" for s in chosen) else None
            for size_text in args.part_size.split(","):
                part_size = parse_size(size_text)
                layout = Layout(args.clients, args.parts, part_size, declare_size=part_size >= 5 * 2**20,
                                declare_sha256=args.declare == "sha256")
                log(f"making {args.clients} files of {human(layout.size)} and their MD5s")
                data = Data(layout)
                for scenario in chosen:
                    result["rows"].append(run_scenario(scenario, layout, data, server.endpoint, work, pg,
                                                       args.timeout, args.threads))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["loadavg"].append(round(os.getloadavg()[0], 2))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y-%m-%dT%H%M%S")
    (args.out / f"controller-load-{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "controller-load-latest.md").write_text(report(result))
    print(report(result))
    return 0 if all(r["ok"] for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
