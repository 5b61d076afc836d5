"""Where this tool's CPU goes: a profile of one upload to a local `rclone serve s3`.

    .venv/bin/python bench/profile.py [--size 1G] [--threads 8] [--part-size 32M] [--runs 3]
                                      [--checksums MD5,CRC32] [--baseline DIR] [--out bench/results/profile.md]

Starts `rclone serve s3` on 127.0.0.1, writes a random test file and measures, with nothing else running:

1. CPU per GiB: ``--runs`` uploads under ``/usr/bin/time -v`` (median user + system seconds). With
   ``--baseline DIR`` (another checkout of this repository, e.g. ``git worktree add /tmp/before HEAD~1``),
   the same number of runs of that code, interleaved with these, for a before/after comparison.
2. Phases: one upload run in-process with exact per-thread CPU counters (``time.thread_time``) around
   the part checksum, the file read, the buffer allocation, urllib3's sending of the request (headers
   and body) and the whole part, so the shares do not depend on sampling.
3. A py-spy profile of one upload (``py-spy record --nonblocking -r 200 -f raw``; idle samples are left
   out), summed into categories by the innermost frame that names one, and py-spy-top-like totals.
4. Start-up: CPU seconds of ``--help``, of ``upload --dry-run`` and of a one-part (1 MiB) upload.

Writes the Markdown summary to ``--out`` and prints it. Needs Linux, /usr/bin/time and py-spy (bench extra).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (bench/run.py: the server, /usr/bin/time and the helpers)

MiB, GiB = bench.MiB, bench.GiB
CLI = str(bench.VENV_BIN / "s3-multipart-upload")

# py-spy categories: the innermost frame that matches one of these decides (checked leaf first).
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("part checksum (hashlib MD5/CRC32, checksums.compute)", ("checksums.py", "hashlib", "md5", "MD5", "crc32")),
    ("reading the file (os.pread)", ("_pread_into", "preadv", "_FileRange.read", "pread")),
    ("part buffer allocation (first use per thread: zero-fill, page faults)", ("Uploader._buffer",)),
    ("sending: socket sendall, http.client/urllib3 body loop", (
        "sendall", "HTTPConnection.send ", "chunk_readable", "PartBody.read", "PartStream.read", "ssl.py",
        "_send_output")),
    ("waiting: 100 Continue poll, response read, locks", (
        "wait_for_read", "poll_wait", "getresponse", "_read_status", "readinto", "readline", "Condition.wait",
        "Event.wait", "_wait_for_tstate_lock", "lock.acquire")),
    ("parts log: write and fsync per part", ("PartsLog.append",)),
    ("start-up: imports, botocore client creation", (
        "<frozen importlib", "_find_and_load", "ClientFactory._build", "Session.client", "create_client")),
    ("botocore: building, signing, parsing requests", ("botocore/",)),
    ("urllib3 connection pool", ("urllib3/",)),
    ("this tool's own Python (engine, parts log, progress)", ("s3_multipart_upload/",)),
    ("tenacity, click, rich", ("tenacity/", "click/", "rich/")),
    ("thread pool, threading", ("concurrent/futures", "threading.py")),
]
OTHER = "other (interpreter, frames py-spy could not read)"
STARTUP = next(name for name, _ in CATEGORIES if name.startswith("start-up"))


def short(frame: str) -> str:
    """'f (/long/path/pkg/mod.py:12)' -> 'f (pkg/mod.py)'."""
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r"\((?:[^()]*/)?([^/()]+/[^/()]+)\)$", r"(\1)", frame)


def classify(stack: list[str]) -> str:
    # Start-up work is recognised anywhere in the stack (an import calls everything else).
    if any("<frozen importlib" in f or "ClientFactory._build" in f for f in stack):
        return STARTUP
    for frame in reversed(stack):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return OTHER


def summarise_raw(path: Path) -> dict[str, Any]:
    """py-spy's raw (collapsed) output: 'frame;frame;... count' per line."""
    cats: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    n = 0
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        stack = [f.strip() for f in stack_text.split(";") if f.strip()]
        n += count
        cats[classify(stack)] += count
        funcs = [short(f) for f in stack]
        if funcs:
            own[funcs[-1]] += count
        for f in set(funcs):
            total[f] += count
    return {"samples": n, "categories": cats, "own": own, "total": total}


# ---------------------------------------------------------------------------------------------
# the in-process phase counters (run as: profile.py --phases-run -- upload ARGS)

PHASES = """
import collections, importlib, resource, sys, threading, time
t0 = time.process_time()
from s3_multipart_upload import checksums, main as cli
import urllib3.connection
imports = time.process_time() - t0
acc, calls, lock, local = collections.Counter(), collections.Counter(), threading.Lock(), threading.local()
def wrap(owner, name, label):
    # Exclusive thread CPU: a wrapped call inside another (the body read and hashed while urllib3 sends it)
    # counts for the inner label only. Missing names are skipped: --baseline may be an older engine.
    if isinstance(owner, str):  # "module:Class", resolved here so that a name an engine lacks is skipped
        module, _, attr = owner.partition(":")
        try:
            owner = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return
    orig = getattr(owner, name, None)
    if orig is None:
        return
    def timed(*a, **k):
        stack = local.__dict__.setdefault("stack", [])
        stack.append(0.0)
        s = time.thread_time()
        try:
            return orig(*a, **k)
        finally:
            d = time.thread_time() - s
            inner = stack.pop()
            if stack:
                stack[-1] += d
            with lock:
                acc[label] += d - inner; calls[label] += 1
    setattr(owner, name, timed)
class TimedHasher:
    def __init__(self, h):
        self._h = h
    def update(self, data):
        self._h.update(data)
    def digest(self):
        return self._h.digest()
wrap(TimedHasher, "update", "checksum")
orig_new_hasher = getattr(checksums, "new_hasher", None)
if orig_new_hasher is not None:
    import s3_multipart_upload.stream as stream_module
    stream_module.checksums.new_hasher = lambda algorithm: TimedHasher(orig_new_hasher(algorithm))
wrap(checksums, "compute", "checksum")  # older engines hash whole parts here
wrap("s3_multipart_upload.sources:_FileRange", "read", "read")
for cls in ("FileSource", "ChunkDirSource"):
    wrap("s3_multipart_upload.sources:" + cls, "read_into", "read")  # older engines
wrap("s3_multipart_upload.uploader:Uploader", "_buffer", "buffer")  # older engines
wrap(urllib3.connection.HTTPConnection, "request", "send")
wrap(urllib3.connection.HTTPConnection, "getresponse", "response")
wrap("s3_multipart_upload.sender:Sender", "send_part", "part")
wrap("s3_multipart_upload.uploader:Uploader", "_send_part", "part")  # older engines
sys.argv = ["s3-multipart-upload", *sys.argv[1:]]
rc = 0
try:
    cli.main()
except SystemExit as e:
    rc = e.code or 0
ru = resource.getrusage(resource.RUSAGE_SELF)
import json
print("PHASES " + json.dumps({"process": ru.ru_utime + ru.ru_stime, "user": ru.ru_utime, "sys": ru.ru_stime,
                              "imports": imports, "phases": acc, "calls": calls}), file=sys.stderr)
sys.exit(rc)
"""


# ---------------------------------------------------------------------------------------------


class Variant:
    """One code and checksum to measure: this checkout, or ``--baseline`` (another checkout on PYTHONPATH)."""

    def __init__(self, label: str, code: Path | None, checksum: str) -> None:
        self.label, self.code, self.checksum = label, code, checksum
        self.commit = git_commit(code or bench.REPO)


def git_commit(folder: Path) -> str:
    """'abc1234 subject' of the checkout in ``folder`` (and '+ uncommitted changes' if its engine differs), or ''."""
    try:
        head = bench.run_quiet(["git", "-C", str(folder), "log", "-1", "--format=%h %s"]).strip()
        dirty = bench.run_quiet(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no", "--",
                                 "s3_multipart_upload"]).strip()
    except bench.BenchError:
        return ""
    return head + (" + uncommitted changes" if dirty else "")


class Profiler:
    def __init__(self, args: argparse.Namespace, work: Path, server: bench.Server, key: str, secret: str) -> None:
        self.args, self.work, self.server = args, work, server
        self.file = work / "input.bin"
        self.small = work / "small.bin"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHONPATH"))}
        self.env.update({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
                         "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null",
                         "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
        self.logs = work / "logs"
        self.logs.mkdir(exist_ok=True)

    def upload_argv(self, v: Variant, file: Path, extra: list[str] | None = None) -> tuple[list[str], Path]:
        key = f"p-{secrets.token_hex(4)}"
        argv = ["upload", "--endpoint-url", self.server.endpoint, "-b", bench.BUCKET, "-k", key, "-f", str(file),
                "-m", str(self.work / f"{key}.meta.json"), "-a", str(self.work / f"{key}.parts.jsonl"), "-q",
                "-t", str(self.args.threads), "-s", str(self.args.part_size), "--checksum", v.checksum]
        return argv + (extra or []), self.server.data / bench.BUCKET / key

    def warm(self) -> None:
        """Read the file into the page cache again: this machine's page cache loses pages over time."""
        with open(self.file, "rb") as f:
            subprocess.run(["cat"], stdin=f, stdout=subprocess.DEVNULL, check=True, timeout=300)

    def env_for(self, v: Variant) -> dict[str, str]:
        env = dict(self.env)
        if v.code is not None:
            env["PYTHONPATH"] = str(v.code)
        return env

    def timed(self, prefix: list[str], v: Variant, argv: list[str], stored: Path, name: str) -> bench.Measured:
        m = bench.measured([*prefix, *argv], self.env_for(v), 600, self.logs / f"{name}.log")
        stored.unlink(missing_ok=True)
        bench.sync_disk()
        if m.rc != 0:
            raise bench.BenchError(f"{name} exited {m.rc}: {Path(m.log).read_text(errors='replace')[-500:]}")
        return m

    def rounds(self, variants: list[Variant]) -> list[tuple[int, Variant]]:
        """``--runs`` rounds, the variants' order rotated each round."""
        out = []
        for r in range(self.args.runs):
            k = r % len(variants)
            out += [(r, v) for v in variants[k:] + variants[:k]]
        return out

    # -- 1. CPU per GiB

    def cpu(self, variants: list[Variant]) -> dict[str, Any]:
        got: dict[str, list[bench.Measured]] = {v.label: [] for v in variants}
        for r, v in self.rounds(variants):
            self.warm()
            argv, stored = self.upload_argv(v, self.file)
            m = self.timed([sys.executable, CLI], v, argv, stored, f"cpu-{r}-{secrets.token_hex(2)}")
            bench.log(f"  {v.label:<24} r{r + 1}: {m.wall_s:5.2f} s wall, user {m.user_s:.2f} + sys {m.sys_s:.2f} "
                      f"= {m.cpu_s:.2f} s CPU, {m.max_rss_mib:.0f} MiB")
            got[v.label].append(m)
        gib = self.args.size / GiB
        out = {}
        for label, ms in got.items():
            wall = statistics.median(m.wall_s for m in ms)
            out[label] = {
                "runs": [round(m.cpu_s / gib, 2) for m in ms],
                "cpu_s_per_gib": statistics.median(m.cpu_s for m in ms) / gib,
                "user_s_per_gib": statistics.median(m.user_s for m in ms) / gib,
                "sys_s_per_gib": statistics.median(m.sys_s for m in ms) / gib,
                "wall_s": wall, "mib_s": self.args.size / MiB / wall,
                "max_rss_mib": statistics.median(m.max_rss_mib for m in ms),
                "minor_faults": statistics.median(m.minor_faults for m in ms),
            }
        return out

    # -- 2. phases

    def phases(self, variants: list[Variant]) -> dict[str, Any]:
        script = self.work / "phases.py"
        script.write_text(PHASES)
        got: dict[str, list[dict[str, Any]]] = {v.label: [] for v in variants}
        for r, v in self.rounds(variants):
            self.warm()
            argv, stored = self.upload_argv(v, self.file)
            m = self.timed([sys.executable, str(script)], v, argv, stored, f"phases-{r}-{secrets.token_hex(2)}")
            found = re.search(r"^PHASES (.*)$", Path(m.log).read_text(errors="replace"), re.M)
            if not found:
                raise bench.BenchError(f"phase counters missing from {m.log}")
            got[v.label].append(json.loads(found.group(1)))
        out = {}
        for label, runs in got.items():
            # each number is its own median over the runs
            keys = {k for x in runs for k in x["phases"]}
            med = {k: statistics.median(x["phases"].get(k, 0.0) for x in runs) for k in keys}
            out[label] = {"phases": med, "process_cpu_runs": [round(x["process"], 2) for x in runs],
                          **{k: statistics.median(x[k] for x in runs) for k in ("process", "user", "sys", "imports")}}
            bench.log(f"phases {label}: " + ", ".join(f"{k} {x:.2f}" for k, x in med.items()))
        return out

    # -- 3. py-spy

    def pyspy(self, variants: list[Variant]) -> dict[str, Any]:
        spy = shutil.which("py-spy", path=str(bench.VENV_BIN)) or shutil.which("py-spy")
        if not spy:
            raise bench.BenchError("py-spy not found: pip install py-spy (it is in the bench extra)")
        flags = ["--native"] if self.args.native else ["--nonblocking"]
        out = {}
        for i, v in enumerate(variants):
            self.warm()
            raw = self.work / f"pyspy-{i}.txt"
            argv, stored = self.upload_argv(v, self.file)
            prefix = [spy, "record", *flags, "-r", str(self.args.rate), "-f", "raw", "-o", str(raw), "--",
                      sys.executable, CLI]
            m = self.timed(prefix, v, argv, stored, f"pyspy-{i}")
            if self.args.keep_raw:
                self.args.keep_raw.mkdir(parents=True, exist_ok=True)
                shutil.copy(raw, self.args.keep_raw / f"pyspy-{re.sub(r'[^A-Za-z0-9]+', '-', v.label)}.txt")
            res = summarise_raw(raw)
            res["wall_s"] = m.wall_s
            out[v.label] = res
        return {"flags": " ".join([*flags, "-r", str(self.args.rate)]), "variants": out}

    # -- 4. start-up

    def startup(self, v: Variant, reps: int = 3) -> dict[str, Any]:
        with open(self.small, "wb") as f:
            f.write(os.urandom(MiB))
        cases = {
            "help": lambda: (["--help"], None),
            "dry_run": lambda: self.upload_argv(v, self.file, ["--dry-run"]),
            "one_part": lambda: self.upload_argv(v, self.small),
        }
        res: dict[str, Any] = {}
        for name, make in cases.items():
            ms = []
            for r in range(reps):
                argv, stored = make()
                m = bench.measured([sys.executable, CLI, *argv], self.env_for(v), 120,
                                   self.logs / f"startup-{name}-{r}.log")
                if stored is not None:
                    stored.unlink(missing_ok=True)
                if m.rc != 0:
                    raise bench.BenchError(f"{name} exited {m.rc} (log {m.log})")
                ms.append(m)
            res[name] = {"cpu_s": statistics.median(m.cpu_s for m in ms),
                         "user_s": statistics.median(m.user_s for m in ms),
                         "sys_s": statistics.median(m.sys_s for m in ms),
                         "wall_s": statistics.median(m.wall_s for m in ms),
                         "max_rss_mib": statistics.median(m.max_rss_mib for m in ms)}
        bench.log("start-up: " + ", ".join(f"{k} {x['cpu_s']:.2f} s CPU" for k, x in res.items()))
        return res


# ---------------------------------------------------------------------------------------------


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "-"


PHASE_ROWS = [
    ("part checksum (hashlib, awscrt)", lambda m: m["phases"].get("checksum", 0.0)),
    ("reading the file (os.pread)", lambda m: m["phases"].get("read", 0.0)),
    ("part buffer allocation (once per thread: zero-fill, page faults)", lambda m: m["phases"].get("buffer", 0.0)),
    ("sending: urllib3 request, headers and body (socket sendall)", lambda m: m["phases"].get("send", 0.0)),
    ("reading the responses (http.client)", lambda m: m["phases"].get("response", 0.0)),
    ("rest of each part: botocore request building, signing, parsing; retries wrapper; parts log",
     lambda m: m["phases"].get("part", 0.0)),  # the counters are exclusive: what the others did not take
    ("imports (after interpreter start)", lambda m: m["imports"]),
    ("main thread: client creation, create/complete, progress, exit",
     lambda m: m["process"] - sum(m["phases"].values()) - m["imports"]),
]


def summary(r: dict[str, Any], args: argparse.Namespace, variants: list[Variant]) -> list[str]:
    """A few sentences computed from the phase counters and the CPU runs."""
    ph, cpu = r.get("phases") or {}, r.get("cpu") or {}
    gib = args.size / GiB
    ours = next((v for v in variants if v.code is None and v.checksum == "MD5"), None)
    if ours is None or ours.label not in ph:
        return []
    m = ph[ours.label]
    p = m["phases"]
    proc = m["process"]
    fixed = proc - sum(p.values())  # outside the part threads: imports, client creation, completion
    around = p.get("part", 0.0)  # the counters are exclusive: what checksum, read, send, response did not take
    lines = ["## Summary", "",
             f"- MD5 (hashlib, OpenSSL) takes {p.get('checksum', 0) / gib:.2f} of this tool's "
             f"{proc / gib:.2f} CPU s per GiB ({pct(p.get('checksum', 0), proc)}). The rest: reading the file "
             f"{p.get('read', 0) / gib:.2f}, sending {p.get('send', 0) / gib:.2f}, botocore and the engine around "
             f"each part {around / gib:.2f}. Outside the part threads, once per run: {fixed:.2f} s (imports "
             f"{m['imports']:.2f} s, client creation, create and complete, exit)."]
    crc = next((v for v in variants if v.code is None and v.checksum == "CRC32"), None)
    if crc is not None and crc.label in ph:
        c = ph[crc.label]
        lines.append(f"- With `--checksum CRC32` the process takes {c['process'] / gib:.2f} CPU s per GiB (CRC32 "
                     f"itself {c['phases'].get('checksum', 0) / gib:.2f}): the MD5 pass is the difference.")
    base = next((v for v in variants if v.code is not None), None)
    if base is not None and base.label in cpu and ours.label in cpu:
        lines.append(f"- Against the baseline ({base.commit.split(' ')[0] if base.commit else base.code}): "
                     f"{cpu[base.label]['cpu_s_per_gib']:.2f} -> {cpu[ours.label]['cpu_s_per_gib']:.2f} CPU s per GiB "
                     f"(median of {args.runs} interleaved runs under /usr/bin/time).")
    return [*lines, ""]


def markdown(r: dict[str, Any], args: argparse.Namespace, variants: list[Variant]) -> str:
    size_h, part_h = bench.human(args.size), bench.human(args.part_size)
    gib = args.size / GiB
    labels = [v.label for v in variants]
    out = [f"# Where the CPU goes: one {size_h} upload at -t {args.threads} -s {part_h}", "",
           f"{r['date']}; {r['machine']['cores']} cores ({r['machine']['cpu']}), Python {r['machine']['python']}; "
           f"this tool {r['versions'][bench.OURS]}, botocore {r['versions']['botocore']}, rclone "
           f"{r['versions']['rclone']}. Server: `rclone serve s3` (streaming mode) on 127.0.0.1; the file is read "
           "into the page cache before every run. Reproduce: `" + r["command"] + "` (bench/profile.py).", "",
           *summary(r, args, variants),
           "Variants: " + "; ".join(f"**{v.label}**: " + (f"the checkout in `{v.code}`" if v.code else "this checkout")
                                    + (f" ({v.commit})" if v.commit else "") + f", `--checksum {v.checksum}`"
                                    for v in variants) + ".", ""]
    cpu = r.get("cpu")
    if cpu:
        out += [f"## CPU seconds per GiB (user + system, `/usr/bin/time -v`, {args.runs} runs, interleaved)", "",
                "| variant | runs (CPU s/GiB) | median CPU s/GiB | user | system | wall s | MiB/s | peak RSS MiB | "
                "minor faults |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for label, c in cpu.items():
            out.append(f"| {label} | {', '.join(f'{x:.2f}' for x in c['runs'])} | **{c['cpu_s_per_gib']:.2f}** | "
                       f"{c['user_s_per_gib']:.2f} | {c['sys_s_per_gib']:.2f} | {c['wall_s']:.2f} | {c['mib_s']:.0f} | "
                       f"{c['max_rss_mib']:.0f} | {c['minor_faults']:.0f} |")
        out += [""]
    ph = r.get("phases")
    if ph:
        out += ["## Phases: exact thread CPU of one upload", "",
                "Each upload runs in-process with `time.thread_time()` counters around each phase; each number is "
                f"its median over {args.runs} runs (so the rows need not add up exactly). CPU seconds per GiB of "
                "file, and share of the process's CPU. The part threads' rows are measured; the last two are the "
                "rest of the process.", "",
                "| phase | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for name, fn in PHASE_ROWS:
            out.append(f"| {name} | " + " | ".join(f"{fn(ph[la]) / gib:.2f} ({pct(fn(ph[la]), ph[la]['process'])})"
                                                  for la in labels) + " |")
        out.append("| **process** (user + system) | " + " | ".join(
            f"**{ph[la]['process'] / gib:.2f}** ({ph[la]['user'] / gib:.2f} + {ph[la]['sys'] / gib:.2f})"
            for la in labels) + " |")
        out += [""]
    spy = r.get("pyspy")
    if spy:
        vs = spy["variants"]
        out += [f"## py-spy: samples of threads on CPU (`py-spy record {spy['flags']} -f raw`)", "",
                "Each sample goes to the category of its innermost frame that names one (idle threads are not "
                "sampled). py-spy shares the two cores with the upload, so wall times under it are not upload "
                "speeds; the shares are of the samples. Without `--native` py-spy does not stop the process for "
                "each sample; with it (C frames too, `--native`), it stops all nine threads 200 times a second, "
                "which on two cores stretched a 6 s upload to 13 s and counted threads waiting in poll() as "
                "running. Samples: " + ", ".join(
                    f"{la} {vs[la]['samples']} ({vs[la]['wall_s']:.1f} s wall)" for la in labels) + ".", "",
                "| category | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        names = [n for n, _ in CATEGORIES] + [OTHER]
        for name in sorted(names, key=lambda n: -vs[labels[0]]["categories"].get(n, 0)):
            if any(vs[la]["categories"].get(name) for la in labels):
                out.append(f"| {name} | " + " | ".join(
                    pct(vs[la]["categories"].get(name, 0), vs[la]["samples"]) for la in labels) + " |")
        for la in labels:
            n = vs[la]["samples"]
            out += ["", f"Top functions, {la} (like `py-spy top`): own = the innermost frame, total = anywhere in "
                    "the stack.", "", "| function | own | total |", "|---|---:|---:|"]
            for f, c in vs[la]["own"].most_common(10):
                out.append(f"| `{f}` | {pct(c, n)} | {pct(vs[la]['total'][f], n)} |")
        out += [""]
    st = r.get("startup")
    if st:
        out += [f"## Start-up ({st['variant']}; median of 3, CPU seconds user + system)", "",
                "| command | CPU s | user | system | wall s | peak RSS MiB |", "|---|---:|---:|---:|---:|---:|"]
        names_st = {"help": "`s3-multipart-upload --help`", "dry_run": f"`upload --dry-run` ({size_h} file)",
                    "one_part": "`upload` of a 1 MiB file (one PutObject)"}
        for k, x in st.items():
            if k == "variant":
                continue
            out.append(f"| {names_st[k]} | {x['cpu_s']:.2f} | {x['user_s']:.2f} | {x['sys_s']:.2f} | "
                       f"{x['wall_s']:.2f} | {x['max_rss_mib']:.0f} |")
        out += [""]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=bench.parse_size, default=GiB)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--part-size", type=bench.parse_size, default=32 * MiB)
    ap.add_argument("--checksums", default="MD5",
                    help="comma-separated: each is a variant of this checkout (default MD5; e.g. MD5,CRC32)")
    ap.add_argument("--baseline", type=Path,
                    help="another checkout to compare with, at the first checksum (its folder goes on PYTHONPATH)")
    ap.add_argument("--runs", type=int, default=3, help="runs of the CPU measurement and of the phase counters")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    ap.add_argument("--native", action="store_true",
                    help="py-spy --native (C frames too; pauses the process for every sample: far heavier)")
    ap.add_argument("--sections", default="cpu,phases,pyspy,startup")
    ap.add_argument("--keep-raw", type=Path, help="also save py-spy's raw output in this folder")
    ap.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--out", type=Path, default=bench.RESULTS / "profile.md",
                    help="the Markdown summary; the numbers go beside it as .json")
    ap.add_argument("--report-only", action="store_true", help="measure nothing: rewrite --out from its .json")
    args = ap.parse_args()
    if args.report_only:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        for key in ("size", "threads", "part_size", "runs", "rate", "native", "checksums"):
            setattr(args, key, saved["args"][key])
        for res in ((saved.get("pyspy") or {}).get("variants") or {}).values():
            for k in ("categories", "own", "total"):
                res[k] = collections.Counter(res[k])
        variants = [Variant(v["label"], Path(v["code"]) if v["code"] else None, v["checksum"])
                    for v in saved["variants"]]
        for v, d in zip(variants, saved["variants"], strict=True):
            v.commit = d["commit"]
        args.out.write_text(markdown(saved, args, variants))
        bench.log(f"rewrote {args.out} from {args.out.with_suffix('.json')}")
        return 0
    sections = [s for s in args.sections.split(",") if s]
    checksums = [c.strip().upper() for c in args.checksums.split(",") if c.strip()]
    if not checksums or any(c not in ("MD5", "CRC32", "SHA256") for c in checksums):
        ap.error("--checksums takes MD5, CRC32, SHA256")
    variants = [Variant(f"this checkout, {c}" if args.baseline or len(checksums) > 1 else "this checkout", None, c)
                for c in checksums]
    if args.baseline:
        if not (args.baseline / "s3_multipart_upload").is_dir():
            ap.error(f"--baseline {args.baseline} holds no s3_multipart_upload folder")
        variants.insert(0, Variant(f"baseline, {checksums[0]}", args.baseline.resolve(), checksums[0]))
    work = Path(tempfile.mkdtemp(prefix="s3mpu-profile-", dir=args.tmp))
    key, secret = "prof" + secrets.token_hex(4), secrets.token_hex(16)
    r: dict[str, Any] = {"date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                         "command": " ".join([".venv/bin/python", "bench/profile.py", *sys.argv[1:]]),
                         "machine": bench.machine_info()}
    try:
        with bench.rclone_server("profile", work / "s3data", key, secret, [], work) as srv:
            p = Profiler(args, work, srv, key, secret)
            r["versions"] = {bench.OURS: importlib.metadata.version(bench.OURS),
                             "botocore": importlib.metadata.version("botocore"),
                             "rclone": bench.run_quiet([str(bench.VENV_BIN / "rclone"), "version"]).split()[1]}
            bench.log(f"writing {bench.human(args.size)} to {p.file}")
            with open(p.file, "wb") as f:
                for _ in range(args.size // (4 * MiB)):
                    f.write(os.urandom(4 * MiB))
                f.write(os.urandom(args.size % (4 * MiB)))
            if "cpu" in sections:
                r["cpu"] = p.cpu(variants)
            if "phases" in sections:
                r["phases"] = p.phases(variants)
            if "pyspy" in sections:
                r["pyspy"] = p.pyspy(variants)
            if "startup" in sections:
                ours = next(v for v in variants if v.code is None)
                r["startup"] = {"variant": ours.label, **p.startup(ours)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = markdown(r, args, variants)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    r["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    r["variants"] = [{"label": v.label, "code": str(v.code) if v.code else None, "checksum": v.checksum,
                      "commit": v.commit} for v in variants]
    for res in ((r.get("pyspy") or {}).get("variants") or {}).values():  # keep the functions the report shows
        res["own"] = collections.Counter(dict(res["own"].most_common(30)))
        res["total"] = {f: res["total"][f] for f in res["own"]}
    args.out.with_suffix(".json").write_text(json.dumps(r, indent=1))
    print(text)
    bench.log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
