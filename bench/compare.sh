#!/usr/bin/env bash
# Our broker against Apache Kafka 3.9 (ZooKeeper mode) on this machine, in one command: the same
# cores, disk and load generators, targets alternating round by round (project issue 17).
#
#   bench/compare.sh [--rounds N] [--quick] [--out DIR]
#
# Parts, each with both brokers pinned to CPU 0 and every load generator to CPU 1 (taskset;
# COMPARE_BROKER_CPUS / COMPARE_CLIENT_CPUS change that):
#   single  one broker each: ours standalone (--cpus 0) and Kafka on ZooKeeper; target/release/bench
#           runs produce-1k, consume-1k, e2e-latency (5000 msg/s) and acks-all with the loopback and
#           disk ceilings, N rounds of 10 s runs (Kafka first, so the bench's ratio is ours/Kafka).
#   perf    Kafka's own kafka-producer-perf-test and kafka-consumer-perf-test (ProducerPerformance,
#           ConsumerPerformance) against the same two brokers: N rounds alternating Kafka, ours,
#           500,000 records of 1 KiB each into a new 6-partition topic, acks=1, then read back.
#   rf3     three brokers each: ours in cluster mode on its own ZooKeeper, Kafka via
#           bench/kafka/kafka.sh --brokers 3; the bench's acks-all with replication factor 3,
#           N rounds; CPU and RSS are the sum over the three brokers (--target ...,pid=A+B+C).
# Before each part's measured rounds, one unmeasured warm-up round of the same workloads (5 s
# runs; 30 s for rf3) lets Kafka's JVMs compile their hot paths (cold, its first e2e-latency run
# showed p50 180-470 ms against 2 ms warm). Kafka runs with kafka.sh's settings (group.initial.rebalance.delay.ms=0, 1G
# heap, Kafka's defaults otherwise); ours with its defaults plus the same rebalance delay and
# offsets.topic.replication.factor=1 on one broker. Neither fsyncs per append.
# --rounds N (default 5); --quick: 1 round, 2 s / 20,000-message runs, 20,000 perf records, a smoke
# run of about 70 s; a full run takes about 17 minutes here. --out DIR (default
# ./compare-results): DIR/single and DIR/rf3 hold the bench's bench.txt, bench.json and bench.svg,
# DIR/perf the tools' logs, DIR/summary.md the ratios ours/Kafka (median [min-max] per target),
# DIR/logs and DIR/data the brokers' logs and data (data is removed after each part). A previous
# run's results in DIR are replaced.
#
# Builds nothing: needs target/release/broker and target/release/bench (cargo build --release -p
# broker -p bench), Java 17, Debian's zookeeper package, kcat, python3, and Kafka's jars in
# tests/java/target/kafka-libs (fetched with Maven if missing). Everything listens on 127.0.0.1,
# on free ports. Every process started is stopped by its PID on exit, also on failure or Ctrl-C.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
broker_bin=$repo/target/release/broker
bench_bin=$repo/target/release/bench
kafka_sh=$here/kafka/kafka.sh
libs=$repo/tests/java/target/kafka-libs
ZOOKEEPER_JAR=/usr/share/java/zookeeper.jar
BROKER_CPUS=${COMPARE_BROKER_CPUS:-0}
CLIENT_CPUS=${COMPARE_CLIENT_CPUS:-1}
START_TIMEOUT=60
STOP_TIMEOUT=30

rounds=
quick=0
out=./compare-results

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "compare.sh: $*" >&2
    exit 1
}

say() {
    echo "compare.sh: $*" >&2
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) rounds=${2:-}; shift 2 ;;
        --quick) quick=1; shift ;;
        --out) out=${2:-}; shift 2 ;;
        -h|--help) usage ;;
        *) echo "compare.sh: unknown argument $1" >&2; usage ;;
    esac
done
[[ -n $rounds ]] || rounds=$((quick ? 1 : 5))
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds $rounds: not a positive number"
[[ -n $out ]] || die "--out needs a directory"

# Workload sizes.
if ((quick)); then
    warm_up_single=(--duration-seconds 1 --message-count 5000)
    warm_up_rf3=(--duration-seconds 1 --message-count 5000)
    bench_size=(--duration-seconds 2 --message-count 20000)
    ceiling_seconds=0.3
    perf_records=20000
else
    warm_up_single=(--duration-seconds 5)
    # Three JVMs on one core take long to settle: in a row of 10 s acks-all runs, Kafka went
    # 37, 41, 56, 57, 52, 75 MB/s (its CPU-s/GB from 27 down to 13).
    warm_up_rf3=(--duration-seconds 30)
    bench_size=(--duration-seconds 10)
    ceiling_seconds=3
    perf_records=500000
fi
perf_record_size=1024
perf_partitions=6

# --- What must be there (nothing is built here) -------------------------------------------------
for binary in "$broker_bin" "$bench_bin"; do
    # Someone may be rebuilding it right now: give a build a moment to put it back.
    for _ in 1 2 3 4 5 6; do [[ -x $binary ]] && break; sleep 10; done
    [[ -x $binary ]] || die "$binary is missing: cargo build --release -p broker -p bench"
done
"$bench_bin" --help 2>/dev/null | grep -q 'PID+PID' ||
    die "$bench_bin predates --target ...,pid=A+B+C (summed brokers): cargo build --release -p bench"
command -v java >/dev/null || die "java is missing (apt-get install default-jre-headless)"
[[ -f $ZOOKEEPER_JAR ]] || die "$ZOOKEEPER_JAR is missing (apt-get install zookeeper)"
for tool in taskset kcat python3 flock; do
    command -v $tool >/dev/null || die "$tool is missing"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install time)"
if ! compgen -G "$libs/kafka_2.13-3.9*.jar" >/dev/null; then
    say "no Kafka 3.9 jars in $libs: fetching them with Maven (tests/java)"
    (cd "$repo/tests/java" && flock /tmp/build.lock mvn -q -B dependency:copy-dependencies) || die "mvn dependency:copy-dependencies failed"
fi
compgen -G "$libs/kafka-tools-3.9*.jar" >/dev/null || die "no kafka-tools-3.9*.jar in $libs"
taskset -c "$BROKER_CPUS" true 2>/dev/null || die "CPU(s) $BROKER_CPUS (brokers) not available: set COMPARE_BROKER_CPUS"
taskset -c "$CLIENT_CPUS" true 2>/dev/null || die "CPU(s) $CLIENT_CPUS (load generators) not available: set COMPARE_CLIENT_CPUS"

mkdir -p "$out"
out=$(cd "$out" && pwd)
[[ -e $out/data ]] && die "$out/data exists (another run, or one that was killed hard): remove it first"
rm -rf "$out/single" "$out/rf3" "$out/perf" "$out/logs" "$out/summary.md"
mkdir -p "$out/logs" "$out/data"
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
started_seconds=$SECONDS

# --- Processes we started, and stopping exactly those --------------------------------------------
own_pids=()        # "name:pid" of processes started here directly (ZooKeeper, our brokers)
kafka_dirs=()      # kafka.sh --dir of every Kafka started (kafka.sh stops its own PIDs)
zookeeper_dirs=()  # kafka.sh --dir of the ZooKeeper alone that our cluster uses
foreground=()      # a load generator running now (and the tail showing its output)
parts_done=()
part_failed=

# A live PID that we started: its command line names our output directory.
is_ours() {
    local cmdline
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
    [[ $cmdline == *"$out"* ]]
}

# SIGTERM, up to STOP_TIMEOUT s, then SIGKILL; only if the PID is still the process we started.
stop_pid() {
    local name=$1 pid=$2 status=0
    if ! is_ours "$pid"; then
        # Gone before we stopped it: a crash, or killed by someone else.
        wait "$pid" 2>/dev/null || status=$?
        say "$name (PID $pid) had already exited (exit status $status; 127: unknown)"
        echo "$name $pid $status already-exited" >>"$out/logs/exit-status.txt"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while is_ours "$pid" && [[ $SECONDS -lt $deadline ]]; do sleep 0.2; done
    if is_ours "$pid"; then
        say "$name (PID $pid) still runs ${STOP_TIMEOUT}s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    is_ours "$pid" && say "$name (PID $pid) survived SIGKILL"
    # Our own child: its exit status (a broker should exit 0 on SIGTERM).
    wait "$pid" 2>/dev/null || status=$?
    say "stopped $name (PID $pid, exit status $status)"
    echo "$name $pid $status" >>"$out/logs/exit-status.txt"
}

# Stops what kafka.sh started in DIR and keeps its logs (the data goes).
stop_kafka_sh() {
    local dir=$1 log
    [[ -f $dir/pids ]] && { "$kafka_sh" stop --dir "$dir" >&2 || say "kafka.sh stop --dir $dir failed"; }
    local keep=$out/logs/$(basename "$dir")
    for log in "$dir"/broker-*/server.log "$dir"/broker-*/stdout.log "$dir"/zookeeper/zookeeper.log; do
        [[ -f $log ]] || continue
        mkdir -p "$keep/$(basename "$(dirname "$log")")"
        cp "$log" "$keep/$(basename "$(dirname "$log")")/"
    done
}

# Stops every process started by the current part: Kafka, then our brokers, then their ZooKeeper.
stop_part() {
    local entry dir i
    for dir in "${kafka_dirs[@]}"; do stop_kafka_sh "$dir"; done
    kafka_dirs=()
    for ((i = ${#own_pids[@]} - 1; i >= 0; i--)); do
        entry=${own_pids[i]}
        stop_pid "${entry%%:*}" "${entry##*:}"
    done
    own_pids=()
    for dir in "${zookeeper_dirs[@]}"; do stop_kafka_sh "$dir"; done
    zookeeper_dirs=()
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${foreground[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${foreground[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_part
    if [[ $status -ne 0 ]]; then
        part_failed=${part_failed:-setup}
        say "failed (exit $status) in part '$part_failed'"
    fi
    summarize || say "could not write $out/summary.md"
    rm -rf "$out/data"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Helpers -------------------------------------------------------------------------------------
accepts() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

zk_ok() {
    [[ $(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; printf ruok >&3; cat <&3" 2>/dev/null) == imok ]]
}

# The first of N consecutive free ports on 127.0.0.1.
free_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
count = int(sys.argv[1])
for _ in range(500):
    base = random.randrange(20000, 60000 - count)
    sockets = []
    try:
        for port in range(base, base + count):
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            sockets.append(s)
        print(base)
        break
    except OSError:
        pass
    finally:
        for s in sockets:
            s.close()
else:
    sys.exit("no free port range")
PY
}

# Runs a load generator in the background (so a signal reaches the trap at once), showing its
# output as it goes and keeping it in LOG; returns its exit status.
run_logged() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    local pid=$!
    tail -n +1 --pid="$pid" -f "$log" 2>/dev/null &
    local tail_pid=$!
    foreground=("$pid" "$tail_pid")
    local status=0
    wait "$pid" || status=$?
    wait "$tail_pid" 2>/dev/null || true
    foreground=()
    return $status
}

# start_zookeeper DIR: a ZooKeeper server alone for our cluster (kafka.sh --brokers 0, the same
# zoo.cfg and launch as Kafka's), stopped after our brokers; sets zk_port.
start_zookeeper() {
    local dir=$1
    zk_port=$(free_ports 1)
    zookeeper_dirs+=("$dir")
    "$kafka_sh" start --brokers 0 --dir "$dir" --zk-port "$zk_port" --cpus "$BROKER_CPUS" --libs "$libs" >&2 ||
        die "ZooKeeper did not start (log: $dir/zookeeper/zookeeper.log)"
}

# start_ours NAME PORT [--override ...]: our broker, pinned, data under $out/data; sets ours_pid.
start_ours() {
    local name=$1 port=$2
    shift 2
    local data=$out/data/$name log=$out/logs/$name.log
    mkdir -p "$data"
    accepts "$port" && die "127.0.0.1:$port is already taken"
    RUST_LOG=info,glommio=warn taskset -c "$BROKER_CPUS" "$broker_bin" --cpus "$BROKER_CPUS" \
        --override "listeners=PLAINTEXT://127.0.0.1:$port" --override "log.dirs=$data" "$@" \
        </dev/null >"$log" 2>&1 &
    ours_pid=$!
    own_pids+=("$name:$ours_pid")
    local deadline=$((SECONDS + START_TIMEOUT))
    until grep -q "broker ready" "$log" && accepts "$port"; do
        if ! kill -0 "$ours_pid" 2>/dev/null; then
            tail -20 "$log" >&2
            die "our broker $name exited at start: see $log"
        fi
        [[ $SECONDS -lt $deadline ]] || die "our broker $name not ready on 127.0.0.1:$port within ${START_TIMEOUT}s: see $log"
        sleep 0.2
    done
    say "our broker $name PID $ours_pid on 127.0.0.1:$port (log $log)"
}

# start_kafka DIR PORT BROKERS: sets kafka_pids (joined with +).
start_kafka() {
    local dir=$1 port=$2 brokers=$3
    kafka_dirs+=("$dir")
    "$kafka_sh" start --port "$port" --dir "$dir" --brokers "$brokers" --cpus "$BROKER_CPUS" --heap 1G --libs "$libs" >&2 ||
        die "Kafka did not start (logs under $dir)"
    kafka_pids=$(awk '$1 ~ /^broker-/ {print $2}' "$dir/pids" | paste -sd+)
}

# Waits until the cluster behind BOOTSTRAP lists N brokers in its metadata.
wait_for_brokers() {
    local bootstrap=$1 count=$2 deadline=$((SECONDS + START_TIMEOUT))
    until kcat -b "$bootstrap" -L -m 5 2>/dev/null | grep -qE "^ *$count brokers:"; do
        [[ $SECONDS -lt $deadline ]] || die "$bootstrap does not list $count brokers within ${START_TIMEOUT}s"
        sleep 0.5
    done
}

# CPU seconds (user + system) used so far by the processes A+B+C.
cpu_seconds() {
    local total=0 pid ticks
    for pid in ${1//+/ }; do
        ticks=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pid/stat")
        total=$((total + ticks))
    done
    python3 -c "import os; print($total / os.sysconf('SC_CLK_TCK'))"
}

# Kafka's CLI tools (their jars are Kafka 3.9's own), pinned with the load generators.
tool() {
    local main=$1
    shift
    taskset -c "$CLIENT_CPUS" java -Xms512m -Xmx512m -Dlog4j.configuration="file:$out/perf/tools-log4j.properties" \
        -cp "$libs/*" "$main" "$@"
}

# --- Summary -------------------------------------------------------------------------------------
summarize() {
    local commit dirty
    commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$repo" --no-optional-locks status --porcelain 2>/dev/null | head -1)
    python3 - "$out" <<PY
import glob, json, os, re, statistics, sys
out = sys.argv[1]
mode = "quick (smoke run: sizes too small to measure anything)" if $quick else "full"
lines = []
w = lines.append
w("# Our broker vs Apache Kafka 3.9 on this machine")
w("")
w("bench/compare.sh, started $started_at, mode: " + mode + ", rounds: $rounds, took " + str($SECONDS - $started_seconds) + " s.")
w("Commit $commit" + (" (work tree has local changes)" if "$dirty" else "") + "; broker binary $(date -u -r "$broker_bin" +%FT%TZ), "
  + "Kafka jars: " + ", ".join(sorted(os.path.basename(p) for p in glob.glob("$libs/kafka_2.13-*.jar"))) + ".")
w("Brokers (ours, Kafka, both ZooKeepers) pinned to CPU(s) $BROKER_CPUS; load generators (bench, Kafka's perf tools) to CPU(s) $CLIENT_CPUS;")
w("data of both on the same disk (" + out + "/data). Both with their default flush policy (no fsync per append); Kafka heap 1G.")
w("")
w("Ratios are ours / Kafka of the medians. Cells: median [min-max] over the rounds. 'better' says which way is good.")
w("A 'client CPU cores' near 1 means the load generator (one CPU) was the limit: the throughput ratio then says little,")
w("and 'broker CPU-s/GB' (the broker's own cost, whoever is the limit) is the figure to compare.")
w("")

def num(v):
    if v is None: return "-"
    if v == 0: return "0"
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"

def spread(values):
    values = [v for v in values if v is not None]
    if not values: return None
    return statistics.median(values), min(values), max(values)

def cell(s):
    return "-" if s is None else f"{num(s[0])} [{num(s[1])}-{num(s[2])}]"

def ratio(a, b):
    if a is None or b is None or b[0] == 0: return "-"
    return f"x{a[0] / b[0]:.2f}"

LOWER = ("CPU-s/GB", "RSS", "errors", "CPU cores")
def better(metric):
    return "lower" if metric.endswith(" ms") or any(k in metric for k in LOWER) else "higher"

def bench_part(name, title, note):
    path = os.path.join(out, name, "bench.json")
    w(f"## {title}")
    w("")
    w(note)
    w("")
    if not os.path.exists(path):
        w(f"(no {name}/bench.json: this part did not run to its end" + (f", see {name}/bench.txt" if os.path.exists(os.path.join(out, name, "bench.txt")) else "") + ")")
        w("")
        return
    data = json.load(open(path))
    w(f"Files: {name}/bench.txt (the bench's own table), {name}/bench.json, {name}/bench.svg (plots).")
    w("")
    w("| workload | figure | ours | Kafka | ours / Kafka | better |")
    w("|---|---|---|---|---|---|")
    for row in data["summary"]:
        by = {t["target"]: t["spread"] for t in row["targets"]}
        ours = by.get("ours"); kafka = by.get("kafka")
        o = ours and (ours["median"], ours["min"], ours["max"])
        k = kafka and (kafka["median"], kafka["min"], kafka["max"])
        w(f"| {row['workload']} | {row['metric']} | {cell(o)} | {cell(k)} | {ratio(o, k)} | {better(row['metric'])} |")
    errors = [(r["round"], r["target"], r["workload"], r["figures"]["first_error"]) for r in data["runs"] if r["figures"]["errors"]]
    for round_, target, workload, first in errors:
        w(f"- errors: round {round_}, {target}, {workload}: first: {first}")
    if data.get("ceiling_summary"):
        w("")
        w("Ceilings of the same run (median [min-max]): " + "; ".join(f"{label} {cell((s['median'], s['min'], s['max']))}" for label, s in data["ceiling_summary"]) + ".")
    w("")

bench_part("single", "One broker each",
    "Ours standalone (--cpus $BROKER_CPUS, one shard) against one Kafka broker on ZooKeeper. target/release/bench (librdkafka), "
    "presets produce-1k (acks=1, max rate), consume-1k (reads back what produce-1k wrote), e2e-latency (5000 msg/s of 1 KiB, linger 1 ms), "
    "acks-all (max rate); 1 KiB records, 6 partitions, replication factor 1, " + ("2 s / 20,000-message" if $quick else "10 s") + " runs, "
    "after one unmeasured warm-up round (single/warmup/).")
bench_part("rf3", "Three brokers each, replication factor 3, acks=all",
    "Ours in cluster mode on ZooKeeper (broker.id 0-2) against three Kafka brokers on ZooKeeper (kafka.sh --brokers 3), all six on CPU(s) $BROKER_CPUS. "
    "The bench's acks-all with --replication-factor 3 (6 partitions, leaders spread by each controller, min.insync.replicas 1 as both default). "
    "Broker CPU-s/GB and peak RSS are the sums over the three brokers of each (--target ...,pid=A+B+C). "
    "After one unmeasured warm-up round of " + ("1 s" if $quick else "30 s") + " (rf3/warmup/).")

# Kafka's own perf tools.
w("## Kafka's own perf tools (kafka-producer-perf-test, kafka-consumer-perf-test)")
w("")
w("org.apache.kafka.tools.ProducerPerformance --num-records $perf_records --record-size $perf_record_size --throughput -1 "
  "--producer-props acks=1 (the Java producer's defaults otherwise: batch.size 16384, linger.ms 0 in 3.9) into a new topic of $perf_partitions partitions, "
  "then ConsumerPerformance --messages $perf_records (a consumer group, subscribe) reading it back. The tools' MB are MiB (2^20); "
  "'MB/s incl. join' is ConsumerPerformance's MB.sec (includes the group join), 'fetch MB/s' its fetch.MB.sec. "
  "Broker CPU-s/GB from /proc around each tool run; client CPU from /usr/bin/time. Logs: perf/<target>-r<round>-<tool>.log.")
w("")
runs = []
for meta in sorted(glob.glob(os.path.join(out, "perf", "*.meta"))):
    m = dict(line.rstrip("\n").split("=", 1) for line in open(meta) if "=" in line)
    log = meta[:-5] + ".log"
    text = open(log, errors="replace").read() if os.path.exists(log) else ""
    fig = {}
    if m["tool"] == "producer":
        found = re.findall(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th", text)
        if found:
            f = found[-1]
            m["summary_line"] = [l for l in text.splitlines() if "records sent" in l][-1].strip()
            fig = {"records": float(f[0]), "MB/s": float(f[2]), "records/s": float(f[1]), "avg latency ms": float(f[3]), "p50 ms": float(f[5]),
                   "p95 ms": float(f[6]), "p99 ms": float(f[7]), "p99.9 ms": float(f[8]), "max latency ms": float(f[4])}
    else:
        rows = [l for l in text.splitlines() if re.match(r"^\d{4}-\d\d-\d\d .*, *[\d.]+, *[\d.]+, *\d+", l)]
        if rows:
            v = [x.strip() for x in rows[-1].split(",")]
            m["summary_line"] = rows[-1].strip()
            fig = {"records": float(v[4]), "MB/s incl. join": float(v[3]), "fetch MB/s": float(v[8]), "records/s incl. join": float(v[5]),
                   "fetch records/s": float(v[9]), "group join ms": float(v[6])}
    if fig:
        gb = fig["records"] * $perf_record_size / 1e9
        if m.get("broker_cpu_s") and gb > 0:
            fig["broker CPU-s/GB"] = float(m["broker_cpu_s"]) / gb
        if m.get("client_cpu_s") and m.get("wall_s") and float(m["wall_s"]) > 0:
            fig["client CPU cores"] = float(m["client_cpu_s"]) / float(m["wall_s"])
    runs.append((m, fig))
runs.sort(key=lambda run: (int(run[0]["round"]), run[0]["target"] != "kafka", run[0]["tool"] != "producer"))
if not runs:
    w("(no perf tool runs: this part did not run)")
else:
    problems = [m for m, fig in runs if m.get("status") != "0" or not fig or fig.get("records", 0) < $perf_records]
    w("| tool | figure | ours | Kafka | ours / Kafka | better |")
    w("|---|---|---|---|---|---|")
    for tool in ("producer", "consumer"):
        keys = []
        for m, fig in runs:
            if m["tool"] == tool:
                keys += [k for k in fig if k not in keys and k != "records"]
        for key in keys:
            vals = {t: spread([fig.get(key) for m, fig in runs if m["tool"] == tool and m["target"] == t]) for t in ("ours", "kafka")}
            w(f"| {tool} | {key} | {cell(vals['ours'])} | {cell(vals['kafka'])} | {ratio(vals['ours'], vals['kafka'])} | {better(key)} |")
    w("")
    w("Summary lines as the tools printed them:")
    w("")
    w("\`\`\`")
    for m, fig in runs:
        w(f"round {m['round']} {m['target']:5} {m['tool']:8}: " + m.get("summary_line", f"(no summary line; exit status {m.get('status')}, see perf/{os.path.basename(m['log'])})"))
    w("\`\`\`")
    for m in problems:
        w(f"- problem: round {m['round']}, {m['target']}, {m['tool']}: exit status {m.get('status')}, see perf/{os.path.basename(m['log'])}")
w("")

# What the brokers logged.
w("## Broker logs")
w("")
def scan(path, pattern):
    try:
        hits = [l.rstrip() for l in open(path, errors="replace") if re.search(pattern, l)]
    except OSError:
        return None
    return hits
for path in sorted(glob.glob(os.path.join(out, "logs", "ours-*.log"))):
    hits = scan(path, r"\b(ERROR|WARN)\b|panicked")
    w(f"- logs/{os.path.basename(path)}: {len(hits)} ERROR/WARN/panic line(s)" + (": first: \`" + re.sub(r"\x1b\[[0-9;]*m", "", hits[0])[:300] + "\`" if hits else ""))
for path in sorted(glob.glob(os.path.join(out, "logs", "kafka-*", "broker-*", "server.log"))):
    hits = scan(path, r"\] (ERROR|FATAL) ")
    rel = os.path.relpath(path, out)
    w(f"- {rel}: {len(hits)} ERROR/FATAL line(s)" + (": first: \`" + hits[0][:300] + "\`" if hits else ""))
try:
    for line in open(os.path.join(out, "logs", "exit-status.txt")):
        name, pid, code, *early = line.split()
        if not name.startswith("ours-"):
            continue
        if early:
            w(f"- our broker {name} (PID {pid}) had exited before the script stopped it (exit status {code}): see logs/{name}.log")
        elif code != "0":
            w(f"- our broker {name} (PID {pid}) exited with status {code} when stopped with SIGTERM (0 expected): see logs/{name}.log")
except OSError:
    pass
w("")
status = "$part_failed"
if status:
    w(f"**The run failed in part '{status}'**: see the output above and the logs.")
else:
    w("Parts completed: " + ", ".join("${parts_done[*]}".split()) + ".")
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
PY
    say "wrote $out/summary.md"
}

# warm_up PART BENCH-ARGS...: one unmeasured round of the part's workloads, so that
# Kafka's JVM has compiled its hot paths (and both brokers have created their first files)
# before anything is measured. Its output goes to PART/warmup/.
warm_up() {
    local part=$1
    shift
    say "part $part: warm-up round (not measured), output in $out/$part/warmup"
    mkdir -p "$out/$part/warmup"
    local size="warm_up_$part[@]"
    run_logged "$out/$part/warmup/bench.txt" taskset -c "$CLIENT_CPUS" "$bench_bin" "$@" --rounds 1 "${!size}" \
        --out "$out/$part/warmup" || die "the warm-up bench failed (exit $?): see $out/$part/warmup/bench.txt and $out/logs"
}

# --- Parts ---------------------------------------------------------------------------------------
bench_common=(--rounds "$rounds" "${bench_size[@]}")

part_single() {
    part_failed=single
    say "part single: one broker each"
    local ours_port kafka_port
    ours_port=$(free_ports 1)
    start_ours ours-single "$ours_port" --override offsets.topic.replication.factor=1 \
        --override group.initial.rebalance.delay.ms=0
    local ours_single_pid=$ours_pid
    kafka_port=$(free_ports 1)
    start_kafka "$out/data/kafka-single" "$kafka_port" 1
    wait_for_brokers "127.0.0.1:$kafka_port" 1
    warm_up single --target "kafka=127.0.0.1:$kafka_port,pid=$kafka_pids" --target "ours=127.0.0.1:$ours_port,pid=$ours_single_pid" \
        --workload produce-1k --workload consume-1k --workload e2e-latency --workload acks-all
    run_logged "$out/single/bench.txt" taskset -c "$CLIENT_CPUS" "$bench_bin" \
        --target "kafka=127.0.0.1:$kafka_port,pid=$kafka_pids" --target "ours=127.0.0.1:$ours_port,pid=$ours_single_pid" \
        --workload produce-1k --workload consume-1k --workload e2e-latency --workload acks-all "${bench_common[@]}" \
        --ceiling --ceiling-seconds "$ceiling_seconds" --ceiling-cpus "${BROKER_CPUS%%[,-]*},${CLIENT_CPUS%%[,-]*}" \
        --ceiling-dir "$out/data" --out "$out/single" ||
        die "the bench failed (exit $?): see $out/single/bench.txt and $out/logs"
    parts_done+=(single)

    part_failed=perf
    say "part perf: Kafka's ProducerPerformance and ConsumerPerformance, $rounds round(s) of $perf_records records"
    mkdir -p "$out/perf"
    cat >"$out/perf/tools-log4j.properties" <<'EOF'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
    local round target bootstrap pids topic
    for ((round = 1; round <= rounds; round++)); do
        for target in kafka ours; do
            if [[ $target == kafka ]]; then
                bootstrap=127.0.0.1:$kafka_port pids=$kafka_pids
            else
                bootstrap=127.0.0.1:$ours_port pids=$ours_single_pid
            fi
            topic=perf-$target-r$round-$$
            tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$topic" \
                --partitions "$perf_partitions" --replication-factor 1 >"$out/perf/$target-r$round-create.log" 2>&1 ||
                die "creating $topic on $target failed: see $out/perf/$target-r$round-create.log"
            perf_run producer "$round" "$target" "$pids" org.apache.kafka.tools.ProducerPerformance --topic "$topic" \
                --num-records "$perf_records" --record-size "$perf_record_size" --throughput -1 \
                --producer-props "bootstrap.servers=$bootstrap" acks=1 client.id=perf-producer
            perf_run consumer "$round" "$target" "$pids" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$bootstrap" \
                --topic "$topic" --messages "$perf_records" --timeout 30000 --group "perf-$target-r$round-$$"
            tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --delete --topic "$topic" \
                >>"$out/perf/$target-r$round-create.log" 2>&1 || say "deleting $topic on $target failed: see $out/perf/$target-r$round-create.log"
        done
    done
    parts_done+=(perf)
    part_failed=
    say "part single/perf done: stopping its brokers"
    stop_part
    rm -rf "$out/data/ours-single" "$out/data/kafka-single"
}

# perf_run TOOL ROUND TARGET PIDS MAIN ARGS...: one Kafka tool run, its log and a .meta with the
# broker's CPU seconds, the client's CPU seconds and the wall time. A tool that fails is recorded,
# not fatal: the comparison goes on and summary.md names it.
perf_run() {
    local name=$1 round=$2 target=$3 pids=$4 main=$5
    shift 5
    local base=$out/perf/$target-r$round-$name
    local cpu_before cpu_after status=0 started=$SECONDS
    say "[round $round/$rounds] $target $name"
    cpu_before=$(cpu_seconds "$pids")
    run_logged "$base.log" taskset -c "$CLIENT_CPUS" /usr/bin/time -o "$base.time" -f '%e %U %S' \
        java -Xms512m -Xmx512m -Dlog4j.configuration="file:$out/perf/tools-log4j.properties" -cp "$libs/*" "$main" "$@" || status=$?
    cpu_after=$(cpu_seconds "$pids")
    local wall user system
    read -r wall user system <"$base.time" 2>/dev/null || true
    # /usr/bin/time writes "Command exited with non-zero status N" first on failure.
    [[ $wall =~ ^[0-9.]+$ ]] || read -r wall user system < <(tail -1 "$base.time")
    {
        echo "tool=$name"
        echo "round=$round"
        echo "target=$target"
        echo "status=$status"
        echo "log=$base.log"
        echo "broker_cpu_s=$(python3 -c "print($cpu_after - $cpu_before)")"
        echo "client_cpu_s=$(python3 -c "print(${user:-0} + ${system:-0})")"
        echo "wall_s=${wall:-0}"
    } >"$base.meta"
    [[ $status -eq 0 ]] || say "$target $name exited with status $status: see $base.log"
}

part_rf3() {
    part_failed=rf3
    say "part rf3: three brokers each, replication factor 3, acks=all"
    start_zookeeper "$out/data/zookeeper-ours"
    local base i pids=() bootstrap=
    base=$(free_ports 3)
    for i in 0 1 2; do
        start_ours "ours-rf3-$i" $((base + i)) --override "zookeeper.connect=127.0.0.1:$zk_port/ours" --override "broker.id=$i" \
            --override group.initial.rebalance.delay.ms=0
        pids+=("$ours_pid")
        bootstrap+=${bootstrap:+,}127.0.0.1:$((base + i))
    done
    wait_for_brokers "127.0.0.1:$base" 3
    local ours_bootstrap=$bootstrap ours_pids
    ours_pids=$(IFS=+; echo "${pids[*]}")
    local kafka_port
    kafka_port=$(free_ports 3)
    start_kafka "$out/data/kafka-rf3" "$kafka_port" 3
    wait_for_brokers "127.0.0.1:$kafka_port" 3
    local kafka_bootstrap="127.0.0.1:$kafka_port,127.0.0.1:$((kafka_port + 1)),127.0.0.1:$((kafka_port + 2))"
    warm_up rf3 --target "kafka=$kafka_bootstrap,pid=$kafka_pids" --target "ours=$ours_bootstrap,pid=$ours_pids" \
        --workload acks-all --replication-factor 3
    run_logged "$out/rf3/bench.txt" taskset -c "$CLIENT_CPUS" "$bench_bin" \
        --target "kafka=$kafka_bootstrap,pid=$kafka_pids" --target "ours=$ours_bootstrap,pid=$ours_pids" \
        --workload acks-all --replication-factor 3 "${bench_common[@]}" --out "$out/rf3" ||
        die "the bench failed (exit $?): see $out/rf3/bench.txt and $out/logs"
    parts_done+=(rf3)
    part_failed=
    say "part rf3 done: stopping its brokers"
    stop_part
    rm -rf "$out"/data/ours-rf3-* "$out/data/kafka-rf3" "$out/data/zookeeper-ours"
}

say "rounds $rounds, $( ((quick)) && echo quick || echo full) sizes, brokers on CPU(s) $BROKER_CPUS, load generators on CPU(s) $CLIENT_CPUS, output in $out"
part_single
part_rf3
say "all parts done in $((SECONDS - started_seconds)) s"
