"""The one exception tree of the tool; every class carries the exit code the CLI returns for it.

Messages name the file, bucket or key involved; ``hint`` says what to do next. The CLI
(``cli/``) is the only place that turns these into exit codes and text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    BUG = 1
    USAGE = 2
    CONFLICT = 3
    UPLOAD_GONE = 4
    REFUSED = 5
    TEMPORARY = 75
    INTERRUPTED = 130


class UploadError(Exception):
    """Base class: an error the tool expected and can explain."""

    exit_code = ExitCode.BUG
    partial: object = None  # what an upload or copy had done when it stopped (its UploadResult), for summaries

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadInput(UploadError):
    """The command line or a local input file is wrong (exit 2)."""

    exit_code = ExitCode.USAGE


class StateConflict(UploadError):
    """Local state disagrees with the command: file changed, foreign META/PARTS, lock held (exit 3)."""

    exit_code = ExitCode.CONFLICT


class SourceChanged(StateConflict):
    """The data changed since the upload began, or while it was read (exit 3): its parts must not be completed
    into one object. Under --shard, one task seeing it stops every other from completing."""


class UploadGone(UploadError):
    """The multipart upload no longer exists on the server (exit 4)."""

    exit_code = ExitCode.UPLOAD_GONE


class ServerRefused(UploadError):
    """The server refused the request for good: access denied, no such bucket (exit 5)."""

    exit_code = ExitCode.REFUSED


class TemporaryFailure(UploadError):
    """Retries exhausted or a passing condition; the same command will succeed later (exit 75)."""

    exit_code = ExitCode.TEMPORARY


class CredentialsExpired(TemporaryFailure):
    """Credentials expired and a refreshed session did not help (exit 75)."""


class IntegrityError(UploadError):
    """The object on the server does not match the local bytes (exit 1: must never happen)."""

    exit_code = ExitCode.BUG


class BatchFailed(UploadError):
    """Some of several uploads did not complete (``upload_many``, ``clean``): the exit code is the most urgent of
    theirs (see URGENCY), the message names the first; ``result`` holds every file's outcome, where there is one."""

    def __init__(self, code: ExitCode, message: str, hint: str | None = None, result: object = None) -> None:
        super().__init__(message, hint)
        self.exit_code = code
        self.result = result


class Interrupted(UploadError):
    """SIGINT or SIGTERM stopped the upload (exit 130)."""

    exit_code = ExitCode.INTERRUPTED


# A batch exits with the most urgent code of its files' failures: first those a person must look at (a bug, a
# local conflict, an upload gone, a refusal, bad input), then those a plain rerun fixes (75, 130).
URGENCY = (ExitCode.BUG, ExitCode.CONFLICT, ExitCode.UPLOAD_GONE, ExitCode.REFUSED, ExitCode.USAGE,
           ExitCode.TEMPORARY, ExitCode.INTERRUPTED)


@dataclass(frozen=True)
class Failure:
    """What a failure means to the caller: the exit code, the message, the next step, and whether the same
    command resumes it."""

    code: ExitCode
    message: str
    hint: str | None = None

    @property
    def resumable(self) -> bool:
        return self.code in (ExitCode.TEMPORARY, ExitCode.INTERRUPTED)


def failure_of(exc: BaseException) -> Failure:
    """The one mapping from a failure to (exit code, message, hint); anything unexpected is a bug (exit 1)."""
    if isinstance(exc, UploadError):
        return Failure(exc.exit_code, exc.message, exc.hint)
    if isinstance(exc, KeyboardInterrupt):
        return Failure(ExitCode.INTERRUPTED, "interrupted")
    return Failure(ExitCode.BUG, f"unexpected {type(exc).__name__}: {exc}",
                   "this is a bug; rerun with -v and report the output")


def most_urgent(codes: list[ExitCode]) -> ExitCode:
    """0 when ``codes`` is empty, else the first of URGENCY among them."""
    return next((code for code in URGENCY if code in codes), ExitCode.OK)
