#!/usr/bin/env bash
# What authorisation costs the hot path (issue 20): the same binary twice in one bench run, rounds
# alternating, one broker without an authorizer and one with `authorizer.class.name` set, no super
# user and a few hundred ACLs (COUNT, default 300: other users' literal and prefixed topic and group
# ACLs, some of them prefixes of the bench's topic names, plus the ALLOWs the bench's principal
# User:ANONYMOUS needs: ALL on the cluster, on every topic and every group). Both brokers pinned to
# CPU 0 (one shard each), the bench on CPU 1. The ACLs are written into the second broker's
# `acls.json` before it starts (the file the standalone store keeps).
# Run from the repository root after `cargo build --release -p broker -p bench`; hold
# /tmp/build.lock meanwhile on a shared machine:  flock /tmp/build.lock bash bench/tools/acl_cost.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=${ROUNDS:-3}
count=${COUNT:-300}
dir=$(mktemp -d /tmp/acl-cost.XXXXXX)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
p_off=$(free_port); p_on=$(free_port)
mkdir -p "$dir/on"
python3 - "$dir/on/acls.json" "$count" <<'PY'
import json, sys
path, count = sys.argv[1], int(sys.argv[2])
def node(kind, pattern, name, acls):
    return {"resourceType": kind, "patternType": pattern, "name": name, "acls": acls}
def acl(principal, operation, permission="Allow"):
    return {"principal": principal, "permissionType": permission, "operation": operation, "host": "*"}
nodes = [
    node("Cluster", "Literal", "kafka-cluster", [acl("User:ANONYMOUS", "All")]),
    node("Topic", "Literal", "*", [acl("User:ANONYMOUS", "All")]),
    node("Group", "Literal", "*", [acl("User:ANONYMOUS", "All")]),
]
for i in range(count - 3):
    kind = ["Topic", "Group"][i % 2]
    # Prefixes of the bench's names (bench-...) among them, so every decision walks some.
    name = ["bench", "b", "be", "ben"][i % 4] + f"-{i}" if i % 3 else "bench"[: 1 + i % 5]
    pattern = "Prefixed" if i % 3 == 0 else "Literal"
    nodes.append(node(kind, pattern, name, [acl(f"User:user-{i}", ["Read", "Write", "Describe"][i % 3], ["Allow", "Deny"][i % 5 == 0])]))
json.dump(nodes, open(path, "w"))
print(f"{sum(len(n['acls']) for n in nodes)} ACLs written to {path}")
PY
# A run writes about 5 GB per broker: retention keeps each broker's disk use near 2 GB.
bounded=(--override log.retention.bytes=268435456 --override log.segment.bytes=67108864
    --override log.retention.check.interval.ms=1000 --override log.segment.delete.delay.ms=1000)
./target/release/broker --cpus 0 "${bounded[@]}" --override listeners=PLAINTEXT://127.0.0.1:$p_off --override log.dirs=$dir/off 2>"$dir/off.log" &
off=$!
./target/release/broker --cpus 0 "${bounded[@]}" --override listeners=PLAINTEXT://127.0.0.1:$p_on --override log.dirs=$dir/on \
    --override authorizer.class.name=kafka.security.authorizer.AclAuthorizer 2>"$dir/on.log" &
on=$!
cleanup() {
    kill "$off" "$on" 2>/dev/null
    wait "$off" "$on" 2>/dev/null || true
    rm -rf "$dir/off" "$dir/on"
}
trap cleanup EXIT
for log in "$dir/off.log" "$dir/on.log"; do
    for _ in $(seq 100); do grep -q "broker ready" "$log" && break; sleep 0.1; done
done
grep -o "authorizer on.*" "$dir/on.log"
taskset -c 1 ./target/release/bench --target off=127.0.0.1:$p_off,pid=$off --target acls=127.0.0.1:$p_on,pid=$on \
    --workload produce-1k --workload consume-1k --rounds "$rounds" --out "$dir/out"
echo "results in $dir/out"
