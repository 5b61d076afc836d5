"""``serve``: the upload controller (the ``server`` extra)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from s3_multipart_upload.cli.common import ByteSize, handle_errors, output_options, s3_options, setup_output
from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.operations import parse_duration
from s3_multipart_upload.properties import SSE, STORAGE_CLASSES


@click.command(epilog="""\b
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
@click.option("--storage-class", type=click.Choice(STORAGE_CLASSES, case_sensitive=False),
              help="Policy: the storage class of every object the controller creates.")
@click.option("--sse", type=click.Choice(SSE, case_sensitive=False),
              help="Policy: the server-side encryption of every object (AES256, aws:kms, aws:kms:dsse).")
@click.option("--sse-kms-key-id", help="Policy, with --sse aws:kms: the KMS key of every object.")
@click.option("--tagging", help="Policy: the tags of every object, URL-encoded ('project=x&team=y').")
@click.option("--metadata-key", "metadata_keys", multiple=True, metavar="KEY",
              help="A user-metadata key clients may set on their uploads (repeat it); by default they may set none.")
@click.option("--reviewer", "reviewers", multiple=True, metavar="PRINCIPAL",
              help="A principal who may accept or reject uploads (repeat it); also a tokens-file line's third field "
                   "'reviewer', or the reviewer role in a JWT.")
@click.option("--on-reject", type=click.Choice(("keep", "quarantine", "delete")), default="keep", show_default=True,
              help="What becomes of a rejected upload's object: kept, moved under --quarantine-prefix, or deleted.")
@click.option("--quarantine-prefix", default="quarantine/", show_default=True,
              help="With --on-reject quarantine: where rejected objects go (under --key-prefix).")
@click.option("--verify-workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Uploads this instance verifies at once against their declared checksums (0: none here).")
@click.option("--webhook", "webhooks", multiple=True, metavar="URL",
              help="POST every status change to URL (repeat it), signed (X-S3MU-Signature, HMAC-SHA256), at least "
                   "once, with retries; needs --webhook-secret-file.")
@click.option("--webhook-secret-file", type=click.Path(path_type=Path),
              help="A file holding the secret the webhook signatures are made with (at least 32 characters).")
@click.option("--webhook-timeout", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Seconds a webhook has to answer a delivery before it is tried again.")
@click.option("--oidc-issuer", metavar="URL",
              help="Accept bearer JWTs signed by this identity provider (its JWKS, from OpenID discovery); the tokens "
                   "file is then optional.")
@click.option("--oidc-audience", help="With --oidc-issuer: the audience (aud) the JWTs must name.")
@click.option("--oidc-principal-claim", default="sub", show_default=True,
              help="With --oidc-issuer: the claim that names the principal.")
@click.option("--oidc-roles-claim", default="roles", show_default=True,
              help="With --oidc-issuer: the claim that lists the roles (a dotted path reaches into objects).")
@click.option("--oidc-reviewer-role", default="reviewer", show_default=True,
              help="With --oidc-issuer: the role, in the roles claim, of a reviewer.")
@click.option("--docs/--no-docs", "docs", default=True, show_default=True,
              help="Serve the interactive API page /docs (Swagger UI, its assets from this installation: no CDN).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One JSON line per request on stderr, with a request id.")
@click.option("--sign-in-limit", type=click.IntRange(min=1), default=60, show_default=True,
              help="Wrong tokens one client address may send in a minute before it is answered 429.")
@s3_options
@output_options
@handle_errors
def serve(bucket: str, host: str, port: int, database_url: str, tokens_file: Path | None, part_size: int,
          url_expiry: str, key_prefix: str, max_pending_uploads: int, endpoint_url: str | None, profile: str | None,
          region: str | None, quiet: bool, verbose: bool, **service: Any) -> None:
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
    setup_output(quiet, verbose)
    expiry = parse_duration(url_expiry)
    if not 1 <= expiry <= 7 * 86400:
        raise BadInput(f"--url-expiry {url_expiry} is outside S3's limits for presigned URLs (1 s to 7 days)")
    config = ServeConfig(bucket=bucket, database_url=database_url, tokens_file=tokens_file,
                         tokens_env=os.environ.get("S3MU_API_TOKENS"), endpoint_url=endpoint_url, profile=profile,
                         region=region, part_size=part_size, url_expiry=int(expiry), key_prefix=key_prefix,
                         max_pending=max_pending_uploads, **service)
    run(config, host, port)
