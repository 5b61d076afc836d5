"""Uploads from a stream: stdin, a FIFO, /dev/fd/N. Real bytes through a real pipe to rclone serve s3; resumed by
content after SIGKILL (no part the store holds is sent again) and after a failure with a changed producer (only the
part that differs is sent again)."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import os
import pty
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import s3_multipart_upload as api
from s3_multipart_upload.held import StreamSource
from s3_multipart_upload.job import UploadRequest
from s3_multipart_upload.pipe import StreamUploader
from s3_multipart_upload.plan import MAX_OBJECT_SIZE, MAX_PART_SIZE, MIN_PART_SIZE, GiB, MiB, Part, TiB, schedule_for
from s3_multipart_upload.s3 import ClientFactory, Endpoint
from s3_multipart_upload.state import Meta, PartRecord, PartsLog, read_parts
from tests.conftest import S3Server, run_cli, write_random
from tests.s3proxy import Fault, S3Proxy

CLI = [sys.executable, "-m", "s3_multipart_upload"]


def object_bytes(server: S3Server, bucket: str, key: str) -> bytes:
    return bytes(server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def state(tmp_path: Path) -> list[str]:
    return ["-m", str(tmp_path / "m.json"), "-a", str(tmp_path / "p.jsonl")]


def logged(path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[doc["partNumber"]] = doc["eTag"]
    return out


# -- the schedule, with counted bytes: no big files ------------------------------------------------------------


def parts_for(length: int, split: int | None = None, expected: int | None = None) -> list[int]:
    """The part sizes a stream of ``length`` bytes is cut into (a fake stream: only its count of bytes)."""
    schedule, _ = schedule_for(split, expected)
    sizes: list[int] = []
    left = length
    for number in range(1, schedule.max_parts + 2):  # as the uploader reads: part by part, then one byte past
        if number > schedule.max_parts:
            if left:
                raise OverflowError(f"{length} bytes need more than {schedule.max_parts} parts")
            return sizes
        size = schedule.size(number)
        if number > 1 and left == 0:
            return sizes  # the stream ended with the last part
        sizes.append(min(size, left))
        left -= sizes[-1]
        if sizes[-1] < size:
            return sizes
    raise AssertionError("unreachable")


@pytest.mark.parametrize("length", [0, 1, 5 * MiB, 10 * GiB + 7, TiB, 40 * TiB, 47 * TiB])
def test_the_schedule_fits_any_stream_up_to_47_tib_in_10000_valid_parts(length: int) -> None:
    sizes = parts_for(length)
    assert sum(sizes) == length and len(sizes) <= 10_000
    assert all(MIN_PART_SIZE <= s <= MAX_PART_SIZE for s in sizes[:-1]), "a part other than the last out of limits"
    assert sizes == sorted(sizes[:-1]) + sizes[-1:] or len(sizes) == 1


def test_the_schedule_says_where_it_ends_and_stops_past_it() -> None:
    schedule, why = schedule_for(None, None)
    assert schedule.capacity() > 0.96 * MAX_OBJECT_SIZE and "growing" in why
    assert parts_for(schedule.capacity())[-1] == MAX_PART_SIZE
    with pytest.raises(OverflowError):
        parts_for(schedule.capacity() + 1)
    # the first parts stay at the split size; a 1 GiB stream needs no part above it
    assert set(parts_for(GiB - 1)[:-1]) == {32 * MiB}


def test_expected_size_sizes_parts_as_for_a_file_and_leaves_room_for_more() -> None:
    three = 3 * TiB
    sizes = parts_for(three, expected=three)
    assert len(set(sizes[:-1])) == 1 and len(sizes) <= 9_000
    assert parts_for(2 * three, expected=three)  # twice as long as said still fits
    for said in (300 * GiB, 40 * TiB):  # 10 % longer than said fits wherever the estimate is
        assert parts_for(said + said // 10, expected=said)
    assert len(parts_for(48 * TiB, expected=48 * TiB)) <= 10_000


def test_a_stream_read_in_short_reads_is_cut_exactly(tmp_path: Path) -> None:
    data = random.Random(5).randbytes(12 * MiB + 3)

    class Dribble(io.RawIOBase):
        """A producer whose reads return a few KiB at a time, as a pipe does."""

        def __init__(self) -> None:
            self.at, self.draw = 0, random.Random(6)

        def readable(self) -> bool:
            return True

        def readinto(self, view: memoryview) -> int:  # type: ignore[override]
            n = min(len(view), self.draw.randint(1, 70_000), len(data) - self.at)
            view[:n] = data[self.at:self.at + n]
            self.at += n
            return n

    source = StreamSource(Dribble(), spool_dir=tmp_path)
    source.open()
    got = []
    for number, (size, spool) in enumerate([(5 * MiB, False), (5 * MiB, True), (5 * MiB, False)], 1):
        part = source.read_part(number, size, spool)
        got.append(source.read(part))
        source.release(number)
    assert b"".join(got) == data and source.ended and source.memory == 0
    assert not list(tmp_path.iterdir()), "a spool file was left behind"


# -- the command line, through a real pipe ---------------------------------------------------------------------


def pipe_upload(args: list[str], env: dict[str, str], producer: str,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``PRODUCER | s3-multipart-upload ARGS`` in a shell, as a user types it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    command = f"{producer} | {' '.join(CLI)} {' '.join(args)}"
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], env=full_env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.e2e
@pytest.mark.parametrize("size", [0, 1, 5 * MiB - 1, 5 * MiB, 64 * MiB + 7])
def test_cat_file_into_upload_dash_is_the_file(size: int, s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                               tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", size, seed=size % 1000)
    r = pipe_upload(["upload", "-", f"s3://{bucket}/s/f.bin", "--endpoint-url", s3_server.endpoint, "-s", "5M",
                     "--state-dir", str(tmp_path / "state")], aws_env, f"cat {f}")
    assert r.returncode == 0, r.stderr
    assert object_bytes(s3_server, bucket, "s/f.bin") == f.read_bytes()
    assert "Done:" in r.stderr


@pytest.mark.e2e
def test_a_stream_that_grows_past_its_first_parts(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 64 * MiB + 7, seed=3)
    # --max-parts 200: the parts double every part (5, 10, 20, 40 MiB); the 40 MiB part goes to a spool file
    args = ["upload", "-", f"s3://{bucket}/grow.bin", "--endpoint-url", s3_server.endpoint, "-s", "5M",
            "--max-parts", "200", "--max-memory", "64M", "--spool-dir", str(tmp_path), *state(tmp_path)]
    r = pipe_upload(args, aws_env, f"cat {f}")
    assert r.returncode == 0, r.stderr
    assert object_bytes(s3_server, bucket, "grow.bin") == f.read_bytes()
    sizes = [json.loads(line)["size"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert sizes == [5 * MiB, 10 * MiB, 20 * MiB, 64 * MiB + 7 - 35 * MiB]
    assert "spool files" in r.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("s3mu-part-")]


@pytest.mark.e2e
def test_sigkilled_then_rerun_with_the_same_producer_sends_no_part_twice(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 12 * 5 * MiB + 99, seed=11)
    proxy = S3Proxy(s3_server.endpoint, delay=0.15)
    try:
        args = ["upload", "-f", "-", "-b", bucket, "-k", "k.bin", "-s", "5M", "-t", "2",
                "--endpoint-url", proxy.endpoint, *state(tmp_path)]
        with open(f, "rb") as stdin:
            code = _kill_with_stdin(args, aws_env, stdin, tmp_path)
        assert code == -signal.SIGKILL
        proxy.wait_idle()
        upload_id = json.loads((tmp_path / "m.json").read_text())["uploadId"]
        held = {p["PartNumber"] for p in s3_server.client().list_parts(
            Bucket=bucket, Key="k.bin", UploadId=upload_id).get("Parts", [])}
        before = set(logged(tmp_path / "p.jsonl")) | held
        assert 4 <= len(before) < 13
        proxy.reset()
        r = pipe_upload(args, aws_env, f"cat {f}")
        assert r.returncode == 0, r.stderr
        resent = set(proxy.part_puts()) & before
        assert not resent, f"parts the store held were sent again: {sorted(resent)}"
        assert set(proxy.part_puts()) == set(range(1, 14)) - before
        assert "matched the parts already on the store" in r.stderr
    finally:
        proxy.close()
    assert object_bytes(s3_server, bucket, "k.bin") == f.read_bytes()


def _kill_with_stdin(args: list[str], env: dict[str, str], stdin: object, tmp_path: Path, parts: int = 4) -> int:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    proc = subprocess.Popen([*CLI, *args], env=full_env, stdin=stdin, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # type: ignore[call-overload]
    try:
        for _ in range(6000):  # 60 s
            if proc.poll() is not None or len(logged(tmp_path / "p.jsonl")) >= parts:
                break
            threading.Event().wait(0.01)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=30)


@pytest.mark.e2e
def test_a_rerun_whose_part_3_differs_sends_only_part_3_and_the_rest(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    old = write_random(tmp_path / "old.bin", 9 * 5 * MiB + 5, seed=21)
    new = tmp_path / "new.bin"
    data = bytearray(old.read_bytes())
    data[2 * 5 * MiB + 100] ^= 0xFF  # one byte of part 3
    new.write_bytes(data)
    # the first run stops at part 6: the store fails it, and one try is all it has
    proxy = S3Proxy(s3_server.endpoint, rule=lambda seen, i: Fault(500, "InternalError")
                    if seen.part_number == 6 else None)
    args = ["upload", "-", f"s3://{bucket}/k.bin", "-s", "5M", "-t", "1", "--retries", "1",
            "--endpoint-url", proxy.endpoint, *state(tmp_path)]
    try:
        r = pipe_upload(args, aws_env, f"cat {old}")
        assert r.returncode == 75, r.stderr
        assert set(logged(tmp_path / "p.jsonl")) == {1, 2, 3, 4, 5}
        r = run_cli(["status", *state(tmp_path), "--endpoint-url", s3_server.endpoint, "--json"], aws_env)
        assert r.returncode == 0, r.stderr
        shown = json.loads(r.stdout.splitlines()[-1])
        assert shown["source"] == "a stream (stdin)" and not shown["source_missing"] and shown["parts_done"] == 5, shown
        proxy.rule = None
        proxy.reset()
        r = pipe_upload(args, aws_env, f"cat {new}")
        assert r.returncode == 0, r.stderr
        assert sorted(proxy.part_puts()) == [3, 6, 7, 8, 9, 10]
        assert all(n == 1 for n in proxy.part_puts().values())
    finally:
        proxy.close()
    assert object_bytes(s3_server, bucket, "k.bin") == bytes(data)
    # and a rerun after completion uploads the stream anew (the object is always the last whole stream)
    r = pipe_upload(["upload", "-", f"s3://{bucket}/k.bin", "-s", "5M", "--endpoint-url", s3_server.endpoint,
                     *state(tmp_path)], aws_env, f"cat {old}")
    assert r.returncode == 0, r.stderr
    assert object_bytes(s3_server, bucket, "k.bin") == old.read_bytes()


@pytest.mark.e2e
def test_a_stream_longer_than_the_schedule_stops_before_the_part_past_the_last(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 16 * MiB, seed=4)  # --max-parts 2: 5 + 10 MiB hold 15 MiB
    r = pipe_upload(["upload", "-", f"s3://{bucket}/long.bin", "-s", "5M", "--max-parts", "2", "--endpoint-url",
                     s3_server.endpoint, *state(tmp_path)], aws_env, f"cat {f}")
    assert r.returncode == 2, r.stderr
    assert "the stream is longer than the 15 MiB that 2 parts" in r.stderr and "--expected-size" in r.stderr
    assert "long.bin" not in [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.e2e
def test_a_fifo_and_process_substitution_upload_as_stdin_does(s3_server: S3Server, bucket: str,
                                                              aws_env: dict[str, str], tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 11 * MiB + 1, seed=8)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(f.read_bytes()))
    writer.start()
    r = run_cli(["upload", str(fifo), f"s3://{bucket}/fifo.bin", "-s", "5M", "--endpoint-url", s3_server.endpoint,
                 "--state-dir", str(tmp_path / "state")], aws_env)
    writer.join(timeout=60)
    assert r.returncode == 0, r.stderr
    assert object_bytes(s3_server, bucket, "fifo.bin") == f.read_bytes()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_env
    r = subprocess.run(["bash", "-c", f"{' '.join(CLI)} upload <(cat {f}) s3://{bucket}/fd.bin -s 5M --json "
                        f"--endpoint-url {s3_server.endpoint} --state-dir {tmp_path / 'state'}"],
                       env=full_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert object_bytes(s3_server, bucket, "fd.bin") == f.read_bytes()
    events = [json.loads(line) for line in r.stdout.splitlines()]
    started = next(e for e in events if e["event"] == "started")
    assert started["totalBytes"] is None and started["totalParts"] is None
    assert events[-1]["size"] == events[-1]["bytesSent"] == f.stat().st_size and events[-1]["partsTotal"] == 3


@pytest.mark.parametrize("extra", [["--recursive"], ["other.bin"], ["--shard", "0/2", "--state-dir", "S"],
                                   ["--upload-id", "abc"]], ids=["recursive", "another-file", "shard", "upload-id"])
def test_a_stream_refuses_what_it_cannot_be(extra: list[str], aws_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "other.bin").write_bytes(b"x")
    dest = "s3://b/prefix/" if extra == ["--recursive"] else "s3://b/k"
    args = ["upload", "-", *[e for e in extra if e == "other.bin"], dest,
            *[e for e in extra if e != "other.bin"], "--endpoint-url", "http://127.0.0.1:9"]
    r = run_cli(args, aws_env, input="data", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    said = {"--recursive": "- (stdin) is a stream, uploaded to one key", "other.bin": "- (stdin) is a stream",
            "--shard": "--shard cannot go with a stream", "--upload-id": "--upload-id cannot go with a stream"}
    assert said[extra[0]] in r.stderr, r.stderr


def test_stdin_from_a_terminal_is_refused(aws_env: dict[str, str], tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_env
        r = subprocess.run([*CLI, "upload", "-", "s3://b/k", "--endpoint-url", "http://127.0.0.1:9"],
                           stdin=follower, env=full_env, capture_output=True, text=True, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert r.returncode == 2 and "stdin is a terminal" in r.stderr, r.stderr


@pytest.mark.e2e
def test_a_program_uploads_a_file_object_and_calls_again_after_a_failure(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    data = random.Random(9).randbytes(17 * MiB)
    proxy = S3Proxy(s3_server.endpoint, rule=lambda seen, i: Fault(500, "InternalError")
                    if seen.part_number == 3 else None)
    options = {"split_size": "5M", "endpoint_url": proxy.endpoint, "state_dir": tmp_path, "thread_count": 1,
               "retries": 1}
    try:
        with pytest.raises(api.TemporaryFailure) as failed:
            api.upload(io.BytesIO(data), f"s3://{bucket}/obj.bin", **options)  # type: ignore[arg-type]
        assert failed.value.exit_code == 75
        plan = api.plan_upload("-", f"s3://{bucket}/obj.bin", **options)  # type: ignore[arg-type]
        assert plan["stream"] and plan["status"] == "in_progress" and plan["partsLogged"] == 2
        proxy.rule = None
        proxy.reset()
        events: list[api.ProgressEvent] = []
        result = api.upload(io.BytesIO(data), f"s3://{bucket}/obj.bin", progress=events.append,
                            **options)  # type: ignore[arg-type]
        assert (result.parts_total, result.parts_sent, result.parts_logged, result.size) == (4, 2, 2, len(data))
        assert sorted(proxy.part_puts()) == [3, 4]
        assert events[0].kind == "started" and events[0].bytes_total is None
        assert events[-1].bytes_done == len(data)
    finally:
        proxy.close()
    assert hashlib.md5(object_bytes(s3_server, bucket, "obj.bin")).digest() == hashlib.md5(data).digest()


@pytest.mark.e2e
def test_ctrl_c_lets_the_parts_in_flight_finish_and_a_rerun_completes(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 10 * 5 * MiB, seed=12)
    proxy = S3Proxy(s3_server.endpoint, delay=0.2)
    args = ["upload", "-", f"s3://{bucket}/int.bin", "-s", "5M", "-t", "2", "--endpoint-url", proxy.endpoint,
            *state(tmp_path)]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_env
    try:
        with open(f, "rb") as stdin:
            proc = subprocess.Popen([*CLI, *args], env=full_env, stdin=stdin, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            for _ in range(6000):
                if proc.poll() is not None or len(logged(tmp_path / "p.jsonl")) >= 2:
                    break
                threading.Event().wait(0.01)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "sends only the parts that differ" in err
        done = set(logged(tmp_path / "p.jsonl"))
        proxy.reset()
        r = pipe_upload(args, aws_env, f"cat {f}")
        assert r.returncode == 0, r.stderr
        assert not set(proxy.part_puts()) & done
    finally:
        proxy.close()
    assert object_bytes(s3_server, bucket, "int.bin") == f.read_bytes()


@pytest.mark.e2e
def test_a_stream_that_fails_to_read_completes_nothing_and_keeps_its_parts(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    data = random.Random(13).randbytes(16 * MiB)

    class Broken(io.RawIOBase):
        """A producer whose read fails after 11 MiB (a disk error under `cat`, a dropped network share)."""

        def __init__(self) -> None:
            self.at = 0

        def readable(self) -> bool:
            return True

        def readinto(self, view: memoryview) -> int:  # type: ignore[override]
            if self.at >= 11 * MiB:
                raise OSError(5, "Input/output error")
            n = min(len(view), 11 * MiB - self.at)
            view[:n] = data[self.at:self.at + n]
            self.at += n
            return n

    options = {"split_size": "5M", "endpoint_url": s3_server.endpoint, "state_dir": tmp_path, "thread_count": 2}
    with pytest.raises(api.TemporaryFailure, match=r"cannot read the stream .* at byte 11534336: Input/output error"):
        api.upload(Broken(), f"s3://{bucket}/broken.bin", **options)  # type: ignore[arg-type]
    objects = s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    assert not objects, "a stream that could not be read whole made an object"
    assert threading.active_count() == 1 or all(not t.name.startswith("part") for t in threading.enumerate())
    result = api.upload(io.BytesIO(data), f"s3://{bucket}/broken.bin", **options)  # type: ignore[arg-type]
    assert (result.parts_logged, result.parts_sent) == (2, 2)
    assert object_bytes(s3_server, bucket, "broken.bin") == data


def test_a_named_pipe_with_bad_options_is_refused_before_it_is_opened(aws_env: dict[str, str],
                                                                       tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes to it: opening it would wait for ever
    r = run_cli(["upload", str(fifo), "s3://b/k", "--upload-id", "abc", "--endpoint-url", "http://127.0.0.1:9"],
                aws_env, timeout=60)
    assert r.returncode == 2 and "--upload-id cannot go with a stream" in r.stderr, r.stderr
    r = run_cli(["upload", "-b", "b", "-f", str(fifo), "--endpoint-url", "http://127.0.0.1:9"], aws_env, timeout=60)
    assert r.returncode == 2 and "-k" in r.stderr, r.stderr


# -- the real loop, over a stream of counted bytes (no big data, no store) ----------------------------------------


class Counted(StreamSource):
    """A stream of ``length`` bytes that are only counted: parts are made, never filled (the schedule at scale)."""

    def __init__(self, length: int, spool_dir: Path) -> None:
        super().__init__(io.BytesIO(), spool_dir)
        self.left = length
        self.reads: list[int] = []

    def read_part(self, number: int, size: int, spool: bool) -> Part:  # type: ignore[override]
        got = min(size, self.left)
        self.left -= got
        self.reads.append(number)
        part = Part(number, self.total_size, got)
        self.total_size += got
        self.ended = got < size
        return part

    def more(self) -> bool:
        return self.left > 0


class Sent:
    """The sender's stand-in: records each part (``fail``: the part numbers refused)."""

    etags_not_md5 = False

    def __init__(self, fail: frozenset[int] = frozenset(), wait: float = 0.0) -> None:
        self.fail, self.wait = fail, wait
        self.parts: list[Part] = []
        self.lock = threading.Lock()

    def send_part(self, part: Part, upload_id: str, parts_log: object) -> PartRecord:
        threading.Event().wait(self.wait)
        if part.number in self.fail:
            raise api.ServerRefused(f"part {part.number} refused")
        with self.lock:
            self.parts.append(part)
        return PartRecord("0" * 32, part.number, upload_id, part.length)


def loop(source: StreamSource, tmp_path: Path, sender: Sent, threads: int = 4, max_memory: int = 256 * MiB,
         split: int | None = None, expected: int | None = None) -> BaseException | None:
    """The uploader's own read-and-send loop over ``source`` with ``sender``, for an upload already created."""
    schedule, _ = schedule_for(split, expected)
    req = UploadRequest("b", "k", source, tmp_path / "m.json", tmp_path / "p.jsonl", threads=threads)
    up = StreamUploader(req, ClientFactory(Endpoint("http://127.0.0.1:9"), pool_size=2), max_memory=max_memory)
    up.meta = Meta("b", "k", "upload-1", schedule.first)
    pool = cf.ThreadPoolExecutor(threads)
    failure: BaseException | None = None
    try:
        with PartsLog(tmp_path / "p.jsonl") as parts_log:
            try:
                up._read_and_send(schedule, ({}, {}), sender, parts_log, pool)  # type: ignore[arg-type]
            finally:
                up._drain()
        failure = up._failure
    finally:
        pool.shutdown()
    return failure


@pytest.mark.parametrize("length", [47 * TiB, 10 * GiB + 3])
def test_the_uploader_cuts_a_counted_stream_along_the_schedule(length: int, tmp_path: Path) -> None:
    sender = Sent()
    failure = loop(Counted(length, tmp_path), tmp_path, sender)
    assert failure is None
    sizes = [p.length for p in sorted(sender.parts, key=lambda p: p.number)]
    assert sizes == parts_for(length) and sum(sizes) == length and len(sizes) <= 10_000


def test_the_uploader_stops_before_the_part_past_the_last(tmp_path: Path) -> None:
    capacity = schedule_for(None, None)[0].capacity()
    sender = Sent()
    failure = loop(Counted(capacity + 1, tmp_path), tmp_path, sender)
    assert isinstance(failure, api.BadInput) and "the stream is longer than the 47.3 TiB" in failure.message
    assert len(sender.parts) == 10_000 and max(p.number for p in sender.parts) == 10_000


def test_a_refused_part_stops_the_reading_at_once(tmp_path: Path) -> None:
    source = Counted(40 * 5 * MiB, tmp_path)
    failure = loop(source, tmp_path, Sent(fail=frozenset({2}), wait=0.05), threads=8, split=5 * MiB)
    assert isinstance(failure, api.ServerRefused)
    assert max(source.reads) <= 2 + 8 + 1, f"read on to part {max(source.reads)} after part 2 was refused"


def test_memory_holds_at_most_max_memory_of_parts_and_spools_the_rest(tmp_path: Path) -> None:
    data = random.Random(14).randbytes(60 * MiB)
    source = StreamSource(io.BytesIO(data), tmp_path)
    source.open()
    held: list[tuple[int, int]] = []  # (memory held, parts in flight) as each part is sent

    class Watching(Sent):
        def send_part(self, part: Part, upload_id: str, parts_log: object) -> PartRecord:
            held.append((source.memory, 0))
            assert source.read(part) == data[part.offset:part.offset + part.length]
            return super().send_part(part, upload_id, parts_log)

    # 5 MiB parts and --max-memory 16M: three held at most (never four: 20 MiB); then 10 MiB parts are spooled
    failure = loop(source, tmp_path, Watching(wait=0.02), threads=8, max_memory=16 * MiB, split=5 * MiB)
    assert failure is None
    assert max(memory for memory, _ in held) <= 16 * MiB
    assert max(memory for memory, _ in held) >= 10 * MiB, "the parts were not sent several at once"
    assert source.memory == 0 and not [p for p in tmp_path.iterdir() if p.name.startswith("s3mu-part-")]


def test_without_a_listing_a_part_being_replaced_is_struck_out_of_the_log_first(tmp_path: Path) -> None:
    """A store without ListParts (s3rver): the log is all that says which bytes it holds. Before other bytes are
    sent under a logged part's number, its line is struck out, so that a run killed before the new line is written
    does not take the old one for the store's."""
    data = random.Random(15).randbytes(12 * MiB)
    source = StreamSource(io.BytesIO(data), tmp_path)
    source.open()
    req = UploadRequest("b", "k", source, tmp_path / "m.json", tmp_path / "p.jsonl", threads=1)
    up = StreamUploader(req, ClientFactory(Endpoint("http://127.0.0.1:9"), pool_size=2))
    old = {1: PartRecord("f" * 32, 1, "upload-1", 5 * MiB)}  # the log's part 1, of other bytes
    lines: list[str] = []

    class Killed(Sent):
        def send_part(self, part: Part, upload_id: str, parts_log: object) -> PartRecord:
            lines.extend((tmp_path / "p.jsonl").read_text().splitlines())
            raise KeyboardInterrupt  # killed while sending: the new line is never written

    with PartsLog(tmp_path / "p.jsonl") as parts_log:
        part = source.read_part(1, 5 * MiB, False)
        with pytest.raises(KeyboardInterrupt):
            up._part(part, "upload-1", (None, old), Killed(), parts_log, "MD5")  # type: ignore[arg-type]
    assert json.loads(lines[-1])["eTag"] == "replacing"
    assert read_parts(tmp_path / "p.jsonl", "upload-1")[1].etag == "replacing"


# -- what a rerun, a cap and a small stream look like ---------------------------------------------------------------


@pytest.mark.e2e
def test_a_one_part_stream_reports_one_start_and_records_its_size(s3_server: S3Server, bucket: str,
                                                                   aws_env: dict[str, str], tmp_path: Path) -> None:
    events: list[api.ProgressEvent] = []
    data = b"a small stream\n" * 1000
    result = api.upload(io.BytesIO(data), f"s3://{bucket}/small.txt", endpoint_url=s3_server.endpoint,
                        meta_file_path=tmp_path / "m.json", parts_file_path=tmp_path / "p.jsonl",
                        progress=events.append)
    assert result.parts_total == 1 and object_bytes(s3_server, bucket, "small.txt") == data
    assert [e.kind for e in events] == ["started", "part_done"]
    r = run_cli(["status", *state(tmp_path), "--json"], aws_env)
    shown = json.loads(r.stdout.splitlines()[-1])
    assert shown["state"] == "completed" and shown["bytes_total"] == len(data), shown


@pytest.mark.e2e
def test_after_a_completed_or_aborted_upload_the_next_run_uploads_anew(
        s3_server: S3Server, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    """A stream is read from its start on every run: an upload that is over makes way for a new one, whatever
    properties the new run gives (a nightly dump whose storage class changed is no conflict)."""
    f = write_random(tmp_path / "f.bin", 11 * MiB, seed=16)
    args = ["upload", "-", f"s3://{bucket}/nightly.bin", "-s", "5M", "--endpoint-url", s3_server.endpoint,
            *state(tmp_path)]
    assert pipe_upload(args, aws_env, f"cat {f}").returncode == 0
    r = pipe_upload([*args, "--content-type", "application/x-tar"], aws_env, f"cat {f}")
    assert r.returncode == 0, r.stderr
    assert "this run uploads the stream again" in r.stderr
    head = s3_server.client().head_object(Bucket=bucket, Key="nightly.bin")
    assert head["ContentType"] == "application/x-tar"
    # an upload aborted halfway: the next run starts a new one (no --restart needed)
    proxy = S3Proxy(s3_server.endpoint, rule=lambda seen, i: Fault(500, "InternalError")
                    if seen.part_number == 2 else None)
    try:
        r = pipe_upload([*args[:-6], "--endpoint-url", proxy.endpoint, "--retries", "1", "-t", "1",
                         *state(tmp_path)], aws_env, f"cat {f}")
        assert r.returncode == 75, r.stderr
    finally:
        proxy.close()
    r = run_cli(["abort", *state(tmp_path), "--endpoint-url", s3_server.endpoint], aws_env)
    assert r.returncode == 0, r.stderr
    r = pipe_upload(args, aws_env, f"cat {f}")
    assert r.returncode == 0 and "was aborted; this run uploads the stream anew" in r.stderr, r.stderr
    assert object_bytes(s3_server, bucket, "nightly.bin") == f.read_bytes()


def test_a_spool_folder_that_takes_no_file_is_refused_before_the_stream_is_read(aws_env: dict[str, str],
                                                                                tmp_path: Path) -> None:
    r = run_cli(["upload", "-", "s3://b/k", "--spool-dir", "/proc", "--endpoint-url", "http://127.0.0.1:9",
                 "--state-dir", str(tmp_path)], aws_env, input="x" * 1000)
    assert r.returncode == 2 and "cannot write a spool file in /proc" in r.stderr, r.stderr


@pytest.mark.e2e
def test_spooled_parts_leave_no_file_when_the_run_is_killed(s3_server: S3Server, bucket: str,
                                                            aws_env: dict[str, str], tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    f = write_random(tmp_path / "f.bin", 6 * 10 * MiB, seed=17)
    proxy = S3Proxy(s3_server.endpoint, delay=0.3)
    try:
        args = ["upload", "-", f"s3://{bucket}/spooled.bin", "-s", "10M", "--max-memory", "16M", "--spool-dir",
                str(spool), "-t", "2", "--endpoint-url", proxy.endpoint, *state(tmp_path)]
        with open(f, "rb") as stdin:
            code = _kill_with_stdin(args, aws_env, stdin, tmp_path, parts=2)
        assert code == -signal.SIGKILL
    finally:
        proxy.close()
    assert not list(spool.iterdir()), "a spool file outlived the process"


@pytest.mark.e2e
def test_expected_size_sizes_the_parts_and_gives_the_progress_a_total(s3_server: S3Server, bucket: str,
                                                                      aws_env: dict[str, str],
                                                                      tmp_path: Path) -> None:
    f = write_random(tmp_path / "f.bin", 40 * MiB, seed=18)
    r = pipe_upload(["upload", "-", f"s3://{bucket}/e.bin", "--expected-size", "40M", "--json",
                     "--endpoint-url", s3_server.endpoint, *state(tmp_path)], aws_env, f"cat {f}")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[0]["event"] == "started" and events[0]["totalBytes"] == 40 * MiB
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [line["size"] for line in sorted(lines, key=lambda line: line["partNumber"])] == [32 * MiB, 8 * MiB]
    assert object_bytes(s3_server, bucket, "e.bin") == f.read_bytes()


@pytest.mark.e2e
def test_max_bandwidth_caps_a_stream(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                     tmp_path: Path) -> None:
    """A lower bound only (a slow machine only makes it slower): 6 MiB at 2 MiB/s take 2.75 s or more (a quarter
    of a second's bytes go at once)."""
    f = write_random(tmp_path / "f.bin", 6 * MiB, seed=19)
    began = time.monotonic()
    r = pipe_upload(["upload", "-", f"s3://{bucket}/capped.bin", "-s", "5M", "--max-bandwidth", "2MiB/s",
                     "--endpoint-url", s3_server.endpoint, *state(tmp_path)], aws_env, f"cat {f}")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - began >= 2.75
    assert "Bandwidth: at most 2 MiB/s" in r.stderr


def test_a_fifo_to_a_prefix_and_a_text_stream_are_refused(aws_env: dict[str, str], tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = run_cli(["upload", str(fifo), "s3://b/prefix/", "--endpoint-url", "http://127.0.0.1:9"], aws_env)
    assert r.returncode == 2 and "(a pipe or a character device) is a stream, uploaded to one key" in r.stderr
    with pytest.raises(api.BadInput, match="is a text stream"):
        api.upload(io.StringIO("text"), "s3://b/k", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(api.BadInput, match="--max-memory goes with a stream"):
        api.upload(tmp_path / "fifo2", "s3://b/k", max_memory="64M", endpoint_url="http://127.0.0.1:9")


def test_equal_parts_keeps_a_streams_parts_of_one_size(aws_env: dict[str, str], tmp_path: Path) -> None:
    """--equal-parts (R2): a stream's parts do not grow; the plan says how long the stream may then be."""
    r = run_cli(["upload", "-", "s3://b/k", "--equal-parts", "-s", "64M", "--dry-run", "--json",
                 "--endpoint-url", "http://127.0.0.1:9", "--state-dir", str(tmp_path)], aws_env, input="")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [(t["partSize"], t["lastPart"]) for t in plan["schedule"]] == [(64 * MiB, 10_000)]
    assert plan["capacity"] == 10_000 * 64 * MiB
    assert sizes_equal(schedule_for(None, 100 * GiB, equal=True)[0])


def sizes_equal(schedule: object) -> bool:
    return len({schedule.size(n) for n in range(1, 10_001)}) == 1  # type: ignore[attr-defined]
