#!/usr/bin/env bash
# A real Apache Kafka 3.9 broker (ZooKeeper mode) beside ours, for benchmarks and comparisons,
# from the jars that tests/java's Maven project brings (no tarball): Debian's ZooKeeper
# (/usr/share/java/zookeeper.jar) plus N Kafka brokers, all on 127.0.0.1.
#
#   bench/kafka/kafka.sh start [--port 19092] [--dir /tmp/kafka-bench] [--brokers 1]
#                              [--cpus 1] [--heap 1G] [--zk-port PORT] [--libs DIR]
#                              [--property KEY=VALUE ...] [--keep-data]
#   bench/kafka/kafka.sh stop  [--dir /tmp/kafka-bench]
#   bench/kafka/kafka.sh status [--dir /tmp/kafka-bench]
#
# start: broker i (0..N-1) listens on PORT+i with broker.id i and data in DIR/broker-i; the
# ZooKeeper server on --zk-port (default: a free port) with data in DIR/zookeeper. --cpus pins
# every process with `taskset -c CPUS`. Prints the PIDs and writes them to DIR/pids; waits until
# each broker accepts connections and has logged that it started (bounded: a timeout names the
# log to read). --brokers 0 starts the ZooKeeper server alone (compare.sh's, for our cluster).
# --property (repeatable) appends a line to every broker's server.properties, after the defaults
# (e.g. file.delete.delay.ms=1000, so deleted topics leave the disk at once between runs).
# --keep-data: start on the data a previous start left in DIR (ZooKeeper's and every broker's)
# instead of recreating it: a restart over existing topics (tuning.md's 10,000 partitions). A
# broker killed with SIGKILL leaves its registration (/brokers/ids/N, an ephemeral of its
# ZooKeeper session) until that session expires, and Kafka refuses to start beside it
# (NODEEXISTS): start waits for it to go (bounded) and says how long it waited. Each broker's line
# says how long it took from the JVM's launch to ready.
# stop: SIGTERM to exactly the PIDs in DIR/pids (brokers first, then ZooKeeper),
# SIGKILL after 30 s, and checks that none is left. The jars: `(cd tests/java && mvn -q -B
# dependency:copy-dependencies)` fills tests/java/target/kafka-libs (start runs it if missing).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

ZOOKEEPER_JAR=/usr/share/java/zookeeper.jar
SLF4J_BINDING=/usr/share/java/slf4j-simple.jar
START_TIMEOUT=${KAFKA_START_TIMEOUT:-60}   # seconds, per process
STOP_TIMEOUT=30

port=19092
dir=${TMPDIR:-/tmp}/kafka-bench
brokers=1
cpus=
heap=1G
zk_port=
libs=$repo/tests/java/target/kafka-libs
properties=()
keep_data=0

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "kafka.sh: $*" >&2
    exit 1
}

[[ $# -ge 1 ]] || usage
command=$1
shift
while [[ $# -gt 0 ]]; do
    case $1 in
        --port) port=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --brokers) brokers=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --heap) heap=$2; shift 2 ;;
        --zk-port) zk_port=$2; shift 2 ;;
        --libs) libs=$2; shift 2 ;;
        --keep-data) keep_data=1; shift ;;
        --property) [[ ${2:-} == *=* ]] || die "--property ${2:-}: expected KEY=VALUE"; properties+=("$2"); shift 2 ;;
        -h|--help) usage ;;
        *) echo "kafka.sh: unknown argument $1" >&2; usage ;;
    esac
done
[[ $port =~ ^[0-9]+$ ]] || die "--port $port: not a number"
[[ $brokers =~ ^[0-9]+$ ]] || die "--brokers $brokers: not a number"
[[ -z $zk_port || $zk_port =~ ^[0-9]+$ ]] || die "--zk-port $zk_port: not a number"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pid_file=$dir/pids

# True while something accepts TCP connections on 127.0.0.1:$1.
accepts() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# ZooKeeper's four-letter ruok; 3.8.0 may never answer a probe sent during start-up: time-boxed.
zk_ok() {
    [[ $(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; printf ruok >&3; cat <&3" 2>/dev/null) == imok ]]
}

# Seconds since the epoch, with fractions (readiness times).
now_s() {
    date +%s.%N
}

# ZooKeeper's ephemeral nodes (four-letter dump), time-boxed like zk_ok.
zk_ephemerals() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; printf dump >&3; cat <&3" 2>/dev/null
}

# Waits until no ephemeral /brokers/ids/N of a killed broker is left for the brokers about to start.
# A dump without its ephemerals section (ZooKeeper still loading, or the 3.8.0 probe that is
# never answered) proves nothing: asked again.
wait_for_dead_registrations() {
    local zk_port=$1 started=$SECONDS deadline=$((SECONDS + 120)) i dump registered seen=
    while :; do
        dump=$(zk_ephemerals "$zk_port") || true
        if [[ $dump == *"Sessions with Ephemerals"* ]]; then
            registered=
            for ((i = 0; i < brokers; i++)); do
                grep -qx "[[:space:]]*/brokers/ids/$i" <<<"$dump" && registered+=" $i"
            done
            [[ -z $registered ]] && break
            seen=$registered
        fi
        [[ $SECONDS -lt $deadline ]] || false_start "broker(s)${registered:- ?} still registered in ZooKeeper after 120 s"
        sleep 0.5
    done
    if [[ -n $seen ]]; then
        echo "waited $((SECONDS - started)) s for the ZooKeeper session of killed broker(s)$seen to expire"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The command line of a live PID that we started (its cmdline names $dir), else nothing.
ours() {
    local pid=$1 cmdline
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $cmdline == *"$dir"* ]]
}

# Stops every PID in the pid file; returns non-zero if any survived.
stop_all() {
    [[ -f $pid_file ]] || { echo "kafka.sh: no $pid_file: nothing to stop"; return 0; }
    local name pid left=0
    # Brokers first (they deregister from ZooKeeper on SIGTERM), then ZooKeeper.
    for order in broker zookeeper; do
        local waiting=()
        while read -r name pid _; do
            [[ $name == "$order"* ]] || continue
            if ours "$pid"; then
                kill -TERM "$pid" 2>/dev/null || true
                waiting+=("$name:$pid")
            fi
        done <"$pid_file"
        local deadline=$((SECONDS + STOP_TIMEOUT))
        for entry in "${waiting[@]}"; do
            pid=${entry#*:}
            while ours "$pid" && [[ $SECONDS -lt $deadline ]]; do sleep 0.2; done
            if ours "$pid"; then
                echo "kafka.sh: ${entry%%:*} (PID $pid) still runs ${STOP_TIMEOUT}s after SIGTERM: SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.5
            fi
            if ours "$pid"; then
                echo "kafka.sh: ${entry%%:*} (PID $pid) survived SIGKILL" >&2
                left=1
            else
                echo "stopped ${entry%%:*} PID $pid"
            fi
        done
    done
    [[ $left -eq 0 ]] && rm -f "$pid_file"
    return $left
}

start_all() {
    [[ -f $pid_file ]] && die "$pid_file exists: run 'kafka.sh stop --dir $dir' first"
    command -v java >/dev/null || die "java is missing (apt-get install default-jre-headless)"
    [[ -f $ZOOKEEPER_JAR ]] || die "$ZOOKEEPER_JAR is missing (apt-get install zookeeper)"
    if ! compgen -G "$libs/kafka_2.13-3.9*.jar" >/dev/null; then
        echo "kafka.sh: no Kafka 3.9 jars in $libs: fetching them with Maven (tests/java)" >&2
        (cd "$repo/tests/java" && mvn -q -B dependency:copy-dependencies) || die "mvn dependency:copy-dependencies failed"
    fi
    compgen -G "$libs/kafka_2.13-3.9*.jar" >/dev/null || die "no kafka_2.13-3.9*.jar in $libs"
    local pin=()
    if [[ -n $cpus ]]; then
        command -v taskset >/dev/null || die "taskset is missing (util-linux)"
        pin=(taskset -c "$cpus")
    fi
    for ((i = 0; i < brokers; i++)); do
        accepts $((port + i)) && die "127.0.0.1:$((port + i)) is already taken"
    done
    [[ -n $zk_port ]] || zk_port=$(free_port)
    accepts "$zk_port" && die "127.0.0.1:$zk_port (ZooKeeper) is already taken"
    : >"$pid_file"

    # ZooKeeper, standalone, on loopback.
    local zk=$dir/zookeeper
    ((keep_data)) || rm -rf "$zk"
    mkdir -p "$zk/data"
    cat >"$zk/zoo.cfg" <<EOF
tickTime=2000
dataDir=$zk/data
clientPort=$zk_port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=*
maxClientCnxns=0
EOF
    nohup "${pin[@]}" java -Xms256m -Xmx256m -Dzookeeper.jmx.log4j.disable=true \
        -cp "$ZOOKEEPER_JAR:$SLF4J_BINDING" org.apache.zookeeper.server.ZooKeeperServerMain "$zk/zoo.cfg" \
        </dev/null >"$zk/zookeeper.log" 2>&1 &
    local zk_pid=$!
    echo "zookeeper $zk_pid $zk_port" >>"$pid_file"
    local deadline=$((SECONDS + START_TIMEOUT))
    until zk_ok "$zk_port"; do
        kill -0 "$zk_pid" 2>/dev/null || { tail -20 "$zk/zookeeper.log" >&2; false_start "ZooKeeper exited at start: see $zk/zookeeper.log"; }
        [[ $SECONDS -lt $deadline ]] || false_start "ZooKeeper did not answer ruok on 127.0.0.1:$zk_port within ${START_TIMEOUT}s: see $zk/zookeeper.log"
        sleep 0.2
    done
    echo "zookeeper PID $zk_pid on 127.0.0.1:$zk_port"
    ((keep_data)) && wait_for_dead_registrations "$zk_port"

    local internal_rf=$((brokers < 3 ? brokers : 3))
    local pids=() launched=()
    for ((i = 0; i < brokers; i++)); do
        local b=$dir/broker-$i p=$((port + i))
        if ((keep_data)); then
            # The log4j file appends: the previous run's "started" line must not count as ready.
            [[ -f $b/server.log ]] && mv "$b/server.log" "$b/server.log.previous"
        else
            rm -rf "$b"
        fi
        mkdir -p "$b/logs"
        cat >"$b/server.properties" <<EOF
broker.id=$i
listeners=PLAINTEXT://127.0.0.1:$p
advertised.listeners=PLAINTEXT://127.0.0.1:$p
log.dirs=$b/logs
zookeeper.connect=127.0.0.1:$zk_port
zookeeper.connection.timeout.ms=18000
num.partitions=1
offsets.topic.replication.factor=$internal_rf
transaction.state.log.replication.factor=$internal_rf
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
EOF
        for property in ${properties[@]+"${properties[@]}"}; do echo "$property" >>"$b/server.properties"; done
        cat >"$b/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$b/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.zookeeper=WARN
EOF
        # kafka-server-start.sh's JVM options (KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS).
        nohup "${pin[@]}" java -Xms"$heap" -Xmx"$heap" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 \
            -Djava.awt.headless=true -Dlog4j.configuration="file:$b/log4j.properties" -Dkafka.logs.dir="$b" \
            -cp "$libs/*" kafka.Kafka "$b/server.properties" \
            </dev/null >"$b/stdout.log" 2>&1 &
        pids[i]=$!
        launched[i]=$(now_s)
        echo "broker-$i ${pids[i]} $p" >>"$pid_file"
    done
    for ((i = 0; i < brokers; i++)); do
        local b=$dir/broker-$i p=$((port + i))
        deadline=$((SECONDS + START_TIMEOUT))
        until accepts "$p" && grep -q "\[KafkaServer id=$i\] started" "$b/server.log" 2>/dev/null; do
            if ! kill -0 "${pids[i]}" 2>/dev/null; then
                tail -20 "$b/server.log" "$b/stdout.log" >&2 2>/dev/null || true
                false_start "broker $i exited at start: see $b/server.log and $b/stdout.log"
            fi
            [[ $SECONDS -lt $deadline ]] || false_start "broker $i not ready on 127.0.0.1:$p within ${START_TIMEOUT}s: see $b/server.log and $b/stdout.log"
            sleep 0.2
        done
        local ready_s
        ready_s=$(python3 -c "print(f'{$(now_s) - ${launched[i]}:.1f}')")
        echo "broker-$i PID ${pids[i]} on 127.0.0.1:$p (data $b/logs, log $b/server.log): ready $ready_s s after launch"
    done
    echo "PIDs in $pid_file; stop with: $0 stop --dir $dir"
}

# Reports why the start failed, stops what it started, exits.
false_start() {
    echo "kafka.sh: $*" >&2
    echo "kafka.sh: start failed; stopping what was started" >&2
    stop_all >&2 || true
    exit 1
}

status_all() {
    [[ -f $pid_file ]] || { echo "not running (no $pid_file)"; return 1; }
    local name pid p rc=0
    while read -r name pid p; do
        if ours "$pid"; then echo "$name PID $pid on 127.0.0.1:$p: running"; else echo "$name PID $pid: gone"; rc=1; fi
    done <"$pid_file"
    return $rc
}

case $command in
    start) start_all ;;
    stop) stop_all ;;
    status) status_all ;;
    *) usage ;;
esac
