#!/usr/bin/env bash
# What authorisation costs the hot path (issue 20): the same binary twice in one bench run, rounds
# alternating, one broker without an authorizer and one with `authorizer.class.name` set, no super
# user and a few hundred ACLs (COUNT, default 300: other users' literal and prefixed topic and group
# ACLs, some of them prefixes of the bench's topic names, plus the ALLOWs the bench's principal
# User:ANONYMOUS needs: ALL on the cluster, on every topic and every group). Both brokers pinned to
# CPU 0 (one shard each), the bench on CPU 1. The ACLs are written into the second broker's
# `acls.json` before it starts (the file the standalone store keeps).
# Each produce-1k sends MESSAGES records of 1 KiB (default 2,000,000: about 340 MiB per partition
# of 6), under a retention of 1 GiB per partition: nothing is deleted while consume-1k reads the
# round's records back (with 256 MiB, retention deleted records under the reader and the consumer
# stalled). The bench deletes each round's topic, so a broker holds one round's data at most.
# Run from the repository root after `cargo build --release -p broker -p bench`; hold
# /tmp/build.lock meanwhile on a shared machine:  flock /tmp/build.lock bash bench/tools/acl_cost.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rounds=${ROUNDS:-3}
count=${COUNT:-300}
messages=${MESSAGES:-2000000}
WORK=$(mktemp -d /tmp/acl-cost.XXXXXX)
dir=$WORK
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
bounded=(--override log.retention.bytes=1073741824 --override log.segment.bytes=67108864
    --override log.retention.check.interval.ms=1000 --override log.segment.delete.delay.ms=1000)
start_broker off "${bounded[@]}"
p_off=$BROKER_PORT off=$BROKER_PID
start_broker on "${bounded[@]}" --override authorizer.class.name=kafka.security.authorizer.AclAuthorizer
p_on=$BROKER_PORT on=$BROKER_PID
grep -o "authorizer on.*" "$dir/on.log"
pin_client "$BENCH_BIN" --target off=127.0.0.1:$p_off,pid=$off --target acls=127.0.0.1:$p_on,pid=$on \
    --workload produce-1k --workload consume-1k --rounds "$rounds" --message-count "$messages" --out "$dir/out"
echo "results in $dir/out"
