"""The store matrix: the core of what users do, against every store that runs here (rclone serve s3, SeaweedFS,
moto_server, s3rver), each a real server over HTTP on 127.0.0.1. Where a store lacks a request, the test asserts
the tool's refusal (exit code, and a message naming the request), not a skip. docs/stores.md shows the matrix.

A counting proxy (tests/s3proxy.py) sits in front of the store where a test counts what was sent."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import S3Server, kill_when, run_cli, upload_args, write_random
from tests.s3proxy import Fault, S3Proxy, Seen
from tests.stores import LOCALSTACK_ENV

pytestmark = pytest.mark.integration

# What each store lacks (answers MethodNotAllowed or NotImplemented): s3rver 3.7.1.
LACKS = {"s3rver": frozenset({"ListParts", "ListMultipartUploads", "AbortMultipartUpload", "UploadPartCopy"})}
# How a server-side copy is refused: s3rver has no UploadPartCopy; rclone serve s3 1.75 answers it without an ETag
# and without copying (the tool cannot trust it: exit 1, as for any answer that would make a wrong object).
COPY_REFUSED = {"s3rver": (5, "does not implement UploadPartCopy"), "rclone": (1, "answered without copying")}
# LocalStack runs in host mode on Python 3.13 with pins of its own, an install of minutes: bench/localstack.sh
# starts it and runs this file against it (S3MU_LOCALSTACK_ENDPOINT), not the suite.
STORES = ["rclone", "seaweedfs", "moto", "s3rver"] + (["localstack"] if os.environ.get(LOCALSTACK_ENV) else [])
FIXTURES = {"rclone": "s3_server", "seaweedfs": "seaweedfs_server", "moto": "moto_server", "s3rver": "s3rver_server",
            "localstack": "localstack_server"}


@dataclass(frozen=True)
class Store:
    name: str
    server: S3Server
    env: dict[str, str]
    bucket: str

    def lacks(self, request: str) -> bool:
        return request in LACKS.get(self.name, frozenset())

    def stored(self, key: str) -> bytes:
        return bytes(self.server.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def cli(self, *args: str, endpoint: str | None = None, timeout: float = 120):  # type: ignore[no-untyped-def]
        return run_cli([*args, "--endpoint-url", endpoint or self.server.endpoint], self.env, timeout=timeout)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, aws_env: dict[str, str]) -> Store:
    server: S3Server = request.getfixturevalue(FIXTURES[request.param])
    env = aws_env | {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}
    bucket = f"m-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=bucket)
    return Store(request.param, server, env, bucket)


def _upload(store: Store, tmp_path: Path, f: Path, key: str, *extra: str, endpoint: str | None = None,
            state: str = "s"):  # type: ignore[no-untyped-def]
    args = upload_args(store.bucket, key, f, tmp_path / f"{state}.meta.json", tmp_path / f"{state}.parts.jsonl",
                       *extra)
    return store.cli(*args, endpoint=endpoint)


@pytest.mark.parametrize("checksum", ["auto", "MD5", "CRC64NVME", "CRC32C", "CRC32", "SHA256"])
def test_a_multipart_upload_with_each_checksum(store: Store, tmp_path: Path, checksum: str) -> None:
    f = write_random(tmp_path / "f.bin", 12 * MiB + 1, seed=2401)
    r = _upload(store, tmp_path, f, "k", "-s", "5M", "--checksum", checksum)
    assert r.returncode == 0, r.stderr
    assert store.stored("k") == f.read_bytes()
    assert json.loads((tmp_path / "s.meta.json").read_text())["status"] == "completed"
    if checksum == "auto":  # (once per store: the rerun reads META only, whatever the checksum)
        r = _upload(store, tmp_path, f, "k", "-s", "5M", "--checksum", checksum)  # the rerun sends nothing
        assert r.returncode == 0 and "already complete" in r.stderr, r.stderr


# The stores that refuse a wrong x-amz-checksum-crc64nvme (BadDigest): SeaweedFS 4.48, LocalStack 2026.3.0. rclone 1.75,
# moto 5.2.6 and s3rver 3.7.1 accept it.
VERIFIES_CRC64NVME = {"seaweedfs", "localstack"}


def _probes(proxy: S3Proxy) -> list[Seen]:
    """The checksum probes the proxy saw: UploadParts with an empty body and an x-amz-checksum-crc64nvme."""
    return [s for s in proxy.seen if s.is_probe]


def test_auto_asks_the_store_once_whether_it_verifies_crc64nvme(store: Store, tmp_path: Path) -> None:
    """`--checksum auto` on a store not known to verify: one empty UploadPart with a wrong CRC64NVME asks it; where
    it is refused, every part goes with its CRC64NVME and the completion with the whole file's; where it is
    accepted, MD5 by ETag. What was learnt is in META: a rerun after a failure does not ask again and keeps the
    checksum. The probe leaves nothing: the object is the file, byte for byte."""
    verifies = store.name in VERIFIES_CRC64NVME
    refused: list[int] = []

    def refuse_part_3_once(seen: Seen, index: int) -> Fault | None:
        if seen.part_number == 3 and not refused and not store.lacks("ListParts"):
            refused.append(index)
            return Fault(403, "AccessDenied")
        return None
    proxy = S3Proxy(store.server.endpoint, rule=refuse_part_3_once)
    try:
        f = write_random(tmp_path / "f.bin", 12 * MiB + 1, seed=2411)
        args = ("-s", "5M", "-t", "1", "--checksum", "auto")
        r = _upload(store, tmp_path, f, "k", *args, "--dry-run", "--json", endpoint=proxy.endpoint)
        plan = json.loads(r.stdout)
        assert plan["checksum"] == "CRC64NVME or MD5" and "a wrong CRC64NVME" in plan["checksumWhy"]
        assert plan["requests"]["UploadPart"] == 3 + 1 and proxy.seen == []
        r = _upload(store, tmp_path, f, "k", *args, endpoint=proxy.endpoint)
        said = "refused a wrong CRC64NVME" if verifies else "accepted a wrong CRC64NVME"
        assert said in r.stderr, r.stderr
        if refused:  # stopped at part 3 (exit 5); the rerun resumes without asking again
            assert r.returncode == 5, r.stderr
            r = _upload(store, tmp_path, f, "k", *args, endpoint=proxy.endpoint)
            assert "as recorded in the meta file" in r.stderr, r.stderr
        assert r.returncode == 0, r.stderr
        assert store.stored("k") == f.read_bytes()
        meta = json.loads((tmp_path / "s.meta.json").read_text())
        assert meta["verifiesCRC64NVME"] is verifies
        assert meta["checksumAlgorithm"] == ("CRC64NVME" if verifies else "MD5")
        assert ("checksumCRC64NVME" in meta) is verifies  # the whole file's, checked by the store at completion
        assert [s.query["partNumber"] for s in _probes(proxy)] == ["1"]
        st = store.cli("status", "-m", str(tmp_path / "s.meta.json"), "--json")
        assert json.loads(st.stdout)["store_verifies_crc64nvme"] is verifies, st.stderr
        parts = [s for s in proxy.seen if s.part_number is not None and s.size > 0]
        assert sorted({s.part_number for s in parts}) == [1, 2, 3]
        assert all(("x-amz-checksum-crc64nvme" in s.headers) is verifies for s in parts)
    finally:
        proxy.close()


def test_auto_on_a_store_that_checks_checksums_as_aws_does(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    """The AWS-model proxy (it verifies x-amz-checksum-* as S3 does) in front of rclone: the probe is refused (the
    one BadDigest it answers), and the upload goes with CRC64NVME, the whole file's checked at completion."""
    proxy = S3Proxy(s3_server.endpoint, verify_checksums=True)
    try:
        f = write_random(tmp_path / "f.bin", 12 * MiB + 1, seed=2412)
        r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "--checksum",
                                "auto", endpoint=proxy.endpoint), aws_env)
        assert r.returncode == 0, r.stderr
        assert len(proxy.refused) == 1 and "crc64nvme" in proxy.refused[0]  # the probe, and nothing else
        meta = json.loads((tmp_path / "m.json").read_text())
        assert (meta["checksumAlgorithm"], meta["verifiesCRC64NVME"]) == ("CRC64NVME", True)
        assert meta["checksumCRC64NVME"]
        assert [s.query["partNumber"] for s in _probes(proxy)] == ["1"]
        complete = [s for s in proxy.seen if s.method == "POST" and "uploadId" in s.query]
        assert complete[-1].headers.get("x-amz-checksum-type") == "FULL_OBJECT"
        assert s3_server.client().get_object(Bucket=bucket, Key="k")["Body"].read() == f.read_bytes()
    finally:
        proxy.close()


def test_a_probe_the_store_does_not_answer_falls_back_to_md5(s3_server: S3Server, bucket: str,
                                                              aws_env: dict[str, str], tmp_path: Path) -> None:
    """The probe answered 503 on every try: nothing learnt; the upload created for CRC64NVME is aborted and a plain
    one made (an upload declared for CRC64NVME is never filled with MD5 parts), MD5 by ETag, and it completes.
    Refused (403): exit 5, the probed upload aborted and no META. A store that refuses the checksum header on the
    create itself (B2 did): a plain upload, MD5, recorded as not verifying."""
    refuse: list[Fault | None] = [Fault(503, "SlowDown")]
    create_refused: list[bool] = [False]

    def rule(seen: Seen, index: int) -> Fault | None:
        if create_refused[0] and seen.method == "POST" and "uploads" in seen.query \
                and "x-amz-checksum-algorithm" in seen.headers:
            return Fault(400, "InvalidArgument")
        return refuse[0] if seen.is_probe else None

    def aborts() -> list[Seen]:
        return [seen for seen in proxy.seen if seen.method == "DELETE" and "uploadId" in seen.query]

    proxy = S3Proxy(s3_server.endpoint, rule=rule)
    try:
        f = write_random(tmp_path / "f.bin", 11 * MiB, seed=2415)
        args = upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "--retries", "2",
                           endpoint=proxy.endpoint)
        r = run_cli(args, aws_env)
        assert r.returncode == 0, r.stderr
        assert "gave no answer to whether it verifies CRC64NVME" in r.stderr and len(_probes(proxy)) == 2
        meta = json.loads((tmp_path / "m.json").read_text())
        assert meta["checksumAlgorithm"] == "MD5" and "verifiesCRC64NVME" not in meta
        assert [a.query["uploadId"] for a in aborts()] != [meta["uploadId"]] and len(aborts()) == 1
        assert s3_server.client().get_object(Bucket=bucket, Key="k")["Body"].read() == f.read_bytes()

        refuse[0] = Fault(403, "AccessDenied")
        proxy.reset()
        args = upload_args(bucket, "k2", f, tmp_path / "m2.json", tmp_path / "p2.jsonl", "-s", "5M",
                           endpoint=proxy.endpoint)
        r = run_cli(args, aws_env)
        assert r.returncode == 5 and "AccessDenied" in r.stderr, r.stderr
        assert not (tmp_path / "m2.json").exists() and len(aborts()) == 1

        refuse[0], create_refused[0] = None, True
        proxy.reset()
        r = run_cli(args, aws_env)
        assert r.returncode == 0, r.stderr
        meta = json.loads((tmp_path / "m2.json").read_text())
        assert (meta["checksumAlgorithm"], meta["verifiesCRC64NVME"]) == ("MD5", False)
        assert not _probes(proxy), "a store that refuses the header was asked anyway"
        assert s3_server.client().get_object(Bucket=bucket, Key="k2")["Body"].read() == f.read_bytes()
    finally:
        proxy.close()


def test_an_upload_whose_part_1_is_the_probes_empty_part_is_adopted_by_part_2s_size(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    """META lost after the probe left its empty part 1 and parts 2 and 3 went: --upload-id takes part 2's size."""
    f = write_random(tmp_path / "f.bin", 12 * MiB, seed=2416)
    client = s3_server.client()
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    data = f.read_bytes()
    client.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"")
    for n in (2, 3):
        client.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=n,
                           Body=data[(n - 1) * 5 * MiB:n * 5 * MiB])
    r = run_cli([*upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "--upload-id", upload_id,
                              endpoint=s3_server.endpoint)], aws_env)
    assert r.returncode == 0, r.stderr
    assert "parts of 5 MiB" in r.stderr
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == data


@pytest.mark.parametrize("size", [0, 1, 3 * MiB], ids=["empty", "1-byte", "3MiB"])
def test_one_part_and_empty_files(store: Store, tmp_path: Path, size: int) -> None:
    f = write_random(tmp_path / "f.bin", size, seed=2402)
    r = _upload(store, tmp_path, f, "small")
    assert r.returncode == 0, r.stderr
    assert store.stored("small") == f.read_bytes()


def test_no_overwrite(store: Store, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=2403)
    assert _upload(store, tmp_path, f, "once", "-s", "5M").returncode == 0
    g = write_random(tmp_path / "g.bin", 11 * MiB, seed=2404)
    r = _upload(store, tmp_path, g, "once", "-s", "5M", "--no-overwrite", state="t")
    assert r.returncode == 3, r.stderr
    assert "already exists" in r.stderr and "--no-overwrite" in r.stderr
    assert store.stored("once") == f.read_bytes()


def test_kill_9_and_resume(store: Store, tmp_path: Path) -> None:
    """Killed after two parts are logged; the rerun sends only what is missing (s3rver: it cannot resume, having no
    ListParts, says so, and --restart uploads it again)."""
    proxy = S3Proxy(store.server.endpoint, delay=0.3)
    try:
        f = write_random(tmp_path / "f.bin", 30 * MiB, seed=2405)
        meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
        args = [*upload_args(store.bucket, "big", f, meta, parts, "-s", "5M", "-t", "1"),
                "--endpoint-url", proxy.endpoint]

        def two_logged() -> bool:
            return parts.exists() and parts.read_text().count("\n") >= 2
        assert kill_when(args, store.env, two_logged) == -9
        proxy.wait_idle()
        logged = {json.loads(x)["partNumber"] for x in parts.read_text().splitlines()}
        assert len(logged) >= 2
        proxy.reset()
        proxy.delay = 0.0
        r = run_cli(args, store.env)
        if store.lacks("ListParts"):
            assert r.returncode == 5, r.stderr
            assert "does not implement ListParts" in r.stderr and "--restart" in r.stderr
            assert proxy.part_puts() == {}
            r = run_cli([*args, "--restart"], store.env)
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode == 0, r.stderr
            assert set(proxy.part_puts()) == set(range(1, 7)) - logged  # the logged parts are not sent again
            assert max(proxy.part_puts().values()) == 1
        assert store.stored("big") == f.read_bytes()
    finally:
        proxy.close()


def test_status_list_and_abort(store: Store, tmp_path: Path) -> None:
    """An upload left in progress (its third part refused until retries ran out): status, list, abort."""
    def refuse_part_3(seen: Seen, index: int) -> Fault | None:
        return Fault(500, "InternalError") if seen.part_number == 3 else None
    proxy = S3Proxy(store.server.endpoint, rule=refuse_part_3)
    f = write_random(tmp_path / "f.bin", 15 * MiB, seed=2406)
    meta, parts = tmp_path / "m.json", tmp_path / "p.jsonl"
    try:
        r = store.cli(*upload_args(store.bucket, "left", f, meta, parts, "-s", "5M", "-t", "1", "--retries", "1"),
                      endpoint=proxy.endpoint)
        assert r.returncode == 75, r.stderr
    finally:
        proxy.close()
    upload_id = json.loads(meta.read_text())["uploadId"]

    r = store.cli("status", "-m", str(meta), "-a", str(parts), "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert (st["state"], st["parts_done"]) == ("in_progress", 2)
    if store.lacks("ListParts"):
        assert st["server"] == "unreachable" and "does not implement ListParts" in st["server_error"]
    else:
        assert (st["server"], st["server_parts"]) == ("in_progress", 2)

    r = store.cli("list", "-b", store.bucket, "--json")
    if store.lacks("ListMultipartUploads"):
        assert r.returncode == 5, r.stderr
        assert "does not implement ListMultipartUploads" in r.stderr and "list (without -b)" in r.stderr
    else:
        assert r.returncode == 0, r.stderr
        rows = [json.loads(x) for x in r.stdout.splitlines()]
        assert [(x["key"], x["uploadId"], x["parts"]) for x in rows] == [("left", upload_id, 2)]

    r = store.cli("abort", "-m", str(meta), "-a", str(parts))
    if store.lacks("AbortMultipartUpload"):
        assert r.returncode == 5, r.stderr
        assert "does not implement AbortMultipartUpload" in r.stderr
        assert json.loads(meta.read_text())["status"] == "in_progress"
    else:
        assert r.returncode == 0 and "Aborted" in r.stdout, r.stderr
        assert json.loads(meta.read_text())["status"] == "aborted"
        with pytest.raises(Exception, match="NoSuchUpload"):
            store.server.client().list_parts(Bucket=store.bucket, Key="left", UploadId=upload_id)


def test_copy_within_the_store(store: Store, tmp_path: Path) -> None:
    """A server-side copy (UploadPartCopy) of an object of three parts; where the store lacks UploadPartCopy, the
    refusal says so and --through-client (ranged GETs, UploadPart) copies it."""
    data = write_random(tmp_path / "src.bin", 11 * MiB, seed=2407).read_bytes()
    store.server.client().put_object(Bucket=store.bucket, Key="src", Body=data)
    args = ["copy", "--source", f"s3://{store.bucket}/src", "-b", store.bucket, "-k", "dst", "-m",
            str(tmp_path / "m.json"), "-a", str(tmp_path / "p.jsonl"), "-s", "5M"]
    r = store.cli(*args)
    if store.name in COPY_REFUSED:
        code, said = COPY_REFUSED[store.name]
        assert r.returncode == code, r.stderr
        assert said in r.stderr and "--through-client" in r.stderr
        r = store.cli(*args, "--through-client", "--restart")
    assert r.returncode == 0, r.stderr
    assert store.stored("dst") == data


def test_many_files(store: Store, tmp_path: Path) -> None:
    """`upload --recursive DIR s3://BUCKET/PREFIX/`: an empty file, a small one and one of three parts; the rerun
    sends nothing."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    files = {"empty": 0, "small.txt": 1000, "sub/big.bin": 11 * MiB}
    for i, (name, size) in enumerate(files.items()):
        write_random(tree / name, size, seed=2420 + i)
    args = ["upload", "--recursive", str(tree), f"s3://{store.bucket}/batch/", "-s", "5M", "--state-dir",
            str(tmp_path / "state")]
    r = store.cli(*args)
    assert r.returncode == 0, r.stderr
    assert "3 files to s3://" in r.stderr and "3 completed" in r.stderr
    for name in files:
        assert store.stored(f"batch/{name}") == (tree / name).read_bytes()
    r = store.cli(*args)
    assert r.returncode == 0 and "3 already complete" in r.stderr, r.stderr


def test_copy_both_ways(store: Store, moto_server: S3Server, tmp_path: Path) -> None:
    """`copy` from another store (moto_server, its credentials in a profile) into this one, and back out: streamed
    through this machine in ranged GETs and UploadParts."""
    creds = tmp_path / "credentials"
    creds.write_text(f"[other]\naws_access_key_id = other\naws_secret_access_key = other-secret\n"
                     f"[store]\naws_access_key_id = {store.server.access_key}\n"
                     f"aws_secret_access_key = {store.server.secret_key}\n")
    env = store.env | {"AWS_SHARED_CREDENTIALS_FILE": str(creds)}
    other = f"o-{uuid.uuid4().hex[:12]}"
    moto_server.client().create_bucket(Bucket=other)
    data = write_random(tmp_path / "src.bin", 11 * MiB, seed=2430).read_bytes()
    moto_server.client().put_object(Bucket=other, Key="src", Body=data)
    r = run_cli(["copy", "--source", f"s3://{other}/src", "--source-endpoint-url", moto_server.endpoint,
                 "--source-profile", "other", "-b", store.bucket, "-k", "in", "-m", str(tmp_path / "in.json"),
                 "-a", str(tmp_path / "in.jsonl"), "-s", "5M", "--endpoint-url", store.server.endpoint], env)
    assert r.returncode == 0, r.stderr
    assert store.stored("in") == data
    r = run_cli(["copy", "--source", f"s3://{store.bucket}/in", "--source-endpoint-url", store.server.endpoint,
                 "--source-profile", "store", "-b", other, "-k", "out", "-m", str(tmp_path / "out.json"),
                 "-a", str(tmp_path / "out.jsonl"), "-s", "5M", "--endpoint-url", moto_server.endpoint], env)
    assert r.returncode == 0, r.stderr
    assert moto_server.client().get_object(Bucket=other, Key="out")["Body"].read() == data
