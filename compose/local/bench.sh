#!/usr/bin/env bash
# `make bench`: full backup, incremental backup and restore throughput of the mesh on a
# disk image, against borg and restic on the same image, and the floor (our reading,
# digesting and compressing alone). Work dir: .blockferry/bench (the image, its changed
# copy, repositories, logs, bench.json). Environment:
#   BENCH_IMAGE       "generated" (default): a generated image (make_disk.py); "os": an
#                     ext4 image of a Debian root's real files (os_image.sh; mmdebstrap,
#                     a few minutes the first time, then kept)
#   BENCH_SIZE_MIB    image size in MiB (default 4096; at least 3072 for "os")
#   BENCH_ROUNDS      rounds, each a full backup + restore and incremental backups of a
#                     changed copy of the image with both tools (default 3)
#   BENCH_BLOCK_KIB   our repositories' block size in KiB (default 1024)
#   BENCH_KEEP        set to keep Kafka's data, the repositories and restores afterwards
#   BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS   use that cluster instead of a local broker
#   BLOCKFERRY_KAFKA_SECURITY=sasl_ssl    the local broker with TLS, SASL and ACLs, each
#                     role its own principal
#   BENCH_BULK_CLIENTS  the Kafka clients to carry bulk records, one pass of the rounds
#                     each on the same broker and image (default "librdkafka"; e.g.
#                     "librdkafka aiokafka" compares both in one run)
#   BENCH_ENCRYPTION  our repositories' encryption at rest, one pass of the rounds each
#                     (default "aes-256-gcm"; "aes-256-gcm none" measures what it costs)
#   BENCH_COMPARE     an earlier run's bench.json (keep a copy): print this run's times
#                     relative to its (e.g. SASL_SSL against plaintext)
# Each round backs up into its own fresh repository (r1, r2, ...), so no round
# deduplicates against an earlier one; borg gets a fresh repository every round too.
# The digest-compare incremental of round N goes into its own repository (rNdc, after an
# untimed full backup there), so it cannot deduplicate against round N's other incrementals.
# An untimed warm-up round of both tools (our repository r0) comes first.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="$ROOT/.venv/bin"
WORK="$ROOT/.blockferry/bench"
SIZE_MIB="${BENCH_SIZE_MIB:-4096}"
ROUNDS="${BENCH_ROUNDS:-3}"
BLOCK_KIB="${BENCH_BLOCK_KIB:-1024}"
SEED=11
TAIL=12345
MIB=$((1024 * 1024))

die() { echo "bench: error: $*" >&2; exit 1; }
[[ "$SIZE_MIB" =~ ^[0-9]+$ && "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MIB and BENCH_ROUNDS must be numbers"

# shellcheck source=compose/local/lib.sh
source "$HERE/lib.sh"
mesh_stop_on_exit

mkdir -p "$WORK"
# A broker left running by an interrupted bench, then everything but a reusable image.
if [[ -d "$WORK/kafka" ]]; then bash "$HERE/kafka.sh" down --data-dir "$WORK/kafka" >/dev/null 2>&1 || true; fi
rm -rf "$WORK/kafka" "$WORK/repos" "$WORK/borg" "$WORK/restic" "$WORK/restore" "$WORK/changed" "$WORK"/*.log \
    "$WORK"/bench*.json

# -- the image, kept between runs while its stamp matches: generated (deterministic) or
# a file system of real OS files
free_bytes() { df --output=avail -B1 "$WORK" | tail -n 1 | tr -d ' '; }
generated_image() {
    image="$WORK/disk.img"
    image_bytes=$((SIZE_MIB * MIB + TAIL))
    local stamp free
    stamp="$SIZE_MIB $SEED $TAIL $(sha256sum "$HERE/make_disk.py" | cut -c1-16)"
    if [[ -f "$image" && "$(cat "$WORK/disk.stamp" 2>/dev/null)" == "$stamp" ]]; then
        echo "== reusing the ${SIZE_MIB} MiB image $image"
        return
    fi
    rm -f "$image" "$WORK/disk.stamp"
    free="$(free_bytes)"
    ((image_bytes <= free)) || die "a ${SIZE_MIB} MiB image does not fit in $WORK:" \
        "$((free / MIB)) MiB free (set BENCH_SIZE_MIB lower)"
    echo "== generating a ${SIZE_MIB} MiB image (30% zero, 30% text, 20% random, 20% repeated 1 MiB regions)"
    "$BIN/python" "$HERE/make_disk.py" "$image" "$SIZE_MIB" --seed "$SEED" --tail "$TAIL"
    echo "$stamp" >"$WORK/disk.stamp"
}
case "${BENCH_IMAGE:-generated}" in
    generated) generated_image ;;
    os)
        image="$WORK/os.img"
        image_bytes=$((SIZE_MIB * MIB))
        bash "$HERE/os_image.sh" "$image" "$SIZE_MIB"
        ;;
    *) die "BENCH_IMAGE must be generated or os, not ${BENCH_IMAGE}" ;;
esac
# Per round at most: our two repositories + Kafka's copies of chunks and restore stream +
# one restored image + borg's repository and extracted image + restic's repository and
# restored image (one after the other: counted once); our repositories stay;
# one changed copy of the image. Kafka keeps every pass's chunks and restore streams
# (BENCH_BULK_CLIENTS), so each further pass adds its share.
read -r -a clients <<<"${BENCH_BULK_CLIENTS:-librdkafka}"
read -r -a encryptions <<<"${BENCH_ENCRYPTION:-aes-256-gcm}"
for encryption in "${encryptions[@]}"; do
    [[ "$encryption" == aes-256-gcm || "$encryption" == none ]] || die "BENCH_ENCRYPTION: aes-256-gcm or none, not $encryption"
done
passes=$((${#clients[@]} * ${#encryptions[@]}))
need=$((image_bytes * (5 + 3 * ROUNDS + 2 * (ROUNDS + 1) * (passes - 1))))
free="$(free_bytes)"
((need <= free)) || echo "bench: warning: the bench may need up to $((need / MIB)) MiB in $WORK," \
    "only $((free / MIB)) MiB are free" >&2

# -- the peers: borg and restic, Debian's packages
for peer in borg:borgbackup restic:restic; do
    command="${peer%%:*}" package="${peer#*:}"
    command -v "$command" >/dev/null && continue
    echo "== installing $package (Debian package)"
    [[ $(id -u) == 0 ]] || die "$command is missing and this is not root: install $package first"
    command -v apt-get >/dev/null || die "$command is missing and there is no apt-get: install $package first"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "$package" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "$package" >/dev/null; } \
        || die "could not install $package with apt-get"
    command -v "$command" >/dev/null || die "$package is installed but there is no $command command"
done

# -- Kafka, one fresh repository per round, the roles
export BLOCKFERRY_DATA_DIR="$WORK"
BLOCKFERRY_KAFKA__TOPIC_PREFIX="bench$(date +%s)"
export BLOCKFERRY_KAFKA__TOPIC_PREFIX
mesh_kafka_up "$WORK/kafka" 19192

names="r0 $(for ((i = 1; i <= ROUNDS; i++)); do echo "r$i r${i}dc"; done)"
previous=""
for pass in $(for e in "${encryptions[@]}"; do for c in "${clients[@]}"; do echo "$c/$e"; done; done); do
    client="${pass%/*}" encryption="${pass#*/}"
    export BLOCKFERRY_KAFKA__BULK_CLIENT="$client" BENCH_REPO_ENCRYPTION="$encryption"
    rm -rf "$WORK/repos" "$WORK/repository-keys" "$WORK/borg" "$WORK/restic" "$WORK/restore" "$WORK/changed" "$WORK/dedupe-index"
    echo "== bulk records through $client, encryption $encryption: creating $((2 * ROUNDS)) repositories (block size $BLOCK_KIB KiB), two per round, and r0 for the warm-up"
    repos=""
    for name in $names; do
        key=(--key-file "$WORK/repository-keys/$name.key")
        if [[ "$encryption" == none ]]; then
            "$BIN/blockferry" --log-level WARNING repo init "$WORK/repos/$name" --insecure-no-encryption --block-size "$BLOCK_KIB" >/dev/null
            key=()
        else
            "$BIN/blockferry" --log-level WARNING repo init "$WORK/repos/$name" "${key[@]}" --block-size "$BLOCK_KIB" >/dev/null
        fi
        "$BIN/blockferry" repo export-dedupe-key "${key[@]}" "$WORK/repos/$name" "$WORK/keys/$name.key" 2>/dev/null
        repos+="${repos:+, }\"$name\": \"$WORK/repos/$name\""
    done
    export BLOCKFERRY_TARGET_MOVER__REPOSITORIES="{$repos}"
    # shellcheck disable=SC2086
    mesh_acls $names

    echo "== starting the roles, each in its own process"
    mesh_roles_up "$WORK" 18091

    pids=()
    for role in "${MESH_ROLES[@]}"; do pids+=(--pid "$role=${ROLE_PIDS[$role]}"); done
    if [[ -n "$MESH_KAFKA_DIR" ]]; then
        for f in "$MESH_KAFKA_DIR"/node-*/kafka.pid; do
            node="${f%/kafka.pid}"
            pids+=(--pid "kafka-${node##*/node-}=$(<"$f")")
        done
    fi
    BENCH_COMPARE="${previous:-${BENCH_COMPARE:-}}" "$BIN/python" "$HERE/bench.py" --work "$WORK" \
        --image "$image" --rounds "$ROUNDS" --mesh "each role its own process (blockferry run ROLE)" "${pids[@]}"
    mesh_roles_down
    if ((passes > 1)); then
        cp "$WORK/bench.json" "$WORK/bench-$client-$encryption.json"
        previous="$WORK/bench-$client-$encryption.json"
    fi
    # the next pass's topics, so its broker starts as empty as this one's did
    BLOCKFERRY_KAFKA__TOPIC_PREFIX="bench$(date +%s)"
done

# The bulky leftovers (Kafka's logs, repositories, restores: tens of GiB at 4 GiB) go;
# the reusable image, bench.json and the role logs stay. BENCH_KEEP=1 keeps everything.
mesh_stop
if [[ -z "${BENCH_KEEP:-}" ]]; then
    rm -rf "$WORK/kafka" "$WORK/repos" "$WORK/repository-keys" "$WORK/borg" "$WORK/restic" "$WORK/restore" "$WORK/changed" "$WORK/dedupe-index"
fi
