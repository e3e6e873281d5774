"""SQLAlchemy 2 check (psycopg 3 underneath): Core create_all and insert/select, ORM session
insert/query/update/delete, rollback, SQLSTATE of an IntegrityError.

Cancel is not part of this check: SQLAlchemy has no cancel API (psycopg's check covers it).
Reflection is checked separately by check_sqlalchemy_reflect.py."""

from sqlalchemy import (BigInteger, Boolean, Column, Date, DateTime, Double, Integer,
                        LargeBinary, MetaData, Numeric, Table, Text, Uuid, exc, select)
from sqlalchemy.orm import Session, registry

from common import NAMES, NULL_ROW, Check, diff_row, sqlalchemy_engine, values

c = Check("sqlalchemy")

metadata = MetaData()
table = Table(
    "drv_sqlalchemy", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("c_int", Integer), Column("c_bigint", BigInteger), Column("c_text", Text),
    Column("c_bool", Boolean), Column("c_float8", Double), Column("c_numeric", Numeric(10, 2)),
    Column("c_date", Date), Column("c_timestamptz", DateTime(timezone=True)),
    Column("c_uuid", Uuid), Column("c_bytea", LargeBinary),
)


class Item:
    pass


registry().map_imperatively(Item, table)

engine = sqlalchemy_engine(c)
if engine is None:
    c.report()
autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

# create_all as an application runs it (checkfirst looks the table up in pg_catalog, the DDL runs
# in a transaction); on failure, without checkfirst; then in autocommit, so the rest still runs.
for name, bind, checkfirst in [("create_all", engine, True),
                               ("create_all(checkfirst=False) in a transaction", engine, False),
                               ("create_all(checkfirst=False) in autocommit", autocommit, False)]:
    with autocommit.connect() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS drv_sqlalchemy")
    before = len(c.problems)
    with c.step(name):
        metadata.create_all(bind, checkfirst=checkfirst)
    if len(c.problems) == before:
        break

with c.step("Core insert/select"):
    with engine.begin() as conn:
        conn.execute(table.insert(), [dict(zip(NAMES, values(1))), dict(zip(NAMES, NULL_ROW))])
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.id)).all()
        c.expect(len(rows) == 2, f"{len(rows)} rows read back, expected 2")
        for row, want in zip(rows, [values(1), NULL_ROW]):
            c.problems.extend(diff_row(tuple(row), want))

with c.step("ORM insert/query/update/delete"):
    with Session(engine) as s:
        s.add(Item(**dict(zip(NAMES, values(10)))))
        s.commit()
    with Session(engine) as s:
        item = s.get(Item, 10)
        c.expect(item is not None and item.c_numeric == values(10)[6], "ORM: row 10 not read back")
        item.c_text = "updated"
        s.commit()
    with Session(engine) as s:
        got = s.scalars(select(Item.c_text).where(Item.id == 10)).one()
        c.expect(got == "updated", f"ORM update: c_text is {got!r}")
        s.delete(s.get(Item, 10))
        s.commit()
    with Session(engine) as s:
        c.expect(s.get(Item, 10) is None, "ORM delete: row 10 still there")

with c.step("rollback"):
    with Session(engine) as s:
        s.add(Item(id=3))
        s.flush()
        s.rollback()
        c.expect(s.get(Item, 3) is None, "rolled-back row is visible")

with c.step("error 23505"):
    state = "no error"
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), {"id": 1})
    except exc.IntegrityError as e:
        state = e.orig.sqlstate
    c.expect(state == "23505", f"duplicate key: SQLSTATE {state}, expected 23505")

c.report()
