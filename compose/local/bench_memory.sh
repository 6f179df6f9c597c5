#!/usr/bin/env bash
# `make bench-memory`: peak resident memory of every role against the size of the disk
# and of the repository. Each disk is a non-sparse NBD export of nbdkit's pattern plugin
# (every 8 bytes hold their own offset: no zero block, no duplicate block, compressible
# to ~3%), backed up in full, again by digest compare (its parent's fixed index of the
# whole disk loaded), again with an empty changed-ranges map, and restored to a file.
# Then a repository whose pack index holds BENCH_MEMORY_INDEX_CHUNKS entries takes a
# backup, so the target mover loads that index. Work dir: .blockferry/bench-memory.
# Environment:
#   BENCH_MEMORY_GIB            disk sizes in GiB (default "1 64")
#   BENCH_MEMORY_INDEX_CHUNKS   pack index entries of the big repository (default
#                               10000000; 0 skips it)
#   BENCH_MEMORY_RESTORE        set to 0 to skip the restores (they write each disk in
#                               full: 64 GiB of real data for a 64 GiB disk)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="$ROOT/.venv/bin"
WORK="$ROOT/.blockferry/bench-memory"
read -r -a sizes <<<"${BENCH_MEMORY_GIB:-1 64}"
INDEX_CHUNKS="${BENCH_MEMORY_INDEX_CHUNKS:-10000000}"

die() { echo "bench-memory: error: $*" >&2; exit 1; }
for size in "${sizes[@]}"; do [[ "$size" =~ ^[1-9][0-9]*$ ]] || die "BENCH_MEMORY_GIB: $size is not a number of GiB"; done
[[ "$INDEX_CHUNKS" =~ ^[0-9]+$ ]] || die "BENCH_MEMORY_INDEX_CHUNKS must be a number"

# shellcheck source=compose/local/lib.sh
source "$HERE/lib.sh"
mesh_stop_on_exit

if ! command -v nbdkit >/dev/null; then
    echo "== installing nbdkit (Debian package)"
    [[ $(id -u) == 0 ]] || die "nbdkit is missing and this is not root: install nbdkit first"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends nbdkit >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends nbdkit >/dev/null; } \
        || die "could not install nbdkit with apt-get"
fi

if [[ -d "$WORK/kafka" ]]; then bash "$HERE/kafka.sh" down --data-dir "$WORK/kafka" >/dev/null 2>&1 || true; fi
rm -rf "$WORK"
mkdir -p "$WORK"
export BLOCKFERRY_DATA_DIR="$WORK"
BLOCKFERRY_KAFKA__TOPIC_PREFIX="benchmem$(date +%s)"
export BLOCKFERRY_KAFKA__TOPIC_PREFIX
mesh_kafka_up "$WORK/kafka" 19292

# mesh_up REPO…: the roles, each in its own process, the target mover serving REPO…;
# fills pids (--pid NAME=PID for bench_memory.py)
mesh_up() {
    local name repos="" f node
    for name in "$@"; do
        [[ -d "$WORK/repos/$name" ]] || {
            "$BIN/blockferry" --log-level WARNING repo init "$WORK/repos/$name" --key-file "$WORK/repository-keys/$name.key" >/dev/null
            "$BIN/blockferry" repo export-dedupe-key --key-file "$WORK/repository-keys/$name.key" "$WORK/repos/$name" "$WORK/keys/$name.key" 2>/dev/null
        }
        repos+="${repos:+, }\"$name\": \"$WORK/repos/$name\""
    done
    export BLOCKFERRY_TARGET_MOVER__REPOSITORIES="{$repos}"
    mesh_acls "$@"
    echo "== starting the roles, each in its own process (repositories: $*)"
    mesh_roles_up "$WORK" 18291
    pids=()
    for role in "${MESH_ROLES[@]}"; do pids+=(--pid "$role=${ROLE_PIDS[$role]}"); done
    for f in "$MESH_KAFKA_DIR"/node-*/kafka.pid; do
        [[ -f "$f" ]] || continue
        node="${f%/kafka.pid}"
        pids+=(--pid "kafka-${node##*/node-}=$(<"$f")")
    done
}

names=()
for size in "${sizes[@]}"; do names+=("g$size"); done
mesh_up "${names[@]}"
"$BIN/python" "$HERE/bench_memory.py" disks --work "$WORK" --sizes "${sizes[@]}" \
    --restore "${BENCH_MEMORY_RESTORE:-1}" "${pids[@]}"
mesh_roles_down

if ((INDEX_CHUNKS > 0)); then
    echo "== writing $INDEX_CHUNKS pack index entries into repository big"
    "$BIN/blockferry" --log-level WARNING repo init "$WORK/repos/big" --key-file "$WORK/repository-keys/big.key" >/dev/null
    "$BIN/blockferry" repo export-dedupe-key --key-file "$WORK/repository-keys/big.key" "$WORK/repos/big" "$WORK/keys/big.key" 2>/dev/null
    "$BIN/python" "$HERE/bench_memory.py" seed-index "$WORK/repos/big" "$INDEX_CHUNKS"
    mesh_up big
    "$BIN/python" "$HERE/bench_memory.py" big --work "$WORK" --chunks "$INDEX_CHUNKS" "${pids[@]}"
fi
"$BIN/python" "$HERE/bench_memory.py" summary --work "$WORK"

# Kafka's logs, the repositories and restores go; the summary and the role logs stay.
mesh_stop
rm -rf "$WORK/kafka" "$WORK/repos" "$WORK/restore" "$WORK/dedupe-index"
