#!/usr/bin/env bash
# A transaction's latency in a 3-broker cluster of ours, two builds alternating round by round
# (before, after): txn_round_trips.py (confluent-kafka: begin, RECORDS sends, commit, in a loop)
# against a fresh cluster of each build per round. The topic has 6 partitions of RF 1 led by all
# three brokers, so each transaction's markers go to other brokers (WriteTxnMarkers) and its
# partitions' leaders verify it with the coordinator's broker (KIP-890): what the inter-broker
# connection pool (broker/src/inter_broker/) changes.
#
#   bench/tools/txn_cluster_cost.sh --before-binary PATH [--after-binary PATH] [--rounds 3]
#                                   [--transactions 1000] [--records 10]
#                                   [--inter-broker plaintext|sasl_ssl] [--out /tmp/txn-cluster-cost]
#
# --inter-broker sasl_ssl: clients stay on a PLAINTEXT listener, the brokers talk to each other
# over a SASL_SSL listener (PLAIN, a test CA made here with openssl), so every broker-to-broker
# connection costs a TLS handshake and a SASL exchange. All brokers (one shard each) and ZooKeeper
# on CPU 0, the client on CPU 1. Builds nothing (--after-binary defaults to target/release/broker).
# Every process it starts is stopped by its PID on exit; data dirs are removed after each run.
# Writes OUT/<label>-<round>.txt and prints a summary (medians of each run).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
before=
after=$repo/target/release/broker
rounds=3
transactions=1000
records=10
inter_broker=plaintext
out=/tmp/txn-cluster-cost
libs=$repo/tests/java/target/kafka-libs
[[ -d $libs ]] || libs=/work/main/tests/java/target/kafka-libs
python=$repo/tests/clients/.venv/bin/python
while [[ $# -gt 0 ]]; do
    case $1 in
        --before-binary) before=$2; shift 2 ;;
        --after-binary) after=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --transactions) transactions=$2; shift 2 ;;
        --records) records=$2; shift 2 ;;
        --inter-broker) inter_broker=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
        *) echo "txn_cluster_cost.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ -x $before && -x $after ]] || { echo "txn_cluster_cost.sh: --before-binary and --after-binary must be executables" >&2; exit 2; }
case $inter_broker in plaintext|sasl_ssl) ;; *) echo "--inter-broker plaintext|sasl_ssl" >&2; exit 2 ;; esac

rm -rf "$out"
mkdir -p "$out"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
broker_pids=()
cleanup() {
    for pid in "${broker_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${broker_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    "$repo/bench/kafka/kafka.sh" stop --dir "$out/zk" >/dev/null 2>&1 || true
    rm -rf "$out/data"
}
trap cleanup EXIT

jaas='org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret";'
if [[ $inter_broker == sasl_ssl ]]; then
    certs=$out/certs
    mkdir -p "$certs"
    (
        cd "$certs"
        ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >broker.ext
        openssl req "${ec[@]}" -keyout broker.key -out broker.csr -subj /CN=localhost 2>/dev/null
        openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile broker.ext -out broker.crt 2>/dev/null
        cat broker.key broker.crt >broker-keystore.pem
    )
fi

zk_port=$(free_port)
"$repo/bench/kafka/kafka.sh" start --brokers 0 --dir "$out/zk" --zk-port "$zk_port" --cpus 0 --libs "$libs" >&2

# run LABEL BINARY ROUND: a fresh cluster of BINARY in its own chroot, the measurement, the stop.
run() {
    local label=$1 binary=$2 round=$3
    local chroot=/$label-$round ports=() logs=() i
    broker_pids=()
    for i in 0 1 2; do
        local port internal data=$out/data/$label-$round-$i
        port=$(free_port)
        ports+=("$port")
        mkdir -p "$data"
        local keys=(--override "log.dirs=$data" --override "zookeeper.connect=127.0.0.1:$zk_port$chroot" --override "broker.id=$((i + 1))")
        if [[ $inter_broker == sasl_ssl ]]; then
            internal=$(free_port)
            keys+=(--override "listeners=CLIENT://127.0.0.1:$port,INTERNAL://127.0.0.1:$internal"
                --override "listener.security.protocol.map=CLIENT:PLAINTEXT,INTERNAL:SASL_SSL"
                --override "inter.broker.listener.name=INTERNAL" --override "sasl.enabled.mechanisms=PLAIN"
                --override "sasl.mechanism.inter.broker.protocol=PLAIN"
                --override "listener.name.internal.plain.sasl.jaas.config=$jaas"
                --override "ssl.keystore.type=PEM" --override "ssl.keystore.location=$certs/broker-keystore.pem"
                --override "ssl.truststore.type=PEM" --override "ssl.truststore.location=$certs/ca.crt")
        else
            keys+=(--override "listeners=PLAINTEXT://127.0.0.1:$port")
        fi
        logs+=("$out/$label-$round-broker-$i.log")
        RUST_LOG=info,glommio=warn taskset -c 0 "$binary" --cpus 0 "${keys[@]}" </dev/null >"${logs[$i]}" 2>&1 &
        broker_pids+=($!)
    done
    local deadline=$((SECONDS + 60))
    for i in 0 1 2; do
        until grep -q "broker ready" "${logs[$i]}"; do
            kill -0 "${broker_pids[$i]}" 2>/dev/null || { tail -20 "${logs[$i]}" >&2; echo "broker $i of $label exited" >&2; exit 1; }
            [[ $SECONDS -lt $deadline ]] || { echo "broker $i of $label not ready: ${logs[$i]}" >&2; exit 1; }
            sleep 0.2
        done
    done
    local bootstrap
    bootstrap=$(printf '127.0.0.1:%s,' "${ports[@]}")
    bootstrap=${bootstrap%,}
    until kcat -b "$bootstrap" -L -m 5 2>/dev/null | grep -qE "^ *3 brokers:"; do
        [[ $SECONDS -lt $deadline ]] || { echo "the $label cluster never listed 3 brokers" >&2; exit 1; }
        sleep 0.2
    done
    TRANSACTIONS=$transactions RECORDS=$records taskset -c 1 "$python" "$here/txn_round_trips.py" "$label=$bootstrap" | tee "$out/$label-$round.txt"
    for pid in "${broker_pids[@]}"; do kill -TERM "$pid"; done
    for pid in "${broker_pids[@]}"; do wait "$pid" || true; done
    broker_pids=()
    rm -rf "$out/data"
}

for round in $(seq 1 "$rounds"); do
    run before "$before" "$round"
    run after "$after" "$round"
done

echo "== summary ($rounds rounds, $transactions transactions of $records records, inter-broker $inter_broker)"
for label in before after; do
    for round in $(seq 1 "$rounds"); do
        echo "$label-$round: $(grep -E '^  (cycle|commit|Produce)' "$out/$label-$round.txt" | sed 's/  */ /g' | paste -sd';')"
    done
done
