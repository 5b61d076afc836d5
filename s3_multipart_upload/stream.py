"""The streaming data path: a part's bytes go from the source to the socket in blocks, never whole.

Memory is one block per part in flight (``BLOCK``, 1 MiB), whatever the part size: a 5 GiB part
costs what a 5 MiB one does. ``PartStream`` is the body the HTTP client reads; it reads the next
block from the source when the client asks for more, hashes it as it goes, and hands out views of
it (a block is a fresh ``bytes`` object, so a view stays valid whoever keeps it). A retry opens the
range again: bytes are read again from the source, never replayed from memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

from s3_multipart_upload import checksums
from s3_multipart_upload.bandwidth import Bandwidth
from s3_multipart_upload.errors import SourceChanged
from s3_multipart_upload.plan import MiB, Part

BLOCK = 1 * MiB


class RangeReader(Protocol):
    """Sequential reads of one part's bytes from its source."""

    def read(self, size: int) -> bytes | memoryview:
        """Up to ``size`` bytes, b"" only at the end of the range (a source that ends early raises); a view of bytes
        that stay as they are while the part is being sent (a stream's held part)."""
        ...

    def close(self) -> None: ...


class PartSource(Protocol):
    def open_range(self, part: Part) -> RangeReader: ...


class PartStream:
    """A part as a read-only file for the HTTP client, hashed as it is read.

    ``hasher`` (optional) sees every byte handed out, in order, from the start; ``digest()`` says
    what it computed, or None when the client did not read the body exactly once from start to end
    (a rewind starts the hash again)."""

    def __init__(self, source: PartSource, part: Part, algorithm: str | None = None,
                 bandwidth: Bandwidth | None = None) -> None:
        self._source = source
        self._bandwidth = bandwidth  # --max-bandwidth: each read waits for its share before it goes
        self._part = part
        self._algorithm = algorithm
        self._reader: RangeReader | None = None
        self._hasher: checksums.Hasher | None = None
        self._block = memoryview(b"")
        self._at = 0  # position in the part of the block's end
        self._pos = 0
        # What the source raised while the HTTP client read the body (which wraps it in an error of its own,
        # "transient" to the retry layer): the sender raises this instead, a changed file is not a network blip.
        self.failure: Exception | None = None

    def _open(self) -> None:
        self.close()
        try:
            self._reader = self._source.open_range(self._part)
        except Exception as exc:
            self.failure = exc
            raise
        self._hasher = checksums.new_hasher(self._algorithm) if self._algorithm else None
        self._block = memoryview(b"")
        self._at = self._pos = 0

    def read(self, size: int | None = -1) -> bytes | memoryview:
        """Up to ``size`` bytes, as a view of the current block (no copy); everything left for no size
        (how in-process fakes read a body)."""
        if size is None or size < 0:
            return b"".join(bytes(chunk) for chunk in self.chunks())
        if self._reader is None:
            self._open()
        assert self._reader is not None
        if self._pos == self._part.length or size == 0:
            return b""
        offset = len(self._block) - (self._at - self._pos)
        if offset == len(self._block):
            try:
                block = self._reader.read(min(BLOCK, self._part.length - self._at))
            except Exception as exc:
                self.failure = exc
                raise
            if self._hasher is not None:
                self._hasher.update(block)
            self._block = memoryview(block)
            self._at += len(block)
            offset = 0
        chunk = self._block[offset:offset + size]
        self._pos += len(chunk)
        if self._bandwidth is not None:  # each piece the HTTP client takes waits for its share: the connection
            self._bandwidth.take(len(chunk))  # keeps moving at the rate instead of idling a block's time, then bursting
        return chunk

    def chunks(self) -> Iterator[memoryview | bytes]:
        """The rest of the part, a block (or less, after a short read) at a time."""
        for _ in range(self._part.length - self._pos + 1):  # every read but the last hands out a byte or more
            chunk = self.read(BLOCK)
            if not chunk:
                return
            yield chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Only a rewind to the start (an HTTP client retrying the body) or a no-op."""
        target = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._part.length}[whence] + offset
        if target == self._pos:
            return self._pos
        if target != 0:
            raise OSError(f"a part stream can only be rewound to its start, not to byte {target}")
        self._open()
        return 0

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self._part.length

    def digest(self) -> checksums.PartChecksum | None:
        if self._hasher is None or self._algorithm is None or self._pos != self._part.length:
            return None
        return checksums.finish(self._algorithm, self._hasher)

    def close(self) -> None:
        self._block = memoryview(b"")  # (a view of a stream's held part: it must not keep the part's memory)
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def digest_part(source: PartSource, part: Part, algorithm: str) -> checksums.PartChecksum:
    """The checksum of a part, read from its source block by block (memory: one block)."""
    stream = PartStream(source, part, algorithm)
    try:
        for _ in stream.chunks():
            pass
        digest = stream.digest()
    finally:
        stream.close()
    if digest is None:  # the reader ended before the part did without saying so: a source that changed
        raise SourceChanged(f"part {part.number} could not be read whole ({stream.tell()} of {part.length} bytes)",
                            "the data changed during the upload; start again with --restart once it is final")
    return digest
