"""asyncpg check: binary protocol, server-described parameter types, rollback, SQLSTATEs, cancel."""

import asyncio
import time

import asyncpg

from common import COLUMNS, DBNAME, HOST, NAMES, NULL_ROW, PORT, TYPES, USER, Check, diff_row, values

T = "drv_asyncpg"
c = Check("asyncpg")


def connect():
    return asyncpg.connect(host=HOST, port=PORT, user=USER, database=DBNAME)


async def main():
    with c.step("connect/DDL"):
        conn = await connect()
        await conn.execute(f"DROP TABLE IF EXISTS {T}")
        await conn.execute(f"CREATE TABLE {T} ({COLUMNS})")
    if c.problems:
        return

    with c.step("prepared insert"):
        params = ", ".join(f"${i + 1}" for i in range(len(NAMES)))
        stmt = await conn.prepare(f"INSERT INTO {T} ({', '.join(NAMES)}) VALUES ({params})")
        got = [t.name for t in stmt.get_parameters()]
        c.expect(got == TYPES, f"parameter types {got}, expected {TYPES}")
        await stmt.executemany([values(1), NULL_ROW])

    with c.step("select"):
        stmt = await conn.prepare(f"SELECT {', '.join(NAMES)} FROM {T} ORDER BY id")
        got = [a.type.name for a in stmt.get_attributes()]
        c.expect(got == TYPES, f"column types {got}, expected {TYPES}")
        rows = await stmt.fetch()
        c.expect(len(rows) == 2, f"{len(rows)} rows read back, expected 2")
        for row, want in zip(rows, [values(1), NULL_ROW]):
            c.problems.extend(diff_row(tuple(row), want))

    with c.step("rollback"):
        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {T} (id) VALUES ($1)", 3)
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        n = await conn.fetchval(f"SELECT count(*) FROM {T} WHERE id = $1", 3)
        c.expect(n == 0, f"rolled-back row is visible (count {n})")

    for sql, want in [(f"INSERT INTO {T} (id) VALUES (1)", "23505"),
                      ("SELECT * FROM drv_no_such_table", "42P01")]:
        with c.step(f"error {want}"):
            try:
                await conn.execute(sql)
                got = "no error"
            except asyncpg.PostgresError as e:
                got = e.sqlstate
            c.expect(got == want, f"{sql!r}: SQLSTATE {got}, expected {want}")

    # Cancel: a statement `timeout` makes asyncpg send a CancelRequest and wait for the server
    # to end the statement. pg_sleep() does not exist in Tessera, so the statement is an UPDATE
    # waiting for a row lock held by another open transaction (PostgreSQL waits indefinitely).
    with c.step("cancel"):
        holder = await connect()
        tx = holder.transaction()
        await tx.start()
        await holder.execute(f"UPDATE {T} SET c_text = 'held' WHERE id = 1")
        start = time.monotonic()
        try:
            await conn.execute(f"UPDATE {T} SET c_text = 'waiter' WHERE id = 1", timeout=1.0)
            got = "no error"
        except asyncio.TimeoutError:
            got = "timeout"
        except asyncpg.PostgresError as e:
            got = e.sqlstate
        await conn.fetchval("SELECT 1")  # returns once the server has ended the statement
        took = time.monotonic() - start
        await tx.rollback()
        c.expect(got == "timeout" and took < 3,
                 f"cancel not supported: CancelRequest 1s into a lock wait did not cancel it "
                 f"(the statement ran {took:.1f}s, outcome '{got}'; PostgreSQL ends it at once)")


asyncio.run(main())
c.report()
