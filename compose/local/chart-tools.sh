#!/usr/bin/env bash
# The tools the chart's tests run, built or installed once into compose/local/target/bin
# (kept between runs, removed by `make clean`):
#   helm       Helm, built from the Go module proxy at a pinned version (about 5 minutes
#              on 2 cores the first time).
#   helm-docs  the chart's README from its values' comments (README.md.gotmpl).
# Usage: chart-tools.sh fetch
set -euo pipefail
cd "$(dirname "$0")"

BIN=target/bin

# build NAME MODULE/CMD VERSION: go install it into $BIN once per version
build() {
    local name=$1 package=$2 version=$3 stamp="$BIN/$1.version"
    if [[ -x "$BIN/$name" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
        return
    fi
    mkdir -p "$BIN"
    echo "chart-tools: building $name $version (minutes the first time)" >&2
    GOBIN="$PWD/$BIN" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go install "$package@$version" 2>&1 | { grep -v '^go: downloading' || true; }
    [[ -x "$BIN/$name" ]] || { echo "chart-tools: building $name failed" >&2; exit 1; }
    echo "$version" > "$stamp"
}

case "${1:-}" in
    fetch)
        build helm helm.sh/helm/v4/cmd/helm v4.3.2
        build helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs v1.14.2
        ;;
    *) echo "usage: $0 fetch" >&2; exit 2 ;;
esac
