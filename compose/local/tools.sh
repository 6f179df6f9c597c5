# shellcheck shell=bash
# The tools built from the Go module proxy (MinIO, Helm, helm-docs, the single-node
# Kubernetes), kept outside the checkout in a cache of this machine, so that every clone
# (CI's among them) builds each version once. Sourced, not run.
#
#   TOOLS_DIR                    BLOCKFERRY_TOOLS_DIR, else ~/.cache/blockferry/tools
#   tool_built NAME VERSION      whether $TOOLS_DIR/NAME is there at VERSION
#   tool_stamp NAME VERSION      record that $TOOLS_DIR/NAME is at VERSION
#   go_tool NAME PACKAGE VERSION `go install PACKAGE@VERSION` into $TOOLS_DIR, once per version
#   local_go_tool NAME DIR       `go build` the module in DIR into $TOOLS_DIR, once per content
#   need_packages WHO PACKAGE…   install the Debian packages WHO runs that are missing (as
#                                root; anyone else is told the command)
TOOLS_DIR=${BLOCKFERRY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/blockferry/tools}

tool_built() {
    [[ -x "$TOOLS_DIR/$1" && "$(cat "$TOOLS_DIR/$1.version" 2>/dev/null)" == "$2" ]]
}

tool_stamp() {
    echo "$2" >"$TOOLS_DIR/$1.version"
}

go_tool() {
    local name=$1 package=$2 version=$3
    tool_built "$name" "$version" && return
    command -v go >/dev/null || { echo "tools: building $name needs Go (go.dev/dl)" >&2; exit 1; }
    mkdir -p "$TOOLS_DIR"
    echo "== building $name $version from the Go module proxy (minutes, once)" >&2
    GOBIN="$TOOLS_DIR" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go install "$package@$version" 2>&1 | { grep -v '^go: downloading' || true; }
    [[ -x "$TOOLS_DIR/$name" ]] || { echo "tools: building $name failed" >&2; exit 1; }
    tool_stamp "$name" "$version"
}

local_go_tool() {
    local name=$1 dir=$2 version
    version=$(cat "$dir"/go.mod "$dir"/go.sum "$dir"/*.go | sha256sum | cut -c1-16)
    tool_built "$name" "$version" && return
    mkdir -p "$TOOLS_DIR"
    echo "== building $name" >&2
    (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -o "$TOOLS_DIR/$name" . 2>&1 \
        | { grep -v '^go: downloading' || true; })
    [[ -x "$TOOLS_DIR/$name" ]] || { echo "tools: building $name failed" >&2; exit 1; }
    tool_stamp "$name" "$version"
}

need_packages() {
    local who=$1 missing=() package
    shift
    for package in "$@"; do
        [[ "$(dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null)" == installed ]] \
            || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) != 0 ]]; then
        echo "$who: needs the Debian packages ${missing[*]}:" \
            "sudo apt-get install --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    echo "== installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}
