#!/usr/bin/env bash
# Issue 21's acceptance: produce-1k against a broker holding 10,000 idle connections and against
# the same binary holding none, alternating in one bench run (the bench runs every target once
# per round: idle, none, idle, none...), 3 rounds each. Both brokers on CPU 0 (one shard each),
# the bench and the idle-connection holder on CPU 1. Prints the brokers' RSS with and without
# the idle connections, the bench's table, and how many idle connections were still open at the end.
#   bench/tools/idle_connections_beside.sh            # IDLE=10000 ROUNDS=3 OUT=/tmp/idle-beside
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-/tmp/idle-beside}
IDLE=${IDLE:-10000}
rm -rf "$OUT" && mkdir -p "$OUT/idle" "$OUT/none"
free_port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
P1=$(free_port)
P2=$(free_port)
./target/release/broker --cpus 0 --override listeners=PLAINTEXT://127.0.0.1:$P1 --override log.dirs="$OUT/idle/data" > "$OUT/idle/broker.log" 2>&1 &
IDLE_BROKER=$!
./target/release/broker --cpus 0 --override listeners=PLAINTEXT://127.0.0.1:$P2 --override log.dirs="$OUT/none/data" > "$OUT/none/broker.log" 2>&1 &
NONE_BROKER=$!
HOLDER=
cleanup() {
    [ -n "$HOLDER" ] && kill "$HOLDER" 2>/dev/null
    kill "$IDLE_BROKER" "$NONE_BROKER" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$OUT/idle/data" "$OUT/none/data"
}
trap cleanup EXIT
for i in $(seq 100); do grep -q "broker ready" "$OUT/idle/broker.log" && grep -q "broker ready" "$OUT/none/broker.log" && break; sleep 0.2; done
grep "descriptor budget" "$OUT/idle/broker.log"
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo "RSS before: idle-to-be $(rss $IDLE_BROKER) KiB, none $(rss $NONE_BROKER) KiB"
taskset -c 1 python3 bench/tools/idle_connections.py --bootstrap 127.0.0.1:$P1 --count "$IDLE" --pid "$IDLE_BROKER" \
    --ready-file "$OUT/holder-ready.json" > "$OUT/holder.log" 2>&1 &
HOLDER=$!
for i in $(seq 600); do [ -s "$OUT/holder-ready.json" ] && break; sleep 0.2; done
if [ ! -s "$OUT/holder-ready.json" ]; then
    echo "the idle connections were not opened:"; cat "$OUT/holder.log"; exit 1
fi
cat "$OUT/holder-ready.json"; echo
echo "RSS with $IDLE idle connections: $(rss $IDLE_BROKER) KiB (the other broker: $(rss $NONE_BROKER) KiB)"
flock /tmp/build.lock taskset -c 1 ./target/release/bench --target idle$IDLE=127.0.0.1:$P1,pid=$IDLE_BROKER \
    --target none=127.0.0.1:$P2,pid=$NONE_BROKER --workload produce-1k --rounds "${ROUNDS:-3}" --out "$OUT/out"
echo "RSS after the bench: idle$IDLE $(rss $IDLE_BROKER) KiB, none $(rss $NONE_BROKER) KiB"
kill -TERM "$HOLDER"; wait "$HOLDER"; HOLDER=
cat "$OUT/holder.log"
