# What the bench scripts share (sourced, not run): our brokers started pinned and waited for,
# stopped by their PIDs on exit, their data deleted; the bench and clients pinned beside them.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"      # from bench/tools; ops/ uses ../bench/tools
#   WORK=$(mktemp -d /tmp/x.XXXXXX)                      # where brokers keep data and logs
#   start_broker off --override log.retention.bytes=...  # sets BROKER_PORT, BROKER_PID
#   pin_client ./target/release/bench --target off=127.0.0.1:$BROKER_PORT,pid=$BROKER_PID ...
#
# Sourcing it enters the repository root and sets an EXIT trap (`cleanup`): it runs the commands
# given to `at_exit` (last first), then stops every process given to `track_pid` or started by
# `start_broker` (SIGTERM, SIGKILL after STOP_TIMEOUT_S), then deletes the data directories of
# the brokers it started (their logs stay in $WORK). A script must not set its own EXIT trap.
# Pinning (as tuning.md's same-run comparisons do): brokers on BROKER_CPUS (default 0, `--cpus`,
# one shard, and `taskset`), the bench or client on CLIENT_CPUS (default 1).

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
BROKER_CPUS=${BROKER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
BROKER_BIN=${BROKER_BIN:-$REPO/target/release/broker}
BENCH_BIN=${BENCH_BIN:-$REPO/target/release/bench}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-60}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-30}
WORK=${WORK:-}
LIB_PIDS=()
LIB_DATA_DIRS=()
LIB_AT_EXIT=()

lib_die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# pin_client CMD...: runs CMD on the client's CPUs.
pin_client() {
    taskset -c "$CLIENT_CPUS" "$@"
}

track_pid() {
    LIB_PIDS+=("$1")
}

# at_exit 'COMMAND': run by the EXIT trap before the tracked processes are stopped.
at_exit() {
    LIB_AT_EXIT+=("$1")
}

# wait_ready LOG PID [TEXT]: until LOG shows TEXT (default "broker ready"); fails if PID exits
# first or READY_TIMEOUT_S passes.
wait_ready() {
    local log=$1 pid=$2 text=${3:-broker ready}
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until grep -q "$text" "$log" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; lib_die "PID $pid exited at start: see $log"; }
        [[ $SECONDS -lt $deadline ]] || lib_die "PID $pid did not log '$text' within ${READY_TIMEOUT_S}s: see $log"
        sleep 0.1
    done
}

# start_broker NAME [--binary PATH] [broker arguments...]: our broker (BROKER_BIN unless
# --binary) pinned to BROKER_CPUS, data in $WORK/NAME, log in $WORK/NAME.log, PLAINTEXT on a
# free port unless the arguments set `listeners` themselves; returns once it is ready. Sets
# BROKER_PORT and BROKER_PID.
start_broker() {
    local name=$1 binary=$BROKER_BIN
    shift
    if [[ ${1:-} == --binary ]]; then
        binary=$2
        shift 2
    fi
    [[ -n $WORK ]] || lib_die "start_broker: set WORK first"
    [[ -x $binary ]] || lib_die "$binary is missing (cargo build --release -p broker -p bench)"
    local listeners=()
    BROKER_PORT=$(free_port)
    [[ " $* " == *" listeners="* ]] || listeners=(--override "listeners=PLAINTEXT://127.0.0.1:$BROKER_PORT")
    mkdir -p "$WORK"
    RUST_LOG=${RUST_LOG:-info,glommio=warn} taskset -c "$BROKER_CPUS" "$binary" --cpus "$BROKER_CPUS" \
        ${listeners[@]+"${listeners[@]}"} --override "log.dirs=$WORK/$name" "$@" </dev/null >"$WORK/$name.log" 2>&1 &
    BROKER_PID=$!
    track_pid "$BROKER_PID"
    LIB_DATA_DIRS+=("$WORK/$name")
    wait_ready "$WORK/$name.log" "$BROKER_PID"
}

# stop_pids PID...: SIGTERM, then SIGKILL for whatever still runs after STOP_TIMEOUT_S.
stop_pids() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "$(basename "$0"): PID $pid still runs ${STOP_TIMEOUT_S}s after SIGTERM: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local i
    for ((i = ${#LIB_AT_EXIT[@]} - 1; i >= 0; i--)); do eval "${LIB_AT_EXIT[i]}" || true; done
    stop_pids ${LIB_PIDS[@]+"${LIB_PIDS[@]}"}
    # The brokers' data (gigabytes after a throughput run); their logs stay.
    rm -rf ${LIB_DATA_DIRS[@]+"${LIB_DATA_DIRS[@]}"}
}
trap cleanup EXIT
