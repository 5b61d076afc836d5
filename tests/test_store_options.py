"""The store options: --ca-bundle and --no-verify-ssl against a store over TLS (s3rver with a self-signed
certificate, on 127.0.0.1), and --addressing-style (with the AWS config file's s3.addressing_style)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

import s3_multipart_upload as api
from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.plan import MiB
from s3_multipart_upload.s3 import ClientFactory, Endpoint
from tests.conftest import run_cli, upload_args, write_random
from tests.stores import S3RVER_KEY, s3rver, self_signed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """s3rver over https with a certificate of its own: (endpoint, the certificate file)."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = self_signed(folder)
    data = folder / "data"
    data.mkdir()
    with s3rver(data, (key, cert)) as endpoint:
        yield endpoint, cert


@pytest.fixture
def tls_bucket(tls_store: tuple[str, Path]) -> str:
    endpoint, cert = tls_store
    name = f"tls-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3RVER_KEY, aws_secret_access_key=S3RVER_KEY,
                 region_name="us-east-1", verify=str(cert),
                 config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket=name)
    return name


def test_a_store_with_a_private_ca(tls_store: tuple[str, Path], tls_bucket: str, aws_env: dict[str, str],
                                   tmp_path: Path) -> None:
    endpoint, cert = tls_store
    env = aws_env | {"AWS_ACCESS_KEY_ID": S3RVER_KEY, "AWS_SECRET_ACCESS_KEY": S3RVER_KEY}
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=2410)
    args = upload_args(tls_bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                       endpoint=endpoint)
    r = run_cli(args, env)
    assert r.returncode == 5, r.stderr  # a certificate not trusted is the same on every try: no retries, no 75
    assert "TLS certificate" in r.stderr and "--ca-bundle" in r.stderr and "retry" not in r.stderr
    r = run_cli([*args, "--ca-bundle", str(cert)], env)
    assert r.returncode == 0, r.stderr
    assert "--no-verify-ssl" not in r.stderr
    r = run_cli([*upload_args(tls_bucket, "k2", f, tmp_path / "m2.json", tmp_path / "p2.jsonl", "-s", "5M",
                              endpoint=endpoint), "--no-verify-ssl"], env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("the store's TLS certificate is not checked") == 1
    assert "InsecureRequestWarning" not in r.stderr
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3RVER_KEY,
                          aws_secret_access_key=S3RVER_KEY, region_name="us-east-1", verify=str(cert),
                          config=Config(s3={"addressing_style": "path"}))
    for key in ("k", "k2"):
        assert client.get_object(Bucket=tls_bucket, Key=key)["Body"].read() == f.read_bytes()


def test_the_addressing_style(aws_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = virtual\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))

    def style(endpoint: Endpoint) -> str:
        return str(ClientFactory(endpoint, pool_size=1).client().meta.config.s3["addressing_style"])  # type: ignore[index]
    assert style(Endpoint("http://127.0.0.1:9")) == "virtual"  # the config file's, where none is given
    assert style(Endpoint("http://127.0.0.1:9", addressing_style="path")) == "path"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert style(Endpoint("http://127.0.0.1:9")) == "path"  # with an endpoint URL
    assert style(Endpoint()) == "auto"
    with pytest.raises(BadInput, match="addressing_style 'sideways'"):
        api.plan_upload(__file__, bucket="b", key="k", addressing_style="sideways")
    with pytest.raises(BadInput, match="is not a file"):
        api.plan_upload(__file__, bucket="b", key="k", ca_bundle=tmp_path / "missing.pem")
    r = run_cli(["upload", "-b", "b", "-k", "k", "-f", __file__, "--addressing-style", "sideways"], aws_env)
    assert r.returncode == 2 and "'sideways' is not one of" in r.stderr
