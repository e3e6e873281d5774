# Sourced by the pgbench scripts: their shared settings, and starting the reference
# PostgreSQL 15 and `tessera dev` under a fresh $WORK, both stopped on exit. Only
# 127.0.0.1 is used.
#
#   ROOT=... ; source "$ROOT/benches/lib/servers.sh"
#   start_postgres PORT                 # fsync on, synchronous_commit on, 256MB buffers
#   start_tessera PORT SHARDS REPLICAS  # release build, 2 nodes; sets TS_PID
#   stop_tessera
# The password `tessera dev` gives its superuser (PostgreSQL ignores it under trust).
export PGPASSWORD=${PGPASSWORD:-tessera}
SCALE="${SCALE:-10}"
CLIENTS="${CLIENTS:-8}"
PG_PORT="${PG_PORT:-55498}"
TS_PORT="${TS_PORT:-55497}"
WORK="$(mktemp -d /tmp/tessera-bench.XXXXXX)"
chmod 755 "$WORK"
PG_BIN=/usr/lib/postgresql/15/bin
SERVER_PIDS=()

stop_servers() {
    for p in "${SERVER_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    if [ -f "$WORK/pg/postmaster.pid" ]; then
        su postgres -c "$PG_BIN/pg_ctl -D $WORK/pg -m fast stop" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap stop_servers EXIT

# PostgreSQL 15, installed from Debian if missing.
start_postgres() {
    local port=$1
    if [ ! -x "$PG_BIN/postgres" ] || ! command -v pgbench >/dev/null; then
        echo "installing PostgreSQL 15 from Debian..."
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    fi
    mkdir -p "$WORK/pg" && chown postgres "$WORK" "$WORK/pg"
    su postgres -c "$PG_BIN/initdb -D $WORK/pg -A trust -U postgres" >/dev/null
    su postgres -c "$PG_BIN/pg_ctl -D $WORK/pg -l $WORK/pg.log -w start \
        -o '-p $port -k $WORK -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
            -c max_connections=50 -c shared_buffers=256MB'" >/dev/null
}

start_tessera() {
    local port=$1 shards=$2 replicas=$3
    (cd "$ROOT" && cargo build --release --bin tessera -q)
    rm -rf "$WORK/tessera"
    "$ROOT/target/release/tessera" dev --data "$WORK/tessera" --port "$port" \
        --nodes 2 --shards "$shards" --replicas "$replicas" >>"$WORK/tessera.log" 2>&1 &
    TS_PID=$!
    SERVER_PIDS+=("$TS_PID")
    for _ in $(seq 1 100); do
        psql -h 127.0.0.1 -p "$port" -U tessera -d tessera -Atc "select 1" >/dev/null 2>&1 && break
        sleep 0.2
    done
}

stop_tessera() {
    kill "$TS_PID" 2>/dev/null || true
    wait "$TS_PID" 2>/dev/null || true
}
