"""The batch journal: what a rerun trusts, a torn last line, a bad line, one process at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s3_multipart_upload.errors import StateConflict
from s3_multipart_upload.state import Finished, Journal, journal_path, read_journal
from tests.conftest import S3Server


def test_records_survive_and_a_changed_file_is_not_done(tmp_path: Path) -> None:
    path = journal_path(tmp_path, "http://e", "b", "p/", '["/src"]')
    j = Journal(path)
    j.start("p/a")
    j.record(Finished("p/a", "/src/a", 10, 111, "etag-a"))
    j.start("p/b")  # killed before b was recorded finished
    j.close()
    again = Journal(path)
    assert again.done("p/a", "/src/a", 10, 111) == Finished("p/a", "/src/a", 10, 111, "etag-a")
    assert again.done("p/a", "/src/a", 10, 112) is None, "a file touched since is sent again"
    assert again.done("p/a", "/elsewhere/a", 10, 111) is None
    assert again.sending == {"p/b"}
    again.close()


def test_a_torn_last_line_is_cut_and_the_journal_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.record(Finished("k", "/f", 1, 2, "e"))
    j.close()
    with open(path, "a") as f:
        f.write('{"key": "k2", "pa')
    j = Journal(path)
    assert "unfinished last line" in caplog.text and set(j.finished) == {"k"}
    j.record(Finished("k2", "/g", 1, 2, "e2"))
    j.close()
    finished, sending, torn = read_journal(path)
    assert set(finished) == {"k", "k2"} and not sending and torn == 0


def test_a_bad_line_in_the_middle_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": "k", "path": "/f", "size": 1, "mtimeNs": 2, "eTag": "e"}\nnot json\n')
    with pytest.raises(StateConflict, match="line 2"):
        Journal(path)


def test_one_process_per_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    first = Journal(path)
    try:
        with pytest.raises(StateConflict, match="another s3-multipart-upload process"):
            Journal(path)
    finally:
        first.close()
    Journal(path).close()


def test_other_sources_into_the_same_prefix_have_their_own_journal(tmp_path: Path) -> None:
    """The tasks of an array job, each uploading its own folder into one prefix, do not block each other."""
    assert journal_path(tmp_path, "e", "b", "p/", '["/a"]') != journal_path(tmp_path, "e", "b", "p/", '["/b"]')


def test_files_completed_in_state_folders_of_their_own_are_not_sent_again(
        s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One-part files an earlier version (or `upload FILE s3://B/K`) completed with a state folder each: the first
    batch run after it sends none of them, and records them in its journal."""
    from click.testing import CliRunner

    from s3_multipart_upload.main import cli
    from tests.conftest import write_random
    from tests.s3proxy import S3Proxy

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (tmp_path / "d").mkdir()
    files = [write_random(tmp_path / "d" / f"f{i}", 1000 + i, seed=i) for i in range(3)]
    proxy = S3Proxy(s3_server.endpoint)
    try:
        for f in files:
            r = CliRunner().invoke(cli, ["upload", str(f), f"s3://{bucket}/p/{f.name}", "--endpoint-url",
                                         proxy.endpoint])
            assert r.exit_code == 0, r.output
        proxy.reset()
        r = CliRunner().invoke(cli, ["upload", "--recursive", str(tmp_path / "d"), f"s3://{bucket}/p/",
                                     "--endpoint-url", proxy.endpoint, "--json"])
        assert r.exit_code == 0, r.output
        assert proxy.seen == [], "files complete by their own state were asked about or sent again"
        summary = json.loads(r.stdout.splitlines()[-1])
        assert summary["alreadyComplete"] == 3 and summary["bucket"] == bucket
        [journal] = (tmp_path / "state" / "s3-multipart-upload" / "batches").iterdir()
        assert len(read_journal(journal)[0]) == 3
    finally:
        proxy.close()


def test_a_batch_that_stops_tells_each_file_it_did_not_start(s3_server: S3Server, bucket: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure a rerun fixes (75) stops the batch: the files in flight end, every other file (the rest of the
    walk, and the files of several parts kept for later) is told not started, once each; a rerun sends them."""
    from click.testing import CliRunner

    from s3_multipart_upload.main import cli
    from tests.conftest import write_random
    from tests.s3proxy import Fault, S3Proxy

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    tree = tmp_path / "t"
    (tree / "sub").mkdir(parents=True)
    for i in range(20):
        write_random(tree / ("sub" if i % 2 else "") / f"f{i:02d}", 100 + i, seed=i)
    write_random(tree / "big.bin", 6 << 20, seed=99)
    proxy = S3Proxy(s3_server.endpoint, rule=lambda s, i: Fault(500, "InternalError") if s.method == "PUT" else None)
    args = ["upload", "--recursive", str(tree), f"s3://{bucket}/stop/", "-t", "1", "-s", "5M", "--retries", "1",
            "--json", "--endpoint-url", proxy.endpoint]
    try:
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 75, r.output
        events = [json.loads(line) for line in r.stdout.splitlines()]
        done = [e for e in events if e["event"] == "file_done"]
        assert sorted(e["key"] for e in done) == sorted([f"stop/f{i:02d}" if i % 2 == 0 else f"stop/sub/f{i:02d}"
                                                         for i in range(20)] + ["stop/big.bin"])
        statuses = {e["key"]: e["status"] for e in done}
        assert statuses["stop/big.bin"] == "not_started"
        assert 1 <= sum(1 for s in statuses.values() if s == "paused") <= 4  # the files in flight (4 x -t 1)
        summary = events[-1]
        assert summary["notStarted"] == sum(1 for s in statuses.values() if s == "not_started") >= 16
        assert summary["files"] == 21 and summary["exitCode"] == 75
    finally:
        proxy.close()
    at = args.index("--retries")  # the rerun with the default retries: rclone answers a burst of PUTs into a new
    rerun = args[:at] + args[at + 2:-2]  # folder with a passing InternalError now and then, which one try would fail
    r = CliRunner().invoke(cli, [*rerun, "--endpoint-url", s3_server.endpoint])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[-1])["completed"] == 21
