#!/usr/bin/env bash
# The whole test suite: README's second command, and what .ci/run calls. Installs the
# third-party Kafka clients the end-to-end tests drive (kcat, confluent-kafka, kafka-python,
# kafkajs) if they are missing. The Java step (tests/java/run.sh) runs Apache Kafka 3.9's own Java
# clients, CLI tools and Kafka Streams against the broker; Maven fetches them from Maven Central
# on the first run and caches them in ~/.m2.
set -euo pipefail
cd "$(dirname "$0")"
bash tests/clients/setup.sh
cargo build --release -p broker -p bench
cargo test --workspace --release
bash tests/java/run.sh
