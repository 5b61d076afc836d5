"""More of the store matrix (tests/test_store_matrix.py): a stream from a pipe, resumed by content; the object's
properties; the upload controller and its client. Each against every store that runs here, over HTTP on 127.0.0.1;
where a store lacks a request, the test asserts the tool's clear refusal. docs/stores.md shows the matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import run_cli, write_random
from tests.s3proxy import Fault, S3Proxy
from tests.service_fixtures import run_service
from tests.test_pipe import pipe_upload
from tests.test_store_matrix import Store
from tests.test_store_matrix import store as store

pytestmark = pytest.mark.integration


def test_a_stream_uploads_and_a_rerun_sends_only_what_the_store_lacks(store: Store, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 12 * MiB + 5, seed=41)
    proxy = S3Proxy(store.server.endpoint, rule=lambda seen, i: Fault(500, "InternalError")
                    if seen.part_number == 2 else None)
    args = ["upload", "-", f"s3://{store.bucket}/stream.bin", "-s", "5M", "-t", "1", "--retries", "1",
            "-m", str(tmp_path / "m.json"), "-a", str(tmp_path / "p.jsonl"), "--endpoint-url", proxy.endpoint]
    try:
        r = pipe_upload(args, store.env, f"cat {f}")
        assert r.returncode == 75, r.stderr
        proxy.rule = None
        proxy.reset()
        r = pipe_upload(args, store.env, f"cat {f}")
        assert r.returncode == 0, r.stderr
        assert sorted(proxy.part_puts()) == [2, 3], "part 1, held by the store, was sent again"
    finally:
        proxy.close()
    assert store.stored("stream.bin") == f.read_bytes()
    # --checksum auto asked the store (once, on the first run): the stores that verify CRC64NVME got it
    meta = json.loads((tmp_path / "m.json").read_text())
    verifies = store.name in ("seaweedfs", "localstack")
    assert (meta["checksumAlgorithm"], meta["verifiesCRC64NVME"]) == ("CRC64NVME" if verifies else "MD5", verifies)


PROPERTIES = ["--content-type", "text/csv", "--metadata", "owner=lab", "--metadata", "run=42",
              "--cache-control", "max-age=60", "--content-disposition", "attachment; filename=x.csv"]


@pytest.mark.parametrize("size", [3 * MiB, 12 * MiB], ids=["PutObject", "multipart"])
def test_the_objects_properties(store: Store, tmp_path: Path, size: int) -> None:
    f = write_random(tmp_path / "f.bin", size, seed=42)
    r = store.cli("upload", str(f), f"s3://{store.bucket}/props.csv", "-s", "5M", "--state-dir", str(tmp_path),
                  *PROPERTIES)
    assert r.returncode == 0, r.stderr
    head = store.server.client().head_object(Bucket=store.bucket, Key="props.csv")
    assert head["ContentType"] == "text/csv"
    if store.name == "rclone":  # rclone serve s3 1.7x gives user metadata keys back capitalized (docs/stores.md)
        assert head["Metadata"] == {"Owner": "lab", "Run": "42"}
    else:
        assert head["Metadata"] == {"owner": "lab", "run": "42"}
    assert head.get("CacheControl") == "max-age=60"
    assert head.get("ContentDisposition") == "attachment; filename=x.csv"
    assert store.stored("props.csv") == f.read_bytes()


def test_the_controller_and_its_client(store: Store, tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 12 * MiB + 1, seed=43)
    with run_service(store.server, store.bucket, f"sqlite:///{tmp_path / 'controller.db'}", tmp_path / "svc") as svc:
        r = run_cli(["upload", "-f", str(f), "--controller", svc.base_url, "--file-id", "run-1_f.bin",
                     "--token-file", str(svc.token_file()), "--state-dir", str(tmp_path / "state"), "--json"],
                    store.env, timeout=180)
        assert r.returncode == 0, r.stderr + svc.log()[-3000:]
    keys = [o["Key"] for o in store.server.client().list_objects_v2(Bucket=store.bucket).get("Contents", [])]
    assert len(keys) == 1, keys
    assert store.stored(keys[0]) == f.read_bytes()
