"""Many files in one command (``upload FILE... s3://BUCKET/PREFIX/``, ``upload --recursive DIR ...``).

Each file is an upload of its own, with its own state folder, so each one resumes on its own. The
files share one S3 client (its connection pool) and one bound on what is in flight:

    phase 1  files of one part (one PutObject each): THREADS files at a time, one thread each
    phase 2  files of several parts: one after another, each with THREADS parts in flight

So at most THREADS requests are in flight at any moment (memory: THREADS x 1 MiB blocks, as
parts are streamed), and a folder of many small files keeps every thread busy. A failure of one
file (exit 1-5) is reported and the others go on; a failure a rerun fixes (75, 130) stops the
batch, since the files after it would most likely fail the same way.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3_multipart_upload.errors import BadInput, ExitCode, Failure, UploadError, failure_of, most_urgent
from s3_multipart_upload.filters import Filter, Found, taken, walk
from s3_multipart_upload.job import UploadRequest, UploadResult
from s3_multipart_upload.plan import parse_size
from s3_multipart_upload.progress import Reporter
from s3_multipart_upload.s3 import ClientFactory, RetryPolicy
from s3_multipart_upload.sources import FileSource
from s3_multipart_upload.state import COMPLETED, read_meta
from s3_multipart_upload.uploader import Uploader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One file of the batch and the key it goes to."""

    path: Path
    key: str


@dataclass
class Outcome:
    item: Item
    result: UploadResult | None = None
    failure: Failure | None = None
    started: bool = True

    @property
    def status(self) -> str:
        if self.result is not None:
            return "already_complete" if self.result.already_complete else "completed"
        if not self.started:
            return "not_started"
        return "paused" if self.failure is not None and self.failure.resumable else "error"

    @property
    def code(self) -> ExitCode:
        return ExitCode.OK if self.failure is None else self.failure.code


def items_of(files: list[Path], prefix: str, recursive: bool, filters: Sequence[Filter] = (),
             follow_symlinks: bool = True) -> list[Item]:
    """The files to send and their keys: each FILE under PREFIX by its name, or, with ``recursive``, every file
    under the one DIR by its path relative to DIR (``filters.walk``: in name order, symbolic links followed unless
    ``follow_symlinks`` is False, a loop reported). ``filters`` (aws-cli's --exclude/--include) match the path
    relative to DIR, or a FILE's name."""
    if not recursive:
        return [Item(f, prefix + f.name) for f in files if taken(f.name, filters)[0]]
    if len(files) != 1 or not files[0].is_dir():
        raise BadInput(f"--recursive takes one folder and a destination, not {' '.join(map(str, files)) or 'none'}",
                       "write: upload --recursive DIR s3://BUCKET/PREFIX/")
    root = files[0]
    found = [Item(f.path, prefix + f.relative) for f in walk(root, filters, follow_symlinks)]
    if not found:
        raise BadInput(f"the folder {root} holds no files" + (" that the filters take" if filters else ""),
                       "check the path" + (" and the --exclude/--include filters" if filters else ""))
    return found


def dry_run_items(files: list[Path], prefix: str, recursive: bool, filters: Sequence[Filter], follow_symlinks: bool,
                  meta_of: Callable[[Path, str], Path], split_size: int | str | None) -> Iterator[dict[str, Any]]:
    """``--dry-run`` with many files, one dict a file as ``api.plan_many`` describes, streamed as the walk goes."""
    if recursive:
        if len(files) != 1 or not files[0].is_dir():
            raise BadInput(f"--recursive takes one folder and a destination, not "
                           f"{' '.join(map(str, files)) or 'none'}", "write: upload --recursive DIR s3://BUCKET/PREFIX/")
        found: Iterable[Found] = walk(files[0], filters, follow_symlinks, with_skipped=True)
    else:
        found = (_found_file(f, filters) for f in files)
    for f in found:
        key = prefix + f.relative
        doc: dict[str, Any] = {"file": str(f.path), "key": key, "bytes": f.size}
        if f.skipped is not None:
            yield doc | {"action": "skip", "why": f.skipped}
            continue
        try:
            source = FileSource(f.path)
            plan = source.plan(parse_size(split_size) if split_size is not None else None, fixed=False)
            meta = read_meta(meta_of(f.path, key))
        except UploadError as exc:
            yield doc | {"action": "skip", "why": f"error: {exc.message}"}
            continue
        parts = len(plan.parts)
        ident = source.identity()
        if meta is not None and meta.status == COMPLETED and meta.source is not None and \
                (meta.source.get("size"), meta.source.get("mtimeNs")) == (ident["size"], ident["mtimeNs"]):
            yield doc | {"action": "skip", "why": "already complete (its state, and the file unchanged)",
                         "parts": parts}
            continue
        how = "one PutObject" if parts == 1 else f"{parts} parts of {plan.part_size} bytes"
        if meta is not None and meta.status != COMPLETED and meta.upload_id:
            how = f"resume the upload in progress ({parts} parts)"
        yield doc | {"action": "send", "why": how, "parts": parts}


def _found_file(path: Path, filters: Sequence[Filter]) -> Found:
    ok, by = taken(path.name, filters)
    if not ok and by is not None:
        return Found(path, path.name, skipped=f"--{by.kind} {by.pattern}")
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return Found(path, path.name, size)


class Batch:
    """Runs the items as described in the module docstring; ``prepare`` builds an item's request (and may raise
    BadInput for a missing file), ``reporter`` gives the display of a file of several parts (None: of phase 1),
    ``done`` is told each outcome as it comes."""

    def __init__(self, items: list[Item], prepare: Callable[[Item], UploadRequest], clients: ClientFactory,
                 threads: int, retry: RetryPolicy, reporter: Callable[[Item | None], Reporter],
                 done: Callable[[Outcome], None]) -> None:
        self.items = items
        self._prepare = prepare
        self._clients = clients
        self._threads = threads
        self._retry = retry
        self._reporter = reporter
        self._done = done
        self.outcomes: list[Outcome] = []
        self._stopped: Failure | None = None

    @property
    def exit_code(self) -> ExitCode:
        return most_urgent([o.code for o in self.outcomes])

    def _record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if outcome.failure is not None and outcome.failure.resumable and self._stopped is None:
            self._stopped = outcome.failure
        self._done(outcome)

    def run(self) -> list[Outcome]:
        small: list[tuple[Item, UploadRequest]] = []
        large: list[tuple[Item, UploadRequest]] = []
        for item in self.items:
            try:
                req = self._prepare(item)
                one_part = len(req.source.plan(req.split_size, fixed=False).parts) == 1
            except Exception as exc:
                self._record(Outcome(item, failure=failure_of(exc)))
                continue
            (small if one_part else large).append((item, req))
        try:
            self._run_small(small)
            for item, req in large:
                if self._stopped is not None:
                    break
                self._run_one(item, req)
        except KeyboardInterrupt:
            self._stopped = self._stopped or failure_of(KeyboardInterrupt())
        seen = {id(o.item) for o in self.outcomes}
        stopped = self._stopped or Failure(ExitCode.INTERRUPTED, "interrupted")
        for item in self.items:
            if id(item) not in seen:
                self._record(Outcome(item, failure=Failure(stopped.code, f"not started: the batch stopped "
                                                           f"({stopped.message})", stopped.hint), started=False))
        return self.outcomes

    def _run_one(self, item: Item, req: UploadRequest) -> None:
        reporter = self._reporter(item)
        try:
            result = Uploader(req, self._clients, reporter, retry=self._retry).run()
        except BaseException as exc:  # KeyboardInterrupt too: this file stops, and the batch with it
            self._record(Outcome(item, failure=failure_of(exc)))
            if not isinstance(exc, Exception):
                self._stopped = self._stopped or failure_of(exc)
            return
        finally:
            reporter.close()
        self._record(Outcome(item, result=result))

    def _run_small(self, small: list[tuple[Item, UploadRequest]]) -> None:
        """Phase 1: THREADS one-part files at a time. The first Ctrl-C stops scheduling and lets the files in
        flight finish (their uploaders are told to stop); the CLI's handler exits at once on a second one."""
        if not small:
            return
        display = self._reporter(None)
        display.started(sum(req.source.total_size for _, req in small), len(small), 0, 0)
        pending = iter(small)
        in_flight: dict[cf.Future[UploadResult], tuple[Item, Uploader]] = {}
        pool = cf.ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="file")

        def fill() -> None:
            while self._stopped is None and len(in_flight) < self._threads:
                nxt = next(pending, None)
                if nxt is None:
                    return
                item, req = nxt
                # One thread each (a file found to be a multipart upload in progress sends its parts one by one).
                uploader = Uploader(dataclasses.replace(req, threads=1), self._clients, retry=self._retry)
                in_flight[pool.submit(uploader.run)] = (item, uploader)

        try:
            fill()
            while in_flight:  # each file ends: its requests time out and its retries are bounded
                try:
                    finished, _ = cf.wait(in_flight, timeout=0.25, return_when=cf.FIRST_COMPLETED)
                except KeyboardInterrupt:
                    self._stopped = self._stopped or failure_of(KeyboardInterrupt())
                    for _, uploader in in_flight.values():
                        uploader.job.stop.set()
                    log.warning("Stopping: waiting for the %d files in flight to finish (press Ctrl-C again to "
                                "stop at once).", len(in_flight))
                    continue
                for future in finished:
                    item, _ = in_flight.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:
                        self._record(Outcome(item, failure=failure_of(exc)))
                    else:
                        self._record(Outcome(item, result=result))
                        display.part_done(len(self.outcomes), result.etag or "", result.size, result.seconds)
                fill()
        finally:
            pool.shutdown(wait=not in_flight, cancel_futures=True)
            display.close()


def summary(outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    """The batch's counts, for the summary line and the JSON summary."""
    by: dict[str, int] = {}
    for o in outcomes:
        by[o.status] = by.get(o.status, 0) + 1
    results = [o.result for o in outcomes if o.result is not None]
    return {"files": len(outcomes), "completed": by.get("completed", 0),
            "alreadyComplete": by.get("already_complete", 0), "failed": by.get("error", 0) + by.get("paused", 0),
            "notStarted": by.get("not_started", 0), "bytes": sum(r.size for r in results),
            "bytesSent": sum(r.bytes_sent for r in results), "seconds": round(seconds, 3)}


def result_json(result: UploadResult) -> dict[str, Any]:
    """One upload's result as the JSON events and summaries show it."""
    return {"bucket": result.bucket, "key": result.key, "uploadId": result.upload_id, "size": result.size,
            "eTag": result.etag, "partsTotal": result.parts_total, "partsSent": result.parts_sent,
            "partsAlreadyDone": result.parts_logged, "partsAdopted": result.parts_adopted,
            "bytesSent": result.bytes_sent, "seconds": round(result.seconds, 3), "checksumAlgorithm": result.checksum,
            "fullObjectChecksum": result.full_checksum}
