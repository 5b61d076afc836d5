"""The one place that writes the CLI's JSON (``--json``): events of a run and its summary, and the documents of
``status``, ``list`` and ``--dry-run``. Names and fields are a stable interface (docs: Exit codes and JSON events)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from s3_multipart_upload.batch import Outcome, result_json
from s3_multipart_upload.errors import ExitCode, Failure
from s3_multipart_upload.job import UploadResult
from s3_multipart_upload.progress import JsonProgress, NullProgress, Reporter
from s3_multipart_upload.proof import Verdict, VerifyResult


def emit_json(doc: Any) -> None:
    """One JSON document on its own line of stdout."""
    click.echo(json.dumps(doc, default=str))


def events(as_json: bool, display: Reporter | None = None) -> JsonProgress | None:
    """The JSON Lines writer of a run (it also passes each report on to ``display``), or None without --json."""
    return JsonProgress(sys.stdout, display or NullProgress()) if as_json else None


def failed(out: JsonProgress, failure: Failure, where: dict[str, Any], rerun: str) -> None:
    """``paused`` (a rerun resumes it) or ``error``, then the summary."""
    code = int(failure.code)
    out.event("paused" if failure.resumable else "error", exitCode=code, error=failure.message, hint=failure.hint,
              rerun=rerun if failure.resumable else None)
    out.event("summary", status="paused" if failure.resumable else "error", exitCode=code, error=failure.message,
              **where)


def partial_of(exc: BaseException, bucket: str | None, key: str | None) -> dict[str, Any]:
    """The summary's fields after a failure: the object, and how far the upload got where the run knew it (the
    upload id, the parts in all, sent by this run, already done and adopted, the bytes sent)."""
    partial = getattr(exc, "partial", None)
    if not isinstance(partial, UploadResult):
        return {"bucket": bucket, "key": key}
    fields = result_json(partial)
    return {name: fields[name] for name in ("bucket", "key", "uploadId", "size", "partsTotal", "partsSent",
                                            "partsAlreadyDone", "partsAdopted", "bytesSent", "checksumAlgorithm")}


def finished(out: JsonProgress, result: UploadResult, shard_done: bool) -> None:
    """``completed`` and the summary of one upload; a shard that left the completion to another: the summary."""
    summary = result_json(result)
    if result.shard is not None:
        summary |= {"shard": result.shard, "partsLeft": result.parts_left, "completedBy": result.completed_by}
    if shard_done:
        out.event("summary", status="shard_done", exitCode=0, **summary)
        return
    out.event("completed", alreadyComplete=result.already_complete, **summary)
    out.event("summary", status="already_complete" if result.already_complete else "completed", exitCode=0,
              **summary)


def file_done(out: JsonProgress, outcome: Outcome, bucket: str) -> None:
    """One file of several ended."""
    fields: dict[str, Any] = {"file": str(outcome.item.path), "bucket": bucket, "key": outcome.item.key,
                              "status": outcome.status, "exitCode": int(outcome.code)}
    if outcome.result is not None:
        fields.update(result_json(outcome.result))
    if outcome.failure is not None:
        fields.update(error=outcome.failure.message, hint=outcome.failure.hint)
    out.event("file_done", **fields)


def batch_summary(out: JsonProgress, code: ExitCode, bucket: str, counts: dict[str, Any]) -> None:
    out.event("summary", status="completed" if code == ExitCode.OK else "error", exitCode=int(code), bucket=bucket,
              **counts)


def verified(verdict: Verdict) -> None:
    """``verify``: one file's verdict."""
    emit_json({"event": "verified", **verdict.to_json()})


def verify_summary(result: VerifyResult) -> None:
    c = result.counts()
    emit_json({"event": "summary", "status": "identical" if result.identical else "not_identical",
               "exitCode": int(result.exit_code), "files": len(result.verdicts), "identical": c["identical"],
               "differs": c["differs"], "missingRemote": c["missing_remote"], "missingLocal": c["missing_local"],
               "unproven": c["unproven"], "failed": c["error"], "seconds": round(result.seconds, 3)})


def planned(bucket: str, doc: dict[str, Any]) -> None:
    """``upload --dry-run`` with many files: one file sent or skipped, and why."""
    emit_json({"event": "planned", "bucket": bucket, **doc})


def planned_summary(bucket: str, to_send: int, skipped: int, size: int) -> None:
    emit_json({"event": "summary", "status": "dry_run", "exitCode": 0, "bucket": bucket, "toSend": to_send,
               "skipped": skipped, "bytesToSend": size})
