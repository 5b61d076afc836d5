"""One upload by N shard processes against one process, at the same total threads, on this machine.

    .venv/bin/python bench/shards.py [--size 1G] [--runs 3] [--shards 4] [--threads 8] [--part-size 32M]

Starts `rclone serve s3` on 127.0.0.1, makes a random file, then, interleaved per round: one
`s3-multipart-upload upload -t THREADS`, and SHARDS processes `upload --shard I/SHARDS -t THREADS/SHARDS`
started together on shared state files (the wall time runs until the last one exits). Every stored
object is compared with the file (SHA-256). Writes bench/results/shards.{json,md}. On one machine the
shards share its cores and its loopback: no gain is expected; bench/README.md says what a cluster gains.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    BUCKET,
    VENV_BIN,
    BenchError,
    MiB,
    loadavg,
    machine_info,
    measured,
    parse_size,
    rclone_server,
    sha256_file,
)

RESULTS = Path(__file__).resolve().parent / "results"


def env(key: str, secret: str, work: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3MU_"))}
    return base | {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(work / "none"),
                   "AWS_SHARED_CREDENTIALS_FILE": str(work / "none")}


def stored_sha(endpoint: str, key: str, secret: str, object_key: str) -> str:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name="us-east-1")
    body = s3.get_object(Bucket=BUCKET, Key=object_key)["Body"]
    h = hashlib.sha256()
    for chunk in iter(lambda: body.read(8 * MiB), b""):
        h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=parse_size("1G"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--part-size", default="32M")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.threads % args.shards:
        ap.error("--threads must be a multiple of --shards (the same total threads)")
    work = Path(tempfile.mkdtemp(prefix="s3mu-shards-", dir=args.tmp))
    key, secret = "bench", secrets.token_hex(16)
    cli = str(VENV_BIN / "s3-multipart-upload")
    rows: list[dict[str, Any]] = []
    try:
        data = work / "input.bin"
        with open(data, "wb") as f:
            for _ in range(args.size // (64 * MiB)):
                f.write(secrets.token_bytes(64 * MiB))
            f.write(secrets.token_bytes(args.size % (64 * MiB)))
        want = sha256_file(data)
        with rclone_server("shards", work / "s3data", key, secret, [], work) as server:
            e = env(key, secret, work)
            for rnd in range(args.runs):
                for mode in ("one process", f"{args.shards} shards"):
                    obj = f"r{rnd}-{mode.replace(' ', '-')}"
                    state = work / f"state-{obj}"
                    state.mkdir()
                    base = [cli, "upload", "-q", "-b", BUCKET, "-k", obj, "-f", str(data), "-m",
                            str(state / "m.json"), "-a", str(state / "p.jsonl"), "-s", args.part_size,
                            "--endpoint-url", server.endpoint]
                    load = loadavg()
                    t0 = time.perf_counter()
                    if mode == "one process":
                        results = [measured([*base, "-t", str(args.threads)], e, 900, work / f"{obj}.log")]
                    else:  # started together, each under /usr/bin/time -v
                        threads = str(args.threads // args.shards)
                        argvs = [([*base, "-t", threads, "--shard", f"{i}/{args.shards}"], work / f"{obj}-{i}.log")
                                 for i in range(args.shards)]
                        with ThreadPoolExecutor(args.shards) as pool:
                            results = list(pool.map(lambda a: measured(a[0], e, 900, a[1]), argvs))
                    wall = time.perf_counter() - t0
                    ok = all(m.rc == 0 for m in results) and stored_sha(server.endpoint, key, secret, obj) == want
                    row = {"round": rnd, "mode": mode, "ok": ok, "wall_s": round(wall, 2),
                           "mib_s": round(args.size / MiB / wall, 1),
                           "cpu_s": round(sum(m.cpu_s for m in results), 2),
                           "max_rss_mib": round(max(m.max_rss_mib for m in results), 1),
                           "sum_rss_mib": round(sum(m.max_rss_mib for m in results), 1), "loadavg_before": load}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if not ok:
                        raise BenchError(f"{mode} round {rnd} failed: see {work}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for mode in {r["mode"] for r in rows}:
        mine = [r for r in rows if r["mode"] == mode]
        summary[mode] = {k: statistics.median(r[k] for r in mine) for k in ("mib_s", "cpu_s", "max_rss_mib",
                                                                           "sum_rss_mib", "wall_s")}
    doc = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "size": args.size, "runs": args.runs,
           "shards": args.shards, "threads": args.threads, "part_size": args.part_size, "machine": machine_info(),
           "rows": rows, "medians": summary}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shards.json").write_text(json.dumps(doc, indent=2) + "\n")
    one, many = summary["one process"], summary[f"{args.shards} shards"]
    lines = [f"# Shards on one machine ({doc['when']})", "",
             f"{args.size / MiB:.0f} MiB random file to rclone serve s3 on 127.0.0.1, parts of {args.part_size}, "
             f"{args.threads} threads in total, medians of {args.runs} interleaved rounds; every object SHA-256 "
             "checked.", "",
             "| mode | MiB/s | wall s | CPU s (all processes) | peak RSS MiB (largest / sum) |",
             "|---|---|---|---|---|"]
    for mode, m in ((f"one process, -t {args.threads}", one),
                    (f"{args.shards} shards, -t {args.threads // args.shards} each", many)):
        lines.append(f"| {mode} | {m['mib_s']:.0f} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | "
                     f"{m['max_rss_mib']:.0f} / {m['sum_rss_mib']:.0f} |")
    lines += ["", f"Ratio shards / one process: throughput {many['mib_s'] / one['mib_s']:.2f}x, "
                  f"CPU {many['cpu_s'] / one['cpu_s']:.2f}x."]
    (args.out / "shards.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
