#!/usr/bin/env bash
# Kafka's MirrorMaker 2 (dedicated mode), at the broker's version, from Maven Central
# jars on a classpath of its own (compose/local/target/mirror-lib, from mirror/pom.xml).
#
#   mirror.sh fetch                              download/refresh the jars (when needed)
#   mirror.sh up --config FILE --data-dir DIR [--clusters ALIAS[,ALIAS]]
#                                                start MirrorMaker 2 with mm2.properties
#                                                FILE in the background (pid, stdout and
#                                                logs in DIR); --clusters: only the flows
#                                                into those clusters
#   mirror.sh down --data-dir DIR                SIGTERM it (SIGKILL after 30 s)
#
# Environment: JAVA, MVN, BLOCKFERRY_MIRROR_HEAP (default 512m).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/target/mirror-lib"
STAMP="$LIB/.fetched"
JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"
HEAP="${BLOCKFERRY_MIRROR_HEAP:-512m}"

log() { printf 'mirror.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cmd_fetch() {
    [[ -f "$STAMP" && "$STAMP" -nt "$HERE/mirror/pom.xml" ]] && return 0
    mkdir -p "$HERE/target"
    exec 8>"$HERE/target/.mirror-fetch.lock"
    flock -w 600 8 || die "another fetch holds $HERE/target/.mirror-fetch.lock"
    if [[ -f "$STAMP" && "$STAMP" -nt "$HERE/mirror/pom.xml" ]]; then return 0; fi
    command -v "$MVN" >/dev/null || die "maven ($MVN) not found"
    log "fetching MirrorMaker 2 jars with maven into compose/local/target/mirror-lib ..."
    rm -rf "$LIB"
    "$MVN" -q -B -f "$HERE/mirror/pom.xml" package 2>&1 \
        | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2 \
        || die "maven failed"
    compgen -G "$LIB/connect-mirror-*.jar" >/dev/null || die "maven produced no connect-mirror jar"
    touch "$STAMP"
}

CONFIG="" DATA_DIR="" CLUSTERS=""
parse_opts() {
    while (($#)); do
        case "$1" in
            --config) CONFIG="${2:?--config needs a value}"; shift 2 ;;
            --data-dir) DATA_DIR="${2:?--data-dir needs a value}"; shift 2 ;;
            --clusters) CLUSTERS="${2:?--clusters needs a value}"; shift 2 ;;
            *) die "unknown option: $1" ;;
        esac
    done
    [[ -n "$DATA_DIR" ]] || die "--data-dir is required"
    DATA_DIR="$(realpath -m -- "$DATA_DIR")"
}

running_pid() {
    local pid
    pid="$(cat "$DATA_DIR/mirror.pid" 2>/dev/null)" || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

cmd_up() {
    parse_opts "$@"
    [[ -f "$CONFIG" ]] || die "--config: no file ${CONFIG:-given}"
    cmd_fetch
    mkdir -p "$DATA_DIR/logs"
    if pid="$(running_pid)"; then
        log "already running (pid $pid)"
        return 0
    fi
    command -v "$JAVA" >/dev/null || die "java not found"
    local extra=() names=()
    if [[ -n "$CLUSTERS" ]]; then
        read -r -a names <<<"${CLUSTERS//,/ }"
        extra=(--clusters "${names[@]}")
    fi
    (
        cd "$DATA_DIR"
        exec setsid "$JAVA" -Xms64m -Xmx"$HEAP" -XX:+ExitOnOutOfMemoryError \
            -Djava.awt.headless=true -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
            -Dkafka.logs.dir="$DATA_DIR/logs" -Dblockferry.log.file=mirror.log \
            -cp "$LIB/*" org.apache.kafka.connect.mirror.MirrorMaker "$(realpath "$CONFIG")" \
            "${extra[@]}"
    ) </dev/null >"$DATA_DIR/stdout.log" 2>&1 &
    echo "$!" >"$DATA_DIR/mirror.pid"
    sleep 1
    running_pid >/dev/null || { tail -n 40 "$DATA_DIR/stdout.log" >&2; die "MirrorMaker 2 exited at once"; }
    log "started (pid $(cat "$DATA_DIR/mirror.pid"), logs in $DATA_DIR/logs/mirror.log)"
}

cmd_down() {
    parse_opts "$@"
    local pid deadline
    pid="$(running_pid)" || { rm -f "$DATA_DIR/mirror.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.3; done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still running after 30 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DATA_DIR/mirror.pid"
    log "stopped"
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    up) shift; cmd_up "$@" ;;
    down) shift; cmd_down "$@" ;;
    *) die "usage: mirror.sh fetch | up --config FILE --data-dir DIR [--clusters A,B] | down --data-dir DIR" ;;
esac
