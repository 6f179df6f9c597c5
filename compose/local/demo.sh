#!/usr/bin/env bash
# `make run`: a real backup and restore through the whole mesh on this machine.
# Starts a local Kafka (unless BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS names one), creates a
# fresh repository, runs each role as its own process, backs up a generated disk,
# restores it, checks the restore is byte-identical, prints a summary and stops
# everything it started.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="$ROOT/.venv/bin"
DEMO="$ROOT/.blockferry/demo"
SIZE_MIB="${DEMO_SIZE_MIB:-256}"
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n "${OWN_KAFKA:-}" ]]; then bash "$HERE/kafka.sh" down --data-dir "$DEMO/kafka" >/dev/null; fi
}
trap cleanup EXIT

rm -rf "$DEMO/repository" "$DEMO/restored.img" "$DEMO"/*.log
mkdir -p "$DEMO"
export BLOCKFERRY_DATA_DIR="$DEMO"
export BLOCKFERRY_KAFKA__TOPIC_PREFIX="demo$(date +%s)"
if [[ -z "${BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS:-}" ]]; then
    echo "== starting a local Kafka broker"
    OWN_KAFKA=1
    BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS="$(bash "$HERE/kafka.sh" up --data-dir "$DEMO/kafka" --port 19092 | tail -n 1)"
    export BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS
fi

echo "== creating a repository and a ${SIZE_MIB} MiB demo disk"
"$BIN/blockferry" repo init "$DEMO/repository" >/dev/null
"$BIN/python" "$HERE/make_disk.py" "$DEMO/disk.img" "$SIZE_MIB" --seed 7

echo "== starting the roles, each in its own process"
port=18080
for role in target-mover source-mover orchestrator; do
    port=$((port + 1))
    [[ $role == orchestrator ]] && api_port=$port
    BLOCKFERRY_HTTP__PORT=$port "$BIN/blockferry" run "$role" >"$DEMO/$role.log" 2>&1 &
    PIDS+=($!)
done
export BLOCKFERRY_API_URL="http://127.0.0.1:$api_port"
for p in 18081 18082 18083; do
    for _ in $(seq 1 120); do
        curl -fsS "http://127.0.0.1:$p/readyz" >/dev/null 2>&1 && break
        sleep 0.5
    done
    curl -fsS "http://127.0.0.1:$p/readyz" >/dev/null || { tail -n 40 "$DEMO"/*.log; echo "a role did not start" >&2; exit 1; }
done

echo "== backing up"
"$BIN/blockferry" backup "$DEMO/disk.img" --job demo --disk disk0 --wait --json >"$DEMO/backup.json"
rp="$("$BIN/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["restore_point"])' "$DEMO/backup.json")"

echo "== restoring $rp"
"$BIN/blockferry" restore "$rp" --to "$DEMO/restored.img" --json >"$DEMO/restore.json"

echo "== verifying the repository"
"$BIN/blockferry" verify "$rp" --json >"$DEMO/verify.json"

cmp "$DEMO/disk.img" "$DEMO/restored.img"
"$BIN/python" - "$DEMO" <<'PY'
import json, os, sys
demo = sys.argv[1]
backup = json.load(open(f"{demo}/backup.json"))
restore = json.load(open(f"{demo}/restore.json"))
size = os.path.getsize(f"{demo}/disk.img")
stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(f"{demo}/repository/packs") for f in fs)
mib = 1024 * 1024
c = backup["counters"]
print(f"""
blockferry demo: backup and restore through Kafka, each role its own process
  disk            {size / mib:8.1f} MiB
  restore point   {backup['restore_point']}
  backup          {backup['seconds']:8.2f} s  ({size / mib / max(backup['seconds'], 1e-9):.0f} MiB/s)
    blocks        {c['blocks_total']} total, {c['blocks_zero']} zero, {c['blocks_deduplicated_session']} deduplicated, {c['blocks_sent']} sent
    sent          {c['bytes_sent'] / mib:8.1f} MiB of {c['bytes_sent_plain'] / mib:.1f} MiB (ratio {c['bytes_sent_plain'] / max(c['bytes_sent'], 1):.2f})
  repository      {stored / mib:8.1f} MiB in packs
  restore         {restore['seconds']:8.2f} s  ({size / mib / max(restore['seconds'], 1e-9):.0f} MiB/s)
  verify          ok
  result          restored disk is byte-identical to the source
""")
PY
