#!/usr/bin/env bash
# ours and Kafka alternating produce-1k on CPU 0 (as compare.sh), perf on ours across its runs.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rm -rf /tmp/alt && mkdir -p /tmp/alt
port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
P=$(port); KP=$(port)
RUST_LOG=info,glommio=warn taskset -c 0 ./target/release/broker --cpus 0 --override listeners=PLAINTEXT://127.0.0.1:$P --override log.dirs=/tmp/alt/ours > /tmp/alt/ours.log 2>&1 &
OURS=$!
trap 'kill $OURS 2>/dev/null; bench/kafka/kafka.sh stop --dir /tmp/alt/kafka >/dev/null 2>&1; wait' EXIT
bench/kafka/kafka.sh start --port $KP --dir /tmp/alt/kafka --cpus 0 >/dev/null 2>&1
KPID=$(pgrep -f "kafka.Kafka.*alt/kafka" | head -1)
perf record -F 499 -g -o /tmp/alt/perf.data -p $OURS >/dev/null 2>&1 &
PERF=$!
taskset -c 1 ./target/release/bench --target kafka=127.0.0.1:$KP,pid=$KPID --target ours=127.0.0.1:$P,pid=$OURS --workload produce-1k --rounds 3 --out /tmp/alt/out 2>&1 | grep -vE "^\[round|msgs/s|p99.9|max ms"
kill -INT $PERF; wait $PERF
perf report -i /tmp/alt/perf.data --no-children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -22
