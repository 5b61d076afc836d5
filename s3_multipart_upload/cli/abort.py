"""``abort``: stop paying for the parts of an upload."""

from __future__ import annotations

from pathlib import Path

import click

import s3_multipart_upload as api
from s3_multipart_upload.cli.common import handle_errors, s3_options, store_options
from s3_multipart_upload.controller import TOKEN_ENV
from s3_multipart_upload.options import StoreOptions


@click.command(epilog="""\b
Examples:
  s3-multipart-upload abort -m input.meta.json -a input.parts.jsonl""")
@click.option("-m", "--meta-file-path", required=True, type=click.Path(path_type=Path), help="The upload's meta file.")
@click.option("-a", "--parts-file-path", type=click.Path(path_type=Path),
              help="The upload's parts log (kept as it is, for the record).")
@click.option("--token-file", type=click.Path(path_type=Path),
              help=f"For an upload through a controller: the API token (or set {TOKEN_ENV}); the controller "
                   "marks the upload cancelled.")
@s3_options
@store_options
@handle_errors
def abort(meta_file_path: Path, parts_file_path: Path | None, token_file: Path | None, endpoint_url: str | None,
          profile: str | None, region: str | None, store: StoreOptions) -> None:
    """Abort the multipart upload META_FILE records, freeing the parts' storage; marks META aborted.

    Repeats the abort until ListParts finds nothing, as S3 advises. Safe to run twice.
    """
    del parts_file_path
    outcome = api.abort(meta_file_path, token_file=token_file, endpoint_url=endpoint_url, profile=profile,
                        region=region, **store)
    click.echo({"aborted": f"Aborted the upload in {meta_file_path}; its parts are deleted on the server.",
                "already_aborted": f"The upload in {meta_file_path} was already aborted.",
                "completed": f"The upload in {meta_file_path} is complete; there is nothing to abort."}[outcome])
