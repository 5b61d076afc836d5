"""The Python API as a program uses it: killed and resumed by calling it again, progress that adds up, errors that
carry the CLI's exit codes, nothing printed, and the documented example run as written."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest

import s3_multipart_upload as api
from s3_multipart_upload.main import cli
from s3_multipart_upload.options import PROPERTY_OPTIONS, _Opts
from s3_multipart_upload.plan import MiB
from tests.conftest import S3Server, kill_when, run_cli, write_random
from tests.s3proxy import S3Proxy

REPO = Path(__file__).parent.parent
PARTS = 24


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def logged(parts: Path) -> set[int]:
    found = set()
    for line in parts.read_text().splitlines() if parts.exists() else []:
        try:
            found.add(json.loads(line)["partNumber"])
        except (json.JSONDecodeError, KeyError):
            continue  # a torn last line
    return found


@pytest.mark.e2e
def test_killed_then_resumed_by_calling_again(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                              tmp_path: Path) -> None:
    """A program calling upload() is SIGKILLed; calling upload() again sends only the parts the store lacks, its
    progress adds up to the file, and the CLI then finds the same upload complete (one state, two ways in)."""
    f = write_random(tmp_path / "f.bin", (PARTS - 1) * 5 * MiB + 4321, seed=11)
    state = tmp_path / "state"
    proxy = S3Proxy(s3_server.endpoint, delay=0.05)
    try:
        dest = f"s3://{bucket}/api/f.bin"
        options = {"state_dir": str(state), "split_size": "5M", "thread_count": 4, "endpoint_url": proxy.endpoint}
        program = f"import s3_multipart_upload as s\ns.upload({str(f)!r}, {dest!r}, **{options!r})\n"
        parts_logs = lambda: list(state.glob("*/parts.jsonl"))  # noqa: E731
        code = kill_when([], aws_env, lambda: any(len(logged(p)) >= 6 for p in parts_logs()),
                         command=[sys.executable, "-c", program])
        assert code == -signal.SIGKILL, "the upload finished before it could be killed"
        proxy.wait_idle()
        [parts] = parts_logs()
        meta = json.loads((parts.parent / "meta.json").read_text())
        held = {p["PartNumber"] for p in s3_server.client().list_parts(
            Bucket=bucket, Key="api/f.bin", UploadId=meta["uploadId"]).get("Parts", [])}
        assert len(logged(parts)) >= 6 and logged(parts) <= held and len(held) < PARTS

        proxy.reset()
        events: list[api.ProgressEvent] = []
        result = api.upload(f, dest, progress=events.append, **options)  # type: ignore[arg-type]
        sent = proxy.part_puts()
        assert set(sent) == set(range(1, PARTS + 1)) - held, "only the parts the store lacked are sent"
        assert all(n == 1 for n in sent.values())
        assert (result.parts_total, result.parts_sent, result.size) == (PARTS, PARTS - len(held), f.stat().st_size)
        got = s3_server.client().get_object(Bucket=bucket, Key="api/f.bin")["Body"].read()
        assert sha256(got) == sha256(f.read_bytes())

        started = events[0]
        done = [e for e in events if e.kind == "part_done"]
        assert started.kind == "started" and started.bytes_total == f.stat().st_size
        assert started.bytes_done + sum(e.part_bytes for e in done) == f.stat().st_size
        assert events[-1].bytes_done == events[-1].bytes_total and events[-1].parts_done == PARTS
        assert sorted(e.part for e in done) == sorted(set(range(1, PARTS + 1)) - held)

        r = run_cli(["upload", str(f), dest, "--state-dir", str(state), "-s", "5M", "--endpoint-url",
                     proxy.endpoint], aws_env)
        assert r.returncode == 0 and "already complete" in r.stderr, r.stderr
    finally:
        proxy.close()


def test_progress_adds_up_and_nothing_is_printed(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    """A library prints nothing: not a line on stdout or stderr, unless the program configures logging."""
    f = write_random(tmp_path / "g.bin", 3 * 5 * MiB + 17, seed=3)
    program = textwrap.dedent(f"""
        import s3_multipart_upload as s
        events = []
        r = s.upload({str(f)!r}, "s3://{bucket}/quiet/g.bin", split_size="5M", state_dir={str(tmp_path)!r},
                     endpoint_url={s3_server.endpoint!r}, progress=events.append)
        done = [e for e in events if e.kind == "part_done"]
        assert events[0].kind == "started" and events[0].bytes_done == 0, events[0]
        assert sum(e.part_bytes for e in done) == r.size == {f.stat().st_size}, events
        assert [e.bytes_done for e in done] == sorted(e.bytes_done for e in done)
        assert done[-1].bytes_done == r.size and done[-1].parts_done == done[-1].parts_total == 4
        assert all(e.key == "quiet/g.bin" for e in events)
    """)
    r = subprocess.run([sys.executable, "-c", program], env=_env(aws_env), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""


def _env(aws_env: dict[str, str]) -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_env


@pytest.mark.parametrize("case", ["no-bucket", "missing-file", "m-without-a", "bad-part-size"])
def test_errors_carry_the_exit_code_of_the_cli(case: str, s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                               tmp_path: Path) -> None:
    f = write_random(tmp_path / "h.bin", 1000)
    args, kwargs = {
        "no-bucket": ([str(f), "s3://no-such-bucket-here/h.bin"], {}),
        "missing-file": ([str(tmp_path / "nope.bin"), f"s3://{bucket}/h.bin"], {}),
        "m-without-a": ([str(f), f"s3://{bucket}/h.bin"], {"meta_file_path": str(tmp_path / "m.json")}),
        "bad-part-size": ([str(f), f"s3://{bucket}/h.bin"], {"split_size": "12 apples"}),
    }[case]
    flags = {"meta_file_path": ["-m", str(tmp_path / "m.json")], "split_size": ["-s", "12 apples"]}
    cli_args = ["upload", *args, "--state-dir", str(tmp_path / "s"), "--endpoint-url", s3_server.endpoint]
    for name in kwargs:
        cli_args += flags[name]
    with pytest.raises(api.UploadError) as caught:
        api.upload(args[0], args[1], state_dir=tmp_path / "s", endpoint_url=s3_server.endpoint,  # type: ignore
                   **kwargs)
    r = run_cli(cli_args, aws_env)
    assert caught.value.exit_code == r.returncode != 0, r.stderr
    if case != "bad-part-size":  # click words its own usage errors; the API names the option in its own terms
        assert f"error: {caught.value.message}" in r.stderr


def test_a_batch_failure_carries_every_outcome(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                               tmp_path: Path) -> None:
    good = write_random(tmp_path / "good.bin", 2000, seed=1)
    seen: list[api.FileOutcome] = []
    with pytest.raises(api.BatchFailed) as caught:
        api.upload_many([good, tmp_path / "missing.bin"], f"s3://{bucket}/many/", state_dir=tmp_path / "s",
                        endpoint_url=s3_server.endpoint, on_file_done=seen.append)
    assert caught.value.exit_code == api.ExitCode.USAGE and "1 of 2 files did not complete" in caught.value.message
    result = caught.value.result
    assert isinstance(result, api.BatchResult) and result.counts()["completed"] == 1
    assert {o.status for o in result.files} == {"completed", "error"} and len(seen) == 2
    body = s3_server.client().get_object(Bucket=bucket, Key="many/good.bin")["Body"].read()
    assert body == good.read_bytes()


def test_operations_status_list_abort_clean(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                            tmp_path: Path) -> None:
    """status, list_uploads, abort and local_uploads/clean on an upload left in progress (created, one part)."""
    f = write_random(tmp_path / "o.bin", 3 * 5 * MiB, seed=5)
    client = s3_server.client()
    stray = client.create_multipart_upload(Bucket=bucket, Key="ops/stray.bin")["UploadId"]
    plan = api.plan_upload(f, f"s3://{bucket}/ops/o.bin", split_size="5M", state_dir=tmp_path / "s",
                           endpoint_url=s3_server.endpoint)
    assert (plan["parts"], plan["status"], plan["bytesToSend"]) == (3, "new", f.stat().st_size)

    found = api.list_uploads(bucket, prefix="ops/", endpoint_url=s3_server.endpoint)
    assert [(u.key, u.upload_id, u.bucket) for u in found] == [("ops/stray.bin", stray, bucket)]
    assert api.abort(found[0], endpoint_url=s3_server.endpoint) == "aborted"
    assert api.list_uploads(bucket, prefix="ops/", endpoint_url=s3_server.endpoint) == []

    api.upload(f, f"s3://{bucket}/ops/o.bin", split_size="5M", state_dir=tmp_path / "s",
               endpoint_url=s3_server.endpoint)
    [local] = api.local_uploads(state_dir=tmp_path / "s")
    assert (local.state, local.key, local.bytes_done) == ("completed", "ops/o.bin", f.stat().st_size)
    st = api.status(local.folder.meta, local.folder.parts, endpoint_url=s3_server.endpoint)
    assert (st.state, st.parts_done, st.parts_total, st.source_changed) == ("completed", 3, 3, False)
    asked: list[int] = []
    assert api.clean("1h", state_dir=tmp_path / "s", confirm=lambda ups: bool(asked.append(len(ups)))) == []
    assert asked == [] and api.local_uploads(state_dir=tmp_path / "s"), "nothing is an hour old: nothing asked"
    cleaned = api.clean(0, state_dir=tmp_path / "s", confirm=lambda ups: bool(asked.append(len(ups))) or True)
    assert asked == [1] and [c.done for c in cleaned] == ["removed"]
    assert api.local_uploads(state_dir=tmp_path / "s") == []


def test_docs_example_runs_as_written(s3_server: S3Server, bucket: str, aws_env: dict[str, str],
                                      tmp_path: Path) -> None:
    page = (REPO / "docs" / "python-api.md").read_text()
    match = re.search(r"<!-- example: api-upload -->\n```python\n(.*?)```", page, re.S)
    assert match, "docs/python-api.md has lost its example"
    code = match.group(1).replace("my-bucket", bucket)
    data = write_random(tmp_path / "big.bin", 20 * MiB + 5, seed=9).read_bytes()
    env = _env(aws_env) | {"AWS_ENDPOINT_URL": s3_server.endpoint, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"uploaded {len(data)} bytes in 3 parts" in r.stdout
    body = s3_server.client().get_object(Bucket=bucket, Key="backups/big.bin")["Body"].read()
    assert sha256(body) == sha256(data)


def test_options_are_the_clis() -> None:
    """Every option of upload and copy reaches the API by its long name; TransferOptions and the checked options
    agree; a misspelt option is a TypeError naming it."""
    assert set(api.TransferOptions.__annotations__) == \
        {f.name for f in dataclasses.fields(_Opts)} - {"props"} | set(PROPERTY_OPTIONS)
    output = {"dry_run", "as_json", "quiet", "verbose", "targets"}
    assert {"recursive", "filters", "follow_symlinks"} <= set(api.upload_many.__code__.co_varnames)
    many = {"recursive", "exclude", "include", "follow_symlinks"}  # upload_many's: --exclude/--include as filters
    for command, function in ((cli.commands["upload"], api.upload), (cli.commands["copy"], api.copy)):
        for param in command.params:
            name = {"shard_spec": "shard", "source_url": "source", "file_path": "source",
                    "directory": "source"}.get(param.name or "", param.name)
            if name in output | many or not isinstance(param, click.Option | click.Argument):
                continue
            assert name in api.TransferOptions.__annotations__ or name in function.__code__.co_varnames, \
                f"{command.name} {param.opts} has no API option {name}"
    with pytest.raises(TypeError, match="threads"):
        api.upload("x", "s3://b/k", threads=4)  # type: ignore[call-arg]


def test_a_copy_within_one_store_stays_server_side_with_store_options(aws_env: dict[str, str],
                                                                      tmp_path: Path) -> None:
    """--addressing-style and --no-verify-ssl (like --ca-bundle) describe the one store of a copy: the store still
    copies the parts itself (UploadPartCopy), and the source is read with the same settings."""
    import boto3
    from moto import mock_aws

    from s3_multipart_upload.api import _copy_source
    from s3_multipart_upload.options import _Opts

    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="src-bucket")
        boto3.client("s3", region_name="us-east-1").put_object(Bucket="src-bucket", Key="k", Body=b"x" * 100)
        for options in ({}, {"addressing_style": "path"}, {"no_verify_ssl": True}):
            source, _, _, _ = _copy_source("s3://src-bucket/k", ("s3://dst-bucket/k", None, None), (None, None, None),
                                           False, "COPY", None, _Opts.of(options))  # type: ignore[arg-type]
            assert source.server_side, options
