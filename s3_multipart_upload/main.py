"""The command line: parse, build a request, call the engine, turn errors into exit codes. Nothing else.

    s3-multipart-upload upload -b BUCKET -k KEY -f FILE -m META_FILE -a PARTS_FILE [-t THREADS] [-s SPLIT_SIZE]

Also ``python -m s3_multipart_upload`` and, as the historical tool was run,
``python s3_multipart_upload/main.py`` (once the package is installed).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, TypeVar

import click
from rich.console import Console
from rich.table import Table

from s3_multipart_upload import __version__, checksums
from s3_multipart_upload import shard as shards_
from s3_multipart_upload.batch import Batch, Item, Outcome, items_of, result_json, summary
from s3_multipart_upload.controller import (
    TOKEN_ENV,
    ControllerAPI,
    clients_for,
    controller_upload,
    read_token,
)
from s3_multipart_upload.errors import BadInput, ExitCode, Failure, UploadError, failure_of, most_urgent
from s3_multipart_upload.operations import (
    LocalUpload,
    abort_until_gone,
    clean_upload,
    human_age,
    list_in_progress,
    local_uploads,
    parse_duration,
    upload_status,
)
from s3_multipart_upload.operations import abort as abort_upload
from s3_multipart_upload.plan import DEFAULT_PART_SIZE, human, ranges
from s3_multipart_upload.progress import (
    LOG_FORMAT,
    BarProgress,
    ConsoleHandler,
    JsonProgress,
    LogProgress,
    NullProgress,
    Reporter,
)
from s3_multipart_upload.s3 import ClientFactory, Endpoint, Requester, RetryPolicy, resolved_endpoint
from s3_multipart_upload.shard import MAX_SHARDS
from s3_multipart_upload.sources import (
    ChunkDirSource,
    FileSource,
    S3ObjectSource,
    Source,
    object_source,
    parse_s3_target,
    source_id,
)
from s3_multipart_upload.state import Meta, read_meta, state_folder, state_root
from s3_multipart_upload.uploader import Uploader, UploadRequest

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
DEFAULT_THREADS = 8
MAX_THREADS = 256
PROG = "s3-multipart-upload"


class ByteSize(click.ParamType):  # type: ignore[type-arg]
    """Bytes as a whole number, or with a binary suffix: 64M, 64MiB, 1G."""

    name = "BYTES"
    _units: ClassVar[dict[str, int]] = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", str(value), re.IGNORECASE)
        if not match:
            self.fail(f"{value!r} is not a size in bytes (examples: 67108864, 64M, 64MiB, 1G)", param, ctx)
        return int(match.group(1)) * self._units[match.group(2).lower()]


def _rerun_command() -> str:
    """The command that resumes this run: the same one, less --restart (which would start over)."""
    return shlex.join([PROG, *(arg for arg in sys.argv[1:] if arg != "--restart")])


def _report(failure: Failure) -> None:
    click.echo(f"error: {failure.message}", err=True)
    if failure.hint:
        click.echo(f"  hint: {failure.hint}", err=True)
    if failure.resumable:
        click.echo(f"  to resume, rerun: {_rerun_command()}", err=True)


def handle_errors(fn: F) -> F:
    """The one place that turns a failure into its message and exit code (DESIGN.md, Exit codes)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            failure = failure_of(exc)
            if failure.code == ExitCode.BUG and not isinstance(exc, UploadError) and \
                    logging.getLogger("s3_multipart_upload").isEnabledFor(logging.DEBUG):
                traceback.print_exc()  # a bug: the traceback only when asked (-v)
            _report(failure)
            ctx.exit(int(failure.code))

    return wrapper  # type: ignore[return-value]


def _setup_output(quiet: bool, verbose: bool) -> Callable[[], Reporter]:
    """Logging for this run, and a maker of its progress display: a bar on a terminal, log lines otherwise."""
    logger = logging.getLogger("s3_multipart_upload")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.propagate = False
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    logger.setLevel(level)
    handler: logging.Handler
    display: Callable[[], Reporter]
    if sys.stderr.isatty() and not quiet:
        console = Console(stderr=True)
        handler = ConsoleHandler(console)
        display = functools.partial(BarProgress, console)
    else:
        handler = logging.StreamHandler(sys.stderr)
        display = NullProgress if quiet else LogProgress
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    return display


class _StopOnSignal:
    """SIGINT and SIGTERM: the first one is an orderly stop (KeyboardInterrupt in the main thread, wherever
    it is); the second one exits at once, from here, whatever the main thread is waiting for. Every
    finished part is already fsync'd in the log, so nothing is lost."""

    def __init__(self) -> None:
        self.received = 0
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        if self.received == 1:
            raise KeyboardInterrupt
        _report(Failure(ExitCode.INTERRUPTED, "stopped at once; every finished part is in the parts log"))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(ExitCode.INTERRUPTED))

    def __enter__(self) -> _StopOnSignal:
        self._previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def s3_options(fn: F) -> F:
    """--endpoint-url, --profile, --region: what every S3 user expects."""
    fn = click.option("--region", help="AWS region (also AWS_REGION / AWS_DEFAULT_REGION).")(fn)
    fn = click.option("--profile", help="AWS profile (also AWS_PROFILE).")(fn)
    fn = click.option("--endpoint-url", help="S3 endpoint for S3-compatible stores (also AWS_ENDPOINT_URL).")(fn)
    return fn


def output_options(fn: F) -> F:
    fn = click.option("-v", "--verbose", is_flag=True,
                      help="Print debug output, and tracebacks for unexpected errors.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="Print errors only.")(fn)
    return fn


def state_dir_option(fn: F) -> F:
    return click.option("--state-dir", type=click.Path(path_type=Path),
                        help="Where uploads keep their state when -m and -a are not given (default "
                             "$XDG_STATE_HOME/s3-multipart-upload, or ~/.local/state/s3-multipart-upload): one folder "
                             "per upload. A shared file system lets batch jobs resume on another machine.")(fn)


def _requester(endpoint_url: str | None, profile: str | None, region: str | None, pool: int = 4) -> Requester:
    return Requester(ClientFactory(Endpoint(endpoint_url, profile, region), pool_size=pool))


def _requester_for(meta_path: Path, token_file: Path | None, endpoint_url: str | None, profile: str | None,
                   region: str | None) -> Requester:
    """S3 directly, or, for an upload made through a controller (its META says which), that controller."""
    return Requester(clients_for(read_meta(meta_path), meta_path, token_file, Endpoint(endpoint_url, profile, region)))


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Resumable, parallel multipart uploads to S3 and S3-compatible stores.

    Rerun the same command after any interruption and the upload goes on where it stopped.
    `status` shows where uploads stand, `abort` stops paying for one, `list` finds the
    forgotten ones in a bucket, `clean` tidies the state folder.
    """


@dataclass(frozen=True)
class TransferOptions:
    """The options upload and copy share, as ``transfer_options`` parses them. A new option of both: one
    click.option in ``transfer_options`` and one field here (with its default); a field named as one of
    UploadRequest's reaches the engine by that name (``_request``)."""

    bucket: str | None = None
    key: str | None = None
    meta_file_path: Path | None = None
    parts_file_path: Path | None = None
    state_dir: Path | None = None
    thread_count: int = DEFAULT_THREADS
    split_size: int | None = None
    checksum: str = checksums.AUTO
    retries: int = RetryPolicy.attempts
    restart: bool = False
    upload_id: str | None = None
    no_overwrite: bool = False
    shard_spec: str | None = None
    shards: int | None = None
    dry_run: bool = False
    as_json: bool = False
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    quiet: bool = False
    verbose: bool = False

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.endpoint_url, self.profile, self.region)


def transfer_options(fn: F) -> F:
    """The options upload and copy share: state files, parts, retries, output. They reach the command as one
    ``opts: TransferOptions``."""
    for decorator in reversed([
        click.option("-b", "--bucket", help="S3 bucket."),
        click.option("-k", "--key", help="S3 key of the object to build (the full name, with its prefix)."),
        click.option("-m", "--meta-file-path", type=click.Path(path_type=Path),
                     help="The upload's meta file (JSON): created on the first run, read on every rerun. Without "
                          "-m and -a, the state folder keeps both (see --state-dir)."),
        click.option("-a", "--parts-file-path", type=click.Path(path_type=Path),
                     help="The log of finished parts (JSON Lines), appended to as parts finish. Goes with -m."),
        state_dir_option,
        click.option("-t", "--thread-count", type=click.IntRange(1, MAX_THREADS), default=DEFAULT_THREADS,
                     show_default=True, help="Parts (or small files) sent at once. Parts are streamed in 1 MiB "
                          "blocks: memory does not grow with SPLIT_SIZE."),
        click.option("-s", "--split-size", type=ByteSize(),
                     help=f"Part size in bytes (or 64M, 1G). Default {human(DEFAULT_PART_SIZE)}, raised when the "
                          "data would need more than 10,000 parts. Fixed at the start of an upload. A file of one "
                          "part goes in one PutObject."),
        click.option("--checksum", type=click.Choice(checksums.CHOICES, case_sensitive=False),
                     default=checksums.AUTO, show_default=True,
                     help="How each part is proven: auto picks CRC64NVME on AWS S3 (each part and the whole "
                          "file's checksum verified by S3) and MD5 on other stores (each part's ETag compared with "
                          "the MD5 of the bytes sent). CRC32C, CRC32 and SHA256 are S3's other checksums: stores "
                          "that lack them ignore them, and the run warns. A resumed upload keeps its checksum."),
        click.option("--retries", type=click.IntRange(1, 100), default=RetryPolicy.attempts, show_default=True,
                     help="Tries per request on transient failures (connection reset, timeout, 5xx, SlowDown), "
                          "with exponential backoff and jitter, before the run stops with exit 75."),
        click.option("--restart", is_flag=True,
                     help="Start a new upload even though META_FILE records one; the old parts log is kept aside."),
        click.option("--upload-id",
                     help="Adopt this multipart upload of the key (when META_FILE was lost): the parts the server "
                          "holds are checked against the source bytes before they are kept."),
        click.option("--no-overwrite", is_flag=True,
                     help="Refuse (exit 3) if an object exists at the key: checked before sending, and the "
                          "completion is conditional (If-None-Match) where the store supports it."),
        click.option("--shard", "shard_spec", metavar="I/N|auto|all",
                     help="Send only the parts of shard I of N (part p belongs to shard (p-1) mod N), for one upload "
                          "driven by the tasks of an array job that share META on a shared file system; auto reads "
                          "the task from SLURM, AWS Batch or a Kubernetes Indexed Job; all (or no --shard) finishes "
                          "whatever is left. The shard that finds every part held completes the upload."),
        click.option("--shards", type=click.IntRange(1, MAX_SHARDS),
                     help="With --shard auto: the number of shards, where the scheduler does not give it "
                          "(Kubernetes), or to take a SLURM task id as the shard index (a resubmission of some "
                          "indices)."),
        click.option("--dry-run", is_flag=True,
                     help="Print the plan (part size and why, parts, bytes, memory, requests) and send nothing."),
        click.option("--json", "as_json", is_flag=True,
                     help="Write JSON Lines events to stdout (started, part_done, retry, throttled, completed, "
                          "paused, error; file_done for each file of several) and a final summary object; nothing "
                          "else goes to stdout."),
        s3_options,
        output_options,
    ]):
        fn = decorator(fn)

    @functools.wraps(fn)
    def gather(*args: Any, **kwargs: Any) -> Any:
        names = {f.name for f in dataclasses.fields(TransferOptions)}
        opts = TransferOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k in names})
        return fn(*args, opts=opts, **kwargs)

    return gather  # type: ignore[return-value]


@cli.command(epilog="""\b
Examples:
  s3-multipart-upload upload input.bin s3://my-bucket/data/input.bin
  s3-multipart-upload upload run42/*.bam s3://my-bucket/runs/42/
  s3-multipart-upload upload --recursive ./checkpoints s3://my-bucket/ckpt/step-9000/ -t 16
  s3-multipart-upload upload -b my-bucket -k data/input.bin -f input.bin \\
      -m input.meta.json -a input.parts.jsonl
  s3-multipart-upload upload -b my-bucket -k data/input.bin -d ./chunks -p input_data_ \\
      -m input.meta.json -a input.parts.jsonl -t 4
  AWS_PROFILE=prod s3-multipart-upload upload --endpoint-url http://127.0.0.1:9000 big.tar s3://b/big.tar -s 128M
  s3-multipart-upload upload --dry-run big.tar s3://b/big.tar
  s3-multipart-upload upload --json -q big.tar s3://b/big.tar | jq .event

\b
Exit codes: 0 done, 2 bad input, 3 local state conflict, 4 upload gone (use --restart),
5 refused by the server, 75 temporary (rerun), 130 interrupted (rerun). Several files: the
most urgent code of the files' failures, in the order 1, 3, 4, 5, 2, 75, 130.""")
@click.argument("targets", nargs=-1, metavar="[FILE... s3://BUCKET/KEY-or-PREFIX/]")
@click.option("-r", "--recursive", is_flag=True,
              help="With DIR s3://BUCKET/PREFIX/: every file under DIR, each to PREFIX + its path relative to DIR.")
@click.option("-f", "--file-path", type=click.Path(path_type=Path), help="The file to upload.")
@click.option("-d", "--directory", type=click.Path(path_type=Path),
              help="Instead of -f: a folder of pre-split chunk files, uploaded as the parts of one object.")
@click.option("-p", "--prefix", help="With -d: upload the files whose names start with PREFIX, sorted by name.")
@click.option("--controller", metavar="URL",
              help="Upload through this upload controller (s3-multipart-upload serve) instead of with AWS "
                   "credentials: it chooses the bucket, key and part size and signs a URL per part. Needs --file-id.")
@click.option("--file-id", help="With --controller: the id of the file to upload, as the controller knows it.")
@click.option("--token-file", type=click.Path(path_type=Path),
              help=f"With --controller: a file holding the API token (or set {TOKEN_ENV}).")
@transfer_options
@handle_errors
def upload(targets: tuple[str, ...], recursive: bool, file_path: Path | None, directory: Path | None,
           prefix: str | None, controller: str | None, file_id: str | None, token_file: Path | None,
           opts: TransferOptions) -> None:
    """Upload a file (or a folder of chunk files, or many files) to S3, resumably.

    Splits a file into parts and sends them from THREADS threads; the upload's state (its meta
    file and the log of finished parts) lives in the state folder, or in -m and -a. If the run is
    interrupted, run the same command again and it sends only what is missing. With several files
    (a trailing slash on the destination, or --recursive) each file is an upload of its own. With
    --controller, no AWS credentials are needed: an upload controller signs a URL for each part.
    """
    shard = _shard_of(opts)
    if targets or recursive:
        _aws_form(targets, recursive, (file_path, directory, prefix, controller, opts.bucket, opts.key), opts, shard)
        return
    source = _source(file_path, directory, prefix)
    if controller is not None or file_id is not None or token_file is not None:
        _through_controller(source, controller, file_id, token_file, opts, shard)
        return
    _transfer(source, _need_bucket_and_key(opts), opts, shard=shard)


def _need_bucket_and_key(opts: TransferOptions) -> tuple[str, str]:
    for value, flag in ((opts.bucket, "-b' / '--bucket"), (opts.key, "-k' / '--key")):
        if not value:
            raise click.UsageError(f"Missing option '{flag}'.")
    assert opts.bucket is not None and opts.key is not None
    return opts.bucket, opts.key


def _aws_form(targets: tuple[str, ...], recursive: bool, others: tuple[Any, ...], opts: TransferOptions,
              shard: shards_.Shard | None) -> None:
    """``upload FILE s3://B/K``, ``upload FILE... s3://B/PREFIX/``, ``upload --recursive DIR s3://B/PREFIX/``."""
    if any(value is not None for value in others):
        raise BadInput("give FILE... s3://BUCKET/KEY, or -b/-k/-f (or -d/-p), not both",
                       "leave out -b, -k, -f, -d, -p and --controller")
    if len(targets) < 2:
        raise BadInput("give the file(s) to upload and then the destination, s3://BUCKET/KEY or s3://BUCKET/PREFIX/",
                       "for example: s3-multipart-upload upload input.bin s3://my-bucket/data/input.bin")
    bucket, key = parse_s3_target(targets[-1])
    files = [Path(t) for t in targets[:-1]]
    if len(files) == 1 and not recursive and key and not key.endswith("/"):
        _transfer(FileSource(files[0]), (bucket, key), opts, skip_identical=shard is None, shard=shard)
        return
    if key and not key.endswith("/"):
        raise BadInput(f"several files go under a prefix, and {targets[-1]} does not end with a slash",
                       f"write s3://{bucket}/{key}/")
    if opts.meta_file_path is not None or opts.parts_file_path is not None or opts.upload_id is not None or \
            shard is not None:
        raise BadInput("-m, -a, --upload-id and --shard name one upload, and this command makes one per file",
                       "leave them out (each file keeps its state in the state folder; see --state-dir)")
    _batch(items_of(files, key, recursive), bucket, key, opts)


def _through_controller(source: Source, controller: str | None, file_id: str | None, token_file: Path | None,
                        opts: TransferOptions, shard: shards_.Shard | None) -> None:
    """upload --controller: the controller's upload of the file (resumed or created), then the usual engine with a
    client that goes through the controller's presigned URLs."""
    if controller is None or file_id is None:
        raise BadInput("--controller URL and --file-id ID go together", "give both, or neither")
    not_here = [flag for flag, value in (("-b", opts.bucket), ("-k", opts.key), ("--upload-id", opts.upload_id),
                                         ("--endpoint-url", opts.endpoint_url), ("--profile", opts.profile),
                                         ("--region", opts.region), ("--no-overwrite", opts.no_overwrite))
                if value]
    if not_here:
        raise BadInput(f"{', '.join(not_here)} cannot go with --controller: the controller chooses the bucket and "
                       "key and holds the credentials", f"leave out {', '.join(not_here)}")
    if opts.checksum.upper() not in ("MD5", checksums.AUTO.upper()):
        raise BadInput("through a controller, parts are checked by MD5 only",
                       "leave out --checksum (S3 refuses unsigned x-amz-checksum headers on presigned URLs)")
    if not isinstance(source, FileSource):
        raise BadInput("--controller uploads a file: give -f FILE (not -d)")
    api = ControllerAPI(controller, read_token(token_file, os.environ.get(TOKEN_ENV)), pool_size=opts.thread_count + 2)
    meta_path, parts_path = _state_paths(opts, api.base_url, "", f"file-id:{file_id}", source,
                                         create=not opts.dry_run)
    meta = None if opts.restart else read_meta(meta_path)
    if meta is None and opts.dry_run:
        raise BadInput("--dry-run with --controller shows an upload in progress (its meta file); the controller "
                       "chooses the part size of a new one", "leave out --dry-run")
    size = source.plan(opts.split_size, fixed=False).total_size
    up = controller_upload(api, file_id, size, opts.split_size, opts.retries, meta, meta_path)
    opts = dataclasses.replace(opts, upload_id=up.upload_id, split_size=up.part_size)
    _transfer(source, (up.bucket, up.key), opts, clients=up.clients, state=(meta_path, parts_path),
              meta_extra={"controller": api.base_url, "fileId": file_id}, shard=shard)


@cli.command(epilog="""\b
Examples:
  # same store and credentials: the store copies the parts itself (UploadPartCopy)
  s3-multipart-upload copy --source s3://old-bucket/big.tar -b new-bucket -k big.tar \\
      -m big.meta.json -a big.parts.jsonl
  # from an S3-compatible store to AWS: each part is read (ranged GET) and uploaded
  s3-multipart-upload copy --source s3://archive/big.tar --source-endpoint-url https://minio.example:9000 \\
      --source-profile minio -b my-bucket -k big.tar -t 16

\b
Exit codes as for upload; 3 also when the source object changes during the copy.""")
@click.option("--source", "source_url", required=True, help="The object to copy: s3://BUCKET/KEY.")
@click.option("--source-endpoint-url", help="Endpoint of the source's store, if not the destination's.")
@click.option("--source-profile", help="AWS profile for the source, if not the destination's.")
@click.option("--source-region", help="Region of the source, if not the destination's.")
@click.option("--through-client", is_flag=True,
              help="Read each part with a ranged GET and upload it, even when the store could copy it itself.")
@transfer_options
@handle_errors
def copy(source_url: str, source_endpoint_url: str | None, source_profile: str | None, source_region: str | None,
         through_client: bool, opts: TransferOptions) -> None:
    """Copy an S3 object to another bucket, account or store in parts, resumably.

    Same state files and resume as upload. With one store and one set of credentials, the
    store copies each part (UploadPartCopy, no bytes through this machine); otherwise, or with
    --through-client, each part is read with a ranged GET and streamed to the upload, in 1 MiB
    blocks whatever the part size. Every read is conditional on the source's ETag: a source that changes
    mid-copy stops the copy (exit 3) instead of mixing two versions.
    """
    shard = _shard_of(opts)
    src = Endpoint(source_endpoint_url or opts.endpoint_url, source_profile or opts.profile,
                   source_region or opts.region)
    source = object_source(source_url, src, opts.endpoint, (opts.bucket, opts.key), through_client,
                           opts.thread_count + 2, RetryPolicy(attempts=opts.retries))
    _transfer(source, _need_bucket_and_key(opts), opts, shard=shard)


def _shard_of(opts: TransferOptions) -> shards_.Shard | None:
    """--shard/--shards, checked against the options a shard cannot take (before the controller fills any in)."""
    shard = shards_.parse(opts.shard_spec, opts.shards)
    if shard is not None:
        for flag, value in (("--restart", opts.restart), ("--upload-id", opts.upload_id)):
            if value:
                raise BadInput(f"{flag} cannot go with --shard: every task of the array would do it",
                               "run it once without --shard (that run sends the parts itself), or abort the upload "
                               "(s3-multipart-upload abort -m META -a PARTS) and start the shards on new -m/-a paths")
        if opts.meta_file_path is None and opts.state_dir is None:
            # The state folder in each machine's home would give each task an upload of its own.
            raise BadInput("--shard needs state that every task of the array shares",
                           "give -m and -a on a shared file system, or --state-dir on one")
    return shard


def _state_paths(opts: TransferOptions, endpoint: str, bucket: str, key: str, source: Source,
                 create: bool = True) -> tuple[Path, Path]:
    """-m and -a, or the upload's folder in the state folder."""
    meta, parts = opts.meta_file_path, opts.parts_file_path
    if meta is not None and parts is not None:
        return meta, parts
    if meta is not None or parts is not None:
        raise BadInput("-m and -a go together", "give both, or neither (the state folder then keeps them)")
    folder = state_folder(state_root(opts.state_dir), endpoint, bucket, key, source_id(source),
                          given_endpoint=opts.endpoint_url, create=create)
    return folder.meta, folder.parts


def _request(opts: TransferOptions, source: Source, bucket: str, key: str, meta: Path, parts: Path,
             checksum: tuple[str, str], **engine: Any) -> UploadRequest:
    """The engine's request: what the command decided (``engine``: such as skip_identical), and every option of
    TransferOptions whose name is a field of UploadRequest too, by that name (restart, upload_id, ...)."""
    decided: dict[str, Any] = {
        "bucket": bucket, "key": key, "source": source, "meta_path": meta, "parts_path": parts,
        "threads": opts.thread_count, "checksum": checksum[0], "checksum_why": checksum[1],
        # A measurement knob (bench/): MD5 sent as Content-MD5 from the first part, as the engine falls back to.
        "content_md5": os.environ.get("S3MU_CONTENT_MD5") == "1", **engine}
    same = {name: getattr(opts, name) for name in _PASSED_BY_NAME if name not in decided}
    return UploadRequest(**same, **decided)


_PASSED_BY_NAME = sorted({f.name for f in dataclasses.fields(TransferOptions)}
                         & {f.name for f in dataclasses.fields(UploadRequest)})


def _transfer(source: Source, dest: tuple[str, str], opts: TransferOptions, clients: ClientFactory | None = None,
              state: tuple[Path, Path] | None = None, meta_extra: dict[str, Any] | None = None,
              skip_identical: bool = False, shard: shards_.Shard | None = None) -> None:
    """One upload or copy: plan it (--dry-run) or run it, and say how it went."""
    bucket, key = dest
    clients = clients or ClientFactory(opts.endpoint, pool_size=opts.thread_count + 2)
    endpoint = resolved_endpoint(clients, opts.endpoint_url)
    meta_path, parts_path = state or _state_paths(opts, endpoint or "", bucket, key, source, create=not opts.dry_run)
    choice = checksums.choose(opts.checksum, endpoint, controller=meta_extra is not None and "controller" in meta_extra,
                              copy=isinstance(source, S3ObjectSource))
    request = _request(opts, source, bucket, key, meta_path, parts_path, choice, meta_extra=meta_extra or {},
                       skip_identical=skip_identical, shard=shard)
    if opts.dry_run:
        _show_plan(Uploader(request, clients).dry_run(), opts.as_json)
        return
    display = _setup_output(opts.quiet, opts.verbose)()
    events = JsonProgress(sys.stdout, display) if opts.as_json else None
    log = logging.getLogger("s3_multipart_upload")
    try:
        with _StopOnSignal():
            result = Uploader(request, clients, events or display, retry=RetryPolicy(attempts=opts.retries)).run()
    except BaseException as exc:
        display.close()
        if events is not None:
            _json_failure(events, failure_of(exc), {"bucket": bucket, "key": key})
        raise
    display.close()
    shard_done = shard is not None and not result.etag and not result.already_complete
    if result.already_complete:
        log.info("Nothing to do: s3://%s/%s is already complete.", bucket, key)
    elif shard_done:
        log.info("Shard %s done: sent %d parts (%s) in %.1f s; %s.", shard, result.parts_sent,
                 human(result.bytes_sent), result.seconds,
                 f"{result.parts_left} parts left to other shards" if result.parts_left else
                 f"every part is on the server, {result.completed_by} completes the upload")
    else:
        log.info("Done: s3://%s/%s, %s in %d parts; sent %d parts (%s) in %.1f s, %d already done, %d adopted.",
                 bucket, key, human(result.size), result.parts_total, result.parts_sent, human(result.bytes_sent),
                 result.seconds, result.parts_logged, result.parts_adopted)
    if events is not None:
        summary = result_json(result)
        if shard is not None:
            summary |= {"shard": str(shard), "partsLeft": result.parts_left, "completedBy": result.completed_by}
        if shard_done:
            events.event("summary", status="shard_done", exitCode=0, **summary)
            return
        events.event("completed", alreadyComplete=result.already_complete, **summary)
        events.event("summary", status="already_complete" if result.already_complete else "completed", exitCode=0,
                     **summary)


def _batch(items: list[Item], bucket: str, prefix: str, opts: TransferOptions) -> None:
    """Many files, each an upload of its own (batch.py), then one summary; exits with the most urgent code."""
    if opts.dry_run:
        raise BadInput("--dry-run shows the plan of one upload", "give one file and its key: FILE s3://BUCKET/KEY")
    clients = ClientFactory(opts.endpoint, pool_size=opts.thread_count + 2)
    endpoint = resolved_endpoint(clients, opts.endpoint_url)
    choice = checksums.choose(opts.checksum, endpoint)
    root = state_root(opts.state_dir)

    def prepare(item: Item) -> UploadRequest:
        source = FileSource(item.path)
        folder = state_folder(root, endpoint or "", bucket, item.key, source_id(source),
                              given_endpoint=opts.endpoint_url)
        return _request(opts, source, bucket, item.key, folder.meta, folder.parts, choice, skip_identical=True)

    display = _setup_output(opts.quiet, opts.verbose)
    log = logging.getLogger("s3_multipart_upload")
    if not opts.verbose:
        for handler in log.handlers:  # one line per file: the engine's own notes only when they warn
            handler.addFilter(lambda record: record.levelno >= logging.WARNING or record.name == log.name)
    events = JsonProgress(sys.stdout, NullProgress()) if opts.as_json else None

    def reporter(item: Item | None) -> Reporter:
        shown = display()
        if item is None and isinstance(shown, LogProgress):
            return NullProgress()  # one line per file (below), not one per part
        return shown

    def done(outcome: Outcome) -> None:
        where = f"s3://{bucket}/{outcome.item.key}"
        if outcome.result is not None:
            r = outcome.result
            log.info("%s: %s -> %s, %s%s.", "Already complete" if r.already_complete else "Done", outcome.item.path,
                     where, human(r.size), "" if r.already_complete else f", sent {human(r.bytes_sent)} in "
                     f"{r.parts_sent} parts in {r.seconds:.1f} s")
        elif outcome.failure is not None and outcome.started:
            log.error("%s (exit %d): %s -> %s: %s", "Paused" if outcome.failure.resumable else "Failed",
                      outcome.code, outcome.item.path, where, outcome.failure.message)
        if events is not None:
            fields: dict[str, Any] = {"file": str(outcome.item.path), "bucket": bucket, "key": outcome.item.key,
                                      "status": outcome.status, "exitCode": int(outcome.code)}
            if outcome.result is not None:
                fields.update(result_json(outcome.result))
            if outcome.failure is not None:
                fields.update(error=outcome.failure.message, hint=outcome.failure.hint)
            events.event("file_done", **fields)

    started = time.monotonic()
    batch = Batch(items, prepare, clients, opts.thread_count, RetryPolicy(attempts=opts.retries), reporter, done)
    with _StopOnSignal():
        outcomes = batch.run()
    counts = summary(outcomes, time.monotonic() - started)
    code = batch.exit_code
    log.log(logging.INFO if code == ExitCode.OK else logging.ERROR,
            "%d files to s3://%s/%s: %d completed, %d already complete, %d failed, %d not started; %s sent in %.1f s.",
            counts["files"], bucket, prefix, counts["completed"], counts["alreadyComplete"],
            counts["failed"], counts["notStarted"], human(counts["bytesSent"]), counts["seconds"])
    if events is not None:
        events.event("summary", status="completed" if code == ExitCode.OK else "error", exitCode=int(code),
                     bucket=bucket, **counts)
    if code != ExitCode.OK:
        first = next(o.failure for o in outcomes if o.code == code and o.failure is not None)
        failed = sum(1 for o in outcomes if o.failure is not None)
        raise _BatchFailed(code, f"{failed} of {len(outcomes)} files did not complete; the first with exit "
                           f"{int(code)}: {first.message}", first.hint)


class _BatchFailed(UploadError):
    def __init__(self, code: ExitCode, message: str, hint: str | None) -> None:
        super().__init__(message, hint)
        self.exit_code = code


def _json_failure(events: JsonProgress, failure: Failure, where: dict[str, Any]) -> None:
    code = int(failure.code)
    events.event("paused" if failure.resumable else "error", exitCode=code, error=failure.message, hint=failure.hint,
                 rerun=_rerun_command() if failure.resumable else None)
    events.event("summary", status="paused" if failure.resumable else "error", exitCode=code, error=failure.message,
                 **where)


def _show_plan(plan: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _emit_json(plan)
        return
    reqs = ", ".join(f"{n} {name}" for name, n in plan["requests"].items() if n)
    lines = [
        f"Plan for s3://{plan['bucket']}/{plan['key']} (dry run: nothing is sent)",
        f"  data:       {human(plan['bytes'])} ({plan['bytes']} bytes)",
        f"  part size:  {human(plan['partSize'])} ({plan['partSizeWhy']})",
        f"  parts:      {plan['parts']}" + (" (one PutObject)" if plan["singlePut"] else
                                           f", the last {human(plan['lastPartSize'])}"),
        f"  upload:     {plan['status']}" + (f" {plan['uploadId']}, {plan['partsLogged']} parts logged as done"
                                            if plan["uploadId"] else ""),
        f"  to send:    {human(plan['bytesToSend'])}",
        f"  threads:    {plan['threads']}; memory bound {human(plan['memoryBound'])} of part data in flight "
        "(threads x 1 MiB blocks: parts are streamed, never held whole)",
        f"  checksum:   {plan['checksum']} ({plan['checksumWhy']})",
        f"  requests:   {reqs}" + ("" if plan["status"] == "completed" else
                                       ", and a HeadObject unless the completion answer proves the object"),
    ]
    click.echo("\n".join(lines))


@cli.command(epilog="""\b
Examples:
  s3-multipart-upload status                      # every upload in the state folder
  s3-multipart-upload status -m input.meta.json -a input.parts.jsonl
  s3-multipart-upload status -m input.meta.json -a input.parts.jsonl --json""")
@click.option("-m", "--meta-file-path", type=click.Path(path_type=Path),
              help="The upload's meta file. Without it: the uploads in the state folder (from their files only).")
@click.option("-a", "--parts-file-path", type=click.Path(path_type=Path), help="The upload's parts log.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (without -m: one a line).")
@click.option("--token-file", type=click.Path(path_type=Path),
              help=f"For an upload through a controller: the API token (or set {TOKEN_ENV}).")
@state_dir_option
@s3_options
@handle_errors
def status(meta_file_path: Path | None, parts_file_path: Path | None, as_json: bool, token_file: Path | None,
           state_dir: Path | None, endpoint_url: str | None, profile: str | None, region: str | None) -> None:
    """Show where an upload stands: from its files, and from the server (ListParts). Sends no data.

    Without -m: every upload in the state folder (in progress, completed, aborted; age; bytes done).
    """
    if meta_file_path is None:
        _show_local(local_uploads(state_root(state_dir)), state_root(state_dir), as_json)
        return
    requests = _requester_for(meta_file_path, token_file, endpoint_url, profile, region)
    st = upload_status(meta_file_path, parts_file_path, requests)
    if as_json:
        _emit_json(st.to_json())
        return
    changed = {None: "unknown", True: "CHANGED since the upload began", False: "unchanged"}[st.source_changed]
    if st.source_missing:
        changed = "MISSING"
    total_parts = "?" if st.parts_total is None else str(st.parts_total)
    total_bytes = "?" if st.bytes_total is None else human(st.bytes_total)
    percent = "" if st.percent is None else f" ({st.percent:.1f} %)"
    server = {"in_progress": f"upload exists, holds {st.server_parts} parts "
                             f"({human(st.server_bytes or 0)})",
              "gone": "the upload no longer exists (aborted, expired or completed)",
              "not_checked": "not asked (the upload is " + st.state.replace("_", " ") + ")",
              "unreachable": f"could not ask: {st.server_error}"}[st.server]
    lines = [
        f"upload:   s3://{st.bucket}/{st.key}",
        f"id:       {st.upload_id or '(one PutObject)'}",
        f"status:   {st.state.replace('_', ' ')}",
        f"parts:    {st.parts_done}/{total_parts} done",
        f"bytes:    {human(st.bytes_done)} of {total_bytes}{percent}",
        f"source:   {st.source or 'unknown (historical meta file)'}: {changed}",
        f"server:   {server}",
    ]
    if st.shards:
        lines.append(f"shards:   {st.shards}" + (f"; parts logged in {len(st.shard_logs)} shard logs"
                                                   if st.shard_logs else ""))
    if st.checksum_algorithm:
        lines.append(f"checksum: {st.checksum_algorithm}" + (f", whole object {st.full_object_checksum} (compare with "
                                                             "head-object --checksum-mode ENABLED)"
                                                             if st.full_object_checksum else ""))
    if st.unlogged_on_server:
        lines.append(f"          parts on the server missing from the log (a rerun adopts them after checking): "
                     f"{ranges(st.unlogged_on_server)}")
    if st.logged_not_on_server:
        lines.append(f"          parts in the log the server does not hold (a rerun sends them again): "
                     f"{ranges(st.logged_not_on_server)}")
    click.echo("\n".join(lines))


@cli.command(epilog="""\b
Examples:
  s3-multipart-upload abort -m input.meta.json -a input.parts.jsonl""")
@click.option("-m", "--meta-file-path", required=True, type=click.Path(path_type=Path), help="The upload's meta file.")
@click.option("-a", "--parts-file-path", type=click.Path(path_type=Path),
              help="The upload's parts log (kept as it is, for the record).")
@click.option("--token-file", type=click.Path(path_type=Path),
              help=f"For an upload through a controller: the API token (or set {TOKEN_ENV}); the controller "
                   "marks the upload cancelled.")
@s3_options
@handle_errors
def abort(meta_file_path: Path, parts_file_path: Path | None, token_file: Path | None, endpoint_url: str | None,
          profile: str | None, region: str | None) -> None:
    """Abort the multipart upload META_FILE records, freeing the parts' storage; marks META aborted.

    Repeats the abort until ListParts finds nothing, as S3 advises. Safe to run twice.
    """
    del parts_file_path
    requests = _requester_for(meta_file_path, token_file, endpoint_url, profile, region)
    outcome = abort_upload(meta_file_path, requests)
    click.echo({"aborted": f"Aborted the upload in {meta_file_path}; its parts are deleted on the server.",
                "already_aborted": f"The upload in {meta_file_path} was already aborted.",
                "completed": f"The upload in {meta_file_path} is complete; there is nothing to abort."}[outcome])


@cli.command("list", epilog="""\b
Examples:
  s3-multipart-upload list                        # the uploads in the state folder
  s3-multipart-upload list -b my-bucket
  s3-multipart-upload list -b my-bucket --prefix backups/ --older-than 7d --json
  s3-multipart-upload list -b my-bucket --older-than 2d --abort --yes   # in a cron job""")
@click.option("-b", "--bucket", help="S3 bucket. Without it: the uploads in the state folder, from their files.")
@click.option("--prefix", default="", help="Only keys that start with PREFIX.")
@click.option("--older-than", help="Only uploads started longer ago than this: 90s, 30m, 12h, 7d, 2w.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines, one upload a line.")
@click.option("--abort", "do_abort", is_flag=True, help="Abort the listed uploads, after a confirmation prompt.")
@click.option("--yes", is_flag=True, help="With --abort: do not ask (for scripts).")
@state_dir_option
@s3_options
@handle_errors
def list_uploads(bucket: str | None, prefix: str, older_than: str | None, as_json: bool, do_abort: bool, yes: bool,
                 state_dir: Path | None, endpoint_url: str | None, profile: str | None, region: str | None) -> None:
    """List the multipart uploads in progress in a bucket: key, upload id, started, age, parts and bytes.

    Parts of unfinished uploads are billed until they are aborted; --abort cleans them up.
    Without -b: the uploads in the state folder (as `status` without -m; `clean` tidies it).
    """
    if bucket is None:
        if do_abort:
            raise BadInput("--abort goes with -b BUCKET", "for the state folder, use: s3-multipart-upload clean")
        root = state_root(state_dir)
        idle = parse_duration(older_than) if older_than else 0.0
        _show_local([u for u in local_uploads(root) if u.key.startswith(prefix) and u.age_seconds >= idle], root,
                    as_json)
        return
    requests = _requester(endpoint_url, profile, region)
    min_age = parse_duration(older_than) if older_than else None
    found = list_in_progress(requests, bucket, prefix, min_age)
    if as_json:
        for item in found:
            _emit_json(item.to_json())
    elif not found:
        click.echo(f"No multipart uploads in progress in s3://{bucket}/{prefix}"
                   + (f" older than {older_than}." if older_than else "."))
    else:
        table = Table(box=None, pad_edge=False)
        for col in ("KEY", "UPLOAD ID", "INITIATED", "AGE", "PARTS", "BYTES"):
            table.add_column(col, justify="right" if col in ("AGE", "PARTS", "BYTES") else "left", no_wrap=True)
        for item in found:
            table.add_row(item.key, item.upload_id, item.initiated.strftime("%Y-%m-%d %H:%M:%S"),
                          human_age(item.age_seconds), str(item.parts), human(item.bytes))
        Console(width=200 if not sys.stdout.isatty() else None).print(table, soft_wrap=True)
        click.echo(f"{len(found)} uploads, {human(sum(i.bytes for i in found))} in their parts.")
    if not do_abort or not found:
        return
    if not yes:
        if not sys.stdin.isatty():
            raise BadInput("--abort asks for confirmation, and standard input is not a terminal",
                           "add --yes to abort without asking")
        click.confirm(f"Abort these {len(found)} uploads and delete their parts?", abort=True, err=True)
    for item in found:
        abort_until_gone(requests, bucket, item.key, item.upload_id)
        click.echo(f"Aborted {item.key} {item.upload_id}", err=as_json)


def _show_local(uploads: list[LocalUpload], root: Path, as_json: bool) -> None:
    """The uploads of the state folder: a table, or JSON Lines."""
    if as_json:
        for u in uploads:
            _emit_json(u.to_json())
        return
    if not uploads:
        click.echo(f"No uploads in the state folder {root}.")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("STATUS", "AGE", "DONE", "SIZE", "DESTINATION", "SOURCE"):
        table.add_column(col, justify="right" if col in ("AGE", "DONE", "SIZE") else "left", no_wrap=True)
    for u in uploads:
        size = "?" if u.bytes_total is None else human(u.bytes_total)
        table.add_row(u.state.replace("_", " "), human_age(u.age_seconds), human(u.bytes_done), size,
                      f"s3://{u.bucket}/{u.key}", u.source)
    Console(width=250 if not sys.stdout.isatty() else None).print(table, soft_wrap=True)
    states = {s: sum(1 for u in uploads if u.state == s) for s in ("in_progress", "completed", "aborted", "new")}
    click.echo(f"{len(uploads)} uploads in {root}: " + ", ".join(f"{n} {s.replace('_', ' ')}"
                                                                 for s, n in states.items() if n) + ".")


@cli.command(epilog="""\b
Examples:
  s3-multipart-upload clean --older-than 7d
  s3-multipart-upload clean --older-than 2d --yes --state-dir /shared/s3mu-state   # in a cron job

\b
Exit codes: 0 done (or nothing to do), 2 bad option or no confirmation, 3 an upload is running,
5 or 75 an abort failed; the most urgent of them.""")
@click.option("--older-than", required=True,
              help="Only uploads that have not moved for this long: 90s, 30m, 12h, 7d, 2w.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@state_dir_option
@s3_options
@handle_errors
def clean(older_than: str, yes: bool, state_dir: Path | None, endpoint_url: str | None, profile: str | None,
          region: str | None) -> None:
    """Tidy the state folder: remove the state of finished uploads (completed or aborted), and abort the
    abandoned ones (in progress, idle for longer than --older-than) on the server, then remove their state.

    An upload a running process holds is left alone. The endpoint of each upload is the one it was made
    with (--endpoint-url overrides it); credentials come from the usual chain (--profile, AWS_*).
    """
    root = state_root(state_dir)
    min_age = parse_duration(older_than)
    found = [u for u in local_uploads(root) if u.age_seconds >= min_age]
    if not found:
        click.echo(f"Nothing in the state folder {root} has been idle for {older_than}.")
        return
    _show_local(found, root, as_json=False)
    aborts = sum(1 for u in found if u.state == "in_progress" and u.upload_id)
    if not yes:
        if not sys.stdin.isatty():
            raise BadInput("clean asks for confirmation, and standard input is not a terminal",
                           "add --yes to clean without asking")
        click.confirm(f"Remove the state of these {len(found)} uploads" +
                      (f", aborting the {aborts} in progress on the server" if aborts else "") + "?", abort=True,
                      err=True)

    def requests(upload: LocalUpload) -> Callable[[Meta], Requester]:
        given = endpoint_url or upload.folder.record().get("endpointUrl")
        endpoint = Endpoint(given if isinstance(given, str) else None, profile, region)
        return lambda meta: Requester(clients_for(meta, upload.folder.meta, None, endpoint))

    codes = []
    for upload in found:
        try:
            done = clean_upload(upload, requests(upload))
        except UploadError as exc:
            failure = failure_of(exc)
            codes.append(failure.code)
            click.echo(f"Kept s3://{upload.bucket}/{upload.key} ({upload.folder.path}): {failure.message}", err=True)
            continue
        click.echo(f"{done.capitalize()}: s3://{upload.bucket}/{upload.key} ({upload.folder.path.name})")
    code = most_urgent(codes)
    if code != ExitCode.OK:
        raise _BatchFailed(code, f"{len(codes)} of {len(found)} uploads were kept", "see the lines above")


@cli.command(epilog="""\b
Examples:
  # tokens file: one 'PRINCIPAL TOKEN' per line
  s3-multipart-upload serve --bucket uploads --tokens-file tokens.txt
  s3-multipart-upload serve --bucket uploads --tokens-file tokens.txt --host 0.0.0.0 --port 8080 \\
      --database-url postgresql://ucs:secret@db.internal:5432/ucs --url-expiry 30m
  S3MU_API_TOKENS='alice 8c2a...f1' s3-multipart-upload serve --bucket b --endpoint-url http://127.0.0.1:9000

\b
Exit codes: 0 stopped, 2 bad option or tokens file, 75 database unreachable.""")
@click.option("--bucket", required=True, help="The bucket every upload goes to.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port to listen on.")
@click.option("--database-url", envvar="S3MU_DATABASE_URL", default="sqlite:///s3mu-controller.sqlite3",
              show_default=True,
              help="sqlite:///PATH (a file, nothing to install) or postgresql://USER:PASSWORD@HOST:PORT/DB (several "
                   "instances behind a load balancer). The schema is created or migrated at start. "
                   "Also S3MU_DATABASE_URL.")
@click.option("--tokens-file", type=click.Path(path_type=Path),
              help="API tokens: one 'PRINCIPAL TOKEN' per line (# comments). Also, or instead: S3MU_API_TOKENS.")
@click.option("--part-size", type=ByteSize(), default="16M", show_default=True,
              help="Part size handed to clients; raised for files whose declared size needs more than 10,000 parts.")
@click.option("--url-expiry", default="15m", show_default=True,
              help="How long a presigned URL stays valid: 90s, 15m, 1h (at most 7d).")
@click.option("--key-prefix", default="", help="Prefix of every key the service writes (users/..., files/...).")
@click.option("--max-pending-uploads", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Pending uploads one principal may have at once; one more is refused (409 TooManyPendingUploads) "
                   "until one is completed or cancelled.")
@s3_options
@output_options
@handle_errors
def serve(bucket: str, host: str, port: int, database_url: str, tokens_file: Path | None, part_size: int,
          url_expiry: str, key_prefix: str, max_pending_uploads: int, endpoint_url: str | None, profile: str | None,
          region: str | None, quiet: bool, verbose: bool) -> None:
    """Run the upload controller: presigned multipart uploads for clients without AWS credentials.

    The service holds the credentials (boto3's usual chain: AWS_*, --profile, SSO) and keeps
    every upload's status in a database; clients with an API token get presigned URLs and
    upload the parts straight to S3. OpenAPI document: /openapi.json; interactive: /docs.
    """
    try:
        from s3_multipart_upload.service.server import ServeConfig, run
    except ImportError as exc:
        raise BadInput(f"the service needs packages that are not installed ({exc.name})",
                       "pip install 's3-multipart-upload[server]'") from exc
    _setup_output(quiet, verbose)
    expiry = parse_duration(url_expiry)
    if not 1 <= expiry <= 7 * 86400:
        raise BadInput(f"--url-expiry {url_expiry} is outside S3's limits for presigned URLs (1 s to 7 days)")
    config = ServeConfig(bucket=bucket, database_url=database_url, tokens_file=tokens_file,
                         tokens_env=os.environ.get("S3MU_API_TOKENS"), endpoint_url=endpoint_url, profile=profile,
                         region=region, part_size=part_size, url_expiry=int(expiry), key_prefix=key_prefix,
                         max_pending=max_pending_uploads)
    run(config, host, port)


def _source(file_path: Path | None, directory: Path | None, prefix: str | None) -> Source:
    if file_path is not None and directory is not None:
        raise BadInput("give either -f FILE or -d DIR -p PREFIX, not both")
    if file_path is not None:
        if prefix is not None:
            raise BadInput("-p PREFIX goes with -d DIR, not with -f FILE")
        return FileSource(file_path)
    if directory is not None:
        if prefix is None:
            raise BadInput("-d DIR needs -p PREFIX: the start of the chunk files' names (use -p '' for all files)")
        return ChunkDirSource(directory, prefix)
    raise BadInput("nothing to upload: give -f FILE, or -d DIR -p PREFIX")


def main() -> None:
    cli(prog_name=PROG)


if __name__ == "__main__":
    main()
