#!/usr/bin/env bash
# The tail that retention adds (issue "Nothing blocks a shard"), in one run: our broker deleting
# segments all the time against the same broker keeping them, the end-to-end soak at a fixed rate
# against each, with the bench's D-state sampler on the shard threads.
#
#   bench/tools/retention_tail.sh [--rounds N] [--seconds S] [--window-seconds W] [--warmup-seconds U] [--rate R]
#       [--message-size-bytes B] [--segment-bytes B] [--retention-bytes B] [--retention-check-ms MS]
#       [--broker-override KEY=VALUE]... [--broker PATH] [--broker-cpu C] [--client-cpu C]
#       [--data-dir DIR] [--out DIR]
#   bench/tools/retention_tail.sh --soak-minutes M [the same options]
#
# Comparison (the default): N rounds (default 2) of two runs, A then B (A B A B), each against a
# broker started for it alone (so one broker's leftover work, e.g. deleting a run's 6 GB, never
# lands in the other's run) with the same pinning (--cpus C under taskset -c C, default CPU 0; the
# bench on --client-cpu, default CPU 1), its own port and its own new log directory:
#   retention     --override log.segment.bytes=16777216 --override log.retention.bytes=67108864:
#                 each partition rolls a segment every ~2 s and retention deletes one as often
#   no-retention  the same segment size, no retention: segments roll, nothing is deleted
# Both with log.retention.check.interval.ms=1000 (Kafka's 300000 would delete in bursts every
# 5 minutes, or never in a short run) and any --broker-override. Each run: bench --workload
# e2e-latency (6 partitions, 1 producer, 1 consumer, acks=1) --rate 50000 --message-size-bytes 1024
# --soak-seconds S (default 130) --window-seconds W (default 10) --warmup-seconds U (default 10:
# the first windows, where the first touch of fresh page-cache pages and the clients' start-up
# land whatever the broker does, are left out of the figures below, so a default run measures
# 120 s of steady state; each run's bench.txt still shows every window). Prints, per run and as the
# median per broker: e2e p50, p99, p99.9, max, the shard threads' D samples (the executor: a
# sample there is the whole shard asleep) and the helper's (glommio's blocking thread, where such
# sleeps belong); then p99.9 retention / no-retention. The summary goes to DIR/summary.txt too.
#
# --soak-minutes M: one long run instead, the retention broker only, with 30 s windows unless
# --window-seconds says otherwise: DIR/soak/ gets soak.csv, soak.svg, bench.json and bench.txt.
#
# --out DIR (default ./retention-tail-results; a previous run's results there are replaced);
# --data-dir DIR: where the brokers' log directories go (default ${TMPDIR:-/var/tmp}); it must be
# on a real disk (tmpfs frees no blocks and has no discard: the point here), each run's is removed
# after it. --broker PATH: another broker binary (default target/release/broker), e.g. an older
# build to compare with. Builds nothing: needs target/release/broker and target/release/bench
# (cargo build --release -p broker -p bench), taskset and python3. Everything listens on
# 127.0.0.1, on free ports; every broker started is stopped by its PID on exit, also on failure
# or Ctrl-C.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
broker_bin=$repo/target/release/broker
bench_bin=$repo/target/release/bench
START_TIMEOUT=60
STOP_TIMEOUT=30

rounds=2
seconds=130
window_seconds=
warmup_seconds=10
rate=50000
message_size_bytes=1024
segment_bytes=16777216
retention_bytes=67108864
retention_check_ms=1000
broker_overrides=()
broker_cpu=0
client_cpu=1
data_root=${TMPDIR:-/var/tmp}
out=./retention-tail-results
soak_minutes=

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "retention_tail.sh: $*" >&2
    exit 1
}

say() {
    echo "retention_tail.sh: $*" >&2
}

while [[ $# -gt 0 ]]; do
    [[ $1 == -h || $1 == --help ]] && usage
    [[ $# -ge 2 ]] || { echo "retention_tail.sh: $1 needs a value" >&2; usage; }
    case $1 in
        --rounds) rounds=$2 ;;
        --seconds) seconds=$2 ;;
        --window-seconds) window_seconds=$2 ;;
        --warmup-seconds) warmup_seconds=$2 ;;
        --rate) rate=$2 ;;
        --message-size-bytes) message_size_bytes=$2 ;;
        --segment-bytes) segment_bytes=$2 ;;
        --retention-bytes) retention_bytes=$2 ;;
        --retention-check-ms) retention_check_ms=$2 ;;
        --broker-override) broker_overrides+=(--override "$2") ;;
        --broker) broker_bin=$2 ;;
        --broker-cpu) broker_cpu=$2 ;;
        --client-cpu) client_cpu=$2 ;;
        --data-dir) data_root=$2 ;;
        --out) out=$2 ;;
        --soak-minutes) soak_minutes=$2 ;;
        *) echo "retention_tail.sh: unknown argument $1" >&2; usage ;;
    esac
    shift 2
done
number() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 $2: not a positive whole number"; }
number --rounds "$rounds"
number --seconds "$seconds"
number --rate "$rate"
number --message-size-bytes "$message_size_bytes"
number --segment-bytes "$segment_bytes"
number --retention-bytes "$retention_bytes"
number --retention-check-ms "$retention_check_ms"
[[ -z $soak_minutes ]] || number --soak-minutes "$soak_minutes"
[[ -n $window_seconds ]] || window_seconds=$([[ -n $soak_minutes ]] && echo 30 || echo 10)
number --window-seconds "$window_seconds"

# --- What must be there (nothing is built here) -------------------------------------------------
[[ -x $broker_bin ]] || die "$broker_bin is missing: cargo build --release -p broker"
[[ -x $bench_bin ]] || die "$bench_bin is missing: cargo build --release -p bench"
"$bench_bin" --help 2>/dev/null | grep -q -- '--soak-seconds' ||
    die "$bench_bin predates --soak-seconds: cargo build --release -p bench"
for tool in taskset python3; do
    command -v $tool >/dev/null || die "$tool is missing"
done
taskset -c "$broker_cpu" true 2>/dev/null || die "CPU $broker_cpu (broker) not available: --broker-cpu"
taskset -c "$client_cpu" true 2>/dev/null || die "CPU $client_cpu (bench) not available: --client-cpu"
[[ -d $data_root ]] || die "--data-dir $data_root is not a directory"
[[ $(stat -f -c %T "$data_root") != tmpfs ]] || die "--data-dir $data_root is tmpfs: give a directory on a real disk"
[[ $(id -u) -eq 0 ]] || say "not root: the D-state sampler cannot read kernel stacks (counts still work)"

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out"/retention-r* "$out"/no-retention-r* "$out/soak" "$out/logs" "$out/summary.txt"
mkdir -p "$out/logs"

# --- Brokers we started, and stopping exactly those ---------------------------------------------
broker_pid=
broker_data=

# A live PID that we started: its command line names its own log directory.
is_ours() {
    local cmdline
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
    [[ $cmdline == *"log.dirs=$2"* ]]
}

# SIGTERM, up to STOP_TIMEOUT s, then SIGKILL; only if the PID is still the broker we started.
# Then its log directory goes.
stop_broker() {
    [[ -n $broker_pid ]] || return 0
    local pid=$broker_pid data=$broker_data status=0
    broker_pid=
    if is_ours "$pid" "$data"; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_TIMEOUT))
        while is_ours "$pid" "$data" && [[ $SECONDS -lt $deadline ]]; do sleep 0.2; done
        if is_ours "$pid" "$data"; then
            say "broker PID $pid still runs ${STOP_TIMEOUT}s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    else
        say "broker PID $pid had already exited"
    fi
    wait "$pid" 2>/dev/null || status=$?
    say "stopped broker PID $pid (exit status $status)"
    # Removed and synced before the next run starts, so its discards and writeback are done.
    rm -rf "$data"
    sync
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_broker
    [[ $status -eq 0 ]] || say "failed (exit $status)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_broker NAME LOG [--override KEY=VALUE...]: sets broker_pid, broker_data, broker_port.
start_broker() {
    local name=$1 log=$2
    shift 2
    broker_data=$(mktemp -d "$data_root/retention_tail.$name.XXXXXX")
    broker_port=$(free_port)
    RUST_LOG=info,glommio=warn taskset -c "$broker_cpu" "$broker_bin" --cpus "$broker_cpu" \
        --override "listeners=PLAINTEXT://127.0.0.1:$broker_port" --override "log.dirs=$broker_data" \
        --override "log.segment.bytes=$segment_bytes" --override "log.retention.check.interval.ms=$retention_check_ms" \
        "$@" "${broker_overrides[@]}" </dev/null >"$log" 2>&1 &
    broker_pid=$!
    local deadline=$((SECONDS + START_TIMEOUT))
    until grep -q "broker ready" "$log"; do
        if ! kill -0 "$broker_pid" 2>/dev/null; then
            tail -20 "$log" >&2
            die "broker $name exited at start: see $log"
        fi
        [[ $SECONDS -lt $deadline ]] || die "broker $name not ready within ${START_TIMEOUT}s: see $log"
        sleep 0.2
    done
    say "broker $name PID $broker_pid on 127.0.0.1:$broker_port, log dir $broker_data"
}

# run NAME SECONDS DIR [broker overrides...]: one broker, one soak, the broker stopped.
run() {
    local name=$1 run_seconds=$2 dir=$3
    shift 3
    mkdir -p "$dir"
    start_broker "$name" "$out/logs/$(basename "$dir").log" "$@"
    # --keep-topics: the topic goes with the log directory, not by a deletion the broker works
    # through after the run.
    if ! taskset -c "$client_cpu" "$bench_bin" --target "$name=127.0.0.1:$broker_port,pid=$broker_pid" \
        --workload e2e-latency --rate "$rate" --message-size-bytes "$message_size_bytes" \
        --soak-seconds "$run_seconds" --window-seconds "$window_seconds" --warmup-seconds "$warmup_seconds" --keep-topics --out "$dir" \
        2>&1 | tee "$dir/bench.txt"; then
        die "bench failed against $name: see $dir/bench.txt"
    fi
    stop_broker
}

retention=(--override "log.retention.bytes=$retention_bytes")
say "broker $broker_bin ($(date -u -r "$broker_bin" +%FT%TZ)), bench $bench_bin; data in $data_root; results in $out"

if [[ -n $soak_minutes ]]; then
    run retention $((soak_minutes * 60)) "$out/soak" "${retention[@]}"
    say "soak done: $out/soak/soak.csv, $out/soak/soak.svg, $out/soak/bench.txt"
    exit 0
fi

for ((round = 1; round <= rounds; round++)); do
    say "round $round/$rounds: retention"
    run retention "$seconds" "$out/retention-r$round" "${retention[@]}"
    say "round $round/$rounds: no-retention"
    run no-retention "$seconds" "$out/no-retention-r$round"
done

python3 - "$out" "$rounds" "$seconds" "$rate" "$message_size_bytes" "$warmup_seconds" <<'EOF' | tee "$out/summary.txt"
import json, statistics, sys

out, rounds, seconds, rate, size, warmup = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
names = ["retention", "no-retention"]
columns = ["p50 ms", "p99 ms", "p99.9 ms", "max ms", "shard D", "helper D", "errors"]

def figures(name, round_):
    with open(f"{out}/{name}-r{round_}/bench.json") as file:
        document = json.load(file)
    run = document["runs"][0]["figures"]
    # The steady part of the soak (the warm-up windows left out), else the whole run.
    soak = (document.get("soak") or [{}])[0]
    latency = soak.get("steady_ms") or run.get("end_to_end_latency_ms") or {}
    dstate = run.get("broker_dstate") or {}
    return [latency.get("p50"), latency.get("p99"), latency.get("p99_9"), latency.get("max"),
            dstate.get("shard_d_samples"), dstate.get("helper_d_samples"), run.get("errors")]

def cell(value):
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)

rows = {(name, r): figures(name, r) for r in range(1, rounds + 1) for name in names}
print(f"\nretention tail: e2e-latency at {rate} msg/s x {size} B for {seconds} s per run, "
      f"{rounds} round(s) alternating retention, no-retention; latency without the first {warmup} s")
print(f"  {'run':<20}" + "".join(f"{c:>10}" for c in columns))
for r in range(1, rounds + 1):
    for name in names:
        print(f"  {name + ' r' + str(r):<20}" + "".join(f"{cell(v):>10}" for v in rows[(name, r)]))
medians = {}
for name in names:
    values = []
    for index in range(len(columns)):
        column = [rows[(name, r)][index] for r in range(1, rounds + 1) if rows[(name, r)][index] is not None]
        values.append(statistics.median(column) if column else None)
    medians[name] = values
    print(f"  {'median ' + name:<20}" + "".join(f"{cell(v):>10}" for v in values))
p999 = columns.index("p99.9 ms")
ratios = [rows[("retention", r)][p999] / rows[("no-retention", r)][p999]
          for r in range(1, rounds + 1) if rows[("no-retention", r)][p999]]
if medians["no-retention"][p999]:
    print(f"\np99.9 retention / no-retention: x{medians['retention'][p999] / medians['no-retention'][p999]:.2f} "
          f"(medians; per round: {', '.join(f'x{ratio:.2f}' for ratio in ratios)})")
print(f"shard D samples: the executor thread seen in D state (1 ms samples); per run detail and kernel "
      f"stacks in {out}/<run>/bench.txt, windows in <run>/soak.csv")
EOF
