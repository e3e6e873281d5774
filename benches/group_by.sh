#!/usr/bin/env bash
# A grouped aggregate over many rows on 4 shards against 1 shard (release build,
# `tessera dev`, replicas on), with the shards pre-aggregating their own rows
# (router/src/pushdown.rs):
#
#   SELECT k, count(*), sum(v), avg(v) FROM gb GROUP BY k      (k: 100 groups)
#
#   bash benches/group_by.sh                 # 1 000 000 rows, 5 timed runs each
#   ROWS=100000 RUNS=3 bash benches/group_by.sh
#
# Loads the rows with COPY, then times the query with pgbench (one client, -t RUNS) and
# prints the average latency for each layout and their ratio. Only 127.0.0.1 is used.
set -euo pipefail
# The password `tessera dev` gives its superuser (PostgreSQL ignores it under trust).
export PGPASSWORD=${PGPASSWORD:-tessera}

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROWS="${ROWS:-1000000}"
RUNS="${RUNS:-5}"
WORK="$(mktemp -d /tmp/tessera-groupby.XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && cargo build --release --quiet)
BIN="$ROOT/target/release/tessera"
python3 - "$ROWS" > "$WORK/rows.csv" <<'PY'
import sys
n = int(sys.argv[1])
out = sys.stdout
for i in range(n):
    out.write(f"{i},{i % 100},{(i * 7919) % 1000}\n")
PY
echo "SELECT k, count(*), sum(v), avg(v) FROM gb GROUP BY k;" > "$WORK/q.sql"

run_layout() {
    local shards=$1 port=$2
    "$BIN" dev --data "$WORK/d$shards" --port "$port" --shards "$shards" >"$WORK/dev$shards.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        psql -h 127.0.0.1 -p "$port" -U tessera -d tessera -qAtc "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.2
    done
    psql -h 127.0.0.1 -p "$port" -U tessera -d tessera -qc \
        "CREATE TABLE gb (id bigint PRIMARY KEY, k int, v int)" >/dev/null
    local t0=$(date +%s.%N)
    psql -h 127.0.0.1 -p "$port" -U tessera -d tessera -qc "\\copy gb FROM '$WORK/rows.csv' CSV" >/dev/null
    local t1=$(date +%s.%N)
    local ms
    ms=$(pgbench -h 127.0.0.1 -p "$port" -U tessera -n -f "$WORK/q.sql" -t "$RUNS" tessera 2>&1 |
        awk '/latency average/ {print $4}')
    printf "%d shard(s): load %.1f s, GROUP BY over %d rows: %s ms average of %d runs\n" \
        "$shards" "$(echo "$t1 - $t0" | bc)" "$ROWS" "$ms" "$RUNS"
    echo "$ms" > "$WORK/ms$shards"
}

run_layout 1 55491
run_layout 4 55492
echo "ratio 4 shards / 1 shard: $(echo "scale=2; $(cat "$WORK/ms4") / $(cat "$WORK/ms1")" | bc)"
