"""Stores that behave unlike rclone serve s3, made from moto in-process with botocore event hooks that answer or
damage requests the way those stores and links do: ETags that are not MD5s (SSE-KMS), Content-MD5 required (Object
Lock retention), bytes damaged on the way, a file system that returns short reads."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from s3_multipart_upload.errors import UploadError
from s3_multipart_upload.job import UploadRequest
from s3_multipart_upload.plan import MiB
from s3_multipart_upload.s3 import ClientFactory, Endpoint, RetryPolicy
from s3_multipart_upload.sources import FileSource
from s3_multipart_upload.uploader import Uploader
from tests.conftest import write_random

BUCKET = "moto-bucket"
Hook = Callable[[Any], None]  # (client) -> None: registers its event handlers


@pytest.fixture
def s3(aws_env: dict[str, str]) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


class HookedClients(ClientFactory):
    def __init__(self, hook: Hook) -> None:
        super().__init__(Endpoint(region="us-east-1"), pool_size=4)
        self._hook = hook

    def _build(self, read_timeout: float) -> Any:
        client = super()._build(read_timeout)
        self._hook(client)
        return client


def upload(tmp_path: Path, f: Path, hook: Hook, **kw: Any) -> Any:
    kw = {"checksum": "MD5", "threads": 2, "split_size": 5 * MiB} | kw
    request = UploadRequest(bucket=BUCKET, key="k", source=FileSource(f), meta_path=tmp_path / "m.json",
                            parts_path=tmp_path / "p.jsonl", **kw)
    return Uploader(request, HookedClients(hook), retry=RetryPolicy(attempts=3, base=0.01, cap=0.01)).run()


def stored(s3: Any) -> bytes:
    return bytes(s3.get_object(Bucket=BUCKET, Key="k")["Body"].read())


def counting(counter: Counter[str]) -> Hook:
    def hook(client: Any) -> None:
        for op in ("PutObject", "UploadPart", "HeadObject"):
            client.meta.events.register(f"before-send.s3.{op}", lambda request, op=op, **_: counter.update([op]))
    return hook


_REAL_ETAGS: dict[str, str] = {}  # the store's side of not_md5_etags, shared by the clients of a run


def not_md5_etags(client: Any) -> None:
    """A store whose ETags are not the MD5 of the bytes (as with SSE-KMS): answers carry another value."""
    real = _REAL_ETAGS

    def rewrite(parsed: Any, **_: Any) -> None:
        if "ETag" in parsed:
            fake = hashlib.sha1(parsed["ETag"].encode()).hexdigest()[:32]
            real[fake] = parsed["ETag"]
            parsed["ETag"] = f'"{fake}"'

    def restore(params: Any, **_: Any) -> None:
        for p in params.get("MultipartUpload", {}).get("Parts", []):
            p["ETag"] = real.get(p["ETag"].strip('"'), p["ETag"])

    for op in ("PutObject", "UploadPart"):
        client.meta.events.register(f"after-call.s3.{op}", rewrite)
    client.meta.events.register("provide-client-params.s3.CompleteMultipartUpload", restore)


def test_a_store_whose_etags_are_not_md5s_is_remembered_for_the_rerun(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 30 * MiB)
    sends: Counter[int] = Counter()

    def first_run(client: Any) -> None:
        not_md5_etags(client)

        def count_and_stop(params: Any, **_: Any) -> None:
            sends.update([params["PartNumber"]])
            if params["PartNumber"] == 5:  # the run stops here (a refusal), after the store was recognised
                raise UploadError("stop the first run here")
        client.meta.events.register("provide-client-params.s3.UploadPart", count_and_stop)

    with pytest.raises(UploadError):
        upload(tmp_path, f, first_run)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["eTagsNotMD5"] is True and meta["contentMD5"] is True
    rerun_sends: Counter[int] = Counter()

    def rerun(client: Any) -> None:
        not_md5_etags(client)
        client.meta.events.register("provide-client-params.s3.UploadPart",
                                    lambda params, **_: rerun_sends.update([params["PartNumber"]]))

    result = upload(tmp_path, f, rerun)
    assert max(rerun_sends.values()) == 1  # Content-MD5 from the first part: no part tried by ETag first
    assert result.parts_sent == len(rerun_sends)
    assert stored(s3) == f.read_bytes()


def test_a_store_that_requires_content_md5_gets_it(s3: Any, tmp_path: Path) -> None:
    """Object Lock retention: S3 (and IONOS, versitygw, ...) refuse a PUT with neither Content-MD5 nor a checksum."""
    body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidRequest</Code><Message>Content-MD5 OR '
            b"x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters"
            b"</Message></Error>")

    class Raw:
        def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
            yield body

    refused: list[int] = []

    def object_lock(client: Any) -> None:
        def answer(request: Any, **_: Any) -> Any:
            if "Content-MD5" not in request.headers:
                refused.append(1)
                return AWSResponse(request.url, 400, {"Content-Type": "application/xml"}, Raw())
            return None
        client.meta.events.register_first("before-send.s3.UploadPart", answer)

    f = write_random(tmp_path / "f.bin", 16 * MiB)
    upload(tmp_path, f, object_lock, threads=1)
    assert len(refused) == 1  # the first part only: then every part went with Content-MD5
    assert stored(s3) == f.read_bytes()


@pytest.mark.parametrize("checksum", ["CRC32C", "CRC64NVME", "MD5"])
def test_short_reads_from_the_file_system_are_read_on(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      checksum: str) -> None:
    """FUSE and network file systems may return fewer bytes than asked: POSIX allows it."""
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, offset: real_pread(fd, min(n, 100_000), offset))
    f = write_random(tmp_path / "f.bin", 11 * MiB + 5)
    upload(tmp_path, f, lambda client: None, checksum=checksum)
    assert stored(s3) == f.read_bytes()


def test_a_full_object_checksum_survives_a_kill_between_completion_and_meta(s3: Any, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 11 * MiB)
    first = upload(tmp_path, f, lambda client: None, checksum="CRC64NVME")
    assert first.full_checksum
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["status"] = "in_progress"  # as if killed after CompleteMultipartUpload, before META was rewritten
    (tmp_path / "m.json").write_text(json.dumps(meta))
    again = upload(tmp_path, f, lambda client: None, checksum="CRC64NVME")
    assert again.full_checksum == first.full_checksum
    assert json.loads((tmp_path / "m.json").read_text())["checksumCRC64NVME"] == first.full_checksum
