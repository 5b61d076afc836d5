"""``verify``: a file and its object proven the same, or not, by the evidence the object carries. moto (in-process)
for the stores that keep checksums and answer HEAD PartNumber; rclone serve s3 (a real server over HTTP) for
MD5 ETags, the folder compare and a refusal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from click.testing import CliRunner
from moto import mock_aws

import s3_multipart_upload as api
from s3_multipart_upload.main import cli
from s3_multipart_upload.plan import MiB
from tests.conftest import S3Server, write_random

BUCKET = "moto-bucket"


@pytest.fixture
def s3(aws_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1",
                              config=Config(request_checksum_calculation="when_required"))
        client.create_bucket(Bucket=BUCKET)
        yield client


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def flip_byte(path: Path, offset: int) -> None:
    """One byte changed in place: same size, so only the bytes can tell."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


# moto keeps CRC32C under its name but computes CRC32 without the optional crc32c package, so a CRC32C object
# there cannot be proven; the composite CRC32C arithmetic is checked against awscrt in test_composite_crc32c.
@pytest.mark.parametrize(("checksum", "how"), [
    ("CRC64NVME", "full-object CRC64NVME"),
    ("CRC32", "composite CRC32 of 3 parts"),
    ("SHA256", "composite SHA256 of 3 parts"),
    ("MD5", "composite MD5 ETag of 3 parts"),
])
def test_object_made_by_this_tool_then_one_byte_changed(s3: Any, tmp_path: Path, checksum: str, how: str) -> None:
    f = write_random(tmp_path / "f.bin", 12 * MiB + 5, seed=1)
    up = invoke("upload", str(f), f"s3://{BUCKET}/k", "--checksum", checksum, "-s", "5M")
    assert up.exit_code == 0, up.output

    r = invoke("verify", str(f), f"s3://{BUCKET}/k")
    assert r.exit_code == 0, r.output
    assert f"identical     {f} = s3://{BUCKET}/k ({how})" in r.stdout
    assert "1 file: 1 identical, 0 differ" in r.stdout

    flip_byte(f, 6 * MiB)
    r = invoke("verify", str(f), f"s3://{BUCKET}/k")
    assert r.exit_code == 3, r.output
    assert f"DIFFERS       {f} = s3://{BUCKET}/k: part 2 differs (bytes 5242880-10485759) ({how})" in r.stdout


@pytest.mark.parametrize("checksums", ["when_required", "when_supported"])
def test_object_made_by_boto3_upload_file_in_8_mib_parts(s3: Any, tmp_path: Path, checksums: str) -> None:
    """No state of this tool: the part size comes from HEAD PartNumber=1; boto3's own default (when_supported)
    adds a full-object CRC32 to the parts."""
    f = write_random(tmp_path / "f.bin", 20 * MiB + 7, seed=2)
    client = boto3.client("s3", region_name="us-east-1", config=Config(request_checksum_calculation=checksums))
    client.upload_file(str(f), BUCKET, "boto", Config=TransferConfig(multipart_threshold=8 * MiB,
                                                                     multipart_chunksize=8 * MiB))
    r = invoke("verify", "--json", str(f), f"s3://{BUCKET}/boto")
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["event"] == "verified" and lines[0]["status"] == "identical"
    assert lines[0]["how"] in ("composite MD5 ETag of 3 parts", "full-object CRC32", "composite CRC32 of 3 parts")
    assert lines[-1] == {"event": "summary", "status": "identical", "exitCode": 0, "files": 1, "identical": 1,
                         "differs": 0, "missingRemote": 0, "missingLocal": 0, "unproven": 0, "failed": 0,
                         "seconds": lines[-1]["seconds"]}
    flip_byte(f, 17 * MiB)
    r = invoke("verify", str(f), f"s3://{BUCKET}/boto")
    assert r.exit_code == 3 and "DIFFERS" in r.stdout, r.output
    # Nothing records boto3's parts: with --download the bytes say where they differ.
    r = invoke("verify", "--download", str(f), f"s3://{BUCKET}/boto")
    assert r.exit_code == 3 and "bytes 16777216-20971526 differ" in r.stdout, r.output


def test_one_part_object_and_a_missing_key(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "small.bin", 1000, seed=3)
    s3.put_object(Bucket=BUCKET, Key="one", Body=f.read_bytes())
    r = invoke("verify", str(f), f"s3://{BUCKET}/one")
    assert r.exit_code == 0 and "(MD5 ETag)" in r.stdout, r.output
    r = invoke("verify", str(f), f"s3://{BUCKET}/nope")
    assert r.exit_code == 3
    assert f"MISSING       s3://{BUCKET}/nope: no such object (file {f})" in r.stdout
    r = invoke("verify", str(tmp_path / "gone.bin"), f"s3://{BUCKET}/one")
    assert r.exit_code == 3 and "MISSING FILE" in r.stdout, r.output


def test_object_replaced_after_the_upload(s3: Any, tmp_path: Path) -> None:
    """The tool's parts log still describes the old object: it must not vouch for the new one."""
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=4)
    assert invoke("upload", str(f), f"s3://{BUCKET}/k", "--checksum", "CRC64NVME", "-s", "5M").exit_code == 0
    other = bytearray(f.read_bytes())
    other[100] ^= 1
    s3.put_object(Bucket=BUCKET, Key="k", Body=bytes(other))
    r = invoke("verify", str(f), f"s3://{BUCKET}/k")
    assert r.exit_code == 3, r.output
    assert "DIFFERS" in r.stdout and "(MD5 ETag)" in r.stdout


def test_download_where_the_object_carries_no_evidence(s3: Any, tmp_path: Path) -> None:
    """SSE-KMS: no checksum, and the ETag is not an MD5. Without --download it cannot be proven (exit 3, said so);
    with it the bytes are compared range by range, and the range that differs is named."""
    f = write_random(tmp_path / "f.bin", 20 * MiB + 1, seed=5)
    s3.put_object(Bucket=BUCKET, Key="kms", Body=f.read_bytes(), ServerSideEncryption="aws:kms")
    r = invoke("verify", str(f), f"s3://{BUCKET}/kms")
    assert r.exit_code == 3, r.output
    assert "CANNOT PROVE" in r.stdout and "SSE-KMS" in r.stdout and "--download" in r.stdout
    r = invoke("verify", "--download", "-t", "3", str(f), f"s3://{BUCKET}/kms")
    assert r.exit_code == 0, r.output
    assert "(download (3 ranged GETs, CRC64NVME of each range))" in r.stdout
    flip_byte(f, 9 * MiB)
    r = invoke("verify", "--download", str(f), f"s3://{BUCKET}/kms")
    assert r.exit_code == 3, r.output
    assert "bytes 8388608-16777215 differ" in r.stdout


def test_composite_crc32c() -> None:
    """The composite form S3 gives CRC32C objects: the CRC32C of the parts' CRC32Cs, then -N."""
    from awscrt import checksums as crt

    from s3_multipart_upload.checksums import composite_checksum
    from s3_multipart_upload.proof import _b64, _crc_combine

    parts = [b"a" * 100, b"b" * 50]
    digests = [crt.crc32c(p).to_bytes(4, "big") for p in parts]
    joined = crt.crc32c(b"".join(digests)).to_bytes(4, "big")
    assert composite_checksum("CRC32C", [_b64(d) for d in digests]) == f"{_b64(joined)}-2"
    assert _crc_combine("CRC32C", digests, [100, 50]) == crt.crc32c(b"".join(parts)).to_bytes(4, "big")


# -- a real server over HTTP (rclone): MD5 ETags, folders, -m, refusals -------------------------------------------

def test_recursive_with_filters_json_and_a_missing_file(s3_server: S3Server, bucket: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    tree = tmp_path / "tree"
    for rel, size in (("a.txt", 10), ("sub/b.bin", 6 * MiB + 1), (".hidden", 3), ("sub/deep/c.tmp", 0)):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        write_random(tree / rel, size)
    ep = ["--endpoint-url", s3_server.endpoint]
    up = invoke("upload", "--recursive", str(tree), f"s3://{bucket}/p/", "-s", "5M", *ep)
    assert up.exit_code == 0, up.output
    r = invoke("verify", "--recursive", str(tree), f"s3://{bucket}/p/", *ep)
    assert r.exit_code == 0, r.output
    assert "4 files: 4 identical, 0 differ" in r.stdout and f"s3://{bucket}/p/.hidden (MD5 ETag)" in r.stdout

    s3_server.client().put_object(Bucket=bucket, Key="p/only-on-server", Body=b"x")
    r = invoke("verify", "--json", "--recursive", str(tree), f"s3://{bucket}/p/", "--exclude", "*.tmp", *ep)
    assert r.exit_code == 3, r.output
    docs = [json.loads(x) for x in r.stdout.splitlines()]
    by_key = {d["key"]: d["status"] for d in docs if d["event"] == "verified"}
    assert by_key == {"p/a.txt": "identical", "p/.hidden": "identical", "p/sub/b.bin": "identical",
                      "p/only-on-server": "missing_local"}  # c.tmp excluded on both sides
    assert docs[-1]["missingLocal"] == 1 and docs[-1]["exitCode"] == 3


def test_meta_file_names_the_part_on_a_store_of_md5_etags(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    """rclone's ETag of a multipart object is the whole file's MD5; the parts log's part ETags name the part."""
    f = write_random(tmp_path / "f.bin", 16 * MiB, seed=6)
    ep = ["--endpoint-url", s3_server.endpoint]
    m, a = tmp_path / "m.json", tmp_path / "p.jsonl"
    assert invoke("upload", "-b", bucket, "-k", "k", "-f", str(f), "-m", str(m), "-a", str(a), "-s", "5M",
                  *ep).exit_code == 0
    r = invoke("verify", "-m", str(m), "-a", str(a), *ep)
    assert r.exit_code == 0 and "(MD5 ETag)" in r.stdout, r.output
    flip_byte(f, 15 * MiB + 1)
    r = invoke("verify", "-m", str(m), "-a", str(a), *ep)
    assert r.exit_code == 3, r.output
    assert "part 4 differs (bytes 15728640-16777215) (MD5 ETag)" in r.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["verify"], "give the file and its object"),
    (["verify", "{tmp}", "s3://b/k"], "is a folder"),
    (["verify", "--recursive", "{tmp}/nope", "s3://b/p/"], "cannot read the folder"),
    (["verify", "--recursive", "{tmp}", "s3://b/p"], "does not end with a slash"),
    (["verify", "-m", "{tmp}/no-meta.json"], "does not exist"),
    (["verify", "-a", "{tmp}/p.jsonl", "f", "s3://b/k"], "-a PARTS goes with -m META"),
])
def test_bad_input_exits_2(aws_env: dict[str, str], tmp_path: Path, args: list[str], message: str) -> None:
    r = invoke(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr


def test_access_denied_exits_5(s3_server: S3Server, bucket: str, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    f = write_random(tmp_path / "f.bin", 10, seed=7)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    r = invoke("verify", str(f), f"s3://{bucket}/k", "--endpoint-url", s3_server.endpoint, "--json")
    assert r.exit_code == 5, r.output
    doc = json.loads(r.stdout.splitlines()[0])
    assert doc["status"] == "error" and doc["exitCode"] == 5 and "refused" in doc["error"]


def test_api_returns_the_verdicts(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 100, seed=8)
    s3.put_object(Bucket=BUCKET, Key="x", Body=f.read_bytes())
    seen: list[api.Verdict] = []
    result = api.verify(f, f"s3://{BUCKET}/x", on_file=seen.append)
    assert result.identical and result.exit_code == 0 and seen == result.verdicts
    assert seen[0].status == "identical" and seen[0].how == "MD5 ETag"
