"""The public API's operations on uploads besides sending them: status, abort, list, clean. Nothing is printed here:
the CLI shows what these return (``cli/``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from s3_multipart_upload.controller import clients_for
from s3_multipart_upload.errors import BatchFailed, ExitCode, Failure, UploadError, failure_of, most_urgent
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
from s3_multipart_upload.s3 import ClientFactory, Endpoint, Requester
from s3_multipart_upload.state import Meta, state_root

PathArg = str | os.PathLike[str]


def _requester_for(meta_path: Path, token_file: PathArg | None, endpoint_url: str | None, profile: str | None,
                   region: str | None) -> Requester:
    """S3 directly, or, for an upload made through a controller (its META says which), that controller."""
    meta = load_meta(meta_path)  # a missing META is said as such, whatever the other options
    return Requester(clients_for(meta, meta_path, None if token_file is None else Path(token_file),
                                 Endpoint(endpoint_url, profile, region)))


def _seconds(age: str | float | None) -> float | None:
    return parse_duration(age) if isinstance(age, str) else age


def status(meta_file_path: PathArg, parts_file_path: PathArg | None = None, *, token_file: PathArg | None = None,
           endpoint_url: str | None = None, profile: str | None = None, region: str | None = None) -> Status:
    """Where the upload that ``meta_file_path`` records stands: from its files, and from the server (ListParts).

    Sends no data. An upload made through a controller is asked of that controller (with ``token_file`` or
    ``S3MU_API_TOKEN``).
    """
    meta_path = Path(meta_file_path)
    requests = _requester_for(meta_path, token_file, endpoint_url, profile, region)
    return upload_status(meta_path, None if parts_file_path is None else Path(parts_file_path), requests)


def abort(upload: PathArg | InProgress, *, token_file: PathArg | None = None, endpoint_url: str | None = None,
          profile: str | None = None, region: str | None = None) -> str:
    """Abort a multipart upload, freeing its parts' storage: the one a meta file records (then marked aborted), or
    one that ``list_uploads`` found. Repeats the abort until ListParts finds nothing, as S3 advises; safe twice.

    Returns:
        ``aborted``, ``already_aborted``, or ``completed`` (the object exists: nothing to abort).
    """
    if isinstance(upload, InProgress):
        requests = Requester(ClientFactory(Endpoint(endpoint_url, profile, region), pool_size=4))
        abort_until_gone(requests, upload.bucket, upload.key, upload.upload_id)
        return "aborted"
    meta_path = Path(upload)
    return _abort(meta_path, _requester_for(meta_path, token_file, endpoint_url, profile, region))


def list_uploads(bucket: str, *, prefix: str = "", older_than: str | float | None = None,
                 endpoint_url: str | None = None, profile: str | None = None,
                 region: str | None = None) -> list[InProgress]:
    """The multipart uploads in progress in ``bucket`` (all of them, not only this tool's), oldest first, with the
    parts and bytes each holds; ``older_than`` is seconds or ``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, ``"2w"``."""
    requests = Requester(ClientFactory(Endpoint(endpoint_url, profile, region), pool_size=4))
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
          profile: str | None = None, region: str | None = None) -> list[Cleaned]:
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
        endpoint = Endpoint(given if isinstance(given, str) else None, profile, region)
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
