#!/usr/bin/env bash
# psql check: check.sql and prepared.sql (ON_ERROR_STOP=1, output compared with *.expected),
# SQLSTATEs of two errors (VERBOSITY verbose), and a cancel by SIGINT (psql sends a
# CancelRequest). Uses PGHOST/PGPORT/PGUSER/PGDATABASE. Prints PASS psql or FAIL psql: ...
set -uo pipefail
cd "$(dirname "$0")"
problems=()
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PSQL=(psql -X -q -v ON_ERROR_STOP=1)

for script in check prepared; do
    expected="$script.expected"
    if ! "${PSQL[@]}" -f "$script.sql" >"$tmp/$script.out" 2>"$tmp/$script.err"; then
        problems+=("$script.sql stopped: $(grep -m1 -E 'ERROR|FATAL|error' "$tmp/$script.err" || tail -n1 "$tmp/$script.err")")
        # Still compare what it printed before it stopped.
        head -n "$(wc -l <"$tmp/$script.out")" "$script.expected" >"$tmp/$script.head"
        expected="$tmp/$script.head"
    fi
    if ! diff -q "$expected" "$tmp/$script.out" >/dev/null; then
        problems+=("$script.sql output differs: $(diff "$expected" "$tmp/$script.out" | grep -m2 '^[<>]' | tr '\n' ' ')")
    fi
done

# An expected error: exit code 1 and the SQLSTATE in the verbose message.
sqlstate_of() {
    "${PSQL[@]}" -c '\set VERBOSITY verbose' -c "$1" >/dev/null 2>"$tmp/err"
    local rc=$?
    echo "rc=$rc $(grep -m1 -oE '(ERROR|FATAL): +[0-9A-Z]{5}' "$tmp/err" | awk '{print $2}')"
}
for pair in "INSERT INTO drv_psql (id) VALUES (1)|23505" "SELECT * FROM drv_no_such_table|42P01"; do
    sql=${pair%|*} want=${pair#*|}
    got=$(sqlstate_of "$sql")
    [[ $got == "rc=1 $want" ]] || problems+=("'$sql': got $got, expected rc=1 $want")
done

# Cancel: pg_sleep() does not exist in Tessera, so the running statement is an UPDATE that
# waits for a row lock held by another open transaction (PostgreSQL waits indefinitely).
# psql sends a CancelRequest when it gets SIGINT during a query.
"${PSQL[@]}" -c 'BEGIN' -c "UPDATE drv_psql SET c_text = 'held' WHERE id = 1" -c '\! sleep 8' \
    -c 'ROLLBACK' >/dev/null 2>&1 &
holder=$!
sleep 1
start=$(date +%s%3N)
"${PSQL[@]}" -c '\set VERBOSITY verbose' -c "UPDATE drv_psql SET c_text = 'waiter' WHERE id = 1" \
    >/dev/null 2>"$tmp/cancel.err" &
waiter=$!
sleep 1
kill -INT "$waiter" 2>/dev/null
wait "$waiter"
rc=$?
took=$(($(date +%s%3N) - start))
wait "$holder"
state=$(grep -m1 -oE '(ERROR|FATAL): +[0-9A-Z]{5}' "$tmp/cancel.err" | awk '{print $2}')
if [[ $state != 57014 ]]; then
    problems+=("cancel not supported: CancelRequest (SIGINT) 1s into a lock wait did not cancel it (got rc=$rc ${state:-no error} after $((took / 1000)).$((took % 1000 / 100))s, expected 57014 query_canceled)")
fi

if ((${#problems[@]})); then
    joined=$(printf '; %s' "${problems[@]}")
    echo "FAIL psql: ${joined:2}"
    exit 1
fi
echo "PASS psql"
