"""--shard I/N: one upload driven by many processes, as the tasks of an array job run it.

Separate processes stand in for machines: each runs in a working folder of its own, and the
state files (META, the logs) and the data sit in one shared folder, as on a cluster's shared
file system. A counting proxy in front of rclone sees every request.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.main import cli
from s3_multipart_upload.plan import MiB
from s3_multipart_upload.shard import Shard, from_environment, parse, read_claim, release, try_claim
from tests.conftest import S3Server, run_cli, upload_args, write_random
from tests.s3proxy import Fault, S3Proxy, Seen
from tests.service_fixtures import StartService

PART = 5 * MiB


# -- which shard: pure ------------------------------------------------------------------------------------


def test_round_robin_gives_every_part_to_exactly_one_shard() -> None:
    for count in (1, 2, 3, 7, 16):
        owners = [[i for i in range(count) if Shard(i, count).owns(n)] for n in range(1, 200)]
        assert all(len(o) == 1 for o in owners)
    assert [n for n in range(1, 13) if Shard(1, 4).owns(n)] == [2, 6, 10]


@pytest.mark.parametrize(("env", "shards", "expected"), [
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "15",
      "SLURM_ARRAY_TASK_COUNT": "16"}, None, (5, 16)),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "16",  # --array=1-16%4
      "SLURM_ARRAY_TASK_COUNT": "16"}, None, (0, 16)),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",  # --array=1-7:2
      "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_STEP": "2"}, None, (3, 4)),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",  # --array=1,3,5,7
      "SLURM_ARRAY_TASK_COUNT": "4"}, None, (2, 4)),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "7",  # resubmitted 3,7
      "SLURM_ARRAY_TASK_COUNT": "2"}, 16, (7, 16)),
    ({"AWS_BATCH_JOB_ARRAY_INDEX": "3", "AWS_BATCH_JOB_ARRAY_SIZE": "10"}, None, (3, 10)),
    ({"AWS_BATCH_JOB_ARRAY_INDEX": "3"}, 10, (3, 10)),
    ({"JOB_COMPLETION_INDEX": "0"}, 4, (0, 4)),
])
def test_shard_auto_reads_the_scheduler(env: dict[str, str], shards: int | None, expected: tuple[int, int]) -> None:
    shard = from_environment(env, shards)
    assert (shard.index, shard.count) == expected
    assert "auto" in shard.origin


@pytest.mark.parametrize(("env", "shards", "says"), [
    ({}, None, "no array task variable"),
    ({"JOB_COMPLETION_INDEX": "2"}, None, "Kubernetes gives no count"),
    ({"JOB_COMPLETION_INDEX": "4"}, 4, "counted from 0 to 3"),
    ({"AWS_BATCH_JOB_ARRAY_INDEX": "1"}, None, "not AWS_BATCH_JOB_ARRAY_SIZE"),
    ({"AWS_BATCH_JOB_ARRAY_INDEX": "1", "AWS_BATCH_JOB_ARRAY_SIZE": "8"}, 4, "--shards says 4"),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "9",  # --array=1,2,4,9
      "SLURM_ARRAY_TASK_COUNT": "4"}, None, "not evenly spaced"),
    ({"SLURM_ARRAY_TASK_ID": "x"}, None, "is not a number"),
    ({"SLURM_ARRAY_TASK_ID": "3"}, None, "not SLURM_ARRAY_TASK_MIN"),
])
def test_shard_auto_refuses_what_it_cannot_tell(env: dict[str, str], shards: int | None, says: str) -> None:
    with pytest.raises(BadInput, match=says):
        from_environment(env, shards)


@pytest.mark.parametrize(("spec", "shards", "says"), [
    ("4/4", None, "counted from 0 to 3"), ("0/0", None, "between 1 and 10,000"), ("1/10001", None, "10,000"),
    ("3", None, "lacks the number of shards"), ("a/b", None, "not I/N, auto or all"), ("-1/4", None, "not I/N"),
    ("auto/4", None, "takes the count from the scheduler"), ("1/4", 4, "goes with --shard auto only"),
    (None, 4, "goes with --shard auto"),
])
def test_bad_shard_specs(spec: str | None, shards: int | None, says: str) -> None:
    with pytest.raises(BadInput, match=says):
        parse(spec, shards, {})


def test_shard_all_is_the_whole_upload() -> None:
    assert parse("all", None, {}) is None and parse("all/8", None, {}) is None and parse(None, None, {}) is None
    assert parse(" 2 / 8 ", None, {}) == Shard(2, 8)


def test_a_claim_with_this_process_id_is_a_previous_process_s(tmp_path: Path) -> None:
    """A retried Kubernetes pod has its predecessor's hostname and, as the container's command, its pid (1): the
    claim that predecessor left must be taken over, not waited on as if it were alive. A live process's claim on
    this host, and any claim from another host, stay."""
    path = tmp_path / "META.create-claim"
    for holder, taken in (({"host": socket.gethostname(), "pid": os.getpid()}, True),
                          ({"host": socket.gethostname(), "pid": os.getppid()}, False),
                          ({"host": "another-node", "pid": os.getpid()}, False)):
        path.write_text(json.dumps({**holder, "at": "2026-01-01T00:00:00Z", "shard": "3/16"}) + "\n")
        claim = try_claim(path, Shard(3, 16))
        assert (claim is not None) is taken, holder
        assert json.loads(path.read_text())["at"] != "2026-01-01T00:00:00Z" if taken else \
            json.loads(path.read_text()) == {**holder, "at": "2026-01-01T00:00:00Z", "shard": "3/16"}
        path.unlink()


def test_a_claim_taken_over_is_not_removed_by_its_former_holder(tmp_path: Path) -> None:
    path = tmp_path / "META.complete-claim"
    old = try_claim(path, Shard(3, 16))
    assert old is not None
    path.write_text(json.dumps({**old.holder, "pid": os.getppid()}) + "\n")  # another process took it over
    release(old)
    assert json.loads(path.read_text())["pid"] == os.getppid()
    mine = read_claim(path)
    assert mine is not None
    release(mine)
    assert not path.exists()


def test_bad_shard_on_the_command_line_exits_2(tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 1024)
    base = ["upload", "-b", "b", "-k", "k", "-f", str(f), "-m", str(tmp_path / "m.json"), "-a", str(tmp_path / "p")]
    runner = CliRunner()
    for extra, says in ((["--shard", "4/4"], "shards are counted from 0 to 3"),
                        (["--shard", "auto"], "no array task variable"),
                        (["--shard", "1/4", "--restart"], "--restart cannot go with --shard"),
                        (["--shard", "1/4", "--upload-id", "x"], "--upload-id cannot go with --shard")):
        r = runner.invoke(cli, base + extra, env={"SLURM_ARRAY_TASK_ID": "", "AWS_BATCH_JOB_ARRAY_INDEX": "",
                                                  "JOB_COMPLETION_INDEX": ""})
        assert r.exit_code == 2, (extra, r.output)
        assert says in r.output


def test_dry_run_shows_the_shard_from_slurm(tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 6 * PART + 100)
    env = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "3",
           "SLURM_ARRAY_TASK_COUNT": "3"}
    r = CliRunner().invoke(cli, ["upload", "-b", "b", "-k", "k", "-f", str(f), "-m", str(tmp_path / "m.json"),
                                 "-a", str(tmp_path / "p"), "-s", "5M", "--shard", "auto", "--dry-run", "--json"],
                           env=env)
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert (plan["shard"], plan["shardParts"], plan["parts"]) == ("1/3", 2, 7)  # parts 2 and 5
    assert plan["requests"]["UploadPart"] == 2 and plan["bytesToSend"] == 2 * PART


# -- many processes, one upload (rclone behind a counting proxy) -------------------------------------------


def _machine(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / f"machine{n}"
    folder.mkdir(exist_ok=True)
    return folder


def _start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    return subprocess.Popen([sys.executable, "-m", "s3_multipart_upload", *args], env=full_env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _creates(proxy: S3Proxy) -> int:
    return sum(1 for s in proxy.seen if s.method == "POST" and "uploads" in s.query)


def _completes(proxy: S3Proxy) -> int:
    return sum(1 for s in proxy.seen if s.method == "POST" and "uploadId" in s.query)


def _object(server: S3Server, bucket: str, key: str) -> bytes:
    return bytes(server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    folder = tmp_path / "shared"
    folder.mkdir()
    return folder


@pytest.mark.integration
def test_four_shards_started_together_make_one_upload(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                       tmp_path: Path, shared: Path) -> None:
    f = write_random(shared / "f.bin", 64 * MiB, seed=14)
    proxy = S3Proxy(s3_server.endpoint)
    try:
        args = upload_args(bucket, "sharded/f.bin", f, shared / "f.meta.json", shared / "f.parts.jsonl",
                           "-s", "5M", "-t", "2", "--json", endpoint=proxy.endpoint)
        procs = [_start([*args, "--shard", f"{i}/4"], aws_env, _machine(tmp_path, i)) for i in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (_out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
        summaries = [json.loads(out.splitlines()[-1]) for out, _ in outs]
        assert _creates(proxy) == 1, "the shards must share one multipart upload"
        assert _completes(proxy) == 1, "exactly one shard completes it"
        assert sorted(proxy.part_puts()) == list(range(1, 14)) and set(proxy.part_puts().values()) == {1}
        assert sorted(s["status"] for s in summaries).count("completed") == 1
        for i, s in enumerate(summaries):
            assert s["shard"] == f"{i}/4"
            assert s["partsSent"] == len(range(i + 1, 14, 4))
        assert _object(s3_server, bucket, "sharded/f.bin") == f.read_bytes()
        meta = json.loads((shared / "f.meta.json").read_text())
        assert meta["status"] == "completed" and meta["shards"] == 4
        assert sorted(p.name for p in shared.glob("f.parts.jsonl.shard-*") if not p.name.endswith(".lock")) == \
            [f"f.parts.jsonl.shard-{i}" for i in range(4)]
        assert not list(shared.glob("*claim")), "no claim is left behind"
        # A task started again after the end (a retried array task) finds the upload complete.
        proxy.reset()
        r = run_cli([*args, "--shard", "2/4"], aws_env, cwd=_machine(tmp_path, 2))
        assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["status"] == "already_complete"
        assert proxy.seen == []
    finally:
        proxy.close()


@pytest.mark.integration
def test_throttled_array_one_after_another_then_a_finisher(s3_server: S3Server, bucket: str,
                                                           aws_env: dict[str, str], tmp_path: Path,
                                                           shared: Path) -> None:
    """--array=0-3%1 runs the tasks one at a time; here task 2 never runs (cancelled), and a run without --shard
    (the finisher, an afterany job) sends only its parts."""
    f = write_random(shared / "f.bin", 6 * PART + 777, seed=15)  # 7 parts
    meta, parts = shared / "m.json", shared / "p.jsonl"
    proxy = S3Proxy(s3_server.endpoint)
    try:
        args = upload_args(bucket, "k", f, meta, parts, "-s", "5M", endpoint=proxy.endpoint)
        for i in (0, 1, 3):
            r = run_cli([*args, "--shard", f"{i}/4"], aws_env, cwd=_machine(tmp_path, i))
            assert r.returncode == 0, r.stderr
            assert "parts left to other shards" in r.stderr
        assert _completes(proxy) == 0
        status = run_cli(["status", "-m", str(meta), "-a", str(parts), "--json", "--endpoint-url", proxy.endpoint],
                         aws_env)
        st = json.loads(status.stdout)
        assert (st["parts_done"], st["shards"], len(st["shard_logs"])) == (5, 4, 3), status.stdout
        assert st["server_parts"] == 5
        proxy.reset()
        r = run_cli(args, aws_env, cwd=_machine(tmp_path, 9))
        assert r.returncode == 0, r.stderr
        assert sorted(proxy.part_puts()) == [3, 7], "the finisher sends only the parts no shard sent"
        assert _completes(proxy) == 1
        assert _object(s3_server, bucket, "k") == f.read_bytes()
    finally:
        proxy.close()


@pytest.mark.integration
def test_last_of_sequential_shards_completes(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                             tmp_path: Path, shared: Path) -> None:
    f = write_random(shared / "f.bin", 3 * PART, seed=16)
    proxy = S3Proxy(s3_server.endpoint)
    try:
        args = upload_args(bucket, "k", f, shared / "m.json", shared / "p.jsonl", "-s", "5M",
                           endpoint=proxy.endpoint)
        for i in (2, 0, 1):
            r = run_cli([*args, "--shard", f"{i}/3"], aws_env, cwd=_machine(tmp_path, i))
            assert r.returncode == 0, r.stderr
        assert "completing the upload" in r.stderr and _completes(proxy) == 1 and _creates(proxy) == 1
        assert _object(s3_server, bucket, "k") == f.read_bytes()
    finally:
        proxy.close()


@pytest.mark.integration
def test_killed_shard_rerun_sends_only_its_missing_parts(s3_server: S3Server, bucket: str,
                                                         aws_env: dict[str, str], tmp_path: Path,
                                                         shared: Path) -> None:
    f = write_random(shared / "f.bin", 24 * PART, seed=17)  # 24 parts: 12 a shard
    meta, parts = shared / "m.json", shared / "p.jsonl"
    proxy = S3Proxy(s3_server.endpoint, delay=0.1)
    try:
        args = upload_args(bucket, "k", f, meta, parts, "-s", "5M", "-t", "2", endpoint=proxy.endpoint)
        mine = parts.with_name("p.jsonl.shard-1")
        victim = _start([*args, "--shard", "1/2"], aws_env, _machine(tmp_path, 1))
        deadline = time.monotonic() + 60
        while victim.poll() is None and time.monotonic() < deadline:
            if mine.exists() and len(mine.read_text().splitlines()) >= 4:
                break
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL, "shard 1 finished before it could be killed"
        before = {json.loads(line)["partNumber"] for line in mine.read_text().splitlines() if line.endswith("}")}
        assert before and all(n % 2 == 0 for n in before)

        r = run_cli([*args, "--shard", "0/2"], aws_env, cwd=_machine(tmp_path, 0))
        assert r.returncode == 0, r.stderr
        assert "parts left to other shards" in r.stderr
        proxy.wait_idle()
        proxy.reset()
        r = run_cli([*args, "--shard", "1/2"], aws_env, cwd=_machine(tmp_path, 1))
        assert r.returncode == 0, r.stderr
        sent = proxy.part_puts()
        assert not set(sent) & before, "parts in the killed shard's log were sent again"
        assert all(n % 2 == 0 for n in sent), "the rerun shard sends only its own parts"
        assert _completes(proxy) == 1
        assert _object(s3_server, bucket, "k") == f.read_bytes()
    finally:
        proxy.close()


@pytest.mark.integration
def test_the_shard_that_created_the_upload_completes_it_from_the_other_logs(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path, shared: Path) -> None:
    """The creator finishes last (the proxy holds its part until shard 1 has ended): it completes with shard 1's
    logged part as it is, without reading that part of the file again to prove it (at 20 TB, hours of reading)."""
    f = write_random(shared / "f.bin", 2 * PART, seed=19)
    meta, parts = shared / "m.json", shared / "p.jsonl"
    go = threading.Event()

    def hold_part_1(seen: Seen, index: int) -> Fault | None:
        if seen.part_number == 1:
            go.wait(timeout=60)
        return None

    proxy = S3Proxy(s3_server.endpoint, rule=hold_part_1)
    try:
        args = upload_args(bucket, "k", f, meta, parts, "-s", "5M", endpoint=proxy.endpoint)
        creator = _start([*args, "--shard", "0/2"], aws_env, _machine(tmp_path, 0))
        for _ in range(400):
            if meta.exists() or creator.poll() is not None:
                break
            time.sleep(0.05)
        assert meta.exists(), creator.communicate()[1]
        r = run_cli([*args, "--shard", "1/2"], aws_env, cwd=_machine(tmp_path, 1))
        assert r.returncode == 0 and "1 parts left to other shards" in r.stderr, r.stderr
        go.set()
        _out, err = creator.communicate(timeout=60)
        assert creator.returncode == 0, err
        assert _creates(proxy) == 1 and _completes(proxy) == 1
        assert "Adopted" not in err, err
        assert [json.loads(line)["partNumber"] for line in (shared / "p.jsonl.shard-0").read_text().splitlines()] \
            == [1], "the creator's log holds its own part only"
        assert _object(s3_server, bucket, "k") == f.read_bytes()
    finally:
        go.set()
        proxy.close()


@pytest.mark.integration
def test_two_shards_finishing_together_complete_once(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                     tmp_path: Path, shared: Path) -> None:
    """Both shards list the parts at the same moment after sending theirs (the proxy holds the four part uploads
    until all have arrived, then each ListParts until the other's arrives), both find every part held, both go for
    the completion: one claims it, the other says so and exits 0. (The shard that creates the upload lists no parts
    before sending: only the listings after the parts are paired.)"""
    f = write_random(shared / "f.bin", 4 * PART, seed=18)
    parts_sent = threading.Barrier(4, timeout=30)
    after_parts = threading.Event()
    barrier = threading.Barrier(2, timeout=30)

    def pair_list_parts(seen: Seen, index: int) -> Fault | None:
        if seen.part_number is not None:
            parts_sent.wait()
            after_parts.set()
        elif seen.method == "GET" and "uploadId" in seen.query and after_parts.is_set():
            barrier.wait()
        return None

    proxy = S3Proxy(s3_server.endpoint, rule=pair_list_parts)
    try:
        args = upload_args(bucket, "k", f, shared / "m.json", shared / "p.jsonl", "-s", "5M",
                           endpoint=proxy.endpoint)
        procs = [_start([*args, "--shard", f"{i}/2"], aws_env, _machine(tmp_path, i)) for i in range(2)]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errs
        assert _completes(proxy) == 1 and _creates(proxy) == 1
        assert sum("is completing the upload" in e for e in errs) == 1, errs
        assert _object(s3_server, bucket, "k") == f.read_bytes()
    finally:
        proxy.close()


@pytest.mark.integration
def test_a_change_one_shard_sees_stops_every_shard(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                   tmp_path: Path, shared: Path) -> None:
    """The file is rewritten in place with its old size and mtime put back (what a stale NFS attribute cache
    shows another node): only the shard that saw the change can tell, and it stops the others."""
    f = write_random(shared / "f.bin", 4 * PART, seed=19)
    meta, parts = shared / "m.json", shared / "p.jsonl"
    args = upload_args(bucket, "k", f, meta, parts, "-s", "5M", endpoint=s3_server.endpoint)
    r = run_cli([*args, "--shard", "0/2"], aws_env, cwd=_machine(tmp_path, 0))
    assert r.returncode == 0, r.stderr
    then = f.stat()
    with open(f, "r+b") as out:
        out.write(b"changed")
    r = run_cli([*args, "--shard", "1/2"], aws_env, cwd=_machine(tmp_path, 1))
    assert r.returncode == 3 and "changed since the upload began" in r.stderr, r.stderr
    os.utime(f, ns=(then.st_atime_ns, then.st_mtime_ns))
    r = run_cli([*args, "--shard", "1/2"], aws_env, cwd=_machine(tmp_path, 1))
    assert r.returncode == 3, r.stderr
    assert "no shard completes it" in r.stderr
    r = run_cli(args, aws_env)  # nor does the finisher
    assert r.returncode == 3 and "no shard completes it" in r.stderr, r.stderr
    heads = s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    assert heads == [], "no object of mixed data"


@pytest.mark.integration
def test_shards_through_the_controller(start_service: StartService, s3_server: S3Server, tmp_path: Path,
                                       shared: Path) -> None:
    """Three clients with the same file id and token, no AWS credentials, each a shard of the one upload the
    controller hands out."""
    proxy = S3Proxy(s3_server.endpoint)
    try:
        svc = start_service(f"sqlite:///{tmp_path / 'controller.sqlite3'}", "--part-size", "5M",
                            endpoint=proxy.endpoint)
        f = write_random(shared / "f.bin", 7 * PART + 99, seed=20)
        args = ["upload", "--controller", svc.base_url, "--file-id", "sharded-1", "--token-file",
                str(svc.token_file()), "-f", str(f), "-m", str(shared / "m.json"), "-a", str(shared / "p.jsonl")]
        env = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
               "AWS_EC2_METADATA_DISABLED": "true"}
        procs = [_start([*args, "--shard", f"{i}/3"], env, _machine(tmp_path, i)) for i in range(3)]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], errs
        assert _creates(proxy) == 1 and _completes(proxy) == 1
        assert sorted(proxy.part_puts()) == list(range(1, 9)) and set(proxy.part_puts().values()) == {1}
        # The shards took up a fresh upload: the completing one trusts the others' logs, it reads none of their parts.
        assert not any("Adopted" in e for e in errs), errs
        assert json.loads((shared / "m.json").read_text())["shards"] == 3
        assert bytes(svc.s3_client().get_object(Bucket=svc.bucket, Key="files/sharded-1")["Body"].read()) == \
            f.read_bytes()
    finally:
        proxy.close()


@pytest.mark.integration
def test_copy_in_shards(s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path,
                        shared: Path) -> None:
    data = write_random(tmp_path / "src.bin", 3 * PART + 5, seed=21).read_bytes()
    s3_server.client().put_object(Bucket=bucket, Key="src", Body=data)
    proxy = S3Proxy(s3_server.endpoint)
    try:
        args = ["copy", "--source", f"s3://{bucket}/src", "--through-client", "-b", bucket, "-k", "dst", "-s", "5M",
                "-m", str(shared / "m.json"), "-a", str(shared / "p.jsonl"), "--endpoint-url", proxy.endpoint]
        for i in (1, 0):
            r = run_cli([*args, "--shard", f"{i}/2"], aws_env, cwd=_machine(tmp_path, i))
            assert r.returncode == 0, r.stderr
        copies = sorted(int(s.query["partNumber"]) for s in proxy.seen if s.part_number is not None)
        assert copies == [1, 2, 3, 4] and _creates(proxy) == 1 and _completes(proxy) == 1
        assert _object(s3_server, bucket, "dst") == data
    finally:
        proxy.close()


def test_shards_need_state_they_share(tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 1024)
    r = CliRunner().invoke(cli, ["upload", str(f), "s3://b/k", "--shard", "0/2"])
    assert r.exit_code == 2 and "--shard needs state that every task of the array shares" in r.output, r.output


def test_a_create_claim_left_long_ago_is_taken_over(tmp_path: Path) -> None:
    """A task requeued onto another node, or killed between creating the claim and writing it, leaves a claim no
    live process holds: once older than a create can take, the next task takes it over."""
    from s3_multipart_upload.shard import try_claim

    path = tmp_path / "m.json.create-claim"
    path.write_text(json.dumps({"host": "another-node", "pid": 4242}) + "\n")
    assert try_claim(path, Shard(1, 2), stale_after=600) is None, "a fresh claim of another host is left alone"
    old = time.time() - 601
    os.utime(path, (old, old))
    claim = try_claim(path, Shard(1, 2), stale_after=600)
    assert claim is not None and json.loads(path.read_text())["pid"] == os.getpid()
    path.write_text("")  # killed before it wrote who it is
    os.utime(path, (old, old))
    assert try_claim(path, Shard(0, 2), stale_after=600) is not None
