"""The command line: one module per command, each parsing its options, making one call of the Python API
(``s3_multipart_upload.api``) and showing what it returns. ``common`` holds the failure map and the shared options,
``events`` every JSON line the CLI writes, ``transfer`` the display of a running upload.

    s3-multipart-upload upload -b BUCKET -k KEY -f FILE -m META_FILE -a PARTS_FILE [-t THREADS] [-s SPLIT_SIZE]
"""

from __future__ import annotations

import click

from s3_multipart_upload._version import __version__
from s3_multipart_upload.cli.abort import abort
from s3_multipart_upload.cli.clean import clean
from s3_multipart_upload.cli.common import PROG
from s3_multipart_upload.cli.copy import copy
from s3_multipart_upload.cli.listing import list_uploads
from s3_multipart_upload.cli.serve import serve
from s3_multipart_upload.cli.status import status
from s3_multipart_upload.cli.upload import upload
from s3_multipart_upload.cli.verify import verify


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Resumable, parallel multipart uploads to S3 and S3-compatible stores.

    Rerun the same command after any interruption and the upload goes on where it stopped.
    `status` shows where uploads stand, `abort` stops paying for one, `list` finds the
    forgotten ones in a bucket, `clean` tidies the state folder, `verify` proves that a file
    and its object hold the same bytes.
    """


for _command in (upload, copy, verify, status, abort, list_uploads, clean, serve):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name=PROG)
