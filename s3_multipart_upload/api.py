"""The public Python API: everything the command line does, for programs. The CLI (``cli/``) is a thin layer over it.

    from s3_multipart_upload import upload
    result = upload("big.tar", "s3://my-bucket/backups/big.tar", thread_count=16)

Resume is the command line's: call the same function with the same arguments after any interruption and it sends
only what is missing (the state lives in the state folder, or in ``meta_file_path``/``parts_file_path``). Nothing
is printed: progress goes to ``progress=`` (a function or a Reporter), log records to the ``s3_multipart_upload``
logger (which has a NullHandler), errors are raised as the UploadError tree, each with the CLI's ``exit_code``.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Unpack

from s3_multipart_upload import checksums
from s3_multipart_upload import shard as shards_
from s3_multipart_upload.controller import (
    FILE_ID,
    FILE_ID_RULE,
    TOKEN_ENV,
    ControllerAPI,
    Declared,
    controller_upload,
    read_token,
)
from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.held import StreamSource, is_stream
from s3_multipart_upload.job import UploadRequest, UploadResult
from s3_multipart_upload.options import OPTION_NAMES, PathArg, TransferOptions, _Opts
from s3_multipart_upload.pipe import DEFAULT_MAX_MEMORY, StreamUploader
from s3_multipart_upload.plan import MiB, human, parse_size
from s3_multipart_upload.progress import CallbackProgress, NullProgress, ProgressEvent, Reporter
from s3_multipart_upload.properties import ObjectProperties, read_key_file
from s3_multipart_upload.s3 import ClientFactory, RetryPolicy, resolved_endpoint
from s3_multipart_upload.sources import (
    ChunkDirSource,
    FileSource,
    S3ObjectSource,
    Source,
    object_source,
    parse_s3_url,
    source_id,
)
from s3_multipart_upload.state import read_meta, state_folder, state_root
from s3_multipart_upload.uploader import Uploader

Progress = Reporter | Callable[[ProgressEvent], None]
log = logging.getLogger(__name__)
READ_BLOCK = 8 * 2**20  # bytes read at a time to hash a whole file


def _reporter(progress: Progress | None, key: str | None = None) -> Reporter:
    if progress is None:
        return NullProgress()
    if hasattr(progress, "part_done"):
        return progress  # type: ignore[return-value]
    return CallbackProgress(progress, key)


def _destination(dest: str | None, bucket: str | None, key: str | None) -> tuple[str, str]:
    if dest is not None:
        if bucket is not None or key is not None:
            raise BadInput(f"give the destination once: {dest}, or bucket and key, not both")
        return parse_s3_url(dest)
    if not bucket or not key:
        raise BadInput("no destination: give s3://BUCKET/KEY (or -b BUCKET -k KEY)")
    return bucket, key


def _is_stream(source: PathArg | IO[bytes]) -> bool:
    """``-`` (stdin), a pipe, a character device, or a binary file object: data read once, in order."""
    return not isinstance(source, (str, os.PathLike)) or is_stream(source)


def _local_source(source: PathArg | IO[bytes], prefix: str | None, stream: _StreamOpts | None = None) -> Source:
    """A file, or with ``prefix`` a folder of chunk files whose names start with it (``-d DIR -p PREFIX``)."""
    if not isinstance(source, (str, os.PathLike)):
        raise BadInput("a file object is a stream: upload() takes it, upload_many() and copy() do not")
    given = [flag for flag, value in (("--expected-size", stream and stream.expected_size),
                                      ("--max-memory", stream and stream.max_memory_given),
                                      ("--spool-dir", stream and stream.spool_dir)) if value is not None]
    if given:
        flag = given[0]
        raise BadInput(f"{flag} goes with a stream (-, a pipe or a character device), and {source} is a file",
                       f"leave out {flag}")
    if prefix is not None:
        return ChunkDirSource(Path(source), prefix)
    return FileSource(Path(source))


@dataclasses.dataclass(frozen=True)
class _StreamOpts:
    """The options of an upload from a stream (checked)."""

    expected_size: int | None = None
    max_memory_given: int | None = None
    spool_dir: Path | None = None

    @property
    def max_memory(self) -> int:
        return self.max_memory_given or DEFAULT_MAX_MEMORY

    @classmethod
    def of(cls, expected_size: int | str | None, max_memory: int | str | None,
           spool_dir: PathArg | None) -> _StreamOpts:
        sizes: dict[str, int | None] = {}
        for name, value, low in (("expected_size", expected_size, 0), ("max_memory", max_memory, 16 * MiB)):
            size = None if value is None else parse_size(value)
            if value is not None and (size is None or size < low):
                raise BadInput(f"--{name.replace('_', '-')} {value!r} is not a size of {human(low)} or more",
                               "examples: 64M, 10G, 1T")
            sizes[name] = size
        if spool_dir is not None and not Path(spool_dir).is_dir():
            raise BadInput(f"--spool-dir {spool_dir} is not a folder", "give an existing folder with room for the "
                           "large parts in flight")
        return cls(sizes["expected_size"], sizes["max_memory"], None if spool_dir is None else Path(spool_dir))


def upload(source: PathArg | IO[bytes], dest: str | None = None, *, bucket: str | None = None,
           key: str | None = None, prefix: str | None = None, skip_identical: bool = False,
           controller: str | None = None, file_id: str | None = None, token_file: PathArg | None = None,
           token: str | None = None, declare_checksum: Sequence[str] = (), expected_size: int | str | None = None,
           max_memory: int | str | None = None, spool_dir: PathArg | None = None, progress: Progress | None = None,
           **options: Unpack[TransferOptions]) -> UploadResult:
    """Upload a file (or, with ``prefix``, a folder of chunk files, or a stream) to ``dest``, ``s3://BUCKET/KEY``,
    resumably.

    Call it again with the same arguments after any failure and it sends only what is missing. A stream (``"-"``
    for stdin, a pipe, a character device, or a binary file object) is read once, in order; called again, it reads
    the stream again from its start and sends only the parts whose bytes differ from those the store holds.

    Args:
        source: The file; with ``prefix``, the folder of chunk files (``-d``); ``"-"``, a FIFO or a file object: a
            stream.
        dest: ``s3://BUCKET/KEY``; or give ``bucket`` and ``key``.
        prefix: Upload the files of the folder ``source`` whose names start with it, sorted, as the parts.
        skip_identical: A new upload whose key already holds these bytes (size and MD5) is recorded as done
            without sending (as ``upload FILE s3://B/K`` does). Not under ``shard``.
        controller: Upload through this upload controller (no AWS credentials); needs ``file_id`` and a token
            (``token``, ``token_file`` or ``S3MU_CONTROLLER_TOKEN``).
        declare_checksum: Through a controller: ``"sha256"`` and/or ``"crc64nvme"`` of the whole file, computed
            (one more read of the file, beside the parts' sending) and declared with the completion, so that the
            controller accepts or rejects the object.
        expected_size: A stream's length, about (``"10G"``): its parts are sized as for a file of that size.
        max_memory: A stream's parts held in memory at most (default 256 MiB); larger parts go to spool files.
        spool_dir: Where a stream's large parts are spooled (default: the system's temporary folder).
        progress: A function called with a ProgressEvent, or a Reporter.
        **options: TransferOptions.

    Returns:
        What was done: the object's size, parts, ETag, checksum, and what this call sent.

    Raises:
        UploadError: Its ``exit_code`` is the CLI's; ``TemporaryFailure`` and ``Interrupted`` mean: call again.
    """
    opts = _Opts.of(options)
    shard = _shard_of(opts)
    stream = _StreamOpts.of(expected_size, max_memory, spool_dir)
    if _is_stream(source):
        return _stream(source, (dest, bucket, key), prefix, opts, stream, shard, progress,  # type: ignore
                       (controller, file_id, token_file, token, declare_checksum))
    src = _local_source(source, prefix, stream)
    if controller is not None or file_id is not None or token_file is not None or token is not None:
        return _through_controller(src, (dest, bucket, key), controller, file_id, (token, token_file), opts,
                                   shard, progress, planning=False, declare=declare_checksum)  # type: ignore
    if declare_checksum:
        raise BadInput("--declare-checksum goes with --controller: it declares the file's checksum to the controller",
                       "leave it out, or upload through a controller")
    return _transfer(src, _destination(dest, bucket, key), opts, shard, progress,  # type: ignore[return-value]
                     skip_identical=skip_identical and shard is None)


def plan_upload(source: PathArg | IO[bytes], dest: str | None = None, *, bucket: str | None = None,
                key: str | None = None, prefix: str | None = None, controller: str | None = None,
                file_id: str | None = None, token_file: PathArg | None = None, token: str | None = None,
                expected_size: int | str | None = None, max_memory: int | str | None = None,
                spool_dir: PathArg | None = None, **options: Unpack[TransferOptions]) -> dict[str, Any]:
    """What ``upload`` with these arguments would do, from the local files only (``--dry-run``): part size and
    why, parts, bytes to send, memory, checksum, requests. Sends nothing; the keys are those of ``--dry-run --json``.
    A stream's plan (``"stream": true``) reads nothing of it: it gives the part schedule and what it can hold.
    """
    opts = _Opts.of(options)
    shard = _shard_of(opts)
    stream = _StreamOpts.of(expected_size, max_memory, spool_dir)
    if _is_stream(source):
        return _stream(source, (dest, bucket, key), prefix, opts, stream, shard, None,  # type: ignore[return-value]
                       (controller, file_id, token_file, token, ()), planning=True)
    src = _local_source(source, prefix, stream)
    if controller is not None or file_id is not None or token_file is not None or token is not None:
        return _through_controller(src, (dest, bucket, key), controller, file_id, (token, token_file), opts,
                                   shard, None, planning=True)  # type: ignore[return-value]
    return _transfer(src, _destination(dest, bucket, key), opts, shard, None, planning=True)  # type: ignore


def copy(source: str, dest: str | None = None, *, bucket: str | None = None, key: str | None = None,
         source_endpoint_url: str | None = None, source_profile: str | None = None, source_region: str | None = None,
         through_client: bool = False, metadata_directive: str = "COPY",
         copy_source_sse_c_key_file: PathArg | None = None, progress: Progress | None = None,
         **options: Unpack[TransferOptions]) -> UploadResult:
    """Copy the object ``source`` (``s3://BUCKET/KEY``) to ``dest`` in parts, resumably.

    One store and one set of credentials: the store copies each part (UploadPartCopy); otherwise, or with
    ``through_client``, each part is read with a ranged GET and uploaded. Every read is conditional on the source's
    ETag: a source that changes mid-copy raises SourceChanged (exit 3). The ``source_*`` arguments default to the
    destination's. The copy keeps the source's content headers, metadata and tags (``metadata_directive="COPY"``),
    or takes the options' instead (``"REPLACE"``); its storage class, encryption, ACL and Object Lock are the
    options'. ``copy_source_sse_c_key_file``: the source's SSE-C key.
    """
    opts = _Opts.of(options)
    src, target, shard, props = _copy_source(source, (dest, bucket, key), (source_endpoint_url, source_profile,
                                             source_region), through_client, metadata_directive,
                                             copy_source_sse_c_key_file, opts)
    return _transfer(src, target, opts, shard, progress, props)  # type: ignore[return-value]


def plan_copy(source: str, dest: str | None = None, *, bucket: str | None = None, key: str | None = None,
              source_endpoint_url: str | None = None, source_profile: str | None = None,
              source_region: str | None = None, through_client: bool = False, metadata_directive: str = "COPY",
              copy_source_sse_c_key_file: PathArg | None = None, **options: Unpack[TransferOptions]) -> dict[str, Any]:
    """What ``copy`` with these arguments would do (``--dry-run``); asks the source for its size, sends nothing."""
    opts = _Opts.of(options)
    src, target, shard, props = _copy_source(source, (dest, bucket, key), (source_endpoint_url, source_profile,
                                             source_region), through_client, metadata_directive,
                                             copy_source_sse_c_key_file, opts)
    return _transfer(src, target, opts, shard, None, props, planning=True)  # type: ignore[return-value]


# The properties a copy takes from its source unless --metadata-directive REPLACE.
_COPIED = ("content_type", "content_encoding", "content_language", "content_disposition", "cache_control",
           "expires", "metadata", "tagging", "tag")


def _copy_source(url: str, dest: tuple[str | None, str | None, str | None], where: tuple[str | None, ...],
                 through_client: bool, metadata_directive: str, source_key_file: PathArg | None,
                 opts: _Opts) -> tuple[Source, tuple[str, str], shards_.Shard | None, ObjectProperties]:
    shard = _shard_of(opts)
    target = _destination(*dest)
    directive = metadata_directive.strip().upper()
    if directive not in ("COPY", "REPLACE"):
        raise BadInput(f"--metadata-directive {metadata_directive!r} is not COPY or REPLACE")
    given = [name for name in _COPIED if name in opts.props]
    if directive == "COPY" and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise BadInput(f"a copy keeps the source's content headers, metadata and tags, and {flags} would replace them",
                       f"add --metadata-directive REPLACE to take {flags} (and nothing of the source's) instead")
    source_key = read_key_file(source_key_file, "--copy-source-sse-c-key-file")
    # The source's store is the destination's, TLS and addressing included, unless --source-* names another.
    src = dataclasses.replace(opts.endpoint, endpoint_url=where[0] or opts.endpoint_url,
                              profile=where[1] or opts.profile, region=where[2] or opts.region)
    source = object_source(url, src, opts.endpoint, target, through_client, opts.thread_count + 2,
                           RetryPolicy(attempts=opts.retries), sse_c_key=source_key)
    props = opts.properties(None, copy_source_sse_c_key_file=source_key_file if source.server_side else None)
    if directive == "COPY":
        props = dataclasses.replace(props, **source.copied_properties())
    return source, target, shard, props


def _stream(source: PathArg | IO[bytes], dest: tuple[str | None, ...], prefix: str | None, opts: _Opts,
            stream: _StreamOpts, shard: shards_.Shard | None, progress: Progress | None,
            controller: tuple[Any, ...], planning: bool = False) -> UploadResult | dict[str, Any]:
    """An upload from a stream: its plan, or its run (``pipe.StreamUploader``). Everything is checked before the
    stream is opened (opening a named pipe waits for its writer)."""
    name = "-" if str(source) == "-" else str(getattr(source, "name", source))
    given = [flag for flag, value in (("-p", prefix), ("--controller", controller[0]), ("--file-id", controller[1]),
                                      ("--token-file", controller[2]), ("token", controller[3]),
                                      ("--declare-checksum", controller[4]), ("--shard", shard),
                                      ("--upload-id", opts.upload_id)) if value is not None and value != ()]
    if given:
        raise BadInput(f"{given[0]} cannot go with a stream ({name}): a stream is read once, in order, by one "
                       "process, and resumed from its meta file by content", f"leave out {given[0]}, or save the "
                       "data to a file first")
    bucket, key = _destination(*dest)
    src = StreamSource(source, stream.spool_dir)  # opened by the run, after its checks
    properties = opts.properties(key)  # the content type is guessed from the key's name
    clients = ClientFactory(opts.endpoint, pool_size=opts.thread_count + 2, request_args=(
        properties.request_args if properties.has_request_args else None))
    endpoint = resolved_endpoint(clients, opts.endpoint_url)
    properties.check_endpoint(endpoint, checksums.is_aws(endpoint))
    meta_path, parts_path = _state_paths(opts, endpoint or "", bucket, key, src, create=not planning)
    choice = checksums.choose(opts.checksum, endpoint)
    request = _request(opts, src, bucket, key, meta_path, parts_path, choice, shard=None, properties=properties,
                       bandwidth=opts.bandwidth())
    if planning:
        return StreamUploader(request, clients, expected_size=stream.expected_size,
                              max_memory=stream.max_memory).dry_run()
    reporter = _reporter(progress, key)
    try:
        result = StreamUploader(request, clients, reporter, RetryPolicy(attempts=opts.retries),
                                stream.expected_size, stream.max_memory).run()
    finally:
        reporter.close()
    result.properties = properties.shown()
    return result


def _token(token: str | None, token_file: PathArg | None) -> str:
    if token is not None:
        if not token.strip():
            raise BadInput("the controller's API token is empty")
        return token.strip()
    return read_token(None if token_file is None else Path(token_file), os.environ.get(TOKEN_ENV))


def _shard_of(opts: _Opts) -> shards_.Shard | None:
    """``shard``/``shards``, checked against the options a shard cannot take (before the controller fills any in)."""
    shard = shards_.parse(opts.shard, opts.shards)
    if shard is not None:
        for flag, value in (("--restart", opts.restart), ("--upload-id", opts.upload_id)):
            if value:
                raise BadInput(f"{flag} cannot go with --shard: every task of the array would do it",
                               "run it once without --shard (that run sends the parts itself), or abort the upload "
                               "(s3-multipart-upload abort -m META -a PARTS) and start the shards on new -m/-a paths")
        if opts.meta_file_path is None and opts.state_dir is None:
            # The state folder in each machine's home would give each task an upload of its own.
            raise BadInput("--shard needs state that every task of the array shares",
                           "give -m and -a on a shared file system, or --state-dir on one")
    return shard


def _through_controller(source: Source, dest: tuple[str | None, ...], controller: str | None, file_id: str | None,
                        token: tuple[str | None, PathArg | None], opts: _Opts, shard: shards_.Shard | None,
                        progress: Progress | None, planning: bool,
                        declare: Sequence[str] = ()) -> UploadResult | dict[str, Any]:
    """Through a controller: its upload of the file (resumed or created), then the usual engine with a client that
    goes through the controller's presigned URLs."""
    if controller is None or file_id is None:
        raise BadInput("--controller URL and --file-id ID go together", "give both, or neither")
    if not FILE_ID.fullmatch(file_id):
        raise BadInput(f"--file-id {file_id!r} is not a file id the controller takes: {FILE_ID_RULE}",
                       f"for example {re.sub(r'[^A-Za-z0-9._-]', '_', file_id).lstrip('._-')[:255] or 'file-1'}")
    not_here = [flag for flag, value in (("s3://BUCKET/KEY", dest[0]), ("-b", dest[1]), ("-k", dest[2]),
                                         ("--upload-id", opts.upload_id), ("--endpoint-url", opts.endpoint_url),
                                         ("--profile", opts.profile), ("--region", opts.region),
                                         ("--no-overwrite", opts.no_overwrite), ("--ca-bundle", opts.ca_bundle),
                                         ("--no-verify-ssl", opts.no_verify_ssl),
                                         ("--addressing-style", opts.addressing_style)) if value]
    if not_here:
        raise BadInput(f"{', '.join(not_here)} cannot go with --controller: the controller chooses the bucket and "
                       "key and holds the credentials", f"leave out {', '.join(not_here)}")
    asked = [name for name in opts.props if name not in ("guess_mime_type", "content_type", "metadata")]
    if asked:
        flags = ", ".join("--" + name.replace("_", "-") for name in asked)
        raise BadInput(f"{flags} cannot go with --controller: the controller creates the upload, with its own policy",
                       f"leave out {flags} (the controller takes --content-type and --metadata)")
    if opts.checksum.upper() not in ("MD5", checksums.AUTO.upper()):
        raise BadInput("through a controller, parts are checked by MD5 only",
                       "leave out --checksum (S3 refuses unsigned x-amz-checksum headers on presigned URLs)")
    if not isinstance(source, FileSource):
        raise BadInput("--controller uploads a file: give -f FILE (not -d)")
    api = ControllerAPI(controller, _token(*token), pool_size=opts.thread_count + 2)
    meta_path, parts_path = _state_paths(opts, api.base_url, "", f"file-id:{file_id}", source, create=not planning)
    meta = None if opts.restart else read_meta(meta_path)
    if meta is None and planning:
        raise BadInput("--dry-run with --controller shows an upload in progress (its meta file); the controller "
                       "chooses the part size of a new one", "leave out --dry-run")
    size = source.plan(opts.split_size, fixed=False).total_size
    properties = opts.properties(source.path.name)
    described = {name: value for name, value in (("content_type", properties.content_type),
                                                  ("metadata", dict(properties.metadata))) if value}
    declared = _declaring(source, declare) if declare and not planning else None
    up = controller_upload(api, file_id, size, opts.split_size, opts.retries, meta, meta_path, described, declared)
    opts = dataclasses.replace(opts, upload_id=up.upload_id, split_size=up.part_size)
    return _transfer(source, (up.bucket, up.key), opts, shard, progress, properties, clients=up.clients,
                     state=(meta_path, parts_path), meta_extra={"controller": api.base_url, "fileId": file_id},
                     planning=planning, upload_is_new=up.created)


DECLARABLE = {"sha256": "SHA256", "crc64nvme": "CRC64NVME"}


def _declaring(source: FileSource, names: Sequence[str]) -> Declared:
    """The file's SHA-256 (hex) and/or CRC64NVME (base64), as the controller takes them: one read of the file, by a
    thread of its own while the parts are sent, declared at the completion."""
    asked = sorted({name.lower() for name in names})
    unknown = [name for name in asked if name not in DECLARABLE]
    if unknown:
        raise BadInput(f"--declare-checksum {unknown[0]} is not one of {', '.join(DECLARABLE)}")
    log.info("Reading %s once, beside the upload, to declare its %s to the controller.", source.path,
             " and ".join(asked))

    def compute() -> dict[str, str]:
        hashers = {name: checksums.new_hasher(DECLARABLE[name]) for name in asked}
        with open(source.path, "rb") as f:
            for _ in range(source.total_size // READ_BLOCK + 2):  # the file's blocks, and the end
                block = f.read(READ_BLOCK)
                if not block:
                    break
                for hasher in hashers.values():
                    hasher.update(block)
        digests = {name: hasher.digest() for name, hasher in hashers.items()}
        return {name: digest.hex() if name == "sha256" else base64.b64encode(digest).decode()
                for name, digest in digests.items()}

    return Declared(compute)


def _state_paths(opts: _Opts, endpoint: str, bucket: str, key: str, source: Source,
                 create: bool = True) -> tuple[Path, Path]:
    """-m and -a, or the upload's folder in the state folder."""
    meta, parts = opts.meta_file_path, opts.parts_file_path
    if meta is not None and parts is not None:
        return meta, parts
    if meta is not None or parts is not None:
        raise BadInput("-m and -a go together", "give both, or neither (the state folder then keeps them)")
    folder = state_folder(state_root(opts.state_dir), endpoint, bucket, key, source_id(source),
                          given_endpoint=opts.endpoint_url, create=create)
    return folder.meta, folder.parts


def _request(opts: _Opts, source: Source, bucket: str, key: str, meta: Path, parts: Path,
             checksum: checksums.Choice, **engine: Any) -> UploadRequest:
    """The engine's request: what the call decided (``engine``: such as skip_identical), and every option whose name
    is a field of UploadRequest too, by that name (restart, upload_id, ...)."""
    decided: dict[str, Any] = {
        "bucket": bucket, "key": key, "source": source, "meta_path": meta, "parts_path": parts,
        "threads": opts.thread_count, "checksum": checksum.algorithm, "checksum_why": checksum.why,
        "checksum_probe": checksum.probe,
        # A measurement knob (bench/): MD5 sent as Content-MD5 from the first part, as the engine falls back to.
        "content_md5": os.environ.get("S3MU_CONTENT_MD5") == "1", **engine}
    same = {name: getattr(opts, name) for name in _PASSED_BY_NAME if name not in decided}
    return UploadRequest(**same, **decided)


_PASSED_BY_NAME = sorted(set(OPTION_NAMES) & {f.name for f in dataclasses.fields(UploadRequest)} - {"shard"})


def _transfer(source: Source, dest: tuple[str, str], opts: _Opts, shard: shards_.Shard | None,
              progress: Progress | None, properties: ObjectProperties | None = None,
              clients: ClientFactory | None = None, state: tuple[Path, Path] | None = None,
              meta_extra: dict[str, Any] | None = None, skip_identical: bool = False,
              planning: bool = False, upload_is_new: bool = False) -> UploadResult | dict[str, Any]:
    """One upload or copy: its plan, or its run."""
    bucket, key = dest
    if properties is None:  # the content type is guessed from the file's name, as aws-cli does (a chunk folder: key)
        properties = opts.properties(source.path.name if isinstance(source, FileSource) else key)
    clients = clients or ClientFactory(opts.endpoint, pool_size=opts.thread_count + 2, request_args=(
        properties.request_args if properties.has_request_args else None))
    endpoint = resolved_endpoint(clients, opts.endpoint_url)
    properties.check_endpoint(endpoint, checksums.is_aws(endpoint))
    meta_path, parts_path = state or _state_paths(opts, endpoint or "", bucket, key, source, create=not planning)
    choice = checksums.choose(opts.checksum, endpoint, controller=meta_extra is not None and "controller" in meta_extra,
                              copy=isinstance(source, S3ObjectSource))
    request = _request(opts, source, bucket, key, meta_path, parts_path, choice, meta_extra=meta_extra or {},
                       skip_identical=skip_identical, shard=shard, properties=properties, bandwidth=opts.bandwidth(),
                       upload_is_new=upload_is_new)
    if planning:
        return Uploader(request, clients).dry_run()
    reporter = _reporter(progress, key)
    try:
        result = Uploader(request, clients, reporter, retry=RetryPolicy(attempts=opts.retries)).run()
    finally:
        reporter.close()
    result.shard = None if shard is None else str(shard)
    result.properties = properties.shown()
    return result
