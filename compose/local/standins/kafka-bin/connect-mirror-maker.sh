#!/bin/sh
exec java ${KAFKA_HEAP_OPTS:--Xmx512m} -cp '/opt/kafka/mirror-libs/*' \
    -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
    org.apache.kafka.connect.mirror.MirrorMaker "$@"
