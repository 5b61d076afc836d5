"""What trying the tool against other stores found (issue 24), each pinned by a test that fails without its fix:
completion without the store's part checksums, a ListParts the plan did not name, a missing meta file said as
such, a failed run's JSON summary, upload dates a store makes up, and a store that pauses while reading."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest

import s3_multipart_upload as api
from s3_multipart_upload.operations import credible_initiated
from s3_multipart_upload.plan import MiB
from tests.conftest import S3Server, run_cli, upload_args, write_random
from tests.s3proxy import Fault, S3Proxy, Seen

pytestmark = pytest.mark.integration


def operation(seen: Seen) -> str:
    """The S3 operation a request of the proxy's log was."""
    q = seen.query
    if seen.method == "POST":
        return "CreateMultipartUpload" if "uploads" in q else "CompleteMultipartUpload"
    if seen.method == "PUT":
        return "UploadPart" if "partNumber" in q else "PutObject"
    if seen.method == "GET" and "uploadId" in q:
        return "ListParts"
    if seen.method == "HEAD":
        return "HeadObject"
    return f"{seen.method} {seen.path}"


# -- completion: each part's checksum from the log when the listing lacks it ------------------------------------


@pytest.mark.parametrize("checksum", ["CRC32C", "SHA256"])
def test_completion_names_each_parts_checksum_from_the_log(s3_server: S3Server, bucket: str,
                                                           aws_env: dict[str, str], tmp_path: Path,
                                                           checksum: str) -> None:
    """rclone serve s3 lists parts without checksums (as SeaweedFS does); the proxy in front refuses a completion
    that does not name each part's, as S3 and SeaweedFS do. The log holds them."""
    proxy = S3Proxy(s3_server.endpoint, verify_checksums=True)
    try:
        f = write_random(tmp_path / "f.bin", 12 * MiB, seed=241)
        r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                                "--checksum", checksum, endpoint=proxy.endpoint), aws_env)
        assert r.returncode == 0, r.stderr + "\n".join(proxy.refused)
        assert proxy.refused == []
        assert s3_server.client().get_object(Bucket=bucket, Key="k")["Body"].read() == f.read_bytes()
    finally:
        proxy.close()


def _refused_completion(s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path,
                        *extra: str) -> tuple[S3Proxy, object]:
    def refuse(seen: Seen, index: int) -> Fault | None:
        return Fault(400, "InvalidRequest") if operation(seen) == "CompleteMultipartUpload" else None
    proxy = S3Proxy(s3_server.endpoint, rule=refuse)
    f = write_random(tmp_path / "f.bin", 12 * MiB, seed=242)
    r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M",
                            *extra, endpoint=proxy.endpoint), aws_env)
    return proxy, r


def test_a_completion_refused_with_checksums_says_so(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    proxy, r = _refused_completion(s3_server, bucket, aws_env, tmp_path, "--checksum", "CRC32C")
    proxy.close()
    assert r.returncode == 5, r.stderr  # type: ignore[attr-defined]
    err = r.stderr  # type: ignore[attr-defined]
    assert "refused to complete" in err and "with the parts' CRC32C checksums" in err
    assert "--restart --checksum MD5" in err and "bucket and key names" not in err


def test_the_json_summary_of_a_failed_completion_says_how_far_it_got(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    proxy, r = _refused_completion(s3_server, bucket, aws_env, tmp_path, "--json")
    proxy.close()
    assert r.returncode == 5, r.stderr  # type: ignore[attr-defined]
    summary = json.loads(r.stdout.splitlines()[-1])  # type: ignore[attr-defined]
    meta = json.loads((tmp_path / "m.json").read_text())
    assert summary["event"] == "summary" and summary["status"] == "error"
    assert (summary["uploadId"], summary["partsTotal"], summary["partsSent"], summary["partsAlreadyDone"],
            summary["bytesSent"]) == (meta["uploadId"], 3, 3, 0, 12 * MiB)


# -- the dry run and the real run make the same requests ------------------------------------------------------


@pytest.mark.parametrize("checksum", ["MD5", "CRC32C", "CRC64NVME", "auto"])
def test_a_new_upload_makes_the_requests_its_dry_run_names(moto_server: S3Server, aws_env: dict[str, str],
                                                           tmp_path: Path, checksum: str) -> None:
    """No ListParts on an upload the run just created (s3rver has no ListParts: a new upload failed there)."""
    bucket = f"plan-{checksum.lower()}"
    moto_server.client().create_bucket(Bucket=bucket)
    proxy = S3Proxy(moto_server.endpoint)
    try:
        f = write_random(tmp_path / "f.bin", 13 * MiB, seed=243)
        args = upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "--checksum",
                           checksum, endpoint=proxy.endpoint)
        plan = json.loads(run_cli([*args, "--dry-run", "--json"], aws_env).stdout)
        assert proxy.seen == []
        r = run_cli(args, aws_env)
        assert r.returncode == 0, r.stderr
        made = Counter(operation(s) for s in proxy.seen)
        made.pop("HeadObject", None)  # the dry run says: "and a HeadObject unless the completion answer proves"
        assert made == Counter({k: v for k, v in plan["requests"].items() if v})
        # only before completing, to repeat the part checksums (auto: moto accepts the probe's wrong CRC64NVME: MD5)
        assert made["ListParts"] == (checksum not in ("MD5", "auto"))
    finally:
        proxy.close()


# -- status of a meta file that is not there ------------------------------------------------------------------


def test_status_of_a_missing_meta_file_with_a_token_file_says_it_does_not_exist(
        aws_env: dict[str, str], tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-a-real-token\n")
    for command in ("status", "abort"):
        r = run_cli([command, "-m", str(tmp_path / "missing.json"), "--token-file", str(token)], aws_env)
        assert r.returncode == 2, r.stderr
        assert "missing.json does not exist" in r.stderr and "not a controller upload" not in r.stderr
        assert "not one" not in r.stderr


# -- upload dates a store makes up never drive an abort ------------------------------------------------------


def test_dates_a_store_makes_up_never_drive_older_than(moto_server: S3Server, aws_env: dict[str, str]) -> None:
    """moto answers every upload's Initiated as 2010-11-10: by that date, an upload seconds old is 16 years old."""
    client = moto_server.client()
    client.create_bucket(Bucket="dates")
    fresh = client.create_multipart_upload(Bucket="dates", Key="fresh")["UploadId"]
    client.upload_part(Bucket="dates", Key="fresh", UploadId=fresh, PartNumber=1, Body=b"x" * 1024)
    empty = client.create_multipart_upload(Bucket="dates", Key="empty")["UploadId"]
    listed = client.list_multipart_uploads(Bucket="dates")["Uploads"]
    assert all(u["Initiated"].year < 2015 for u in listed)  # the store's made-up date, still there

    common = ["-b", "dates", "--endpoint-url", moto_server.endpoint]
    r = run_cli(["list", *common, "--older-than", "7d", "--abort", "--yes"], aws_env)
    assert r.returncode == 0, r.stderr
    assert "No multipart uploads in progress in s3://dates/ older than 7d." in r.stdout
    assert "cannot be right" in r.stderr
    assert {u["UploadId"] for u in client.list_multipart_uploads(Bucket="dates")["Uploads"]} == {fresh, empty}
    assert api.list_uploads("dates", older_than="1d", endpoint_url=moto_server.endpoint) == []

    rows = {x["key"]: x for x in map(json.loads, run_cli(["list", *common, "--json"], aws_env).stdout.splitlines())}
    assert rows["fresh"]["initiatedCredible"] is False and 0 <= rows["fresh"]["ageSeconds"] < 600
    assert rows["empty"]["initiatedCredible"] is False and rows["empty"]["ageSeconds"] == 0
    # without --older-than, --abort still aborts what is listed, whatever its date
    r = run_cli(["list", *common, "--prefix", "fresh", "--abort", "--yes"], aws_env)
    assert r.returncode == 0 and f"Aborted fresh {fresh}" in r.stdout, r.stderr


def test_the_rule_for_a_credible_upload_date() -> None:
    now = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    assert credible_initiated(now - 9 * day, now, now - 100 * day, now - 9 * day)
    assert credible_initiated(now - 9 * day, now, None, None)
    assert not credible_initiated(now + day, now, None, None)  # in the future
    assert not credible_initiated(now - 9 * day, now, now - 2 * day, None)  # before its bucket
    assert not credible_initiated(now - 90 * day, now, None, now - day)  # months before its first part


# -- a slow store is waited for --------------------------------------------------------------------------------


def test_a_store_that_reads_slowly_and_pauses_15_s_is_waited_for(s3_server: S3Server, bucket: str,
                                                                  aws_env: dict[str, str], tmp_path: Path) -> None:
    """Every part's body read at 8 MiB/s with a 15 s pause after its first MiB (a store flushing its disk, a
    loaded machine): the upload completes at the first try of each part, without exit 75."""
    def slow(seen: Seen, index: int) -> Fault | None:
        return Fault(read_rate=8 * MiB, pause_after=MiB, pause=15) if seen.part_number is not None else None
    proxy = S3Proxy(s3_server.endpoint, rule=slow)
    try:
        f = write_random(tmp_path / "f.bin", 32 * MiB, seed=244)
        r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "16M", "-t", "2",
                                "--retries", "2", endpoint=proxy.endpoint), aws_env, timeout=180)
        assert r.returncode == 0, r.stderr
        assert proxy.part_puts() == {1: 1, 2: 1}  # nothing abandoned and sent again
        assert s3_server.client().get_object(Bucket=bucket, Key="k")["Body"].read() == f.read_bytes()
    finally:
        proxy.close()


def test_a_store_that_answers_parts_late_is_waited_for(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    """A store that answers a part long after its last byte (issue 24: 1 GiB parts answered 60 s late), scaled by
    1/10 so that it fits this machine: parts of 5 MiB waited for as a 1 GiB part is (12 s for its answer, the
    default's 120 s), the send limit 3 s (30 s), every part answered 6 s late (60 s): later than the send limit,
    which must not take the wait for an answer for a stalled body. One part's first answer comes after the wait
    (14 s): that try is abandoned and retried, and the retry logged. The upload completes, no exit 75."""
    tries: dict[int, int] = {}

    def late(seen: Seen, index: int) -> Fault | None:
        if seen.part_number is None:
            return None
        tries[seen.part_number] = tries.get(seen.part_number, 0) + 1
        return Fault(answer_after=14.0 if (seen.part_number, tries[seen.part_number]) == (2, 1) else 6.0)
    proxy = S3Proxy(s3_server.endpoint, rule=late)
    try:
        f = write_random(tmp_path / "f.bin", 15 * MiB, seed=245)
        env = aws_env | {"S3MU_TEST_TIMEOUTS": "send=3,answer=12,answer_per_gib=0"}
        r = run_cli(upload_args(bucket, "k", f, tmp_path / "m.json", tmp_path / "p.jsonl", "-s", "5M", "-t", "3",
                                "--retries", "3", endpoint=proxy.endpoint), env, timeout=180)
        assert r.returncode == 0, r.stderr
        assert "no answer 12 s after the body's last byte" in r.stderr and "retry 1" in r.stderr, r.stderr
        assert "network took no byte" not in r.stderr  # a late answer is not a stalled body
        assert proxy.part_puts() == {1: 1, 2: 2, 3: 1}
        assert s3_server.client().get_object(Bucket=bucket, Key="k")["Body"].read() == f.read_bytes()
    finally:
        proxy.close()
