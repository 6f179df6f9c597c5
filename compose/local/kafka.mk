# Local Kafka broker targets; the root Makefile does `include compose/local/kafka.mk`,
# so paths are relative to the repository root.
#   make kafka-up                       one node, broker on 127.0.0.1:9092
#   make kafka-up KAFKA_NODES=3         three nodes, brokers on 9092-9094
#   make kafka-up KAFKA_SECURITY=sasl_ssl   TLS and SASL SCRAM (see kafka.sh --security)
#   make kafka-down / kafka-status / kafka-fetch
# Data and logs live in $(KAFKA_DATA_DIR) (default ./.blockferry/kafka). Node count and
# ports are fixed when that directory is first formatted; later `make kafka-up` calls
# reuse them (KAFKA_NODES/KAFKA_PORT are only passed on when set).

KAFKA_SH       ?= compose/local/kafka.sh
KAFKA_DATA_DIR ?= $(or $(BLOCKFERRY_DATA_DIR),./.blockferry)/kafka
KAFKA_NODES    ?=
KAFKA_PORT     ?=
KAFKA_HEAP     ?= 512m
KAFKA_SECURITY ?=

KAFKA_UP_ARGS = --data-dir $(KAFKA_DATA_DIR) --heap $(KAFKA_HEAP) \
	$(if $(KAFKA_NODES),--nodes $(KAFKA_NODES)) $(if $(KAFKA_PORT),--port $(KAFKA_PORT)) \
	$(if $(KAFKA_SECURITY),--security $(KAFKA_SECURITY))

.PHONY: kafka-fetch kafka-up kafka-down kafka-status

kafka-fetch:
	bash $(KAFKA_SH) fetch

kafka-up:
	bash $(KAFKA_SH) up $(KAFKA_UP_ARGS)

kafka-down:
	bash $(KAFKA_SH) down --data-dir $(KAFKA_DATA_DIR)

kafka-status:
	bash $(KAFKA_SH) status --data-dir $(KAFKA_DATA_DIR)
