"""SQLAlchemy 2 reflection check: inspect() and MetaData.reflect() read PostgreSQL's catalogs
(pg_catalog.pg_class, pg_attribute, pg_type, pg_constraint, ...), so this needs Tessera's
catalog support. Reported as its own client so that it does not hide the core check."""

from sqlalchemy import (BigInteger, Boolean, Date, DateTime, Double, Integer, LargeBinary,
                        MetaData, Numeric, Text, Uuid, inspect)

from common import COLUMNS, NAMES, Check, sqlalchemy_engine

T = "drv_sqlalchemy_reflect"
c = Check("sqlalchemy-reflect")
engine = sqlalchemy_engine(c, isolation_level="AUTOCOMMIT")
if engine is None:
    c.report()
TYPES = [Integer, Integer, BigInteger, Text, Boolean, Double, Numeric, Date, DateTime, Uuid,
         LargeBinary]

with c.step("DDL"):
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {T}")
        conn.exec_driver_sql(f"CREATE TABLE {T} ({COLUMNS})")
        conn.exec_driver_sql(f"CREATE INDEX {T}_idx ON {T} (c_bigint DESC, c_text)")
with c.step("inspect"):
    insp = inspect(engine)
    c.expect(T in insp.get_table_names(), f"get_table_names() lacks {T}")
    cols = insp.get_columns(T)
    c.expect([col["name"] for col in cols] == NAMES, f"get_columns names {[x['name'] for x in cols]}")
    for col, want in zip(cols, TYPES):
        c.expect(isinstance(col["type"], want), f"{col['name']}: reflected type {col['type']!r}")
    pk = insp.get_pk_constraint(T)["constrained_columns"]
    c.expect(pk == ["id"], f"primary key {pk}, expected ['id']")
    idx = insp.get_indexes(T)
    c.expect([i["name"] for i in idx] == [f"{T}_idx"], f"get_indexes() names {idx}")
    if idx:
        c.expect(idx[0]["column_names"] == ["c_bigint", "c_text"], f"index columns {idx[0]}")
        c.expect(idx[0].get("column_sorting") == {"c_bigint": ("desc",)},
                 f"index sorting {idx[0].get('column_sorting')}")
        c.expect(idx[0]["unique"] is False, f"index unique {idx[0]['unique']}")

with c.step("MetaData.reflect"):
    md = MetaData()
    md.reflect(engine, only=[T])
    table = md.tables[T]
    c.expect(list(table.c.keys()) == NAMES, f"reflected columns {list(table.c.keys())}")
    c.expect(table.c.c_numeric.type.precision == 10 and table.c.c_numeric.type.scale == 2,
             f"c_numeric reflected as {table.c.c_numeric.type!r}, expected NUMERIC(10, 2)")
    c.expect(table.c.c_timestamptz.type.timezone, "c_timestamptz reflected without time zone")
    c.expect([i.name for i in table.indexes] == [f"{T}_idx"], f"reflected indexes {table.indexes}")

c.report()
