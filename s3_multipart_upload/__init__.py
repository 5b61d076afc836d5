"""Resumable, parallel multipart uploads to S3 and S3-compatible stores.

The names in ``__all__`` are the public API; every other module and name is private and may change.

    from s3_multipart_upload import upload
    result = upload("big.tar", "s3://my-bucket/backups/big.tar", thread_count=16)

Call the same function again after any interruption and it sends only what is missing.
"""

import logging

from s3_multipart_upload._version import __version__
from s3_multipart_upload.api import copy, plan_copy, plan_upload, upload
from s3_multipart_upload.batch import Outcome as FileOutcome
from s3_multipart_upload.errors import (
    BadInput,
    BatchFailed,
    CredentialsExpired,
    ExitCode,
    Failure,
    IntegrityError,
    Interrupted,
    ServerRefused,
    SourceChanged,
    StateConflict,
    TemporaryFailure,
    UploadError,
    UploadGone,
)
from s3_multipart_upload.job import UploadResult
from s3_multipart_upload.manage import Cleaned, abort, clean, list_uploads, local_uploads, status, verify
from s3_multipart_upload.many import BatchResult, plan_many, upload_many
from s3_multipart_upload.operations import InProgress, LocalUpload
from s3_multipart_upload.operations import Status as UploadStatus
from s3_multipart_upload.options import StoreOptions, TransferOptions
from s3_multipart_upload.progress import ProgressEvent, Reporter
from s3_multipart_upload.proof import Verdict, VerifyResult

# A library prints nothing unless its user configures logging (the CLI does, for its own output).
logging.getLogger("s3_multipart_upload").addHandler(logging.NullHandler())

__all__ = [
    "BadInput",
    "BatchFailed",
    "BatchResult",
    "Cleaned",
    "CredentialsExpired",
    "ExitCode",
    "Failure",
    "FileOutcome",
    "InProgress",
    "IntegrityError",
    "Interrupted",
    "LocalUpload",
    "ProgressEvent",
    "Reporter",
    "ServerRefused",
    "SourceChanged",
    "StateConflict",
    "StoreOptions",
    "TemporaryFailure",
    "TransferOptions",
    "UploadError",
    "UploadGone",
    "UploadResult",
    "UploadStatus",
    "Verdict",
    "VerifyResult",
    "__version__",
    "abort",
    "clean",
    "copy",
    "list_uploads",
    "local_uploads",
    "plan_copy",
    "plan_many",
    "plan_upload",
    "status",
    "upload",
    "upload_many",
    "verify",
]
