"""Build the controller from its settings, and run it under uvicorn."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy.exc
from fastapi import FastAPI

from s3_multipart_upload.errors import BadInput, TemporaryFailure
from s3_multipart_upload.service.api import create_app
from s3_multipart_upload.service.auth import Tokens
from s3_multipart_upload.service.core import Service, Settings
from s3_multipart_upload.service.db import Database
from s3_multipart_upload.service.storage import Storage

log = logging.getLogger(__name__)


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


def build(config: ServeConfig) -> FastAPI:
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
    log.info("Database %s at schema version %d; %d API tokens; bucket %s.", database.safe_url, version,
             len(tokens), config.bucket)
    storage = Storage(config.bucket, config.endpoint_url, config.profile, config.region, config.url_expiry)
    settings = Settings(part_size=config.part_size, key_prefix=config.key_prefix, max_pending=config.max_pending)
    service = Service(database, storage, settings)
    return create_app(service, tokens)


def run(config: ServeConfig, host: str, port: int) -> None:
    import uvicorn

    app = build(config)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True, server_header=False)
