"""Delivery of the outbox's events to the webhooks: at least once, in order per upload and webhook, by one
instance at a time.

A few threads per instance each claim the oldest due event of an upload whose earlier events to that
webhook are all delivered (so events of one upload arrive in order), by setting ``claimed_until`` to a
lease in a short transaction (PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, so two instances never
claim the same row); then POST it, outside any transaction, and record the answer. A 2xx is delivered;
anything else (another status, a redirect, no answer within the timeout) is tried again after a backoff
doubling up to ``max_backoff``, for as long as it takes: an event is never dropped. An instance that dies
mid-delivery leaves its claim to run out, and another instance delivers the event: the receiver may so
see an event twice, and recognises it by its ``Idempotency-Key``.

Each request: ``Content-Type: application/json``, ``Idempotency-Key`` (the event's id), ``X-S3MU-Event``,
``X-S3MU-Delivery`` (the attempt number) and ``X-S3MU-Signature`` (events.sign). Logs name a webhook by
its scheme, host and path, never its query or credentials, and never show the secret.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc

from s3_multipart_upload import __version__
from s3_multipart_upload.service import db, events
from s3_multipart_upload.service.db import Database, outbox
from s3_multipart_upload.service.workers import Background

log = logging.getLogger(__name__)

MAX_ERROR = 500


@dataclass(frozen=True)
class Webhook:
    url: str

    @property
    def id(self) -> str:
        return events.destination_id(self.url)

    @property
    def label(self) -> str:
        """The URL without credentials, query or fragment: what logs may show."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("a webhook is an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        # (urllib cannot send them, and a failed delivery's error would carry them into the log and the outbox)
        raise ValueError("a webhook URL must not hold a user name or password: the deliveries are signed with "
                         "--webhook-secret-file; put any token in the URL's path or query")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer other than 2xx: following it would turn the POST into a GET elsewhere."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class _Claimed:
    id: int
    event_id: str
    destination: str
    payload: str
    attempts: int  # this delivery's number


class Deliverer(Background):
    name = "webhooks"

    def __init__(self, database: Database, webhooks: list[Webhook], secret: bytes, workers: int = 2,
                 timeout: float = 10.0, backoff: float = 2.0, max_backoff: float = 600.0, lease: float = 60.0,
                 poll: float = 1.0) -> None:
        super().__init__(workers if webhooks else 0, poll)
        self.db = database
        self.webhooks = {w.id: w for w in webhooks}
        self._secret = secret
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.lease = max(lease, 2 * timeout + 5)  # a claim outlives the request it covers
        self._opener = urllib.request.build_opener(_NoRedirect)

    def run_once(self) -> bool:
        """Claim one due event and try to deliver it; False if none was due."""
        claimed = self._claim()
        if claimed is None:
            return False
        hook = self.webhooks[claimed.destination]
        error = self._post(hook, claimed)
        if error is not None:
            error = error.replace(hook.url, hook.label)  # a message that quotes the URL shows no secret of it
        with self.db.transaction() as conn:
            done = outbox.update().where(outbox.c.id == claimed.id)
            if error is None:
                conn.execute(done.values(delivered_at=db.now(), claimed_until=None, last_error=None))
            else:
                delay = min(self.max_backoff, self.backoff * 2 ** (claimed.attempts - 1)) * random.uniform(0.8, 1.0)
                conn.execute(done.values(claimed_until=None, last_error=error[:MAX_ERROR],
                                         next_attempt_at=db.now() + dt.timedelta(seconds=delay)))
        if error is None:
            log.info("Event %s delivered to %s (attempt %d).", claimed.event_id, hook.label, claimed.attempts)
        else:
            log.warning("Event %s not delivered to %s (attempt %d): %s; next try in %.1f s.", claimed.event_id,
                        hook.label, claimed.attempts, error, delay)
        return True

    def _claim(self) -> _Claimed | None:
        now = db.now()
        earlier = outbox.alias("earlier")
        c = outbox.c
        with self.db.transaction() as conn:
            row = conn.execute(sa.select(c.id, c.event_id, c.destination, c.payload, c.attempts).where(
                c.delivered_at.is_(None), c.destination.in_(list(self.webhooks)), c.next_attempt_at <= now,
                sa.or_(c.claimed_until.is_(None), c.claimed_until < now),
                ~sa.exists().where(earlier.c.destination == c.destination, earlier.c.s3_upload_id == c.s3_upload_id,
                                   earlier.c.delivered_at.is_(None), earlier.c.id < c.id),
            ).order_by(c.id).limit(1).with_for_update(skip_locked=True, of=outbox)).first()
            if row is None:
                return None
            conn.execute(outbox.update().where(c.id == row.id).values(  # a delivery cut short counts as one
                claimed_until=now + dt.timedelta(seconds=self.lease), attempts=row.attempts + 1))
        return _Claimed(row.id, row.event_id, row.destination, row.payload, row.attempts + 1)

    def _post(self, hook: Webhook, claimed: _Claimed) -> str | None:
        """POST the event; None if the webhook acknowledged it (2xx), else what went wrong."""
        body = claimed.payload.encode()
        request = urllib.request.Request(hook.url, data=body, method="POST", headers={
            "Content-Type": "application/json",
            "User-Agent": f"s3-multipart-upload/{__version__}",
            "Idempotency-Key": claimed.event_id,
            "X-S3MU-Event": events.EVENT_TYPE,
            "X-S3MU-Delivery": str(claimed.attempts),
            events.SIGNATURE_HEADER: events.sign(self._secret, int(time.time()), body),
        })
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(65536)
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            exc.close()
            return f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            return f"{type(exc.reason).__name__}: {exc.reason}" if not isinstance(exc.reason, str) else exc.reason
        except (OSError, ValueError) as exc:  # timeouts, resets, a malformed answer
            return f"{type(exc).__name__}: {exc}"
