#!/usr/bin/env bash
# Where TPC-B's ratio to PostgreSQL is lost, layer by layer: pgbench's TPC-B-like script
# (-M prepared, 8 clients) against PostgreSQL 15 and against `tessera dev` (release build,
# 2 nodes) laid out three ways:
#
#   1 shard, 1 copy    one engine: no two-phase commit, no replication
#   4 shards, 1 copy   + two-phase commit across shards (a transaction writes 2-3 of them)
#   4 shards, 2 copies + replication (what benches/pgbench.sh measures)
#
# Prints tps, the ratio to PostgreSQL, Tessera's CPU per transaction (user + system time of
# the process, /proc/PID/stat) and its context switches per transaction (every thread's,
# /proc/PID/task/*/status), so the cost each layer adds is read off directly.
#
#   bash benches/tpcb_layers.sh                  # scale 10, 20 s per run (about 3 minutes, plus a release build)
#   SCALE=1 SECONDS_PER_RUN=5 bash benches/tpcb_layers.sh
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${SECONDS_PER_RUN:-20}"
source "$ROOT/benches/lib/servers.sh"

# tpcb PORT USER DB -> tps (after a 3 s warm-up)
tpcb() {
    pgbench -h 127.0.0.1 -p "$1" -U "$2" -c "$CLIENTS" -j 2 -T 3 -M prepared "$3" >/dev/null 2>&1 || true
    pgbench -h 127.0.0.1 -p "$1" -U "$2" -c "$CLIENTS" -j 2 -T "$DURATION" -M prepared "$3" 2>&1 |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1
}

# CPU seconds (user + system) the process has used so far.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat"
}

# Context switches (voluntary and not) of every thread the process has now.
switches() {
    # A thread that ends between the glob and the read is skipped, not an error.
    { cat /proc/"$1"/task/*/status 2>/dev/null || true; } |
        awk '/^(non)?voluntary_ctxt_switches/ {n += $2} END {print n + 0}'
}

start_postgres "$PG_PORT"
pgbench -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -q -s "$SCALE" postgres >/dev/null 2>&1
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "CHECKPOINT" >/dev/null
pg_tps=$(tpcb "$PG_PORT" postgres postgres)
echo "PostgreSQL: $pg_tps tps"

rows=()
for layout in "1 1" "4 1" "4 2"; do
    read -r shards copies <<<"$layout"
    start_tessera "$TS_PORT" "$shards" "$copies"
    pgbench -h 127.0.0.1 -p "$TS_PORT" -U tessera -i -q -s "$SCALE" tessera >/dev/null 2>&1
    before=$(cpu_seconds "$TS_PID")
    sw_before=$(switches "$TS_PID")
    # The warm-up's CPU is counted too, so it is measured over both runs' transactions.
    start=$(date +%s.%N)
    tps=$(tpcb "$TS_PORT" tessera tessera)
    end=$(date +%s.%N)
    after=$(cpu_seconds "$TS_PID")
    sw_after=$(switches "$TS_PID")
    stop_tessera
    # Transactions in the timed run, and the warm-up's at the same rate.
    cpu_us=$(awk -v c0="$before" -v c1="$after" -v t="$tps" -v a="$start" -v b="$end" \
        'BEGIN {n = t * (b - a); if (n > 0) printf "%.0f", (c1 - c0) * 1e6 / n; else print "n/a"}')
    # Threads that ended meanwhile take their counts with them, so this is a floor.
    cs=$(awk -v s0="$sw_before" -v s1="$sw_after" -v t="$tps" -v a="$start" -v b="$end" \
        'BEGIN {n = t * (b - a); if (n > 0) printf "%.1f", (s1 - s0) / n; else print "n/a"}')
    ratio=$(awk -v a="$tps" -v b="$pg_tps" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}')
    rows+=("| $shards | $copies | $tps | $ratio | $cpu_us | $cs |")
    echo "tessera $shards shard(s), $copies cop(y/ies): $tps tps, ratio $ratio, $cpu_us µs CPU/txn, $cs switches/txn"
done

echo
echo "TPC-B-like, -M prepared, scale $SCALE, $CLIENTS clients, $DURATION s; PostgreSQL $pg_tps tps"
echo
echo "| shards | copies | Tessera tps | ratio | Tessera CPU µs/txn | context switches/txn |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
