from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from s3_multipart_upload.errors import StateConflict
from s3_multipart_upload.state import (
    Meta,
    PartRecord,
    PartsLog,
    meta_lock,
    read_meta,
    read_parts,
    state_folder,
    state_folders,
    state_root,
    write_atomic,
    write_meta,
)


def test_meta_round_trip_keeps_the_historical_keys_first(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    meta = Meta("bkt", "k/x", "UP1", 64 << 20, source={"kind": "file", "path": "/x", "size": 1, "mtimeNs": 2},
                part_count=1, checksum_algorithm="MD5", created_at="2026-11-21T10:00:00Z")
    write_meta(path, meta)
    doc = json.loads(path.read_text())
    assert list(doc)[:4] == ["bucket", "key", "uploadId", "splitSize"]
    assert doc["schemaVersion"] == 1 and doc["status"] == "in_progress"
    assert read_meta(path) == meta


def test_historical_meta_is_read(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    doc = {"bucket": "my-bucket", "key": "data/input.txt", "uploadId": "OQBr", "splitSize": 5000000}
    path.write_text(json.dumps(doc))
    meta = read_meta(path)
    assert meta is not None and (meta.bucket, meta.upload_id, meta.split_size, meta.source) == (
        "my-bucket", "OQBr", 5000000, None)


def test_meta_that_is_not_json_is_a_conflict_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(StateConflict, match=f"meta file {path} is not valid JSON"):
        read_meta(path)


@pytest.mark.parametrize(("field", "value"), [("source", "f.bin"), ("partCount", "3"), ("checksumAlgorithm", 5)])
def test_meta_with_a_field_of_the_wrong_type_is_a_conflict_naming_the_file(tmp_path: Path, field: str,
                                                                          value: object) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"bucket": "b", "key": "k", "uploadId": "u", "splitSize": 5242880, field: value}))
    with pytest.raises(StateConflict, match=f"meta file {path} has a {field} of the wrong type"):
        read_meta(path)


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.json"
    path.write_text("old")

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["m.json"]  # no temp file left behind


def test_parts_log_appends_whole_lines_and_reads_them_back(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    with PartsLog(path) as log:
        log.append(PartRecord("aa", 2, "UP1", 10))
        log.append(PartRecord("bb", 1, "UP1", 10))
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == ["eTag", "partNumber", "uploadId", "size"]
    assert read_parts(path, "UP1") == {1: PartRecord("bb", 1, "UP1", 10), 2: PartRecord("aa", 2, "UP1", 10)}


def test_lines_of_another_upload_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"eTag": "x", "partNumber": 1, "uploadId": "OLD"}\n'
                    '{"eTag": "y", "partNumber": 2, "uploadId": "NEW"}\n')
    assert read_parts(path, "NEW") == {2: PartRecord("y", 2, "NEW", None)}


def test_a_torn_last_line_is_ignored_with_a_warning_and_cut_before_the_next_append(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"eTag": "x", "partNumber": 1, "uploadId": "U"}\n{"eTag": "y", "partNum')
    with caplog.at_level(logging.WARNING):
        assert read_parts(path, "U") == {1: PartRecord("x", 1, "U", None)}
    assert "unfinished last line" in caplog.text
    with PartsLog(path) as log:
        log.append(PartRecord("z", 2, "U", 5))
    assert read_parts(path, "U") == {1: PartRecord("x", 1, "U", None), 2: PartRecord("z", 2, "U", 5)}
    assert path.read_text().count("\n") == 2


def test_a_garbage_line_in_the_middle_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"eTag": "x", "partNumber": 1, "uploadId": "U"}\ngarbage\n'
                    '{"eTag": "y", "partNumber": 2, "uploadId": "U"}\n')
    with pytest.raises(StateConflict, match=f"parts file {path} line 2"):
        read_parts(path, "U")


def test_the_lock_lets_one_holder_in(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    # flock locks belong to the open file description, so a second open conflicts even in-process
    with meta_lock(path), pytest.raises(StateConflict, match="another s3-multipart-upload process"), meta_lock(path):
        pass
    with meta_lock(path):
        pass


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"eTag": "x", "partNumber": 1, "uploadId": "U"}\n{"eTag": "y", "partNumber": 2, "uploadId": "U"}')
    assert set(read_parts(path, "U")) == {1, 2}
    with PartsLog(path) as log:
        log.append(PartRecord("z", 3, "U", 5))
    assert set(read_parts(path, "U")) == {1, 2, 3}
    assert path.read_text().count("\n") == 3


def test_state_folder_is_found_again_by_what_the_upload_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    root = state_root()
    assert root == tmp_path / "xdg" / "s3-multipart-upload"
    a = state_folder(root, "http://127.0.0.1:9000", "b", "k", "/data/f.bin", given_endpoint="http://127.0.0.1:9000")
    assert state_folder(root, "http://127.0.0.1:9000", "b", "k", "/data/f.bin") == a
    others = {state_folder(root, *ident).path for ident in (("http://other", "b", "k", "/data/f.bin"),
                                                            ("http://127.0.0.1:9000", "c", "k", "/data/f.bin"),
                                                            ("http://127.0.0.1:9000", "b", "k2", "/data/f.bin"),
                                                            ("http://127.0.0.1:9000", "b", "k", "/data/g.bin"))}
    assert len(others) == 4 and a.path not in others
    assert a.record() == {"endpoint": "http://127.0.0.1:9000", "bucket": "b", "key": "k", "source": "/data/f.bin",
                          "endpointUrl": "http://127.0.0.1:9000"}
    assert [f.path for f in state_folders(root)].count(a.path) == 1
    assert not state_folder(root, "e", "b", "k", "/x", create=False).path.exists()
    monkeypatch.setenv("XDG_STATE_HOME", "relative/path")  # the XDG spec: a relative path is ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_root() == tmp_path / "home" / ".local" / "state" / "s3-multipart-upload"
    assert state_root(tmp_path / "shared") == tmp_path / "shared"
