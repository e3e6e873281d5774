#!/usr/bin/env bash
# Write pause of an online rebalance, release build: 8 clients run cross-shard transfers
# while a third node joins, `tessera.rebalance()` moves shards onto it and
# `tessera.drain_node(1)` empties node 1 (tests/rebalance.rs). Prints the longest single
# statement any client saw before and during the moves, and the longest freeze a job
# recorded. RUNS (default 3) repeats the run.
set -euo pipefail
# The password `tessera dev` gives its superuser (PostgreSQL ignores it under trust).
export PGPASSWORD=${PGPASSWORD:-tessera}
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
cargo test --release --test rebalance --no-run >/dev/null 2>&1 || cargo test --release --test rebalance --no-run
for i in $(seq 1 "$runs"); do
  out=$(cargo test --release --test rebalance rebalance_and_drain_under_transfer_load -- --nocapture 2>&1)
  echo "run $i: $(grep -E 'transfers, [0-9]+ errors' <<<"$out" || { echo "$out" | tail -30; exit 1; })"
done
