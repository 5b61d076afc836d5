"""Many files in one command (``upload FILE... s3://BUCKET/PREFIX/``, ``upload --recursive DIR ...``).

Each file is an upload of its own. A file of several parts has its own state folder and resumes on its own; a
file of one part is one PutObject with no state of its own. The batch's journal (``state.Journal``) records every
finished file, so a rerun skips those unchanged since without a request. The files share one S3 client (its
connection pool) and a bound on what is in flight:

    phase 1  files of one part (one PutObject each): ``small_in_flight(THREADS)`` files at a time (4 x THREADS,
             at most 64: a small request costs a round trip, not bandwidth), one thread each
    phase 2  files of several parts: one after another, each with THREADS parts in flight

Memory: the requests in flight x 1 MiB blocks, as bodies are streamed. A failure of one file (exit 1-5) is
reported and the others go on; a failure a rerun fixes (75, 130) stops the batch, since the files after it would
most likely fail the same way.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3_multipart_upload.completion import Completer
from s3_multipart_upload.errors import BadInput, ExitCode, Failure, UploadError, failure_of, most_urgent
from s3_multipart_upload.filters import Filter, Found, taken, walk
from s3_multipart_upload.job import UploadRequest, UploadResult
from s3_multipart_upload.plan import parse_size, plan_bytes
from s3_multipart_upload.progress import Reporter
from s3_multipart_upload.s3 import ClientFactory, RetryPolicy
from s3_multipart_upload.sources import FileSource
from s3_multipart_upload.state import COMPLETED, Finished, Journal, read_meta, state_folder
from s3_multipart_upload.uploader import Uploader

log = logging.getLogger(__name__)
SMALL_FACTOR, SMALL_MAX = 4, 64


def small_in_flight(threads: int) -> int:
    """One-part files in flight at once: more than parts (a request of a small file costs a round trip, not
    bandwidth, and its memory is at most one 1 MiB block): 4 x THREADS, at most 64 (never fewer than THREADS)."""
    return max(threads, min(SMALL_FACTOR * threads, SMALL_MAX))


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
             follow_symlinks: bool = True) -> Callable[[], Iterator[Item]]:
    """The files to send and their keys, as a maker of a walk (the batch walks twice: once to count, once to send,
    and holds no list of the files): each FILE under PREFIX by its name, or, with ``recursive``, every file under
    the one DIR by its path relative to DIR (``filters.walk``: streamed, in name order, symbolic links followed
    unless ``follow_symlinks`` is False, a loop reported). ``filters`` (aws-cli's --exclude/--include) match the
    path relative to DIR, or a FILE's name."""
    if not recursive:
        chosen = [Item(f, prefix + f.name) for f in files if taken(f.name, filters)[0]]
        by_key: dict[str, Path] = {}
        for item in chosen:
            if item.key in by_key:  # two files to one key: the object would be one of them, each "completed"
                raise BadInput(f"{by_key[item.key]} and {item.path} would both be uploaded to the key {item.key}",
                               "give files of different names, or upload each to a key of its own: FILE "
                               "s3://BUCKET/KEY")
            by_key[item.key] = item.path
            if item.path.is_block_device():
                raise BadInput(f"{item.path} is a block device: a device is uploaded on its own, not among several "
                               "files", f"write: upload {item.path} s3://BUCKET/KEY")
        return lambda: iter(chosen)
    if len(files) != 1 or not files[0].is_dir():
        raise BadInput(f"--recursive takes one folder and a destination, not {' '.join(map(str, files)) or 'none'}",
                       "write: upload --recursive DIR s3://BUCKET/PREFIX/")
    root = files[0]

    def found() -> Iterator[Item]:
        return (Item(f.path, prefix + f.relative) for f in walk(root, filters, follow_symlinks))

    if next(found(), None) is None:
        raise BadInput(f"the folder {root} holds no files" + (" that the filters take" if filters else ""),
                       "check the path" + (" and the --exclude/--include filters" if filters else ""))
    return found


def dry_run_items(files: list[Path], prefix: str, recursive: bool, filters: Sequence[Filter], follow_symlinks: bool,
                  meta_of: Callable[[Path, str], Path], split_size: int | str | None,
                  journal: dict[str, Finished]) -> Iterator[dict[str, Any]]:
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
            ident = source.identity()
            known = journal.get(key)
            if known is not None and (known.path, known.size, known.mtime_ns) == \
                    (os.path.abspath(f.path), ident["size"], ident["mtimeNs"]):
                yield doc | {"action": "skip", "why": "already complete (the batch journal, and the file unchanged)",
                             "parts": len(plan.parts)}
                continue
            meta = None if len(plan.parts) == 1 else read_meta(meta_of(f.path, key))
        except UploadError as exc:
            yield doc | {"action": "skip", "why": f"error: {exc.message}"}
            continue
        parts = len(plan.parts)
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


def completed_in_state_folders(root: Path, endpoint: str, bucket: str) -> Callable[[Item, os.stat_result], str | None]:
    """For a batch's files with no journal line: the ETag ("" if none was recorded) of a one-part file that an
    earlier version of this tool completed in a state folder of its own, unchanged since; else None. No request."""
    folders = {p.name for p in root.iterdir()} if root.is_dir() else set()

    def earlier(item: Item, st: os.stat_result) -> str | None:
        if len(folders) <= 1:  # only batches/ (or nothing): no such folder to look for
            return None
        folder = state_folder(root, endpoint, bucket, item.key, str(item.path.resolve()), create=False)
        if folder.path.name not in folders:
            return None
        try:
            meta = read_meta(folder.meta)
        except UploadError:
            return None
        if meta is None or meta.status != COMPLETED or meta.source is None or \
                (meta.source.get("size"), meta.source.get("mtimeNs")) != (st.st_size, st.st_mtime_ns):
            return None
        return str(meta.extra.get("eTag") or "")

    return earlier


class Tally:
    """The batch's counts as the outcomes come (what ``summary`` computes from a list, without keeping one)."""

    def __init__(self) -> None:
        self.by: dict[str, int] = {}
        self.files = self.bytes = self.bytes_sent = 0
        self.codes: set[ExitCode] = set()

    def add(self, outcome: Outcome) -> None:
        self.files += 1
        self.by[outcome.status] = self.by.get(outcome.status, 0) + 1
        if outcome.result is not None:
            self.bytes += outcome.result.size
            self.bytes_sent += outcome.result.bytes_sent
        self.codes.add(outcome.code)

    def summary(self, seconds: float) -> dict[str, Any]:
        by = self.by
        return {"files": self.files, "completed": by.get("completed", 0),
                "alreadyComplete": by.get("already_complete", 0), "failed": by.get("error", 0) + by.get("paused", 0),
                "notStarted": by.get("not_started", 0), "bytes": self.bytes, "bytesSent": self.bytes_sent,
                "seconds": round(seconds, 3)}


class Batch:
    """Runs the items as described in the module docstring. ``items`` makes a walk of the files (called twice: once
    to count the one-part files for the display, once to send; no list of the files is kept). ``prepare`` builds
    the request of a file of several parts (its state folder; it may raise BadInput for a missing file), ``small``
    the request of a one-part file (no state: the ``journal`` records it once done); ``reporter`` gives the display
    of a file of several parts (None: of phase 1), ``done`` is told each outcome as it comes. ``outcomes`` keeps
    every outcome, or with ``keep_outcomes`` False only the failures (``tally`` counts them all): memory then does
    not grow with the number of files."""

    def __init__(self, items: list[Item] | Callable[[], Iterable[Item]], prepare: Callable[[Item], UploadRequest],
                 clients: ClientFactory, threads: int, retry: RetryPolicy, reporter: Callable[[Item | None], Reporter],
                 done: Callable[[Outcome], None], small: Callable[[Item], UploadRequest] | None = None,
                 journal: Journal | None = None, split_size: int | None = None, bucket: str = "",
                 earlier: Callable[[Item, os.stat_result], str | None] | None = None,
                 keep_outcomes: bool = True) -> None:
        if isinstance(items, list):
            listed = items
            self.items: Callable[[], Iterable[Item]] = lambda: listed
        else:
            self.items = items
        self._prepare = prepare
        self._small = small or prepare
        self._clients = clients
        self._threads = threads
        self._retry = retry
        self._reporter = reporter
        self._done = done
        self._journal = journal
        self._split_size = split_size
        self._bucket = bucket
        self._earlier = earlier or (lambda item, st: None)
        self._keep = keep_outcomes
        self.tally = Tally()
        self.outcomes: list[Outcome] = []
        self._stopped: Failure | None = None

    @property
    def exit_code(self) -> ExitCode:
        return most_urgent(sorted(self.tally.codes - {ExitCode.OK}))

    def _record(self, outcome: Outcome) -> None:
        self.tally.add(outcome)
        if self._keep or outcome.failure is not None:
            self.outcomes.append(outcome)
        if outcome.failure is not None and outcome.failure.resumable and self._stopped is None:
            self._stopped = outcome.failure
        self._done(outcome)

    def _not_started(self, item: Item) -> None:
        stopped = self._stopped or Failure(ExitCode.INTERRUPTED, "interrupted")
        self._record(Outcome(item, failure=Failure(stopped.code, f"not started: the batch stopped "
                                                   f"({stopped.message})", stopped.hint), started=False))

    def _finished(self, item: Item, result: UploadResult, source: FileSource) -> None:
        """A file done: into the journal (a rerun skips it without a request), then told."""
        if self._journal is not None:  # (a file the journal already had was skipped before it got here)
            ident = source.identity()
            self._journal.record(Finished(item.key, os.path.abspath(item.path), ident["size"], ident["mtimeNs"],
                                          result.etag))
        self._record(Outcome(item, result=result))

    def run(self) -> list[Outcome]:
        """Phase 1 as the walk finds the files, then phase 2. Each file's outcome is told as it ends; once the batch
        stops, the files it did not start are told so."""
        large: list[Item] = []  # the files of several parts, for phase 2 (each one at least a part size of data)
        walking = self._walk(large)
        ran = 0
        try:
            self._run_small(walking, self._count_small())
            for item in large:
                if self._stopped is not None:
                    break
                ran += 1
                try:
                    req = self._prepare(item)
                except Exception as exc:
                    self._record(Outcome(item, failure=failure_of(exc)))
                    continue
                self._run_one(item, req)
        except KeyboardInterrupt:
            self._stopped = self._stopped or failure_of(KeyboardInterrupt())
        finally:
            if self._journal is not None:
                self._journal.close()
        if self._stopped is not None:
            for _ in walking:  # the rest of the walk: the generator tells each file not started
                pass
            for item in large[ran:]:
                self._not_started(item)
        return self.outcomes

    def _count_small(self) -> tuple[int, int]:
        """(files, bytes) of the one-part files, by a walk that only counts: the display's totals."""
        files = size = 0
        for item in self.items():
            try:
                st = item.path.stat()
            except OSError:
                continue
            if len(plan_bytes(st.st_size, self._split_size, fixed=False).parts) == 1:
                files, size = files + 1, size + st.st_size
        return files, size

    def _walk(self, large: list[Item]) -> Iterator[tuple[Item, int, bool]]:
        """The files as the walk finds them: those finished before are told at once (no request; a one-part one is
        yielded with True, for the display), those of several parts kept in ``large`` for phase 2, the one-part
        files yielded with their size, to be sent. Once the batch stops, each file left is told not started."""
        for item in self.items():
            if self._stopped is not None:
                self._not_started(item)
                continue
            try:
                st = item.path.stat()
                parts = len(plan_bytes(st.st_size, self._split_size, fixed=False).parts)
            except Exception as exc:
                if isinstance(exc, FileNotFoundError):
                    exc = BadInput(f"file {item.path} does not exist", "check the path")
                elif isinstance(exc, OSError):
                    exc = BadInput(f"cannot read file {item.path}: {exc.strerror}", "check the path")
                self._record(Outcome(item, failure=failure_of(exc)))
                continue
            known = None if self._journal is None else self._journal.done(
                item.key, os.path.abspath(item.path), st.st_size, st.st_mtime_ns)
            etag = known.etag if known is not None else self._earlier(item, st) if parts == 1 else None
            if known is not None or etag is not None:  # finished before and unchanged since: no request at all
                if known is None and self._journal is not None:  # a state folder of an earlier version said so
                    self._journal.record(Finished(item.key, os.path.abspath(item.path), st.st_size, st.st_mtime_ns,
                                                  etag or None))
                self._record(Outcome(item, result=UploadResult(self._bucket, item.key, None, st.st_size, parts,
                                                               etag=etag or None, already_complete=True)))
                if parts == 1:
                    yield item, st.st_size, True
                continue
            if parts == 1:
                yield item, st.st_size, False
            else:
                large.append(item)

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
        assert isinstance(req.source, FileSource)
        self._finished(item, result, req.source)

    def _send_small(self, item: Item, uploader: Uploader) -> UploadResult:
        """One one-part file: a PutObject, unless an earlier run may have sent it already (a ``sending`` line in the
        journal and no ``finished`` one: killed in between), in which case the object is checked first."""
        journal = self._journal
        maybe_sent = journal is None or item.key in journal.sending
        if maybe_sent:
            # No journal (the API's callers without a state folder), or sent before a kill: the object at the key
            # may already be these bytes (size and MD5): then it is not sent again.
            etag = Completer(uploader.job, uploader.req.checksum,
                             uploader.req.source.plan(uploader.req.split_size, fixed=False)).already_built({})
            if etag is not None:
                return UploadResult(uploader.req.bucket, item.key, None, uploader.req.source.total_size, 1,
                                    checksum=uploader.req.checksum, etag=etag, already_complete=True)
        if journal is not None:
            journal.start(item.key)
        return uploader.put_small()

    def _run_small(self, small: Iterator[tuple[Item, int, bool]], totals: tuple[int, int]) -> None:
        """Phase 1: ``small_in_flight(THREADS)`` one-part files at a time (each a PutObject, no state of its own), as
        the walk yields them. The first Ctrl-C stops scheduling and lets the files in flight finish (their uploaders
        are told to stop); the CLI's handler exits at once on a second one."""
        shown: list[Reporter] = []  # the display, made when the first one-part file comes
        in_flight: dict[cf.Future[UploadResult], tuple[Item, Uploader]] = {}
        pool = cf.ThreadPoolExecutor(max_workers=small_in_flight(self._threads), thread_name_prefix="file")
        told = [0]

        def display() -> Reporter:
            if not shown:
                shown.append(self._reporter(None))
                shown[0].started(totals[1], totals[0], 0, 0)
            return shown[0]

        def fill() -> None:
            while self._stopped is None and len(in_flight) < small_in_flight(self._threads):
                nxt = next(small, None)
                if nxt is None:
                    return
                item, size, already = nxt
                if already:  # finished before: done for the display too
                    told[0] += 1
                    display().part_done(told[0], "", size, 0.0)
                    continue
                try:
                    req = self._small(item)
                except Exception as exc:
                    self._record(Outcome(item, failure=failure_of(exc)))
                    continue
                display()
                uploader = Uploader(dataclasses.replace(req, threads=1), self._clients, retry=self._retry)
                in_flight[pool.submit(self._send_small, item, uploader)] = (item, uploader)

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
                    item, uploader = in_flight.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:
                        self._record(Outcome(item, failure=failure_of(exc)))
                    else:
                        assert isinstance(uploader.req.source, FileSource)
                        self._finished(item, result, uploader.req.source)
                        told[0] += 1
                        display().part_done(told[0], result.etag or "", result.size, result.seconds)
                fill()
        finally:
            pool.shutdown(wait=not in_flight, cancel_futures=True)
            if shown:
                shown[0].close()


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
            "fullObjectChecksum": result.full_checksum, "objectProperties": result.properties}
