"""Build the controller from its settings, and run it under uvicorn.

ServeConfig is what ``s3-multipart-upload serve`` gathers from its options; each field has the default
the command uses when the option is not given.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy.exc
from fastapi import FastAPI

from s3_multipart_upload.errors import BadInput, TemporaryFailure
from s3_multipart_upload.properties import ObjectProperties
from s3_multipart_upload.service.api import Worker, create_app
from s3_multipart_upload.service.auth import Authenticator, SignInLimiter, Tokens
from s3_multipart_upload.service.core import Service, Settings
from s3_multipart_upload.service.db import Database
from s3_multipart_upload.service.oidc import Oidc
from s3_multipart_upload.service.ops import Metrics, access_log
from s3_multipart_upload.service.review import ON_REJECT
from s3_multipart_upload.service.storage import Storage
from s3_multipart_upload.service.verify import Verifier
from s3_multipart_upload.service.webhooks import Deliverer, Webhook, check_url

log = logging.getLogger(__name__)

MIN_SECRET_CHARS = 16


@dataclass(frozen=True)
class ServeConfig:
    bucket: str
    database_url: str
    tokens_file: Path | None
    tokens_env: str | None
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    part_size: int = 16 * 2**20
    url_expiry: int = 900
    key_prefix: str = ""
    max_pending: int = 1000
    # The policy of every object the controller creates (properties.py checks it; exit 2 naming the option).
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    tagging: str | None = None
    metadata_keys: tuple[str, ...] = ()  # the user-metadata keys clients may set on their uploads
    # Review and verification.
    reviewers: tuple[str, ...] = ()  # principals with the reviewer role, besides the tokens file's and the JWTs'
    on_reject: str = "keep"  # keep, quarantine (moved under key_prefix + quarantine_prefix) or delete
    quarantine_prefix: str = "quarantine/"
    verify_workers: int = 2  # uploads checked at once by this instance (each reads one object)
    verify_lease: float = 300.0  # seconds a verifier holds an upload before another instance may take it
    # Events.
    webhooks: tuple[str, ...] = ()
    webhook_secret_file: Path | None = None  # required with webhooks: the HMAC-SHA256 key of the signatures
    webhook_timeout: float = 10.0
    webhook_backoff: float = 2.0  # the first retry's delay; doubles up to webhook_max_backoff
    webhook_max_backoff: float = 600.0
    webhook_lease: float = 60.0  # at least 2 x timeout + 5 s: a claim outlives its request
    worker_poll: float = 1.0  # how often the background workers look for work another instance created
    # Sign-in through an identity provider (oidc.py); the tokens file stays, and is optional with it.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None  # required with oidc_issuer
    oidc_principal_claim: str = "sub"
    oidc_roles_claim: str = "roles"  # a list or a space-separated string; a dotted path reaches into objects
    oidc_reviewer_role: str = "reviewer"  # the role name, in that claim, of a reviewer
    oidc_jwks_min_refresh: float = 10.0  # an unknown key id fetches the JWKS again, at most this often
    # Operations.
    docs: bool = True  # /docs (Swagger UI, its assets served from the swagger-ui-bundle-v2 package); off to hide it
    access_log: bool = True  # one JSON line per request on stderr
    sign_in_limit: int = 60  # wrong tokens per client address within sign_in_window, then 429
    sign_in_window: float = 60.0


def _secret(config: ServeConfig) -> bytes:
    if not config.webhooks:
        return b""
    if config.webhook_secret_file is None:
        raise BadInput("--webhook needs --webhook-secret-file: the events are signed with it",
                       "put a random secret in a file: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    path = config.webhook_secret_file
    try:
        secret = path.read_text("utf-8").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read the webhook secret file {path}: {getattr(exc, 'strerror', None) or exc}",
                       "give a readable file holding one secret") from exc
    if len(secret) < MIN_SECRET_CHARS:
        raise BadInput(f"the webhook secret in {path} has {len(secret)} characters; use at least {MIN_SECRET_CHARS}")
    if mode & 0o077:
        log.warning("The webhook secret file %s can be read by users other than its owner (mode %o): chmod 600 %s",
                    path, mode & 0o777, path)
    return secret.encode()


def _check(config: ServeConfig) -> list[Webhook]:
    if config.on_reject not in ON_REJECT:
        raise BadInput(f"--on-reject is one of {', '.join(ON_REJECT)}, not {config.on_reject!r}")
    hooks = []
    for url in config.webhooks:
        try:
            check_url(url)
        except ValueError as exc:
            raise BadInput(f"--webhook {Webhook(url).label or '(empty)'}: {exc}") from exc
        hooks.append(Webhook(url))
    if len({h.id for h in hooks}) != len(hooks):
        raise BadInput("a --webhook is given twice")
    return hooks


def _oidc(config: ServeConfig) -> Oidc | None:
    if config.oidc_issuer is None:
        if config.oidc_audience is not None:
            raise BadInput("--oidc-audience goes with --oidc-issuer")
        return None
    if not config.oidc_audience:
        raise BadInput("--oidc-issuer needs --oidc-audience: a token meant for another service must not sign in here",
                       "give the audience (aud) your identity provider puts in tokens for this controller")
    try:
        return Oidc(config.oidc_issuer, config.oidc_audience, config.oidc_principal_claim, config.oidc_roles_claim,
                    config.oidc_reviewer_role, min_refresh=config.oidc_jwks_min_refresh)
    except ValueError as exc:
        raise BadInput(f"--oidc-issuer {config.oidc_issuer}: {exc}") from exc


def build(config: ServeConfig) -> FastAPI:
    hooks = _check(config)
    secret = _secret(config)
    oidc = _oidc(config)
    tokens: Tokens | None = None
    if config.tokens_file is not None or config.tokens_env or oidc is None:  # with neither, no one could sign in
        tokens = Tokens.load(config.tokens_file, config.tokens_env)
    try:
        database = Database(config.database_url)
    except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
        raise BadInput(f"--database-url is not a database URL this service can use ({exc})",
                       "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB") from exc
    try:
        version = database.migrate()
    except sqlalchemy.exc.OperationalError as exc:
        raise TemporaryFailure(f"cannot reach the database {database.safe_url}: {exc.orig or exc}",
                               "check --database-url and that the database server is up") from exc
    log.info("Database %s at schema version %d; %d API tokens%s; bucket %s; %d webhooks.", database.safe_url, version,
             len(tokens) if tokens else 0, f", JWTs of {config.oidc_issuer}" if oidc else "", config.bucket, len(hooks))
    policy = ObjectProperties.of(storage_class=config.storage_class, sse=config.sse,
                                 sse_kms_key_id=config.sse_kms_key_id, tagging=config.tagging)
    storage = Storage(config.bucket, config.endpoint_url, config.profile, config.region, config.url_expiry,
                      policy=policy.create_args())
    settings = Settings(part_size=config.part_size, key_prefix=config.key_prefix, max_pending=config.max_pending,
                        destinations=tuple(h.id for h in hooks), on_reject=config.on_reject,
                        quarantine_prefix=config.key_prefix + config.quarantine_prefix,
                        metadata_keys=frozenset(k.lower() for k in config.metadata_keys))
    service = Service(database, storage, settings)
    verifier = Verifier(service, workers=config.verify_workers, lease=config.verify_lease, poll=config.worker_poll)
    deliverer = Deliverer(database, hooks, secret, timeout=config.webhook_timeout, backoff=config.webhook_backoff,
                          max_backoff=config.webhook_max_backoff, lease=config.webhook_lease, poll=config.worker_poll)

    def changed() -> None:
        verifier.wake()
        deliverer.wake()

    service.changed = changed
    workers: list[Worker] = [verifier, deliverer]
    auth = Authenticator(tokens, oidc, frozenset(config.reviewers))
    return create_app(service, auth, metrics=Metrics(database), workers=workers, docs=config.docs,
                      sign_ins=SignInLimiter(config.sign_in_limit, config.sign_in_window))


def _json_access_log(enabled: bool) -> None:
    """The access log's lines are JSON already (ops.AccessLog): written as they are, to stderr, or not at all."""
    access_log.propagate = False
    access_log.handlers.clear()
    if enabled:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
    else:
        access_log.addHandler(logging.NullHandler())


def run(config: ServeConfig, host: str, port: int) -> None:
    import uvicorn

    app = build(config)
    _json_access_log(config.access_log)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, server_header=False)

