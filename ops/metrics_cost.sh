#!/usr/bin/env bash
# The cost of metrics.listener (issue 21): the same binary twice in one bench run, rounds
# alternating, one broker without metrics and one serving /metrics and scraped every second
# (a busy Prometheus). Both brokers pinned to CPU 0 (one shard each), the bench on CPU 1.
# Run from the repository root after `cargo build --release -p broker -p bench`; hold
# /tmp/build.lock meanwhile on a shared machine:  flock /tmp/build.lock ops/metrics_cost.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../bench/tools/lib.sh"
rounds=${ROUNDS:-3}
WORK=$(mktemp -d /tmp/metrics-cost.XXXXXX)
dir=$WORK
p_metrics=$(free_port)
# A run writes about 5 GB per broker: retention keeps each broker's disk use near 2 GB.
bounded=(--override log.retention.bytes=268435456 --override log.segment.bytes=67108864
    --override log.retention.check.interval.ms=1000 --override log.segment.delete.delay.ms=1000)
start_broker off "${bounded[@]}"
p_off=$BROKER_PORT off=$BROKER_PID
start_broker on "${bounded[@]}" --override metrics.listener=http://127.0.0.1:$p_metrics
p_on=$BROKER_PORT on=$BROKER_PID
(while true; do curl -s -o /dev/null "http://127.0.0.1:$p_metrics/metrics"; sleep 1; done) &
track_pid $!
pin_client "$BENCH_BIN" --target off=127.0.0.1:$p_off,pid=$off --target metrics=127.0.0.1:$p_on,pid=$on \
    --workload produce-1k --rounds "$rounds" --out "$dir/out"
echo "one scrape after the run:"
curl -s -o "$dir/scrape.txt" -w "%{size_download} bytes in %{time_total} s\n" "http://127.0.0.1:$p_metrics/metrics"
grep -E '^kafka_server_brokertopicmetrics_bytesin_total|^kafka_network_requestmetrics_totaltimems\{request="Produce",quantile="0.99"\}' "$dir/scrape.txt" | head -5
echo "results in $dir/out"
