"""``list``: the multipart uploads in progress in a bucket (and ``--abort`` them), or those of the state folder."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

import s3_multipart_upload as api
from s3_multipart_upload.cli.common import (
    LOGGER,
    handle_errors,
    s3_options,
    setup_output,
    state_dir_option,
    store_options,
)
from s3_multipart_upload.cli.events import emit_json
from s3_multipart_upload.cli.status import show_local
from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.operations import human_age
from s3_multipart_upload.options import StoreOptions
from s3_multipart_upload.plan import human
from s3_multipart_upload.state import state_root


@click.command("list", epilog="""\b
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
@store_options
@handle_errors
def list_uploads(bucket: str | None, prefix: str, older_than: str | None, as_json: bool, do_abort: bool, yes: bool,
                 state_dir: Path | None, endpoint_url: str | None, profile: str | None, region: str | None,
                 store: StoreOptions) -> None:
    """List the multipart uploads in progress in a bucket: key, upload id, started, age, parts and bytes.

    Parts of unfinished uploads are billed until they are aborted; --abort cleans them up.
    Without -b: the uploads in the state folder (as `status` without -m; `clean` tidies it).
    """
    if bucket is None:
        if do_abort:
            raise BadInput("--abort goes with -b BUCKET", "for the state folder, use: s3-multipart-upload clean")
        show_local(api.local_uploads(state_dir=state_dir, prefix=prefix, older_than=older_than),
                   state_root(state_dir), as_json)
        return
    setup_output(quiet=False, verbose=False)
    logging.getLogger(LOGGER).setLevel(logging.WARNING)  # retries, and upload dates the store made up
    found = api.list_uploads(bucket, prefix=prefix, older_than=older_than, endpoint_url=endpoint_url,
                             profile=profile, region=region, **store)
    if as_json:
        for item in found:
            emit_json(item.to_json())
    elif not found:
        click.echo(f"No multipart uploads in progress in s3://{bucket}/{prefix}"
                   + (f" older than {older_than}." if older_than else "."))
    else:
        table = Table(box=None, pad_edge=False)
        for col in ("KEY", "UPLOAD ID", "INITIATED", "AGE", "PARTS", "BYTES"):
            table.add_column(col, justify="right" if col in ("AGE", "PARTS", "BYTES") else "left", no_wrap=True)
        for item in found:
            table.add_row(item.key, item.upload_id, item.initiated.strftime("%Y-%m-%d %H:%M:%S")
                          + ("" if item.initiated_credible else " (not credible)"),
                          ("" if item.initiated_credible else ">=") + human_age(item.age_seconds),
                          str(item.parts), human(item.bytes))
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
        api.abort(item, endpoint_url=endpoint_url, profile=profile, region=region, **store)
        click.echo(f"Aborted {item.key} {item.upload_id}", err=as_json)
