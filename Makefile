# blockferry: `make run` (a real backup and restore through the whole mesh) and `make test`.
SHELL := bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export BLOCKFERRY_DATA_DIR ?= ./.blockferry

include compose/local/kafka.mk

.PHONY: venv run run-two-sites mirror-fetch up down test test-deps test-servers lint typecheck unit kafka-tests e2e bench bench-memory bench-scale bench-storage bench-recovery soak image chart-tools k8s chart-test registry-fetch observe-test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

run: venv
	bash compose/local/demo.sh

# two sites on this machine: two Kafka clusters, MirrorMaker 2, the WAN relay, the roles
# per site; backups on-site into the off-site repository, restores from off-site
run-two-sites: venv kafka-fetch mirror-fetch
	$(BIN)/python compose/local/two_sites.py

# MirrorMaker 2's jars (connect-mirror at the broker's version), on a classpath of their own
mirror-fetch:
	bash compose/local/mirror.sh fetch

up: venv
	bash compose/local/mesh.sh up

down:
	bash compose/local/mesh.sh down

lint: venv
	$(BIN)/ruff check services tests observability
	$(BIN)/ruff format --check services tests observability

typecheck: venv
	$(BIN)/mypy services/blockferry observability

unit: venv
	$(BIN)/pytest -q tests/unit

# the Debian packages the tests need: installed as root, else named (with the command)
test-deps:
	bash compose/local/test-deps.sh

# the servers the storage tests run against (MinIO), built once into the tools cache
test-servers:
	bash compose/local/test-servers.sh fetch

test: test-deps venv lint typecheck kafka-fetch mirror-fetch test-servers
	$(BIN)/pytest -q -ra --durations=30

bench: venv kafka-fetch test-servers
	bash compose/local/bench.sh
	$(BIN)/python compose/local/bench_storage.py
	$(BIN)/python compose/local/bench_recovery.py

# instant recovery and file-level restore against a full restore, local and on S3 (MinIO)
bench-recovery: venv test-servers
	$(BIN)/python compose/local/bench_recovery.py

bench-memory: venv kafka-fetch
	bash compose/local/bench_memory.sh

bench-scale: venv kafka-fetch
	bash compose/local/bench_scale.sh

# a repository's backends (local, S3 on MinIO, SMB on Samba) through the mesh and alone
bench-storage: venv kafka-fetch test-servers
	$(BIN)/python compose/local/bench_storage.py

# the failpoint matrix SOAK_RUNS times (default 20), on a three-broker cluster, the runs
# taking a local directory, S3 (MinIO) and an SMB share (Samba) in turn
soak: venv kafka-fetch test-servers
	$(BIN)/python -m tests.soak

# the container image of every role, built without a Docker daemon (compose/local/image.sh)
image:
	bash compose/local/image.sh build

chart-tools:
	bash compose/local/chart-tools.sh fetch

# the single-node Kubernetes the chart is installed on, built once into the tools cache
k8s:
	bash compose/local/k8s.sh build

# the Helm chart (charts/blockferry): linted, every example rendered and validated
# against the Kubernetes API of several versions, the rendered objects checked; then the
# one-site example installed on the single-node cluster with the image, a backup and a
# restore through its pods, an upgrade; compose/compose.yaml validated and run with
# podman-compose for a backup and a restore
chart-test: venv chart-tools k8s image kafka-fetch mirror-fetch
	bash compose/local/image.sh standins
	$(BIN)/pytest -q -o addopts="" tests/chart
	$(BIN)/python -m tests.chart.summary

# the schema registry the observability test reads the public events through (Apicurio
# Registry's server distribution from Maven Central, into compose/local/target)
registry-fetch:
	bash compose/local/registry.sh fetch

# metrics, dashboards and alerts on a real Prometheus (Debian's) scraping a mesh through
# a backup, an incremental and a restore; the alert rules through promtool; the public
# events read by a stock Avro consumer through a real schema registry
observe-test: test-deps venv kafka-fetch registry-fetch
	$(BIN)/pytest -q -o addopts="" tests/observe tests/unit/test_dashboards.py
	$(BIN)/python -m tests.observe.summary

clean:
	rm -rf $(VENV) compose/local/target  # the tools cache (compose/local/tools.sh) stays
