"""The command line: parse, build a request, call the engine, turn errors into exit codes. Nothing else.

    s3-multipart-upload upload -b BUCKET -k KEY -f FILE -m META_FILE -a PARTS_FILE [-t THREADS] [-s SPLIT_SIZE]

Also ``python -m s3_multipart_upload`` and, as the historical tool was run,
``python s3_multipart_upload/main.py`` (once the package is installed).
"""

from __future__ import annotations

import functools
import json
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
from rich.table import Table

from s3_multipart_upload import __version__, checksums
from s3_multipart_upload.controller import TOKEN_ENV, ControllerAPI, ControllerClients, read_token
from s3_multipart_upload.errors import (
    BadInput,
    ExitCode,
    Interrupted,
    ServerRefused,
    StateConflict,
    TemporaryFailure,
    UploadError,
)
from s3_multipart_upload.operations import abort as abort_upload
from s3_multipart_upload.operations import (
    abort_until_gone,
    human_age,
    list_in_progress,
    parse_duration,
    upload_status,
)
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
from s3_multipart_upload.s3 import (
    ClientFactory,
    Endpoint,
    Kind,
    Requester,
    RetryPolicy,
    as_upload_error,
    classify,
    describe,
    error_code,
)
from s3_multipart_upload.sources import ChunkDirSource, FileSource, S3ObjectSource, Source, parse_s3_url
from s3_multipart_upload.state import read_meta
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


class _StopOnSignal:
    """SIGINT and SIGTERM: the first one is an orderly stop (KeyboardInterrupt in the main thread, wherever
    it is); the second one exits at once, from here, whatever the main thread is waiting for. Every
    finished part is already fsync'd in the log, so nothing is lost."""

    def __init__(self) -> None:
        self.received = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        if self.received == 1:
            raise KeyboardInterrupt
        _report(Interrupted("stopped at once; every finished part is in the parts log"))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(ExitCode.INTERRUPTED))


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


def _requester(endpoint_url: str | None, profile: str | None, region: str | None, pool: int = 4) -> Requester:
    return Requester(ClientFactory(Endpoint(endpoint_url, profile, region), pool_size=pool))


def _requester_for(meta_path: Path, token_file: Path | None, endpoint_url: str | None, profile: str | None,
                   region: str | None) -> Requester:
    """S3 directly, or, for an upload made through a controller (its META says which), that controller."""
    meta = read_meta(meta_path)
    controller = meta.extra.get("controller") if meta is not None else None
    if meta is None or not isinstance(controller, str):
        if token_file is not None:
            raise BadInput(f"--token-file is for uploads through a controller, and {meta_path} is not one",
                           "leave out --token-file")
        return _requester(endpoint_url, profile, region)
    api = ControllerAPI(controller, read_token(token_file, os.environ.get(TOKEN_ENV)))
    return Requester(ControllerClients(api, meta.upload_id or ""))


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Resumable, parallel multipart uploads to S3 and S3-compatible stores.

    Rerun the same command after any interruption and the upload goes on where it stopped.
    `status` shows where an upload stands, `abort` stops paying for one, `list` finds the
    forgotten ones in a bucket.
    """


def transfer_options(fn: F) -> F:
    """The options upload and copy share: state files, parts, retries, output."""
    for decorator in reversed([
        click.option("-b", "--bucket", help="S3 bucket."),
        click.option("-k", "--key", help="S3 key of the object to build (the full name, with its prefix)."),
        click.option("-m", "--meta-file-path", required=True, type=click.Path(path_type=Path),
                     help="The upload's meta file (JSON): created on the first run, read on every rerun."),
        click.option("-a", "--parts-file-path", required=True, type=click.Path(path_type=Path),
                     help="The log of finished parts (JSON Lines), appended to as parts finish."),
        click.option("-t", "--thread-count", type=click.IntRange(1, MAX_THREADS), default=DEFAULT_THREADS,
                     show_default=True, help="Parts sent at once. Parts are streamed in 1 MiB blocks: memory "
                          "does not grow "
                          "with SPLIT_SIZE."),
        click.option("-s", "--split-size", type=ByteSize(),
                     help=f"Part size in bytes (or 64M, 1G). Default {human(DEFAULT_PART_SIZE)}, raised when the "
                          "data would need more than 10,000 parts. Fixed at the start of an upload."),
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
        click.option("--dry-run", is_flag=True,
                     help="Print the plan (part size and why, parts, bytes, memory, requests) and send nothing."),
        click.option("--json", "as_json", is_flag=True,
                     help="Write JSON Lines events to stdout (started, part_done, retry, throttled, completed, "
                          "paused, error) and a final summary object; nothing else goes to stdout."),
        s3_options,
        output_options,
    ]):
        fn = decorator(fn)
    return fn


@cli.command(epilog="""\b
Examples:
  s3-multipart-upload upload -b my-bucket -k data/input.bin -f input.bin \
      -m input.meta.json -a input.parts.jsonl
  s3-multipart-upload upload -b my-bucket -k data/input.bin -d ./chunks -p input_data_ \
      -m input.meta.json -a input.parts.jsonl -t 4
  AWS_PROFILE=prod s3-multipart-upload upload --endpoint-url http://127.0.0.1:9000 \
      -b b -k big.tar -f big.tar -m big.meta.json -a big.parts.jsonl -s 128M
  s3-multipart-upload upload --dry-run -b b -k big.tar -f big.tar -m big.meta.json -a big.parts.jsonl
  s3-multipart-upload upload --json -q -b b -k big.tar -f big.tar -m m.json -a p.jsonl | jq .event

\b
Exit codes: 0 done, 2 bad input, 3 local state conflict, 4 upload gone (use --restart),
5 refused by the server, 75 temporary (rerun), 130 interrupted (rerun).""")
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
def upload(file_path: Path | None, directory: Path | None, prefix: str | None, controller: str | None,
           file_id: str | None, token_file: Path | None, **options: Any) -> None:
    """Upload a file (or a folder of chunk files) as one S3 object, resumably.

    Splits the file into parts and sends them from THREADS threads. META_FILE records the
    upload and PARTS_FILE every finished part; if the run is interrupted, run the same
    command again and it sends only what is missing. With --controller, no AWS credentials
    are needed: an upload controller signs a URL for each part.
    """
    source = _source(file_path, directory, prefix)
    if controller is not None or file_id is not None or token_file is not None:
        _through_controller(source, controller, file_id, token_file, options)
        return
    _need_bucket_and_key(options)
    _transfer(source, **options)


def _need_bucket_and_key(options: dict[str, Any]) -> None:
    for name, flag in (("bucket", "-b' / '--bucket"), ("key", "-k' / '--key")):
        if not options[name]:
            raise click.UsageError(f"Missing option '{flag}'.")


def _through_controller(source: Source, controller: str | None, file_id: str | None, token_file: Path | None,
                        options: dict[str, Any]) -> None:
    """upload --controller: ask the controller for the file's upload (resume it, or create it), then run the
    usual engine with a client that goes through the controller's presigned URLs."""
    if controller is None or file_id is None:
        raise BadInput("--controller URL and --file-id ID go together", "give both, or neither")
    not_here = [flag for flag, name in (("-b", "bucket"), ("-k", "key"), ("--upload-id", "upload_id"),
                                        ("--endpoint-url", "endpoint_url"), ("--profile", "profile"),
                                        ("--region", "region"), ("--no-overwrite", "no_overwrite"))
                if options[name]]
    if not_here:
        raise BadInput(f"{', '.join(not_here)} cannot go with --controller: the controller chooses the bucket and "
                       "key and holds the credentials", f"leave out {', '.join(not_here)}")
    if options["checksum"].upper() not in ("MD5", checksums.AUTO.upper()):
        raise BadInput("through a controller, parts are checked by MD5 only",
                       "leave out --checksum (S3 refuses unsigned x-amz-checksum headers on presigned URLs)")
    if not isinstance(source, FileSource):
        raise BadInput("--controller uploads a file: give -f FILE (not -d)")
    api = ControllerAPI(controller, read_token(token_file, os.environ.get(TOKEN_ENV)),
                        pool_size=options["thread_count"] + 2)
    extra = {"controller": api.base_url, "fileId": file_id}
    meta_path: Path = options["meta_file_path"]
    meta = read_meta(meta_path)
    requests = Requester(ControllerClients(api, ""), RetryPolicy(attempts=options["retries"]))
    where = f"file {file_id} at {api.base_url}"
    if meta is not None and not options["restart"]:
        if any(meta.extra.get(k) != v for k, v in extra.items()):
            raise StateConflict(f"meta file {meta_path} is not that of {where}",
                                "give the same --controller and --file-id as that upload, or another -m and -a path")
        bucket, key, upload_id, split = meta.bucket, meta.key, None, meta.split_size
        clients = ControllerClients(api, meta.upload_id or "")
    elif options["dry_run"]:
        raise BadInput("--dry-run with --controller shows an upload in progress (its meta file); the controller "
                       "chooses the part size of a new one", "leave out --dry-run")
    else:
        upload = _controller_call(requests, lambda: api.pending(file_id), where)
        if upload is None:
            size = source.plan(options["split_size"], fixed=False).total_size
            try:
                upload = _controller_call(requests, lambda: api.create(file_id, size, options["split_size"]), where)
            except ServerRefused as exc:
                if exc.__cause__ is None or error_code(exc.__cause__) != "UploadExists":
                    raise
                upload = _controller_call(requests, lambda: api.pending(file_id), where)  # a twin run won the race
                if upload is None:
                    raise StateConflict(f"{where} already has an upload ({exc.message})",
                                        "nothing to send; the controller says which upload it is") from exc
        bucket, key, upload_id, split = upload["bucket"], upload["key"], upload["upload_id"], upload["part_size"]
        clients = ControllerClients(api, upload_id)
        log = logging.getLogger("s3_multipart_upload")
        log.debug("Controller upload %s of %s: s3://%s/%s in parts of %s.", upload_id, where, bucket, key,
                  human(split))
    _transfer(source, **{**options, "bucket": bucket, "key": key, "upload_id": upload_id, "split_size": split},
              clients=clients, meta_extra=extra)


def _controller_call(requests: Requester, call: Callable[[], T], where: str) -> T:
    """A request to the controller outside the engine: same retries, same error classes."""
    try:
        return requests.call("controller", lambda _client: call())
    except Exception as exc:
        known = as_upload_error(exc, "", "")
        kind = classify(exc)
        if kind is Kind.TRANSIENT:
            raise TemporaryFailure(f"{where} did not answer ({describe(exc)})",
                                   "check that the controller is up, then rerun the same command") from exc
        if kind is Kind.REFUSED:
            raise ServerRefused(f"{where} refused: {describe(exc)}",
                                "check --controller, --file-id and the token") from exc
        raise known or UploadError(f"{where}: {describe(exc)}") from exc


@cli.command(epilog="""\b
Examples:
  # same store and credentials: the store copies the parts itself (UploadPartCopy)
  s3-multipart-upload copy --source s3://old-bucket/big.tar -b new-bucket -k big.tar \
      -m big.meta.json -a big.parts.jsonl
  # from an S3-compatible store to AWS: each part is read (ranged GET) and uploaded
  s3-multipart-upload copy --source s3://archive/big.tar --source-endpoint-url https://minio.example:9000 \
      --source-profile minio -b my-bucket -k big.tar -m big.meta.json -a big.parts.jsonl -t 16

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
         through_client: bool, **options: Any) -> None:
    """Copy an S3 object to another bucket, account or store in parts, resumably.

    Same state files and resume as upload. With one store and one set of credentials, the
    store copies each part (UploadPartCopy, no bytes through this machine); otherwise, or with
    --through-client, each part is read with a ranged GET and streamed to the upload, in 1 MiB
    blocks whatever the part size. Every read is conditional on the source's ETag: a source that changes
    mid-copy stops the copy (exit 3) instead of mixing two versions.
    """
    bucket, key = parse_s3_url(source_url)
    dest = (options["endpoint_url"], options["profile"], options["region"])
    src = (source_endpoint_url or dest[0], source_profile or dest[1], source_region or dest[2])
    server_side = src == dest and not through_client
    if server_side and (bucket, key) == (options["bucket"], options["key"]):
        raise BadInput(f"the source and the destination are the same object, s3://{bucket}/{key}",
                       "give another -b/-k")
    source = S3ObjectSource(bucket, key, ClientFactory(Endpoint(*src), pool_size=options["thread_count"] + 2),
                            RetryPolicy(attempts=options["retries"]), server_side=server_side)
    _need_bucket_and_key(options)
    _transfer(source, **options)


def _transfer(
    source: Source, bucket: str, key: str, meta_file_path: Path, parts_file_path: Path, thread_count: int,
    split_size: int | None, checksum: str, retries: int, restart: bool, upload_id: str | None, no_overwrite: bool,
    dry_run: bool, as_json: bool, endpoint_url: str | None, profile: str | None, region: str | None, quiet: bool,
    verbose: bool, clients: ClientFactory | None = None, meta_extra: dict[str, Any] | None = None,
) -> None:
    through_controller = meta_extra is not None and "controller" in meta_extra
    if clients is None:
        clients = ClientFactory(Endpoint(endpoint_url, profile, region), pool_size=thread_count + 2)
    algorithm, why = checksums.choose(checksum, _resolved_endpoint(clients, endpoint_url),
                                      controller=through_controller, copy=isinstance(source, S3ObjectSource))
    request = UploadRequest(checksum=algorithm, checksum_why=why,
        # A measurement knob (bench/): MD5 sent as Content-MD5 from the first part, as the engine falls back to.
        content_md5=os.environ.get("S3MU_CONTENT_MD5") == "1",
        bucket=bucket, key=key, source=source, meta_path=meta_file_path, parts_path=parts_file_path,
        threads=thread_count, split_size=split_size, restart=restart,
        upload_id=upload_id, no_overwrite=no_overwrite, meta_extra=meta_extra or {},
    )
    if dry_run:
        _show_plan(Uploader(request, clients).dry_run(), as_json)
        return
    display = _setup_output(quiet, verbose)
    events = JsonProgress(sys.stdout, display) if as_json else None
    reporter: Reporter = events or display
    on_signal = _StopOnSignal()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    log = logging.getLogger("s3_multipart_upload")
    try:
        result = Uploader(request, clients, reporter, retry=RetryPolicy(attempts=retries)).run()
    except BaseException as exc:
        reporter.close()
        if events is not None:
            _json_failure(events, exc, bucket, key)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    reporter.close()
    if result.already_complete:
        log.info("Nothing to do: s3://%s/%s is already complete.", bucket, key)
    else:
        log.info("Done: s3://%s/%s, %s in %d parts; sent %d parts (%s) in %.1f s, %d already done, %d adopted.",
                 bucket, key, human(result.size), result.parts_total, result.parts_sent, human(result.bytes_sent),
                 result.seconds, result.parts_logged, result.parts_adopted)
    if events is not None:
        summary = {"bucket": bucket, "key": key, "uploadId": result.upload_id, "size": result.size,
                   "eTag": result.etag, "partsTotal": result.parts_total, "partsSent": result.parts_sent,
                   "partsAlreadyDone": result.parts_logged, "partsAdopted": result.parts_adopted,
                   "bytesSent": result.bytes_sent, "seconds": round(result.seconds, 3),
                   "checksumAlgorithm": result.checksum,
                   "fullObjectChecksum": result.full_checksum}
        events.event("completed", alreadyComplete=result.already_complete, **summary)
        events.event("summary", status="already_complete" if result.already_complete else "completed", exitCode=0,
                     **summary)


def _resolved_endpoint(clients: ClientFactory, given: str | None) -> str | None:
    """The endpoint boto3 will use: --endpoint-url, or AWS_ENDPOINT_URL(_S3), or a profile's, or AWS's own."""
    try:
        return str(clients.client().meta.endpoint_url)
    except Exception:  # a bad endpoint or profile: the engine reports it with its own message
        return given


def _json_failure(events: JsonProgress, exc: BaseException, bucket: str, key: str) -> None:
    if isinstance(exc, UploadError):
        code, message, hint = int(exc.exit_code), exc.message, exc.hint
    elif isinstance(exc, KeyboardInterrupt):
        code, message, hint = int(ExitCode.INTERRUPTED), "interrupted", None
    else:
        code, message, hint = int(ExitCode.BUG), f"unexpected {type(exc).__name__}: {exc}", None
    resumable = code in (ExitCode.TEMPORARY, ExitCode.INTERRUPTED)
    events.event("paused" if resumable else "error", exitCode=code, error=message, hint=hint,
                 rerun=_rerun_command() if resumable else None)
    events.event("summary", status="paused" if resumable else "error", exitCode=code, bucket=bucket, key=key,
                 error=message)


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
  s3-multipart-upload status -m input.meta.json -a input.parts.jsonl
  s3-multipart-upload status -m input.meta.json -a input.parts.jsonl --json""")
@click.option("-m", "--meta-file-path", required=True, type=click.Path(path_type=Path), help="The upload's meta file.")
@click.option("-a", "--parts-file-path", type=click.Path(path_type=Path), help="The upload's parts log.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--token-file", type=click.Path(path_type=Path),
              help=f"For an upload through a controller: the API token (or set {TOKEN_ENV}).")
@s3_options
@handle_errors
def status(meta_file_path: Path, parts_file_path: Path | None, as_json: bool, token_file: Path | None,
           endpoint_url: str | None, profile: str | None, region: str | None) -> None:
    """Show where an upload stands: from its files, and from the server (ListParts). Sends no data."""
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
  s3-multipart-upload list -b my-bucket
  s3-multipart-upload list -b my-bucket --prefix backups/ --older-than 7d --json
  s3-multipart-upload list -b my-bucket --older-than 2d --abort --yes   # in a cron job""")
@click.option("-b", "--bucket", required=True, help="S3 bucket.")
@click.option("--prefix", default="", help="Only keys that start with PREFIX.")
@click.option("--older-than", help="Only uploads started longer ago than this: 90s, 30m, 12h, 7d, 2w.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines, one upload a line.")
@click.option("--abort", "do_abort", is_flag=True, help="Abort the listed uploads, after a confirmation prompt.")
@click.option("--yes", is_flag=True, help="With --abort: do not ask (for scripts).")
@s3_options
@handle_errors
def list_uploads(bucket: str, prefix: str, older_than: str | None, as_json: bool, do_abort: bool, yes: bool,
                 endpoint_url: str | None, profile: str | None, region: str | None) -> None:
    """List the multipart uploads in progress in a bucket: key, upload id, started, age, parts and bytes.

    Parts of unfinished uploads are billed until they are aborted; --abort cleans them up.
    """
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
