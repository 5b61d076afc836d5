"""Upload one file with boto3's managed transfer (``upload_file``), as the benchmark measures it.

Run as its own process so that ``/usr/bin/time -v`` measures the interpreter, the imports and the
transfer, as it does for the other tools:

    python bench/boto3_upload.py ENDPOINT FILE BUCKET KEY [--part-size BYTES --concurrency N]

Without ``--part-size``/``--concurrency`` it uses ``TransferConfig()`` and a default client: boto3's
own defaults (8 MiB parts, 10 threads, and botocore's default checksums).
"""

from __future__ import annotations

import argparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("endpoint")
    ap.add_argument("file")
    ap.add_argument("bucket")
    ap.add_argument("key")
    ap.add_argument("--part-size", type=int)
    ap.add_argument("--concurrency", type=int)
    args = ap.parse_args()
    if args.part_size is None and args.concurrency is None:
        client = boto3.client("s3", endpoint_url=args.endpoint)
        config = TransferConfig()
    else:
        part = args.part_size or 8 * 1024 * 1024
        threads = args.concurrency or 10
        # A pool as large as the thread count, as this project's tool sizes its own.
        client = boto3.client("s3", endpoint_url=args.endpoint, config=Config(max_pool_connections=max(10, threads)))
        config = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=threads)
    client.upload_file(args.file, args.bucket, args.key, Config=config)


if __name__ == "__main__":
    main()
