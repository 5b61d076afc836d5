"""Verification and review (issue 25, item 1), against the real service on SQLite and PostgreSQL.

A client declares the whole file's SHA-256 and/or CRC64NVME at init; once uploaded, the controller's
verifier reads the object in the background and accepts it, or rejects it with the reason. Without a
declaration the upload stays uploaded until a reviewer (carol, whose token has the reviewer role)
decides. Every change is in the upload's history: who, as what, when and why.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws

from s3_multipart_upload.checksums import new_hasher
from s3_multipart_upload.service import verify
from s3_multipart_upload.service.core import Service
from s3_multipart_upload.service.db import Database
from s3_multipart_upload.service.model import Upload
from s3_multipart_upload.service.storage import Storage
from tests.service_fixtures import ServiceProcess, StartService
from tests.test_service_api import data, ok, refused, send_parts

pytestmark = pytest.mark.integration

MiB = 2**20
WAIT = 30.0  # seconds a verdict may take (the verifier is woken at once; it polls every second besides)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def crc64nvme(b: bytes) -> str:
    hasher = new_hasher("CRC64NVME")
    hasher.update(b)
    return base64.b64encode(hasher.digest()).decode()


def uploaded(c: httpx.Client, chunks: list[bytes], **declared: Any) -> dict[str, Any]:
    """A file's upload, created with ``declared`` (sha256, crc64nvme, size) and completed."""
    created = ok(c.post(f"/files/f-{uuid.uuid4().hex[:12]}/multipart_uploads", json=declared), 201)
    parts = send_parts(c, created["upload_id"], chunks)
    done = ok(c.patch(f"/multipart_uploads/{created['upload_id']}", json={"status": "uploaded", "parts": parts}))
    assert done["status"] in ("uploaded", "accepted", "rejected")  # the verifier may already have decided
    return done  # type: ignore[no-any-return]


def decided(c: httpx.Client, upload_id: str) -> dict[str, Any]:
    """The upload once it has left 'uploaded' (fails after WAIT seconds)."""
    deadline = time.monotonic() + WAIT
    while True:
        upload = ok(c.get(f"/multipart_uploads/{upload_id}"))
        if upload["status"] != "uploaded":
            return upload  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"upload {upload_id} still uploaded after {WAIT} s"
        time.sleep(0.1)


def history(c: httpx.Client, upload_id: str) -> list[tuple[Any, ...]]:
    changes = ok(c.get(f"/multipart_uploads/{upload_id}/history"))["changes"]
    return [(ch["from_status"], ch["to_status"], ch["actor"], ch["by"]) for ch in changes]


CHUNKS = [data(5 * MiB, seed=11), data(1000, seed=12)]
WHOLE = b"".join(CHUNKS)


@pytest.mark.parametrize("declared", [
    {"sha256": sha256(WHOLE)},
    {"crc64nvme": crc64nvme(WHOLE)},
    {"sha256": sha256(WHOLE).upper(), "crc64nvme": crc64nvme(WHOLE), "size": len(WHOLE), "part_size": 5 * MiB},
], ids=["sha256", "crc64nvme", "both-and-size"])
def test_a_right_declaration_is_accepted_by_the_verifier(module_service: ServiceProcess,
                                                         declared: dict[str, Any]) -> None:
    with module_service.client() as c:
        upload = decided(c, uploaded(c, CHUNKS, **declared)["upload_id"])
        assert upload["status"] == "accepted" and upload["status_by"] == "verifier"
        assert upload["sha256"] == (sha256(WHOLE) if "sha256" in declared else None)  # stored in lowercase
        assert "SHA-256" in upload["reason"] if "sha256" in declared else "CRC64NVME" in upload["reason"]
        assert history(c, upload["upload_id"]) == [(None, "pending", "owner", "alice"),
                                                   ("pending", "uploaded", "owner", "alice"),
                                                   ("uploaded", "accepted", "verifier", "verifier")]


@pytest.mark.parametrize(("declared", "said"), [
    ({"sha256": sha256(WHOLE + b"x")}, "SHA-256"),
    ({"crc64nvme": crc64nvme(WHOLE + b"x")}, "CRC64NVME"),
    ({"sha256": sha256(WHOLE), "size": len(WHOLE) + 1, "part_size": 5 * MiB}, "bytes"),  # still 2 parts
], ids=["sha256", "crc64nvme", "size"])
def test_a_wrong_declaration_is_rejected_with_the_reason(module_service: ServiceProcess, declared: dict[str, Any],
                                                         said: str) -> None:
    with module_service.client() as c:
        upload = decided(c, uploaded(c, CHUNKS, **declared)["upload_id"])
        assert upload["status"] == "rejected" and upload["status_by"] == "verifier"
        assert said in upload["reason"] and "declared" in upload["reason"], upload["reason"]
        assert history(c, upload["upload_id"])[-1] == ("uploaded", "rejected", "verifier", "verifier")
        # Kept (the service's on_reject is keep by default): the object is there, unchanged.
        body = module_service.s3_client().get_object(Bucket=module_service.bucket, Key=upload["key"])["Body"].read()
        assert body == WHOLE


def test_without_a_declaration_an_upload_waits_for_a_reviewer(module_service: ServiceProcess) -> None:
    with module_service.client() as alice, module_service.client("bob") as bob, \
            module_service.client("carol") as carol:
        waiting = uploaded(alice, [b"no declaration"])
        later = uploaded(alice, [b"declared"], sha256=sha256(b"declared"))
        assert decided(alice, later["upload_id"])["status"] == "accepted"  # the verifier has been by
        path = f"/multipart_uploads/{waiting['upload_id']}"
        assert ok(alice.get(path))["status"] == "uploaded"

        queue = ok(carol.get("/reviews"))["uploads"]
        assert waiting["upload_id"] in [u["upload_id"] for u in queue]
        assert later["upload_id"] not in [u["upload_id"] for u in queue]
        refused(bob.get("/reviews"), 403, "ReviewerOnly")
        for who in (alice, bob):  # the owner, and a principal without the role
            refused(who.post(f"{path}/review", json={"status": "accepted", "reason": "mine"}), 403, "ReviewerOnly")
        refused(alice.patch(path, json={"status": "accepted"}), 403, "NotAllowed")
        assert carol.post(f"{path}/review", json={"status": "accepted"}).status_code == 422  # a reason is required
        refused(carol.post(f"{path}/review", json={"status": "accepted", "reason": "   "}), 422, "MissingReason")
        assert ok(alice.get(path))["status"] == "uploaded"

        accepted = ok(carol.post(f"{path}/review", json={"status": "accepted", "reason": "looked right"}))
        assert (accepted["status"], accepted["status_by"], accepted["reason"]) == ("accepted", "carol", "looked right")
        rejected = ok(carol.post(f"{path}/review", json={"status": "rejected", "reason": "wrong sample"}))
        assert (rejected["status"], rejected["reason"]) == ("rejected", "wrong sample")
        refused(carol.post(f"{path}/review", json={"status": "accepted", "reason": "changed my mind"}), 409,
                "InvalidTransition")
        changes = ok(carol.get(f"{path}/history"))["changes"]  # a reviewer reads any upload's history
        assert [(ch["to_status"], ch["actor"], ch["by"], ch["reason"]) for ch in changes] == [
            ("pending", "owner", "alice", None), ("uploaded", "owner", "alice", None),
            ("accepted", "reviewer", "carol", "looked right"), ("rejected", "reviewer", "carol", "wrong sample")]
        assert all(ch["at"] and ch["at"].endswith("Z") for ch in changes)
        refused(bob.get(f"{path}/history"), 404, "NoSuchUpload")  # and nobody else's
        assert ok(alice.get(f"{path}/history"))["changes"] == changes


def test_a_declaration_on_the_key_family_and_bad_declarations(module_service: ServiceProcess) -> None:
    key = f"declared/{uuid.uuid4().hex}"
    with module_service.client() as c:
        init = ok(c.post("/uploads/multipart/init", json={"key": key, "sha256": sha256(b"by key")}))
        signed = ok(c.post("/uploads/multipart/part-url", json={"key": key, "upload_id": init["upload_id"],
                                                                "part_number": 1}))
        etag = httpx.put(signed["url"], content=b"by key", timeout=30).headers["ETag"].strip('"')
        ok(c.post("/uploads/multipart/complete", json={"key": key, "upload_id": init["upload_id"],
                                                        "parts": [{"PartNumber": 1, "ETag": etag}]}))
        assert decided(c, init["upload_id"])["status"] == "accepted"
        for bad in ({"sha256": "ab" * 31}, {"sha256": "zz" * 32}, {"crc64nvme": "AAAA"}, {"crc64nvme": "A" * 16},
                    {"crc64nvme": "!!!!!!!!!!!="}):
            response = c.post(f"/files/f-{uuid.uuid4().hex[:12]}/multipart_uploads", json=bad)
            assert response.status_code == 422, (bad, response.text)


@pytest.mark.parametrize("policy", ["delete", "quarantine"])
def test_a_rejected_object_is_deleted_or_quarantined(start_service: StartService, tmp_path, policy: str) -> None:  # type: ignore[no-untyped-def]
    svc = start_service(f"sqlite:///{tmp_path / 'c.sqlite3'}", config={"on_reject": policy})
    s3 = svc.s3_client()
    with svc.client() as c, svc.client("carol") as carol:
        by_verifier = decided(c, uploaded(c, [b"bad bytes"], sha256=sha256(b"good bytes"))["upload_id"])
        by_reviewer = uploaded(c, [b"reviewed bytes"])
        ok(carol.post(f"/multipart_uploads/{by_reviewer['upload_id']}/review",
                      json={"status": "rejected", "reason": "not ours"}))
    for upload, body in ((by_verifier, b"bad bytes"), (by_reviewer, b"reviewed bytes")):
        assert upload["status"] == "rejected" or by_reviewer is upload
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=svc.bucket).get("Contents", [])]
        assert upload["key"] not in listed
        if policy == "quarantine":
            moved = s3.get_object(Bucket=svc.bucket, Key=f"quarantine/{upload['key']}")["Body"].read()
            assert moved == body
        else:
            assert f"quarantine/{upload['key']}" not in listed


def test_the_stores_full_object_crc64nvme_is_used_without_reading(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """On a store that keeps a full-object CRC64NVME (AWS S3; moto when the upload asked for it), a declared
    CRC64NVME is checked against it: no GetObject."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="verify")
        made = client.create_multipart_upload(Bucket="verify", Key="k", ChecksumAlgorithm="CRC64NVME",
                                              ChecksumType="FULL_OBJECT")
        part = client.upload_part(Bucket="verify", Key="k", UploadId=made["UploadId"], PartNumber=1, Body=WHOLE,
                                  ChecksumAlgorithm="CRC64NVME")
        client.complete_multipart_upload(Bucket="verify", Key="k", UploadId=made["UploadId"], MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": part["ETag"], "ChecksumCRC64NVME": part["ChecksumCRC64NVME"]}]})
        storage = Storage("verify")
        reads: list[str] = []
        storage.client.meta.events.register("before-call.s3.GetObject", lambda **_: reads.append("GetObject"))
        service = Service(Database(f"sqlite:///{tmp_path / 'c.sqlite3'}"), storage)

        def upload(crc: str, sha: str | None = None) -> Upload:
            return Upload("u", None, "verify", "k", "alice", "uploaded", 5 * MiB, len(WHOLE), None, None, None, None,
                          sha, crc)

        right = verify.check(service, upload(crc64nvme(WHOLE)), lambda _n: None)
        assert (right.to, reads) == ("accepted", [])
        assert "the store's full-object checksum" in right.reason
        wrong = verify.check(service, upload(crc64nvme(b"other")), lambda _n: None)
        assert (wrong.to, reads) == ("rejected", [])
        assert "store's CRC64NVME" in wrong.reason
        both = verify.check(service, upload(crc64nvme(WHOLE), sha256(WHOLE)), lambda _n: None)  # SHA-256: a read
        assert (both.to, reads) == ("accepted", ["GetObject"])


def test_a_client_that_hashes_while_sending_declares_at_completion(module_service: ServiceProcess) -> None:
    """What ``upload --declare-checksum`` does: nothing declared at init; the checksums with status uploaded."""
    with module_service.client() as c:
        made = ok(c.post(f"/files/f-{uuid.uuid4().hex[:12]}/multipart_uploads", json={}), 201)
        path = f"/multipart_uploads/{made['upload_id']}"
        parts = send_parts(c, made["upload_id"], CHUNKS)
        refused(c.patch(path, json={"status": "cancelled", "sha256": sha256(WHOLE)}), 422, "UnexpectedChecksum")
        done = ok(c.patch(path, json={"status": "uploaded", "parts": parts, "crc64nvme": crc64nvme(WHOLE)}))
        assert done["crc64nvme"] == crc64nvme(WHOLE)
        assert decided(c, made["upload_id"])["status"] == "accepted"

        # Declared at init, and again at completion: the same is fine, another value is refused before S3 is asked.
        made = ok(c.post(f"/files/f-{uuid.uuid4().hex[:12]}/multipart_uploads", json={"sha256": sha256(WHOLE)}), 201)
        path = f"/multipart_uploads/{made['upload_id']}"
        parts = send_parts(c, made["upload_id"], CHUNKS)
        detail = refused(c.patch(path, json={"status": "uploaded", "parts": parts, "sha256": sha256(b"other")}),
                         409, "DeclarationMismatch")
        assert sha256(WHOLE) in detail
        assert ok(c.get(path))["status"] == "pending"
        ok(c.patch(path, json={"status": "uploaded", "parts": parts, "sha256": sha256(WHOLE).upper()}))
        assert decided(c, made["upload_id"])["status"] == "accepted"

        key = f"late/{uuid.uuid4().hex}"  # the key family's completion takes them too
        init = ok(c.post("/uploads/multipart/init", json={"key": key}))
        signed = ok(c.post("/uploads/multipart/part-url", json={"key": key, "upload_id": init["upload_id"],
                                                                "part_number": 1}))
        etag = httpx.put(signed["url"], content=b"late", timeout=30).headers["ETag"].strip('"')
        ok(c.post("/uploads/multipart/complete", json={"key": key, "upload_id": init["upload_id"],
                                                        "parts": [{"PartNumber": 1, "ETag": etag}],
                                                        "sha256": sha256(b"not late")}))
        rejected = decided(c, init["upload_id"])
        assert rejected["status"] == "rejected" and "SHA-256" in rejected["reason"]
