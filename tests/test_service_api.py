"""The upload controller's HTTP API, against the real service process on SQLite and on PostgreSQL.

Clients here are what a user has: an API token and a plain HTTP client. Parts go to S3 with the
presigned URLs alone; what S3 then holds is checked with boto3 straight against the rclone server.
"""

from __future__ import annotations

import hashlib
import random
import urllib.parse
import uuid
from typing import Any

import botocore.exceptions
import httpx
import pytest

from tests.service_fixtures import ServiceProcess

pytestmark = pytest.mark.integration

MiB = 2**20
STATUSES = ("pending", "uploaded", "cancelled", "failed", "accepted", "rejected")
# The owner's part of the transition table, written out here rather than imported: a change to the service's must
# show up as a failure. The verdicts are a reviewer's or the verifier's: the owner is refused them (403).
ALLOWED = {("pending", "uploaded"), ("pending", "cancelled"), ("pending", "failed")}
VERDICTS = {("uploaded", "accepted"), ("uploaded", "rejected"), ("accepted", "rejected")}


def new_file_id() -> str:
    return f"f-{uuid.uuid4().hex[:12]}"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def refused(response: httpx.Response, status: int, code: str | None = None) -> str:
    """The error's detail; its code must be ``code`` (validation errors of the request's shape have none)."""
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    body = response.json()
    if code is not None:
        assert body["code"] == code, body
        assert isinstance(body["detail"], str) and body["detail"]
    return str(body["detail"])


def put(url: str, data: bytes) -> str:
    """A part or an object sent with a presigned URL by a plain HTTP client; returns S3's ETag."""
    response = httpx.put(url, content=data, timeout=60)
    assert response.status_code == 200, response.text
    return response.headers["ETag"].strip('"')


def data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def md5(b: bytes) -> str:
    return hashlib.md5(b, usedforsecurity=False).hexdigest()


def s3_etag(service: ServiceProcess, key: str) -> str:
    """The object's ETag as S3 gives it (rclone's for a multipart object is not S3's md5-of-md5s-N form)."""
    return str(service.s3_client().head_object(Bucket=service.bucket, Key=key)["ETag"]).strip('"')


def s3_uploads(service: ServiceProcess, key: str) -> list[str]:
    """Upload ids of the multipart uploads S3 holds for ``key``."""
    listed = service.s3_client().list_multipart_uploads(Bucket=service.bucket, Prefix=key)
    return [u["UploadId"] for u in listed.get("Uploads", []) if u["Key"] == key]


def s3_object(service: ServiceProcess, key: str) -> bytes:
    return bytes(service.s3_client().get_object(Bucket=service.bucket, Key=key)["Body"].read())


def no_such_upload(service: ServiceProcess, key: str, upload_id: str) -> bool:
    try:
        service.s3_client().list_parts(Bucket=service.bucket, Key=key, UploadId=upload_id)
    except botocore.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"] == "NoSuchUpload"
    return False


def send_parts(c: httpx.Client, upload_id: str, chunks: list[bytes]) -> dict[str, str]:
    """Each chunk as a part, with a URL from the files family; returns part number -> ETag."""
    parts = {}
    for number, chunk in enumerate(chunks, start=1):
        signed = ok(c.post(f"/multipart_uploads/{upload_id}/part/{number}/presigned_post"))
        assert signed["method"] == "PUT" and signed["part_number"] == number
        parts[str(number)] = put(signed["url"], chunk)
    return parts


def upload_in(c: httpx.Client, status: str, chunks: list[bytes] | None = None,
              reviewer: httpx.Client | None = None) -> dict[str, Any]:
    """A new file's upload, brought to ``status`` the way a client would (accepted or rejected: by ``reviewer``)."""
    upload = ok(c.post(f"/files/{new_file_id()}/multipart_uploads", json={}), 201)
    assert upload["status"] == "pending"
    path = f"/multipart_uploads/{upload['upload_id']}"
    if status == "pending":
        return upload  # type: ignore[no-any-return]
    if status in ("cancelled", "failed"):
        return ok(c.patch(path, json={"status": status}))  # type: ignore[no-any-return]
    parts = send_parts(c, upload["upload_id"], chunks or [b"one small part"])
    upload = ok(c.patch(path, json={"status": "uploaded", "parts": parts}))
    if status == "uploaded":
        return upload  # type: ignore[no-any-return]
    assert reviewer is not None, f"{status} is a reviewer's decision"
    ok(reviewer.post(f"{path}/review", json={"status": status, "reason": f"{status} by the test"}))
    return ok(c.get(path))  # type: ignore[no-any-return]


# -- authentication and ownership ----------------------------------------------------------------------------


def every_endpoint(upload_id: str, file_id: str, key: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, httpx keyword arguments) of every authenticated route, aimed at existing things."""
    ids = {"key": key, "upload_id": upload_id}
    return [
        ("GET", "/me", {}),
        ("POST", "/uploads/url", {"json": {"key": key}}),
        ("GET", f"/uploads/download/{key}", {}),
        ("POST", "/uploads/multipart/init", {"json": {"key": key}}),
        ("POST", "/uploads/multipart/part-url", {"json": ids | {"part_number": 1}}),
        ("POST", "/uploads/multipart/complete", {"json": ids | {"parts": [{"PartNumber": 1, "ETag": "abc"}]}}),
        ("DELETE", "/uploads/multipart/abort", {"json": ids}),
        ("GET", "/uploads/multipart/parts", {"params": ids}),
        ("POST", f"/files/{file_id}/multipart_uploads", {"json": {}}),
        ("GET", f"/files/{file_id}/multipart_uploads", {"params": {"status": "pending"}}),
        ("GET", "/multipart_uploads", {}),
        ("GET", f"/multipart_uploads/{upload_id}", {}),
        ("GET", f"/multipart_uploads/{upload_id}/parts", {}),
        ("POST", f"/multipart_uploads/{upload_id}/part/1/presigned_post", {}),
        ("PATCH", f"/multipart_uploads/{upload_id}", {"json": {"status": "cancelled"}}),
    ]


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token-of-this-service", "Bearer", "Basic YWxpY2U6eA==",
                                           "not-even-a-scheme"])
def test_every_route_needs_a_known_token(module_service: ServiceProcess, authorization: str | None) -> None:
    with module_service.client() as alice:
        upload = ok(alice.post(f"/files/{(file_id := new_file_id())}/multipart_uploads", json={}), 201)
        key = f"auth/{uuid.uuid4().hex}"
        mine = ok(alice.post("/uploads/multipart/init", json={"key": key}))
    headers = {"Authorization": authorization} if authorization is not None else {}
    with httpx.Client(base_url=module_service.base_url, headers=headers, timeout=30) as stranger:
        for method, path, kwargs in every_endpoint(upload["upload_id"], file_id, key) + every_endpoint(
                mine["upload_id"], file_id, key):
            response = stranger.request(method, path, **kwargs)
            refused(response, 401, "Unauthorized")
            assert response.headers["WWW-Authenticate"] == "Bearer", (method, path)
    with module_service.client() as alice:
        assert ok(alice.get(f"/multipart_uploads/{upload['upload_id']}"))["status"] == "pending"
        assert ok(alice.get(f"/multipart_uploads/{mine['upload_id']}"))["status"] == "pending"
    assert ok(httpx.get(f"{module_service.base_url}/health")) == {"status": "ok"}  # the one open API route
    assert httpx.get(f"{module_service.base_url}/").status_code == 200  # and the page, which asks for a token


def test_another_principals_uploads_and_files_do_not_exist_for_bob(module_service: ServiceProcess) -> None:
    file_id, key = new_file_id(), f"private/{uuid.uuid4().hex}.bin"
    with module_service.client("alice") as alice, module_service.client("bob") as bob:
        by_file = ok(alice.post(f"/files/{file_id}/multipart_uploads", json={}), 201)
        by_key = ok(alice.post("/uploads/multipart/init", json={"key": key}))
        put(ok(alice.post("/uploads/url", json={"key": key}))["url"], b"alice's object")
        alice_parts = send_parts(alice, by_file["upload_id"], [b"alice's part"])

        for upload_id in (by_file["upload_id"], by_key["upload_id"]):
            path = f"/multipart_uploads/{upload_id}"
            refused(bob.get(path), 404, "NoSuchUpload")
            refused(bob.get(f"{path}/parts"), 404, "NoSuchUpload")
            refused(bob.post(f"{path}/part/1/presigned_post"), 404, "NoSuchUpload")
            for status in STATUSES:
                body: dict[str, Any] = {"status": status}
                if status == "uploaded":
                    body["parts"] = alice_parts
                refused(bob.patch(path, json=body), 404, "NoSuchUpload")
            ids = {"key": key, "upload_id": upload_id}
            refused(bob.post("/uploads/multipart/part-url", json=ids | {"part_number": 1}), 404, "NoSuchUpload")
            refused(bob.get("/uploads/multipart/parts", params=ids), 404, "NoSuchUpload")
            refused(bob.post("/uploads/multipart/complete",
                             json=ids | {"parts": [{"PartNumber": 1, "ETag": alice_parts["1"]}]}), 404, "NoSuchUpload")
            refused(bob.request("DELETE", "/uploads/multipart/abort", json=ids), 404, "NoSuchUpload")

        refused(bob.post(f"/files/{file_id}/multipart_uploads", json={}), 404, "NoSuchFile")
        for status in STATUSES:
            assert ok(bob.get(f"/files/{file_id}/multipart_uploads", params={"status": status})) is None
        # Bob's keys are his own: the same name is not alice's object.
        refused(bob.get(f"/uploads/download/{key}"), 404, "NoSuchKey")

        # Nothing bob did changed alice's uploads.
        assert ok(alice.get(f"/multipart_uploads/{by_file['upload_id']}"))["status"] == "pending"
        assert ok(alice.get(f"/multipart_uploads/{by_key['upload_id']}"))["status"] == "pending"
        assert ok(alice.get(f"/files/{file_id}/multipart_uploads"))["upload_id"] == by_file["upload_id"]
        listed = ok(alice.get(f"/multipart_uploads/{by_file['upload_id']}/parts"))["parts"]
        assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, alice_parts["1"])]


# -- the status transitions --------------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after"), [(b, a) for b in STATUSES for a in STATUSES])
def test_status_transition(module_service: ServiceProcess, before: str, after: str) -> None:
    chunks = [data(5 * MiB, seed=1), data(1234, seed=2)]  # every part but the last at least 5 MiB, as S3 wants
    with module_service.client() as c, module_service.client("carol") as reviewer:
        upload = upload_in(c, before, chunks if before in ("uploaded", "accepted", "rejected") else None, reviewer)
        upload_id, key = upload["upload_id"], upload["key"]
        path = f"/multipart_uploads/{upload_id}"
        body: dict[str, Any] = {"status": after}
        if after == "uploaded":
            body["parts"] = send_parts(c, upload_id, chunks) if before == "pending" else {"1": md5(b"x")}
        response = c.patch(path, json=body)

        if (before, after) in VERDICTS:
            detail = refused(response, 403, "NotAllowed")
            assert "only the reviewer" in detail, detail
            assert ok(c.get(path))["status"] == before
            return
        if (before, after) not in ALLOWED:
            detail = refused(response, 409, "InvalidTransition")
            assert f"is {before} " in detail and f"become {after} " in detail, detail
            assert ok(c.get(path))["status"] == before
            return

        changed = ok(response)
        assert changed["status"] == after and changed["upload_id"] == upload_id
        assert ok(c.get(path)) == changed
        if after == "uploaded":
            assert s3_object(module_service, key) == b"".join(chunks)
            assert changed["object_size"] == sum(map(len, chunks))
            assert changed["etag"] == s3_etag(module_service, key)
            assert s3_uploads(module_service, key) == []
        else:  # cancelled, failed
            assert no_such_upload(module_service, key, upload_id)
            assert s3_uploads(module_service, key) == []
            assert ok(c.get(f"{path}/parts"))["parts"] == []
            refused(c.post(f"{path}/part/1/presigned_post"), 409, "NotPending")


@pytest.mark.parametrize("status", STATUSES)
def test_a_file_has_one_active_upload(module_service: ServiceProcess, status: str) -> None:
    """409 UploadExists while the file's upload is pending, uploaded or accepted; a new upload after the others."""
    with module_service.client() as c, module_service.client("carol") as reviewer:
        first = upload_in(c, status, reviewer=reviewer)
        file_id = first["file_id"]
        again = c.post(f"/files/{file_id}/multipart_uploads", json={})
        if status in ("pending", "uploaded", "accepted"):
            detail = refused(again, 409, "UploadExists")
            assert status in detail and first["upload_id"] in detail
            assert s3_uploads(module_service, first["key"]) == ([first["upload_id"]] if status == "pending" else [])
            return
        second = ok(again, 201)
        assert second["upload_id"] != first["upload_id"] and second["status"] == "pending"
        assert second["key"] == first["key"] == f"files/{file_id}"
        assert ok(c.get(f"/files/{file_id}/multipart_uploads"))["upload_id"] == second["upload_id"]
        assert ok(c.get(f"/files/{file_id}/multipart_uploads", params={"status": status}))["upload_id"] == \
            first["upload_id"]
        assert s3_uploads(module_service, first["key"]) == [second["upload_id"]]


def test_own_uploads_are_listed_newest_first_with_their_statuses(module_service: ServiceProcess) -> None:
    """GET /multipart_uploads: the caller's file uploads only (not another principal's, not key-centric ones),
    newest first, filtered by status, at most limit; a rejection's reason comes with it."""
    with module_service.client("bob") as bob, module_service.client("alice") as alice, \
            module_service.client("carol") as carol:
        before = {u["upload_id"] for u in ok(bob.get("/multipart_uploads", params={"limit": 1000}))["uploads"]}
        ok(alice.post(f"/files/{new_file_id()}/multipart_uploads", json={}), 201)  # alice's: not bob's
        ok(bob.post("/uploads/multipart/init", json={"key": f"listed/{uuid.uuid4().hex}"}))  # no file id
        first = ok(bob.post(f"/files/{new_file_id()}/multipart_uploads", json={}), 201)
        second = ok(bob.post(f"/files/{new_file_id()}/multipart_uploads", json={}), 201)
        ok(bob.patch(f"/multipart_uploads/{first['upload_id']}",
                     json={"status": "uploaded", "parts": send_parts(bob, first["upload_id"], [b"first"])}))
        ok(carol.post(f"/multipart_uploads/{first['upload_id']}/review",
                      json={"status": "rejected", "reason": "not the run we asked for"}))
        listed = ok(bob.get("/multipart_uploads", params={"limit": 1000}))["uploads"]
        new = [u for u in listed if u["upload_id"] not in before]
        assert [(u["upload_id"], u["status"]) for u in new] == [(second["upload_id"], "pending"),
                                                                 (first["upload_id"], "rejected")]
        assert (new[1]["reason"], new[1]["status_by"], new[1]["file_id"]) == ("not the run we asked for", "carol",
                                                                              first["file_id"])
        rejected = ok(bob.get("/multipart_uploads", params={"status": "rejected"}))["uploads"]
        assert first["upload_id"] in {u["upload_id"] for u in rejected}
        assert {u["status"] for u in rejected} == {"rejected"}
        assert len(ok(bob.get("/multipart_uploads", params={"limit": 1}))["uploads"]) == 1
        refused(bob.get("/multipart_uploads", params={"status": "done"}), 422)
        refused(bob.get("/multipart_uploads", params={"limit": 0}), 422)


def test_file_upload_end_to_end_with_declared_size(module_service: ServiceProcess) -> None:
    chunks = [data(5 * MiB, seed=3), data(5 * MiB, seed=4), data(7, seed=5)]
    size = sum(map(len, chunks))
    file_id = new_file_id()
    with module_service.client() as c:
        upload = ok(c.post(f"/files/{file_id}/multipart_uploads",
                           json={"size": size, "part_size": 5 * MiB, "content_type": "application/x-test"}), 201)
        assert (upload["file_id"], upload["size"], upload["part_size"]) == (file_id, size, 5 * MiB)
        assert upload["bucket"] == module_service.bucket
        refused(c.post(f"/multipart_uploads/{upload['upload_id']}/part/4/presigned_post"), 422, "InvalidPartNumber")
        parts = send_parts(c, upload["upload_id"], chunks)
        listed = ok(c.get(f"/multipart_uploads/{upload['upload_id']}/parts"))
        assert listed == {"upload_id": upload["upload_id"],
                          "parts": [{"PartNumber": n, "ETag": md5(ch), "Size": len(ch)}
                                    for n, ch in enumerate(chunks, start=1)]}
        # A completion that leaves out a part of the declared size is refused, and the upload stays pending.
        refused(c.patch(f"/multipart_uploads/{upload['upload_id']}",
                        json={"status": "uploaded", "parts": {"1": parts["1"], "2": parts["2"]}}), 422, "WrongParts")
        done = ok(c.patch(f"/multipart_uploads/{upload['upload_id']}", json={"status": "uploaded", "parts": parts}))
        assert (done["status"], done["object_size"]) == ("uploaded", size)
        assert done["etag"] == s3_etag(module_service, f"files/{file_id}")
    head = module_service.s3_client().head_object(Bucket=module_service.bucket, Key=f"files/{file_id}")
    assert head["ContentType"] == "application/x-test"
    assert s3_object(module_service, f"files/{file_id}") == b"".join(chunks)


# -- the key-centric family --------------------------------------------------------------------------------


def test_key_centric_multipart_end_to_end(module_service: ServiceProcess) -> None:
    key = f"dir/sub/{uuid.uuid4().hex}.bin"
    chunks = [data(5 * MiB, seed=6), data(4321, seed=7)]
    with module_service.client() as c:
        init = ok(c.post("/uploads/multipart/init", json={"key": key, "size": sum(map(len, chunks)),
                                                           "part_size": 5 * MiB}))
        assert (init["key"], init["part_size"]) == (key, 5 * MiB)
        upload_id = init["upload_id"]
        ids = {"key": key, "upload_id": upload_id}
        etags = []
        for number, chunk in enumerate(chunks, start=1):
            signed = ok(c.post("/uploads/multipart/part-url", json=ids | {"part_number": number}))
            assert (signed["method"], signed["part_number"]) == ("PUT", number)
            assert signed["expires_at"].endswith("Z")
            etags.append(put(signed["url"], chunk))
        listed = ok(c.get("/uploads/multipart/parts", params=ids))
        assert listed["upload_id"] == upload_id
        assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["parts"]] == \
            [(1, md5(chunks[0]), 5 * MiB), (2, md5(chunks[1]), 4321)]
        # The key names the upload too: another key of the same principal does not reach it.
        refused(c.get("/uploads/multipart/parts", params=ids | {"key": key + ".other"}), 404, "NoSuchUpload")

        done = ok(c.post("/uploads/multipart/complete", json=ids | {
            "parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]}))
        assert (done["status"], done["key"], done["file_id"]) == ("uploaded", key, None)
        assert done["etag"] == s3_etag(module_service, f"users/alice/{key}")
        assert done["object_size"] == sum(map(len, chunks))
        # It lives in alice's namespace, and the download URL gives back the same bytes.
        assert s3_object(module_service, f"users/alice/{key}") == b"".join(chunks)
        download = ok(c.get(f"/uploads/download/{key}"))
        assert (download["key"], download["method"]) == (key, "GET")
        assert httpx.get(download["url"], timeout=60).content == b"".join(chunks)
        refused(c.post("/uploads/multipart/complete", json=ids | {"parts": [{"PartNumber": 1, "ETag": etags[0]}]}),
                409, "InvalidTransition")

        # abort: an upload with a part in it, aborted; S3 forgets it; a second abort is refused.
        other = ok(c.post("/uploads/multipart/init", json={"key": key + ".2"}))
        ids2 = {"key": key + ".2", "upload_id": other["upload_id"]}
        put(ok(c.post("/uploads/multipart/part-url", json=ids2 | {"part_number": 1}))["url"], b"abandoned")
        aborted = ok(c.request("DELETE", "/uploads/multipart/abort", json=ids2))
        assert aborted["status"] == "cancelled"
        assert no_such_upload(module_service, f"users/alice/{key}.2", other["upload_id"])
        assert ok(c.get("/uploads/multipart/parts", params=ids2))["parts"] == []
        refused(c.request("DELETE", "/uploads/multipart/abort", json=ids2), 409, "InvalidTransition")
        refused(c.post("/uploads/multipart/part-url", json=ids2 | {"part_number": 2}), 409, "NotPending")
        refused(c.get(f"/uploads/download/{key}.2"), 404, "NoSuchKey")


def test_single_object_put_and_download(module_service: ServiceProcess) -> None:
    key, body = f"single/{uuid.uuid4().hex}.txt", data(100_000, seed=8)
    with module_service.client() as c:
        signed = ok(c.post("/uploads/url", json={"key": key, "content_type": "text/plain"}))
        assert (signed["key"], signed["method"]) == (key, "PUT")
        response = httpx.put(signed["url"], content=body, headers={"Content-Type": "text/plain"}, timeout=60)
        assert response.status_code == 200, response.text
        assert httpx.get(ok(c.get(f"/uploads/download/{key}"))["url"], timeout=60).content == body


# -- validation ----------------------------------------------------------------------------------------------


BAD_KEYS = {
    "empty": "",
    "1025 bytes": "k" * 1025,
    "1026 bytes in 513 characters": "é" * 513,
    "over 1024 bytes with the namespace": "k" * 1020,
    "NUL": "a\x00b",
    "newline": "a\nb",
    "DEL": "a\x7fb",
    "C1 control": "a\x85b",
    "dot-dot": "..",
    "dot-dot segment": "a/../b",
    "leading dot-dot": "../a",
    "trailing dot-dot": "a/..",
    "dot segment": "a/./b",
    "leading slash": "/a",
}


@pytest.mark.parametrize("key", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
def test_bad_keys_are_422(module_service: ServiceProcess, key: str) -> None:
    with module_service.client() as c:
        for path in ("/uploads/url", "/uploads/multipart/init"):
            refused(c.post(path, json={"key": key}), 422)
        if key:  # an empty one is another route: /uploads/download/
            # Dots escaped too, or the HTTP client would resolve the dot segments away. Starlette's {key:path}
            # does not match a newline: no route (404), which is as good a no.
            escaped = urllib.parse.quote(key, safe="").replace(".", "%2E")
            refused(c.get(f"/uploads/download/{escaped}"), 404 if "\n" in key else 422)


@pytest.mark.parametrize("part_number", [0, -1, 10001])
def test_part_numbers_outside_1_to_10000_are_422(module_service: ServiceProcess, part_number: int) -> None:
    with module_service.client() as c:
        upload = upload_in(c, "pending")
        key = f"pn/{uuid.uuid4().hex}"
        ids = {"key": key, "upload_id": ok(c.post("/uploads/multipart/init", json={"key": key}))["upload_id"]}
        refused(c.post(f"/multipart_uploads/{upload['upload_id']}/part/{part_number}/presigned_post"), 422)
        refused(c.post("/uploads/multipart/part-url", json=ids | {"part_number": part_number}), 422)
        refused(c.patch(f"/multipart_uploads/{upload['upload_id']}",
                        json={"status": "uploaded", "parts": {str(part_number): md5(b"x")}}), 422)
        refused(c.post("/uploads/multipart/complete", json=ids | {"parts": [{"PartNumber": part_number,
                                                                             "ETag": md5(b"x")}]}), 422)
        assert ok(c.get(f"/multipart_uploads/{upload['upload_id']}"))["status"] == "pending"


BAD_FILE_IDS = {"leading dash": "-a", "leading dot": ".a", "leading underscore": "_a", "space": "a b",
                "256 characters": "a" * 256, "non-ASCII": "é", "colon": "a:b", "percent": "a%b", "dot-dot": ".."}


@pytest.mark.parametrize("file_id", list(BAD_FILE_IDS.values()), ids=list(BAD_FILE_IDS))
def test_bad_file_ids_are_422(module_service: ServiceProcess, file_id: str) -> None:
    path = f"/files/{urllib.parse.quote(file_id, safe='').replace('.', '%2E')}/multipart_uploads"
    with module_service.client() as c:
        refused(c.post(path, json={}), 422)
        refused(c.get(path), 422)


@pytest.mark.parametrize(("body", "why"), [
    ({"status": "done"}, "not a status"),
    ({"status": "uploaded"}, "completing needs parts"),
    ({"status": "uploaded", "parts": {}}, "completing needs parts"),
    ({"status": "cancelled", "parts": {"1": "abc"}}, "parts go with uploaded only"),
    ({"status": "uploaded", "parts": {"1": ""}}, "an empty ETag"),
    ({"status": "uploaded", "parts": {"1": "a\nb"}}, "a control character in an ETag"),
    ({"status": "cancelled", "extra": 1}, "an unknown field"),
    ({}, "no status"),
])
def test_bad_patch_bodies_are_422_and_change_nothing(module_service: ServiceProcess, body: dict[str, Any],
                                                     why: str) -> None:
    with module_service.client() as c:
        upload = upload_in(c, "pending")
        refused(c.patch(f"/multipart_uploads/{upload['upload_id']}", json=body), 422)
        assert ok(c.get(f"/multipart_uploads/{upload['upload_id']}"))["status"] == "pending", why
        assert s3_uploads(module_service, upload["key"]) == [upload["upload_id"]]


# -- what the service writes down ------------------------------------------------------------------------------


def test_presigned_urls_never_reach_the_log(module_service: ServiceProcess) -> None:
    """The URLs are bearer credentials for S3: handed to the caller, never logged (even with --verbose)."""
    signed: list[str] = []
    key = f"log/{uuid.uuid4().hex}"
    with module_service.client() as c:
        s = ok(c.post("/uploads/url", json={"key": key}))
        put(s["url"], b"logged?")
        signed += [s["url"], ok(c.get(f"/uploads/download/{key}"))["url"]]
        init = ok(c.post("/uploads/multipart/init", json={"key": key + ".mp"}))
        s = ok(c.post("/uploads/multipart/part-url", json={"key": key + ".mp", "upload_id": init["upload_id"],
                                                             "part_number": 1}))
        signed.append(s["url"])
        etag = put(s["url"], b"part")
        ok(c.post("/uploads/multipart/complete", json={"key": key + ".mp", "upload_id": init["upload_id"],
                                                        "parts": [{"PartNumber": 1, "ETag": etag}]}))
        upload = upload_in(c, "pending")
        signed.append(ok(c.post(f"/multipart_uploads/{upload['upload_id']}/part/1/presigned_post"))["url"])
    log = module_service.log()
    assert "Upload " in log and '"path": "/uploads/url"' in log  # the log is being written, and read
    for url in signed:
        signature = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["X-Amz-Signature"][0]
        assert signature not in log
        assert url not in log
    # Nor any other URL signed by an earlier test of this module, nor the service's secret key.
    assert "X-Amz-Signature" not in log and "Signature=" not in log
    assert module_service.s3.secret_key not in log
    for token in module_service.tokens.values():
        assert token not in log


# -- inputs the fuzzer found answered with 500 -------------------------------------------------------------------


def test_an_upload_id_with_a_nul_is_no_such_upload(module_service: ServiceProcess) -> None:
    """PostgreSQL text cannot hold NUL: such an id used to reach the query and fail there (500)."""
    ids = {"key": "k", "upload_id": "a\x00b"}
    with module_service.client() as c:
        for response in (
            c.get("/multipart_uploads/a%00b"),
            c.get("/multipart_uploads/a%00b/parts"),
            c.patch("/multipart_uploads/a%00b", json={"status": "cancelled"}),
            c.post("/multipart_uploads/a%00b/part/1/presigned_post"),
            c.get("/uploads/multipart/parts", params=ids),
            c.post("/uploads/multipart/part-url", json=ids | {"part_number": 1}),
            c.post("/uploads/multipart/complete", json=ids | {"parts": [{"PartNumber": 1, "ETag": "abc"}]}),
            c.request("DELETE", "/uploads/multipart/abort", json=ids),
        ):
            refused(response, 404, "NoSuchUpload")


@pytest.mark.parametrize(("path", "body"), [
    ("/uploads/url", '{"key": "a\\ud800b"}'),
    ("/uploads/multipart/init", '{"key": "k", "content_type": "text/\\udfff"}'),
    ("/uploads/multipart/part-url", '{"key": "k", "upload_id": "a\\ud800b", "part_number": 1}'),
    ("/uploads/multipart/complete", '{"key": "k", "upload_id": "1", "parts": [{"PartNumber": 1, "ETag": "\\ud800"}]}'),
])
def test_a_lone_surrogate_in_a_json_body_is_422(module_service: ServiceProcess, path: str, body: str) -> None:
    """JSON can spell a lone surrogate (\\ud800), which is no text: the 422 that says so used to fail to encode
    itself (500)."""
    with module_service.client() as c:
        response = c.post(path, content=body.encode(), headers={"Content-Type": "application/json"})
        refused(response, 422)
        assert response.json()["detail"][0]["type"] == "string_unicode"
        assert ok(c.get("/health")) == {"status": "ok"}
