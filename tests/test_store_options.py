"""The store options: --ca-bundle and --no-verify-ssl against a store over TLS (s3rver with a self-signed
certificate, on 127.0.0.1), and --addressing-style (with the AWS config file's s3.addressing_style)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

import s3_multipart_upload as api
from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.plan import MiB, choose_part_size, plan_chunks
from s3_multipart_upload.s3 import ClientFactory, Endpoint
from tests.conftest import S3Server, run_cli, upload_args, write_random
from tests.s3proxy import S3Proxy
from tests.service_fixtures import StartService
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


def test_verify_and_list_take_the_store_options_too(tls_store: tuple[str, Path], tls_bucket: str,
                                                     aws_env: dict[str, str], tmp_path: Path) -> None:
    """--ca-bundle (and --no-verify-ssl) on the commands that ask the store about objects and uploads, not only on
    upload and copy: without it the private CA's certificate stops them (exit 5, the hint); with it they reach the
    store (s3rver lacks ListMultipartUploads: list's refusal says so, which only the store can answer)."""
    endpoint, cert = tls_store
    env = aws_env | {"AWS_ACCESS_KEY_ID": S3RVER_KEY, "AWS_SECRET_ACCESS_KEY": S3RVER_KEY}
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=2414)
    r = run_cli([*upload_args(tls_bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                              endpoint=endpoint), "--ca-bundle", str(cert)], env)
    assert r.returncode == 0, r.stderr
    verify = ["verify", str(f), f"s3://{tls_bucket}/k", "--endpoint-url", endpoint]
    r = run_cli(verify, env)
    said = r.stdout + r.stderr
    assert r.returncode == 5 and "TLS certificate" in said and "--ca-bundle" in said, said
    r = run_cli([*verify, "--ca-bundle", str(cert)], env)
    assert r.returncode == 0 and "1 identical" in r.stdout, r.stderr + r.stdout
    r = run_cli([*verify, "--no-verify-ssl"], env)
    assert r.returncode == 0 and "TLS certificate is not checked" in r.stderr, r.stderr + r.stdout
    listing = ["list", "-b", tls_bucket, "--endpoint-url", endpoint]
    r = run_cli(listing, env)
    assert r.returncode == 5 and "TLS certificate" in r.stderr, r.stderr
    r = run_cli([*listing, "--ca-bundle", str(cert)], env)
    assert r.returncode == 5 and "does not implement ListMultipartUploads" in r.stderr, r.stderr
    r = run_cli([*listing, "--addressing-style", "sideways"], env)
    assert r.returncode == 2 and "sideways" in r.stderr


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


def test_max_parts_raises_the_part_size_and_refuses_too_many_chunks(moto_server: S3Server, aws_env: dict[str, str],
                                                                    tmp_path: Path) -> None:
    """A store capped below S3's 10,000 parts (Scaleway: 1,000), here at 4."""
    assert choose_part_size(40 * MiB, 5 * MiB, max_parts=4) == (10 * MiB, "part size raised from 5 MiB to 10 MiB: "
                                                                "40 MiB in parts of 5 MiB would exceed --max-parts 4")
    assert choose_part_size(40 * MiB, 5 * MiB) == (5 * MiB, None)
    with pytest.raises(BadInput, match="5 chunk files exceed --max-parts 4"):
        plan_chunks([5 * MiB] * 5, max_parts=4)
    moto_server.client().create_bucket(Bucket="capped")
    proxy = S3Proxy(moto_server.endpoint)
    try:
        f = write_random(tmp_path / "f.bin", 40 * MiB, seed=2411)
        args = [*upload_args("capped", "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                             endpoint=proxy.endpoint), "--max-parts", "4"]
        plan = json.loads(run_cli([*args, "--dry-run", "--json"], aws_env).stdout)
        assert (plan["parts"], plan["partSize"]) == (4, 10 * MiB) and "--max-parts 4" in plan["partSizeWhy"]
        r = run_cli(args, aws_env)
        assert r.returncode == 0, r.stderr
        assert proxy.part_puts() == {1: 1, 2: 1, 3: 1, 4: 1}
        assert moto_server.client().get_object(Bucket="capped", Key="k")["Body"].read() == f.read_bytes()
        chunks = tmp_path / "chunks"
        chunks.mkdir()
        for i in range(5):
            write_random(chunks / f"c{i}", 5 * MiB, seed=i)
        r = run_cli([*upload_args("capped", "d", chunks, tmp_path / "m2.json", tmp_path / "p2.jsonl", "-p", "c",
                                  endpoint=proxy.endpoint), "--max-parts", "4"], aws_env)
        assert r.returncode == 2 and "5 chunk files exceed --max-parts 4" in r.stderr, r.stderr
    finally:
        proxy.close()


def test_equal_parts_refuses_unequal_chunks_naming_them(moto_server: S3Server, aws_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    """A store that needs every part but the last of one size (R2): -d with chunks of other sizes is refused before
    anything is sent (exit 2), naming the chunks; equal chunks (the last smaller) and a file upload as usual."""
    moto_server.client().create_bucket(Bucket="equal")
    proxy = S3Proxy(moto_server.endpoint)
    try:
        chunks = tmp_path / "chunks"
        chunks.mkdir()
        for name, size in (("x00", 6 * MiB), ("x01", 5 * MiB), ("x02", 6 * MiB), ("x03", 7 * MiB)):
            write_random(chunks / name, size, seed=size + len(name))
        args = [*upload_args("equal", "d", chunks, tmp_path / "m.json", tmp_path / "p.jsonl", "-p", "x",
                             endpoint=proxy.endpoint), "--equal-parts"]
        for extra in (["--dry-run"], []):
            r = run_cli([*args, *extra], aws_env)
            assert r.returncode == 2, r.stderr
            assert "--equal-parts" in r.stderr and "x01 (5 MiB, 5242880 bytes)" in r.stderr, r.stderr
            assert "x03 (7 MiB" in r.stderr and "x02" not in r.stderr.split("these are not:")[1]
        assert proxy.seen == [] and not (tmp_path / "m.json").exists()
        (chunks / "x01").write_bytes((chunks / "x00").read_bytes())
        (chunks / "x03").write_bytes(b"last")
        r = run_cli(args, aws_env)  # 6, 6, 6 MiB and 4 bytes: equal but the last, which is smaller
        assert r.returncode == 0, r.stderr
        joined = b"".join((chunks / n).read_bytes() for n in ("x00", "x01", "x02", "x03"))
        assert moto_server.client().get_object(Bucket="equal", Key="d")["Body"].read() == joined
        f = write_random(tmp_path / "f.bin", 11 * MiB, seed=2413)
        r = run_cli([*upload_args("equal", "f", f, tmp_path / "m2.json", tmp_path / "p2.jsonl", "-s", "5M",
                                  endpoint=proxy.endpoint), "--equal-parts"], aws_env)
        assert r.returncode == 0, r.stderr
    finally:
        proxy.close()


def test_the_controller_client_goes_through_http_proxy_except_no_proxy(start_service: StartService,
                                                                      s3_server: S3Server, tmp_path: Path) -> None:
    """HTTP_PROXY / NO_PROXY as every other client of the machine honours them: the parts' presigned PUTs to the
    store go through the proxy (here the counting proxy, in front of the same store), the controller (localhost,
    named in NO_PROXY) is reached directly. A bare urllib3 pool ignored both."""
    svc = start_service(f"sqlite:///{tmp_path / 'c.db'}", "--part-size", "5M")
    proxy = S3Proxy(s3_server.endpoint)
    try:
        f = write_random(tmp_path / "f.bin", 11 * MiB, seed=2412)
        controller = svc.base_url.replace("127.0.0.1", "localhost")
        env = {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
               "AWS_EC2_METADATA_DISABLED": "true", "HTTP_PROXY": proxy.endpoint, "NO_PROXY": "localhost"}
        r = run_cli(["upload", "--controller", controller, "--file-id", "via-proxy", "--token-file",
                     str(svc.token_file()), "-f", str(f), "-m", str(tmp_path / "m.json"), "-a",
                     str(tmp_path / "p.jsonl")], env)
        assert r.returncode == 0, r.stderr
        assert proxy.part_puts() == {1: 1, 2: 1, 3: 1}
        assert all(s.path.startswith(f"/{svc.bucket}/") for s in proxy.seen)  # S3's requests only
        assert s3_server.client().get_object(Bucket=svc.bucket, Key="files/via-proxy")["Body"].read() == \
            f.read_bytes()
    finally:
        proxy.close()
