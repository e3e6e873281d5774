#!/usr/bin/env bash
# The test command the README names: every unit, logic and cluster test of the workspace, then
# the RPC stack again over turmoil's simulated network. Needs only what a fresh machine has
# (Rust, cargo-nextest; psql is used by one test when present).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"
cargo nextest run -p protocol --features sim -E 'test(sim_tests)'
