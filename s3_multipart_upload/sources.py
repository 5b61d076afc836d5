"""Where part bytes come from: one local file, a folder of pre-split chunk files, or an S3 object.

Workers read their own byte range with ``os.pread`` (no shared file position), so any number
of threads read one file at once, and a retry re-reads its bytes from disk. An S3 object is
read with ranged GETs conditional on its ETag, or, when both sides are one store, copied on the
server (UploadPartCopy) without its bytes passing through this machine.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import stat
import urllib.parse
from pathlib import Path
from typing import Any, Protocol

from s3_multipart_upload.errors import BadInput, ServerRefused, SourceChanged, StateConflict, TemporaryFailure
from s3_multipart_upload.plan import MAX_PARTS, Part, Plan, plan_bytes, plan_chunks
from s3_multipart_upload.properties import source_request_args
from s3_multipart_upload.s3 import ClientFactory, Endpoint, Requester, RetryPolicy, describe, error_code, translate
from s3_multipart_upload.stream import PartSource, PartStream, RangeReader

log = logging.getLogger(__name__)


class Source(Protocol):
    """The bytes of the object to build, and the identity that tells whether they changed."""

    total_size: int
    server_side: bool  # parts are copied by the store itself (UploadPartCopy), not sent

    def plan(self, split_size: int | None, fixed: bool, max_parts: int = MAX_PARTS) -> Plan: ...

    def open_range(self, part: Part) -> RangeReader:
        """The part's bytes, read in order (a retry opens the range again)."""
        ...

    def read(self, part: Part) -> bytes:
        """The part's bytes in memory: for samples and small parts, never on the data path."""
        ...

    def identity(self) -> dict[str, Any]: ...

    def check_unchanged(self, recorded: dict[str, Any], meta_path: Path) -> None: ...

    def covers(self, path: Path) -> bool:
        """Whether ``path`` is (or, once created, would be) part of the data: state files must not be."""
        ...

    def recheck(self) -> None:
        """Raise StateConflict if the data changed since this object looked at it (before completing)."""
        ...

    def server_side_copy(self, part: Part) -> dict[str, Any] | None:
        """UploadPartCopy arguments for ``part`` when the store copies it itself, else None."""
        ...


def _stat_regular_file(path: Path, what: str, devices: bool = False) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist", "check the path") from None
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{what} {path} is a directory",
                       "give a file to -f, or use -d DIR -p PREFIX for a folder of chunk files")
    if not stat.S_ISREG(st.st_mode) and not (devices and stat.S_ISBLK(st.st_mode)):
        raise BadInput(f"{what} {path} is not a regular file, a block device or a stream (a socket?)",
                       "upload a file, a device, or a stream: - (stdin), a named pipe or a character device")
    if not os.access(path, os.R_OK):
        raise BadInput(f"cannot read {what} {path}: permission denied", "check the file's permissions")
    return st


class _FileRange:
    """One part's bytes of one file, read with os.pread from its own descriptor (no shared position)."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self.path = path
        self._next = offset
        self._end = offset + length
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise SourceChanged(f"{path} disappeared during the upload", "put the file back (the parts sent are "
                                "kept), or start over with --restart") from None
        except OSError as exc:
            raise TemporaryFailure(f"cannot read {path}: {exc.strerror}", "rerun once the file is readable") from None

    def read(self, size: int) -> bytes:
        size = min(size, self._end - self._next)
        if size <= 0 or self._fd is None:
            return b""
        try:
            data = os.pread(self._fd, size, self._next)
        except OSError as exc:
            raise TemporaryFailure(f"cannot read {self.path} at byte {self._next}: {exc.strerror}",
                                   "rerun once the file is readable") from None
        if not data:
            raise SourceChanged(
                f"{self.path} is shorter than when the upload was planned (read ended at byte {self._next})",
                "the file changed during the upload; start again with --restart once it is final",
            )
        self._next += len(data)  # a short read (allowed by POSIX) is fine: the caller asks again
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_whole(source: PartSource, part: Part) -> bytes:
    """A part's bytes in memory: for samples and one-part checks only, never on the data path."""
    stream = PartStream(source, part)
    try:
        return bytes(stream.read())
    finally:
        stream.close()


def _changed_hint(meta_path: Path) -> str:
    return (f"the parts already sent hold the old bytes; rerun with --restart to start a new upload "
            f"(the old parts log is kept aside), or restore the original file (meta file {meta_path})")


def _device_size(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise BadInput(f"cannot read the device {path}: {exc.strerror}", "check its permissions") from None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ino, a.st_dev) == (b.st_size, b.st_mtime_ns, b.st_ino, b.st_dev)


class FileSource:
    server_side = False

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self._stat = _stat_regular_file(self.path, "file", devices=True)
        # A block device (a disk, a partition, an LVM snapshot, a loop device) is read as a file is, at offsets, by
        # several threads; its size is the device's, and it is known by its device number and size (the node's
        # mtime says nothing of its contents).
        self.device = stat.S_ISBLK(self._stat.st_mode)
        self.total_size = _device_size(self.path) if self.device else self._stat.st_size
        self._mtime_ns = self._stat.st_mtime_ns

    def plan(self, split_size: int | None, fixed: bool, max_parts: int = MAX_PARTS) -> Plan:
        return plan_bytes(self.total_size, split_size, fixed, max_parts)

    def open_range(self, part: Part) -> RangeReader:
        return _FileRange(self.path, part.offset, part.length)

    def read(self, part: Part) -> bytes:
        return read_whole(self, part)

    def identity(self) -> dict[str, Any]:
        if self.device:
            return {"kind": "device", "path": str(self.path), "size": self.total_size, "rdev": self._stat.st_rdev}
        return {"kind": "file", "path": str(self.path), "size": self.total_size, "mtimeNs": self._mtime_ns}

    def check_unchanged(self, recorded: dict[str, Any], meta_path: Path) -> None:
        if self.device or recorded.get("kind") == "device":
            if recorded.get("path") != str(self.path) or recorded.get("kind") != ("device" if self.device else "file"):
                raise StateConflict(f"meta file {meta_path} belongs to an upload of {recorded.get('path')}, not "
                                    f"{self.path}", "give that device, or another -m and -a path for this one")
            if (recorded.get("size"), recorded.get("rdev")) != (self.total_size, self._stat.st_rdev):
                raise SourceChanged(f"{self.path} is another device, or another size, than when the upload began "
                                    f"({recorded.get('size')} -> {self.total_size} bytes)", _changed_hint(meta_path))
            return
        if recorded.get("kind") != "file":
            raise StateConflict(f"meta file {meta_path} belongs to an upload of a folder of chunks, not of {self.path}",
                                "give the same -d/-p as that upload, or another -m path")
        if recorded.get("path") != str(self.path):
            raise StateConflict(
                f"meta file {meta_path} belongs to an upload of {recorded.get('path')}, not {self.path}",
                "give that file, or another -m and -a path for this one")
        if recorded.get("size") != self.total_size or recorded.get("mtimeNs") != self._mtime_ns:
            raise SourceChanged(
                f"{self.path} changed since the upload began (size {recorded.get('size')} -> {self.total_size} "
                f"bytes, mtime {recorded.get('mtimeNs')} -> {self._mtime_ns})",
                _changed_hint(meta_path),
            )

    def covers(self, path: Path) -> bool:
        return path.resolve() == self.path

    def recheck(self) -> None:
        try:
            now = self.path.stat()
        except OSError:
            now = None
        if self.device and now is not None and now.st_rdev == self._stat.st_rdev and \
                _device_size(self.path) == self.total_size:
            return  # (a device's contents are the user's to hold still: upload a snapshot, not a mounted disk)
        if now is None or not _same_file(now, self._stat):
            raise SourceChanged(f"{self.path} changed or was replaced during the upload",
                                "the object would mix two versions, so it was not completed; rerun with --restart "
                                "once the file is final")

    def server_side_copy(self, part: Part) -> dict[str, Any] | None:
        return None


class ChunkDirSource:
    """The files in ``folder`` whose names start with ``prefix``, sorted by name, one part each."""

    server_side = False

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder = folder.resolve()
        self.prefix = prefix
        if not self.folder.is_dir():
            raise BadInput(f"chunk folder {folder} does not exist or is not a folder", "check the -d path")
        names = sorted(p.name for p in self.folder.iterdir() if p.name.startswith(prefix) and not p.is_dir())
        if not names:
            raise BadInput(f"no file in {self.folder} has a name starting with {prefix!r}",
                           "check -d and -p (the prefix that split gave its chunks, such as x or part_)")
        self._files = [self.folder / n for n in names]
        self._stats = [_stat_regular_file(p, "chunk file") for p in self._files]
        self.total_size = sum(st.st_size for st in self._stats)

    def plan(self, split_size: int | None, fixed: bool, max_parts: int = MAX_PARTS) -> Plan:
        return plan_chunks([st.st_size for st in self._stats], [str(p) for p in self._files], max_parts)

    @property
    def names(self) -> list[str]:
        """The chunk files, one a part, in order."""
        return [str(p) for p in self._files]

    def open_range(self, part: Part) -> RangeReader:
        return _FileRange(self._files[part.number - 1], 0, part.length)

    def read(self, part: Part) -> bytes:
        return read_whole(self, part)

    def identity(self) -> dict[str, Any]:
        return {
            "kind": "chunks",
            "path": str(self.folder),
            "prefix": self.prefix,
            "size": self.total_size,
            "files": [{"name": p.name, "size": st.st_size, "mtimeNs": st.st_mtime_ns}
                      for p, st in zip(self._files, self._stats, strict=True)],
        }

    def check_unchanged(self, recorded: dict[str, Any], meta_path: Path) -> None:
        if recorded.get("kind") != "chunks" or recorded.get("path") != str(self.folder) \
                or recorded.get("prefix") != self.prefix:
            raise StateConflict(f"meta file {meta_path} belongs to another upload ({recorded.get('path')})",
                                "give the same -f or -d/-p as that upload, or another -m path")
        if recorded.get("files") != self.identity()["files"]:
            raise SourceChanged(f"the chunk files {self.folder}/{self.prefix}* changed since the upload began",
                                _changed_hint(meta_path))

    def covers(self, path: Path) -> bool:
        path = path.resolve()
        return path.parent == self.folder and path.name.startswith(self.prefix)

    def recheck(self) -> None:
        for path, then in zip(self._files, self._stats, strict=True):
            try:
                now = path.stat()
            except OSError:
                now = None
            if now is None or not _same_file(now, then):
                raise SourceChanged(f"chunk file {path} changed or was replaced during the upload",
                                    "the object would mix two versions, so it was not completed; rerun with "
                                    "--restart once the chunks are final")

    def server_side_copy(self, part: Part) -> dict[str, Any] | None:
        return None


class _ObjectRange:
    """The body of one ranged GET, which must hold exactly the part's bytes."""

    def __init__(self, source: S3ObjectSource, part: Part, body: Any) -> None:
        self._source, self._part, self._body = source, part, body
        self._left = part.length

    def _short(self) -> SourceChanged:
        part = self._part
        return SourceChanged(f"the source object {self._source.url} did not return exactly {part.length} bytes for "
                             f"bytes={part.offset}-{part.offset + part.length - 1}",
                             "it may have changed; rerun with --restart to copy it again")

    def read(self, size: int) -> bytes:
        if self._body is None:
            return b""
        if self._left == 0:
            if self._body.read(1):
                raise self._short()
            return b""
        data = bytes(self._body.read(min(size, self._left)))
        if not data:
            raise self._short()
        self._left -= len(data)
        return data

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> (bucket, key)."""
    if not url.startswith("s3://") or "/" not in url[5:] or url[5:].startswith("/") or url.endswith("/"):
        raise BadInput(f"{url!r} is not an S3 object URL", "write it as s3://BUCKET/KEY")
    bucket, key = url[5:].split("/", 1)
    return bucket, key


def parse_s3_target(url: str) -> tuple[str, str]:
    """A destination as aws-cli writes it: ``s3://bucket/key``, or ``s3://bucket/prefix/`` and ``s3://bucket``
    for a folder (the key or prefix is then "" or ends with a slash)."""
    bucket, _, key = url[5:].partition("/")
    if not url.startswith("s3://") or not bucket:
        raise BadInput(f"{url!r} is not an S3 destination", "write it as s3://BUCKET/KEY, or s3://BUCKET/PREFIX/ "
                       "for several files")
    return bucket, key


def object_source(url: str, src: Endpoint, dest: Endpoint, dest_object: tuple[str | None, str | None],
                  through_client: bool, pool_size: int, policy: RetryPolicy,
                  sse_c_key: bytes | None = None) -> S3ObjectSource:
    """The object a copy reads: copied by the store itself (UploadPartCopy) when source and destination are one
    store with one set of credentials, unless ``through_client`` asks to read and send each part. ``sse_c_key``:
    the source's SSE-C key (its reads carry it; UploadPartCopy carries it from the destination's requests)."""
    bucket, key = parse_s3_url(url)
    server_side = src == dest and not through_client
    if server_side and (bucket, key) == dest_object:
        raise BadInput(f"the source and the destination are the same object, s3://{bucket}/{key}",
                       "give another -b/-k")
    reads = None if sse_c_key is None else functools.partial(source_request_args, sse_c_key)
    clients = ClientFactory(src, pool_size=pool_size, request_args=reads)
    return S3ObjectSource(bucket, key, clients, policy, server_side=server_side)


def source_id(source: Source) -> str:
    """What names the source in a state folder's identity: an absolute path, or an object's URL."""
    if isinstance(source, FileSource):
        return str(source.path)
    if isinstance(source, ChunkDirSource):
        return f"{source.folder}/{source.prefix}*"
    if isinstance(source, S3ObjectSource):
        return f"{source.endpoint_url or ''} {source.url}".strip()
    if source.identity().get("kind") == "stream":
        return "stdin"  # one stream upload per endpoint, bucket and key, whichever pipe or path it comes from
    raise TypeError(f"unknown source {source!r}")


class S3ObjectSource:
    """An object in S3 (or another store) to copy. Every read is conditional on the ETag seen at the start."""

    def __init__(self, bucket: str, key: str, clients: ClientFactory, policy: RetryPolicy, server_side: bool) -> None:
        self.bucket, self.key = bucket, key
        self.url = f"s3://{bucket}/{key}"
        self.endpoint_url = clients.endpoint.endpoint_url
        self._requests = Requester(clients, policy)
        # Part reads run inside the transfer's own retries: one try each here, or the two would multiply.
        self._reads = Requester(clients, RetryPolicy(attempts=1))
        self.server_side = server_side
        head = self._head()
        self.head = head
        self.total_size = int(head["ContentLength"])
        self.etag = str(head["ETag"])  # with its quotes, as If-Match wants it
        modified = head.get("LastModified")
        self.last_modified = modified.isoformat() if modified is not None else None

    def _head(self) -> dict[str, Any]:
        try:
            return dict(self._requests.call("HeadObject", lambda c: c.head_object(Bucket=self.bucket, Key=self.key)))
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise BadInput(f"source object {self.url} does not exist", "check --source and the source "
                               "endpoint, profile and region") from None
            raise translate(exc, self.bucket, self.key, where=f"the source object {self.url}") from exc

    def plan(self, split_size: int | None, fixed: bool, max_parts: int = MAX_PARTS) -> Plan:
        return plan_bytes(self.total_size, split_size, fixed, max_parts)

    def copied_properties(self) -> dict[str, Any]:
        """What a copy keeps of the source by default (aws-cli's ``--copy-props default``): its content headers, its
        user metadata and its tags, as ObjectProperties fields. A store without tags gives none, and says so."""
        head = self.head
        found: dict[str, Any] = {name: head.get(arg) for name, arg in (
            ("content_type", "ContentType"), ("content_encoding", "ContentEncoding"),
            ("content_language", "ContentLanguage"), ("content_disposition", "ContentDisposition"),
            ("cache_control", "CacheControl"))}
        if isinstance(head.get("Expires"), dt.datetime):
            found["expires"] = head["Expires"].astimezone(dt.UTC).isoformat()
        found["metadata"] = dict(head.get("Metadata") or {})
        try:  # one try: stores without tags answer 501, 405 or even 500 (rclone serve s3)
            tags = self._reads.call("GetObjectTagging", lambda c: c.get_object_tagging(
                Bucket=self.bucket, Key=self.key)).get("TagSet", [])
        except Exception as exc:
            refused = translate(exc, self.bucket, self.key, where=f"the tags of the source object {self.url}")
            if isinstance(refused, ServerRefused):  # no s3:GetObjectTagging: say so rather than drop the tags
                refused.hint = "allow s3:GetObjectTagging on the source, or copy with --metadata-directive REPLACE"
                raise refused from exc
            log.warning("The source's store did not give its tags (%s): the copy has none.", describe(exc))
            tags = []
        found["tagging"] = urllib.parse.urlencode([(t["Key"], t["Value"]) for t in tags]) or None
        return {k: v for k, v in found.items() if v not in (None, {})}

    def _changed(self, what: str) -> SourceChanged:
        return SourceChanged(f"the source object {self.url} changed {what} (its ETag is no longer {self.etag})",
                             "the copy would mix two versions; rerun with --restart to copy the new version")

    def open_range(self, part: Part) -> RangeReader:
        """A ranged GET, conditional on the ETag, read as the upload of the part consumes it."""
        if part.length == 0:
            return _ObjectRange(self, part, None)
        byte_range = f"bytes={part.offset}-{part.offset + part.length - 1}"
        try:
            # body_size=0: the read timeout of a request whose answer starts at once (Timeouts.answer, 20 s), which
            # also bounds each wait for the body's next bytes: a stalled GET fails the part's try, which is retried.
            response = self._reads.call(f"GetObject {self.url} {byte_range}", lambda c: c.get_object(
                Bucket=self.bucket, Key=self.key, Range=byte_range, IfMatch=self.etag), body_size=0)
        except Exception as exc:
            if error_code(exc) in ("PreconditionFailed", "412", "InvalidRange", "416"):
                raise self._changed("during the copy") from exc
            raise
        # Some stores (rclone serve s3) ignore If-Match: the ETag of what was served says which version it was.
        if response.get("ETag") not in (None, self.etag):
            response["Body"].close()
            raise self._changed("during the copy")
        return _ObjectRange(self, part, response["Body"])

    def read(self, part: Part) -> bytes:
        return read_whole(self, part)

    def identity(self) -> dict[str, Any]:
        return {"kind": "s3", "bucket": self.bucket, "key": self.key, "size": self.total_size, "eTag": self.etag,
                "lastModified": self.last_modified}

    def check_unchanged(self, recorded: dict[str, Any], meta_path: Path) -> None:
        if (recorded.get("kind"), recorded.get("bucket"), recorded.get("key")) != ("s3", self.bucket, self.key):
            raise StateConflict(f"meta file {meta_path} belongs to another upload or copy, not from {self.url}",
                                "give the same --source as that copy, or another -m and -a path")
        now = self._head()
        if (recorded.get("eTag"), recorded.get("size")) != (str(now["ETag"]), int(now["ContentLength"])):
            raise SourceChanged(
                f"the source object {self.url} changed since the copy began (ETag {recorded.get('eTag')} -> "
                f"{now['ETag']}, size {recorded.get('size')} -> {now['ContentLength']})",
                "the parts already copied hold the old version; rerun with --restart to copy the new one")

    def covers(self, path: Path) -> bool:
        return False

    def recheck(self) -> None:
        now = self._head()
        if (str(now["ETag"]), int(now["ContentLength"])) != (self.etag, self.total_size):
            raise self._changed("during the copy")

    def server_side_copy(self, part: Part) -> dict[str, Any] | None:
        if not self.server_side:
            return None
        args: dict[str, Any] = {"CopySource": {"Bucket": self.bucket, "Key": self.key},
                                "CopySourceIfMatch": self.etag}
        if self.total_size:
            args["CopySourceRange"] = f"bytes={part.offset}-{part.offset + part.length - 1}"
        return args
