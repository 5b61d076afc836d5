"""Sign-in through an identity provider: bearer JWTs checked against the issuer's JWKS (PyJWT).

At the first JWT the issuer's discovery document (``{issuer}/.well-known/openid-configuration``) gives
the JWKS's URL; its keys are kept, and fetched again when a token names a key id (``kid``) they lack
(the provider rotated its keys), at most once per ``min_refresh`` seconds, so tokens with made-up key
ids cannot make the controller fetch on every request; and every ``max_age`` seconds anyway.

A token is accepted when it is signed with an asymmetric algorithm by one of those keys, names the
issuer and the audience, is within its ``exp``/``nbf`` (30 s of leeway), and its principal claim
(``sub`` by default) is a principal name the tokens file could hold too. The roles claim (``roles``,
or a dotted path such as ``realm_access.roles``) is a list of names or a space-separated string; the
reviewer role there makes the principal a reviewer. Tokens are never logged, nor their claims.

The page signs in with a pasted token (a JWT works as any token); a redirect flow is not built.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import jwt

from s3_multipart_upload.service.auth import PRINCIPAL
from s3_multipart_upload.service.model import REVIEWER, Caller, ServiceError

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_DOCUMENT = 1 << 20


def check_issuer(issuer: str) -> None:
    """https, or http on this machine (a test's or a sidecar's provider)."""
    parts = urllib.parse.urlsplit(issuer)
    if not parts.hostname or parts.scheme not in ("https", "http") or (
            parts.scheme == "http" and parts.hostname not in LOOPBACK and not parts.hostname.startswith("127.")):
        raise ValueError("the issuer is an https:// URL (http:// only on loopback)")


class Oidc:
    def __init__(self, issuer: str, audience: str, principal_claim: str = "sub", roles_claim: str = "roles",
                 reviewer_role: str = REVIEWER, timeout: float = 10.0, min_refresh: float = 10.0,
                 max_age: float = 3600.0) -> None:
        check_issuer(issuer)
        self.issuer = issuer
        self.audience = audience
        self.principal_claim = principal_claim
        self.roles_claim = roles_claim
        self.reviewer_role = reviewer_role
        self.timeout = timeout
        self.min_refresh = min_refresh
        self.max_age = max_age
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = -float("inf")
        self._lock = threading.Lock()

    def caller(self, token: str) -> Caller | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS or not isinstance(kid, str):
            return None  # "none", HS256 (a public key as an HMAC secret) and key-less tokens are refused outright
        key = self._key(kid)
        if key is None:
            return None
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer,
                                leeway=30, options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            log.debug("A JWT was refused: %s.", type(exc).__name__)
            return None
        principal = claims.get(self.principal_claim)
        if not isinstance(principal, str) or not PRINCIPAL.fullmatch(principal):
            log.info("A valid JWT has no usable %r claim (1 to 128 letters, digits, '.', '_', '@' or '-').",
                     self.principal_claim)
            return None
        roles = self._roles(claims)
        return Caller(principal, frozenset({REVIEWER}) if self.reviewer_role in roles else frozenset())

    def _roles(self, claims: dict[str, Any]) -> set[str]:
        value: Any = claims
        for step in self.roles_claim.split("."):
            value = value.get(step) if isinstance(value, dict) else None
        if isinstance(value, str):
            return set(value.split())
        if isinstance(value, list):
            return {v for v in value if isinstance(v, str)}
        return set()

    def _key(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:  # one fetch at a time; the others then find the key
            age = time.monotonic() - self._fetched
            if (kid not in self._keys and age >= self.min_refresh) or age >= self.max_age:
                self._refresh()
            return self._keys.get(kid)

    def _refresh(self) -> None:
        try:
            if self._jwks_uri is None:
                document = self._get(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
                if document.get("issuer") != self.issuer or not isinstance(document.get("jwks_uri"), str):
                    raise ValueError("its discovery document names another issuer, or no jwks_uri")
                check_issuer(document["jwks_uri"])  # the same rule for where the keys come from
                self._jwks_uri = document["jwks_uri"]
            assert self._jwks_uri is not None
            keys = jwt.PyJWKSet.from_dict(self._get(self._jwks_uri)).keys
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            self._fetched = time.monotonic()  # not again at once: the provider is down, or its answer is wrong
            log.warning("Identity provider %s: cannot read its keys: %s: %s", self.issuer, type(exc).__name__,
                        str(exc)[:200])
            if not self._keys:
                raise ServiceError(503, "IdentityProviderUnavailable", f"the identity provider {self.issuer} did "
                                   "not give its keys; retry later", headers={"Retry-After": "10"}) from exc
            return
        self._keys = {k.key_id: k for k in keys if k.key_id}
        self._fetched = time.monotonic()
        log.info("Identity provider %s: %d signing keys.", self.issuer, len(self._keys))

    def _get(self, url: str) -> dict[str, Any]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            document = json.loads(response.read(MAX_DOCUMENT))
        if not isinstance(document, dict):
            raise ValueError(f"{url} did not answer a JSON object")
        return document
