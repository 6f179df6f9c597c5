#!/usr/bin/env bash
# The tools the chart's tests run, built or installed once into compose/local/target/bin
# (kept between runs, removed by `make clean`):
#   helm    Helm, built from the Go module proxy at a pinned version (about 5 minutes on
#           2 cores the first time).
# Usage: chart-tools.sh fetch
set -euo pipefail
cd "$(dirname "$0")"

HELM_VERSION=v4.3.2
BIN=target/bin

fetch_helm() {
    local stamp="$BIN/helm.version"
    if [[ -x "$BIN/helm" && "$(cat "$stamp" 2>/dev/null)" == "$HELM_VERSION" ]]; then
        return
    fi
    mkdir -p "$BIN"
    echo "chart-tools: building Helm $HELM_VERSION (a few minutes the first time)" >&2
    GOBIN="$PWD/$BIN" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" 2>&1 | { grep -v '^go: downloading' || true; }
    [[ -x "$BIN/helm" ]] || { echo "chart-tools: building Helm failed" >&2; exit 1; }
    echo "$HELM_VERSION" > "$stamp"
}

case "${1:-}" in
    fetch) fetch_helm ;;
    *) echo "usage: $0 fetch" >&2; exit 2 ;;
esac
