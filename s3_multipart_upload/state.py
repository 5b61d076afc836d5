"""The two state files that make resume work, and the lock that guards them.

META_FILE (JSON, replaced atomically: temp file in the same folder, fsync, rename)::

    {"bucket": "my-bucket", "key": "data/input.txt", "uploadId": "OQBr...", "splitSize": 67108864,
     "schemaVersion": 1, "status": "in_progress",
     "source": {"kind": "file", "path": "/abs/input.txt", "size": 1073741824, "mtimeNs": 1700000000000000000},
     "partCount": 16, "checksumAlgorithm": "MD5", "createdAt": "2026-11-21T10:00:00Z"}

The first four keys are the historical format, which is still read. ``uploadId`` is null for
an object small enough to go in one PutObject. What a run learnt about the store is kept too
(``verifiesCRC64NVME``: ``--checksum auto``'s probe; ``contentMD5``, ``eTagsNotMD5``: the Sender's).

PARTS_FILE (JSON Lines, one line appended per finished part, flushed and fsync'd before the
part counts as done; lines arrive in any order)::

    {"eTag": "5ca0dc854f8e8b356b0049144ed63056", "partNumber": 1, "uploadId": "OQBr...", "size": 67108864}
    {"eTag": "...", "partNumber": 2, "uploadId": "OQBr...", "size": 67108864, "checksum": "pHnN5SGsVv8="}

``checksum`` is the part's checksum in META's checksumAlgorithm (here CRC64NVME), computed from
the local bytes when the part was sent: a full-object checksum is combined from these.

Lines of another uploadId are ignored; a torn last line (a crash mid-write) is ignored with a
warning and cut off before the next append; any other bad line is an error naming the line.
Neither file ever holds credentials or presigned URLs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s3_multipart_upload.errors import BadInput, StateConflict, TemporaryFailure

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
ABORTED = "aborted"


@dataclass
class Meta:
    bucket: str
    key: str
    upload_id: str | None
    split_size: int
    status: str = IN_PROGRESS
    source: dict[str, Any] | None = None  # None: written by the historical tool
    part_count: int | None = None
    checksum_algorithm: str | None = None
    created_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys of later versions, kept as they are

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "bucket": self.bucket,
            "key": self.key,
            "uploadId": self.upload_id,
            "splitSize": self.split_size,
            "schemaVersion": SCHEMA_VERSION,
            "status": self.status,
        }
        if self.source is not None:
            doc["source"] = self.source
        for name, value in (
            ("partCount", self.part_count),
            ("checksumAlgorithm", self.checksum_algorithm),
            ("createdAt", self.created_at),
        ):
            if value is not None:
                doc[name] = value
        doc.update(self.extra)
        return doc

    @classmethod
    def from_json(cls, doc: Any, path: Path) -> Meta:
        if not isinstance(doc, dict):
            raise StateConflict(f"meta file {path} does not hold a JSON object", _move_aside_hint(path))
        known = {"bucket", "key", "uploadId", "splitSize", "schemaVersion", "status", "source",
                 "partCount", "checksumAlgorithm", "createdAt"}
        try:
            bucket, key, upload_id, split_size = doc["bucket"], doc["key"], doc["uploadId"], doc["splitSize"]
        except KeyError as missing:
            raise StateConflict(f"meta file {path} lacks the key {missing}", _move_aside_hint(path)) from None
        if not (isinstance(bucket, str) and isinstance(key, str) and isinstance(split_size, int)
                and (upload_id is None or isinstance(upload_id, str))):
            raise StateConflict(f"meta file {path} has a bucket, key, uploadId or splitSize of the wrong type",
                                _move_aside_hint(path))
        optional = (("source", dict), ("partCount", int), ("checksumAlgorithm", str), ("createdAt", str))
        wrong = [name for name, kind in optional if doc.get(name) is not None and not isinstance(doc[name], kind)]
        if wrong:
            raise StateConflict(f"meta file {path} has a {' and a '.join(wrong)} of the wrong type",
                                _move_aside_hint(path))
        return cls(
            bucket=bucket,
            key=key,
            upload_id=upload_id,
            split_size=split_size,
            status=str(doc.get("status", IN_PROGRESS)),
            source=doc.get("source"),
            part_count=doc.get("partCount"),
            checksum_algorithm=doc.get("checksumAlgorithm"),
            created_at=doc.get("createdAt"),
            extra={k: v for k, v in doc.items() if k not in known},
        )


def _move_aside_hint(path: Path) -> str:
    return f"look at {path}; if it is not this upload's, give another -m path or move it aside"


def read_meta(path: Path) -> Meta | None:
    """The meta file's contents, or None if there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise BadInput(f"meta file {path} is a directory", "give a file path to -m") from None
    except OSError as exc:
        raise BadInput(f"cannot read meta file {path}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateConflict(f"meta file {path} is not valid JSON ({exc.msg} at line {exc.lineno})",
                            _move_aside_hint(path)) from None
    return Meta.from_json(doc, path)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_meta(path: Path, meta: Meta) -> None:
    write_atomic(path, json.dumps(meta.to_json(), indent=2) + "\n")


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_meta(bucket: str, key: str, upload_id: str | None, split_size: int, source: dict[str, Any], part_count: int,
             checksum: str, extra: dict[str, Any]) -> Meta:
    """META of an upload this run starts (or adopts), stamped with its time."""
    return Meta(bucket=bucket, key=key, upload_id=upload_id, split_size=split_size, source=source,
                part_count=part_count, checksum_algorithm=checksum, created_at=_now_iso(), extra=dict(extra))


def mark_completed(path: Path, meta: Meta, etag: str | None, checksum: tuple[str, str] | None) -> None:
    """META says completed, with the object's ETag and, where it has one, the whole object's checksum
    (algorithm, base64) as `aws s3api head-object --checksum-mode ENABLED` shows it, to compare later."""
    meta.status = COMPLETED
    meta.extra["completedAt"] = _now_iso()
    if etag:
        meta.extra["eTag"] = etag
    if checksum is not None:
        meta.extra[f"checksum{checksum[0]}"] = checksum[1]
    write_meta(path, meta)


def mark_aborted(path: Path, meta: Meta) -> None:
    meta.status = ABORTED
    meta.extra["abortedAt"] = _now_iso()
    write_meta(path, meta)


def check_writable_dir(path: Path, what: str) -> None:
    """Fail before anything is sent if ``path``'s folder will not take our files."""
    folder = path.parent
    if not folder.is_dir():
        raise BadInput(f"the folder of the {what} {path} does not exist", f"create {folder} first")
    if path.is_dir():
        raise BadInput(f"the {what} {path} is a directory", f"give a file path, such as {path / 'upload.json'}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise BadInput(f"cannot write the {what} {path}: {exc.strerror}",
                       f"make {folder} writable or choose another path") from None
    os.close(fd)
    os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class PartRecord:
    etag: str  # without quotes
    number: int
    upload_id: str
    size: int | None = None
    checksum: str | None = None  # the part's checksum (base64) in META's checksumAlgorithm, computed locally

    def to_line(self) -> str:
        doc: dict[str, Any] = {"eTag": self.etag, "partNumber": self.number, "uploadId": self.upload_id}
        if self.size is not None:
            doc["size"] = self.size
        if self.checksum is not None:
            doc["checksum"] = self.checksum
        return json.dumps(doc, separators=(", ", ": ")) + "\n"


def read_parts(path: Path, upload_id: str) -> dict[int, PartRecord]:
    """The parts of ``upload_id`` logged in ``path`` by number (the last line of a number wins)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except IsADirectoryError:
        raise BadInput(f"parts file {path} is a directory", "give a file path to -a") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, as every complete line does
    if tail:
        if _whole_record(tail):
            lines.append(tail)  # a whole record that only lacks its newline (older logs): keep it
        else:
            log.warning("Ignoring the unfinished last line of %s (the previous run stopped while writing it).",
                        path)
    parts: dict[int, PartRecord] = {}
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = _parse_part_line(raw, path, lineno)
        if record.upload_id == upload_id:
            parts[record.number] = record
    return parts


def _whole_record(raw: bytes) -> bool:
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and {"eTag", "partNumber", "uploadId"} <= doc.keys()


def _parse_part_line(raw: bytes, path: Path, lineno: int) -> PartRecord:
    hint = f"fix or delete line {lineno} of {path}; S3 still holds the parts, and a rerun adopts them"
    try:
        doc = json.loads(raw)
        etag, number, upload_id = doc["eTag"], doc["partNumber"], doc["uploadId"]
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError):
        raise StateConflict(f"parts file {path} line {lineno} is not a part record", hint) from None
    size, checksum = doc.get("size"), doc.get("checksum")
    if not (isinstance(etag, str) and isinstance(number, int) and isinstance(upload_id, str)
            and (size is None or isinstance(size, int)) and (checksum is None or isinstance(checksum, str))):
        raise StateConflict(f"parts file {path} line {lineno} has a field of the wrong type", hint)
    return PartRecord(etag.strip('"'), number, upload_id, size, checksum)


class PartsLog:
    """Appends part records; a record is on disk (fsync'd) when ``append`` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._broken: TemporaryFailure | None = None
        self._file = open(path, "ab")  # noqa: SIM115 - closed in close()
        self._cut_torn_tail()

    def _cut_torn_tail(self) -> None:
        size = os.fstat(self._file.fileno()).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            # A torn tail is shorter than any whole record; read back far enough to find its start.
            start = max(0, size - 64 * 1024)
            f.seek(start)
            tail = f.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if _whole_record(tail[cut + 1:]):
            self._file.write(b"\n")  # a whole record without its newline: end it, do not cut it
            self._file.flush()
        else:
            os.truncate(self.path, start + cut + 1 if cut >= 0 else start)
        os.fsync(self._file.fileno())

    def append(self, record: PartRecord) -> None:
        """One line, on disk (fsync) before it returns. A write that fails (a full disk) stops every later
        append too: the part is not counted as done, and a torn line is cut off when the log is next opened."""
        line = record.to_line().encode()
        with self._lock:
            if self._broken is not None:
                raise self._broken
            try:
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                self._broken = TemporaryFailure(
                    f"cannot write the parts log {self.path}: {exc.strerror or exc}",
                    f"free space in {self.path.parent} (or fix the disk), then rerun the same command: parts sent "
                    "but not logged are found on the server and checked against the file")
                raise self._broken from exc

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            if self._broken is None:
                raise  # the buffer of a failed append may fail again here: that error is already reported

    def __enter__(self) -> PartsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def meta_lock(meta_path: Path, shared: bool = False) -> Iterator[None]:
    """Hold an OS lock on ``META.lock`` beside the meta file, or fail at once: exclusive for a run of the whole
    upload, shared among the shards of one (``--shard``), so that a finisher cannot run while a shard does."""
    lock_path = meta_path.with_name(meta_path.name + ".lock")
    busy = (f"another s3-multipart-upload process is working on {meta_path} (it holds {lock_path})",
            "wait for it to finish, or stop it, then rerun")
    with file_lock(lock_path, shared, busy, f"make {lock_path.parent} writable or choose another -m path"):
        yield


@contextlib.contextmanager
def file_lock(lock_path: Path, shared: bool, busy: tuple[str, str], unwritable_hint: str) -> Iterator[None]:
    """flock ``lock_path`` (created if needed) without waiting; ``busy`` is the (message, hint) when another
    process holds it. On a file system without flock (Lustre mounted without -o flock) the run goes on unlocked,
    with a warning."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise BadInput(f"cannot create the lock file {lock_path}: {exc.strerror}", unwritable_hint) from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateConflict(*busy) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            log.warning("The file system of %s does not lock files (%s): nothing stops two runs of this upload "
                        "at once here.", lock_path, exc.strerror)
        yield
    finally:
        os.close(fd)


# -- the state folder: META and PARTS the tool names itself ------------------------------------------------
#
#     $XDG_STATE_HOME/s3-multipart-upload/        (default ~/.local/state/s3-multipart-upload; --state-dir)
#         3f9c...e1/                              one folder per upload: sha256 of (endpoint, bucket, key, source)
#             upload.json                         what the folder is for: {"endpoint", "bucket", "key", "source"}
#             meta.json  parts.jsonl              META_FILE and PARTS_FILE, as with -m and -a
#             meta.json.lock

STATE_APP = "s3-multipart-upload"
RECORD = "upload.json"
META_NAME = "meta.json"
PARTS_NAME = "parts.jsonl"


def state_root(given: Path | None = None) -> Path:
    """--state-dir, else $XDG_STATE_HOME/s3-multipart-upload, else ~/.local/state/s3-multipart-upload."""
    if given is not None:
        return given.expanduser().absolute()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / STATE_APP


@dataclass(frozen=True)
class StateFolder:
    """One upload's folder in the state root: its META and PARTS paths, and the record of what it is for."""

    path: Path

    @property
    def meta(self) -> Path:
        return self.path / META_NAME

    @property
    def parts(self) -> Path:
        return self.path / PARTS_NAME

    def record(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.path / RECORD).read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def last_activity(self) -> float:
        """The newest mtime of the folder's files (epoch seconds): when the upload last moved."""
        times = [p.stat().st_mtime for p in (self.path / RECORD, self.meta, self.parts) if p.exists()]
        return max(times, default=self.path.stat().st_mtime)


def state_folder(root: Path, endpoint: str, bucket: str, key: str, source: str, given_endpoint: str | None = None,
                 create: bool = True) -> StateFolder:
    """The folder of the upload of ``source`` to ``endpoint``/``bucket``/``key`` (the endpoint as boto3 resolved
    it), made with its record if new (unless ``create`` is False: a dry run). The same four values give the same
    folder, so rerunning the same command finds its state. ``given_endpoint`` (--endpoint-url, or None) is kept in
    the record for ``clean``, which aborts abandoned uploads."""
    ident = json.dumps([endpoint, bucket, key, source], ensure_ascii=False)
    folder = StateFolder(root / hashlib.sha256(ident.encode()).hexdigest()[:32])
    if not create:
        return folder
    try:
        folder.path.mkdir(parents=True, exist_ok=True)
        if not (folder.path / RECORD).exists():
            record = {"endpoint": endpoint, "bucket": bucket, "key": key, "source": source,
                      "endpointUrl": given_endpoint}
            write_atomic(folder.path / RECORD, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise BadInput(f"cannot use the state folder {root}: {exc.strerror or exc}",
                       "make it writable, or give another one with --state-dir (or -m and -a)") from None
    return folder


def state_folders(root: Path) -> list[StateFolder]:
    """The upload folders under ``root`` (those with a record), oldest activity first."""
    if not root.is_dir():
        return []
    found = [StateFolder(p) for p in root.iterdir() if p.is_dir() and (p / RECORD).is_file()]
    return sorted(found, key=lambda f: f.last_activity())


# -- the batch journal -----------------------------------------------------------------------------------------

JOURNAL_FOLDER = "batches"
JOURNAL_GROUP = 64  # lines between fsyncs
JOURNAL_SECONDS = 1.0  # and at most this long between them


@dataclass(frozen=True)
class Finished:
    """A file the batch finished: where it went, and the identity it had when it was read."""

    key: str
    path: str
    size: int
    mtime_ns: int
    etag: str | None

    def to_line(self) -> str:
        return json.dumps({"key": self.key, "path": self.path, "size": self.size, "mtimeNs": self.mtime_ns,
                           "eTag": self.etag}, ensure_ascii=False) + "\n"


def read_journal(path: Path) -> tuple[dict[str, Finished], set[str], int]:
    """A journal's finished files by key, the keys sent but not recorded finished, and the length of a torn last
    line (0 if none). A missing journal is an empty one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}, set(), 0
    lines = data.split(b"\n")
    tail = lines.pop()
    finished: dict[str, Finished] = {}
    sending: set[str] = set()
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
            key = doc["key"]
            if doc.get("sending"):
                sending.add(key)
                continue
            finished[key] = Finished(key, doc["path"], int(doc["size"]), int(doc["mtimeNs"]), doc.get("eTag"))
        except (ValueError, KeyError, TypeError):
            raise StateConflict(f"batch journal {path} line {lineno} is not a journal record",
                                f"fix or delete line {lineno} (deleting the journal only makes the next run "
                                "check every file again)") from None
        sending.discard(key)
    return finished, sending, len(tail)


def journal_path(root: Path, endpoint: str, bucket: str, prefix: str, sources: str) -> Path:
    """The journal of the batches from ``sources`` (a folder's absolute path, or the folders of the files given) to
    ``endpoint``/``bucket``/``prefix``: the same command finds the same journal, and batches of other folders into
    the same prefix (the tasks of an array job) each have their own."""
    ident = json.dumps([endpoint, bucket, prefix, sources], ensure_ascii=False)
    return root / JOURNAL_FOLDER / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.jsonl"


class Journal:
    """A batch's record of finished files (JSON Lines, append-only), so that a rerun skips them without asking the
    server anything::

        {"key": "run/a.txt", "path": "/abs/run/a.txt", "size": 16384, "mtimeNs": 1700000000000000000, "eTag": "..."}
        {"key": "run/b.txt", "sending": true}

    A ``sending`` line goes before a one-part file's PutObject: a file sent but not yet recorded finished when the
    process died is looked up on the server by the rerun (size and ETag against its MD5) instead of being sent
    again. Each line is written whole with one write() (a killed process loses nothing the OS holds) and fsync'd
    in groups (every JOURNAL_GROUP lines or JOURNAL_SECONDS, and at close): a power cut loses at most the last
    group, whose files are sent again (the same bytes to the same keys). A torn last line is ignored with a
    warning and cut off before the next append; any other bad line is an error naming the line. The journal is
    held with an OS lock: one process per journal (the same sources and destination) at a time.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.finished: dict[str, Finished] = {}
        self.sending: set[str] = set()
        self._lock = threading.Lock()
        self._pending = 0
        self._synced_at = 0.0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "ab")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise BadInput(f"cannot write the batch journal {path}: {exc.strerror or exc}",
                           "make the state folder writable, or give another one with --state-dir") from None
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._file.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StateConflict(f"another s3-multipart-upload process is uploading the same files to the same "
                                    f"destination (journal {path})", "wait for it to finish, or stop it") from None
            raise
        self._read()

    def _read(self) -> None:
        self.finished, self.sending, torn = read_journal(self.path)
        if torn:
            log.warning("Ignoring the unfinished last line of %s (the previous run stopped while writing it).",
                        self.path)
            os.truncate(self.path, self.path.stat().st_size - torn)

    def done(self, key: str, path: str, size: int, mtime_ns: int) -> Finished | None:
        """The record of ``key`` if it is this file, unchanged since it was sent."""
        found = self.finished.get(key)
        if found is not None and (found.path, found.size, found.mtime_ns) == (path, size, mtime_ns):
            return found
        return None

    def _write(self, line: str) -> None:
        with self._lock:
            self._file.write(line.encode())
            self._file.flush()  # whole lines reach the OS at once: a killed process loses none
            self._pending += 1
            now = time.monotonic()
            if self._pending >= JOURNAL_GROUP or now - self._synced_at >= JOURNAL_SECONDS:
                os.fsync(self._file.fileno())
                self._pending, self._synced_at = 0, now

    def start(self, key: str) -> None:
        self._write(json.dumps({"key": key, "sending": True}, ensure_ascii=False) + "\n")

    def record(self, finished: Finished) -> None:
        self._write(finished.to_line())

    def close(self) -> None:
        with self._lock:
            if self._file.closed:
                return
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
