"""The public API's operations on uploads besides sending them: status, abort, list, clean, and verify (a file
and its object proven the same). Nothing is printed here:
the CLI shows what these return (``cli/``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

from s3_multipart_upload import proof
from s3_multipart_upload.controller import clients_for
from s3_multipart_upload.errors import BadInput, BatchFailed, ExitCode, Failure, UploadError, failure_of, most_urgent
from s3_multipart_upload.filters import Filter, taken, walk
from s3_multipart_upload.filters import parse as filter_rules
from s3_multipart_upload.operations import (
    InProgress,
    LocalUpload,
    Status,
    abort_until_gone,
    clean_upload,
    list_in_progress,
    load_meta,
    parse_duration,
    upload_status,
)
from s3_multipart_upload.operations import abort as _abort
from s3_multipart_upload.operations import (
    local_uploads as _local_uploads,
)
from s3_multipart_upload.options import DEFAULT_THREADS, MAX_THREADS, StoreOptions
from s3_multipart_upload.proof import LocalHasher, Prover, Target, Verdict, VerifyResult
from s3_multipart_upload.s3 import (
    ADDRESSING_STYLES,
    ClientFactory,
    Endpoint,
    Requester,
    RetryPolicy,
    resolved_endpoint,
    translate,
)
from s3_multipart_upload.sources import parse_s3_target
from s3_multipart_upload.state import Meta, read_meta, state_folder, state_root

PathArg = str | os.PathLike[str]


def _endpoint(endpoint_url: str | None, profile: str | None, region: str | None, store: StoreOptions) -> Endpoint:
    """How to reach the store: the common options, and the store options (``StoreOptions``) as upload takes them."""
    style, ca_bundle = store.get("addressing_style"), store.get("ca_bundle")
    if style is not None and style not in ADDRESSING_STYLES:
        raise BadInput(f"addressing_style {style!r} is not one of {', '.join(ADDRESSING_STYLES)}")
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        raise BadInput(f"ca_bundle {ca_bundle} is not a file", "give a PEM file of CA certificates")
    return Endpoint(endpoint_url, profile, region, style, None if ca_bundle is None else str(ca_bundle),
                    not store.get("no_verify_ssl", False))


def _requester_for(meta_path: Path, token_file: PathArg | None, endpoint: Endpoint) -> Requester:
    """S3 directly, or, for an upload made through a controller (its META says which), that controller."""
    meta = load_meta(meta_path)  # a missing META is said as such, whatever the other options
    return Requester(clients_for(meta, meta_path, None if token_file is None else Path(token_file), endpoint))


def _seconds(age: str | float | None) -> float | None:
    return parse_duration(age) if isinstance(age, str) else age


def status(meta_file_path: PathArg, parts_file_path: PathArg | None = None, *, token_file: PathArg | None = None,
           endpoint_url: str | None = None, profile: str | None = None, region: str | None = None,
           **store: Unpack[StoreOptions]) -> Status:
    """Where the upload that ``meta_file_path`` records stands: from its files, and from the server (ListParts).

    Sends no data. An upload made through a controller is asked of that controller (with ``token_file`` or
    ``S3MU_CONTROLLER_TOKEN``).
    """
    meta_path = Path(meta_file_path)
    requests = _requester_for(meta_path, token_file, _endpoint(endpoint_url, profile, region, store))
    return upload_status(meta_path, None if parts_file_path is None else Path(parts_file_path), requests)


def abort(upload: PathArg | InProgress, *, token_file: PathArg | None = None, endpoint_url: str | None = None,
          profile: str | None = None, region: str | None = None, **store: Unpack[StoreOptions]) -> str:
    """Abort a multipart upload, freeing its parts' storage: the one a meta file records (then marked aborted), or
    one that ``list_uploads`` found. Repeats the abort until ListParts finds nothing, as S3 advises; safe twice.

    Returns:
        ``aborted``, ``already_aborted``, or ``completed`` (the object exists: nothing to abort).
    """
    if isinstance(upload, InProgress):
        requests = Requester(ClientFactory(_endpoint(endpoint_url, profile, region, store), pool_size=4))
        abort_until_gone(requests, upload.bucket, upload.key, upload.upload_id)
        return "aborted"
    meta_path = Path(upload)
    return _abort(meta_path, _requester_for(meta_path, token_file, _endpoint(endpoint_url, profile, region, store)))


def list_uploads(bucket: str, *, prefix: str = "", older_than: str | float | None = None,
                 endpoint_url: str | None = None, profile: str | None = None,
                 region: str | None = None, **store: Unpack[StoreOptions]) -> list[InProgress]:
    """The multipart uploads in progress in ``bucket`` (all of them, not only this tool's), oldest first, with the
    parts and bytes each holds; ``older_than`` is seconds or ``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"``."""
    requests = Requester(ClientFactory(_endpoint(endpoint_url, profile, region, store), pool_size=4))
    return list_in_progress(requests, bucket, prefix, _seconds(older_than))


def local_uploads(*, state_dir: PathArg | None = None, prefix: str = "",
                  older_than: str | float | None = None) -> list[LocalUpload]:
    """The uploads kept in the state folder, from their files only (no request), least recently active first."""
    idle = _seconds(older_than) or 0.0
    root = state_root(None if state_dir is None else Path(state_dir))
    return [u for u in _local_uploads(root) if u.key.startswith(prefix) and u.age_seconds >= idle]


@dataclass
class Cleaned:
    """What ``clean`` did with one upload of the state folder: ``done`` (``removed``, ``aborted and removed``), or
    the ``failure`` that kept it."""

    upload: LocalUpload
    done: str | None = None
    failure: Failure | None = None


def clean(older_than: str | float, *, state_dir: PathArg | None = None,
          confirm: Callable[[list[LocalUpload]], bool] | None = None, endpoint_url: str | None = None,
          profile: str | None = None, region: str | None = None, **store: Unpack[StoreOptions]) -> list[Cleaned]:
    """Tidy the state folder: remove the state of the uploads idle for ``older_than``; those still in progress are
    aborted on the server first. An upload a running process holds is kept (StateConflict).

    Args:
        confirm: Called with the uploads found (when there are any) before anything is done; False stops there.
        endpoint_url: Overrides the endpoint each upload was made with.

    Raises:
        BatchFailed: When any upload was kept; its ``result`` is the list of Cleaned.
    """
    found = local_uploads(state_dir=state_dir, older_than=older_than)
    if not found or (confirm is not None and not confirm(found)):
        return []

    def requests(upload: LocalUpload) -> Callable[[Meta], Requester]:
        given = endpoint_url or upload.folder.record().get("endpointUrl")
        endpoint = _endpoint(given if isinstance(given, str) else None, profile, region, store)
        return lambda meta: Requester(clients_for(meta, upload.folder.meta, None, endpoint))

    cleaned = []
    for upload in found:
        try:
            cleaned.append(Cleaned(upload, done=clean_upload(upload, requests(upload))))
        except UploadError as exc:
            cleaned.append(Cleaned(upload, failure=failure_of(exc)))
    code = most_urgent([c.failure.code for c in cleaned if c.failure is not None])
    if code != ExitCode.OK:
        kept = sum(1 for c in cleaned if c.failure is not None)
        raise BatchFailed(code, f"{kept} of {len(found)} uploads were kept", "see the lines above", cleaned)
    return cleaned


def verify(source: PathArg | None = None, dest: str | None = None, *, recursive: bool = False,
           meta_file_path: PathArg | None = None, parts_file_path: PathArg | None = None, download: bool = False,
           filters: Sequence[tuple[str, str]] = (), follow_symlinks: bool = True, thread_count: int = DEFAULT_THREADS,
           retries: int = RetryPolicy.attempts, state_dir: PathArg | None = None, endpoint_url: str | None = None,
           profile: str | None = None, region: str | None = None,
           on_file: Callable[[Verdict], None] | None = None, **store: Unpack[StoreOptions]) -> VerifyResult:
    """Prove that local files and their objects hold the same bytes, without downloading them (``verify``).

    Each file is compared with the strongest evidence its object carries: a full-object CRC64NVME, composite part
    checksums, a composite MD5 ETag, a one-part MD5 ETag; the file is read once, in parallel ranges. Where the
    object carries none of these (SSE-KMS without a checksum, a store with opaque ETags), ``download=True`` compares
    the object's bytes, read in parallel ranged GETs at flat memory; without it the file is ``unproven``.

    Args:
        source: A file (with ``dest`` ``s3://BUCKET/KEY``, or ``s3://BUCKET/PREFIX/`` for PREFIX + its name), or
            with ``recursive`` a folder whose files are compared with the keys PREFIX + their relative paths (and
            the keys under PREFIX with no file are reported ``missing_local``).
        meta_file_path: Instead of ``source`` and ``dest``: the upload this meta file records (its file, bucket
            and key); its parts log (``parts_file_path``) names the part that differs.
        filters: With ``recursive``: ``("exclude", GLOB)`` and ``("include", GLOB)`` in aws-cli's order (the last
            that matches a file's relative path decides).
        on_file: Called with each Verdict as it is found.

    Returns:
        Every file's Verdict; ``exit_code`` is 0 when every file is proven identical, 3 when any differs, is
        missing or cannot be proven, 5 when the server refused (access denied, no such bucket).

    Raises:
        BadInput: No such folder, a bad URL, a meta file that is not of a file's upload.
        ServerRefused: The listing of the prefix was refused.
    """
    started = time.monotonic()
    threads = thread_count
    if not 1 <= threads <= MAX_THREADS:
        raise BadInput(f"thread_count must be 1 to {MAX_THREADS}, not {threads}")
    rules = filter_rules(filters)
    targets, listed = _verify_targets(source, dest, recursive, meta_file_path, parts_file_path, rules,
                                      follow_symlinks)
    clients = ClientFactory(_endpoint(endpoint_url, profile, region, store), pool_size=threads * 2 + 2)
    endpoint = resolved_endpoint(clients, endpoint_url) or ""
    root = state_root(None if state_dir is None else Path(state_dir))

    def state_of(path: Path, bucket: str, key: str) -> tuple[Path, Path] | None:
        folder = state_folder(root, endpoint, bucket, key, str(path.resolve()), create=False)
        return (folder.meta, folder.parts) if folder.meta.is_file() else None

    requests = Requester(clients, RetryPolicy(attempts=retries))
    hasher = LocalHasher(threads)
    prover = Prover(requests, Requester(clients, RetryPolicy(attempts=1)), hasher, threads, download, state_of)
    seen: set[str] = set()

    def told(verdict: Verdict) -> None:
        seen.add(verdict.key)
        if on_file is not None:
            on_file(verdict)

    try:
        verdicts = proof.run(prover, targets, threads, told)
        if listed is not None:
            bucket, prefix = listed
            try:
                for key, size in proof.keys_under(requests, bucket, prefix):
                    if key in seen or key.endswith("/") or not taken(key[len(prefix):], rules)[0]:
                        continue
                    verdict = Verdict(None, bucket, key, proof.MISSING_LOCAL, size=size,
                                      detail=f"no file for s3://{bucket}/{key}")
                    verdicts.append(verdict)
                    told(verdict)
            except Exception as exc:
                raise translate(exc, bucket, prefix, where=f"s3://{bucket}/{prefix}") from exc
    finally:
        hasher.close()
    return VerifyResult(verdicts, time.monotonic() - started)


def _verify_targets(source: PathArg | None, dest: str | None, recursive: bool, meta_file_path: PathArg | None,
                    parts_file_path: PathArg | None, rules: tuple[Filter, ...], follow_symlinks: bool
                    ) -> tuple[Iterable[Target], tuple[str, str] | None]:
    """What to compare, and (bucket, prefix) to list for objects with no file (``recursive`` only)."""
    if meta_file_path is not None:
        if source is not None or dest is not None or recursive:
            raise BadInput("give -m META, or FILE s3://BUCKET/KEY, not both")
        meta_path = Path(meta_file_path)
        meta = read_meta(meta_path)
        if meta is None:
            raise BadInput(f"meta file {meta_path} does not exist", "check the path given to -m")
        if not meta.source or meta.source.get("kind") != "file" or not isinstance(meta.source.get("path"), str):
            raise BadInput(f"meta file {meta_path} does not record the upload of one file (its source: "
                           f"{(meta.source or {}).get('kind', 'not recorded')})",
                           "give the file and its object instead: verify FILE s3://BUCKET/KEY")
        parts = Path(parts_file_path) if parts_file_path is not None else meta_path.with_name("parts.jsonl")
        return [Target(Path(meta.source["path"]), meta.bucket, meta.key, meta_path, parts)], None
    if source is None or dest is None:
        raise BadInput("give the file and its object: verify FILE s3://BUCKET/KEY (or --recursive DIR "
                       "s3://BUCKET/PREFIX/, or -m META)")
    bucket, key = parse_s3_target(dest)
    path = Path(source)
    if recursive:
        if key and not key.endswith("/"):
            raise BadInput(f"--recursive compares a folder with a prefix, and {dest} does not end with a slash",
                           f"write s3://{bucket}/{key}/")
        found = walk(path, rules, follow_symlinks)
        return (Target(f.path, bucket, key + f.relative) for f in found), (bucket, key)
    if path.is_dir():
        raise BadInput(f"{path} is a folder", "add --recursive to compare every file under it")
    if not key or key.endswith("/"):
        key += path.name
    return [Target(path, bucket, key)], None
