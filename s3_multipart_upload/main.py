"""The historical entry point: ``python s3_multipart_upload/main.py upload ...`` (once the package is installed),
and the import path ``s3_multipart_upload.main:main`` of the console script. The command line is ``cli/``."""

from s3_multipart_upload.cli import cli, main

__all__ = ["cli", "main"]

if __name__ == "__main__":
    main()
