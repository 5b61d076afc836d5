"""Bearer API tokens, each mapped to a principal and its roles.

Lines of ``PRINCIPAL TOKEN [ROLE...]`` (blank lines and # comments ignored), from a file and/or the
S3MU_API_TOKENS environment variable (lines, or entries separated by commas). The one role is
``reviewer`` (model.REVIEWER): it may accept or reject uploads. Only SHA-256 digests of the tokens
are kept in memory.

A token is checked against every known digest with ``hmac.compare_digest``, whatever matches. (A
dictionary lookup by digest would not leak the token either: its timing depends on the digest of
what the caller sent, which says nothing usable about a token; but the comparison is cheap, and
this way nothing rests on that argument.) Error messages about the tokens file name the entry, never
a field of it: a line written the wrong way round would otherwise print its token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.service.model import REVIEWER, Caller

log = logging.getLogger(__name__)

TOKENS_ENV = "S3MU_API_TOKENS"
MIN_TOKEN_CHARS = 16
PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
ROLES = frozenset({REVIEWER})


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Tokens:
    def __init__(self, by_digest: dict[str, Caller]) -> None:
        self._by_digest = by_digest
        self._entries = [(bytes.fromhex(d), who) for d, who in by_digest.items()]

    def __len__(self) -> int:
        return len(self._by_digest)

    def caller(self, token: str) -> Caller | None:
        """The principal of ``token`` and its roles, or None; the time taken does not depend on which entry matches."""
        sent = bytes.fromhex(digest(token))
        found: Caller | None = None
        for known, who in self._entries:
            if hmac.compare_digest(known, sent):
                found = who
        return found

    def principal(self, token: str) -> str | None:
        who = self.caller(token)
        return who.principal if who is not None else None

    @classmethod
    def parse(cls, text: str, origin: str) -> Tokens:
        found: dict[str, Caller] = {}
        for number, raw in enumerate(re.split(r"[\n,]", text), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) < 2:
                raise BadInput(f"{origin}, entry {number}: expected 'PRINCIPAL TOKEN [ROLE...]', found "
                               f"{len(fields)} field", "write one 'PRINCIPAL TOKEN' pair per line")
            principal, token, roles = fields[0], fields[1], fields[2:]
            # The messages name the entry only: with the fields swapped, the "principal" is a token.
            if not PRINCIPAL.fullmatch(principal):
                raise BadInput(f"{origin}, entry {number}: the principal (first field) is not 1 to 128 letters, "
                               "digits, '.', '_', '@' or '-', starting with a letter or digit",
                               "write 'PRINCIPAL TOKEN': the name first, then its token")
            if len(token) < MIN_TOKEN_CHARS:
                raise BadInput(f"{origin}, entry {number}: the token (second field) has {len(token)} characters; "
                               f"use at least {MIN_TOKEN_CHARS}",
                               "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
            for place, role in enumerate(roles, start=3):
                if role not in ROLES:  # named by its place only: a line in the wrong order puts the token here
                    raise BadInput(f"{origin}, entry {number}: field {place} is not a role (roles: "
                                   f"{', '.join(sorted(ROLES))})", "write 'PRINCIPAL TOKEN [ROLE...]'")
            if digest(token) in found:
                raise BadInput(f"{origin}, entry {number}: its token is also another entry's token")
            found[digest(token)] = Caller(principal, frozenset(roles))
        return cls(found)

    @classmethod
    def load(cls, path: Path | None, env_text: str | None) -> Tokens:
        merged: dict[str, Caller] = {}
        if path is not None:
            try:
                text = path.read_text("utf-8")
                mode = path.stat().st_mode
            except OSError as exc:
                raise BadInput(f"cannot read the tokens file {path}: {exc.strerror}",
                               "give a readable file of 'PRINCIPAL TOKEN' lines") from exc
            if mode & 0o077:
                log.warning("The tokens file %s can be read by users other than its owner (mode %o): chmod 600 %s",
                            path, mode & 0o777, path)
            merged.update(cls.parse(text, f"tokens file {path}")._by_digest)
        if env_text:
            merged.update(cls.parse(env_text, TOKENS_ENV)._by_digest)
        if not merged:
            raise BadInput("no API tokens: every request would be refused",
                           f"give --tokens-file FILE or set {TOKENS_ENV} ('PRINCIPAL TOKEN' per line)")
        return cls(merged)


class Authenticator:
    """Who a bearer token belongs to: an API token of the tokens file, else (when configured) a JWT of the identity
    provider (oidc.py). Principals named in ``reviewers`` have the reviewer role whatever their source."""

    def __init__(self, tokens: Tokens | None, oidc: TokenVerifier | None = None,
                 reviewers: frozenset[str] = frozenset()) -> None:
        self.tokens = tokens
        self.oidc = oidc
        self.reviewers = reviewers

    def caller(self, token: str) -> Caller | None:
        who = self.tokens.caller(token) if self.tokens is not None else None
        if who is None and self.oidc is not None and token.count(".") == 2:
            who = self.oidc.caller(token)
        if who is not None and who.principal in self.reviewers:
            who = Caller(who.principal, who.roles | {REVIEWER})
        return who


class TokenVerifier(Protocol):
    def caller(self, token: str) -> Caller | None: ...


class SignInLimiter:
    """Failed sign-ins per client address: after ``limit`` failures within ``window`` seconds, the address is
    refused at once (429) until the oldest of them is ``window`` old. Bounded: at most ``max_addresses`` are
    remembered (the longest-quiet forgotten first)."""

    def __init__(self, limit: int = 60, window: float = 60.0, max_addresses: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None if it may now."""
        with self._lock:
            times = self._failures.get(address)
            if times is None:
                return None
            now = self._clock()
            while times and now - times[0] >= self.window:
                times.popleft()
            if not times:
                del self._failures[address]
                return None
            if len(times) < self.limit:
                return None
            return max(1, math.ceil(self.window - (now - times[0])))

    def failed(self, address: str) -> None:
        with self._lock:
            times = self._failures.pop(address, None) or deque(maxlen=self.limit)
            times.append(self._clock())
            self._failures[address] = times  # most recent last
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
