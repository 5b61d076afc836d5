"""One upload from many machines: which parts fall to this task, and the files the tasks share.

``upload --shard I/N`` sends only the parts whose number falls to shard I, round-robin
(part p belongs to shard (p - 1) mod N), so that every shard has parts until the end and a
shard's parts are spread over the whole file. The tasks share META on a shared file system;
S3's part list is the truth they all read, and there is no queue of our own::

    META                 one upload for all shards (written by the shard that creates the upload)
    META.create-claim    O_EXCL: the one shard allowed to create it (the others wait for META)
    META.complete-claim  O_EXCL: the one shard allowed to complete it (the others exit 0)
    META.lock            shared by the shards (flock LOCK_SH); a run without --shard takes it alone
    PARTS                the log of a run without --shard (a finisher)
    PARTS.shard-I        each shard's own log, so that no two processes append to one file

Every run reads all the logs. A claim file holds who made it (host, pid, time); a claim whose
process is gone (same host, pid not alive) is taken over; one from another host is left alone
(a run without --shard, which holds META.lock alone, removes it: no shard can be running).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3_multipart_upload.errors import BadInput

MAX_SHARDS = 10_000  # S3's most parts: more shards than parts would leave some with nothing
_SPEC = re.compile(r"^\s*(\d+|all|auto)\s*(?:/\s*(\d+))?\s*$")
_LOG = re.compile(r"\.shard-(\d+)$")


@dataclass(frozen=True)
class Shard:
    index: int  # 0 <= index < count
    count: int
    origin: str = "--shard"  # where index and count came from, for the log line and errors

    def owns(self, part_number: int) -> bool:
        return (part_number - 1) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(spec: str | None, shards: int | None, environ: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard I/N``, ``--shard auto`` (from the scheduler's variables) or ``--shard all`` (every part: the
    finisher, as a run without --shard). None when the run is not sharded."""
    if spec is None:
        if shards is not None:
            raise BadInput("--shards N goes with --shard auto (a Kubernetes Indexed Job sets no count)",
                           "give --shard auto --shards N, or --shard I/N")
        return None
    match = _SPEC.match(spec)
    if match is None:
        raise BadInput(f"--shard {spec!r} is not I/N, auto or all",
                       "give --shard 3/16 (shard 3 of 16, counted from 0), --shard auto in an array job, or "
                       "--shard all to finish whatever is left")
    what, count = match.group(1), match.group(2)
    if what == "all":
        return None
    if what == "auto":
        if count is not None:
            raise BadInput(f"--shard {spec!r}: auto takes the count from the scheduler", "give --shards N instead")
        return from_environment(os.environ if environ is None else environ, shards)
    if count is None:
        raise BadInput(f"--shard {spec!r} lacks the number of shards", f"give --shard {what}/N")
    if shards is not None:
        raise BadInput("--shards goes with --shard auto only", f"leave it out: --shard {spec} says the count")
    return _checked(int(what), int(count), "--shard")


def _checked(index: int, count: int, origin: str) -> Shard:
    if not 1 <= count <= MAX_SHARDS:
        raise BadInput(f"{origin}: {count} shards; the number of shards must be between 1 and {MAX_SHARDS:,}",
                       "give a count between 1 and 10,000 (an upload has at most 10,000 parts)")
    if not 0 <= index < count:
        raise BadInput(f"{origin}: shard {index} of {count}; shards are counted from 0 to {count - 1}",
                       "give an index from 0 to N-1")
    return Shard(index, count, origin)


def _int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadInput(f"--shard auto: {name}={value!r} is not a number",
                       "run inside the array job as the scheduler starts it, or give --shard I/N") from None


def from_environment(environ: Mapping[str, str], shards: int | None) -> Shard:
    """The shard of this array task: SLURM, then AWS Batch, then a Kubernetes Indexed Job."""
    task = _int(environ, "SLURM_ARRAY_TASK_ID")
    if task is not None:
        return _slurm(environ, task, shards)
    index = _int(environ, "AWS_BATCH_JOB_ARRAY_INDEX")
    if index is not None:
        size = _int(environ, "AWS_BATCH_JOB_ARRAY_SIZE")
        if size is not None and shards is not None and size != shards:
            raise BadInput(f"--shard auto: AWS_BATCH_JOB_ARRAY_SIZE is {size}, --shards says {shards}",
                           "leave out --shards (AWS Batch gives the size)")
        count = size if size is not None else shards
        if count is None:
            raise BadInput("--shard auto: AWS_BATCH_JOB_ARRAY_INDEX is set but not AWS_BATCH_JOB_ARRAY_SIZE",
                           "give --shards N, the array size")
        return _checked(index, count, f"--shard auto (AWS Batch array index {index} of {count})")
    index = _int(environ, "JOB_COMPLETION_INDEX")
    if index is not None:
        if shards is None:
            raise BadInput("--shard auto: JOB_COMPLETION_INDEX is set, and Kubernetes gives no count",
                           "give --shards N, the Job's completions (spec.completions)")
        return _checked(index, shards, f"--shard auto (Kubernetes completion index {index} of {shards})")
    raise BadInput("--shard auto: no array task variable is set (SLURM_ARRAY_TASK_ID, AWS_BATCH_JOB_ARRAY_INDEX, "
                   "JOB_COMPLETION_INDEX)", "run it as an array task, or give --shard I/N")


def _slurm(environ: Mapping[str, str], task: int, shards: int | None) -> Shard:
    if shards is not None:
        # A resubmission of some indices (--array=3,7 of a 0-15 array) cannot tell the original array: the
        # index is the shard, of the count given.
        return _checked(task, shards, f"--shard auto (SLURM array task {task}, --shards {shards})")
    low, high = _int(environ, "SLURM_ARRAY_TASK_MIN"), _int(environ, "SLURM_ARRAY_TASK_MAX")
    count, step = _int(environ, "SLURM_ARRAY_TASK_COUNT"), _int(environ, "SLURM_ARRAY_TASK_STEP")
    if low is None or high is None or count is None:
        raise BadInput("--shard auto: SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_MIN, _MAX and _COUNT",
                       "give --shard I/N, or --shard auto --shards N (the task id is then the shard)")
    if count < 1 or high < low or not low <= task <= high:
        raise BadInput(f"--shard auto: SLURM array task {task} is not within {low}-{high} ({count} tasks)",
                       "give --shard I/N")
    if step is None or step < 1:
        step = 1 if count == 1 else (high - low) // (count - 1)
    if step < 1 or (high - low) != step * (count - 1) or (task - low) % step:
        raise BadInput(f"--shard auto: the SLURM array's indices {low}-{high} ({count} tasks) are not evenly "
                       f"spaced, so task {task}'s place among them cannot be told",
                       "submit the array as a range (--array=0-15 or 1-31:2), or give --shard auto --shards N "
                       "with indices 0 to N-1")
    return _checked((task - low) // step, count,
                    f"--shard auto (SLURM array task {task} of {low}-{high}{f':{step}' if step > 1 else ''})")


# -- the files the shards share -------------------------------------------------------------------------


def log_of(parts_path: Path, shard: Shard | None) -> Path:
    """The parts log this run appends to."""
    return parts_path if shard is None else parts_path.with_name(f"{parts_path.name}.shard-{shard.index}")


def all_logs(parts_path: Path) -> list[Path]:
    """Every log of the upload: the finisher's and each shard's, in a stable order."""
    found = []
    with contextlib.suppress(OSError):
        prefix = parts_path.name + ".shard-"
        for path in parts_path.parent.iterdir():
            match = _LOG.search(path.name)
            if path.name.startswith(prefix) and match and path.name == prefix + match.group(1):
                found.append((int(match.group(1)), path))
    return [parts_path, *(path for _, path in sorted(found))]


def claim_path(meta_path: Path, what: str) -> Path:
    return meta_path.with_name(f"{meta_path.name}.{what}-claim")


@dataclass(frozen=True)
class Claim:
    path: Path
    holder: dict[str, Any]

    def describe(self) -> str:
        h = self.holder
        shard = f"shard {h['shard']} " if h.get("shard") is not None else ""
        return f"{shard}(host {h.get('host', '?')}, pid {h.get('pid', '?')}, since {h.get('at', '?')})"


def try_claim(path: Path, shard: Shard | None, take_over: bool = True, stale_after: float | None = None,
              **info: str) -> Claim | None:
    """Create the claim file, or None if another process holds it. O_CREAT|O_EXCL is atomic on local file
    systems and on NFS v3 and later; with ``take_over``, a claim left by a dead process on this host is taken
    over, and one older than ``stale_after`` seconds (by its file's mtime) whoever left it: a holder on another
    host (a requeued task), or one killed before it wrote who it is."""
    holder = {"host": socket.gethostname(), "pid": os.getpid(),
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "shard": str(shard) if shard else None,
              **info}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            held = read_claim(path)
            if held is None:
                continue  # released this instant
            if not take_over or not (_dead(held.holder) or _older(path, stale_after)):
                return None
            _take_over(path, held.holder)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(holder) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return Claim(path, holder)
    return None


def read_claim(path: Path) -> Claim | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return Claim(path, {})
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = {}  # being written this instant, or torn by a crash
    return Claim(path, doc if isinstance(doc, dict) else {})


def _older(path: Path, seconds: float | None) -> bool:
    if seconds is None:
        return False
    try:
        return time.time() - path.stat().st_mtime > seconds
    except OSError:
        return False


def _dead(holder: dict[str, Any]) -> bool:
    """True only when the holder's process is surely gone: on this host, and no such pid, or our own pid (a
    process asks only for claims it does not hold: its pid in a claim is a previous process's, as in a container
    restarted with the same hostname, a Kubernetes Indexed Job's retried pod, where the command is pid 1 again)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def release(claim: Claim) -> None:
    """Remove the claim if it is still this one: a process taken for dead (its pid was judged gone or reused)
    must not remove the claim of the process that took over."""
    held = read_claim(claim.path)
    if held is not None and held.holder == claim.holder:
        _remove(claim.path)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _take_over(path: Path, dead: dict[str, Any]) -> None:
    """Remove a dead process's claim, and only that one: moved aside first, and put back if another process
    claimed it in between (two takers on one host)."""
    aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.gone")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = read_claim(aside)
    if moved is not None and moved.holder != dead:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    with contextlib.suppress(OSError):
        os.unlink(aside)
