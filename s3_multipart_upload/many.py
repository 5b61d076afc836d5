"""The public API's many-files functions: ``upload_many`` (each file an upload of its own, one-part files recorded
in the batch's journal) and ``plan_many`` (what it would send and skip, and why)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

from s3_multipart_upload import checksums
from s3_multipart_upload.api import Progress, _reporter, _request
from s3_multipart_upload.batch import (
    Batch,
    Item,
    Outcome,
    completed_in_state_folders,
    dry_run_items,
    items_of,
    small_in_flight,
    summary,
)
from s3_multipart_upload.errors import BadInput, BatchFailed, ExitCode
from s3_multipart_upload.filters import parse as filter_rules
from s3_multipart_upload.job import UploadRequest
from s3_multipart_upload.options import PathArg, TransferOptions, _Opts
from s3_multipart_upload.progress import Reporter
from s3_multipart_upload.s3 import ClientFactory, RetryPolicy, resolved_endpoint
from s3_multipart_upload.sources import FileSource, parse_s3_target, source_id
from s3_multipart_upload.state import Journal, journal_path, read_journal, state_folder, state_root


@dataclass
class BatchResult:
    """The outcome of ``upload_many``: one FileOutcome per file, in the order they ended (with
    ``keep_outcomes=False``, only the files that did not complete; ``counts`` counts them all)."""

    bucket: str
    prefix: str
    files: list[Outcome]
    seconds: float
    exit_code: ExitCode
    tally: dict[str, Any] | None = None  # the counts, kept when ``files`` is not every file

    def counts(self) -> dict[str, Any]:
        """files, completed, alreadyComplete, failed, notStarted, bytes, bytesSent, seconds (as in ``--json``)."""
        return self.tally if self.tally is not None else summary(self.files, self.seconds)


def upload_many(sources: Iterable[PathArg], dest: str, *, recursive: bool = False, progress: Progress | None = None,
                reporter_for: Callable[[str | None], Reporter] | None = None,
                on_file_done: Callable[[Outcome], None] | None = None, filters: Sequence[tuple[str, str]] = (),
                follow_symlinks: bool = True, keep_outcomes: bool = True,
                **options: Unpack[TransferOptions]) -> BatchResult:
    """Upload many files under ``dest``, ``s3://BUCKET/PREFIX/``, each an upload of its own that resumes on its own.

    Each file goes to PREFIX + its name; with ``recursive``, ``sources`` is one folder and every file under it goes
    to PREFIX + its path relative to the folder. Files already complete at their key are skipped. The files share
    one pool of ``thread_count`` requests in flight.

    Args:
        progress: A function called with a ProgressEvent (``key`` names the file; None for the one-part files, sent
            many at a time), or a Reporter shared by all.
        reporter_for: Instead of ``progress``: a new Reporter for each file of several parts (given its key), and
            one for the one-part files (given None).
        on_file_done: Called with each file's FileOutcome as it ends.
        filters: ``("exclude", GLOB)`` and ``("include", GLOB)`` pairs in aws-cli's order (``--exclude``,
            ``--include``): the last that matches a file's path relative to the folder decides.
        follow_symlinks: Follow symbolic links under the folder (a loop is reported and not followed).
        keep_outcomes: False: the result's ``files`` holds only the files that did not complete (``on_file_done``
            still hears of every one), so that memory does not grow with the number of files.

    Raises:
        BatchFailed: When any file did not complete; its ``exit_code`` is the most urgent of the files' codes and
            its ``result`` the BatchResult.
    """
    opts, bucket, prefix = _many_of(dest, options)
    sources = list(sources)
    items = items_of([Path(s) for s in sources], prefix, recursive, filter_rules(filters), follow_symlinks)
    shared = opts.properties()  # checked (and any key file read) once; each file's content type from its name
    clients = ClientFactory(opts.endpoint, pool_size=small_in_flight(opts.thread_count) + 2,
                            request_args=shared.request_args if shared.has_request_args else None)
    endpoint = resolved_endpoint(clients, opts.endpoint_url)
    shared.check_endpoint(endpoint, checksums.is_aws(endpoint))
    choice = checksums.choose(opts.checksum, endpoint)
    root = state_root(opts.state_dir)
    bandwidth = opts.bandwidth()  # one cap for every file

    def prepare(item: Item) -> UploadRequest:
        source = FileSource(item.path)
        folder = state_folder(root, endpoint or "", bucket, item.key, source_id(source),
                              given_endpoint=opts.endpoint_url)
        return _request(opts, source, bucket, item.key, folder.meta, folder.parts, choice, skip_identical=True,
                        properties=shared.for_name(item.path.name), bandwidth=bandwidth)

    def reporter(item: Item | None) -> Reporter:
        if reporter_for is not None:
            return reporter_for(None if item is None else item.key)
        return _reporter(progress, None if item is None else item.key)

    def small(item: Item) -> UploadRequest:
        # A one-part file has no state of its own (the batch's journal records it once done): its request names
        # no state files, and Uploader.put_small opens none.
        return _request(opts, FileSource(item.path), bucket, item.key, Path(os.devnull), Path(os.devnull), choice,
                        properties=shared.for_name(item.path.name), bandwidth=bandwidth)

    started = time.monotonic()
    journal = Journal(journal_path(root, endpoint or "", bucket, prefix, _sources_id(sources, recursive)))
    batch = Batch(items, prepare, clients, opts.thread_count, RetryPolicy(attempts=opts.retries), reporter,
                  on_file_done or (lambda outcome: None), small=small, journal=journal,
                  split_size=opts.split_size, bucket=bucket,
                  earlier=completed_in_state_folders(root, endpoint or "", bucket), keep_outcomes=keep_outcomes)
    outcomes = batch.run()
    seconds = time.monotonic() - started
    result = BatchResult(bucket, prefix, outcomes, seconds, batch.exit_code,
                         None if keep_outcomes else batch.tally.summary(seconds))
    if result.exit_code != ExitCode.OK:
        code = result.exit_code
        first = next(o.failure for o in outcomes if o.code == code and o.failure is not None)
        failed = sum(1 for o in outcomes if o.failure is not None)
        raise BatchFailed(code, f"{failed} of {batch.tally.files} files did not complete; the first with exit "
                          f"{int(code)}: {first.message}", first.hint, result)
    return result


def _many_of(dest: str, options: TransferOptions) -> tuple[_Opts, str, str]:
    opts = _Opts.of(options)
    bucket, prefix = parse_s3_target(dest)
    if prefix and not prefix.endswith("/"):
        raise BadInput(f"several files go under a prefix, and {dest} does not end with a slash",
                       f"write s3://{bucket}/{prefix}/")
    if opts.meta_file_path is not None or opts.parts_file_path is not None or opts.upload_id is not None or \
            opts.shard is not None:
        raise BadInput("-m, -a, --upload-id and --shard name one upload, and this command makes one per file",
                       "leave them out (each file keeps its state in the state folder; see --state-dir)")
    return opts, bucket, prefix


def plan_many(sources: Iterable[PathArg], dest: str, *, recursive: bool = False,
              filters: Sequence[tuple[str, str]] = (), follow_symlinks: bool = True,
              **options: Unpack[TransferOptions]) -> Iterator[dict[str, Any]]:
    """What ``upload_many`` with these arguments would do (``--dry-run`` with many files), file by file, from the
    local files and the state folder only (no request): ``{"file", "key", "action": "send"|"skip", "why", "bytes",
    "parts"}``; a file left out by a filter, a symbolic link not followed or a loop is a ``skip`` with its reason."""
    opts, bucket, prefix = _many_of(dest, options)
    sources = list(sources)
    clients = ClientFactory(opts.endpoint, pool_size=2)
    endpoint = resolved_endpoint(clients, opts.endpoint_url) or ""
    root = state_root(opts.state_dir)
    journal = read_journal(journal_path(root, endpoint, bucket, prefix, _sources_id(sources, recursive)))[0]
    return dry_run_items([Path(s) for s in sources], prefix, recursive, filter_rules(filters), follow_symlinks,
                         lambda path, key: state_folder(root, endpoint, bucket, key, str(path.resolve()),
                                                        create=False).meta, opts.split_size, journal)


def _sources_id(sources: Iterable[PathArg], recursive: bool) -> str:
    """What names a batch's sources in its journal's identity: the folder, or the folders of the files."""
    paths = [os.path.abspath(s) for s in sources]
    return json.dumps(paths if recursive else sorted({os.path.dirname(p) for p in paths}))
