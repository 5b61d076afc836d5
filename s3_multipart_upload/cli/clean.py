"""``clean``: tidy the state folder."""

from __future__ import annotations

import sys
from pathlib import Path

import click

import s3_multipart_upload as api
from s3_multipart_upload.cli.common import handle_errors, s3_options, state_dir_option, store_options
from s3_multipart_upload.cli.status import show_local
from s3_multipart_upload.errors import BadInput, BatchFailed
from s3_multipart_upload.manage import Cleaned
from s3_multipart_upload.operations import LocalUpload, parse_duration
from s3_multipart_upload.options import StoreOptions
from s3_multipart_upload.state import state_root


@click.command(epilog="""\b
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
@store_options
@handle_errors
def clean(older_than: str, yes: bool, state_dir: Path | None, endpoint_url: str | None, profile: str | None,
          region: str | None, store: StoreOptions) -> None:
    """Tidy the state folder: remove the state of finished uploads (completed or aborted), and abort the
    abandoned ones (in progress, idle for longer than --older-than) on the server, then remove their state.

    An upload a running process holds is left alone. The endpoint of each upload is the one it was made
    with (--endpoint-url overrides it); credentials come from the usual chain (--profile, AWS_*).
    """
    root = state_root(state_dir)
    parse_duration(older_than)  # a bad duration is refused before the folder is read

    def confirm(found: list[LocalUpload]) -> bool:
        show_local(found, root, as_json=False)
        if yes:
            return True
        if not sys.stdin.isatty():
            raise BadInput("clean asks for confirmation, and standard input is not a terminal",
                           "add --yes to clean without asking")
        aborts = sum(1 for u in found if u.state == "in_progress" and u.upload_id)
        return click.confirm(f"Remove the state of these {len(found)} uploads" +
                             (f", aborting the {aborts} in progress on the server" if aborts else "") + "?",
                             abort=True, err=True)

    try:
        cleaned = api.clean(older_than, state_dir=state_dir, confirm=confirm, endpoint_url=endpoint_url,
                            profile=profile, region=region, **store)
    except BatchFailed as exc:
        _show(exc.result if isinstance(exc.result, list) else [])
        raise
    if not cleaned:
        click.echo(f"Nothing in the state folder {root} has been idle for {older_than}.")
    _show(cleaned)


def _show(cleaned: list[Cleaned]) -> None:
    for c in cleaned:
        where = f"s3://{c.upload.bucket}/{c.upload.key}"
        if c.failure is not None:
            click.echo(f"Kept {where} ({c.upload.folder.path}): {c.failure.message}", err=True)
        else:
            click.echo(f"{(c.done or '').capitalize()}: {where} ({c.upload.folder.path.name})")
