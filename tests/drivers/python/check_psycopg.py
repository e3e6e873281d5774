"""psycopg 3 check: DDL, typed parameters (text and binary), read back, rollback, SQLSTATEs, cancel."""

import threading
import time

import psycopg

from common import COLUMNS, DBNAME, HOST, NAMES, NULL_ROW, OIDS, PORT, USER, Check, diff_row, values

T = "drv_psycopg"
c = Check("psycopg")


def connect(autocommit=True):
    return psycopg.connect(host=HOST, port=PORT, user=USER, dbname=DBNAME, autocommit=autocommit)


with c.step("connect/DDL"):
    conn = connect()
    conn.execute(f"DROP TABLE IF EXISTS {T}")
    conn.execute(f"CREATE TABLE {T} ({COLUMNS})")
if c.problems:
    c.report()

insert = f"INSERT INTO {T} ({', '.join(NAMES)}) VALUES ({', '.join(['%s'] * len(NAMES))})"
with c.step("insert (text parameters)"):
    conn.execute(insert, values(1))
    conn.execute(insert, NULL_ROW)
with c.step("insert (binary parameters)"):
    conn.execute(insert, values(4), binary=True)

for binary in (False, True):
    with c.step(f"select ({'binary' if binary else 'text'} results)"):
        cur = conn.execute(f"SELECT {', '.join(NAMES)} FROM {T} ORDER BY id", binary=binary)
        oids = [d.type_code for d in cur.description]
        c.expect(oids == OIDS, f"column type OIDs {oids}, expected {OIDS}")
        rows = cur.fetchall()
        want = [values(1), NULL_ROW, values(4)]
        c.expect(len(rows) == 3, f"{len(rows)} rows read back, expected 3")
        for got, exp in zip(rows, want):
            c.problems += diff_row(got, exp)

with c.step("rollback"):
    tx = connect(autocommit=False)
    tx.cursor().executemany(f"INSERT INTO {T} (id) VALUES (%s)", [(3,), (5,)])
    tx.rollback()  # executemany prepared statements: psycopg now sends DEALLOCATE ALL
    n = conn.execute(f"SELECT count(*) FROM {T} WHERE id IN (3, 5)").fetchone()[0]
    c.expect(n == 0, f"rolled-back row is visible (count {n})")
    tx.close()

for sql, want in [(f"INSERT INTO {T} (id) VALUES (1)", "23505"),
                  ("SELECT * FROM drv_no_such_table", "42P01")]:
    with c.step(f"error {want}"):
        try:
            conn.execute(sql)
            got = "no error"
        except psycopg.Error as e:
            got = e.sqlstate
        c.expect(got == want, f"{sql!r}: SQLSTATE {got}, expected {want}")

# Cancel: pg_sleep() does not exist in Tessera, so the running statement is an UPDATE that
# waits for a row lock held by another open transaction (PostgreSQL waits indefinitely).
with c.step("cancel"):
    holder = connect(autocommit=False)
    holder.execute(f"UPDATE {T} SET c_text = 'held' WHERE id = 1")
    waiter = connect()
    threading.Timer(1.0, waiter.cancel_safe).start()
    start = time.monotonic()
    try:
        waiter.execute(f"UPDATE {T} SET c_text = 'waiter' WHERE id = 1")
        got = "no error"
    except psycopg.Error as e:
        got = f"{e.sqlstate} {str(e).splitlines()[0]}"
    took = time.monotonic() - start
    holder.rollback()
    c.expect(got.startswith("57014"),
             f"cancel not supported: CancelRequest 1s into a lock wait did not cancel it "
             f"(got '{got}' after {took:.1f}s, expected 57014 query_canceled)")

c.report()
