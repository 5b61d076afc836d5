"""Sign-in with an identity provider's JWTs (issue 25, item 4), against the real service.

The test is the identity provider: it makes its own keys and serves the discovery document and the
JWKS on 127.0.0.1, counting the fetches, and rotates its keys mid-test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.service_fixtures import ServiceProcess, StartService
from tests.test_service_api import ok, refused

pytestmark = pytest.mark.integration

AUDIENCE = "s3mu-controller"
MIN_REFRESH = 1.0  # seconds between two fetches of the JWKS for unknown key ids (10 s by default)


@dataclass
class Provider:
    issuer: str = ""
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key; the JWKS holds their public halves
    jwks_fetches: int = 0

    def add_key(self, kid: str, kind: str = "rsa") -> Any:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" else \
            ec.generate_private_key(ec.SECP256R1())
        self.keys[kid] = key
        return key

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else \
                jwt.algorithms.ECAlgorithm
            jwk = json.loads(algorithm.to_jwk(key.public_key()))
            out.append(jwk | {"kid": kid, "use": "sig"})
        return {"keys": out}

    def token(self, kid: str = "k1", key: Any = None, algorithm: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": AUDIENCE, "sub": "dana", "iat": now, "exp": now + 300} | claims
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key if key is not None else self.keys[kid], algorithm=algorithm,
                          headers={"kid": kid})


@pytest.fixture
def provider() -> Iterator[Provider]:
    state = Provider()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                document: dict[str, Any] = {"issuer": state.issuer, "jwks_uri": f"{state.issuer}/jwks"}
            elif self.path == "/jwks":
                state.jwks_fetches += 1
                document = state.jwks()
            else:
                self.send_error(404)
                return
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    state.add_key("k1")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def svc(start_service: StartService, provider: Provider, tmp_path: Path) -> ServiceProcess:
    return start_service(f"sqlite:///{tmp_path / 'c.sqlite3'}", config={
        "oidc_issuer": provider.issuer, "oidc_audience": AUDIENCE, "oidc_roles_claim": "realm_access.roles",
        "oidc_jwks_min_refresh": MIN_REFRESH})


def me(svc: ServiceProcess, token: str) -> httpx.Response:
    return httpx.get(f"{svc.base_url}/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_a_valid_jwt_signs_in_with_its_subject_and_roles(svc: ServiceProcess, provider: Provider) -> None:
    assert ok(me(svc, provider.token())) == {"principal": "dana", "roles": []}
    reviewer = provider.token(sub="erin", realm_access={"roles": ["offline_access", "reviewer"]})
    assert ok(me(svc, reviewer)) == {"principal": "erin", "roles": ["reviewer"]}
    assert ok(httpx.get(f"{svc.base_url}/reviews", headers={"Authorization": f"Bearer {reviewer}"}))["uploads"] == []
    # A JWT principal is a principal like the tokens file's: its uploads are its own.
    with httpx.Client(base_url=svc.base_url, headers={"Authorization": f"Bearer {provider.token()}"}) as dana:
        made = ok(dana.post("/files/jwt-file/multipart_uploads", json={}), 201)
    with svc.client("alice") as alice:  # the tokens file still signs in
        refused(alice.get(f"/multipart_uploads/{made['upload_id']}"), 404, "NoSuchUpload")
    assert provider.jwks_fetches == 1  # the keys are kept
    log = svc.log()
    assert provider.token() not in log and reviewer not in log


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs256_with_public_key(provider: Provider) -> str:
    """The algorithm-confusion attack: HS256 keyed with the provider's public key (PEM), which anyone has."""
    pem = provider.keys["k1"].public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64url(json.dumps({"iss": provider.issuer, "aud": AUDIENCE, "sub": "dana",
                              "exp": int(time.time()) + 300}).encode())
    mac = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(mac)}"


def test_refused_jwts(svc: ServiceProcess, provider: Provider) -> None:
    now = int(time.time())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {
        "expired": provider.token(exp=now - 120, iat=now - 600),
        "not yet valid": provider.token(nbf=now + 600),
        "wrong audience": provider.token(aud="another-service"),
        "wrong issuer": provider.token(iss="http://127.0.0.1:1"),
        "no exp": provider.token(exp=None),
        "no sub": provider.token(sub=None),
        "a sub that is no principal name": provider.token(sub="dana smith/../x"),
        "signed by another key under k1": provider.token(key=stranger),
        "alg none": jwt.encode({"iss": provider.issuer, "aud": AUDIENCE, "sub": "dana", "exp": now + 300}, None,
                               algorithm="none", headers={"kid": "k1"}),
        "HS256 keyed with the public key": hs256_with_public_key(provider),
        "garbage": "a.b.c",
    }
    for name, token in bad.items():
        response = me(svc, token)
        assert response.status_code == 401, (name, response.text)
    assert ok(me(svc, provider.token()))["principal"] == "dana"


def test_an_unknown_kid_refetches_the_jwks_once_then_the_rotated_key_works(svc: ServiceProcess,
                                                                            provider: Provider) -> None:
    assert ok(me(svc, provider.token()))["principal"] == "dana"
    assert provider.jwks_fetches == 1
    rotated = provider.add_key("k2", kind="ec")  # the provider rotates: k2 is in its JWKS from now on
    token = provider.token(kid="k2", key=rotated, algorithm="ES256")
    assert me(svc, token).status_code == 401  # the keys were fetched a moment ago: not again so soon
    assert provider.jwks_fetches == 1
    time.sleep(MIN_REFRESH + 0.1)
    assert ok(me(svc, token))["principal"] == "dana"  # unknown kid: fetched again, found
    assert provider.jwks_fetches == 2
    started = time.monotonic()
    for n in range(20):  # made-up key ids: at most one fetch per MIN_REFRESH, not one per request
        assert me(svc, provider.token(kid=f"made-up-{n}", key=rotated, algorithm="ES256")).status_code == 401
    assert provider.jwks_fetches <= 2 + int((time.monotonic() - started) / MIN_REFRESH)
    del provider.keys["k1"]  # k1 retired: tokens signed with it still verify until the next fetch (kept keys)
    assert ok(me(svc, token))["principal"] == "dana"


def test_oidc_settings_are_checked(tmp_path: Path) -> None:
    from s3_multipart_upload.errors import BadInput
    from s3_multipart_upload.service.server import ServeConfig, build

    base: dict[str, Any] = {"bucket": "b", "database_url": f"sqlite:///{tmp_path / 'c.sqlite3'}",
                            "tokens_file": None, "tokens_env": None}
    for more, said in (({"oidc_issuer": "https://idp.example"}, "--oidc-audience"),
                       ({"oidc_audience": "x"}, "goes with --oidc-issuer"),
                       ({"oidc_issuer": "http://idp.example", "oidc_audience": "x"}, "only on loopback"),
                       ({}, "no API tokens")):
        with pytest.raises(BadInput, match=said):
            build(ServeConfig(**base, **more))
