#!/usr/bin/env bash
# The store matrix (tests/test_store_matrix.py) against LocalStack in host mode (no Docker). LocalStack 2026.3
# needs Python 3.13 (warnings.deprecated) and pins that its own requirements miss (cbor2 with cbor2._decoder,
# pyOpenSSL with X509.add_extensions, the cryptography and service_identity they take); its install takes minutes,
# so it runs from here, not from the test suite. Results: bench/results/localstack.md.
#
#   bash bench/localstack.sh            # venv in .bench/localstack (kept for the next run), port chosen free
#   bash bench/localstack.sh --serve    # only start it: print its endpoint and keep it until killed (for
#                                       # bench/auto_checksum.py --localstack URL)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=""
for candidate in ${PYTHON313:-} python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13; do
    if "$candidate" -c 'import sys; assert sys.version_info >= (3, 13)' 2>/dev/null; then PY=$candidate; break; fi
done
[ -n "$PY" ] || { echo "Python 3.13 is needed for LocalStack in host mode (set PYTHON313)" >&2; exit 2; }
VENV=${LOCALSTACK_VENV:-.bench/localstack}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q 'localstack-core[runtime]==2026.3.0'
    "$VENV/bin/pip" install -q 'cbor2==5.6.5' 'cryptography<44' 'pyopenssl<24.3' 'service_identity<24.3'
fi
PORT=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DATA=$(mktemp -d)
GATEWAY_LISTEN=127.0.0.1:$PORT SERVICES=s3 DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 DNS_ADDRESS=0 \
    LOCALSTACK_VOLUME_DIR=$DATA "$VENV/bin/python" -m localstack.runtime.main >"$DATA/localstack.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
began=$(date +%s)
for _ in $(seq 1 600); do  # at most 60 s
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/_localstack/health" && break
    kill -0 $PID 2>/dev/null || { tail -20 "$DATA/localstack.log" >&2; exit 1; }
    sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$PORT/_localstack/health" || { echo "LocalStack did not start in 60 s" >&2; exit 1; }
started=$(( $(date +%s) - began ))
VERSION=$("$VENV/bin/python" -c 'import localstack.version as v; print(v.__version__)' 2>/dev/null || echo "?")
if [ "${1:-}" = "--serve" ]; then
    echo "LocalStack $VERSION at http://127.0.0.1:$PORT (answered after ${started} s)"
    wait $PID
    exit 0
fi
OUT=$(S3MU_LOCALSTACK_ENDPOINT=http://127.0.0.1:$PORT .venv/bin/python -m pytest tests/test_store_matrix.py -n 0 \
      -q -p no:cacheprovider -k localstack -rA 2>&1 | grep -E '^(PASSED|FAILED|ERROR)|passed|failed' || true)
{
    echo "# The store matrix against LocalStack $VERSION (host mode, Python $("$PY" -c 'import platform; print(platform.python_version())'))"
    echo
    echo "Run $(date -u +%Y-%m-%dT%H:%M:%SZ) by bench/localstack.sh; LocalStack answered after ${started} s."
    echo
    echo '```'
    echo "$OUT"
    echo '```'
} | tee bench/results/localstack.md
