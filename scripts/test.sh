#!/usr/bin/env bash
# The test command: installs the local peers if missing, builds every binary (the end-to-end
# tests run the real `registrar`), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/peers.sh install
cargo build --workspace --bins
# Every registrar process the tests start logs its AWS calls here (REGISTRAR_AWS_CALL_LOG);
# afterwards each is checked against the policies infra/ ships (design invariant 9).
rm -f target/aws-calls.log
cargo test --workspace "$@"
.venv-moto/bin/python scripts/iam-check.py target/aws-calls.log
