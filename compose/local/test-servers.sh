#!/usr/bin/env bash
# The servers the storage tests run against, built once into the tools cache
# (compose/local/tools.sh):
#   minio   an S3 server that enforces conditional writes and object lock, built from the
#           Go module proxy at a pinned version (a test tool only: it is AGPL-licensed and
#           never shipped). Needs Go; about 5 minutes on 2 cores the first time.
# Usage: test-servers.sh fetch
set -euo pipefail
# shellcheck source=compose/local/tools.sh
source "$(dirname "$0")/tools.sh"

case "${1:-}" in
    fetch) go_tool minio github.com/minio/minio v0.0.0-20260212201848-7aac2a2c5b7c ;;
    *) echo "usage: $0 fetch" >&2; exit 2 ;;
esac
