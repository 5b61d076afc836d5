"""What every command shares: the one failure map (an exception to its message and exit code), the terminal
output set-up, the stop on a signal, and the options several commands take."""

from __future__ import annotations

import functools
import logging
import os
import shlex
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
from rich.console import Console

from s3_multipart_upload import checksums
from s3_multipart_upload.errors import ExitCode, Failure, UploadError, failure_of
from s3_multipart_upload.options import DEFAULT_THREADS, MAX_THREADS, PROPERTY_OPTIONS, TransferOptions
from s3_multipart_upload.plan import DEFAULT_PART_SIZE, MAX_PARTS, human, parse_size
from s3_multipart_upload.progress import LOG_FORMAT, BarProgress, ConsoleHandler, LogProgress, NullProgress, Reporter
from s3_multipart_upload.properties import ACLS, LEGAL_HOLD, LOCK_MODES, SSE, STORAGE_CLASSES
from s3_multipart_upload.s3 import ADDRESSING_STYLES, RetryPolicy
from s3_multipart_upload.shard import MAX_SHARDS

F = TypeVar("F", bound=Callable[..., Any])
PROG = "s3-multipart-upload"
LOGGER = "s3_multipart_upload"


class ByteSize(click.ParamType):  # type: ignore[type-arg]
    """Bytes as a whole number, or with a binary suffix: 64M, 64MiB, 1G."""

    name = "BYTES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        size = parse_size(value)
        if size is None:
            self.fail(f"{value!r} is not a size in bytes (examples: 67108864, 64M, 64MiB, 1G)", param, ctx)
        return size


def rerun_command() -> str:
    """The command that resumes this run: the same one, less --restart (which would start over)."""
    return shlex.join([PROG, *(arg for arg in sys.argv[1:] if arg != "--restart")])


def report(failure: Failure) -> None:
    click.echo(f"error: {failure.message}", err=True)
    if failure.hint:
        click.echo(f"  hint: {failure.hint}", err=True)
    if failure.resumable:
        click.echo(f"  to resume, rerun: {rerun_command()}", err=True)


def handle_errors(fn: F) -> F:
    """The one place that turns a failure into its message and exit code (DESIGN.md, Exit codes)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            failure = failure_of(exc)
            if failure.code == ExitCode.BUG and not isinstance(exc, UploadError) and \
                    logging.getLogger(LOGGER).isEnabledFor(logging.DEBUG):
                traceback.print_exc()  # a bug: the traceback only when asked (-v)
            report(failure)
            ctx.exit(int(failure.code))

    return wrapper  # type: ignore[return-value]


def setup_output(quiet: bool, verbose: bool) -> Callable[[], Reporter]:
    """Logging for this run, and a maker of its progress display: a bar on a terminal, log lines otherwise."""
    logger = logging.getLogger(LOGGER)
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


class StopOnSignal:
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
        report(Failure(ExitCode.INTERRUPTED, "stopped at once; every finished part is in the parts log"))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(ExitCode.INTERRUPTED))

    def __enter__(self) -> StopOnSignal:
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


_addressing_style = click.option(
    "--addressing-style", type=click.Choice(ADDRESSING_STYLES),
    help="path (https://host/bucket/key) or virtual (https://bucket.host/key) requests, or auto. Default: the AWS "
         "config file's s3.addressing_style, else path with --endpoint-url.")
_ca_bundle = click.option(
    "--ca-bundle", type=click.Path(path_type=Path, dir_okay=False),
    help="A PEM file of the CA certificates to trust for the store's TLS certificate (a private CA); also "
         "AWS_CA_BUNDLE.")
_no_verify_ssl = click.option(
    "--no-verify-ssl", is_flag=True,
    help="Do not check the store's TLS certificate (warned: anyone on the way can read and change the data). "
         "Prefer --ca-bundle.")
STORE_OPTIONS = ("addressing_style", "ca_bundle", "no_verify_ssl")


def store_options(fn: F) -> F:
    """--addressing-style, --ca-bundle, --no-verify-ssl on the commands that ask the store about uploads and objects
    (status, list, abort, clean, verify), handed to the command as ``store``: the API's keyword arguments."""
    for decorator in (_no_verify_ssl, _ca_bundle, _addressing_style):
        fn = decorator(fn)

    @functools.wraps(fn)
    def gather(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, store={name: kwargs.pop(name) for name in STORE_OPTIONS}, **kwargs)

    return gather  # type: ignore[return-value]


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


@dataclass(frozen=True)
class Transfer:
    """What upload and copy were asked besides their source: the destination, the API's options (``options``,
    by their API names), and how to show the run."""

    bucket: str | None
    key: str | None
    options: TransferOptions
    dry_run: bool = False
    as_json: bool = False
    quiet: bool = False
    verbose: bool = False

    def need_bucket_and_key(self) -> tuple[str, str]:
        for value, flag in ((self.bucket, "-b' / '--bucket"), (self.key, "-k' / '--key")):
            if not value:
                raise click.UsageError(f"Missing option '{flag}'.")
        assert self.bucket is not None and self.key is not None
        return self.bucket, self.key


def _choice(values: tuple[str, ...]) -> click.Choice:  # type: ignore[type-arg]
    return click.Choice(values, case_sensitive=False)


# The object's properties (properties.py checks them): aws-cli's names, on upload and copy.
property_options = [
    click.option("--content-type", help="Content-Type of the object. Default: guessed from the file's name, as "
                 "aws-cli does (a copy keeps the source's)."),
    click.option("--no-guess-mime-type", "guess_mime_type", flag_value=False, default=True,
                 help="Do not guess the Content-Type from the file's name (S3 then stores binary/octet-stream)."),
    click.option("--content-encoding", help="Content-Encoding of the object (gzip, ...)."),
    click.option("--content-language", help="Content-Language of the object."),
    click.option("--content-disposition", help="Content-Disposition of the object (attachment; filename=...)."),
    click.option("--cache-control", help="Cache-Control of the object (max-age=3600, ...)."),
    click.option("--expires", help="Expires of the object: ISO 8601 (2030-01-31T00:00:00Z) or an HTTP date."),
    click.option("--metadata", multiple=True, metavar="KEY=VALUE",
                 help="User metadata (x-amz-meta-KEY): repeat it, or give one JSON object. At most 2 KB in all."),
    click.option("--storage-class", type=_choice(STORAGE_CLASSES),
                 help="Storage class of the object (default: the bucket's, STANDARD)."),
    click.option("--tagging", help="Tags, URL-encoded: 'project=x&team=y' (at most 10 in all)."),
    click.option("--tag", multiple=True, metavar="KEY=VALUE", help="A tag; repeat it for more (with --tagging too)."),
    click.option("--acl", type=_choice(ACLS), help="A canned ACL (bucket-owner-full-control for another "
                 "account's bucket)."),
    click.option("--sse", type=_choice(SSE), help="Server-side encryption: AES256 (SSE-S3), aws:kms (SSE-KMS) or "
                 "aws:kms:dsse (DSSE-KMS)."),
    click.option("--sse-kms-key-id", help="With --sse aws:kms: the KMS key (id, ARN or alias); default: the "
                 "account's aws/s3 key."),
    click.option("--sse-kms-encryption-context", metavar="JSON",
                 help="With --sse aws:kms: the encryption context, a JSON object of strings."),
    click.option("--bucket-key-enabled", is_flag=True, default=None,
                 help="With --sse aws:kms: use an S3 Bucket Key (fewer KMS requests)."),
    click.option("--sse-c-key-file", type=click.Path(path_type=Path),
                 help="SSE-C: a file holding the 32-byte key (never on the command line). Sent with every request "
                      "that needs it; only its MD5 is recorded, so a rerun with another key is refused."),
    click.option("--object-lock-mode", type=_choice(LOCK_MODES),
                 help="Object Lock retention mode, with --object-lock-retain-until-date."),
    click.option("--object-lock-retain-until-date", metavar="DATE",
                 help="Object Lock: keep the object until this date (ISO 8601), with --object-lock-mode."),
    click.option("--object-lock-legal-hold", type=_choice(LEGAL_HOLD), help="Object Lock legal hold: ON or OFF."),
    click.option("--expected-bucket-owner", metavar="ACCOUNT",
                 help="Every request says the bucket must belong to this account id (403 otherwise)."),
    click.option("--request-payer", type=_choice(("requester",)),
                 help="requester: this account pays for the requests (requester-pays buckets)."),
]


# click's parameter names that are not the API's option names.
_RENAMED = {"shard_spec": "shard"}
_OUTPUT = ("dry_run", "as_json", "quiet", "verbose")


def transfer_options(fn: F) -> F:
    """The options upload and copy share: state files, parts, retries, output. They reach the command as one
    ``run: Transfer``; an option of the API's TransferOptions needs only its click.option here."""
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
                          "file's checksum verified by S3) and on other stores that verify it (a new multipart "
                          "upload asks with one empty request carrying a wrong CRC64NVME), else MD5 (each part's "
                          "ETag compared with the MD5 of the bytes sent). CRC32C, CRC32 and SHA256 are S3's other "
                          "checksums: stores that lack them ignore them, and the run warns. A resumed upload keeps "
                          "its checksum."),
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
        click.option("--max-bandwidth", metavar="RATE",
                     help="At most this rate for the whole command, all threads and files together: 50MB/s, "
                          "100MiB/s, 800Mb/s (MB is 10^6 bytes, MiB 2^20, Mb or Mbit 10^6 bits)."),
        click.option("--dry-run", is_flag=True,
                     help="Print the plan (part size and why, parts, bytes, memory, requests) and send nothing."),
        click.option("--json", "as_json", is_flag=True,
                     help="Write JSON Lines events to stdout (started, part_done, retry, throttled, completed, "
                          "paused, error; file_done for each file of several) and a final summary object; nothing "
                          "else goes to stdout."),
        *property_options,
        s3_options,
        _addressing_style,
        _ca_bundle,
        click.option("--max-parts", type=click.IntRange(1, MAX_PARTS), default=MAX_PARTS, show_default=True,
                     help="The most parts the store takes in one upload (Scaleway: 1000): the part size is raised "
                          "to fit (as for S3's 10,000), and -d with more chunk files is refused."),
        click.option("--equal-parts", is_flag=True,
                     help="The store needs every part but the last of one size, and the last no larger (R2): -d "
                          "with chunk files of other sizes is refused (exit 2), naming them. A file's parts are "
                          "always equal."),
        _no_verify_ssl,
        output_options,
    ]):
        fn = decorator(fn)

    names = set(TransferOptions.__annotations__)

    @functools.wraps(fn)
    def gather(*args: Any, **kwargs: Any) -> Any:
        options: dict[str, Any] = {}
        for name in list(kwargs):
            if _RENAMED.get(name, name) in names:
                value = kwargs.pop(name)
                if name in PROPERTY_OPTIONS and value in (None, ()):
                    continue  # not given: the API's default (an option given is recorded in META)
                options[_RENAMED.get(name, name)] = value
        output = {name: kwargs.pop(name) for name in _OUTPUT}
        run = Transfer(kwargs.pop("bucket"), kwargs.pop("key"), options, **output)  # type: ignore[arg-type]
        return fn(*args, run=run, **kwargs)

    return gather  # type: ignore[return-value]
