#!/usr/bin/env bash
# Why ours produces slower beside an idle Apache Kafka on the same core: ours alone, then beside
# Kafka (kafka.sh, idle), with Kafka's CPU during our run and a perf profile of ours.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rm -rf /tmp/coloc && mkdir -p /tmp/coloc
port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
P=$(port); KP=$(port)
./target/release/broker --cpus 0 --override listeners=PLAINTEXT://127.0.0.1:$P --override log.dirs=/tmp/coloc/ours > /tmp/coloc/ours.log 2>&1 &
OURS=$!
trap 'kill $OURS 2>/dev/null; bench/kafka/kafka.sh stop --dir /tmp/coloc/kafka >/dev/null 2>&1; wait' EXIT
sleep 2
echo "== ours alone"
taskset -c 1 ./target/release/bench --target ours=127.0.0.1:$P,pid=$OURS --workload produce-1k --rounds 2 --out /tmp/coloc/alone 2>&1 | grep -E "MB/s|CPU-s/GB|client CPU" | head -3
bench/kafka/kafka.sh start --port $KP --dir /tmp/coloc/kafka --cpus 0 >/dev/null 2>&1
KPID=$(pgrep -f "kafka.Kafka.*coloc" | head -1)
echo "kafka pid $KPID"
sleep 20   # let it settle
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
k0=$(cpu $KPID); t0=$(date +%s.%N)
echo "== ours beside an idle Kafka"
taskset -c 1 ./target/release/bench --target ours=127.0.0.1:$P,pid=$OURS --workload produce-1k --rounds 2 --out /tmp/coloc/beside 2>&1 | grep -E "MB/s|CPU-s/GB|client CPU" | head -3
k1=$(cpu $KPID); t1=$(date +%s.%N)
echo "kafka JVM CPU during our runs: $(( k1 - k0 )) ticks over $(echo "$t1 - $t0" | bc) s"
perf record -g -o /tmp/coloc/perf.data -p $OURS -- sleep 8 >/dev/null 2>&1 &
PERF=$!
taskset -c 1 ./target/release/bench --target ours=127.0.0.1:$P,pid=$OURS --workload produce-1k --rounds 1 --duration-seconds 8 --out /tmp/coloc/perf 2>&1 | grep -E "MB/s" | head -1
wait $PERF
perf report -i /tmp/coloc/perf.data --no-children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -25
