"""What the user sees while an upload runs, behind one small interface.

- ``BarProgress``: a rich progress bar on stderr, for terminals.
- ``LogProgress``: plain log lines for batch jobs, in the historical form
  ``[2023-12-24 17:10:30,688 INFO] Done uploading 1 - <etag>. Completed in 11 seconds. (progress.py:80)``,
  plus a summary line every 30 seconds.
- ``NullProgress``: nothing (``--quiet``, tests).
- ``CallbackProgress``: a ``ProgressEvent`` to a function of the caller's (the Python API's ``progress=``).

Only bytes the server has acknowledged are counted.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from s3_multipart_upload.plan import human

log = logging.getLogger("s3_multipart_upload")

LOG_FORMAT = "[%(asctime)s %(levelname)s] %(message)s (%(filename)s:%(lineno)d)"


class Reporter(Protocol):
    """What an upload tells its display, from any thread: ``started`` once the parts are known (with what earlier
    runs already did; the totals are None for a stream, whose length is known only at its end), ``part_done`` as
    the server acknowledges each part, ``retry`` and ``throttled`` as they happen, ``close`` at the end however it
    ended."""

    def started(self, total_bytes: int | None, total_parts: int | None, done_bytes: int, done_parts: int) -> None: ...

    def part_done(self, number: int, etag: str, size: int, seconds: float) -> None: ...

    def retry(self, what: str, attempt: int, error: str, wait: float) -> None: ...

    def throttled(self, in_flight: int, was: int) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Shows nothing; the base of the others, which override what they show."""

    def started(self, total_bytes: int | None, total_parts: int | None, done_bytes: int, done_parts: int) -> None:
        pass

    def part_done(self, number: int, etag: str, size: int, seconds: float) -> None:
        pass

    def part_held(self, number: int, etag: str, size: int, seconds: float) -> None:
        """A stream's part the store already held with these bytes (a rerun): done, not sent. Optional in a
        Reporter of the caller's; without it, ``part_done`` is told."""
        self.part_done(number, etag, size, seconds)

    def retry(self, what: str, attempt: int, error: str, wait: float) -> None:
        pass

    def throttled(self, in_flight: int, was: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class ProgressEvent:
    """Where an upload stands, as ``progress=`` callbacks receive it.

    ``kind`` is ``started`` (once, with what earlier runs did), ``part_done`` (``part`` and its ``part_bytes``
    acknowledged by the server), ``part_held`` (a stream's rerun: the server already held the part with these bytes;
    not sent), ``retry`` (``message`` says what failed) or ``throttled`` (the store said SlowDown;
    ``message`` says how many parts go at once now). ``bytes_done`` counts acknowledged bytes only, earlier runs'
    included, so it reaches ``bytes_total`` when every part is held. ``key`` names the object, for ``upload_many``.
    """

    kind: str
    bytes_done: int
    bytes_total: int | None  # None: not known (a stream, before its end; ``expected_size`` if given)
    parts_done: int
    parts_total: int | None
    part: int | None = None
    part_bytes: int = 0
    message: str | None = None
    key: str | None = None


class CallbackProgress(NullProgress):
    """Calls ``callback`` with a ProgressEvent for every report; calls are serialized (parts finish on many
    threads), so the callback needs no lock of its own, and should return quickly."""

    def __init__(self, callback: Callable[[ProgressEvent], None], key: str | None = None) -> None:
        self._callback = callback
        self._key = key
        self._lock = threading.Lock()
        self._bytes = self._parts = 0
        self._total_bytes: int | None = 0
        self._total_parts: int | None = 0

    def _emit(self, kind: str, **fields: Any) -> None:
        self._callback(ProgressEvent(kind, self._bytes, self._total_bytes, self._parts, self._total_parts,
                                     key=self._key, **fields))

    def started(self, total_bytes: int | None, total_parts: int | None, done_bytes: int, done_parts: int) -> None:
        with self._lock:
            self._total_bytes, self._total_parts = total_bytes, total_parts
            self._bytes, self._parts = done_bytes, done_parts
            self._emit("started")

    def part_done(self, number: int, etag: str, size: int, seconds: float) -> None:
        with self._lock:
            self._bytes += size
            self._parts += 1
            self._emit("part_done", part=number, part_bytes=size)

    def part_held(self, number: int, etag: str, size: int, seconds: float) -> None:
        with self._lock:
            self._bytes += size
            self._parts += 1
            self._emit("part_held", part=number, part_bytes=size)

    def retry(self, what: str, attempt: int, error: str, wait: float) -> None:
        with self._lock:
            self._emit("retry", message=f"{what} failed (attempt {attempt}): {error}; retrying in {wait:.1f} s")

    def throttled(self, in_flight: int, was: int) -> None:
        with self._lock:
            self._emit("throttled", message=f"{in_flight} parts at once (was {was})")


class LogProgress(NullProgress):
    """One log line per finished part, and a summary every ``interval`` seconds."""

    def __init__(self, interval: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._done_bytes = self._done_parts = self._sent_bytes = 0
        self._total_bytes: int | None = 0
        self._total_parts: int | None = 0
        self._start = self._last_summary = clock()

    def started(self, total_bytes: int | None, total_parts: int | None, done_bytes: int, done_parts: int) -> None:
        with self._lock:
            self._total_bytes, self._total_parts = total_bytes, total_parts
            self._done_bytes, self._done_parts = done_bytes, done_parts
            self._start = self._last_summary = self._clock()

    def part_held(self, number: int, etag: str, size: int, seconds: float) -> None:
        log.info("Part %d - %s: the server holds these bytes already; not sent.", number, etag)
        with self._lock:
            self._done_bytes += size
            self._done_parts += 1

    def part_done(self, number: int, etag: str, size: int, seconds: float) -> None:
        log.info("Done uploading %d - %s. Completed in %d seconds.", number, etag, round(seconds))
        with self._lock:
            self._done_bytes += size
            self._done_parts += 1
            self._sent_bytes += size
            now = self._clock()
            if now - self._last_summary < self._interval:
                return
            self._last_summary = now
            elapsed = max(now - self._start, 1e-9)
            rate = self._sent_bytes / elapsed
            parts = f"{self._done_parts}" + ("" if self._total_parts is None else f"/{self._total_parts}")
            of = "" if self._total_bytes is None else \
                f" of {human(self._total_bytes)} ({100 * self._done_bytes / max(self._total_bytes, 1):.1f} %)"
            summary = f"Progress: {parts} parts, {human(self._done_bytes)}{of}, {rate / 2**20:.1f} MiB/s"
        log.info("%s.", summary)


class SpeedColumn(ProgressColumn):
    """Speed in MiB/s (rich's own column speaks MB/s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- MiB/s" if speed is None else f"{speed / 2**20:.1f} MiB/s", style="progress.data.speed")


class PercentColumn(ProgressColumn):
    """The percent done; nothing for a stream of unknown length."""

    def render(self, task: Task) -> Text:
        return Text("" if task.total is None else f"{task.percentage:>5.1f}%", style="progress.percentage")


class BarProgress(NullProgress):
    """A rich bar on stderr: bytes, percent, MiB/s, ETA, parts done/total."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            PercentColumn(),
            DownloadColumn(binary_units=True),
            SpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("parts {task.fields[parts]}"),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._lock = threading.Lock()
        self._done_parts = 0
        self._total_parts: int | None = 0

    def started(self, total_bytes: int | None, total_parts: int | None, done_bytes: int, done_parts: int) -> None:
        self._done_parts, self._total_parts = done_parts, total_parts
        self._task = self._progress.add_task("upload", total=total_bytes, completed=done_bytes,
                                             parts=self._parts_text())
        self._progress.start()

    def part_done(self, number: int, etag: str, size: int, seconds: float) -> None:
        if self._task is None:
            return
        with self._lock:
            self._done_parts += 1
            parts = self._parts_text()
        self._progress.update(self._task, advance=size, parts=parts)

    def _parts_text(self) -> str:
        return f"{self._done_parts}" + ("" if self._total_parts is None else f"/{self._total_parts}")

    def close(self) -> None:
        self._progress.stop()


class ConsoleHandler(logging.Handler):
    """Log records printed through the rich console, so they appear above a live bar."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            level = record.levelno
            style = "red" if level >= logging.ERROR else "yellow" if level >= logging.WARNING else None
            self._console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class JsonProgress(NullProgress):
    """JSON Lines events on stdout for scripts: started, part_done, retry, throttled, then the CLI's
    completed / paused / error and a final summary. Nothing else is written to stdout."""

    def __init__(self, stream: TextIO, inner: Reporter, clock: Callable[[], float] = time.time) -> None:
        self._stream = stream
        self._inner = inner  # the human display on stderr, if any
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False

    def event(self, name: str, **fields: Any) -> None:
        stamp = dt.datetime.fromtimestamp(self._clock(), dt.UTC).isoformat(timespec="milliseconds")
        line = json.dumps({"event": name, "time": stamp.replace("+00:00", "Z"), **fields})
        with self._lock:
            if self._closed:
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except BrokenPipeError:
                # The reader went away (`| head`): the upload goes on, its events go nowhere.
                self._closed = True
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
                os.close(devnull)

    def started(self, total_bytes: int | None, total_parts: int | None, done_bytes: int, done_parts: int) -> None:
        self._inner.started(total_bytes, total_parts, done_bytes, done_parts)
        self.event("started", totalBytes=total_bytes, totalParts=total_parts, doneBytes=done_bytes,
                   doneParts=done_parts)

    def part_done(self, number: int, etag: str, size: int, seconds: float) -> None:
        self._inner.part_done(number, etag, size, seconds)
        self.event("part_done", partNumber=number, eTag=etag, size=size, seconds=round(seconds, 3))

    def part_held(self, number: int, etag: str, size: int, seconds: float) -> None:
        getattr(self._inner, "part_held", self._inner.part_done)(number, etag, size, seconds)
        self.event("part_held", partNumber=number, eTag=etag, size=size)

    def retry(self, what: str, attempt: int, error: str, wait: float) -> None:
        self._inner.retry(what, attempt, error, wait)
        self.event("retry", request=what, attempt=attempt, error=error, wait=round(wait, 3))

    def throttled(self, in_flight: int, was: int) -> None:
        self._inner.throttled(in_flight, was)
        self.event("throttled", inFlight=in_flight, was=was)

    def close(self) -> None:
        self._inner.close()
