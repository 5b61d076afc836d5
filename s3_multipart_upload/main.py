"""The command line: parse, build a request, call the engine, turn errors into exit codes. Nothing else.

    s3-multipart-upload upload -b BUCKET -k KEY -f FILE -m META_FILE -a PARTS_FILE [-t THREADS] [-s SPLIT_SIZE]

Also ``python -m s3_multipart_upload`` and, as the historical tool was run,
``python s3_multipart_upload/main.py`` (once the package is installed).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shlex
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, TypeVar

import click
from rich.console import Console

from s3_multipart_upload import __version__
from s3_multipart_upload.checksums import ALGORITHMS
from s3_multipart_upload.errors import BadInput, ExitCode, Interrupted, UploadError
from s3_multipart_upload.plan import DEFAULT_PART_SIZE, human
from s3_multipart_upload.progress import LOG_FORMAT, BarProgress, ConsoleHandler, LogProgress, NullProgress, Reporter
from s3_multipart_upload.s3 import ClientFactory, Endpoint, RetryPolicy
from s3_multipart_upload.sources import ChunkDirSource, FileSource, Source
from s3_multipart_upload.uploader import Uploader, UploadRequest

F = TypeVar("F", bound=Callable[..., Any])
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
    return shlex.join([PROG, *sys.argv[1:]])


def _report(exc: UploadError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"  hint: {exc.hint}", err=True)
    if exc.exit_code in (ExitCode.TEMPORARY, ExitCode.INTERRUPTED):
        click.echo(f"  to resume, rerun: {_rerun_command()}", err=True)


def handle_errors(fn: F) -> F:
    """The one place that maps exceptions to exit codes and messages (DESIGN.md, Exit codes)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except UploadError as exc:
            _report(exc)
            if isinstance(exc, Interrupted) and exc.at_once:
                # Parts were left in flight; their threads would hold the process open. Every
                # finished part is already fsync'd in the log.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(int(exc.exit_code))
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            _report(Interrupted("interrupted"))
            ctx.exit(int(ExitCode.INTERRUPTED))
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:  # a bug: say so, and show the traceback only when asked
            click.echo(f"error: unexpected {type(exc).__name__}: {exc}", err=True)
            if logging.getLogger("s3_multipart_upload").isEnabledFor(logging.DEBUG):
                traceback.print_exc()
            else:
                click.echo("  hint: this is a bug; rerun with -v and report the output", err=True)
            ctx.exit(int(ExitCode.BUG))

    return wrapper  # type: ignore[return-value]


def _setup_output(quiet: bool, verbose: bool) -> Reporter:
    """Logging and progress for this run: a bar on a terminal, log lines otherwise."""
    logger = logging.getLogger("s3_multipart_upload")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.propagate = False
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    logger.setLevel(level)
    reporter: Reporter
    handler: logging.Handler
    if sys.stderr.isatty() and not quiet:
        console = Console(stderr=True)
        handler = ConsoleHandler(console)
        reporter = BarProgress(console)
    else:
        handler = logging.StreamHandler(sys.stderr)
        reporter = NullProgress() if quiet else LogProgress()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    return reporter


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same orderly stop as Ctrl-C


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Resumable, parallel multipart uploads to S3 and S3-compatible stores.

    Rerun the same command after any interruption and the upload goes on where it stopped.
    """


@cli.command(epilog="""\b
Examples:
  s3-multipart-upload upload -b my-bucket -k data/input.bin -f input.bin \\
      -m input.meta.json -a input.parts.jsonl
  s3-multipart-upload upload -b my-bucket -k data/input.bin -d ./chunks -p input_data_ \\
      -m input.meta.json -a input.parts.jsonl -t 4
  AWS_PROFILE=prod s3-multipart-upload upload --endpoint-url http://127.0.0.1:9000 \\
      -b b -k big.tar -f big.tar -m big.meta.json -a big.parts.jsonl -s 128M

\b
Exit codes: 0 done, 2 bad input, 3 local state conflict, 4 upload gone (use --restart),
5 refused by the server, 75 temporary (rerun), 130 interrupted (rerun).""")
@click.option("-b", "--bucket", required=True, help="S3 bucket.")
@click.option("-k", "--key", required=True, help="S3 key of the object to build (the full name, with its prefix).")
@click.option("-f", "--file-path", type=click.Path(path_type=Path), help="The file to upload.")
@click.option("-d", "--directory", type=click.Path(path_type=Path),
              help="Instead of -f: a folder of pre-split chunk files, uploaded as the parts of one object.")
@click.option("-p", "--prefix", help="With -d: upload the files whose names start with PREFIX, sorted by name.")
@click.option("-m", "--meta-file-path", required=True, type=click.Path(path_type=Path),
              help="The upload's meta file (JSON): created on the first run, read on every rerun.")
@click.option("-a", "--parts-file-path", required=True, type=click.Path(path_type=Path),
              help="The log of finished parts (JSON Lines), appended to as parts finish.")
@click.option("-t", "--thread-count", type=click.IntRange(1, MAX_THREADS), default=DEFAULT_THREADS, show_default=True,
              help="Parts sent at once. Memory use is about THREADS x SPLIT_SIZE.")
@click.option("-s", "--split-size", type=ByteSize(),
              help=f"Part size in bytes (or 64M, 1G). Default {human(DEFAULT_PART_SIZE)}, raised when the file "
                   "would need more than 10,000 parts. Fixed at the start of an upload.")
@click.option("--checksum", type=click.Choice(ALGORITHMS, case_sensitive=False), default="MD5", show_default=True,
              help="Checksum the server verifies for each part: MD5 (Content-MD5, checked by every S3-compatible "
                   "store), or CRC32/SHA256 (S3's additional checksums; stores that lack them ignore them).")
@click.option("--retries", type=click.IntRange(1, 100), default=RetryPolicy.attempts, show_default=True,
              help="Tries per request on transient failures (connection reset, timeout, 5xx, SlowDown), with "
                   "exponential backoff and jitter, before the run stops with exit 75.")
@click.option("--restart", is_flag=True,
              help="Start a new upload even though META_FILE records one; the old parts log is kept aside.")
@click.option("--endpoint-url", help="S3 endpoint for S3-compatible stores (also AWS_ENDPOINT_URL).")
@click.option("--profile", help="AWS profile (also AWS_PROFILE).")
@click.option("--region", help="AWS region (also AWS_REGION / AWS_DEFAULT_REGION).")
@click.option("-q", "--quiet", is_flag=True, help="Print errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Print debug output, and tracebacks for unexpected errors.")
@handle_errors
def upload(
    bucket: str, key: str, file_path: Path | None, directory: Path | None, prefix: str | None, meta_file_path: Path,
    parts_file_path: Path, thread_count: int, split_size: int | None, checksum: str, retries: int, restart: bool,
    endpoint_url: str | None, profile: str | None, region: str | None, quiet: bool, verbose: bool,
) -> None:
    """Upload a file (or a folder of chunk files) as one S3 object, resumably.

    Splits the file into parts and sends them from THREADS threads. META_FILE records the
    upload and PARTS_FILE every finished part; if the run is interrupted, run the same
    command again and it sends only what is missing.
    """
    source = _source(file_path, directory, prefix)
    reporter = _setup_output(quiet, verbose)
    signal.signal(signal.SIGTERM, _on_sigterm)
    request = UploadRequest(
        bucket=bucket, key=key, source=source, meta_path=meta_file_path, parts_path=parts_file_path,
        threads=thread_count, split_size=split_size, checksum=checksum.upper(), restart=restart,
    )
    clients = ClientFactory(Endpoint(endpoint_url, profile, region), pool_size=thread_count + 2)
    try:
        result = Uploader(request, clients, reporter, retry=RetryPolicy(attempts=retries)).run()
    finally:
        reporter.close()
    log = logging.getLogger("s3_multipart_upload")
    if result.already_complete:
        log.info("Nothing to do: s3://%s/%s is already complete.", bucket, key)
    else:
        log.info("Done: s3://%s/%s, %s in %d parts; sent %d parts (%s) in %.1f s, %d already done, %d adopted.",
                 bucket, key, human(result.size), result.parts_total, result.parts_sent, human(result.bytes_sent),
                 result.seconds, result.parts_logged, result.parts_adopted)


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
