#!/usr/bin/env bash
# The container image of every role, built from the project's own files without a
# Docker daemon: a Debian base made by mmdebstrap (no public registry is needed), then
# the Containerfile built on it by buildah, and the image kept in podman's store as
# localhost/blockferry:VERSION and as an OCI archive in compose/local/target/image/.
# `base` makes only the base (localhost/blockferry-base:SUITE); `standins` the images that
# stand in for the public ones compose/compose.yaml names.
# Usage: image.sh base | build | standins
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=compose/local/tools.sh
source compose/local/tools.sh

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
SUITE=bookworm
OUT=compose/local/target/image
BASE_TAR=$OUT/base-$SUITE.tar
BASE=localhost/blockferry-base:$SUITE
IMAGE=localhost/blockferry:$VERSION
# this host's CA bundle, for a TLS-inspecting proxy between a build and its registries
CA=(--secret "id=ca-certificates,src=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}")
# the packages it takes: the tools that build and run it (podman's networks among them)
PACKAGES=(buildah podman mmdebstrap runc netavark aardvark-dns iptables)

base() {
    need_packages image "${PACKAGES[@]}"
    mkdir -p "$OUT"
    if ! podman image exists "$BASE"; then
        if [[ ! -s $BASE_TAR ]]; then
            echo "== the base: Debian $SUITE (minbase) with Python, by mmdebstrap"
            mmdebstrap --quiet --variant=minbase --format=tar --include=python3,python3-venv \
                "$SUITE" "$BASE_TAR.part"
            mv "$BASE_TAR.part" "$BASE_TAR"
        fi
        podman import --quiet "$BASE_TAR" "$BASE" >/dev/null
    fi
}

build() {
    base
    echo "== $IMAGE"
    buildah bud --quiet --isolation chroot --layers "${CA[@]}" \
        --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
        --build-arg "BASE=$BASE" --tag "$IMAGE" --file Containerfile . >/dev/null
    rm -f "$OUT/blockferry-$VERSION.tar"
    podman save --quiet --format oci-archive --output "$OUT/blockferry-$VERSION.tar" "$IMAGE"
    echo "image: $IMAGE (and $OUT/blockferry-$VERSION.tar)"
}

# Stand-ins for the public images compose/compose.yaml names, built from this project's
# files and Debian's packages (no public registry is reachable here): Kafka from the jars
# of compose/local/pom.xml and mirror/pom.xml, Prometheus from Debian.
standins() {
    base
    local context
    context=$(mktemp -d)
    trap 'rm -rf "$context"' RETURN
    cp -r compose/local/target/lib compose/local/target/mirror-lib compose/local/standins/. "$context/"
    local name
    for name in kafka prometheus; do
        echo "== $(standin_image "$name") (stands in for the public $name image)"
        buildah bud --quiet --isolation chroot --layers "${CA[@]}" \
            --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 --build-arg "BASE=$BASE" \
            --tag "$(standin_image "$name")" --file "$context/$name.Containerfile" "$context" >/dev/null
    done
}

standin_image() {
    echo "localhost/standin-$1:latest"
}

case "${1:-}" in
    base) base ;;
    build) build ;;
    standins) standins ;;
    *) echo "usage: $0 base | build | standins" >&2; exit 2 ;;
esac
