#!/usr/bin/env bash
# The Java step of ./test.sh: Apache Kafka 3.9's own Java clients, CLI tools and Kafka Streams
# against our broker (target/release/broker, built first by test.sh). Maven fetches Kafka and its
# plugins from Maven Central on the first run (cached in ~/.m2 after); the same fetch puts the
# runtime jars in target/kafka-libs/ for bench/kafka/kafka.sh. Extra arguments go to both mvn
# calls (e.g. -Dmaven.repo.local=/tmp/m2-cold, -Dtest=ProducerTest).
# Prints Surefire's per-class lines and its summary line last; the whole Maven log on failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
broker=$(cd ../.. && pwd)/target/release/broker
if [[ ! -x $broker ]]; then
    echo "$broker is missing: cargo build --release -p broker" >&2
    exit 1
fi
mkdir -p target
rm -rf target/broker-logs
echo "tests/java: Apache Kafka 3.9 Java clients, CLI tools and Streams against $broker"
# (Debian's Maven 3.8 prints colour resets even in batch mode: its output goes to files.)
log=target/mvn-fetch.log
if ! mvn -q -B -ntp "$@" dependency:copy-dependencies >"$log" 2>&1; then
    cat "$log"
    echo "tests/java: Maven could not fetch the dependencies" >&2
    exit 1
fi
log=target/mvn-test.log
if mvn -B -ntp "$@" test -Dbroker.binary="$broker" >"$log" 2>&1; then
    grep -E '^\[[A-Z]+\] Tests run: ' "$log"
else
    status=$?
    cat "$log"
    echo "Java tests failed: broker logs in $(pwd)/target/broker-logs, client logs in $(pwd)/target/surefire-reports" >&2
    exit $status
fi
