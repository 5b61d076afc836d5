"""The one exception tree of the tool; every class carries the exit code the CLI returns for it.

Messages name the file, bucket or key involved; ``hint`` says what to do next. The CLI
(`main.py`) is the only place that turns these into exit codes and text.
"""

from __future__ import annotations

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


class Interrupted(UploadError):
    """SIGINT or SIGTERM stopped the upload (exit 130); ``at_once`` when parts were left in flight."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str, hint: str | None = None, at_once: bool = False) -> None:
        super().__init__(message, hint)
        self.at_once = at_once
