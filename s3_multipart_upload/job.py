"""What every phase of a run shares: the request, S3 calls with their retries, the stop, the reporter, the
throttle, and the one place that turns a failure retries did not fix into the error the run stops with.

The phases (``run_plan`` -> reconcile in ``uploader`` -> ``sender`` -> ``completion``) each take a Job and
hand the next one a value; none keeps state for another on the Job.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from s3_multipart_upload.bandwidth import Bandwidth
from s3_multipart_upload.errors import IntegrityError, UploadError
from s3_multipart_upload.progress import NullProgress, Reporter
from s3_multipart_upload.properties import ObjectProperties
from s3_multipart_upload.s3 import ClientFactory, Requester, RetryPolicy, describe, is_throttling, translate
from s3_multipart_upload.shard import Shard, log_of
from s3_multipart_upload.sources import Source

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class UploadRequest:
    bucket: str
    key: str
    source: Source
    meta_path: Path
    parts_path: Path
    threads: int = 8
    split_size: int | None = None
    checksum: str = "MD5"  # what a new upload uses (``checksums.choose``); a resumed one keeps META's
    checksum_why: str = "as asked (--checksum)"
    # --checksum auto on a store not known to verify CRC64NVME: a new multipart upload asks it (Uploader._probe)
    checksum_probe: bool = False
    content_md5: bool = False  # MD5 as Content-MD5 from the first part (hash, then send), not by ETag comparison
    restart: bool = False
    upload_id: str | None = None  # adopt this multipart upload (META was lost)
    upload_is_new: bool = False  # ``upload_id`` was created just now (by a controller): it holds no part to list
    no_overwrite: bool = False  # complete only if no object exists at the key
    skip_identical: bool = False  # a new upload whose key already holds these bytes (size, MD5) is recorded as done
    meta_extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # recorded in META; a rerun must match
    shard: Shard | None = None  # --shard I/N: send only this shard's parts; complete only if every part is held
    properties: ObjectProperties = dataclasses.field(default_factory=ObjectProperties)  # the object's; in META
    bandwidth: Bandwidth | None = None  # --max-bandwidth: one bucket for the whole command (every file of it)
    max_parts: int = 10_000  # a store's limit on the parts of an upload (--max-parts; S3's is 10,000)
    equal_parts: bool = False  # the store needs parts of one size but the last (--equal-parts: R2)

    @property
    def log_path(self) -> Path:
        """The parts log this run appends to (each shard has its own; every log is read)."""
        return log_of(self.parts_path, self.shard)

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def auto_checksum(self) -> bool:
        return self.checksum_why.startswith("auto")


@dataclass
class UploadResult:
    """What an upload or copy did: the object (size, parts, ETag, checksum) and what this run sent."""

    bucket: str
    key: str
    upload_id: str | None
    size: int
    parts_total: int
    checksum: str | None = None  # the algorithm that proved the parts
    etag: str | None = None
    already_complete: bool = False
    parts_logged: int = 0  # found done in the log and on the server
    parts_adopted: int = 0  # held by the server, missing from the log, verified against the local bytes
    parts_sent: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    full_checksum: str | None = None  # the whole object's checksum (base64) where the algorithm has that form
    parts_left: int = 0  # --shard: parts this run left to other shards (not held by the server when it looked)
    completed_by: str | None = None  # --shard: every part was held and this other shard claimed the completion
    shard: str | None = None  # --shard: the shard this run sent, I/N
    properties: dict[str, Any] = dataclasses.field(default_factory=dict)  # the object's, as asked (no secrets)


class ObjectMissing(IntegrityError):
    """The server said it completed the object, and it is not there."""


class Stopping(Exception):
    """A request gave up retrying because the run is stopping."""


class Throttle:
    """How many parts may be in flight: halved when the server says SlowDown, doubled back after a calm spell.

    A SlowDown halves once per burst: the answer to a request sent before the last cut only restarts the calm
    spell (the parts in flight at a SlowDown often all get one, and one cut already answers them all).
    ``on_change(in_flight, was)`` hears of every change, down and up."""

    def __init__(self, limit: int, cool_down: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[int, int], None] | None = None) -> None:
        self.limit = limit
        self._on_change = on_change
        self.current = limit
        self._cool_down = cool_down
        self._clock = clock
        self._calm_at = 0.0
        self._cut_at = float("-inf")
        self._lock = threading.Lock()

    def slow_down(self, sent_at: float | None = None) -> None:
        """The server said SlowDown to a request sent at ``sent_at`` (by ``clock``; None: now)."""
        with self._lock:
            now = self._clock()
            self._calm_at = now + self._cool_down
            if sent_at is not None and sent_at < self._cut_at:
                return  # sent before the last cut: that cut answered it
            lowered = max(1, self.current // 2)
            if lowered < self.current:
                log.warning("The server asks to slow down: %d parts in flight instead of %d for at least %.0f s.",
                            lowered, self.current, self._cool_down)
                if self._on_change is not None:
                    self._on_change(lowered, self.current)
                self.current = lowered
                self._cut_at = now

    def allowed(self) -> int:
        with self._lock:
            if self.current < self.limit and self._clock() >= self._calm_at:
                was, self.current = self.current, min(self.limit, self.current * 2)
                self._calm_at = self._clock() + self._cool_down
                log.info("The server has been calm: up to %d parts in flight again.", self.current)
                if self._on_change is not None:
                    self._on_change(self.current, was)
            return self.current


class Job:
    """One run's shared context (see the module docstring)."""

    def __init__(self, request: UploadRequest, clients: ClientFactory, progress: Reporter | None = None,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] | None = None) -> None:
        self.req = request
        self.where = request.where
        self.progress = progress or NullProgress()
        self.retry = retry or RetryPolicy()
        self.stop = threading.Event()
        # S3MU_TEST_COOL_DOWN: a test hook (seconds), so that a test sees the throttle recover without waiting 10 s.
        cool_down = float(os.environ.get("S3MU_TEST_COOL_DOWN") or 10.0)
        self.throttle = Throttle(max(1, request.threads), cool_down, on_change=self.progress.throttled)
        self.requests = Requester(clients, self.retry, on_retry=self._on_retry, sleep=sleep or self._backoff)

    def _on_retry(self, what: str, attempt: int, exc: BaseException, wait: float, began: float) -> None:
        if is_throttling(exc):
            self.throttle.slow_down(began)
        self.progress.retry(what, attempt, describe(exc), wait)

    def _backoff(self, seconds: float) -> None:
        """Wait before a retry; once the run is stopping (Ctrl-C, SIGTERM, a failed part), retry no more:
        a part waiting out a backoff of up to 20 s would otherwise hold the stop that long, try after try."""
        if self.stop.wait(seconds):
            raise Stopping()

    def call(self, what: str, fn: Callable[[S3Client], T], body_size: int | None = None) -> T:
        return self.requests.call(what, fn, body_size)

    def fail(self, exc: BaseException, parts_done: int | None = None, parts_total: int | None = None) -> UploadError:
        """The error to stop with for a failure that retries did not fix."""
        done = "" if parts_done is None else f"{parts_done} parts are done and logged." if parts_total is None \
            else f"{parts_done} of {parts_total} parts are done and logged."
        return translate(exc, self.req.bucket, self.req.key, tries=self.retry.attempts, detail=done)
