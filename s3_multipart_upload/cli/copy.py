"""``copy``: an S3 object to another bucket, account or store, in parts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import s3_multipart_upload as api
from s3_multipart_upload.cli.common import Transfer, handle_errors, transfer_options
from s3_multipart_upload.cli.transfer import run_one, show_plan


@click.command(epilog="""\b
Examples:
  # same store and credentials: the store copies the parts itself (UploadPartCopy)
  s3-multipart-upload copy --source s3://old-bucket/big.tar -b new-bucket -k big.tar \\
      -m big.meta.json -a big.parts.jsonl
  # from an S3-compatible store to AWS: each part is read (ranged GET) and uploaded
  s3-multipart-upload copy --source s3://archive/big.tar --source-endpoint-url https://minio.example:9000 \\
      --source-profile minio -b my-bucket -k big.tar -t 16

\b
Exit codes as for upload; 3 also when the source object changes during the copy.""")
@click.option("--source", "source_url", required=True, help="The object to copy: s3://BUCKET/KEY.")
@click.option("--source-endpoint-url", help="Endpoint of the source's store, if not the destination's.")
@click.option("--source-profile", help="AWS profile for the source, if not the destination's.")
@click.option("--source-region", help="Region of the source, if not the destination's.")
@click.option("--through-client", is_flag=True,
              help="Read each part with a ranged GET and upload it, even when the store could copy it itself.")
@click.option("--metadata-directive", type=click.Choice(("COPY", "REPLACE"), case_sensitive=False), default="COPY",
              show_default=True, help="COPY keeps the source's content headers, metadata and tags; REPLACE takes "
                                      "--content-type, --metadata, --tagging... instead.")
@click.option("--copy-source-sse-c-key-file", type=click.Path(path_type=Path),
              help="The source object's SSE-C key: a file of 32 bytes.")
@transfer_options
@handle_errors
def copy(source_url: str, source_endpoint_url: str | None, source_profile: str | None, source_region: str | None,
         through_client: bool, metadata_directive: str, copy_source_sse_c_key_file: Path | None,
         run: Transfer) -> None:
    """Copy an S3 object to another bucket, account or store in parts, resumably.

    Same state files and resume as upload. With one store and one set of credentials, the
    store copies each part (UploadPartCopy, no bytes through this machine); otherwise, or with
    --through-client, each part is read with a ranged GET and streamed to the upload, in 1 MiB
    blocks whatever the part size. Every read is conditional on the source's ETag: a source that changes
    mid-copy stops the copy (exit 3) instead of mixing two versions.
    """
    bucket, key = run.need_bucket_and_key()
    def source(**more: Any) -> dict[str, Any]:
        return {"bucket": bucket, "key": key, "source_endpoint_url": source_endpoint_url,
                "source_profile": source_profile, "source_region": source_region, "through_client": through_client,
                "metadata_directive": metadata_directive, "copy_source_sse_c_key_file": copy_source_sse_c_key_file,
                **more, **run.options}

    if run.dry_run:
        show_plan(api.plan_copy(source_url, **source()), run.as_json)
        return
    run_one(lambda progress: api.copy(source_url, **source(progress=progress)), run)
