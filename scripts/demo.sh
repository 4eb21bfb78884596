#!/usr/bin/env bash
# The demo: local moto + registry stand-in, the FAQ's thirteen resources, `registrar resync`,
# then one gateway deleted and a second resync that deregisters it. Everything stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/peers.sh install
cargo build --quiet --workspace --bins
exec cargo run --quiet -p registrar-tests --bin demo
