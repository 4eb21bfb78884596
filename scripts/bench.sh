#!/usr/bin/env bash
# The benchmarks of the README: release builds of `registrar` and `bench`, the local peers, then
# every benchmark at full size (pass flags to change sizes, e.g. --gateways 100 --runtimes 100
# --only resync). Results (markdown) go to stdout and to target/bench-results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/peers.sh install
cargo build --release -p registrar-worker --bin registrar -p registrar-tests --bin bench
# moto enforces no AgentCore quota: the registrar does not pace itself against it, so these
# figures stay comparable with the earlier rows (pacing is measured by `simulate`).
export REGISTRAR_AGENTCORE_GATEWAY_RATE=0 REGISTRAR_AGENTCORE_RUNTIME_RATE=0 REGISTRAR_AGENTCORE_LIST_RATE=0
target/release/bench "$@" | tee target/bench-results.md
