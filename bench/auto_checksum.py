"""Client CPU per GiB of `--checksum auto` before and after it learnt to ask the store (issue 24, item 3).

Before, auto picked MD5 by ETag on every store but AWS S3 (`--checksum MD5` does exactly that today); after,
it asks the store with one empty UploadPart and uses CRC64NVME with a full-object checksum where the store
verifies it. On each store this uploads one random file (made at run time, deleted at the end) with both,
interleaved, ``--runs`` times, each into a fresh key, and measures the client's CPU (user + system of the
`s3-multipart-upload` process, from the kernel's accounting of the waited child), the wall time, and the
server's CPU where the server is our child (SeaweedFS). Each run's META is checked for the checksum it used and
the object's size with a HEAD; the object is deleted after each run.

    .venv/bin/python bench/auto_checksum.py                       # SeaweedFS (weed mini), 1 GiB, 3 runs each
    .venv/bin/python bench/auto_checksum.py --localstack URL      # also a running LocalStack (bench/localstack.sh)

Results: bench/results/auto-checksum.md and auto-checksum.json (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.stores import seaweedfs, weed_version  # noqa: E402

GiB = 1 << 30
MODES = {"before": "MD5", "after": "auto"}  # before: what auto picked on every store but AWS S3


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (and its waited children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 16 << 20))
            f.write(block)
            left -= len(block)
    subprocess.run(["sync"], check=True)


def warm(path: Path) -> None:
    """Read the file so that every run reads it from memory (these are upload numbers, not disk numbers)."""
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


@contextlib.contextmanager
def weed_store(work: Path) -> Iterator[dict[str, Any]]:
    key, secret = "bench", "bench-secret"
    data = work / "weed"
    data.mkdir()
    with seaweedfs(data, key, secret) as endpoint:
        pid = _listening_pid(endpoint)
        yield {"name": f"SeaweedFS {weed_version()} (weed mini)", "endpoint": endpoint, "key": key,
               "secret": secret, "server_pid": pid, "expected": "CRC64NVME"}


def _listening_pid(endpoint: str) -> int | None:
    """The weed process (a child of this one): the newest `weed` child."""
    out = subprocess.run(["pgrep", "-P", str(os.getpid()), "-n", "weed"], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out.split() else None


def client(store: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=store["endpoint"], aws_access_key_id=store["key"],
                        aws_secret_access_key=store["secret"], region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


def upload(store: dict[str, Any], bucket: str, file: Path, size: int, mode: str, work: Path,
           threads: int) -> dict[str, Any]:
    key = f"{mode}-{uuid.uuid4().hex[:8]}"
    meta, parts = work / f"{key}.meta.json", work / f"{key}.parts.jsonl"
    env = os.environ | {"AWS_ACCESS_KEY_ID": store["key"], "AWS_SECRET_ACCESS_KEY": store["secret"],
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                        "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    argv = [str(ROOT / ".venv" / "bin" / "s3-multipart-upload"), "upload", "-b", bucket, "-k", key, "-f", str(file),
            "-m", str(meta), "-a", str(parts), "-t", str(threads), "--checksum", MODES[mode],
            "--endpoint-url", store["endpoint"], "--quiet"]
    warm(file)
    server_before = proc_cpu(store["server_pid"]) if store.get("server_pid") else None
    cpu_before, began = children_cpu(), time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120 + size / (2 << 20))
    seconds, cpu = time.monotonic() - began, children_cpu() - cpu_before
    server = proc_cpu(store["server_pid"]) - server_before if server_before is not None else None
    if r.returncode != 0:
        raise SystemExit(f"{mode} upload failed (exit {r.returncode}): {r.stderr[-2000:]}")
    recorded = json.loads(meta.read_text())
    s3 = client(store)
    held = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    if held != size:
        raise SystemExit(f"{mode}: the object is {held} bytes, the file {size}")
    s3.delete_object(Bucket=bucket, Key=key)
    subprocess.run(["sync"], check=True)
    return {"mode": mode, "checksumOption": MODES[mode], "checksumUsed": recorded.get("checksumAlgorithm"),
            "verifiesCRC64NVME": recorded.get("verifiesCRC64NVME"), "seconds": round(seconds, 3),
            "clientCpuS": round(cpu, 3), "clientCpuSPerGiB": round(cpu / (size / GiB), 3),
            "serverCpuSPerGiB": None if server is None else round(server / (size / GiB), 3),
            "mibPerS": round(size / (1 << 20) / seconds, 1)}


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def bench_store(store: dict[str, Any], file: Path, size: int, runs: int, work: Path,
                threads: int) -> dict[str, Any]:
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    client(store).create_bucket(Bucket=bucket)
    results: list[dict[str, Any]] = []
    order = list(MODES)
    for n in range(runs):
        for mode in order if n % 2 == 0 else order[::-1]:  # interleaved, alternating which goes first
            res = upload(store, bucket, file, size, mode, work, threads)
            print(f"  {store['name']} {mode}: {res}", flush=True)
            results.append(res)
    summary = {}
    for mode in MODES:
        mine = [r for r in results if r["mode"] == mode]
        server = [r["serverCpuSPerGiB"] for r in mine if r["serverCpuSPerGiB"] is not None]
        summary[mode] = {"checksumUsed": sorted({str(r["checksumUsed"]) for r in mine}),
                         "clientCpuSPerGiB": round(median([r["clientCpuSPerGiB"] for r in mine]), 2),
                         "serverCpuSPerGiB": round(median(server), 2) if server else None,
                         "mibPerS": round(median([r["mibPerS"] for r in mine]), 1)}
    return {"store": store["name"], "runs": results, "median": summary}


def report(doc: dict[str, Any]) -> str:
    lines = [
        "# `--checksum auto` before and after it asks the store (client CPU per GiB)",
        "",
        f"Run {doc['finished']} by `bench/auto_checksum.py`: a {doc['size'] / GiB:.2f} GiB random file, "
        f"`-t {doc['threads']}` and the default part size, {doc['runs']} runs of each, interleaved; the load average "
        f"was {doc['loadBefore']:.2f} before and {doc['loadAfter']:.2f} after ({os.cpu_count()} cores, client and "
        "server on one machine). Before: `--checksum MD5`, what auto picked on every store but AWS S3. After: "
        "`--checksum auto`, which asks the store and uses what it verifies. Medians.",
        "",
        "| store | run | checksum used | client CPU s per GiB | server CPU s per GiB | MiB/s |",
        "|---|---|---|---:|---:|---:|",
    ]
    for store in doc["stores"]:
        for mode, m in store["median"].items():
            server = "-" if m["serverCpuSPerGiB"] is None else f"{m['serverCpuSPerGiB']:.2f}"
            lines.append(f"| {store['store']} | {mode} (`--checksum {MODES[mode]}`) | {', '.join(m['checksumUsed'])} "
                         f"| {m['clientCpuSPerGiB']:.2f} | {server} | {m['mibPerS']:.1f} |")
    lines += ["", "Every run:", "", "```"]
    for store in doc["stores"]:
        for r in store["runs"]:
            lines.append(f"{store['store']}: {json.dumps(r)}")
    lines += ["```", ""]
    for note in doc.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=GiB)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--localstack", help="the endpoint of a running LocalStack (bench/localstack.sh --serve)")
    ap.add_argument("--no-seaweedfs", action="store_true")
    ap.add_argument("--tmp", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--note", action="append", default=[], help="a line for the report's notes")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="s3mu-auto-", dir=args.tmp))
    doc: dict[str, Any] = {"size": args.size, "runs": args.runs, "threads": args.threads, "stores": [],
                           "loadBefore": os.getloadavg()[0], "notes": args.note}
    try:
        file = work / "data.bin"
        make_file(file, args.size)
        if not args.no_seaweedfs:
            with weed_store(work) as store:
                doc["stores"].append(bench_store(store, file, args.size, args.runs, work, args.threads))
        if args.localstack:
            store = {"name": "LocalStack (host mode)", "endpoint": args.localstack, "key": "test", "secret": "test",
                     "server_pid": None, "expected": "CRC64NVME"}
            version = os.environ.get("LOCALSTACK_VERSION")
            if version:
                store["name"] = f"LocalStack {version} (host mode)"
            doc["stores"].append(bench_store(store, file, args.size, args.runs, work, args.threads))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc["loadAfter"] = os.getloadavg()[0]
    doc["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "auto-checksum.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "auto-checksum.md").write_text(report(doc))
    print(report(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
