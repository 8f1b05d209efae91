#!/usr/bin/env bash
# The whole test suite: README's second command, and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace --release
