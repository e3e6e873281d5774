#!/usr/bin/env bash
# The test command the README names: every unit, logic and cluster test of the workspace, the
# RPC stack again over turmoil's simulated network, then the client-driver matrix (psql,
# psycopg 3, asyncpg, SQLAlchemy 2, node-postgres, pgJDBC, tokio-postgres, sqlx) against a
# fresh `tessera dev`. Needs what a fresh machine has (Rust, cargo-nextest, Python 3 with pip,
# Node with npm, psql); the driver matrix installs its clients itself (tests/drivers/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"
cargo nextest run -p protocol --features sim -E 'test(sim_tests)'
TESSERA_BIN=$PWD/target/debug/tessera bash tests/drivers/run.sh
