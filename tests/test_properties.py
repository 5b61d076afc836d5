"""The object's properties (content type and headers, metadata, storage class, tags, ACL, encryption, Object Lock) on
every path, kept by a rerun, refused when a rerun changes them; SSE-C's key never written or printed."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import signal
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

import s3_multipart_upload as api
from s3_multipart_upload.main import cli
from s3_multipart_upload.plan import MiB
from s3_multipart_upload.properties import ObjectProperties, key_md5
from tests.conftest import S3Server, kill_when, run_cli, write_random
from tests.s3proxy import Fault, S3Proxy, Seen

BUCKET = "props-bucket"
ASKED = ["--storage-class", "STANDARD_IA", "--metadata", "team=genomics", "--metadata", '{"run": "42"}',
         "--tagging", "project=x", "--tag", "stage=raw", "--cache-control", "max-age=60",
         "--content-disposition", "attachment", "--sse", "aws:kms", "--sse-kms-key-id", "alias/uploads"]


@pytest.fixture
def s3(aws_env: dict[str, str]) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        yield client


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def shows_asked(s3: Any, key: str, content_type: str) -> None:
    """HEAD and GetObjectTagging show exactly what ASKED asked for."""
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == content_type
    assert head["Metadata"] == {"team": "genomics", "run": "42"}
    assert (head["StorageClass"], head["CacheControl"], head["ContentDisposition"]) == \
        ("STANDARD_IA", "max-age=60", "attachment")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", "alias/uploads")
    tags = s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"project": "x", "stage": "raw"}


@pytest.mark.parametrize("size", [1000, 3 * 5 * MiB + 7], ids=["one-part", "multipart"])
def test_upload_sets_what_was_asked(s3: Any, tmp_path: Path, size: int) -> None:
    f = write_random(tmp_path / "report.pdf", size)
    r = invoke("upload", str(f), f"s3://{BUCKET}/runs/report.pdf", "-s", "5M", "--state-dir",
               str(tmp_path / "s"), "--json", *ASKED)
    assert r.exit_code == 0, r.output
    shows_asked(s3, "runs/report.pdf", "application/pdf")  # guessed from the name, as aws-cli does
    summary = json.loads(r.output.splitlines()[-1])
    assert summary["objectProperties"]["storage_class"] == "STANDARD_IA"
    assert summary["objectProperties"]["content_type"] == "application/pdf"
    assert s3.get_object(Bucket=BUCKET, Key="runs/report.pdf")["Body"].read() == f.read_bytes()


def test_chunk_folder_many_files_and_copy(s3: Any, tmp_path: Path) -> None:
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    for i in range(3):
        write_random(chunks / f"part_{i}", 5 * MiB, seed=i)
    r = invoke("upload", "-b", BUCKET, "-k", "img/disk.raw", "-d", str(chunks), "-p", "part_", "-m",
               str(tmp_path / "m.json"), "-a", str(tmp_path / "p.jsonl"), "--content-type", "application/x-raw",
               *ASKED)
    assert r.exit_code == 0, r.output
    shows_asked(s3, "img/disk.raw", "application/x-raw")

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.html").write_text("<p>a</p>")
    (tree / "b.json").write_text("{}")
    write_random(tree / "c.csv", 11 * MiB)
    r = invoke("upload", "--recursive", str(tree), f"s3://{BUCKET}/site/", "-s", "5M", "--state-dir",
               str(tmp_path / "s"), *ASKED)
    assert r.exit_code == 0, r.output
    for name, kind in (("a.html", "text/html"), ("b.json", "application/json"), ("c.csv", "text/csv")):
        shows_asked(s3, f"site/{name}", kind)  # the content type guessed per file

    # copy keeps the source's content headers, metadata and tags; storage class and encryption are the options'
    r = invoke("copy", "--source", f"s3://{BUCKET}/site/c.csv", "-b", BUCKET, "-k", "copies/c.csv", "-s", "5M",
               "--state-dir", str(tmp_path / "s"), "--storage-class", "GLACIER_IR", "--sse", "AES256")
    assert r.exit_code == 0, r.output
    head = s3.head_object(Bucket=BUCKET, Key="copies/c.csv")
    assert (head["ContentType"], head["Metadata"], head["StorageClass"], head["ServerSideEncryption"]) == \
        ("text/csv", {"team": "genomics", "run": "42"}, "GLACIER_IR", "AES256")
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=BUCKET, Key="copies/c.csv")["TagSet"]}
    assert tags == {"project": "x", "stage": "raw"}

    # --metadata-directive REPLACE takes the options instead; without it, giving them is refused
    r = invoke("copy", "--source", f"s3://{BUCKET}/site/a.html", "-b", BUCKET, "-k", "copies/a.html",
               "--state-dir", str(tmp_path / "s"), "--metadata", "k=v")
    assert r.exit_code == 2 and "--metadata-directive REPLACE" in r.output
    r = invoke("copy", "--source", f"s3://{BUCKET}/site/a.html", "-b", BUCKET, "-k", "copies/a.html",
               "--state-dir", str(tmp_path / "s"), "--metadata-directive", "REPLACE", "--metadata", "k=v",
               "--content-type", "text/plain")
    assert r.exit_code == 0, r.output
    head = s3.head_object(Bucket=BUCKET, Key="copies/a.html")
    assert (head["ContentType"], head["Metadata"]) == ("text/plain", {"k": "v"})
    assert s3.get_object_tagging(Bucket=BUCKET, Key="copies/a.html")["TagSet"] == []


def test_object_lock_and_acl_on_a_put(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "ledger.bin", 4000)
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).replace(microsecond=0)
    r = invoke("upload", str(f), f"s3://{BUCKET}/ledger.bin", "--state-dir", str(tmp_path / "s"),
               "--object-lock-mode", "governance", "--object-lock-retain-until-date", until.isoformat(),
               "--object-lock-legal-hold", "ON", "--acl", "bucket-owner-full-control", "--no-guess-mime-type")
    assert r.exit_code == 0, r.output
    head = s3.head_object(Bucket=BUCKET, Key="ledger.bin")
    assert (head["ObjectLockMode"], head["ObjectLockLegalHoldStatus"]) == ("GOVERNANCE", "ON")
    assert head["ObjectLockRetainUntilDate"] == until
    assert head["ContentType"] == "binary/octet-stream"  # nothing guessed, nothing sent


def test_a_rerun_with_other_properties_is_refused_and_changes_nothing(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 3 * 5 * MiB)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    args = ["upload", "-b", BUCKET, "-k", "f.bin", "-f", str(f), "-m", str(meta), "-a", str(parts), "-s", "5M"]
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="f.bin")["UploadId"]  # a stranger's, untouched
    r = invoke(*args, "--storage-class", "GLACIER_IR", "--dry-run")
    assert r.exit_code == 0 and "--storage-class GLACIER_IR" in r.output
    # begun (META written, the upload created), then stopped before its parts: as a killed run leaves it
    with pytest.raises(_Stop):
        api.upload(f, bucket=BUCKET, key="f.bin", meta_file_path=meta, parts_file_path=parts, split_size="5M",
                   storage_class="GLACIER_IR", progress=_stop_after_create)
    before = meta.read_text()
    for changed, named in ((["--storage-class", "STANDARD_IA"], "--storage-class 'GLACIER_IR'"),
                           ([], "--storage-class 'GLACIER_IR'"),
                           (["--storage-class", "GLACIER_IR", "--tag", "a=b"], "--tagging nothing")):
        r = invoke(*args, *changed)
        assert r.exit_code == 2, r.output
        assert named in r.output and "--restart" in r.output
        assert meta.read_text() == before
    status = invoke("status", "-m", str(meta), "-a", str(parts))
    assert "object:   --storage-class GLACIER_IR" in status.output
    r = invoke(*args, "--storage-class", "GLACIER_IR")
    assert r.exit_code == 0, r.output
    assert s3.head_object(Bucket=BUCKET, Key="f.bin")["StorageClass"] == "GLACIER_IR"
    listed = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert [u["UploadId"] for u in listed] == [upload_id]


class _Stop(Exception):
    pass


def _stop_after_create(event: api.ProgressEvent) -> None:
    if event.kind == "started":
        raise _Stop


@pytest.mark.parametrize(("args", "named"), [
    (["--storage-class", "COLD"], "--storage-class"),
    (["--acl", "everyone"], "--acl"),
    (["--metadata", "no-equals-sign"], "--metadata"),
    (["--metadata", "x=" + "y" * 2100], "2048"),
    (["--metadata", "bad key=1"], "--metadata key"),
    ([f"--tag=t{i}=v" for i in range(11)], "at most 10"),
    (["--tagging", "a=1&a=2"], "twice"),
    (["--object-lock-mode", "GOVERNANCE", "--object-lock-retain-until-date", "2001-01-01"], "in the past"),
    (["--object-lock-mode", "GOVERNANCE"], "go together"),
    (["--sse-kms-key-id", "alias/k"], "--sse aws:kms"),
    (["--sse-kms-encryption-context", "[1]"], "--sse-kms-encryption-context"),
    (["--expected-bucket-owner", "me"], "--expected-bucket-owner"),
    (["--expires", "soon"], "--expires"),
])
def test_bad_properties_are_refused_before_anything_is_sent(s3: Any, tmp_path: Path, args: list[str],
                                                            named: str) -> None:
    f = write_random(tmp_path / "f.bin", 100)
    r = invoke("upload", str(f), f"s3://{BUCKET}/bad.bin", "--state-dir", str(tmp_path / "s"), *args)
    assert r.exit_code == 2, r.output
    assert named in r.output
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_sse_c_key_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(os.urandom(16))
    with pytest.raises(api.BadInput, match="holds 16 bytes"):
        ObjectProperties.of(sse_c_key_file=short)
    shared = tmp_path / "shared.key"
    shared.write_bytes(os.urandom(32))
    shared.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        props = ObjectProperties.of(sse_c_key_file=shared)
    assert "can be read by others" in caplog.text
    assert props.opaque_etags and props.recorded() == {"sse_c_key_md5": key_md5(shared.read_bytes())}
    with pytest.raises(api.BadInput, match="HTTPS"):
        props.check_endpoint("http://s3.us-east-1.amazonaws.com", aws=True)
    props.check_endpoint("http://127.0.0.1:9000", aws=False)  # a local store over HTTP: the user's choice
    with pytest.raises(api.BadInput, match="two kinds of encryption"):
        ObjectProperties.of(sse_c_key_file=shared, sse="AES256")


# -- over HTTP: the headers each request carries, a kill and a rerun, SSE-C, a bucket policy ----------------------

def new_bucket(server: S3Server) -> str:
    name = f"p-{uuid.uuid4().hex[:10]}"
    server.client().create_bucket(Bucket=name)
    return name


@pytest.mark.e2e
def test_killed_and_rerun_keeps_them_and_sse_c_never_leaks(moto_server: S3Server, aws_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    """An SSE-C upload with properties, SIGKILLed after some parts and rerun: every request of the object carried
    the key, the object has the properties, and the key is in no file the tool wrote and no line it printed."""
    bucket = new_bucket(moto_server)
    key_file = tmp_path / "k.key"
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o600)
    key = key_file.read_bytes()
    f = write_random(tmp_path / "f.tar", 8 * 5 * MiB, seed=4)
    state = tmp_path / "state"
    proxy = S3Proxy(moto_server.endpoint, delay=0.1)
    try:
        args = ["upload", str(f), f"s3://{bucket}/f.tar", "-s", "5M", "-t", "2", "--state-dir", str(state),
                "--endpoint-url", proxy.endpoint, "--sse-c-key-file", str(key_file), "--storage-class",
                "STANDARD_IA", "--metadata", "team=genomics", "--json"]
        code = kill_when(args, aws_env, lambda: sum(1 for s in proxy.seen if s.part_number) >= 3)
        assert code == -signal.SIGKILL
        proxy.wait_idle()
        r = run_cli(args, aws_env)
        assert r.returncode == 0, r.stderr
        object_requests = [s for s in proxy.seen if s.method in ("PUT", "POST") or s.query.get("uploadId")]
        assert object_requests and all(s.headers.get("x-amz-server-side-encryption-customer-key-md5") ==
                                       key_md5(key) for s in object_requests)
    finally:
        proxy.close()
    client = moto_server.client()
    head = client.head_object(Bucket=bucket, Key="f.tar", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert (head["StorageClass"], head["Metadata"], head["ContentType"]) == \
        ("STANDARD_IA", {"team": "genomics"}, "application/x-tar")
    body = client.get_object(Bucket=bucket, Key="f.tar", SSECustomerAlgorithm="AES256", SSECustomerKey=key)["Body"]
    assert body.read() == f.read_bytes()
    forms = [key, base64.b64encode(key), key.hex().encode()]
    for path in state.rglob("*"):
        if path.is_file():
            assert not any(form in path.read_bytes() for form in forms), f"the key is in {path}"
    assert not any(form.decode("latin-1") in r.stdout + r.stderr for form in forms)


@pytest.mark.e2e
def test_a_bucket_that_demands_sse_kms(moto_server: S3Server, aws_env: dict[str, str], tmp_path: Path) -> None:
    """A bucket policy that denies uploads without x-amz-server-side-encryption: aws:kms (answered by the proxy as
    AWS does): a plain upload is refused with exit 5, one with --sse aws:kms goes through."""
    bucket = new_bucket(moto_server)

    def deny_unencrypted(seen: Seen, index: int) -> Fault | None:
        creating = seen.method == "POST" and "uploads" in seen.query
        putting = seen.method == "PUT" and "partNumber" not in seen.query  # a PutObject (not checksum auto's probe)
        if (creating or putting) and seen.headers.get("x-amz-server-side-encryption") != "aws:kms":
            return Fault(403, "AccessDenied")
        key_id = seen.headers.get("x-amz-server-side-encryption-aws-kms-key-id")
        if (creating or putting) and key_id == "alias/not-ours":
            return Fault(403, "AccessDenied")  # as AWS answers a key the caller may not use
        return None

    proxy = S3Proxy(moto_server.endpoint)
    proxy.rule = deny_unencrypted
    try:
        for size in (100, 2 * 5 * MiB):
            f = write_random(tmp_path / f"f{size}.bin", size)
            base = ["upload", str(f), f"s3://{bucket}/{f.name}", "-s", "5M", "--state-dir", str(tmp_path / "s"),
                    "--endpoint-url", proxy.endpoint]
            r = run_cli(base, aws_env)
            assert r.returncode == 5, r.stderr
            assert "AccessDenied" in r.stderr or "denied" in r.stderr
            r = run_cli([*base, "--sse", "aws:kms"], aws_env)
            assert r.returncode == 0, r.stderr
            assert moto_server.client().head_object(Bucket=bucket, Key=f.name)["ServerSideEncryption"] == "aws:kms"
            r = run_cli([*base, "--sse", "aws:kms", "--sse-kms-key-id", "alias/not-ours", "--restart"], aws_env)
            assert r.returncode == 5 and "the KMS key alias/not-ours" in r.stderr, r.stderr
    finally:
        proxy.close()


def test_shards_build_one_object_with_the_properties(s3: Any, tmp_path: Path) -> None:
    """Each task of an array job gives the same properties; the one that completes builds the object with them,
    and a task that gives others is refused without sending."""
    f = write_random(tmp_path / "f.bin", 4 * 5 * MiB, seed=8)
    args = ["upload", "-b", BUCKET, "-k", "sharded.bin", "-f", str(f), "-m", str(tmp_path / "m.json"), "-a",
            str(tmp_path / "p.jsonl"), "-s", "5M", *ASKED]
    r = invoke(*args, "--shard", "0/2")
    assert r.exit_code == 0, r.output
    other = invoke(*[a if a != "STANDARD_IA" else "GLACIER" for a in args], "--shard", "1/2")
    assert other.exit_code == 2 and "--storage-class 'STANDARD_IA'" in other.output
    r = invoke(*args, "--shard", "1/2")
    assert r.exit_code == 0, r.output
    shows_asked(s3, "sharded.bin", "application/octet-stream")


@pytest.mark.e2e
def test_the_controller_policy_is_on_every_object_it_creates(moto_server: S3Server, aws_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    """serve --storage-class/--sse/--tagging: on the objects of the CLI's controller uploads and of presigned PUTs
    (whose answer lists the headers to send); a client cannot set properties of its own through a controller."""
    import httpx

    from tests.service_fixtures import run_service
    from tests.test_controller_client import client_env, controller_args

    bucket = new_bucket(moto_server)
    policy = ["--storage-class", "STANDARD_IA", "--sse", "AES256", "--tagging", "project=ledger"]
    with run_service(moto_server, bucket, f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "svc", "--part-size", "5M",
                     "--metadata-key", "Team", *policy) as svc:
        f = write_random(tmp_path / "data.bin", 2 * 5 * MiB + 3, seed=2)
        meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
        r = run_cli([*controller_args(svc, "pol-1", f, meta, parts), "--storage-class", "GLACIER"],
                    client_env(tmp_path))
        assert r.returncode == 2 and "--storage-class cannot go with --controller" in r.stderr
        r = run_cli([*controller_args(svc, "pol-1", f, meta, parts), "--metadata", "owner=me"], client_env(tmp_path))
        assert r.returncode != 0 and "metadata keys owner are not allowed here (allowed: team)" in r.stderr
        r = run_cli([*controller_args(svc, "pol-1", f, meta, parts), "--metadata", "team=genomics",
                     "--content-type", "application/x-tar"], client_env(tmp_path))
        assert r.returncode == 0, r.stderr
        with sqlite3.connect(tmp_path / "c.db") as db:
            assert db.execute("SELECT content_type, metadata FROM multipart_uploads").fetchall() == \
                [("application/x-tar", '{"team": "genomics"}')]
        with svc.client() as c:
            signed = c.post("/uploads/url", json={"key": "note.txt", "content_type": "text/plain"}).json()
        assert signed["headers"]["x-amz-storage-class"] == "STANDARD_IA"
        assert httpx.put(signed["url"], content=b"a note", headers=signed["headers"]).status_code == 200
    client = moto_server.client()
    head = client.head_object(Bucket=bucket, Key="files/pol-1")
    assert (head["ContentType"], head["Metadata"]) == ("application/x-tar", {"team": "genomics"})
    for key, body in (("files/pol-1", f.read_bytes()), ("users/alice/note.txt", b"a note")):
        head = client.head_object(Bucket=bucket, Key=key)
        assert (head["StorageClass"], head["ServerSideEncryption"]) == ("STANDARD_IA", "AES256"), key
        assert client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"] == [{"Key": "project", "Value": "ledger"}]
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
