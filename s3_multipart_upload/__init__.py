"""Resumable, parallel multipart uploads to S3 and S3-compatible stores."""

from s3_multipart_upload._version import __version__

__all__ = ["__version__"]
