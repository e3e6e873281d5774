#!/usr/bin/env bash
# pgbench side by side: Tessera (tessera dev, release build, 2 nodes, 4 shards, replicas on)
# against a local PostgreSQL 15 (fsync on), on this machine, in one run.
#
#   bash benches/pgbench.sh            # scale 10, 8 clients, 30 s per run (about 6 minutes)
#   SCALE=1 SECONDS_PER_RUN=10 bash benches/pgbench.sh   # quick look
#
# For each system: pgbench -i -s SCALE, then select-only (-S) and the TPC-B-like default
# script, each in -M simple and -M prepared. Prints TPS, average and p99 latency, failed
# transactions and the Tessera / PostgreSQL ratio, samples Tessera's replica lag during
# the TPC-B runs, and writes the table with machine details to benches/RESULTS.md.
# Everything it starts is stopped on exit. Only 127.0.0.1 is used.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${SECONDS_PER_RUN:-30}"
source "$ROOT/benches/lib/servers.sh"
start_postgres "$PG_PORT"
start_tessera "$TS_PORT" 4 2

# run SYSTEM PORT USER DB MODE SCRIPTFLAG -> "tps avg_ms p99_ms failed"
run() {
    local port=$1 user=$2 db=$3 mode=$4 flag=$5 tag=$6
    local dir="$WORK/log-$tag"
    mkdir -p "$dir"
    local out
    out=$(cd "$dir" && pgbench -h 127.0.0.1 -p "$port" -U "$user" -c "$CLIENTS" -j 2 \
        -T "$DURATION" -M "$mode" $flag -l "$db" 2>&1) || true
    local tps avg failed p99
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    avg=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' | head -1)
    failed=$(echo "$out" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' | head -1)
    # Per-transaction logs: field 3 is the latency in microseconds.
    p99=$(cat "$dir"/pgbench_log.* 2>/dev/null | awk '{print $3}' | sort -n |
        awk '{a[NR]=$1} END {if (NR) {i=int(NR*0.99); if (i<1) i=1; printf "%.2f", a[i]/1000} else print "nan"}')
    if [ -z "$tps" ]; then
        echo "$out" | tail -5 >&2
        tps=0; avg=nan; failed="${failed:-all}"
    fi
    echo "$tps ${avg:-nan} ${p99:-nan} ${failed:-0}"
}

declare -A R
echo "initialising scale $SCALE..."
timed_init() {
    local start end
    start=$(date +%s.%N)
    pgbench -h 127.0.0.1 -p "$1" -U "$2" -i -q -s "$SCALE" "$3" >"$WORK/init-$3.log" 2>&1 ||
        { tail -5 "$WORK/init-$3.log" >&2; echo failed; return; }
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}'
}
pg_init_s=$(timed_init "$PG_PORT" postgres postgres)
ts_init_s=$(timed_init "$TS_PORT" tessera tessera)
# PostgreSQL would otherwise write the loaded tables out at its next timed checkpoint,
# minutes later, in the middle of a later run (possibly Tessera's).
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "CHECKPOINT" >/dev/null 2>&1 || true
for script in select-only tpcb; do
    flag=""; [ "$script" = select-only ] && flag="-S"
    for mode in simple prepared; do
        echo "running $script -M $mode..."
        R[pg,$script,$mode]=$(run "$PG_PORT" postgres postgres "$mode" "$flag" "pg-$script-$mode")
        if [ "$script" = tpcb ]; then
            python3 "$ROOT/benches/replica_lag.py" --port "$TS_PORT" --seconds "$DURATION" \
                >"$WORK/lag-$mode.txt" 2>&1 &
            lag_pid=$!
        fi
        R[ts,$script,$mode]=$(run "$TS_PORT" tessera tessera "$mode" "$flag" "ts-$script-$mode")
        if [ "$script" = tpcb ]; then
            wait "$lag_pid" || true
            R[lag,$mode]=$(cat "$WORK/lag-$mode.txt" | tail -1)
        fi
    done
done

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
{
    echo "# pgbench: Tessera vs PostgreSQL 15"
    echo
    echo "Written by \`benches/pgbench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo "Machine: $machine; $(uname -sr)."
    echo "Tessera: \`tessera dev\` release build, 2 nodes, 4 shards, 2 copies of each shard"
    echo "(replication on), commits fsynced. PostgreSQL $($PG_BIN/postgres --version | awk '{print $3}'): fsync on,"
    echo "synchronous_commit on, shared_buffers 256MB. Both on 127.0.0.1, same machine."
    echo "pgbench scale $SCALE, $CLIENTS clients, 2 threads, $DURATION s per run."
    echo "Initialisation (pgbench -i): PostgreSQL ${pg_init_s} s, Tessera ${ts_init_s} s."
    echo
    echo "| script | mode | PG tps | Tessera tps | ratio | PG avg ms | Tessera avg ms | PG p99 ms | Tessera p99 ms | PG failed | Tessera failed |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for script in select-only tpcb; do
        for mode in simple prepared; do
            read -r pt pa pp pf <<<"${R[pg,$script,$mode]}"
            read -r tt ta tp tf <<<"${R[ts,$script,$mode]}"
            ratio=$(awk -v a="$tt" -v b="$pt" 'BEGIN {if (b > 0) printf "%.2f", a/b; else print "n/a"}')
            echo "| $script | $mode | $pt | $tt | $ratio | $pa | $ta | $pp | $tp | $pf | $tf |"
        done
    done
    echo
    echo "Replica lag under the TPC-B-like load (sampled every 5 ms from tessera.replication):"
    echo
    for mode in simple prepared; do
        echo "- -M $mode: ${R[lag,$mode]:-not measured}"
    done
} >"$ROOT/benches/RESULTS.md.new"
cat "$ROOT/benches/RESULTS.md.new"
# Everything from the first heading after the title on is kept: notes on earlier passes (##) and the other benchmarks' sections (#).
if [ -f "$ROOT/benches/RESULTS.md" ]; then
    { echo; awk 'FNR > 1 && /^##? / { keep = 1 } keep' "$ROOT/benches/RESULTS.md"; } \
        >>"$ROOT/benches/RESULTS.md.new"
fi
mv "$ROOT/benches/RESULTS.md.new" "$ROOT/benches/RESULTS.md"
