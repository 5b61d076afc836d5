"""Running an upload or a copy from the command line and saying how it went: the display (a bar, log lines or
nothing), the JSON events, the stop on Ctrl-C, and the lines that close a run. The work itself is the API's."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import click

from s3_multipart_upload.batch import Outcome
from s3_multipart_upload.cli import events
from s3_multipart_upload.cli.common import LOGGER, StopOnSignal, Transfer, rerun_command, setup_output
from s3_multipart_upload.errors import BatchFailed, ExitCode, failure_of
from s3_multipart_upload.job import UploadResult
from s3_multipart_upload.many import BatchResult
from s3_multipart_upload.plan import human
from s3_multipart_upload.progress import LogProgress, NullProgress, Reporter

log = logging.getLogger(LOGGER)


def run_one(call: Callable[[Reporter], UploadResult], run: Transfer) -> None:
    """One upload or copy: ``call`` runs it with the reporter given; then its closing line (and JSON)."""
    display = setup_output(run.quiet, run.verbose)()
    out = events.events(run.as_json, display)
    try:
        with StopOnSignal():
            result = call(out or display)
    except BaseException as exc:
        display.close()
        if out is not None:
            events.failed(out, failure_of(exc), events.partial_of(exc, run.bucket, run.key), rerun_command())
        raise
    display.close()
    shard_done = result.shard is not None and not result.etag and not result.already_complete
    where = f"s3://{result.bucket}/{result.key}"
    if result.already_complete:
        log.info("Nothing to do: %s is already complete.", where)
    elif shard_done:
        log.info("Shard %s done: sent %d parts (%s) in %.1f s; %s.", result.shard, result.parts_sent,
                 human(result.bytes_sent), result.seconds,
                 f"{result.parts_left} parts left to other shards" if result.parts_left else
                 f"every part is on the server, {result.completed_by} completes the upload")
    else:
        log.info("Done: %s, %s in %d parts; sent %d parts (%s) in %.1f s, %d already done, %d adopted.",
                 where, human(result.size), result.parts_total, result.parts_sent, human(result.bytes_sent),
                 result.seconds, result.parts_logged, result.parts_adopted)
    if out is not None:
        events.finished(out, result, shard_done)


def run_many(call: Callable[[Callable[[str | None], Reporter], Callable[[Outcome], None]], BatchResult],
             bucket: str, prefix: str, run: Transfer) -> None:
    """Many files, each an upload of its own: a line per file, then one summary; exits with the most urgent code.
    ``call`` runs them given a maker of each file's display and a listener of each file's end."""
    display = setup_output(run.quiet, run.verbose)
    if not run.verbose:
        for handler in log.handlers:  # one line per file: the engine's own notes only when they warn
            handler.addFilter(lambda record: record.levelno >= logging.WARNING or record.name == log.name)
    out = events.events(run.as_json)

    def reporter(key: str | None) -> Reporter:
        shown = display()
        if key is None and isinstance(shown, LogProgress):
            return NullProgress()  # one line per file (below), not one per part
        return shown

    def done(outcome: Outcome) -> None:
        where = f"s3://{bucket}/{outcome.item.key}"
        if outcome.result is not None:
            r = outcome.result
            log.info("%s: %s -> %s, %s%s.", "Already complete" if r.already_complete else "Done", outcome.item.path,
                     where, human(r.size), "" if r.already_complete else f", sent {human(r.bytes_sent)} in "
                     f"{r.parts_sent} parts in {r.seconds:.1f} s")
        elif outcome.failure is not None and outcome.started:
            log.error("%s (exit %d): %s -> %s: %s", "Paused" if outcome.failure.resumable else "Failed",
                      outcome.code, outcome.item.path, where, outcome.failure.message)
        if out is not None:
            events.file_done(out, outcome, bucket)

    failure: BatchFailed | None = None
    with StopOnSignal():
        try:
            result = call(reporter, done)
        except BatchFailed as exc:
            if not isinstance(exc.result, BatchResult):
                raise
            failure, result = exc, exc.result
    counts = result.counts()
    code = result.exit_code
    log.log(logging.INFO if code == ExitCode.OK else logging.ERROR,
            "%d files to s3://%s/%s: %d completed, %d already complete, %d failed, %d not started; %s sent in %.1f s.",
            counts["files"], bucket, prefix, counts["completed"], counts["alreadyComplete"],
            counts["failed"], counts["notStarted"], human(counts["bytesSent"]), counts["seconds"])
    if out is not None:
        events.batch_summary(out, code, bucket, counts)
    if failure is not None:
        raise failure


def show_plan(plan: dict[str, Any], as_json: bool) -> None:
    """--dry-run: the plan, as lines or one JSON document."""
    if as_json:
        events.emit_json(plan)
        return
    if plan.get("stream"):
        click.echo("\n".join(_stream_plan(plan)))
        return
    reqs = ", ".join(f"{n} {name}" for name, n in plan["requests"].items() if n)
    lines = [
        f"Plan for s3://{plan['bucket']}/{plan['key']} (dry run: nothing is sent)",
        f"  data:       {human(plan['bytes'])} ({plan['bytes']} bytes)",
        f"  part size:  {human(plan['partSize'])} ({plan['partSizeWhy']})",
        f"  parts:      {plan['parts']}" + (" (one PutObject)" if plan["singlePut"] else
                                           f", the last {human(plan['lastPartSize'])}"),
        f"  upload:     {plan['status']}" + (f" {plan['uploadId']}, {plan['partsLogged']} parts logged as done"
                                            if plan["uploadId"] else ""),
        f"  to send:    {human(plan['bytesToSend'])}",
        f"  threads:    {plan['threads']}; memory bound {human(plan['memoryBound'])} of part data in flight "
        "(threads x 1 MiB blocks: parts are streamed, never held whole)",
        f"  checksum:   {plan['checksum']} ({plan['checksumWhy']})",
        f"  requests:   {reqs}" + ("" if plan["status"] == "completed" else
                                       ", and a HeadObject unless the completion answer proves the object"),
    ]
    if plan.get("maxBandwidth"):
        lines.append(f"  bandwidth:  at most {human(plan['maxBandwidth'])}/s (--max-bandwidth)")
    if plan.get("objectProperties"):
        lines.append(f"  object:     {properties_text(plan['objectProperties'])}")
    click.echo("\n".join(lines))


def _stream_plan(plan: dict[str, Any]) -> list[str]:
    source = "stdin" if plan["source"] == "-" else plan["source"]
    size = f"about {human(plan['bytes'])} (--expected-size)" if plan["bytes"] is not None else \
        "not known until its end (--expected-size sizes the parts for a length)"
    lines = [
        f"Plan for s3://{plan['bucket']}/{plan['key']} from {source}, a stream (dry run: nothing is read or sent)",
        f"  data:       {size}",
        f"  part size:  {human(plan['partSize'])} ({plan['partSizeWhy']})",
        "  schedule:   " + ", ".join(f"{human(t['partSize'])} x {t['lastPart'] - t['firstPart'] + 1:,} "
                                     f"(to {human(t['upTo'])})" for t in plan["schedule"]),
        f"  holds:      up to {human(plan['capacity'])} in {plan['maxParts']:,} parts; a longer stream stops "
        "before the part after the last, with exit 2",
        f"  upload:     {plan['status']}" + (f" {plan['uploadId']}, {plan['partsLogged']} parts logged: a part read "
                                            "with the same bytes is not sent again" if plan["uploadId"] else ""),
        f"  memory:     at most {human(plan['maxMemory'])} of parts held (--max-memory), {plan['threads']} threads"
        + (f"; parts of {human(plan['spoolFrom'])} or more go to spool files in {plan['spoolDir']} (at most "
           f"{human(plan['spoolBound'])} on its disk at once)" if plan["spoolFrom"] else ""),
        f"  checksum:   {plan['checksum']} ({plan['checksumWhy']})",
        "  requests:   " + ", ".join(f"{'one per part' if n is None else n} {name}"
                                     for name, n in plan["requests"].items() if n != 0)
        + ", and a HeadObject unless the completion answer proves the object (a one-part stream: one PutObject "
          "instead)",
    ]
    if plan.get("maxBandwidth"):
        lines.append(f"  bandwidth:  at most {human(plan['maxBandwidth'])}/s (--max-bandwidth)")
    if plan.get("objectProperties"):
        lines.append(f"  object:     {properties_text(plan['objectProperties'])}")
    return lines


def properties_text(properties: dict[str, Any]) -> str:
    """The object's properties on one line, as their options: --storage-class GLACIER_IR --sse aws:kms ..."""
    return " ".join(f"--{name.replace('_', '-')} {value if isinstance(value, str) else json.dumps(value)}"
                    for name, value in properties.items())


def show_many_plan(plan: Iterable[dict[str, Any]], bucket: str, as_json: bool) -> None:
    """--dry-run with many files: a line (or a JSON object) per file as the walk finds it, then the totals."""
    counts = {"send": 0, "skip": 0}
    size = 0
    for doc in plan:
        counts[doc["action"]] += 1
        if doc["action"] == "send":
            size += doc["bytes"]
        if as_json:
            events.planned(bucket, doc)
        else:
            click.echo(f"{'send' if doc['action'] == 'send' else 'skip'}  {doc['file']} -> s3://{bucket}/{doc['key']}"
                       f"  ({doc['why']})")
    if as_json:
        events.planned_summary(bucket, counts["send"], counts["skip"], size)
    else:
        click.echo(f"Dry run: {counts['send']} files to send ({human(size)}), {counts['skip']} skipped; nothing "
                   "was sent.")
