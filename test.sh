#!/usr/bin/env bash
# The whole test suite: README's second command, and what .ci/run calls. Installs the
# third-party Kafka clients the end-to-end tests drive (kcat, confluent-kafka, kafka-python,
# kafkajs) if they are missing.
set -euo pipefail
cd "$(dirname "$0")"
bash tests/clients/setup.sh
cargo build --release -p broker -p bench
cargo test --workspace --release
