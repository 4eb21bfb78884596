#!/usr/bin/env bash
# The benchmarks of the README: release builds of `registrar` and `bench`, the local peers, then
# every benchmark at full size (pass flags to change sizes, e.g. --gateways 100 --runtimes 100
# --only resync). Results (markdown) go to stdout and to target/bench-results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/peers.sh install
cargo build --release -p registrar-worker --bin registrar -p registrar-tests --bin bench
target/release/bench "$@" | tee target/bench-results.md
