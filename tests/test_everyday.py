"""Everyday use through the console script against rclone: `upload FILE s3://B/K` with its state in the state
folder, many files in one command (killed and rerun), a batch's exit code, and status/list/clean of the state
folder."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from s3_multipart_upload.errors import ExitCode, most_urgent
from s3_multipart_upload.plan import MiB
from s3_multipart_upload.state import meta_lock
from tests.conftest import S3Server, kill_when, write_random
from tests.s3proxy import Fault, S3Proxy, Seen

pytestmark = pytest.mark.e2e


def console_script() -> str:
    import sys

    script = Path(sys.executable).parent / "s3-multipart-upload"
    assert script.exists(), "the console script is installed with the package"
    return str(script)


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    return subprocess.run([console_script(), *args], env=full_env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def metas(state: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    """key -> META of every upload in the state folder that has one."""
    out = {}
    for record in state.glob("s3-multipart-upload/*/upload.json"):
        meta = record.with_name("meta.json")
        if meta.exists():
            out[json.loads(record.read_text())["key"]] = json.loads(meta.read_text())
    return out


def logged(state: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in state.glob("s3-multipart-upload/*/parts.jsonl"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_path(bucket: str, seen: Seen) -> str:
    return seen.path.removeprefix(f"/{bucket}/")


def test_file_to_url_killed_and_rerun_resumes_with_state_in_xdg_state_home(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    f = write_random(tmp_path / "data.bin", 8 * 5 * MiB + 777, seed=3)
    env = aws_env | {"XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(tmp_path / "home")}
    proxy = S3Proxy(s3_server.endpoint, delay=0.05)
    try:
        args = ["upload", str(f), f"s3://{bucket}/runs/data.bin", "-s", "5M", "-t", "2",
                "--endpoint-url", proxy.endpoint]
        code = kill_when(args, env, lambda: logged(tmp_path / "state") >= 3, command=[console_script()])
        assert code == -signal.SIGKILL, "the upload finished before it could be killed"
        [meta] = metas(tmp_path / "state").values()
        assert meta["status"] == "in_progress" and meta["source"]["path"] == str(f)
        folder = next((tmp_path / "state" / "s3-multipart-upload").iterdir())
        record = json.loads((folder / "upload.json").read_text())
        assert record["bucket"] == bucket and record["key"] == "runs/data.bin" and record["source"] == str(f)
        assert not (tmp_path / "home").exists(), "XDG_STATE_HOME is where the state goes"
        proxy.wait_idle()
        held = {p["PartNumber"] for p in s3_server.client().list_parts(
            Bucket=bucket, Key="runs/data.bin", UploadId=meta["uploadId"]).get("Parts", [])}
        assert len(held) >= 3

        proxy.reset()
        r = run(args, env)
        assert r.returncode == 0, r.stderr
        assert not set(proxy.part_puts()) & held, "parts the server held were sent again"
        got = s3_server.client().get_object(Bucket=bucket, Key="runs/data.bin")["Body"].read()
        assert sha(got) == sha(f.read_bytes())

        proxy.reset()
        r = run(args, env)
        assert r.returncode == 0 and "already complete" in r.stderr
        assert not [s for s in proxy.seen if s.method in ("PUT", "POST")]
    finally:
        proxy.close()


# 300 files: 280 of 0 B to 900 KB (one PutObject each), 20 of 5 to 12 MiB (multipart at -s 5M).
SIZES = [0, 1, 100, 4096, 65536] + [(i * 37_321) % 900_000 for i in range(275)] + \
    [5 * MiB + 1 + (i * 389_017) % (7 * MiB) for i in range(19)] + [12 * MiB]


def journal_lines(state: Path) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for p in state.glob("s3-multipart-upload/batches/*.jsonl"):
        out += [json.loads(line) for line in p.read_text().splitlines() if line.endswith("}")]
    return out


def finished(state: Path) -> set[str]:
    return {d["key"] for d in journal_lines(state) if "eTag" in d}


def test_three_hundred_files_killed_twice_then_rerun(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    """A tree of 300 files (nested, hidden ones, a symbolic link to a file, a link loop) killed in each phase and
    rerun: every object byte-identical, none sent twice, the journal's torn last line tolerated; then a rerun of
    the finished tree makes no request at all."""
    assert len(SIZES) == 300
    tree = tmp_path / "run"
    files = []
    for i, size in enumerate(SIZES):
        name = f".hidden{i:03d}" if i % 50 == 7 else f"f{i:03d}.bin"
        f = tree / f"sub{i % 3}" / (f"deep{i % 2}" if i % 5 == 0 else "") / name
        f.parent.mkdir(parents=True, exist_ok=True)
        files.append(write_random(f, size, seed=i))
    (tree / "link.bin").symlink_to(files[3])  # a link to a file: uploaded as the file it points to
    (tree / "sub1" / "loop").symlink_to(tree)  # a loop: reported, not followed
    expected = {f"batch/{f.relative_to(tree).as_posix()}": f for f in files} | {"batch/link.bin": files[3]}
    state = tmp_path / "state"
    env = aws_env | {"XDG_STATE_HOME": str(state)}
    # Each PutObject and each part held a little, so that the command can be killed in each phase.
    proxy = S3Proxy(s3_server.endpoint, delay=0.05,
                    rule=lambda s, i: Fault(hold=0.05) if s.method == "PUT" and not s.query else None)
    args = ["upload", "--recursive", str(tree), f"s3://{bucket}/batch/", "-s", "5M", "-t", "4",
            "--endpoint-url", proxy.endpoint]
    big = {k for k, f in expected.items() if f.stat().st_size > 5 * MiB}

    def on_server() -> set[str]:
        keys: set[str] = set()
        for page in s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="batch/"):
            keys |= {o["Key"] for o in page.get("Contents", [])}
        return keys

    try:
        runs: list[tuple[set[str], list[Seen]]] = []  # what the server held before each run, what the run sent
        for ready in (lambda: len(finished(state)) >= 40,  # in the phase of one-PutObject files
                      lambda: any(len(p.read_text().splitlines()) >= 2 for p in state.rglob("parts.jsonl"))):
            before, start = on_server(), len(proxy.seen)
            code = kill_when(args, env, ready, command=[console_script()])
            assert code == -signal.SIGKILL, "the batch finished before it could be killed"
            proxy.wait_idle()
            runs.append((before, proxy.seen[start:]))
        assert 40 <= len(on_server()) < 301
        assert not list(state.glob("s3-multipart-upload/*/upload.json")) or \
            {json.loads(r.read_text())["key"] for r in state.glob("s3-multipart-upload/*/upload.json")} <= big, \
            "only files of several parts have a state folder"
        # A torn last line, as a crash mid-write leaves it.
        [journal] = state.glob("s3-multipart-upload/batches/*.jsonl")
        with open(journal, "a") as j:
            j.write('{"key": "batch/sub0/f003.b')
        held_parts = {}
        for key, m in metas(state).items():
            if m["status"] == "in_progress" and m["uploadId"]:
                try:
                    page = s3_server.client().list_parts(Bucket=bucket, Key=key, UploadId=m["uploadId"])
                except ClientError as exc:  # completed on the server, killed before META said so
                    assert exc.response["Error"]["Code"] == "NoSuchUpload"
                    held_parts[key] = set(range(1, 10_001))  # the rerun finds the object built: sends nothing
                    continue
                held_parts[key] = {p["PartNumber"] for p in page.get("Parts", [])}
        assert any(held_parts.values()), "a file of several parts was under way when the batch was killed"

        before, start = on_server(), len(proxy.seen)
        r = run([*args, "--json"], env)
        assert r.returncode == 0, r.stderr
        runs.append((before, proxy.seen[start:]))
        summary = json.loads(r.stdout.splitlines()[-1])
        assert summary["event"] == "summary" and summary["files"] == 301 and summary["exitCode"] == 0
        assert summary["completed"] + summary["alreadyComplete"] == 301 and summary["alreadyComplete"] >= 40
        assert "unfinished last line" in r.stderr and "symbolic link loop" in r.stderr

        assert on_server() == set(expected)
        for key, f in expected.items():
            got = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
            assert sha(got) == sha(f.read_bytes()), f"{key} is not byte-identical to {f}"

        completions: Counter[str] = Counter()
        for held_before, sent in runs:
            puts = {object_path(bucket, s) for s in sent if s.method == "PUT" and not s.query}
            assert not puts & held_before, f"objects already complete were sent again: {sorted(puts & held_before)}"
        # Completions the store carried out (a kill can cut one off before its body reached the proxy: then the
        # store never saw it, and the rerun must complete the upload itself).
        completions.update(object_path(bucket, s) for i, s in enumerate(proxy.seen)
                           if s.method == "POST" and "uploadId" in s.query and proxy.answered.get(i) == 200)
        assert set(completions) <= big and max(completions.values()) == 1, "a multipart upload completed twice"
        final = runs[-1][1]
        for key, held in held_parts.items():
            resent = {s.part_number for s in final if object_path(bucket, s) == key and s.part_number} & held
            assert not resent, f"{key}: parts the server held were sent again: {sorted(resent)}"

        # A rerun of the finished tree: the journal and a stat of each file, not one request.
        start = len(proxy.seen)
        r = run([*args, "--json"], env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.splitlines()[-1])["alreadyComplete"] == 301
        assert proxy.seen[start:] == [], f"the rerun of a finished tree sent {len(proxy.seen) - start} requests"
    finally:
        proxy.close()


def test_batch_exit_code_is_the_most_urgent_failure(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    ok = write_random(tmp_path / "ok.bin", 1000, seed=1)
    refused = write_random(tmp_path / "refused.bin", 1000, seed=2)
    missing = tmp_path / "missing.bin"
    env = aws_env | {"XDG_STATE_HOME": str(tmp_path / "state")}
    proxy = S3Proxy(s3_server.endpoint,
                    rule=lambda s, i: Fault(403, "AccessDenied") if s.path.endswith("/refused.bin") else None)
    try:
        r = run(["upload", str(ok), str(refused), str(missing), f"s3://{bucket}/x/", "--json",
                 "--endpoint-url", proxy.endpoint], env)
        assert r.returncode == 5, r.stderr
        events = [json.loads(line) for line in r.stdout.splitlines()]
        by_key = {e["key"]: e for e in events if e["event"] == "file_done"}
        assert by_key["x/ok.bin"]["status"] == "completed"
        assert by_key["x/refused.bin"]["exitCode"] == 5 and by_key["x/missing.bin"]["exitCode"] == 2
        assert str(missing) in by_key["x/missing.bin"]["error"]
        assert events[-1]["event"] == "summary" and events[-1]["exitCode"] == 5 and events[-1]["failed"] == 2
        assert "s3://" + bucket + "/x/refused.bin" in r.stderr and f"{missing} does not exist" in r.stderr
        got = s3_server.client().get_object(Bucket=bucket, Key="x/ok.bin")["Body"].read()
        assert got == ok.read_bytes()

        r = run(["upload", str(ok), str(missing), f"s3://{bucket}/x/", "--endpoint-url", proxy.endpoint], env)
        assert r.returncode == 2, r.stderr
        assert "Already complete" in r.stderr, "the file done before is skipped by its state"
    finally:
        proxy.close()


def test_urgency_order() -> None:
    assert most_urgent([]) == ExitCode.OK
    assert most_urgent([ExitCode.INTERRUPTED, ExitCode.TEMPORARY]) == ExitCode.TEMPORARY
    assert most_urgent([ExitCode.TEMPORARY, ExitCode.USAGE, ExitCode.REFUSED]) == ExitCode.REFUSED
    assert most_urgent([ExitCode.REFUSED, ExitCode.CONFLICT, ExitCode.BUG]) == ExitCode.BUG


def test_status_list_and_clean_of_the_state_folder(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    small = write_random(tmp_path / "small.bin", 2000, seed=1)
    big = write_random(tmp_path / "big.bin", 12 * MiB, seed=2)
    state = tmp_path / "state"
    common = ["--state-dir", str(state)]
    # Part 2 of big.bin refused: its upload stays in progress, with part 1 (and maybe 3) logged.
    proxy = S3Proxy(s3_server.endpoint,
                    rule=lambda s, i: Fault(403, "AccessDenied") if s.part_number == 2 else None)
    try:
        r = run(["upload", str(small), f"s3://{bucket}/small.bin", *common, "--endpoint-url", proxy.endpoint],
                aws_env)
        assert r.returncode == 0, r.stderr
        r = run(["upload", str(big), f"s3://{bucket}/big.bin", "-s", "5M", "-t", "1", *common,
                 "--endpoint-url", proxy.endpoint], aws_env)
        assert r.returncode == 5, r.stderr
    finally:
        proxy.close()
    root = state  # --state-dir is the folder itself
    assert len(list(root.iterdir())) == 2

    r = run(["status", *common], aws_env)
    assert r.returncode == 0, r.stderr
    assert "in progress" in r.stdout and "completed" in r.stdout and f"s3://{bucket}/big.bin" in r.stdout
    assert "2 uploads in" in r.stdout
    r = run(["list", "--json", *common], aws_env)
    assert r.returncode == 0, r.stderr
    listed = {d["key"]: d for d in map(json.loads, r.stdout.splitlines())}
    assert listed["small.bin"]["state"] == "completed" and listed["small.bin"]["bytesDone"] == 2000
    assert listed["big.bin"]["state"] == "in_progress" and listed["big.bin"]["bytesDone"] == 5 * MiB
    upload_id = listed["big.bin"]["uploadId"]

    r = run(["clean", "--older-than", "0s", *common], aws_env)
    assert r.returncode == 2 and "--yes" in r.stderr, "no terminal to confirm on: clean refuses"
    r = run(["clean", "--older-than", "1d", "--yes", *common], aws_env)
    assert r.returncode == 0 and "Nothing" in r.stdout
    assert len(list(root.iterdir())) == 2

    clean = ["clean", "--older-than", "0s", "--yes", *common, "--endpoint-url", s3_server.endpoint]
    big_folder = Path(listed["big.bin"]["folder"])
    with meta_lock(big_folder / "meta.json"):  # as a running upload holds it
        r = run(clean, aws_env)
    assert r.returncode == 3, r.stderr
    assert "Removed: s3://" in r.stdout and f"Kept s3://{bucket}/big.bin" in r.stderr
    assert list(root.iterdir()) == [big_folder]

    r = run(clean, aws_env)
    assert r.returncode == 0, r.stderr
    assert "Aborted and removed" in r.stdout
    assert list(root.iterdir()) == []
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert upload_id not in {u["UploadId"] for u in uploads}, "the abandoned upload was aborted on the server"
    assert s3_server.client().head_object(Bucket=bucket, Key="small.bin")["ContentLength"] == 2000
