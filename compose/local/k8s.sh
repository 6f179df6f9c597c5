#!/usr/bin/env bash
# A single-node Kubernetes for the chart's tests, from the Go module proxy (no other
# registry is needed): etcd through a wrapper module, and kube-apiserver,
# kube-controller-manager, kube-scheduler and kubelet from k8s.io/kubernetes with its
# replace block dropped for the published k8s.io/* modules of the same release. Built
# once into compose/local/target/bin/k8s (about 20 minutes on 2 cores), kept between runs.
# Usage: k8s.sh build
set -euo pipefail
cd "$(dirname "$0")"

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
BIN=$PWD/target/bin/k8s
BUILD=$PWD/target/build
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"

built() {  # built NAME VERSION: whether $BIN/NAME is there at VERSION
    [[ -x "$BIN/$1" && "$(cat "$BIN/$1.version" 2>/dev/null)" == "$2" ]]
}

build_etcd() {
    built etcd "$ETCD_VERSION" && return
    echo "k8s: building etcd $ETCD_VERSION" >&2
    local dir=$BUILD/etcd
    rm -rf "$dir" && mkdir -p "$dir" "$BIN"
    cat > "$dir/go.mod" <<GOMOD
module blockferry.local/etcd

go 1.24
GOMOD
    cat > "$dir/tools.go" <<GOSRC
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GOSRC
    (cd "$dir" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>&1 | grep -v '^go: downloading' || true)
    (cd "$dir" && go build -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
    echo "$ETCD_VERSION" > "$BIN/etcd.version"
}

build_kubernetes() {
    local programs=(kube-apiserver kube-controller-manager kube-scheduler kubelet) wanted=()
    for program in "${programs[@]}"; do
        built "$program" "$K8S_VERSION" || wanted+=("$program")
    done
    ((${#wanted[@]})) || return 0
    echo "k8s: building ${wanted[*]} $K8S_VERSION (minutes)" >&2
    local source dir=$BUILD/kubernetes minor=${K8S_VERSION#v1.}
    source=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    rm -rf "$dir" && mkdir -p "$BUILD" "$BIN"
    cp -r "$source" "$dir" && chmod -R u+w "$dir"
    rm -f "$dir"/go.work "$dir"/go.work.sum
    # the staging modules' replace block goes; their published versions come instead
    python3 - "$dir/go.mod" "v0.$minor" <<'PY'
import re, sys
path, version = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"\nreplace \(.*?\n\)\n", "\n", text, flags=re.S)
text = re.sub(r"(\n\s+k8s\.io/[\w./-]+) v0\.0\.0(?=\s)", rf"\1 {version}", text)
open(path, "w").write(text)
PY
    # the release's version, as its own build stamps it (clients check it)
    local stamp=() package
    for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        stamp+=("-X $package.gitVersion=$K8S_VERSION" "-X $package.gitMajor=1"
            "-X $package.gitMinor=${minor%%.*}" "-X $package.gitTreeState=clean")
    done
    for program in "${wanted[@]}"; do
        (cd "$dir" && go build -ldflags "${stamp[*]}" -o "$BIN/$program" "./cmd/$program" 2>&1 \
            | grep -v '^go: downloading' || true)
        [[ -x "$BIN/$program" ]] || { echo "k8s: building $program failed" >&2; exit 1; }
        echo "$K8S_VERSION" > "$BIN/$program.version"
    done
}

case "${1:-}" in
    build) build_etcd; build_kubernetes ;;
    *) echo "usage: $0 build" >&2; exit 2 ;;
esac
