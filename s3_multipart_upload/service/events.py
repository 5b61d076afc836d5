"""The events the controller sends: their JSON, their signature, and their place in the outbox.

Every status change (status.move) writes one outbox row per configured webhook in its own transaction:
the change and its event are committed together, so an instance that dies after the commit leaves the
event for any instance to deliver (webhooks.py). The schema is documented in docs/controller-events.md;
change it only by adding fields, or by a new ``schema`` number.

The outbox names a webhook by a digest of its URL (``destination_id``), never by the URL, which may
carry a secret in its query.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from s3_multipart_upload.service import db

SCHEMA = 1
EVENT_TYPE = "upload.status_changed"
SIGNATURE_HEADER = "X-S3MU-Signature"


def destination_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def payload(row: Any, current: str | None, actor: str, by: str, reason: str | None, event_id: str) -> dict[str, Any]:
    """The event of the change that brought ``row`` to its status."""
    return {
        "schema": SCHEMA,
        "id": event_id,
        "type": EVENT_TYPE,
        "occurred_at": db.iso(row.updated_at),
        "upload": {
            "upload_id": row.s3_upload_id, "file_id": row.file_id, "bucket": row.bucket, "key": row.key,
            "owner": row.owner, "status": row.status, "size": row.size, "sha256": row.sha256,
            "crc64nvme": row.crc64nvme, "etag": row.etag, "object_size": row.object_size,
            "created_at": db.iso(row.created_at),
        },
        "change": {"from": current, "to": row.status, "actor": actor, "by": by, "reason": reason},
    }


def write(conn: Connection, row: Any, current: str | None, actor: str, by: str, reason: str | None,
          destinations: Sequence[str]) -> str:
    """Put the event in the outbox for each destination (none: nothing to deliver); returns its id."""
    event_id = str(uuid.uuid4())
    if destinations:
        body = encode(payload(row, current, actor, by, reason, event_id))
        stamp = db.now()
        conn.execute(db.outbox.insert(), [
            {"event_id": event_id, "destination": d, "s3_upload_id": row.s3_upload_id, "payload": body,
             "created_at": stamp, "next_attempt_at": stamp} for d in destinations])
    return event_id


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), sort_keys=True)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``t=UNIX_SECONDS,v1=HEX`` of HMAC-SHA256 over ``"{t}." + body``. The time is
    signed too, so a receiver can refuse an old delivery replayed by someone who saw it."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
