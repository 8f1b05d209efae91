#!/usr/bin/env bash
# What a topic's compression.type costs the broker: the same binary three times, the producer
# sending uncompressed batches; `producer` stores them as sent, `lz4` and `zstd` recompress.
# All three brokers on CPU 0 (one shard each), the bench on CPU 1; ROUNDS rounds (default 3).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rm -rf /tmp/rc && mkdir -p /tmp/rc
WORK=/tmp/rc
targets=()
for codec in producer lz4 zstd; do
    start_broker "$codec" --override compression.type=$codec
    targets+=(--target "$codec=127.0.0.1:$BROKER_PORT,pid=$BROKER_PID")
done
pin_client "$BENCH_BIN" "${targets[@]}" --workload produce-1k --compression none --rounds "${ROUNDS:-3}" --out /tmp/rc/out
