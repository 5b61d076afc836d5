"""Uploads from a pipe, side by side: this tool's `upload -` (at its defaults, with 1 GiB parts spooled, and with
1 GiB parts in memory), `aws s3 cp -` and `s5cmd pipe`, each reading `cat FILE` through a real pipe into a local
`rclone serve s3`; and the same file uploaded as a file, for reference. Wall time, CPU (user + system) and peak RSS
of the uploader alone (`/usr/bin/time -v`; the `cat` is not counted). Every object is compared with the file.
Then `--max-bandwidth 20MB/s` on 64 MiB, against the time the rate gives.

    .venv/bin/python bench/streams.py                 # 4 GiB, one run per row: about 4 minutes on 2 cores
    .venv/bin/python bench/streams.py --size 1G --out /tmp/streams

Results: bench/results/streams.md and streams.json ("Streams" in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from many import s5cmd_binary
from run import (  # bench/run.py: the server and the measured processes
    BUCKET,
    REGION,
    VENV_BIN,
    Measured,
    loadavg,
    machine_info,
    measured,
    parse_size,
    rclone_server,
)

HERE = Path(__file__).resolve().parent
KEY, SECRET = "bench-access-key", "bench-secret-key"
MiB = 2**20
ROWS = ("ours-defaults", "ours-1G-spooled", "ours-1G-memory", "aws-cli", "s5cmd", "ours-file")
LABELS = {
    "ours-defaults": "s3-multipart-upload upload - (defaults: -t 8, 32 MiB growing, --max-memory 256M)",
    "ours-1G-spooled": "s3-multipart-upload upload - -s 1G (parts spooled to files)",
    "ours-1G-memory": "s3-multipart-upload upload - -s 1G --max-memory 2G (parts in memory)",
    "aws-cli": "aws s3 cp - (defaults)",
    "s5cmd": "s5cmd pipe (defaults)",
    "ours-file": "s3-multipart-upload upload FILE (the same data as a file, for reference)",
}


def env_for(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3MU_")) and k != "PYTHONPATH"}
    conf = work / "aws-config"
    conf.write_text("[default]\ns3 =\n  addressing_style = path\n")
    hide = work / "without-awscrt"  # aws-cli as `pip install awscli` leaves it (see bench/run.py)
    hide.mkdir(exist_ok=True)
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['awscrt'] = None\n")
    env.update({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(conf),
                "AWS_SHARED_CREDENTIALS_FILE": str(work / "none")})
    return env


def command(row: str, endpoint: str, key: str, file: Path, work: Path) -> tuple[list[str], bool, dict[str, str]]:
    """argv, whether it reads stdin, and extra environment."""
    ours = [str(VENV_BIN / "s3-multipart-upload"), "upload", "--endpoint-url", endpoint, "-q",
            "--state-dir", str(work / "state")]
    if row == "ours-defaults":
        return [*ours, "-", f"s3://{BUCKET}/{key}"], True, {}
    if row == "ours-1G-spooled":
        return [*ours, "-", f"s3://{BUCKET}/{key}", "-s", "1G", "--spool-dir", str(work)], True, {}
    if row == "ours-1G-memory":
        return [*ours, "-", f"s3://{BUCKET}/{key}", "-s", "1G", "--max-memory", "2G"], True, {}
    if row == "ours-file":
        return [*ours, str(file), f"s3://{BUCKET}/{key}"], False, {}
    if row == "aws-cli":
        return [str(VENV_BIN / "aws"), "--endpoint-url", endpoint, "s3", "cp", "--only-show-errors", "-",
                f"s3://{BUCKET}/{key}"], True, {"PYTHONPATH": str(work / "without-awscrt")}
    if row == "s5cmd":
        return [s5cmd_binary(), "--endpoint-url", endpoint, "pipe", f"s3://{BUCKET}/{key}"], True, {}
    raise ValueError(row)


def one(row: str, endpoint: str, data: Path, file: Path, work: Path, env: dict[str, str], rnd: int) -> dict[str, Any]:
    key = f"{row}-{rnd}.bin"
    argv, piped, extra = command(row, endpoint, key, file, work)
    subprocess.run(["cat", str(file)], stdout=subprocess.DEVNULL, check=True, timeout=600)  # in the page cache
    producer = subprocess.Popen(["cat", str(file)], stdout=subprocess.PIPE) if piped else None
    try:
        got: Measured = measured(argv, env | extra, 1800, work / f"{key}.log",
                                 stdin=producer.stdout if producer else None)
    finally:
        if producer is not None:
            assert producer.stdout is not None
            producer.stdout.close()
            producer.wait(timeout=60)
    stored = data / BUCKET / key
    same = got.rc == 0 and stored.exists() and subprocess.run(["cmp", "-s", str(file), str(stored)],
                                                              timeout=600).returncode == 0
    if stored.exists():
        stored.unlink()
    print(f"{row}: rc {got.rc}, {got.wall_s:.1f} s, CPU {got.cpu_s:.1f} s, RSS {got.max_rss_mib:.0f} MiB, "
          f"identical {same}", flush=True)
    return {"row": row, "label": LABELS[row], "round": rnd, "rc": got.rc, "identical": same,
            "wall_s": round(got.wall_s, 2), "cpu_s": round(got.cpu_s, 2), "max_rss_mib": round(got.max_rss_mib, 1)}


def bandwidth(endpoint: str, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """--max-bandwidth 20MB/s on 64 MiB, through a pipe: the time from the run's `started` event to its last part's
    acknowledgement (its --json events: the process's start-up is not the cap's), against 64 MiB / 20 MB/s."""
    small = work / "64M.bin"
    small.write_bytes(os.urandom(64 * MiB))
    argv = [str(VENV_BIN / "s3-multipart-upload"), "upload", "--endpoint-url", endpoint, "--json", "-q",
            "--state-dir", str(work / "state"), "-", f"s3://{BUCKET}/bw.bin", "--max-bandwidth", "20MB/s"]
    with open(small, "rb") as stdin:
        got = measured(argv, env, 600, work / "bw.log", stdin=stdin)
    events = [json.loads(line) for line in (work / "bw.log").read_text().splitlines() if line.startswith("{")]
    stamps = [dt.datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in events
              if e["event"] in ("started", "part_done")]
    sending = (stamps[-1] - stamps[0]).total_seconds()
    expected = 64 * MiB / 20e6
    print(f"--max-bandwidth 20MB/s: {sending:.2f} s sending 64 MiB ({got.wall_s:.2f} s with start-up); the rate "
          f"gives {expected:.2f} s", flush=True)
    return {"rc": got.rc, "sending_s": round(sending, 2), "wall_s": round(got.wall_s, 2),
            "expected_s": round(expected, 2), "ratio": round(sending / expected, 3)}


def machine(m: dict[str, Any]) -> str:
    return f"{m.get('cores')} cores, {m.get('memory_gib')} GiB, {m.get('cpu')}, Linux {m.get('kernel')}, " \
           f"Python {m.get('python')}"


def report(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    size = doc["size"]
    lines = [f"# Streams: {size / 2**30:g} GiB through a pipe ({doc['date']})", "",
             f"{machine(doc['machine'])}; rclone serve s3 on 127.0.0.1; load average {doc['load_before']:.2f} before, "
             f"{doc['load_after']:.2f} after. One run per row unless more are listed (the median is shown).", "",
             "| uploader | wall s | MiB/s | CPU s | CPU s per GiB | peak RSS MiB | object = file |",
             "|---|---|---|---|---|---|---|"]
    for row in ROWS:
        mine = [r for r in runs if r["row"] == row]
        if not mine:
            continue
        mid = sorted(mine, key=lambda r: r["wall_s"])[len(mine) // 2]
        lines.append(f"| {LABELS[row]} | {mid['wall_s']:.1f} | {size / MiB / mid['wall_s']:.0f} | {mid['cpu_s']:.1f} "
                     f"| {mid['cpu_s'] / (size / 2**30):.2f} | {mid['max_rss_mib']:.0f} | "
                     f"{'yes' if all(r['identical'] for r in mine) else 'NO'} |")
    bw = doc.get("bandwidth")
    if bw:
        lines += ["", f"`--max-bandwidth 20MB/s`, 64 MiB from a pipe: {bw['sending_s']:.2f} s from the first part "
                  f"sent to the last acknowledged ({bw['wall_s']:.2f} s with the process's start-up), against "
                  f"{bw['expected_s']:.2f} s at exactly 20 MB/s (x{bw['ratio']:.3f})."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="4G")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    size = parse_size(args.size)
    rows = [r for r in args.rows.split(",") if r]
    work = Path(tempfile.mkdtemp(prefix="s3mu-streams-", dir=args.tmp))
    doc: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "size": size,
                           "machine": machine_info(), "load_before": loadavg(), "runs": []}
    try:
        file = work / "input.bin"
        with open(file, "wb") as f:
            for _ in range(size // (4 * MiB)):
                f.write(os.urandom(4 * MiB))
            f.write(os.urandom(size % (4 * MiB)))
        env = env_for(work)
        data = work / "data"
        with rclone_server("streams", data, KEY, SECRET, [], work) as server:
            for rnd in range(1, args.runs + 1):
                for row in rows:
                    doc["runs"].append(one(row, server.endpoint, data, file, work, env, rnd))
            doc["bandwidth"] = bandwidth(server.endpoint, work, env)
        doc["load_after"] = loadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "streams.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "streams.md").write_text(report(doc))
    print(report(doc))
    return 0 if all(r["rc"] == 0 and r["identical"] for r in doc["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
