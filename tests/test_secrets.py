"""No credential, session token or signature ever reaches META, PARTS or the output."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import SECRET_KEY, S3Server, run_cli, upload_args, write_random
from tests.s3proxy import Fault, S3Proxy, Seen

pytestmark = pytest.mark.integration

TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN0123456789"


@pytest.mark.parametrize("expire", [False, True], ids=["completes", "credentials-expire"])
def test_secrets_stay_out_of_state_files_and_output(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                    tmp_path: Path, expire: bool) -> None:
    def rule(seen: Seen, index: int) -> Fault | None:
        parts_seen = sum(1 for s in proxy.seen[:index] if s.part_number)
        return Fault(status=400, code="ExpiredToken") if expire and parts_seen >= 2 else None

    proxy = S3Proxy(s3_server.endpoint, rule=rule)
    try:
        env = aws_env | {"AWS_SESSION_TOKEN": TOKEN}
        f = write_random(tmp_path / "f.bin", 20 * MiB, seed=31)
        meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
        r = run_cli(upload_args(bucket, "k", f, meta, parts, "-s", "5M", "-v", endpoint=proxy.endpoint), env)
        assert r.returncode == (75 if expire else 0), r.stderr
        assert proxy.seen, "the run reached the server"
        texts = {"stdout": r.stdout, "stderr": r.stderr, "META": meta.read_text(), "PARTS": parts.read_text()}
        for name, text in texts.items():
            for secret in (SECRET_KEY, TOKEN, "Signature=", "X-Amz-Signature", "X-Amz-Security-Token"):
                assert secret not in text, f"{secret!r} appears in {name}"
    finally:
        proxy.close()
