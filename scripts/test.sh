#!/usr/bin/env bash
# The test command the README names: every unit, logic and cluster test of the workspace.
# Installs nothing that the tests need beyond what a fresh machine has (Rust, cargo-nextest,
# psql); tests that need psql skip that part when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"
