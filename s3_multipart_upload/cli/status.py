"""``status``: where one upload stands, or every upload of the state folder (a table ``list`` and ``clean`` share)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

import s3_multipart_upload as api
from s3_multipart_upload.cli.common import handle_errors, s3_options, state_dir_option, store_options
from s3_multipart_upload.cli.events import emit_json
from s3_multipart_upload.cli.transfer import properties_text
from s3_multipart_upload.controller import TOKEN_ENV
from s3_multipart_upload.operations import LocalUpload, Status, human_age
from s3_multipart_upload.options import StoreOptions
from s3_multipart_upload.plan import human, ranges
from s3_multipart_upload.state import state_root


@click.command(epilog="""\b
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
@store_options
@handle_errors
def status(meta_file_path: Path | None, parts_file_path: Path | None, as_json: bool, token_file: Path | None,
           state_dir: Path | None, endpoint_url: str | None, profile: str | None, region: str | None,
           store: StoreOptions) -> None:
    """Show where an upload stands: from its files, and from the server (ListParts). Sends no data.

    Without -m: every upload in the state folder (in progress, completed, aborted; age; bytes done).
    """
    if meta_file_path is None:
        show_local(api.local_uploads(state_dir=state_dir), state_root(state_dir), as_json)
        return
    st = api.status(meta_file_path, parts_file_path, token_file=token_file, endpoint_url=endpoint_url,
                    profile=profile, region=region, **store)
    if as_json:
        emit_json(st.to_json())
        return
    click.echo("\n".join(_lines(st)))


def _lines(st: Status) -> list[str]:
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
                                                             if st.full_object_checksum else "")
                     + ("" if st.store_verifies_crc64nvme is None else
                        "; the store refused a wrong CRC64NVME (it verifies it)" if st.store_verifies_crc64nvme else
                        "; the store accepted a wrong CRC64NVME (it does not verify it)"))
    if st.object_properties:
        lines.append("object:   " + properties_text(st.object_properties))
    if st.unlogged_on_server:
        lines.append(f"          parts on the server missing from the log (a rerun adopts them after checking): "
                     f"{ranges(st.unlogged_on_server)}")
    if st.logged_not_on_server:
        lines.append(f"          parts in the log the server does not hold (a rerun sends them again): "
                     f"{ranges(st.logged_not_on_server)}")
    return lines


def show_local(uploads: list[LocalUpload], root: Path, as_json: bool) -> None:
    """The uploads of the state folder: a table, or JSON Lines."""
    if as_json:
        for u in uploads:
            emit_json(u.to_json())
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
