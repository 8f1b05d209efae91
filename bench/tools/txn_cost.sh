#!/usr/bin/env bash
# The cost of a transaction (issue 18), ours against Apache Kafka 3.9 in the same run: the bench's
# produce-1k (acks=1, the control: transactions must not slow plain produce), idempotent-1k
# (enable.idempotence, acks=all: the baseline of a transactional producer) and transactional-1k
# (transactional.id, --transactional-records records per transaction, begin/produce/commit in a
# loop), targets alternating round by round, Kafka first so the bench's ratio is ours / Kafka.
#
#   bench/tools/txn_cost.sh [--rounds 3] [--records 100] [--count 1000000] [--seconds 20]
#                           [--out /tmp/txn-cost]
#                           [--before-binary PATH] [--perf]
#
# Both brokers on CPU 0 (one shard for ours), the bench on CPU 1, as compare.sh pins them; Kafka
# from bench/kafka/kafka.sh (transaction.state.log.replication.factor=1 and min.isr=1 on one
# broker; file.delete.delay.ms=1000 so each round's deleted topics leave the disk), 1G heap. Every
# run sends the same --count records of 1 KiB (at most --seconds: a run that slow stops there);
# the count bounds the disk a round fills (a 10 s acks=1 run wrote 3-4 GB, and Kafka's deleted
# topics stay on disk for a minute by default: the first version of this script filled it). One
# unmeasured warm-up round first (Kafka's JIT). --before-binary PATH: a build of ours from before
# transactions; after the main run, a control run of produce-1k and idempotent-1k alternates it
# with ours (transactions must not slow plain produce), into OUT/control.
# --perf records ours (the last target) with perf -g during the measured rounds into OUT/perf.data.
# Writes OUT/bench.txt, OUT/bench.json, OUT/summary.md (markdown: median [min-max], ratios to
# Kafka). Builds nothing: needs target/release/broker and target/release/bench. Hold
# `flock /tmp/build.lock` around it so no build runs beside the measurement. Every process it
# starts is stopped by its PID on exit.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
repo=$REPO
rounds=3
records=100
seconds=20
count=1000000
out=/tmp/txn-cost
before_binary=
perf=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --records) records=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --count) count=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --before-binary) before_binary=$2; shift 2 ;;
        --perf) perf=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
        *) echo "txn_cost.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
broker_bin=$BROKER_BIN
bench_bin=$BENCH_BIN
for binary in "$broker_bin" "$bench_bin" ${before_binary:+"$before_binary"}; do
    [[ -x $binary ]] || { echo "txn_cost.sh: $binary missing (cargo build --release -p broker -p bench)" >&2; exit 1; }
done
"$bench_bin" --help | grep -q -- --transactional-records || { echo "txn_cost.sh: $bench_bin predates --transactional-records" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
WORK=$out
perf_pid=
stop_perf() {
    [[ -n $perf_pid ]] && kill -INT "$perf_pid" 2>/dev/null && wait "$perf_pid" 2>/dev/null
    perf_pid=
}
# Kafka's data (gigabytes); its logs stay. Ours: start_broker's data, deleted by lib.sh.
at_exit '"$repo/bench/kafka/kafka.sh" stop --dir "$out/kafka" >/dev/null 2>&1; rm -rf "$out"/kafka/broker-*/logs'
at_exit stop_perf

# start_ours NAME BINARY [--override KEY=VALUE...]: our broker on CPU 0, one shard; sets port and pid.
start_ours() {
    local name=$1 binary=$2
    shift 2
    start_broker "$name" --binary "$binary" --override offsets.topic.replication.factor=1 \
        --override group.initial.rebalance.delay.ms=0 "$@"
    port=$BROKER_PORT pid=$BROKER_PID
}

kafka_port=$(free_port)
"$repo/bench/kafka/kafka.sh" start --port "$kafka_port" --dir "$out/kafka" --cpus 0 --heap 1G \
    --property file.delete.delay.ms=1000 >"$out/kafka.txt" 2>&1 ||
    { cat "$out/kafka.txt" >&2; exit 1; }
kafka_pid=$(awk '$1 == "broker-0" {print $2}' "$out/kafka/pids")
targets=(--target "kafka=127.0.0.1:$kafka_port,pid=$kafka_pid")
start_ours ours "$broker_bin" --override transaction.state.log.replication.factor=1 --override transaction.state.log.min.isr=1
ours_pid=$pid
ours_target="ours=127.0.0.1:$port,pid=$pid"
targets+=(--target "$ours_target")

workloads=(--workload produce-1k --workload idempotent-1k --workload transactional-1k --transactional-records "$records")
echo "txn_cost.sh: warm-up round (not measured)" >&2
pin_client "$bench_bin" "${targets[@]}" "${workloads[@]}" --rounds 1 --duration-seconds 5 --message-count $((count / 4)) --out "$out/warmup" >"$out/warmup.txt" 2>&1 ||
    { tail -20 "$out/warmup.txt" >&2; exit 1; }
uptime >"$out/uptime.txt"
if ((perf)); then
    perf record -F 499 -g -o "$out/perf.data" -p "$ours_pid" >/dev/null 2>&1 &
    perf_pid=$!
fi
command=(taskset -c "$CLIENT_CPUS" "$bench_bin" "${targets[@]}" "${workloads[@]}" --rounds "$rounds" --duration-seconds "$seconds" --message-count "$count" --out "$out")
echo "${command[*]}" >"$out/command.txt"
"${command[@]}" 2>&1 | tee "$out/bench.txt" | grep -v '^\[round' || true
uptime >>"$out/uptime.txt"
stop_perf
[[ -f $out/bench.json ]] || { echo "txn_cost.sh: the bench failed: $out/bench.txt" >&2; exit 1; }

if [[ -n $before_binary ]]; then
    # The control: a broker from before transactions against ours, the plain workloads only (the
    # old one knows no transactions), after its own warm-up round.
    mkdir -p "$out/control"
    start_ours before "$before_binary"
    control=(--target "before=127.0.0.1:$port,pid=$pid" --target "$ours_target" --workload produce-1k --workload idempotent-1k)
    pin_client "$bench_bin" "${control[@]}" --rounds 1 --duration-seconds 5 --message-count $((count / 4)) --out "$out/control/warmup" \
        >"$out/control-warmup.txt" 2>&1 || { tail -20 "$out/control-warmup.txt" >&2; exit 1; }
    uptime >>"$out/uptime.txt"
    pin_client "$bench_bin" "${control[@]}" --rounds "$rounds" --duration-seconds "$seconds" --message-count "$count" --out "$out/control" \
        2>&1 | tee "$out/control/bench.txt" | grep -v '^\[round' || true
    uptime >>"$out/uptime.txt"
fi

# summary.md: the figures of the three workloads as compare.sh's summary shows them.
python3 - "$out" "$records" <<'PY'
import json, os, sys
out, records = sys.argv[1], sys.argv[2]
num = lambda v: "-" if v is None else "0" if v == 0 else f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"
KEEP = ("MB/s", "msgs/s", "commits/s", "commit p50 ms", "commit p99 ms", "commit p99.9 ms", "commit max ms",
        "publish p50 ms", "publish p99 ms", "broker CPU-s/GB", "client CPU cores", "errors")
lines = [f"# The cost of a transaction: {records}-record transactions, 1 KiB records", ""]

def part(directory, title):
    """One bench run's table: median [min-max] per target, ratios to its first target."""
    data = json.load(open(os.path.join(directory, "bench.json")))
    targets = [t["name"] for t in data["targets"]]
    lines.extend([f"## {title}", "", "Command: `" + " ".join(data["command"]) + "`", "",
                  f"Cells: median [min-max] over the rounds; ratios are to the {targets[0]} target's median.", "",
                  "| workload | figure | " + " | ".join(targets) + " | " + " | ".join(f"{t} / {targets[0]}" for t in targets[1:]) + " |",
                  "|---|---|" + "---|" * (2 * len(targets) - 1)])
    for row in data["summary"]:
        if row["metric"] not in KEEP:
            continue
        by = {t["target"]: t for t in row["targets"]}
        cells = [f"{num(by[t]['spread']['median'])} [{num(by[t]['spread']['min'])}-{num(by[t]['spread']['max'])}]" if t in by else "-" for t in targets]
        ratios = [f"x{by[t]['ratio_to_first']:.2f}" if t in by and by[t].get("ratio_to_first") is not None else "-" for t in targets[1:]]
        lines.append(f"| {row['workload']} | {row['metric']} | " + " | ".join(cells + ratios) + " |")
    msgs = {(r["workload"], t["target"]): t["spread"]["median"] for r in data["summary"] if r["metric"] == "msgs/s" for t in r["targets"]}
    lines.append("")
    for t in targets:
        tx, idem, plain = (msgs.get((w, t)) for w in ("transactional-1k", "idempotent-1k", "produce-1k"))
        if idem and plain:
            lines.append(f"- {t}: " + (f"transactional / idempotent msgs/s x{tx / idem:.2f}; " if tx else "") + f"idempotent / acks=1 x{idem / plain:.2f}")
    for r in data["runs"]:
        if r["figures"]["errors"]:
            lines.append(f"- errors: round {r['round']} {r['target']} {r['workload']}: {r['figures']['first_error']}")
    lines.append("")

part(out, "Ours against Apache Kafka 3.9")
if os.path.exists(os.path.join(out, "control", "bench.json")):
    part(os.path.join(out, "control"), "Control: ours before transactions against ours now")
lines.append("uptime around the runs: " + " / ".join(l.strip() for l in open(os.path.join(out, "uptime.txt"))))
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
