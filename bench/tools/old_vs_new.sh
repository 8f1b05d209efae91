#!/usr/bin/env bash
# Issue 16's acceptance: the old binary (before the one-door change; OLD_BROKER, default
# /tmp/old-target/release/broker) against the new one, same run, both on CPU 0, the bench on
# CPU 1; ROUNDS rounds (default 3).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rm -rf /tmp/b16 && mkdir -p /tmp/b16
WORK=/tmp/b16
start_broker old --binary "${OLD_BROKER:-/tmp/old-target/release/broker}"
old="old=127.0.0.1:$BROKER_PORT,pid=$BROKER_PID"
start_broker new
pin_client "$BENCH_BIN" --target "$old" --target "new=127.0.0.1:$BROKER_PORT,pid=$BROKER_PID" \
    --workload produce-1k --workload consume-1k --rounds "${ROUNDS:-3}" --out /tmp/b16/out
