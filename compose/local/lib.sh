# shellcheck shell=bash
# Steps shared by demo.sh (`make run`) and bench.sh (`make bench`); sourced, not run.
#
#   mesh_kafka_up DIR PORT      start a local broker with its data in DIR, first port PORT,
#                               unless BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS names one (exported);
#                               BLOCKFERRY_KAFKA_SECURITY=sasl_ssl starts it with TLS, SASL
#                               and ACLs, and exports the roles' settings
#   mesh_acls REPO…             on such a broker, add the mesh's ACLs for REPO… as its admin
#   mesh_roles_up LOGDIR PORT   each role its own process (`blockferry run ROLE`), HTTP ports
#                               PORT, PORT+1, …, logs LOGDIR/ROLE.log; waits until every
#                               role is ready; fills ROLE_PIDS (role -> pid), exports
#                               BLOCKFERRY_API_URL (the orchestrator's port)
#   mesh_roles_down             stop the roles by pid (the broker keeps running)
#   mesh_stop                   stop the roles by pid, then the broker mesh_kafka_up started
#   mesh_stop_on_exit           run mesh_stop when the script ends, also on Ctrl-C or SIGTERM
#
# Expects set -euo pipefail and ROOT (the checkout) in the caller.
MESH_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MESH_BIN="$ROOT/.venv/bin"
MESH_ROLES=(target-mover dedupe-index source-mover guest-proxy orchestrator)
MESH_KAFKA_DIR=""
declare -gA ROLE_PIDS=()

mesh_kafka_up() {
    local dir="$1" port="$2"
    if [[ -n "${BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS:-}" ]]; then
        echo "== using the Kafka cluster at $BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS"
        return 0
    fi
    local security="${BLOCKFERRY_KAFKA_SECURITY:-plaintext}"
    echo "== starting a local Kafka broker ($security)"
    MESH_KAFKA_DIR="$dir"
    BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS="$(bash "$MESH_LIB_DIR/kafka.sh" up --data-dir "$dir" --port "$port" --security "$security" | tail -n 1)"
    export BLOCKFERRY_KAFKA__BOOTSTRAP_SERVERS
    if [[ -f "$dir/security/client.env" ]]; then
        set -a
        # shellcheck source=/dev/null
        . "$dir/security/client.env"
        set +a
    fi
}

mesh_acls() {
    [[ -n "$MESH_KAFKA_DIR" && -f "$MESH_KAFKA_DIR/security/admin.env" ]] || return 0
    local args=() repo
    for repo in "$@"; do args+=(--repository "$repo"); done
    (
        set -a
        # shellcheck source=/dev/null
        . "$MESH_KAFKA_DIR/security/admin.env"
        "$MESH_BIN/blockferry" acls --apply "${args[@]}"
    )
}

mesh_roles_up() {
    local logdir="$1" port="$2" role p pid
    for role in "${MESH_ROLES[@]}"; do
        BLOCKFERRY_HTTP__PORT=$port "$MESH_BIN/blockferry" run "$role" >"$logdir/$role.log" 2>&1 &
        ROLE_PIDS[$role]=$!
        [[ $role == orchestrator ]] && export BLOCKFERRY_API_URL="http://127.0.0.1:$port"
        port=$((port + 1))
    done
    port=$((port - ${#MESH_ROLES[@]}))
    for role in "${MESH_ROLES[@]}"; do
        p=$port
        port=$((port + 1))
        pid="${ROLE_PIDS[$role]}"
        # a target mover serving many repositories may take a minute (their topics)
        for _ in $(seq 1 480); do
            curl -fsS "http://127.0.0.1:$p/readyz" >/dev/null 2>&1 && continue 2
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        tail -n 40 "$logdir/$role.log" >&2 || true
        echo "the $role (pid $pid, port $p) did not start; its log: $logdir/$role.log" >&2
        return 1
    done
}

mesh_stop_on_exit() {
    trap mesh_stop EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

mesh_roles_down() {
    local pid _
    for pid in "${ROLE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${ROLE_PIDS[@]}"; do
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ROLE_PIDS=()
}

mesh_stop() {
    mesh_roles_down
    if [[ -n "$MESH_KAFKA_DIR" ]]; then
        bash "$MESH_LIB_DIR/kafka.sh" down --data-dir "$MESH_KAFKA_DIR" >/dev/null
        MESH_KAFKA_DIR=""
    fi
}
