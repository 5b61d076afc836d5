"""serve's options reach the service's config: what is wrong with them is said, with exit 2, before it listens."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize(("extra", "named"), [
    (["--webhook", "http://127.0.0.1:9/hook"], "--webhook-secret-file"),
    (["--webhook", "http://127.0.0.1:9/hook", "--webhook-secret-file", "{short}"], "at least"),
    (["--oidc-audience", "uploads"], "--oidc-issuer"),
    (["--tagging", "a=1&a=2"], "twice"),
    (["--webhook", "https://alice:s3cr3t@127.0.0.1:9/hook", "--webhook-secret-file", "{long}"],
     "must not hold a user name or password"),
    (["--sse-kms-key-id", "alias/k"], "--sse aws:kms"),
])
def test_serve_refuses_bad_service_options(extra: list[str], named: str, tmp_path: Path) -> None:
    short = tmp_path / "secret"
    short.write_text("too-short")
    short.chmod(0o600)
    long = tmp_path / "long-secret"
    long.write_text("x" * 40)
    long.chmod(0o600)
    tokens = tmp_path / "tokens"
    tokens.write_text("alice 0123456789abcdef0123456789\n")
    args = ["serve", "--bucket", "b", "--tokens-file", str(tokens), "--port", "0",
            "--database-url", f"sqlite:///{tmp_path / 'c.db'}", *[a.format(short=short, long=long) for a in extra]]
    r = run_cli(args, {}, timeout=60)
    assert r.returncode == 2, r.stderr
    assert named in r.stderr
    assert "s3cr3t" not in r.stderr + r.stdout
