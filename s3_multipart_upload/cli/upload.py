"""``upload``: one file, a folder of chunk files, many files, or through an upload controller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import s3_multipart_upload as api
from s3_multipart_upload.cli.common import ByteSize, Transfer, handle_errors, transfer_options
from s3_multipart_upload.cli.filtering import FilterCommand, filter_options, filters_of
from s3_multipart_upload.cli.transfer import run_many, run_one, show_many_plan, show_plan
from s3_multipart_upload.controller import TOKEN_ENV
from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.held import is_stream
from s3_multipart_upload.pipe import DEFAULT_MAX_MEMORY
from s3_multipart_upload.plan import human
from s3_multipart_upload.sources import parse_s3_target


@click.command(cls=FilterCommand, epilog="""\b
Examples:
  s3-multipart-upload upload input.bin s3://my-bucket/data/input.bin
  s3-multipart-upload upload run42/*.bam s3://my-bucket/runs/42/
  s3-multipart-upload upload --recursive ./checkpoints s3://my-bucket/ckpt/step-9000/ -t 16
  s3-multipart-upload upload --recursive ./run s3://my-bucket/run/ --exclude '*' --include '*.bam' --dry-run
  s3-multipart-upload upload -b my-bucket -k data/input.bin -f input.bin \\
      -m input.meta.json -a input.parts.jsonl
  s3-multipart-upload upload -b my-bucket -k data/input.bin -d ./chunks -p input_data_ \\
      -m input.meta.json -a input.parts.jsonl -t 4
  AWS_PROFILE=prod s3-multipart-upload upload --endpoint-url http://127.0.0.1:9000 big.tar s3://b/big.tar -s 128M
  s3-multipart-upload upload --dry-run big.tar s3://b/big.tar
  pg_dump mydb | s3-multipart-upload upload - s3://my-bucket/db/mydb.sql --expected-size 200G
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
@click.option("--declare-checksum", type=click.Choice(("sha256", "crc64nvme"), case_sensitive=False), multiple=True,
              help="With --controller: read the file once more while the parts are sent and declare its SHA-256 or "
                   "CRC64NVME (repeat for both) with the completion, so that the controller checks the object and "
                   "accepts or rejects it.")
@click.option("--expected-size", type=ByteSize(),
              help="With a stream (-, a pipe, a character device): about how long it is (200G); its parts are "
                   "sized as for a file of that size, and the progress shows an ETA.")
@click.option("--max-memory", type=ByteSize(), help=f"With a stream: its parts held in memory at most (default "
              f"{human(DEFAULT_MAX_MEMORY)}): parts go in flight as they fit, and parts larger than half of it go "
              "to spool files instead.")
@click.option("--spool-dir", type=click.Path(path_type=Path, file_okay=False),
              help="With a stream: the folder of the spool files of its large parts (default: $TMPDIR or /tmp).")
@filter_options
@transfer_options
@handle_errors
def upload(targets: tuple[str, ...], recursive: bool, file_path: Path | None, directory: Path | None,
           prefix: str | None, controller: str | None, file_id: str | None, token_file: Path | None,
           declare_checksum: tuple[str, ...], expected_size: int | None, max_memory: int | None,
           spool_dir: Path | None, exclude: tuple[str, ...], include: tuple[str, ...],
           follow_symlinks: bool, run: Transfer) -> None:
    """Upload a file (or a folder of chunk files, or many files) to S3, resumably.

    Splits a file into parts and sends them from THREADS threads; the upload's state (its meta
    file and the log of finished parts) lives in the state folder, or in -m and -a. If the run is
    interrupted, run the same command again and it sends only what is missing. With several files
    (a trailing slash on the destination, or --recursive) each file is an upload of its own. With
    --controller, no AWS credentials are needed: an upload controller signs a URL for each part.
    """
    filters = filters_of(exclude, include)
    streamed = {name: value for name, value in (("expected_size", expected_size), ("max_memory", max_memory),
                                                 ("spool_dir", spool_dir)) if value is not None}
    if targets or recursive:
        _aws_form(targets, recursive, (file_path, directory, prefix, controller, run.bucket, run.key,
                                       declare_checksum or None), run, (filters, follow_symlinks), streamed)
        return
    if filters:
        raise BadInput("--exclude and --include choose among several files", "give FILE... s3://BUCKET/PREFIX/ or "
                       "--recursive DIR s3://BUCKET/PREFIX/")
    source = _source(file_path, directory, prefix)
    where: dict[str, Any] = {"prefix": prefix, **streamed}
    if controller is not None or file_id is not None or token_file is not None or declare_checksum:
        where |= {"controller": controller, "file_id": file_id, "token_file": token_file, "bucket": run.bucket,
                  "key": run.key, "declare_checksum": declare_checksum}
    else:
        where |= dict(zip(("bucket", "key"), run.need_bucket_and_key(), strict=True))
    _one(source, None, where, run)


def _one(source: Path, dest: str | None, where: dict[str, Any], run: Transfer) -> None:
    """One upload (or its plan): the API's call with the options given."""
    if run.dry_run:  # (a plan reads no file: nothing to declare)
        planned = {name: value for name, value in where.items() if name != "declare_checksum"}
        show_plan(api.plan_upload(source, dest, **planned, **run.options), run.as_json)
        return
    run_one(lambda progress: api.upload(source, dest, skip_identical=dest is not None, progress=progress, **where,
                                        **run.options), run)


def _aws_form(targets: tuple[str, ...], recursive: bool, others: tuple[Any, ...], run: Transfer,
              choose: tuple[list[tuple[str, str]], bool], streamed: dict[str, Any]) -> None:
    """``upload FILE s3://B/K``, ``upload FILE... s3://B/PREFIX/``, ``upload --recursive DIR s3://B/PREFIX/``."""
    if any(value is not None for value in others):
        raise BadInput("give FILE... s3://BUCKET/KEY, or -b/-k/-f (or -d/-p), not both",
                       "leave out -b, -k, -f, -d, -p and --controller")
    if len(targets) < 2:
        raise BadInput("give the file(s) to upload and then the destination, s3://BUCKET/KEY or s3://BUCKET/PREFIX/",
                       "for example: s3-multipart-upload upload input.bin s3://my-bucket/data/input.bin")
    bucket, key = parse_s3_target(targets[-1])
    files = [Path(t) for t in targets[:-1]]
    filters, follow = choose
    one = len(files) == 1 and not recursive and key and not key.endswith("/")
    streams = [t for t in targets[:-1] if is_stream(t)]
    if streams and not one:
        what = "- (stdin)" if streams[0] == "-" else f"{streams[0]} (a pipe or a character device)"
        raise BadInput(f"{what} is a stream, uploaded to one key: it cannot go with --recursive, other files or "
                       "a destination prefix", "give it alone: producer | s3-multipart-upload upload - "
                       "s3://BUCKET/KEY")
    if one:
        if filters:
            raise BadInput("--exclude and --include choose among several files",
                           "give FILE... s3://BUCKET/PREFIX/ or --recursive DIR s3://BUCKET/PREFIX/")
        _one(files[0], targets[-1], streamed, Transfer(bucket, key, run.options, run.dry_run, run.as_json,
                                                       run.quiet, run.verbose))
        return
    if streamed:
        flag = "--" + next(iter(streamed)).replace("_", "-")
        raise BadInput(f"{flag} goes with one stream (-, a pipe or a character device), not with several files",
                       f"leave out {flag}")
    options = run.options
    if run.dry_run:
        show_many_plan(api.plan_many(files, targets[-1], recursive=recursive, filters=filters, follow_symlinks=follow,
                                     **options), bucket, run.as_json)
        return
    run_many(lambda reporter_for, done: api.upload_many(files, targets[-1], recursive=recursive,
                                                        reporter_for=reporter_for, on_file_done=done,
                                                        filters=filters, follow_symlinks=follow,
                                                        keep_outcomes=False, **options),
             bucket, key, run)


def _source(file_path: Path | None, directory: Path | None, prefix: str | None) -> Path:
    """-f FILE, or -d DIR with -p PREFIX (the API's ``prefix=``)."""
    if file_path is not None and directory is not None:
        raise BadInput("give either -f FILE or -d DIR -p PREFIX, not both")
    if file_path is not None:
        if prefix is not None:
            raise BadInput("-p PREFIX goes with -d DIR, not with -f FILE")
        return file_path
    if directory is not None:
        if prefix is None:
            raise BadInput("-d DIR needs -p PREFIX: the start of the chunk files' names (use -p '' for all files)")
        return directory
    raise BadInput("nothing to upload: give -f FILE, or -d DIR -p PREFIX")
