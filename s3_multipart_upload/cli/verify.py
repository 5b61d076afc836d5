"""``verify``: prove a file (or a folder of files) and its object(s) are the same bytes, without downloading."""

from __future__ import annotations

from pathlib import Path

import click

import s3_multipart_upload as api
from s3_multipart_upload.cli.common import (
    handle_errors,
    output_options,
    s3_options,
    setup_output,
    state_dir_option,
    store_options,
)
from s3_multipart_upload.cli.events import verified, verify_summary
from s3_multipart_upload.cli.filtering import FilterCommand, filter_options, filters_of
from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.options import DEFAULT_THREADS, MAX_THREADS, StoreOptions
from s3_multipart_upload.proof import IDENTICAL, MISSING_LOCAL, MISSING_REMOTE, UNPROVEN, Verdict, VerifyResult


@click.command(cls=FilterCommand, epilog="""\b
Examples:
  s3-multipart-upload verify input.bin s3://my-bucket/data/input.bin
  s3-multipart-upload verify --recursive ./checkpoints s3://my-bucket/ckpt/step-9000/ --exclude '*.tmp'
  s3-multipart-upload verify -m input.meta.json -a input.parts.jsonl
  s3-multipart-upload verify --download --json backup.tar s3://my-bucket/backup.tar

\b
Exit codes: 0 every file proven identical, 3 a file differs, is missing (on the server or
locally) or cannot be proven (add --download), 2 bad input, 5 refused by the server.""")
@click.argument("targets", nargs=-1, metavar="[FILE s3://BUCKET/KEY | --recursive DIR s3://BUCKET/PREFIX/]")
@click.option("-r", "--recursive", is_flag=True,
              help="Compare every file under DIR with PREFIX + its path relative to DIR, and report the objects "
                   "under PREFIX that have no file.")
@click.option("-m", "--meta-file-path", type=click.Path(path_type=Path),
              help="Instead of FILE s3://BUCKET/KEY: the file and object of the upload this meta file records.")
@click.option("-a", "--parts-file-path", type=click.Path(path_type=Path),
              help="With -m: the upload's parts log, which names the part that differs.")
@click.option("--download", is_flag=True,
              help="Where the object carries no checksum and no MD5 ETag (SSE-KMS, some stores): read its bytes "
                   "(parallel ranged GETs, flat memory) and compare them with the file's.")
@filter_options
@click.option("-t", "--thread-count", type=click.IntRange(1, MAX_THREADS), default=DEFAULT_THREADS,
              show_default=True, help="Ranges hashed (and files compared) at once.")
@click.option("--json", "as_json", is_flag=True,
              help="Write one JSON object per file (event verified) and a summary object to stdout.")
@state_dir_option
@s3_options
@store_options
@output_options
@handle_errors
def verify(targets: tuple[str, ...], recursive: bool, meta_file_path: Path | None, parts_file_path: Path | None,
           download: bool, exclude: tuple[str, ...], include: tuple[str, ...], follow_symlinks: bool,
           thread_count: int, as_json: bool, state_dir: Path | None, endpoint_url: str | None, profile: str | None,
           region: str | None, quiet: bool, verbose: bool, store: StoreOptions) -> None:
    """Prove that a file and its object hold the same bytes, without downloading the object.

    Uses the strongest evidence the object carries: its full-object CRC64NVME, its composite
    part checksums, its composite MD5 ETag (md5 of the parts' MD5s), or a one-part MD5 ETag;
    the file is read once, in parallel ranges. Where the object carries none of these, say so,
    or with --download compare its bytes. One line per file, then a summary.
    """
    setup_output(quiet, verbose)
    if meta_file_path is None and len(targets) != 2:
        raise BadInput("give the file and its object: verify FILE s3://BUCKET/KEY (or --recursive DIR "
                       "s3://BUCKET/PREFIX/, or -m META)")
    if meta_file_path is not None and targets:
        raise BadInput("give -m META, or FILE s3://BUCKET/KEY, not both")
    if parts_file_path is not None and meta_file_path is None:
        raise BadInput("-a PARTS goes with -m META")
    source, dest = (targets[0], targets[1]) if targets else (None, None)

    def show(verdict: Verdict) -> None:
        if as_json:
            verified(verdict)
        elif not quiet or verdict.status != IDENTICAL:
            click.echo(line(verdict))

    result = api.verify(source, dest, recursive=recursive, meta_file_path=meta_file_path,
                        parts_file_path=parts_file_path, download=download, filters=filters_of(exclude, include),
                        follow_symlinks=follow_symlinks, thread_count=thread_count, state_dir=state_dir,
                        endpoint_url=endpoint_url, profile=profile, region=region, on_file=show,
                        **store)
    if as_json:
        verify_summary(result)
    elif not quiet:
        click.echo(summary_line(result))
    click.get_current_context().exit(int(result.exit_code))


def line(v: Verdict) -> str:
    where = f"s3://{v.bucket}/{v.key}"
    pair = f"{v.file} = {where}" if v.file else where
    if v.status == IDENTICAL:
        return f"identical     {pair} ({v.how})"
    if v.status == MISSING_REMOTE:
        return f"MISSING       {where}: no such object (file {v.file})"
    if v.status == MISSING_LOCAL:
        return f"MISSING FILE  {pair}: {v.detail}"
    if v.status == UNPROVEN:
        return f"CANNOT PROVE  {pair}: {v.detail}"
    if v.failure is not None:
        return f"ERROR         {pair}: {v.failure.message}" + (f" (hint: {v.failure.hint})" if v.failure.hint else "")
    return f"DIFFERS       {pair}: {v.detail} ({v.how})"


def summary_line(result: VerifyResult) -> str:
    c = result.counts()
    total = len(result.verdicts)
    parts = [f"{c['identical']} identical", f"{c['differs']} differ"]
    parts += [f"{n} {label}" for label, n in (("missing on the server", c["missing_remote"]),
                                              ("missing locally", c["missing_local"]),
                                              ("cannot be proven (try --download)", c["unproven"]),
                                              ("failed", c["error"])) if n]
    return f"{total} file{'s' if total != 1 else ''}: {', '.join(parts)} ({result.seconds:.1f} s)."
