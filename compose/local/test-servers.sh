#!/usr/bin/env bash
# The servers the storage tests run against, built or installed once into
# compose/local/target/bin (kept between runs, removed by `make clean`):
#   minio   an S3 server that enforces conditional writes and object lock, built from the
#           Go module proxy at a pinned version (a test tool only: it is AGPL-licensed and
#           never shipped). Needs Go; about 5 minutes on 2 cores the first time.
# Usage: test-servers.sh fetch
set -euo pipefail
cd "$(dirname "$0")"

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
BIN=target/bin

fetch_minio() {
    local stamp="$BIN/minio.version"
    if [[ -x "$BIN/minio" && "$(cat "$stamp" 2>/dev/null)" == "$MINIO_VERSION" ]]; then
        return
    fi
    command -v go >/dev/null || { echo "test-servers: building MinIO needs Go (go.dev/dl)" >&2; exit 1; }
    echo "== building MinIO $MINIO_VERSION from the Go module proxy"
    mkdir -p "$BIN"
    GOBIN="$PWD/$BIN" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go install "github.com/minio/minio@$MINIO_VERSION" 2>&1 | { grep -v '^go: downloading' || true; }
    [[ -x "$BIN/minio" ]] || { echo "test-servers: building MinIO failed" >&2; exit 1; }
    echo "$MINIO_VERSION" >"$stamp"
}

case "${1:-}" in
    fetch) fetch_minio ;;
    *) echo "usage: $0 fetch" >&2; exit 2 ;;
esac
