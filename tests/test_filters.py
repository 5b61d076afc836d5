"""--exclude/--include with aws-cli's semantics (the cases of its documentation), the walk (symbolic links, a loop,
hidden files), and --dry-run with many files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s3_multipart_upload.filters import Filter, parse, taken, walk
from s3_multipart_upload.main import cli
from tests.conftest import S3Server, write_random

# aws-cli's example folder (awscli/examples/s3/_concepts.rst, "Use of Exclude and Include Filters").
AWS_TREE = [".git/config", ".git/description", "foo.txt", "bar.txt", "baz.jpg"]


@pytest.mark.parametrize(("filters", "taken_files"), [
    # no filter: every file, hidden ones too
    ([], AWS_TREE),
    # "--exclude '.git/*'": .git/config and .git/description excluded
    ([("exclude", ".git/*")], ["foo.txt", "bar.txt", "baz.jpg"]),
    # "--exclude 'ba*'": bar.txt and baz.jpg excluded
    ([("exclude", "ba*")], [".git/config", ".git/description", "foo.txt"]),
    # "--exclude '*' --include '*.txt'": all excluded but the .txt files
    ([("exclude", "*"), ("include", "*.txt")], ["foo.txt", "bar.txt"]),
    # "--include '*.txt' --exclude '*'": the later filter wins, so everything is excluded
    ([("include", "*.txt"), ("exclude", "*")], []),
    # "only --include changes nothing": everything is included by default
    ([("include", "*.txt")], AWS_TREE),
    # "--exclude '*' --include '*.jpg'": only the .jpg
    ([("exclude", "*"), ("include", "*.jpg")], ["baz.jpg"]),
    # "--exclude '*' --include '*.jpg' --include '*.txt'"
    ([("exclude", "*"), ("include", "*.jpg"), ("include", "*.txt")], ["foo.txt", "bar.txt", "baz.jpg"]),
    # * matches across folders (fnmatch), ? one character, [seq] and [!seq]
    ([("exclude", "*config")], [".git/description", "foo.txt", "bar.txt", "baz.jpg"]),
    ([("exclude", "ba?.*")], [".git/config", ".git/description", "foo.txt"]),
    ([("exclude", "[fb]*"), ("include", "[!f]*.jpg")], [".git/config", ".git/description", "baz.jpg"]),
    # hidden files are excluded only when asked
    ([("exclude", ".*")], ["foo.txt", "bar.txt", "baz.jpg"]),
])
def test_filters_as_aws_cli_documents_them(filters: list[tuple[str, str]], taken_files: list[str]) -> None:
    rules = parse(filters)
    assert [f for f in AWS_TREE if taken(f, rules)[0]] == taken_files


def test_the_deciding_filter_is_named() -> None:
    rules = parse([("exclude", "*"), ("include", "*.txt")])
    assert taken("a.jpg", rules) == (False, Filter("exclude", "*"))
    assert taken("a.txt", rules) == (True, Filter("include", "*.txt"))


def make_tree(root: Path) -> None:
    for rel in [*AWS_TREE, "sub/deep/x.bin"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    (root / "link-to-foo.txt").symlink_to(root / "foo.txt")
    (root / "sub" / "loop").symlink_to(root)  # a link back to a folder above it
    (root / "broken").symlink_to(root / "nowhere")
    os.mkfifo(root / "fifo")


def test_walk_follows_links_reports_a_loop_and_keeps_hidden_files(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "foo"
    make_tree(root)
    found = list(walk(root, with_skipped=True))
    taken_files = [f.relative for f in found if f.skipped is None]
    assert taken_files == ["bar.txt", "baz.jpg", "foo.txt", "link-to-foo.txt", ".git/config", ".git/description",
                           "sub/deep/x.bin"]
    skipped = {f.relative: f.skipped for f in found if f.skipped is not None}
    assert skipped == {"broken": "broken symbolic link", "fifo": "not a regular file",
                       "sub/loop/": "symbolic link loop"}
    assert "symbolic link loop" in caplog.text


def test_walk_without_following_links(tmp_path: Path) -> None:
    root = tmp_path / "foo"
    make_tree(root)
    found = list(walk(root, parse([("exclude", "*.jpg")]), follow_symlinks=False, with_skipped=True))
    skipped = {f.relative: f.skipped for f in found if f.skipped is not None}
    assert skipped == {"baz.jpg": "--exclude *.jpg", "broken": "symbolic link (--no-follow-symlinks)",
                       "link-to-foo.txt": "symbolic link (--no-follow-symlinks)", "fifo": "not a regular file",
                       "sub/loop": "symbolic link (--no-follow-symlinks)"}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_upload_recursive_with_filters_and_dry_run(s3_server: S3Server, bucket: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The order of --exclude and --include on the command line decides; --dry-run lists what would be sent and
    skipped and why, and sends nothing; after the upload a dry run skips what is complete."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    root = tmp_path / "foo"
    make_tree(root)
    write_random(root / "big.bin", 7 << 20)
    ep = ["--endpoint-url", s3_server.endpoint, "-s", "5M"]
    dest = f"s3://{bucket}/p/"
    args = ["upload", "--recursive", str(root), dest, "--exclude", "*", "--include", "*.txt", "--include=*.bin",
            "--exclude", "sub/*", *ep]
    r = invoke(*args, "--dry-run")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert f"send  {root / 'bar.txt'} -> {dest}bar.txt  (one PutObject)" in lines
    assert f"send  {root / 'big.bin'} -> {dest}big.bin  (2 parts of 5242880 bytes)" in lines
    assert f"skip  {root / 'baz.jpg'} -> {dest}baz.jpg  (--exclude *)" in lines
    assert f"skip  {root / 'sub/deep/x.bin'} -> {dest}sub/deep/x.bin  (--exclude sub/*)" in lines
    assert f"skip  {root / 'sub/loop'} -> {dest}sub/loop/  (symbolic link loop)" in lines
    assert lines[-1].startswith("Dry run: 4 files to send (") and "skipped; nothing was sent." in lines[-1]
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=bucket)

    r = invoke(*args)
    assert r.exit_code == 0, r.output
    keys = sorted(o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["p/bar.txt", "p/big.bin", "p/foo.txt", "p/link-to-foo.txt"]

    r = invoke(*args, "--dry-run", "--json")
    docs = [json.loads(x) for x in r.stdout.splitlines()]
    why = {d["key"]: d["why"] for d in docs if d["event"] == "planned"}
    assert why["p/bar.txt"] == why["p/big.bin"] == "already complete (the batch journal, and the file unchanged)"
    assert why["p/.git/description"] == "--exclude *" and why["p/sub/deep/x.bin"] == "--exclude sub/*"
    assert docs[-1] == {"event": "summary", "status": "dry_run", "exitCode": 0, "bucket": bucket, "toSend": 0,
                        "skipped": len(docs) - 1, "bytesToSend": 0}


def test_filters_need_several_files(aws_env: dict[str, str], tmp_path: Path) -> None:
    f = write_random(tmp_path / "f", 10)
    r = invoke("upload", str(f), "s3://b/k", "--exclude", "*")
    assert r.exit_code == 2 and "--exclude and --include choose among several files" in r.stderr


def test_many_files_progress_adds_up(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    """The one-part files of a batch report one total up front and one event per file, adding up to it."""
    import s3_multipart_upload as api

    root = tmp_path / "t"
    sizes = [0, 10, 5000, 70000]
    for i, size in enumerate(sizes):
        (root / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        write_random(root / f"d{i % 2}" / f"f{i}", size, seed=i)
    events: list[api.ProgressEvent] = []
    result = api.upload_many([root], f"s3://{bucket}/prog/", recursive=True, endpoint_url=s3_server.endpoint,
                             state_dir=tmp_path / "state", progress=events.append)
    assert result.counts()["completed"] == 4
    assert events[0].kind == "started" and events[0].bytes_total == sum(sizes) and events[0].parts_total == 4
    done = [e for e in events if e.kind == "part_done"]
    assert len(done) == 4 and done[-1].bytes_done == sum(sizes) and done[-1].parts_done == 4


def test_two_files_of_one_name_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """FILE... s3://B/P/ puts each file at P + its name: two files of one name would make one object of either, each
    reported done. Refused, naming both (exit 2)."""
    from s3_multipart_upload.batch import items_of
    from s3_multipart_upload.errors import BadInput

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.txt").write_text(folder)
    with pytest.raises(BadInput, match=r"would both be uploaded to the key p/x\.txt") as caught:
        items_of([tmp_path / "a" / "x.txt", tmp_path / "b" / "x.txt"], "p/", recursive=False)
    assert caught.value.exit_code == 2 and str(tmp_path / "a" / "x.txt") in caught.value.message
