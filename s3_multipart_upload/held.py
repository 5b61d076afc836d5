"""A stream as the engine's Source: stdin, a FIFO, ``/dev/fd/N``, a character device or a binary file object, read
once, in order, each part held from its read until the store has it (a retry needs its bytes).

A part is held in anonymous memory (a buffer the next part of its size reuses: no pages to fault in again), or,
when large, in a spool file unlinked at once (nothing is left behind, whatever ends the process). The stream is
opened only when the run starts, after every check: opening a named pipe waits for its writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import mmap
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from s3_multipart_upload.errors import BadInput, StateConflict, TemporaryFailure
from s3_multipart_upload.plan import MAX_PARTS, Part, Plan
from s3_multipart_upload.sources import read_whole
from s3_multipart_upload.stream import BLOCK, RangeReader

PIPE_SIZE = 1 << 20  # bytes a pipe holds (Linux's most for a user: /proc/sys/fs/pipe-max-size)


def is_stream(path: str | os.PathLike[str]) -> bool:
    """``-`` (stdin), or a path that is a pipe or a character device: data read once, in order."""
    if str(path) == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


class _Held:
    """One part's bytes, held until the store has them: a buffer, or a spool file (unlinked at once)."""

    def __init__(self, data: mmap.mmap | None, spool: IO[bytes] | None, length: int) -> None:
        self.data, self.spool, self.length = data, spool, length

    def reader(self) -> RangeReader:
        return _HeldRange(self)

    def close(self) -> None:
        if self.data is not None:
            with contextlib.suppress(BufferError):  # a view the HTTP client still holds: freed with it
                self.data.close()
            self.data = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None


class _HeldRange:
    def __init__(self, held: _Held) -> None:
        self._held, self._at = held, 0

    def read(self, size: int) -> bytes | memoryview:
        held = self._held
        size = min(size, held.length - self._at)
        if size <= 0:
            return b""
        chunk: bytes | memoryview
        if held.data is not None:
            chunk = memoryview(held.data)[self._at:self._at + size]  # no copy: the part stays until it is let go
        elif held.spool is not None:
            chunk = os.pread(held.spool.fileno(), size, self._at)
        else:
            raise RuntimeError("a part's bytes were read after they were let go")
        self._at += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class StreamSource:
    """The stream as the engine's Source: the parts read so far and still held, by number."""

    server_side = False

    def __init__(self, path: str | os.PathLike[str] | IO[bytes], spool_dir: Path | None = None) -> None:
        if isinstance(path, io.TextIOBase):
            raise BadInput(f"{getattr(path, 'name', 'the stream')} is a text stream: the data is read as bytes",
                           "give its binary stream (sys.stdin.buffer, or open(..., 'rb'))")
        self._source = path
        self._file: IO[bytes] | None = None
        self._fd: int | None = None
        self._own_fd = False
        self.name = "-" if str(path) == "-" else str(getattr(path, "name", "stream")) \
            if not isinstance(path, (str, os.PathLike)) else str(path)
        self.spool_dir = Path(spool_dir or tempfile.gettempdir())
        self.total_size = 0  # bytes read so far
        self.ended = False
        self.memory = 0  # bytes of the parts held in memory
        self._held: dict[int, _Held] = {}
        self._free: list[mmap.mmap] = []  # buffers of parts let go, of the size being read: no new pages to fault in
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open the stream (a named pipe: once its writer opened it), after the run's checks."""
        path = self._source
        if not isinstance(path, (str, os.PathLike)):
            self._file = path
            return
        if str(path) == "-":
            if os.isatty(0):
                raise BadInput("the data to upload is stdin (-), and stdin is a terminal",
                               "pipe the data in: producer | s3-multipart-upload upload - s3://BUCKET/KEY")
            self._fd = 0
        else:
            try:
                self._fd, self._own_fd = os.open(path, os.O_RDONLY), True
            except OSError as exc:
                raise BadInput(f"cannot read the stream {path}: {exc.strerror}", "check the path") from None
        with contextlib.suppress(OSError, AttributeError):  # a pipe's buffer of 1 MiB: fewer, larger reads
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)

    def check_spool(self) -> str | None:
        """Refuse a spool folder that cannot take a file (before the stream is read, not when the first large part
        comes, hours in); say so when it is in memory (tmpfs), where spooled parts take RAM."""
        try:
            with tempfile.TemporaryFile(dir=self.spool_dir, prefix="s3mu-part-") as probe:
                probe.write(b"x")
        except OSError as exc:
            raise BadInput(f"cannot write a spool file in {self.spool_dir}: {exc.strerror or exc}",
                           "give --spool-dir a writable folder with room for the large parts in flight") from None
        return filesystem_type(self.spool_dir)

    def _readinto(self, view: memoryview, at: int = 0) -> int:
        """Read into ``view``; ``at``: the bytes of the part being read so far (for the message)."""
        try:
            if self._file is None:
                assert self._fd is not None
                return os.readv(self._fd, [view])
            got = self._file.readinto(view) if hasattr(self._file, "readinto") else None
            if got is None:  # a file object without readinto, or a non-blocking one with nothing yet
                data = self._file.read(len(view))
                view[:len(data)] = data
                return len(data)
            return int(got)
        except OSError as exc:
            raise TemporaryFailure(f"cannot read the stream {self.name} at byte {self.total_size + at}: "
                                   f"{exc.strerror or exc}", "rerun with the producer working: the parts already "
                                   "on the store are not sent again if their bytes are the same") from None

    def read_part(self, number: int, size: int, spool: bool) -> Part:
        """The next part: up to ``size`` bytes (fewer only at the stream's end), held until ``release``."""
        held: _Held
        got = 0
        if spool:
            self._drop_free()  # the parts are spooled from here on: the memory buffers are of no more use
            spool_file = self._spool_file()
            held = _Held(None, spool_file, 0)
            block = bytearray(BLOCK)
            view = memoryview(block)
            try:
                for _ in range(size + 1):  # each read takes a byte or more, or ends the stream
                    n = self._readinto(view[:min(len(view), size - got)], got) if got < size else 0
                    if n == 0:
                        break
                    self._spool_write(spool_file, view[:n])
                    got += n
            except BaseException:
                held.close()
                raise
        else:
            # Anonymous memory, given back to the system when the part is let go: pages come as bytes are read
            # (a last part shorter than its size costs only its bytes), and none stay in the allocator's pools.
            data = self._buffer(size)
            with memoryview(data) as view:
                for _ in range(size + 1):
                    n = self._readinto(view[got:size], got) if got < size else 0
                    if n == 0:
                        break
                    got += n
            held = _Held(data, None, 0)
        held.length = got
        part = Part(number, self.total_size, got)
        with self._lock:
            self._held[number] = held
            if not spool:
                self.memory += got
        self.total_size += got
        self.ended = got < size
        return part

    def _buffer(self, size: int) -> mmap.mmap:
        """A buffer of ``size`` bytes: one a part let go, or new (parts of one size follow each other)."""
        with self._lock:
            while self._free:
                buffer = self._free.pop()
                if len(buffer) == max(size, 1):
                    return buffer
                with contextlib.suppress(BufferError):  # (a view still held: freed with it)
                    buffer.close()  # the parts grew: the smaller buffers are of no more use
        return mmap.mmap(-1, max(size, 1))

    def _spool_write(self, spool: IO[bytes], data: memoryview) -> None:
        written = 0
        try:
            for _ in range(len(data) + 1):  # each write takes a byte or more
                if written == len(data):
                    return
                written += os.write(spool.fileno(), data[written:])
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            raise TemporaryFailure(f"cannot write a spool file in {self.spool_dir}: {exc.strerror or exc}",
                                   ("free some room there, or give --spool-dir a folder with room for -t + 1 parts, "
                                    "then rerun" if full else "give --spool-dir another folder, then rerun")
                                   + " (the parts on the store are not sent again)") from None

    def _drop_free(self) -> None:
        with self._lock:
            for buffer in self._free:
                with contextlib.suppress(BufferError):
                    buffer.close()
            self._free.clear()

    def _spool_file(self) -> IO[bytes]:
        try:
            return tempfile.TemporaryFile(dir=self.spool_dir, prefix="s3mu-part-")
        except OSError as exc:
            raise TemporaryFailure(f"cannot make a spool file in {self.spool_dir}: {exc.strerror}",
                                   "give --spool-dir a writable folder with room for the large parts in flight, then "
                                   "rerun") from None

    def more(self) -> bool:
        """Whether the stream has another byte (read and kept: for the check past the last part allowed)."""
        one = bytearray(1)
        return self._readinto(memoryview(one)) == 1

    def release(self, number: int) -> None:
        """Let a part go (once the store has it, or its sending ended): its buffer is kept for the next part read,
        its spool file deleted."""
        with self._lock:
            held = self._held.pop(number, None)
            if held is None:
                return
            if held.data is not None:
                self.memory -= held.length
                self._free.append(held.data)
                held.data = None
        held.close()

    def close(self) -> None:
        for number in list(self._held):
            self.release(number)
        self._drop_free()
        if self._own_fd and self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- the Source protocol -------------------------------------------------------------------------------------

    def plan(self, split_size: int | None, fixed: bool, max_parts: int = MAX_PARTS) -> Plan:
        if not self.ended or len(self._held) != 1:
            raise ValueError("a stream's plan is known only once it was read whole, in one part")
        return Plan(split_size or self.total_size, (Part(1, 0, self.total_size),), self.total_size)

    def open_range(self, part: Part) -> RangeReader:
        with self._lock:
            held = self._held.get(part.number)
        if held is None:
            raise RuntimeError(f"part {part.number} of the stream is no longer held")
        return held.reader()

    def read(self, part: Part) -> bytes:
        return read_whole(self, part)

    def identity(self) -> dict[str, Any]:
        return {"kind": "stream", "path": self.name}

    def check_unchanged(self, recorded: dict[str, Any], meta_path: Path) -> None:
        if recorded.get("kind") != "stream":
            raise StateConflict(f"meta file {meta_path} belongs to an upload of {recorded.get('path')}, not of a "
                                "stream", "give another -m and -a path for the stream")

    def covers(self, path: Path) -> bool:
        return self.name != "-" and Path(self.name).resolve() == path.resolve()

    def recheck(self) -> None:
        pass  # a stream's parts are checked by their content on every run

    def server_side_copy(self, part: Part) -> dict[str, Any] | None:
        return None


def filesystem_type(folder: Path) -> str | None:
    """The type of the file system ``folder`` is on (``tmpfs``, ``ext4``...), from /proc/self/mounts; None if
    not known."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        target = folder.resolve()
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if (target == point or point in target.parents) and (best is None or len(str(point)) > best[0]):
            best = (len(str(point)), fields[2])
    return best[1] if best else None
