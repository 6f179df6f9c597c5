#!/usr/bin/env bash
# A real Avro schema registry with the Confluent-compatible REST API: Apicurio Registry,
# from the server distribution it publishes on Maven Central (io.apicurio:
# apicurio-registry-app, classifier "all", tar.gz), unpacked into
# compose/local/target/registry-lib by registry/pom.xml. Storage is in-memory H2: every
# start is empty. Clients (confluent_kafka.schema_registry.SchemaRegistryClient) use
#   http://127.0.0.1:PORT/apis/ccompat/v7
#
#   registry.sh fetch          download/unpack the distribution (only when needed)
#   registry.sh run PORT       fetch if needed, then exec java in the foreground,
#                              listening on 127.0.0.1:PORT; ready when
#                              GET /apis/ccompat/v7/subjects answers 200 (about 5 s)
#
# Environment: JAVA, MVN, BLOCKFERRY_REGISTRY_HEAP (default 384m),
# BLOCKFERRY_REGISTRY_MGMT_PORT (3.x only: its management interface, /health and
# /metrics; default 0 = any free port on 127.0.0.1), BLOCKFERRY_REGISTRY_JAVA_OPTS (more
# JVM options, e.g. -Dquarkus.log.level=WARN). The version is registry/pom.xml's
# apicurio.version: 2.6.x runs on Java 17; 3.x needs JAVA to be Java 21+.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/target/registry-lib"
STAMP="$LIB/.fetched"
POM="$HERE/registry/pom.xml"
JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"
HEAP="${BLOCKFERRY_REGISTRY_HEAP:-384m}"

log() { printf 'registry.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cmd_fetch() {
    [[ -f "$STAMP" && "$STAMP" -nt "$POM" ]] && return 0
    mkdir -p "$HERE/target"
    exec 8>"$HERE/target/.registry-fetch.lock"
    flock -w 600 8 || die "another fetch holds $HERE/target/.registry-fetch.lock"
    if [[ -f "$STAMP" && "$STAMP" -nt "$POM" ]]; then return 0; fi
    command -v "$MVN" >/dev/null || die "maven ($MVN) not found"
    log "fetching Apicurio Registry with maven into compose/local/target/registry-lib ..."
    rm -rf "$LIB" "$HERE/target/.registry-markers"
    "$MVN" -q -B -f "$POM" package 2>&1 \
        | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2 \
        || die "maven failed"
    [[ -f "$LIB/quarkus-run.jar" ]] || compgen -G "$LIB/*-runner.jar" >/dev/null \
        || die "maven unpacked no quarkus-run.jar nor *-runner.jar"
    touch "$STAMP"
}

java_major() {
    "$JAVA" -XshowSettings:properties -version 2>&1 \
        | sed -n 's/^[[:space:]]*java\.specification\.version = \([0-9]*\).*/\1/p'
}

cmd_run() {
    local port="${1:-}" jar opts=()
    [[ "$port" =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "usage: registry.sh run PORT"
    cmd_fetch
    command -v "$JAVA" >/dev/null || die "java ($JAVA) not found"
    if [[ -f "$LIB/quarkus-run.jar" ]]; then
        # 3.x: Quarkus fast-jar, Java 21+, a management interface of its own (default :9000)
        local major
        major="$(java_major)"
        ((${major:-0} >= 21)) || die "this Apicurio 3.x needs Java 21+ ($JAVA is ${major:-unknown});" \
            "set JAVA, e.g. /usr/lib/jvm/temurin-25-jdk-amd64/bin/java"
        jar="$LIB/quarkus-run.jar"
        opts=(-Dquarkus.management.host=127.0.0.1
              -Dquarkus.management.port="${BLOCKFERRY_REGISTRY_MGMT_PORT:-0}"
              -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2
              "-Dapicurio.datasource.url=jdbc:h2:mem:registry;DB_CLOSE_DELAY=-1")
    else
        # 2.x: legacy runner jar + lib/, Java 17; this build's storage is in-memory H2
        jar="$(compgen -G "$LIB/*-runner.jar" | head -n 1)"
        opts=("-Dquarkus.datasource.jdbc.url=jdbc:h2:mem:registry_db;DB_CLOSE_DELAY=-1")
    fi
    local extra=()
    read -r -a extra <<<"${BLOCKFERRY_REGISTRY_JAVA_OPTS:-}"
    exec "$JAVA" -Xms64m -Xmx"$HEAP" -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
        "${opts[@]}" "${extra[@]}" -jar "$jar"
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    run) shift; cmd_run "$@" ;;
    *) die "usage: registry.sh fetch | run PORT" ;;
esac
