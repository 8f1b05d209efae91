#!/usr/bin/env bash
# Where ours spends CPU serving Kafka's ConsumerPerformance (the Java consumer), and what it asks for.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rm -rf /tmp/cperf && mkdir -p /tmp/cperf
libs=tests/java/target/kafka-libs
port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
P=$(port)
taskset -c 0 ./target/release/broker --cpus 0 --override listeners=PLAINTEXT://127.0.0.1:$P --override log.dirs=/tmp/cperf/ours --override group.initial.rebalance.delay.ms=0 > /tmp/cperf/ours.log 2>&1 &
OURS=$!
trap 'kill $OURS 2>/dev/null; wait' EXIT
sleep 2
j() { taskset -c 1 java -Xms512m -Xmx512m -cp "$libs/*" "$@"; }
j org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:$P --create --topic t --partitions 6 --replication-factor 1 >/dev/null 2>&1
j org.apache.kafka.tools.ProducerPerformance --topic t --num-records 500000 --record-size 1024 --throughput -1 --producer-props bootstrap.servers=127.0.0.1:$P acks=1 2>/dev/null | tail -1
cpu() { awk '{print $14+$15}' /proc/$OURS/stat; }
c0=$(cpu)
perf record -F 999 -g -o /tmp/cperf/perf.data -p $OURS >/dev/null 2>&1 &
PERF=$!
ST=

j org.apache.kafka.tools.ConsumerPerformance --bootstrap-server 127.0.0.1:$P --topic t --messages 500000 --timeout 30000 --group g 2>/dev/null | tail -1
c1=$(cpu)
kill -INT $PERF; wait $PERF 2>/dev/null
echo "broker CPU ticks during consume: $((c1 - c0))"
perf report -i /tmp/cperf/perf.data --no-children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -14

