#!/usr/bin/env bash
# `make bench-scale`: the scale-out curve. One job of N disks (generated images of
# BENCH_SCALE_DISK_MIB each, different seeds, no snapshot) backed up in full by M source
# movers, for each MxN in BENCH_SCALE_CONFIGS, each into a fresh repository: wall time,
# MiB/s, CPU-seconds per GiB per process. From the CPU-seconds per GiB it predicts the
# throughput on 16 and 64 cores and prints its assumptions. Work dir:
# .blockferry/bench-scale. The second and later source movers start (and stop) with the
# first configuration that needs them, so run configurations in order of movers.
# Environment:
#   BENCH_SCALE_CONFIGS    movers x disks (default "1x1 1x2 1x4 2x2 2x4")
#   BENCH_SCALE_DISK_MIB   the size of each disk (default 1024)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="$ROOT/.venv/bin"
WORK="$ROOT/.blockferry/bench-scale"
read -r -a configs <<<"${BENCH_SCALE_CONFIGS:-1x1 1x2 1x4 2x2 2x4}"
DISK_MIB="${BENCH_SCALE_DISK_MIB:-1024}"

die() { echo "bench-scale: error: $*" >&2; exit 1; }
[[ "$DISK_MIB" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCALE_DISK_MIB must be a number"
most_disks=1
for config in "${configs[@]}"; do
    [[ "$config" =~ ^[1-9]x([1-9][0-9]?)$ ]] || die "BENCH_SCALE_CONFIGS: $config is not MOVERSxDISKS"
    ((BASH_REMATCH[1] > most_disks)) && most_disks=${BASH_REMATCH[1]}
done

# shellcheck source=compose/local/lib.sh
source "$HERE/lib.sh"
mesh_stop_on_exit

if [[ -d "$WORK/kafka" ]]; then bash "$HERE/kafka.sh" down --data-dir "$WORK/kafka" >/dev/null 2>&1 || true; fi
rm -rf "$WORK/kafka" "$WORK/repos" "$WORK/dedupe-index" "$WORK"/*.log "$WORK/bench-scale.json"
mkdir -p "$WORK/disks"

for ((i = 0; i < most_disks; i++)); do
    disk="$WORK/disks/disk$i.img"
    stamp="$DISK_MIB $i $(sha256sum "$HERE/make_disk.py" | cut -c1-16)"
    if [[ ! -f "$disk" || "$(cat "$disk.stamp" 2>/dev/null)" != "$stamp" ]]; then
        echo "== generating disk $i (${DISK_MIB} MiB)"
        "$BIN/python" "$HERE/make_disk.py" "$disk" "$DISK_MIB" --seed $((31 + i))
        echo "$stamp" >"$disk.stamp"
    fi
done

export BLOCKFERRY_DATA_DIR="$WORK"
BLOCKFERRY_KAFKA__TOPIC_PREFIX="benchscale$(date +%s)"
export BLOCKFERRY_KAFKA__TOPIC_PREFIX
mesh_kafka_up "$WORK/kafka" 19392

names=(warmup)
for config in "${configs[@]}"; do names+=("s$config"); done
repos=""
for name in "${names[@]}"; do
    "$BIN/blockferry" --log-level WARNING repo init "$WORK/repos/$name" --key-file "$WORK/repository-keys/$name.key" >/dev/null
    "$BIN/blockferry" repo export-dedupe-key --key-file "$WORK/repository-keys/$name.key" "$WORK/repos/$name" "$WORK/keys/$name.key" 2>/dev/null
    repos+="${repos:+, }\"$name\": \"$WORK/repos/$name\""
done
export BLOCKFERRY_TARGET_MOVER__REPOSITORIES="{$repos}"
mesh_acls "${names[@]}"

echo "== starting the roles, each in its own process"
mesh_roles_up "$WORK" 18391
pids=()
for role in "${MESH_ROLES[@]}"; do pids+=(--pid "$role=${ROLE_PIDS[$role]}"); done
for f in "$MESH_KAFKA_DIR"/node-*/kafka.pid; do
    [[ -f "$f" ]] || continue
    node="${f%/kafka.pid}"
    pids+=(--pid "kafka-${node##*/node-}=$(<"$f")")
done
"$BIN/python" "$HERE/bench_scale.py" --work "$WORK" --disk-mib "$DISK_MIB" \
    --configs "${configs[@]}" "${pids[@]}"

mesh_stop
rm -rf "$WORK/kafka" "$WORK/repos" "$WORK/dedupe-index"
