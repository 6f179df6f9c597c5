#!/usr/bin/env bash
# `make run`: a real backup and restore through the whole mesh on this machine.
# Starts a local Kafka (unless BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS names one), creates a
# fresh repository, runs each role as its own process, runs a job that backs up a
# generated disk (guest scripts run locally around a file-copy snapshot), restores it,
# checks the restore is byte-identical, prints a summary and stops everything it started.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="$ROOT/.venv/bin"
DEMO="$ROOT/.blockferry/demo"
SIZE_MIB="${DEMO_SIZE_MIB:-256}"
# shellcheck source=compose/local/lib.sh
source "$HERE/lib.sh"
mesh_stop_on_exit

rm -rf "$DEMO/repository" "$DEMO/restored.img" "$DEMO"/*.log "$DEMO/guest.txt"
mkdir -p "$DEMO"
export BLOCKFERRY_DATA_DIR="$DEMO"
export BLOCKFERRY_KAFKA__TOPIC_PREFIX="demo$(date +%s)"
# the demo's guest is this host: its scripts only write to guest.txt
export BLOCKFERRY_GUEST_PROXY__RUN_LOCAL_COMMANDS=true
mesh_kafka_up "$DEMO/kafka" 19092

echo "== creating a repository and a ${SIZE_MIB} MiB demo disk"
"$BIN/blockferry" repo init "$DEMO/repository" --key-file "$DEMO/repository-keys/default.key" >/dev/null
"$BIN/blockferry" repo export-dedupe-key --key-file "$DEMO/repository-keys/default.key" "$DEMO/repository" "$DEMO/keys/default.key" 2>/dev/null
mesh_acls default
"$BIN/python" "$HERE/make_disk.py" "$DEMO/disk.img" "$SIZE_MIB" --seed 7

echo "== starting the roles, each in its own process"
mesh_roles_up "$DEMO" 18081

echo "== running job demo: guest scripts, a snapshot, the backup"
cat >"$DEMO/jobs.yaml" <<YAML
jobs:
  - name: demo
    vms:
      - name: vm
        guest: {connection: local}
        disks: [{name: disk0, source: "$DEMO/disk.img"}]
    guest_processing:
      pre_freeze: "echo \"pre-freeze at \$(date +%T)\" >> '$DEMO/guest.txt'"
      post_thaw: "echo \"post-thaw at \$(date +%T)\" >> '$DEMO/guest.txt'"
      freeze_limit_s: 30
    snapshot: {provider: file-copy}
YAML
"$BIN/blockferry" jobs apply "$DEMO/jobs.yaml" >/dev/null
"$BIN/blockferry" jobs start demo --wait --json >"$DEMO/backup.json"
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
steps = ", ".join(f"{s['action']} {'ok' if s['ok'] else 'FAILED'}" for s in backup["steps"])
warnings = "".join(f"\n    warning       {w}" for w in backup["warnings"])
print(f"""
blockferry demo: backup and restore through Kafka, each role its own process
  disk            {size / mib:8.1f} MiB
  restore point   {backup['restore_point']} ({backup['state']})
  guest, snapshot {steps}{warnings}
  backup          {backup['seconds']:8.2f} s  ({size / mib / max(backup['seconds'], 1e-9):.0f} MiB/s)
    blocks        {c['blocks_total']} total, {c['blocks_zero']} zero, {c['blocks_deduplicated_session'] + c['blocks_deduplicated_global']} deduplicated, {c['blocks_sent']} sent
    sent          {c['bytes_sent'] / mib:8.1f} MiB of {c['bytes_sent_plain'] / mib:.1f} MiB (ratio {c['bytes_sent_plain'] / max(c['bytes_sent'], 1):.2f})
  repository      {stored / mib:8.1f} MiB in packs
  restore         {restore['seconds']:8.2f} s  ({size / mib / max(restore['seconds'], 1e-9):.0f} MiB/s)
  verify          ok
  result          restored disk is byte-identical to the source
""")
PY
