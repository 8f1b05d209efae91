#!/usr/bin/env bash
# The cost of metrics.listener (issue 21): the same binary twice in one bench run, rounds
# alternating, one broker without metrics and one serving /metrics and scraped every second
# (a busy Prometheus). Both brokers pinned to CPU 0 (one shard each), the bench on CPU 1.
# Run from the repository root after `cargo build --release -p broker -p bench`; hold
# /tmp/build.lock meanwhile on a shared machine:  flock /tmp/build.lock ops/metrics_cost.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${ROUNDS:-3}
dir=$(mktemp -d /tmp/metrics-cost.XXXXXX)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
p_off=$(free_port); p_on=$(free_port); p_metrics=$(free_port)
# A run writes about 5 GB per broker: retention keeps each broker's disk use near 2 GB.
bounded=(--override log.retention.bytes=268435456 --override log.segment.bytes=67108864
    --override log.retention.check.interval.ms=1000 --override log.segment.delete.delay.ms=1000)
./target/release/broker --cpus 0 "${bounded[@]}" --override listeners=PLAINTEXT://127.0.0.1:$p_off --override log.dirs=$dir/off 2>"$dir/off.log" &
off=$!
./target/release/broker --cpus 0 "${bounded[@]}" --override listeners=PLAINTEXT://127.0.0.1:$p_on --override log.dirs=$dir/on \
    --override metrics.listener=http://127.0.0.1:$p_metrics 2>"$dir/on.log" &
on=$!
scraper=
cleanup() {
    [[ -n $scraper ]] && kill "$scraper" 2>/dev/null
    kill "$off" "$on" 2>/dev/null
    wait "$off" "$on" 2>/dev/null || true
    rm -rf "$dir/off" "$dir/on"
}
trap cleanup EXIT
for log in "$dir/off.log" "$dir/on.log"; do
    for _ in $(seq 100); do grep -q "broker ready" "$log" && break; sleep 0.1; done
done
(while true; do curl -s -o /dev/null "http://127.0.0.1:$p_metrics/metrics"; sleep 1; done) &
scraper=$!
taskset -c 1 ./target/release/bench --target off=127.0.0.1:$p_off,pid=$off --target metrics=127.0.0.1:$p_on,pid=$on \
    --workload produce-1k --rounds "$rounds" --out "$dir/out"
echo "one scrape after the run:"
curl -s -o "$dir/scrape.txt" -w "%{size_download} bytes in %{time_total} s\n" "http://127.0.0.1:$p_metrics/metrics"
grep -E '^kafka_server_brokertopicmetrics_bytesin_total|^kafka_network_requestmetrics_totaltimems\{request="Produce",quantile="0.99"\}' "$dir/scrape.txt" | head -5
echo "results in $dir/out"
