#!/usr/bin/env bash
# The mesh in the background on this machine: a local Kafka (unless
# BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS names one), a repository named `default`
# under $BLOCKFERRY_DATA_DIR, and every role in one process (`blockferry run all`).
# BLOCKFERRY_KAFKA_SECURITY=sasl_ssl starts that Kafka with TLS and SASL (kafka.sh
# --security), adds the mesh's ACLs and runs each role as its own principal.
#   mesh.sh up | down | status
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="$ROOT/.venv/bin"
DATA="${BLOCKFERRY_DATA_DIR:-$ROOT/.blockferry}"
mkdir -p "$DATA"
DATA="$(cd "$DATA" && pwd)"
PID="$DATA/mesh.pid"
LOG="$DATA/mesh.log"
export BLOCKFERRY_DATA_DIR="$DATA"

up() {
    if [[ -z "${BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS:-}" ]]; then
        local security=()
        [[ -n "${BLOCKFERRY_KAFKA_SECURITY:-}" ]] && security=(--security "$BLOCKFERRY_KAFKA_SECURITY")
        BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS="$(bash "$HERE/kafka.sh" up --data-dir "$DATA/kafka" "${security[@]}" | tail -n 1)"
        export BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS
        if [[ -f "$DATA/kafka/security/client.env" ]]; then
            # the mesh's ACLs, added as the cluster's admin; then each role authenticates
            # as its own principal (blockferry-{role}), even in one process
            (
                set -a
                # shellcheck source=/dev/null
                . "$DATA/kafka/security/admin.env"
                "$BIN/blockferry" acls --apply --repository default
            )
            set -a
            # shellcheck source=/dev/null
            . "$DATA/kafka/security/client.env"
            set +a
        fi
    fi
    if [[ ! -f "$DATA/repository/config.json" ]]; then
        "$BIN/blockferry" repo init "$DATA/repository" --key-file "$DATA/repository-keys/default.key"
    fi
    if [[ ! -f "$DATA/keys/default.key" ]]; then
        "$BIN/blockferry" repo export-dedupe-key --key-file "$DATA/repository-keys/default.key" "$DATA/repository" "$DATA/keys/default.key"
    fi
    if [[ -f "$PID" ]] && kill -0 "$(cat "$PID")" 2>/dev/null; then
        echo "the mesh already runs (pid $(cat "$PID"))"
        return 0
    fi
    nohup "$BIN/blockferry" run all >>"$LOG" 2>&1 &
    echo $! >"$PID"
    local port="${BLOCKFERRY_HTTP__PORT:-8080}"
    for _ in $(seq 1 120); do
        if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
            echo "the mesh is up: API on http://127.0.0.1:$port, Kafka on $BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS, log $LOG"
            return 0
        fi
        kill -0 "$(cat "$PID")" 2>/dev/null || { tail -n 30 "$LOG" >&2; echo "the mesh failed to start" >&2; exit 1; }
        sleep 0.5
    done
    echo "the mesh did not become ready in 60 s; see $LOG" >&2
    exit 1
}

down() {
    if [[ -f "$PID" ]]; then
        local pid
        pid="$(cat "$PID")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
        rm -f "$PID"
    fi
    if [[ -d "$DATA/kafka" ]]; then
        bash "$HERE/kafka.sh" down --data-dir "$DATA/kafka"
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
