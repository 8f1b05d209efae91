#!/usr/bin/env bash
# What a topic's compression.type costs the broker: the same binary three times, the producer
# sending uncompressed batches; `producer` stores them as sent, `lz4` and `zstd` recompress.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rm -rf /tmp/rc && mkdir -p /tmp/rc
port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
declare -A PORT PID
for codec in producer lz4 zstd; do
    PORT[$codec]=$(port)
    ./target/release/broker --cpus 0 --override listeners=PLAINTEXT://127.0.0.1:${PORT[$codec]} \
        --override log.dirs=/tmp/rc/$codec --override compression.type=$codec > /tmp/rc/$codec.log 2>&1 &
    PID[$codec]=$!
done
trap 'kill ${PID[producer]} ${PID[lz4]} ${PID[zstd]} 2>/dev/null; wait 2>/dev/null' EXIT
sleep 2
taskset -c 1 ./target/release/bench \
    --target producer=127.0.0.1:${PORT[producer]},pid=${PID[producer]} \
    --target lz4=127.0.0.1:${PORT[lz4]},pid=${PID[lz4]} \
    --target zstd=127.0.0.1:${PORT[zstd]},pid=${PID[zstd]} \
    --workload produce-1k --compression none --rounds 3 --out /tmp/rc/out
