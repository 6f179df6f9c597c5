#!/usr/bin/env bash
# The tools the chart's tests run, built once into the tools cache (compose/local/tools.sh):
#   helm       Helm, built from the Go module proxy at a pinned version (about 5 minutes
#              on 2 cores the first time).
#   helm-docs  the chart's README from its values' comments (README.md.gotmpl).
#   compose-check  compose files loaded as Docker Compose loads them (compose-go: the
#              Compose specification's schema), from compose/local/compose-check.
# Usage: chart-tools.sh fetch
set -euo pipefail
# shellcheck source=compose/local/tools.sh
source "$(dirname "$0")/tools.sh"

case "${1:-}" in
    fetch)
        go_tool helm helm.sh/helm/v4/cmd/helm v4.3.2
        go_tool helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs v1.14.2
        local_go_tool compose-check "$(dirname "$0")/compose-check"
        ;;
    *) echo "usage: $0 fetch" >&2; exit 2 ;;
esac
