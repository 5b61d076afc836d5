"""Bearer API tokens, each mapped to a principal.

Lines of ``PRINCIPAL TOKEN`` (blank lines and # comments ignored), from a file and/or the
S3MU_API_TOKENS environment variable (lines, or entries separated by commas). Only SHA-256
digests of the tokens are kept in memory.

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
import re
from pathlib import Path

from s3_multipart_upload.errors import BadInput

log = logging.getLogger(__name__)

TOKENS_ENV = "S3MU_API_TOKENS"
MIN_TOKEN_CHARS = 16
PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Tokens:
    def __init__(self, by_digest: dict[str, str]) -> None:
        self._by_digest = by_digest
        self._entries = [(bytes.fromhex(d), who) for d, who in by_digest.items()]

    def __len__(self) -> int:
        return len(self._by_digest)

    def principal(self, token: str) -> str | None:
        """The principal of ``token``, or None; the time taken does not depend on which entry matches."""
        sent = bytes.fromhex(digest(token))
        found: str | None = None
        for known, who in self._entries:
            if hmac.compare_digest(known, sent):
                found = who
        return found

    @classmethod
    def parse(cls, text: str, origin: str) -> Tokens:
        found: dict[str, str] = {}
        for number, raw in enumerate(re.split(r"[\n,]", text), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) != 2:
                raise BadInput(f"{origin}, entry {number}: expected 'PRINCIPAL TOKEN', found {len(fields)} fields",
                               "write one 'PRINCIPAL TOKEN' pair per line")
            principal, token = fields
            # The messages name the entry only: with the fields swapped, the "principal" is a token.
            if not PRINCIPAL.fullmatch(principal):
                raise BadInput(f"{origin}, entry {number}: the principal (first field) is not 1 to 128 letters, "
                               "digits, '.', '_', '@' or '-', starting with a letter or digit",
                               "write 'PRINCIPAL TOKEN': the name first, then its token")
            if len(token) < MIN_TOKEN_CHARS:
                raise BadInput(f"{origin}, entry {number}: the token (second field) has {len(token)} characters; "
                               f"use at least {MIN_TOKEN_CHARS}",
                               "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
            if digest(token) in found:
                raise BadInput(f"{origin}, entry {number}: its token is also another entry's token")
            found[digest(token)] = principal
        return cls(found)

    @classmethod
    def load(cls, path: Path | None, env_text: str | None) -> Tokens:
        merged: dict[str, str] = {}
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
