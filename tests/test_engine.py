"""The engine's phases driven one by one with a scripted client (botocore's Stubber, as s3transfer's functional
tests do): the completion's branches and the send phase's proof of each part, without a server."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anycrc
import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from s3_multipart_upload import checksums
from s3_multipart_upload.completion import Completer
from s3_multipart_upload.errors import ExitCode, IntegrityError, StateConflict, UploadGone
from s3_multipart_upload.job import Job, UploadRequest
from s3_multipart_upload.plan import MiB, Plan
from s3_multipart_upload.run_plan import make_plan
from s3_multipart_upload.s3 import ClientFactory, Endpoint, RetryPolicy
from s3_multipart_upload.sender import Sender
from s3_multipart_upload.sources import FileSource
from s3_multipart_upload.state import PartRecord
from s3_multipart_upload.stream import PartStream
from s3_multipart_upload.uploader import Uploader
from tests.conftest import write_random

UPLOAD_ID = "upload-1"


class ScriptedClients(ClientFactory):
    """The engine's client factory, handing out one client whose answers the test scripts."""

    def __init__(self, client: Any) -> None:
        super().__init__(Endpoint(), pool_size=1)
        self._scripted = client

    def _build(self, read_timeout: float) -> Any:
        return self._scripted


@pytest.fixture
def s3() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s",
                          config=Config(retries={"total_max_attempts": 1}))
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()  # every scripted answer was asked for, and nothing else


def setup(tmp_path: Path, client: Any, checksum: str = "MD5") -> tuple[Job, Plan, dict[int, PartRecord], bytes]:
    f = write_random(tmp_path / "f.bin", 12 * MiB + 5, seed=9)
    source = FileSource(f)
    request = UploadRequest(bucket="b", key="k", source=source, meta_path=tmp_path / "m.json",
                            parts_path=tmp_path / "p.jsonl", checksum=checksum)
    job = Job(request, ScriptedClients(client), retry=RetryPolicy(attempts=1))
    plan = source.plan(5 * MiB, fixed=True)
    data = f.read_bytes()
    done = {}
    for p in plan.parts:
        chunk = data[p.offset:p.offset + p.length]
        value = None if checksum == "MD5" else checksums.compute(checksum, chunk).value
        done[p.number] = PartRecord(hashlib.md5(chunk).hexdigest(), p.number, UPLOAD_ID, p.length, value)
    return job, plan, done, data


def completion_params(done: dict[int, PartRecord], **extra: Any) -> dict[str, Any]:
    return {"Bucket": "b", "Key": "k", "UploadId": UPLOAD_ID, **extra,
            "MultipartUpload": {"Parts": [{"PartNumber": n, "ETag": f'"{r.etag}"'} for n, r in sorted(done.items())]}}


def composite(done: dict[int, PartRecord]) -> str:
    etag = checksums.composite_etag([r.etag for _, r in sorted(done.items())])
    assert etag is not None
    return etag


def test_an_answer_with_the_parts_composite_etag_proves_the_object_without_a_head(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, stub = s3
    job, plan, done, _ = setup(tmp_path, client)
    stub.add_response("complete_multipart_upload", {"ETag": f'"{composite(done)}"'}, completion_params(done))
    completer = Completer(job, "MD5", plan)
    completed = completer.complete(UPLOAD_ID, done)
    assert completed.proven and not completed.by_earlier_run
    assert completer.verify(completed, [r.etag for _, r in sorted(done.items())], False) == composite(done)


def test_an_answer_that_is_not_the_composite_is_checked_by_head_and_a_wrong_object_deleted(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, stub = s3
    job, plan, done, _ = setup(tmp_path, client)
    stub.add_response("complete_multipart_upload", {"ETag": '"rclone-style-etag"'}, completion_params(done))
    stub.add_response("head_object", {"ContentLength": plan.total_size - 1, "ETag": '"x"'},
                      {"Bucket": "b", "Key": "k"})
    stub.add_response("delete_object", {}, {"Bucket": "b", "Key": "k"})
    completer = Completer(job, "MD5", plan)
    completed = completer.complete(UPLOAD_ID, done)
    assert not completed.proven
    with pytest.raises(IntegrityError, match=r"bytes on the server, but the local data is .*the wrong object was "
                                             r"deleted") as caught:
        completer.verify(completed, [r.etag for _, r in sorted(done.items())], False)
    assert caught.value.exit_code == ExitCode.BUG  # a wrong object must never happen: report it


def test_entity_too_small_is_a_state_conflict_naming_the_part_size(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, stub = s3
    job, plan, done, _ = setup(tmp_path, client)
    stub.add_client_error("complete_multipart_upload", "EntityTooSmall", http_status_code=400)
    with pytest.raises(StateConflict, match=r"below its minimum size .* parts are 5 MiB \(5242880 bytes") as caught:
        Completer(job, "MD5", plan).complete(UPLOAD_ID, done)
    assert caught.value.exit_code == ExitCode.CONFLICT


def test_invalid_part_is_a_damaged_upload_exit_4(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, stub = s3
    job, plan, done, _ = setup(tmp_path, client)
    stub.add_client_error("complete_multipart_upload", "InvalidPart", http_status_code=400)
    with pytest.raises(UploadGone, match="InvalidPart") as caught:
        Completer(job, "MD5", plan).complete(UPLOAD_ID, done)
    assert caught.value.exit_code == ExitCode.UPLOAD_GONE


def test_upload_gone_after_a_completion_that_did_happen_is_recognised(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, stub = s3
    job, plan, done, _ = setup(tmp_path, client)
    stub.add_client_error("complete_multipart_upload", "NoSuchUpload", http_status_code=404)
    stub.add_response("head_object", {"ContentLength": plan.total_size, "ETag": f'"{composite(done)}"'},
                      {"Bucket": "b", "Key": "k"})
    completed = Completer(job, "MD5", plan).complete(UPLOAD_ID, done)
    assert completed.by_earlier_run and completed.proven and completed.etag == composite(done)


def test_upload_gone_and_no_such_object_is_exit_4(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, stub = s3
    job, plan, done, _ = setup(tmp_path, client)
    stub.add_client_error("complete_multipart_upload", "NoSuchUpload", http_status_code=404)
    stub.add_response("head_object", {"ContentLength": 7, "ETag": '"other"'}, {"Bucket": "b", "Key": "k"})
    with pytest.raises(UploadGone, match="no longer exists on the server") as caught:
        Completer(job, "MD5", plan).complete(UPLOAD_ID, done)
    assert caught.value.exit_code == ExitCode.UPLOAD_GONE


def test_a_full_object_crc64nvme_completion_sends_the_whole_files_checksum(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, stub = s3
    job, plan, done, data = setup(tmp_path, client, checksum="CRC64NVME")
    whole = base64.b64encode(int(anycrc.Model("CRC64-NVME").calc(data)).to_bytes(8, "big")).decode()
    listed = [{"PartNumber": n, "ETag": f'"{r.etag}"', "Size": r.size, "ChecksumCRC64NVME": r.checksum}
              for n, r in sorted(done.items())]
    stub.add_response("list_parts", {"Parts": listed, "IsTruncated": False},
                      {"Bucket": "b", "Key": "k", "UploadId": UPLOAD_ID, "PartNumberMarker": 0})
    params = completion_params(done, ChecksumCRC64NVME=whole, ChecksumType="FULL_OBJECT")
    for entry, (_, r) in zip(params["MultipartUpload"]["Parts"], sorted(done.items()), strict=True):
        entry["ChecksumCRC64NVME"] = r.checksum
    stub.add_response("complete_multipart_upload", {"ETag": '"e-3"', "ChecksumCRC64NVME": whole,
                                                    "ChecksumType": "FULL_OBJECT"}, params)
    completed = Completer(job, "CRC64NVME", plan).complete(UPLOAD_ID, done)
    assert completed.full_checksum == whole and completed.proven


def test_a_wrong_full_object_answer_is_not_taken_as_proof(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, stub = s3
    job, plan, done, _ = setup(tmp_path, client, checksum="CRC64NVME")
    stub.add_response("list_parts", {"Parts": [], "IsTruncated": False}, None)
    stub.add_response("complete_multipart_upload", {"ETag": '"e-3"', "ChecksumCRC64NVME": "AAAAAAAAAAA="}, None)
    assert not Completer(job, "CRC64NVME", plan).complete(UPLOAD_ID, done).proven


def fake_store(etags: list[str], calls: list[dict[str, str]]) -> Any:
    """A request that reads the body as a server would and answers the next scripted ETag ("md5": the truth)."""
    def request(body: PartStream, args: dict[str, str]) -> dict[str, Any]:
        data = bytes(body.read())
        calls.append(dict(args))
        etag = etags.pop(0)
        return {"ETag": f'"{hashlib.md5(data).hexdigest() if etag == "md5" else etag}"'}
    return request


def test_md5_by_etag_sends_once_when_the_etag_is_the_md5(tmp_path: Path) -> None:
    job, plan, _, data = setup(tmp_path, None)
    calls: list[dict[str, str]] = []
    answer, digest = Sender(job, "MD5").send_verified(plan.parts[0], fake_store(["md5"], calls))
    assert calls == [{}]  # no Content-MD5: the ETag proves the bytes
    assert digest.md5_hex == hashlib.md5(data[:5 * MiB]).hexdigest() == answer["ETag"].strip('"')


def test_a_damaged_part_is_sent_again_with_content_md5(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    job, plan, _, _ = setup(tmp_path, None)
    calls: list[dict[str, str]] = []
    sender = Sender(job, "MD5")
    with caplog.at_level(logging.WARNING):
        sender.send_verified(plan.parts[1], fake_store(["0" * 32, "md5"], calls))
    assert [set(c) for c in calls] == [set(), {"ContentMD5"}]
    assert "Part 2 reached the server damaged" in caplog.text
    assert not sender.etags_not_md5


def test_a_store_whose_etags_are_not_md5s_gets_content_md5_from_then_on(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    job, plan, _, _ = setup(tmp_path, None)
    calls: list[dict[str, str]] = []
    sender = Sender(job, "MD5")
    with caplog.at_level(logging.WARNING):
        sender.send_verified(plan.parts[0], fake_store(["kms-1", "kms-2", "kms-3"], calls))
        sender.send_verified(plan.parts[1], fake_store(["kms-3"], calls))
    assert [set(c) for c in calls] == [set(), {"ContentMD5"}, {"ContentMD5"}]
    assert sender.etags_not_md5
    assert "ETags are not the MD5s of the parts" in caplog.text


def test_an_additional_checksum_is_computed_before_the_body_goes(tmp_path: Path) -> None:
    job, plan, _, data = setup(tmp_path, None)
    calls: list[dict[str, str]] = []
    Sender(job, "CRC32C").send_verified(plan.parts[2], fake_store(["md5"], calls))
    last = plan.parts[2]
    assert calls == [{"ChecksumCRC32C": checksums.compute("CRC32C", data[last.offset:]).value}]



@pytest.mark.parametrize(("listed", "kept"), [
    ({"ChecksumAlgorithm": "CRC64NVME", "ChecksumType": "FULL_OBJECT"}, "CRC64NVME"),  # made by this tool on AWS
    ({"ChecksumAlgorithm": "CRC32", "ChecksumType": "COMPOSITE"}, "CRC32"),
    ({"ChecksumAlgorithm": "CRC32C", "ChecksumType": "FULL_OBJECT"}, "MD5"),  # a form this tool does not make
    ({}, "MD5"),  # created without a checksum
], ids=["crc64nvme", "crc32", "crc32c-full", "none"])
def test_an_adopted_upload_keeps_the_checksum_it_was_created_for(s3, tmp_path: Path, listed: dict[str, str],  # type: ignore[no-untyped-def]
                                                                kept: str) -> None:
    client, stub = s3
    f = write_random(tmp_path / "f.bin", 12 * MiB, seed=10)
    request = UploadRequest(bucket="b", key="k", source=FileSource(f), meta_path=tmp_path / "m.json",
                            parts_path=tmp_path / "p.jsonl", checksum="CRC64NVME", upload_id=UPLOAD_ID,
                            checksum_why="auto: AWS S3 verifies each part's CRC64NVME")
    stub.add_response("list_parts", {"Parts": [], "IsTruncated": False, **listed},
                      {"Bucket": "b", "Key": "k", "UploadId": UPLOAD_ID, "PartNumberMarker": 0})
    run = Uploader(request, ScriptedClients(client))._adopt(make_plan(request), UPLOAD_ID)
    assert run.checksum == kept
    assert json.loads((tmp_path / "m.json").read_text())["checksumAlgorithm"] == kept
