"""Several controller instances on one PostgreSQL database, as behind a load balancer."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.pg import PostgresServer
from tests.service_fixtures import ServiceProcess, StartService, new_bucket

pytestmark = pytest.mark.integration

ROUNDS = 8


def test_two_instances_one_database_one_upload_per_file(start_service: StartService, s3_server,  # type: ignore[no-untyped-def]
                                                        postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    bucket = new_bucket(s3_server)
    first = start_service(url, bucket=bucket)
    second = start_service(url, bucket=bucket)  # migrates nothing: the schema is there

    # The same principal and token on both (the tokens files differ per process: use each one's own).
    def create(svc: ServiceProcess, file_id: str, barrier: threading.Barrier, out: list[int]) -> None:
        with httpx.Client(base_url=svc.base_url, headers=svc.headers("alice"), timeout=60) as c:
            barrier.wait(timeout=30)
            out.append(c.post(f"/files/{file_id}/multipart_uploads", json={"size": 1}).status_code)

    for n in range(ROUNDS):
        file_id = f"shared-{n}"
        barrier = threading.Barrier(2)
        codes: list[int] = []
        threads = [threading.Thread(target=create, args=(svc, file_id, barrier, codes)) for svc in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        # Tokens map to the same principal name on both instances, so one wins and the other sees the file's
        # pending upload: 409, whichever instance answered first.
        assert sorted(codes) == [201, 409], f"round {n}: {codes}"
        listed = s3_server.client().list_multipart_uploads(Bucket=bucket, Prefix=f"files/{file_id}")
        uploads = [(u["Key"], u["UploadId"]) for u in listed.get("Uploads", [])]
        assert len(uploads) == 1, f"round {n}: S3 holds {uploads}; logs:\n{first.log()}\n{second.log()}"

    # Either instance answers for an upload the other created.
    with first.client() as a, second.client() as b:
        made = a.post("/files/cross/multipart_uploads", json={"size": 1})
        assert made.status_code == 201
        seen = b.get(f"/multipart_uploads/{made.json()['upload_id']}")
        assert seen.status_code == 200 and seen.json()["status"] == "pending"
        cancelled = b.patch(f"/multipart_uploads/{made.json()['upload_id']}", json={"status": "cancelled"})
        assert cancelled.status_code == 200
        assert a.get(f"/multipart_uploads/{made.json()['upload_id']}").json()["status"] == "cancelled"
