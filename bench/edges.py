"""Issue 16's measurements at the default settings: stalled part requests, and a throttling storm.

    .venv/bin/python bench/edges.py [--storm-size 2G] [--storm 30] [--out bench/results]

Starts `rclone serve s3` on 127.0.0.1 (as the tests do, --disable-multipart-streaming) with the tests'
fault-injecting proxy (tests/s3proxy.py) in front of it, and runs the CLI as a user would, with no test hooks:

- stalls: a 40 MiB file, every tenth part request stalled (the proxy reads the body and never answers, or stops
  reading mid-body), in 5 MiB parts and at the default 32 MiB; the issue asks for completion within 90 s;
- storm: a file of --storm-size, uploaded once through the proxy with no faults (the clean time), then with 50 %
  of the part uploads answered SlowDown for --storm seconds from the first one; the issue asks for a total time
  within 2 x (storm + clean time). The parts in flight are taken from the proxy's own record of each part upload.

Writes bench/results/edges.md and edges.json (or under --out). About 4 minutes with the defaults on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from s3_multipart_upload.plan import GiB, MiB  # noqa: E402
from tests.conftest import ACCESS_KEY, REGION, SECRET_KEY, _rclone_server, write_random  # noqa: E402
from tests.s3proxy import Fault, S3Proxy, Seen, storm  # noqa: E402

BUCKET = "edges"


def run(args: list[str], endpoint: str, key: str, state: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3MU_"))} | {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}
    cmd = [sys.executable, "-m", "s3_multipart_upload", "upload", "-b", BUCKET, "-k", key,
           "-m", str(state / f"{key}.m"), "-a", str(state / f"{key}.p"), "--endpoint-url", endpoint, "--json", *args]
    began = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{key}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return seconds, done


def every_tenth(fault: Fault, proxy_ref: list[S3Proxy], first: int) -> Callable[[Seen, int], Fault | None]:
    """``fault`` for part requests ``first``, ``first`` + 10, ... (in the order they reach the proxy)."""
    def rule(seen: Seen, index: int) -> Fault | None:
        if seen.part_number is None:
            return None
        before = sum(1 for s in proxy_ref[0].seen[:index] if s.part_number is not None)
        return fault if before % 10 == first else None
    return rule


def stalls(upstream: str, work: Path) -> list[dict[str, Any]]:
    f = write_random(work / "stall.bin", 40 * MiB, seed=16)
    rows = []
    for name, fault in (("after the body", Fault(stall_after=-1)), ("mid-body", Fault(stall_after=64 * 1024))):
        for split, first in (("5M", 3), ("32M", 0)):  # 32 MiB parts: 2 parts, so the first request stalls
            ref: list[S3Proxy] = []
            proxy = S3Proxy(upstream, rule=every_tenth(fault, ref, first))
            ref.append(proxy)
            try:
                key = f"stall-{name.replace(' ', '-')}-{split}"
                seconds, done = run(["-f", str(f), "-s", split], proxy.endpoint, key, work)
                parts = [s for s in proxy.seen if s.part_number is not None]
                retries = [json.loads(x) for x in done.stdout.splitlines() if '"retry"' in x]
            finally:
                proxy.close()
            rows.append({"stall": name, "partSize": split, "partRequests": len(parts),
                         "stalled": sum(1 for i in range(len(parts)) if i % 10 == first),
                         "seconds": round(seconds, 1),
                         "retries": [r["error"] for r in retries]})
            print(rows[-1], flush=True)
    return rows


def in_flight(spans: list[tuple[float, float]], start: float, step: float = 5.0) -> list[int]:
    """The most part uploads the proxy held at once, per ``step`` seconds from ``start``."""
    end = max(e for _, e in spans)
    out = []
    t = start
    while t < end:
        points = sorted({t, *(s for s, _ in spans if t <= s < t + step)})
        out.append(max(sum(1 for s, e in spans if s <= p < e) for p in points))
        t += step
    return out


def _stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_size(text: str) -> int:
    units = {"M": MiB, "G": GiB}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def storm_run(upstream: str, work: Path, size: int, storm_seconds: float, delay: float) -> dict[str, Any]:
    """``delay``: the proxy holds each part upload this long first, as a link whose round trips, not its
    bandwidth, bound each connection (then the parts in flight are the throughput, unlike on loopback)."""
    f = work / "storm.bin"
    if not f.exists() or f.stat().st_size != size:
        write_random(f, size, seed=30)
    result: dict[str, Any] = {"size": size, "stormSeconds": storm_seconds, "delay": delay}
    for label, rule in (("clean", None), ("storm", storm(storm_seconds, 0.5, seed=30))):
        proxy = S3Proxy(upstream, rule=rule, delay=delay)
        try:
            began = time.time()
            seconds, done = run(["-f", str(f)], proxy.endpoint, f"storm-{label}-{delay:g}", work)
            events = [json.loads(x) for x in done.stdout.splitlines()]
            first = min(s for s, _ in proxy.spans)
            result[label] = {
                "seconds": round(seconds, 1),
                "partRequests": len(proxy.spans),
                "slowDowns": sum(1 for e in events if e["event"] == "retry" and "SlowDown" in e["error"]),
                "throttled": [(round(_stamp(e["time"]) - began, 1), e["was"], e["inFlight"])
                              for e in events if e["event"] == "throttled"],
                "partsPhase": round(max(e for _, e in proxy.spans) - first, 1),
                "completion": round(_stamp(events[-1]["time"]) - max(
                    _stamp(e["time"]) for e in events if e["event"] == "part_done"), 1),
                "inFlightPer5s": in_flight(proxy.spans, first),
            }
        finally:
            proxy.close()
        print(label, result[label], flush=True)
    clean, stormy = result["clean"]["seconds"], result["storm"]["seconds"]
    result["bound"] = round(2 * (storm_seconds + clean), 1)
    result["partsBound"] = round(2 * (storm_seconds + result["clean"]["partsPhase"]), 1)
    result["partsMet"] = result["storm"]["partsPhase"] <= result["partsBound"]
    result["met"] = stormy <= result["bound"]
    return result


def report(stall_rows: list[dict[str, Any]], storms: list[dict[str, Any]], when: str) -> str:
    lines = [f"# Issue 16 at the default settings ({when})", "",
             "`bench/edges.py`: rclone serve s3 (--disable-multipart-streaming) on 127.0.0.1 behind tests/s3proxy.py, "
             "the CLI at its defaults (-t 8; timeouts: send 10 s, answer 20 s + 100 s per GiB of the part). One run "
             "each, on a 2-core machine shared with other work.", "",
             "## Stalled part requests (40 MiB, every tenth part request stalled; the issue's bound: 90 s)", "",
             "| stall | part size | part requests | stalled | seconds | what the retry line said |",
             "|---|---|---:|---:|---:|---|"]
    for r in stall_rows:
        said = "; ".join(sorted(set(r["retries"])))
        lines.append(f"| {r['stall']} | {r['partSize']} | {r['partRequests']} | {r['stalled']} | {r['seconds']} "
                     f"| {said} |")
    for st in storms:
        c, s = st["clean"], st["storm"]
        held = f", each part upload held {st['delay']:g} s by the proxy" if st["delay"] else ", loopback"
        lines += ["", f"## Throttling storm ({st['size'] // MiB} MiB{held}; 50 % SlowDown for "
                  f"{st['stormSeconds']:g} s, then clear)", "",
                  "| run | seconds | of which part uploads | completion | part requests | SlowDown answers "
                  "| most parts in flight, per 5 s |", "|---|---:|---:|---:|---:|---:|---|"]
        for label, r in (("clean", c), ("storm", s)):
            lines.append(f"| {label} | {r['seconds']} | {r['partsPhase']} | {r['completion']} | {r['partRequests']} "
                         f"| {r['slowDowns']} | {' '.join(map(str, r['inFlightPer5s']))} |")
        lines += ["", f"Bound, whole run: 2 x ({st['stormSeconds']:g} + {c['seconds']}) = {st['bound']} s: "
                  f"**{'met' if st['met'] else 'not met'}** ({s['seconds']} s). Part uploads alone: 2 x "
                  f"({st['stormSeconds']:g} + {c['partsPhase']}) = {st['partsBound']} s: "
                  f"**{'met' if st['partsMet'] else 'not met'}** ({s['partsPhase']} s).", "",
                  "The throttle's changes (seconds from the start, parts allowed in flight before -> after): "
                  + ", ".join(f"{t} s: {was} -> {now}" for t, was, now in s["throttled"]) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storm-size", default="2G")
    ap.add_argument("--storm", type=float, default=30.0, help="seconds of SlowDown")
    ap.add_argument("--delays", default="0,1", help="storm runs: seconds the proxy holds each part upload")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--sections", default="stalls,storm")
    a = ap.parse_args()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="edges-") as tmp:
        work = Path(tmp)
        data = work / "data"
        (data / BUCKET).mkdir(parents=True)
        with _rclone_server(data, (ACCESS_KEY, SECRET_KEY)) as server:
            rows = stalls(server.endpoint, work) if "stalls" in a.sections else []
            storms = [storm_run(server.endpoint, work, parse_size(a.storm_size), a.storm, float(d))
                      for d in a.delays.split(",")] if "storm" in a.sections else []
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "edges.json").write_text(json.dumps({"when": when, "stalls": rows, "storms": storms}, indent=1) + "\n")
    if rows and storms:
        (a.out / "edges.md").write_text(report(rows, storms, when))
        print((a.out / "edges.md").read_text())


if __name__ == "__main__":
    main()
