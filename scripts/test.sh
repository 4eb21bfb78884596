#!/usr/bin/env bash
# The test command: installs the local peers if missing, builds every binary (the end-to-end
# tests run the real `registrar`), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/peers.sh install
cargo build --workspace --bins
cargo test --workspace "$@"
