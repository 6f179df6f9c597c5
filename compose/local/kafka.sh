#!/usr/bin/env bash
# Local Apache Kafka (KRaft, combined broker+controller nodes) from Maven Central jars.
# No Docker: the jars are fetched once into compose/local/target/lib with Maven and each
# node runs as a plain background java process bound to 127.0.0.1.
#
#   kafka.sh fetch                        download/refresh the jars (only when needed)
#   kafka.sh up [options]                 format (first time) + start + wait until ready;
#                                         last stdout line = bootstrap servers
#   kafka.sh down [--data-dir DIR]        SIGTERM the nodes (SIGKILL after 30 s)
#   kafka.sh status [--data-dir DIR]      exit 0 if every node runs, 3 otherwise
#   kafka.sh configs ARGS...              Kafka's kafka-configs.sh from the fetched jars
#                                         (quotas: `blockferry link-limit` prints ARGS)
#
# Options of `up`:
#   --nodes N              number of nodes (default 1); each is broker and controller
#   --data-dir DIR         default ${BLOCKFERRY_DATA_DIR:-./.blockferry}/kafka
#   --port P               first broker port (default 9092); node i uses P+i-1
#   --controller-port C    first controller port (default P+N); node i uses C+i-1
#   --heap SIZE            JVM -Xmx per node (default 512m)
#   --timeout S            seconds to wait for readiness (default 90)
#   --owner-pid PID        stop the nodes (run `down`) once PID has exited (test harnesses)
#   --wan-port W           a second listener, WAN, for clients of another site: node i
#                          listens on 127.0.0.1:W+i-1 with the main listener's security
#   --wan-advertise H:A    the address the other site reaches node i's WAN listener at
#                          (a relay, a NAT): H:A+i-1; clients that bootstrap through it
#                          are told these addresses, so all their traffic takes that way
#   --security MODE        plaintext (default) or sasl_ssl: clients over TLS with SASL
#                          SCRAM-SHA-512, KRaft's StandardAuthorizer, nodes to controllers
#                          over mutual TLS. Certificates (openssl) and passwords are made
#                          at format time in DIR/security (0700): a SCRAM user per
#                          role (client.env: the roles' BLOCKFERRY_KAFKA__SECURITY__*
#                          settings) and the admin (admin.env, admin.properties).
#
# Environment: BLOCKFERRY_DATA_DIR, BLOCKFERRY_KAFKA_HEAP, BLOCKFERRY_KAFKA_START_TIMEOUT,
# BLOCKFERRY_PYTHON (readiness check with aiokafka; default .venv/bin/python, falls back
# to Kafka's BrokerApiVersionsCommand), JAVA, MVN.
#
# Layout of DIR: cluster.env (cluster id, node count, ports, security), bootstrap.servers,
# node-<id>/{server.properties,kafka.pid,stdout.log,logs/server.log,data/}.
# Nodes, ports and the cluster id are fixed when DIR is first formatted.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LIB="$HERE/target/lib"
STAMP="$LIB/.fetched"
JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
}

# --------------------------------------------------------------------------- fetch

lib_is_fresh() {
    [[ -f "$STAMP" && "$STAMP" -nt "$HERE/pom.xml" ]] || return 1
    compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null
}

cmd_fetch() {
    if lib_is_fresh; then
        return 0
    fi
    mkdir -p "$HERE/target"
    # Serialise concurrent fetches (several `up` at once, e.g. parallel test sessions).
    exec 8>"$HERE/target/.fetch.lock"
    flock -w 600 8 || die "another fetch holds $HERE/target/.fetch.lock"
    if lib_is_fresh; then
        exec 8>&-
        return 0
    fi
    command -v "$MVN" >/dev/null || die "maven ($MVN) not found"
    log "fetching Kafka jars with maven into ${LIB#"$ROOT"/} ..."
    rm -rf "$LIB"    # copy-dependencies never deletes jars of older versions
    local t0=$SECONDS
    # (maven 3.8 -q -B still prints bare ANSI resets: filter them out)
    "$MVN" -q -B -f "$HERE/pom.xml" package 2>&1 \
        | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2 \
        || die "maven failed"
    compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null || die "maven produced no kafka jar in $LIB"
    touch "$STAMP"
    exec 8>&-
    local jars=("$LIB"/*.jar)
    log "fetched ${#jars[@]} jars in $((SECONDS - t0))s"
}

# --------------------------------------------------------------------- options

NODES=""
PORT=""
CONTROLLER_PORT=""
HEAP="${BLOCKFERRY_KAFKA_HEAP:-512m}"
TIMEOUT="${BLOCKFERRY_KAFKA_START_TIMEOUT:-90}"
OWNER_PID=""
SECURITY=""
WAN_PORT=""
WAN_ADVERTISE=""
DATA_DIR="${BLOCKFERRY_DATA_DIR:-./.blockferry}/kafka"

parse_opts() {
    while (($#)); do
        case "$1" in
            --nodes) NODES="${2:?--nodes needs a value}"; shift 2 ;;
            --nodes=*) NODES="${1#*=}"; shift ;;
            --port) PORT="${2:?--port needs a value}"; shift 2 ;;
            --port=*) PORT="${1#*=}"; shift ;;
            --controller-port) CONTROLLER_PORT="${2:?--controller-port needs a value}"; shift 2 ;;
            --controller-port=*) CONTROLLER_PORT="${1#*=}"; shift ;;
            --data-dir) DATA_DIR="${2:?--data-dir needs a value}"; shift 2 ;;
            --data-dir=*) DATA_DIR="${1#*=}"; shift ;;
            --heap) HEAP="${2:?--heap needs a value}"; shift 2 ;;
            --heap=*) HEAP="${1#*=}"; shift ;;
            --timeout) TIMEOUT="${2:?--timeout needs a value}"; shift 2 ;;
            --timeout=*) TIMEOUT="${1#*=}"; shift ;;
            --owner-pid) OWNER_PID="${2:?--owner-pid needs a value}"; shift 2 ;;
            --owner-pid=*) OWNER_PID="${1#*=}"; shift ;;
            --security) SECURITY="${2:?--security needs a value}"; shift 2 ;;
            --security=*) SECURITY="${1#*=}"; shift ;;
            --wan-port) WAN_PORT="${2:?--wan-port needs a value}"; shift 2 ;;
            --wan-port=*) WAN_PORT="${1#*=}"; shift ;;
            --wan-advertise) WAN_ADVERTISE="${2:?--wan-advertise needs a value}"; shift 2 ;;
            --wan-advertise=*) WAN_ADVERTISE="${1#*=}"; shift ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option: $1 (see --help)" ;;
        esac
    done
    local v
    for v in NODES PORT CONTROLLER_PORT TIMEOUT OWNER_PID WAN_PORT; do
        [[ -z "${!v}" || "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
    done
    [[ "$HEAP" =~ ^[0-9]+[kKmMgG]?$ ]] || die "--heap must look like 512m, got '$HEAP'"
    [[ -z "$WAN_ADVERTISE" || "$WAN_ADVERTISE" =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]] ||
        die "--wan-advertise must look like HOST:PORT, got '$WAN_ADVERTISE'"
    [[ -z "$WAN_PORT" && -z "$WAN_ADVERTISE" || -n "$WAN_PORT" && -n "$WAN_ADVERTISE" ]] ||
        die "--wan-port and --wan-advertise go together"
    [[ -z "$SECURITY" || "$SECURITY" == plaintext || "$SECURITY" == sasl_ssl ]] ||
        die "--security must be plaintext or sasl_ssl, got '$SECURITY'"
    DATA_DIR="$(realpath -m -- "$DATA_DIR")"
    ENV_FILE="$DATA_DIR/cluster.env"
    SEC_DIR="$DATA_DIR/security"
}

# Settings fixed at format time win; explicit options must agree with them.
load_cluster_env() {
    [[ -f "$ENV_FILE" ]] || return 1
    # Not binding until some node has been formatted (an `up` may have failed before).
    compgen -G "$DATA_DIR/node-*/data/meta.properties" >/dev/null || return 1
    local nodes port cport cid security
    nodes="$(sed -n 's/^NODES=//p' "$ENV_FILE")"
    security="$(sed -n 's/^SECURITY=//p' "$ENV_FILE")"
    security="${security:-plaintext}"
    port="$(sed -n 's/^PORT=//p' "$ENV_FILE")"
    cport="$(sed -n 's/^CONTROLLER_PORT=//p' "$ENV_FILE")"
    cid="$(sed -n 's/^CLUSTER_ID=//p' "$ENV_FILE")"
    [[ -n "$nodes" && -n "$port" && -n "$cport" && -n "$cid" ]] || die "$ENV_FILE is incomplete"
    local pair name have
    for pair in "NODES=$nodes" "PORT=$port" "CONTROLLER_PORT=$cport" "SECURITY=$security"; do
        name="${pair%%=*}"; have="${pair#*=}"
        if [[ -n "${!name}" && "${!name}" != "$have" ]]; then
            die "$DATA_DIR was formatted with $name=$have (asked for ${!name}); use another --data-dir or delete it"
        fi
    done
    NODES="$nodes"; PORT="$port"; CONTROLLER_PORT="$cport"; CLUSTER_ID="$cid"; SECURITY="$security"
    return 0
}

node_dir() { printf '%s/node-%d' "$DATA_DIR" "$1"; }
broker_port() { echo $((PORT + $1 - 1)); }
controller_port() { echo $((CONTROLLER_PORT + $1 - 1)); }
wan_port() { echo $((WAN_PORT + $1 - 1)); }

# The WAN listener's entries of listeners, advertised.listeners and the protocol map
# (empty without --wan-port).
wan_listener() { [[ -n "$WAN_PORT" ]] && echo ",WAN://127.0.0.1:$(wan_port "$1")"; return 0; }
wan_advertised() {
    [[ -n "$WAN_PORT" ]] && echo ",WAN://${WAN_ADVERTISE%:*}:$((${WAN_ADVERTISE##*:} + $1 - 1))"
    return 0
}
wan_protocol() { [[ -n "$WAN_PORT" ]] && echo ",WAN:$1"; return 0; }

bootstrap_servers() {
    local i out=""
    for ((i = 1; i <= NODES; i++)); do
        out+="${out:+,}127.0.0.1:$(broker_port "$i")"
    done
    echo "$out"
}

# pid of node $1 if it is running (and really is that node's JVM), else fails.
node_pid() {
    local pidfile pid
    pidfile="$(node_dir "$1")/kafka.pid"
    [[ -f "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against pid reuse: the command line must name this node's properties file.
    if [[ -r "/proc/$pid/cmdline" ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$(node_dir "$1")/server.properties" || return 1
        [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
    fi
    echo "$pid"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

new_cluster_id() {
    # Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding,
    # never starting with '-' (Uuid.randomUuid() avoids that too).
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$id" != -* ]] && break
    done
    echo "$id"
}

write_properties() {
    local id="$1" dir voters="" i rf min_isr
    dir="$(node_dir "$id")"
    rf=$((NODES < 3 ? NODES : 3))
    # Replication 3 tolerates one node down with min ISR 2; fewer nodes cannot.
    min_isr=$((rf < 3 ? 1 : 2))
    mkdir -p "$dir/data" "$dir/logs"
    {
        echo "# generated by compose/local/kafka.sh up; rewritten on every start"
        echo "process.roles=broker,controller"
        echo "node.id=$id"
        if [[ "$SECURITY" == sasl_ssl ]]; then
            echo "listeners=SASL_SSL://127.0.0.1:$(broker_port "$id"),CONTROLLER://127.0.0.1:$(controller_port "$id")$(wan_listener "$id")"
            echo "advertised.listeners=SASL_SSL://127.0.0.1:$(broker_port "$id")$(wan_advertised "$id")"
            echo "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL$(wan_protocol SASL_SSL)"
            echo "inter.broker.listener.name=SASL_SSL"
            security_properties
        else
            echo "listeners=PLAINTEXT://127.0.0.1:$(broker_port "$id"),CONTROLLER://127.0.0.1:$(controller_port "$id")$(wan_listener "$id")"
            echo "advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$id")$(wan_advertised "$id")"
            echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT$(wan_protocol PLAINTEXT)"
            echo "inter.broker.listener.name=PLAINTEXT"
        fi
        echo "controller.listener.names=CONTROLLER"
        if ((NODES == 1)); then
            # dynamic quorum (KIP-853), formatted with --standalone
            echo "controller.quorum.bootstrap.servers=127.0.0.1:$(controller_port 1)"
        else
            for ((i = 1; i <= NODES; i++)); do
                voters+="${voters:+,}$i@127.0.0.1:$(controller_port "$i")"
            done
            echo "controller.quorum.voters=$voters"
        fi
        echo "log.dirs=$dir/data"
        echo "num.partitions=1"
        echo "default.replication.factor=$rf"
        echo "min.insync.replicas=$min_isr"
        echo "offsets.topic.replication.factor=$rf"
        echo "transaction.state.log.replication.factor=$rf"
        echo "transaction.state.log.min.isr=$min_isr"
        echo "share.coordinator.state.topic.replication.factor=$rf"
        echo "share.coordinator.state.topic.min.isr=$min_isr"
        echo "group.initial.rebalance.delay.ms=0"
        echo "auto.create.topics.enable=false"
        echo "delete.topic.enable=true"
        echo "log.retention.hours=24"
        echo "message.max.bytes=16777216"
        echo "replica.fetch.max.bytes=16777216"
        echo "replica.fetch.response.max.bytes=33554432"
        echo "socket.request.max.bytes=104857600"
        # sized for a small, shared machine
        echo "num.network.threads=2"
        echo "num.io.threads=4"
        echo "num.recovery.threads.per.data.dir=1"
        echo "log.cleaner.dedupe.buffer.size=16777216"
    } >"$dir/server.properties.tmp"
    chmod 600 "$dir/server.properties.tmp"  # it holds the inter-broker password
    mv "$dir/server.properties.tmp" "$dir/server.properties"
}

# The roles, each a SCRAM user of its own (blockferry-ROLE) on a sasl_ssl cluster.
# MirrorMaker 2 (mirror.sh) is a user of its own too, for two sites.
ROLES=(orchestrator guest-proxy source-mover dedupe-index target-mover gateway mirror-maker)

# The certificates and passwords of a sasl_ssl cluster, made once: a CA, one node
# certificate for 127.0.0.1 (serving TLS, and the nodes' identity to the controllers),
# the inter-broker and administration user `admin` and a user per role. client.env
# gives the roles their settings ({role} in them is replaced by each role's name);
# admin.env the same for the admin, and admin.properties for Kafka's own tools.
make_security() {
    [[ -f "$SEC_DIR/client.env" ]] && return 0
    command -v openssl >/dev/null || die "openssl not found (needed for --security sasl_ssl)"
    (
        umask 077
        mkdir -p "$SEC_DIR"
        cd "$SEC_DIR"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
            -subj "/CN=blockferry local Kafka CA" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr \
            -subj "/CN=kafka-node" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
            >node.ext
        openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile node.ext -out node.crt 2>/dev/null
        cat node.key node.crt >node.pem
        rm -f node.csr node.ext ca.srl
        local user
        for user in admin "${ROLES[@]/#/blockferry-}"; do
            openssl rand -hex 24 >"$user.password"
        done
        client_env() {
            echo "BLOCKFERRY_KAFKA__SECURITY__PROTOCOL=SASL_SSL"
            echo "BLOCKFERRY_KAFKA__SECURITY__USERNAME=$1"
            echo "BLOCKFERRY_KAFKA__SECURITY__PASSWORD_FILE=$SEC_DIR/$1.password"
            echo "BLOCKFERRY_KAFKA__SECURITY__CA_FILE=$SEC_DIR/ca.crt"
        }
        client_env admin >admin.env
        {
            echo "security.protocol=SASL_SSL"
            echo "sasl.mechanism=SCRAM-SHA-512"
            echo "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$(cat admin.password)\";"
            echo "ssl.truststore.type=PEM"
            echo "ssl.truststore.location=$SEC_DIR/ca.crt"
        } >admin.properties
        client_env "blockferry-{role}" >client.env.tmp
        mv client.env.tmp client.env
    ) || die "making the certificates and passwords in $SEC_DIR failed"
}

# server.properties lines of a sasl_ssl node. Only the admin and the nodes are super
# users: a role may do what the ACLs (`blockferry acls --apply`, run as the admin) allow.
security_properties() {
    echo "sasl.enabled.mechanisms=SCRAM-SHA-512"
    echo "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512"
    echo "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$(cat "$SEC_DIR/admin.password")\";"
    [[ -n "$WAN_PORT" ]] && echo "listener.name.wan.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$(cat "$SEC_DIR/admin.password")\";"
    echo "ssl.keystore.type=PEM"
    echo "ssl.keystore.location=$SEC_DIR/node.pem"
    echo "ssl.truststore.type=PEM"
    echo "ssl.truststore.location=$SEC_DIR/ca.crt"
    echo "listener.name.controller.ssl.client.auth=required"
    echo "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    echo "super.users=User:admin;User:CN=kafka-node"
    echo "allow.everyone.if.no.acl.found=false"
}

format_node() {
    local id="$1" dir extra=()
    dir="$(node_dir "$id")"
    [[ -f "$dir/data/meta.properties" ]] && return 0
    ((NODES == 1)) && extra=(--standalone)
    if [[ "$SECURITY" == sasl_ssl ]]; then
        local user
        for user in admin "${ROLES[@]/#/blockferry-}"; do
            extra+=(--add-scram "SCRAM-SHA-512=[name=$user,password=$(cat "$SEC_DIR/$user.password")]")
        done
    fi
    "$JAVA" -Xmx256m -cp "$LIB/*" -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
        -Dkafka.logs.dir="$dir/logs" -Dblockferry.log.file=tools.log \
        kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$dir/server.properties" "${extra[@]}" \
        >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "formatting node $id failed"; }
}

start_node() {
    local id="$1" dir pid
    dir="$(node_dir "$id")"
    # setsid: the node outlives the calling shell and ignores its Ctrl-C; pid == java's pid
    # (setsid only forks when it is a process-group leader, which a background job of a
    # non-interactive shell is not; checked right below anyway).
    (
        cd "$dir"
        exec setsid "$JAVA" -Xms128m -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$dir/logs" \
            -cp "$LIB/*" kafka.Kafka "$dir/server.properties"
    ) </dev/null >"$dir/stdout.log" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$dir/kafka.pid"
    sleep 0.2
    node_pid "$id" >/dev/null || {
        tail -n 30 "$dir/stdout.log" >&2 || true
        die "node $id (pid $pid) did not start"
    }
}

# Readiness: every node answers Metadata and sees all NODES brokers registered
# (= unfenced), so topics with replication factor NODES can be created right away.
wait_ready() {
    local py="${BLOCKFERRY_PYTHON:-$ROOT/.venv/bin/python}" pids="" i
    for ((i = 1; i <= NODES; i++)); do
        pids+="${pids:+,}$(node_pid "$i" || echo 0)"
    done
    if [[ -x "$py" ]] && "$py" -c 'import aiokafka' 2>/dev/null; then
        local client_env=""
        [[ "$SECURITY" == sasl_ssl ]] && client_env="$SEC_DIR/admin.env"
        "$py" - "$(bootstrap_servers)" "$NODES" "$TIMEOUT" "$pids" "$client_env" <<'PY'
import asyncio, logging, os, sys, time

logging.disable(logging.CRITICAL)
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

servers, nodes, timeout, pids = sys.argv[1].split(","), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + timeout
security = {}
if sys.argv[5]:  # sasl_ssl: the admin's settings
    env = dict(line.strip().split("=", 1) for line in open(sys.argv[5]) if "=" in line)
    prefix = "BLOCKFERRY_KAFKA__SECURITY__"
    with open(env[prefix + "PASSWORD_FILE"]) as f:
        password = f.read().strip()
    security = {
        "security_protocol": "SASL_SSL",
        "ssl_context": create_ssl_context(cafile=env[prefix + "CA_FILE"]),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": env[prefix + "USERNAME"],
        "sasl_plain_password": password,
    }

def dead() -> list[int]:
    out = []
    for p in (int(x) for x in pids.split(",")):
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    out.append(p)
        except OSError:
            out.append(p)
    return out

async def check(server: str) -> str | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=server, request_timeout_ms=5000,
                                client_id="blockferry-ready", **security)
    try:
        await asyncio.wait_for(admin.start(), 10)
        info = await asyncio.wait_for(admin.describe_cluster(), 10)
        seen = len(info["brokers"])
        if seen < nodes:
            return f"{server} sees {seen}/{nodes} brokers"
        if info.get("controller_id", -1) in (None, -1):
            return f"{server} knows no controller yet"
        return None
    except Exception as e:  # not up yet
        return f"{server}: {type(e).__name__} {e}".strip()
    finally:
        try:
            await admin.close()
        except Exception:
            pass

async def main() -> int:
    why = "not checked"
    while time.monotonic() < deadline:
        if d := dead():
            print(f"kafka.sh: node process(es) {d} exited", file=sys.stderr)
            return 2
        for s in servers:
            why = await check(s)
            if why:
                break
        else:
            return 0
        await asyncio.sleep(0.5)
    print(f"kafka.sh: not ready after {timeout:.0f}s: {why}", file=sys.stderr)
    return 1

sys.exit(asyncio.run(main()))
PY
        return
    fi
    [[ "$SECURITY" == plaintext ]] || die "the readiness check of a sasl_ssl cluster needs the venv's aiokafka"
    # Fallback without the venv: Kafka's own BrokerApiVersionsCommand (one JVM per try).
    local deadline=$((SECONDS + TIMEOUT)) seen
    while ((SECONDS < deadline)); do
        for ((i = 1; i <= NODES; i++)); do
            node_pid "$i" >/dev/null || { log "node $i exited"; return 2; }
        done
        seen="$("$JAVA" -Xmx128m -cp "$LIB/*" -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
            -Dkafka.logs.dir="$DATA_DIR" -Dblockferry.log.file=tools.log org.apache.kafka.tools.BrokerApiVersionsCommand \
            --bootstrap-server "$(bootstrap_servers)" 2>/dev/null | grep -c '(id: ' || true)"
        ((seen >= NODES)) && return 0
        sleep 1
    done
    log "not ready after ${TIMEOUT}s"
    return 1
}

start_watchdog() {
    local owner="$1" wd="$DATA_DIR/watchdog.pid" self
    [[ -n "$owner" ]] || return 0
    kill -0 "$owner" 2>/dev/null || die "--owner-pid $owner is not running"
    stop_watchdog
    self="$HERE/kafka.sh"
    # shellcheck disable=SC2016  # expanded by the inner bash
    setsid bash -c '
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        rm -f "$3"
        exec "$2" down --data-dir "$4"
    ' kafka-watchdog "$owner" "$self" "$wd" "$DATA_DIR" \
        </dev/null >>"$DATA_DIR/watchdog.log" 2>&1 9>&- &
    echo $! >"$wd"
}

stop_watchdog() {
    local wd="$DATA_DIR/watchdog.pid" pid
    [[ -f "$wd" ]] || return 0
    pid="$(<"$wd")"
    rm -f "$wd"
    if [[ "$pid" =~ ^[0-9]+$ && "$pid" != "$$" && "$pid" != "$PPID" ]] \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF kafka-watchdog; then
        kill "$pid" 2>/dev/null || true
    fi
}

show_failure() {
    local i dir
    for ((i = 1; i <= NODES; i++)); do
        dir="$(node_dir "$i")"
        log "--- node $i: tail of ${dir}/logs/server.log and stdout.log"
        tail -n 25 "$dir/logs/server.log" 2>/dev/null | cut -c1-300 >&2 || true
        tail -n 10 "$dir/stdout.log" 2>/dev/null | cut -c1-300 >&2 || true
    done
}

# ------------------------------------------------------------------------ commands

cmd_up() {
    parse_opts "$@"
    mkdir -p "$DATA_DIR"
    exec 9>"$DATA_DIR/.lock"
    flock -w 120 9 || die "another kafka.sh holds $DATA_DIR/.lock"

    if ! load_cluster_env; then
        NODES="${NODES:-1}"
        PORT="${PORT:-9092}"
        CONTROLLER_PORT="${CONTROLLER_PORT:-$((PORT + NODES))}"
        ((NODES >= 1)) || die "--nodes must be at least 1"
        CLUSTER_ID="$(new_cluster_id)"
        SECURITY="${SECURITY:-plaintext}"
        printf 'NODES=%s\nPORT=%s\nCONTROLLER_PORT=%s\nCLUSTER_ID=%s\nSECURITY=%s\n' \
            "$NODES" "$PORT" "$CONTROLLER_PORT" "$CLUSTER_ID" "$SECURITY" >"$ENV_FILE.tmp"
        mv "$ENV_FILE.tmp" "$ENV_FILE"
    fi
    [[ "$SECURITY" == sasl_ssl ]] && make_security
    # Broker ports P..P+N-1 and controller ports C..C+N-1 must not overlap.
    if ((CONTROLLER_PORT < PORT + NODES && PORT < CONTROLLER_PORT + NODES)); then
        die "broker ports $PORT.. and controller ports $CONTROLLER_PORT.. overlap"
    fi

    local i running=0 started=() t0=$SECONDS
    for ((i = 1; i <= NODES; i++)); do
        node_pid "$i" >/dev/null && running=$((running + 1))
    done
    if ((running == NODES)); then
        log "already running ($NODES node(s), data dir $DATA_DIR)"
        start_watchdog "$OWNER_PID"
        wait_ready || { show_failure; die "running but not ready"; }
        say_security
        bootstrap_servers | tee "$DATA_DIR/bootstrap.servers"
        return 0
    fi

    cmd_fetch
    command -v "$JAVA" >/dev/null || die "java not found"
    for ((i = 1; i <= NODES; i++)); do
        node_pid "$i" >/dev/null && continue
        local p
        for p in "$(broker_port "$i")" "$(controller_port "$i")" ${WAN_PORT:+"$(wan_port "$i")"}; do
            port_in_use "$p" && die "port 127.0.0.1:$p is already in use by another process"
        done
    done
    for ((i = 1; i <= NODES; i++)); do
        write_properties "$i"
        format_node "$i"
    done
    for ((i = 1; i <= NODES; i++)); do
        node_pid "$i" >/dev/null && continue
        start_node "$i"
        started+=("$i")
    done
    log "started node(s) ${started[*]} (data dir $DATA_DIR, heap $HEAP); waiting up to ${TIMEOUT}s"
    if ! wait_ready; then
        show_failure
        log "stopping the node(s) this call started"
        stop_nodes "${started[@]}"
        die "Kafka did not become ready"
    fi
    start_watchdog "$OWNER_PID"
    log "ready after $((SECONDS - t0))s"
    say_security
    bootstrap_servers | tee "$DATA_DIR/bootstrap.servers"
}

say_security() {
    if [[ "$SECURITY" == sasl_ssl ]]; then
        log "security: SASL_SSL (SCRAM-SHA-512 over TLS, StandardAuthorizer, a user per role); the roles' settings: $SEC_DIR/client.env, the admin's: $SEC_DIR/admin.env"
    else
        log "security: none (PLAINTEXT on 127.0.0.1; --security sasl_ssl for TLS and SASL)"
    fi
}

# SIGTERM the given nodes (all at once), wait up to 30 s, SIGKILL what is left.
stop_nodes() {
    local i pid pids=() ids=() deadline
    for i in "$@"; do
        if pid="$(node_pid "$i")"; then
            pids+=("$pid"); ids+=("$i")
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    ((${#pids[@]})) || return 0
    log "stopping node(s) ${ids[*]} (pids ${pids[*]})"
    deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        local alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || break
        sleep 0.3
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid still running after 30s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for i in "${ids[@]}"; do
        rm -f "$(node_dir "$i")/kafka.pid"
    done
}

cmd_down() {
    parse_opts "$@"
    stop_watchdog
    local i ids=()
    if load_cluster_env; then
        for ((i = 1; i <= NODES; i++)); do ids+=("$i"); done
    fi
    # Also any node dir left from a run whose cluster.env is gone.
    local d
    for d in "$DATA_DIR"/node-*; do
        [[ -d "$d" ]] || continue
        i="${d##*/node-}"
        [[ "$i" =~ ^[0-9]+$ ]] || continue
        [[ " ${ids[*]} " == *" $i "* ]] || ids+=("$i")
    done
    if ((${#ids[@]})); then
        stop_nodes "${ids[@]}"
        for i in "${ids[@]}"; do rm -f "$(node_dir "$i")/kafka.pid"; done
    fi
    log "stopped (data dir $DATA_DIR)"
}

cmd_status() {
    parse_opts "$@"
    if ! load_cluster_env; then
        echo "not formatted: $DATA_DIR"
        return 3
    fi
    local i pid running=0
    for ((i = 1; i <= NODES; i++)); do
        if pid="$(node_pid "$i")"; then
            running=$((running + 1))
            echo "node $i: running, pid $pid, broker 127.0.0.1:$(broker_port "$i"), controller 127.0.0.1:$(controller_port "$i")"
        else
            echo "node $i: stopped"
        fi
    done
    echo "data dir: $DATA_DIR"
    echo "security: $SECURITY"
    echo "bootstrap: $(bootstrap_servers)"
    ((running == NODES)) || return 3
}

# kafka-configs.sh: Kafka's ConfigCommand, its arguments as given.
cmd_configs() {
    cmd_fetch
    exec "$JAVA" -Xmx128m -cp "$LIB/*" -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
        -Dkafka.logs.dir="${TMPDIR:-/tmp}" -Dblockferry.log.file=kafka-configs.log \
        kafka.admin.ConfigCommand "$@"
}

main() {
    local cmd="${1:-}"
    (($#)) && shift
    case "$cmd" in
        fetch) cmd_fetch ;;
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        status) cmd_status "$@" ;;
        configs) cmd_configs "$@" ;;
        -h|--help|help) usage ;;
        *) usage; exit 2 ;;
    esac
}

main "$@"
