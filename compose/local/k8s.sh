#!/usr/bin/env bash
# A single-node Kubernetes for the chart's tests, from the Go module proxy (no other
# registry is needed): etcd through a wrapper module, and kube-apiserver,
# kube-controller-manager, kube-scheduler and kubelet from k8s.io/kubernetes with its
# replace block dropped for the published k8s.io/* modules of the same release, and
# kubectl of that release. Built once into the tools cache (compose/local/tools.sh), about
# 15 minutes on 2 cores. The Debian packages it runs (containerd, runc, the CNI plugins,
# podman) are installed when missing (as root).
#
# `up DIR` runs it, its state in DIR: etcd, the API server (on 127.0.0.1:6443, an admin
# token in DIR/kubeconfig), the controller manager, the scheduler, Debian's containerd
# with runc (through a wrapper that drops the negative oom_score_adj this host refuses)
# and a kubelet on cgroupfs, pods on a bridge of this machine's own (bfk8s0,
# 10.244.77.0/24, its host side 10.244.77.1, made by `up` so that servers of this machine
# can listen there for the pods). `load DIR IMAGE…` copies images from
# podman's store into it; `down DIR` stops what `up` started.
# Usage: k8s.sh build | up DIR | load DIR IMAGE… | down DIR
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=compose/local/tools.sh
source tools.sh

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
BIN=$TOOLS_DIR/k8s
BUILD=$PWD/target/build
KUBECTL=$BIN/kubectl
PACKAGES=(containerd runc containernetworking-plugins iproute2 podman)
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"

build_etcd() {
    tool_built k8s/etcd "$ETCD_VERSION" && return
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
    tool_stamp k8s/etcd "$ETCD_VERSION"
}

build_kubernetes() {
    local programs=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl) wanted=()
    for program in "${programs[@]}"; do
        tool_built "k8s/$program" "$K8S_VERSION" || wanted+=("$program")
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
        tool_stamp "k8s/$program" "$K8S_VERSION"
    done
}

BRIDGE=bfk8s0
POD_SUBNET=10.244.77.0/24
HOST_ADDRESS=10.244.77.1
PAUSE=localhost/pause:3.10

start() {  # start DIR NAME COMMAND…: in the background, its pid in DIR/NAME.pid
    local dir=$1 name=$2
    shift 2
    nohup "$@" >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND…
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { echo "k8s: $what did not come up" >&2; exit 1; }
        sleep 1
    done
}

up() {
    local dir
    dir=$(realpath -m "$1")
    mkdir -p "$dir"/{pki,etcd,containerd,cni,bin,kubelet}
    need_packages k8s "${PACKAGES[@]}"
    build_etcd
    build_kubernetes
    openssl genrsa -out "$dir/pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/pki/sa.key" -pubout -out "$dir/pki/sa.pub" 2>/dev/null
    local token
    token=$(openssl rand -hex 16)
    echo "$token,admin,admin,system:masters" >"$dir/pki/tokens.csv"
    chmod 600 "$dir/pki/tokens.csv"
    cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: "$dir/pki/apiserver.crt"}
users:
- name: admin
  user: {token: "$token"}
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
KUBECONFIG
    chmod 600 "$dir/kubeconfig"

    start "$dir" etcd "$BIN/etcd" --data-dir "$dir/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster default=http://127.0.0.1:2380
    start "$dir" apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$dir/pki/sa.pub" --service-account-signing-key-file="$dir/pki/sa.key" \
        --token-auth-file="$dir/pki/tokens.csv" --authorization-mode=RBAC \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=6443 \
        --cert-dir="$dir/pki" --service-cluster-ip-range=10.96.0.0/16 \
        --endpoint-reconciler-type=none --kubelet-preferred-address-types=Hostname
    wait_for 60 "the API server" "$KUBECTL" --kubeconfig "$dir/kubeconfig" get namespace default
    start "$dir" controller-manager "$BIN/kube-controller-manager" --kubeconfig="$dir/kubeconfig" \
        --service-account-private-key-file="$dir/pki/sa.key" --root-ca-file="$dir/pki/apiserver.crt" \
        --use-service-account-credentials=false --bind-address=127.0.0.1 --leader-elect=false \
        --controllers='*,-nodeipam'
    start "$dir" scheduler "$BIN/kube-scheduler" --kubeconfig="$dir/kubeconfig" \
        --bind-address=127.0.0.1 --leader-elect=false

    # containerd with its state here, pods on a bridge of their own, made here first with
    # its host address (the CNI plugin takes it as it is)
    ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
    ip addr replace "$HOST_ADDRESS/${POD_SUBNET#*/}" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    cat >"$dir/bin/runc" <<'RUNC'
#!/usr/bin/env python3
"""runc, less a negative oom_score_adj in the bundle (lowering it is refused here)."""
import json, os, sys
args = sys.argv[1:]
if "create" in args or "run" in args:
    bundle = args[args.index("--bundle") + 1] if "--bundle" in args else "."
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            config = json.load(f)
        if config.get("process", {}).get("oomScoreAdj", 0) < 0:
            del config["process"]["oomScoreAdj"]
            with open(path, "w") as f:
                json.dump(config, f)
os.execv("/usr/sbin/runc", ["runc", *args])
RUNC
    chmod +x "$dir/bin/runc"
    cat >"$dir/cni/10-blockferry.conflist" <<CNI
{"cniVersion": "1.0.0", "name": "blockferry-test", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]],
            "dataDir": "$dir/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CNI
    containerd config default | python3 -c '
import sys
d, text = sys.argv[1], sys.stdin.read()
for old, new in [
    ("root = \"/var/lib/containerd\"", f"root = \"{d}/containerd/root\""),
    ("state = \"/run/containerd\"", f"state = \"{d}/containerd/state\""),
    ("address = \"/run/containerd/containerd.sock\"", f"address = \"{d}/containerd/containerd.sock\""),
    ("sandbox_image = \"registry.k8s.io/pause:3.6\"", "sandbox_image = \"'"$PAUSE"'\""),
    ("bin_dir = \"/opt/cni/bin\"", "bin_dir = \"/usr/lib/cni\""),
    ("conf_dir = \"/etc/cni/net.d\"", f"conf_dir = \"{d}/cni\""),
    ("BinaryName = \"\"", f"BinaryName = \"{d}/bin/runc\""),
]:
    assert old in text, old
    text = text.replace(old, new, 1)
print(text)' "$dir" >"$dir/containerd/config.toml"
    start "$dir" containerd containerd --config "$dir/containerd/config.toml"
    wait_for 30 containerd ctr -a "$dir/containerd/containerd.sock" version
    pause_image
    load "$dir" "$PAUSE"

    cat >"$dir/kubelet/config.yaml" <<KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
address: 127.0.0.1
readOnlyPort: 0
containerRuntimeEndpoint: unix://$dir/containerd/containerd.sock
# the API server reaches it for logs and exec with no client certificate: on loopback only
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
imageGCHighThresholdPercent: 100
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
KUBELET
    start "$dir" kubelet "$BIN/kubelet" --config "$dir/kubelet/config.yaml" \
        --kubeconfig "$dir/kubeconfig" --hostname-override localhost \
        --root-dir "$dir/kubelet/root" --cert-dir "$dir/kubelet/pki"
    wait_for 120 "the node" "$KUBECTL" --kubeconfig "$dir/kubeconfig" wait --for=condition=Ready \
        node/localhost --timeout=5s
    echo "k8s: up; KUBECONFIG=$dir/kubeconfig"
}

pause_image() {  # each pod's sandbox: a process that waits, on the image's Debian base
    podman image exists "$PAUSE" && return
    (cd ../.. && bash compose/local/image.sh base)
    printf 'FROM localhost/blockferry-base:bookworm\nENTRYPOINT ["sleep", "infinity"]\n' \
        | buildah bud --quiet --isolation chroot --ulimit nofile=20000:20000 \
            --ulimit nproc=4096:4096 --tag "$PAUSE" --file - . >/dev/null
}

load() {  # load DIR IMAGE…: from podman's store into the cluster's containerd
    local dir
    dir=$(realpath -m "$1")
    shift
    local image
    for image in "$@"; do
        podman save --quiet --format docker-archive "$image" \
            | ctr -a "$dir/containerd/containerd.sock" -n k8s.io images import - >/dev/null
    done
}

stop() {  # stop DIR NAME: the process `start` started, by its pid
    local pid
    pid=$(cat "$1/$2.pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$1/$2.pid"
}

kill_containers() {  # every container of this cluster's containerd (they outlive it)
    local ctr=(ctr -a "$1/containerd/containerd.sock" -n k8s.io) task
    [[ -S $1/containerd/containerd.sock ]] || return 0
    for task in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
        "${ctr[@]}" tasks kill -a -s SIGKILL "$task" 2>/dev/null || true
    done
    for _ in $(seq 30); do
        "${ctr[@]}" tasks ls 2>/dev/null | grep -q RUNNING || return 0
        sleep 1
    done
    echo "k8s: containers still running after SIGKILL" >&2
}

down() {
    local dir name
    dir=$(realpath -m "$1")
    stop "$dir" kubelet  # first, or it starts the containers again
    kill_containers "$dir"
    for name in containerd scheduler controller-manager apiserver etcd; do
        stop "$dir" "$name"
    done
    # the pods' shims, started by that containerd
    pkill -f "containerd-shim-runc-v2 -namespace k8s.io -id .* -address $dir/" 2>/dev/null || true
    findmnt -rn -o TARGET | grep "^$dir/" | sort -r | xargs -r -n1 umount -l
    ip link del "$BRIDGE" 2>/dev/null || true
}

case "${1:-}" in
    build) build_etcd; build_kubernetes ;;
    up) up "${2:?the cluster directory}" ;;
    load) load "${2:?the cluster directory}" "${@:3}" ;;
    down) down "${2:?the cluster directory}" ;;
    *) echo "usage: $0 build | up DIR | load DIR IMAGE… | down DIR" >&2; exit 2 ;;
esac
