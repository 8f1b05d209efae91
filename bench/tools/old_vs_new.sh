#!/usr/bin/env bash
# Issue 16's acceptance: the old binary (before the one-door change) against the new one, same run.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rm -rf /tmp/b16 && mkdir -p /tmp/b16/old /tmp/b16/new
P1=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
P2=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
/tmp/old-target/release/broker --cpus 0 --override listeners=PLAINTEXT://127.0.0.1:$P1 --override log.dirs=/tmp/b16/old > /tmp/b16/old.log 2>&1 &
OLD=$!
./target/release/broker --cpus 0 --override listeners=PLAINTEXT://127.0.0.1:$P2 --override log.dirs=/tmp/b16/new > /tmp/b16/new.log 2>&1 &
NEW=$!
trap 'kill $OLD $NEW 2>/dev/null; wait $OLD $NEW 2>/dev/null' EXIT
for i in $(seq 50); do grep -q "broker ready" /tmp/b16/old.log && grep -q "broker ready" /tmp/b16/new.log && break; sleep 0.2; done
taskset -c 1 ./target/release/bench --target old=127.0.0.1:$P1,pid=$OLD --target new=127.0.0.1:$P2,pid=$NEW \
    --workload produce-1k --workload consume-1k --rounds "${ROUNDS:-3}" --out /tmp/b16/out
