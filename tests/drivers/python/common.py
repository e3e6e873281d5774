"""Shared test data and reporting for the Python driver checks (see ../README.md)."""

import contextlib
import os
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from uuid import UUID

HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = int(os.environ.get("PGPORT", "5432"))
USER = os.environ.get("PGUSER", "tessera")
DBNAME = os.environ.get("PGDATABASE", "tessera")

COLUMNS = (
    "id int PRIMARY KEY, c_int int, c_bigint bigint, c_text text, c_bool bool, "
    "c_float8 float8, c_numeric numeric(10,2), c_date date, c_timestamptz timestamptz, "
    "c_uuid uuid, c_bytea bytea"
)
NAMES = [
    "id", "c_int", "c_bigint", "c_text", "c_bool", "c_float8", "c_numeric",
    "c_date", "c_timestamptz", "c_uuid", "c_bytea",
]
# PostgreSQL type names and OIDs of the columns, in order.
TYPES = ["int4", "int4", "int8", "text", "bool", "float8", "numeric", "date",
         "timestamptz", "uuid", "bytea"]
OIDS = [23, 23, 20, 25, 16, 701, 1700, 1082, 1184, 2950, 17]

# The values of row `id` (the NULL row is id 2: all columns but id are NULL).
def values(id):
    return (
        id,
        2147483647,
        9007199254740993,  # 2**53 + 1: not representable as a double
        "héllo \"wörld\" 'q' \\ ✓",
        True,
        3.141592653589793,
        Decimal("12345.67"),
        date(2024, 2, 29),
        datetime(2024, 2, 29, 12, 34, 56, 789123, tzinfo=timezone.utc),
        UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        b"\x00\xff\x10\xde",
    )


NULL_ROW = (2,) + (None,) * 10


def diff_row(got, want):
    """Mismatches between a fetched row and the expected one: value and Python type."""
    problems = []
    got = tuple(got)
    if len(got) != len(want):
        return [f"row has {len(got)} columns, expected {len(want)}"]
    for name, g, w in zip(NAMES, got, want):
        same_type = w is None and g is None or (
            w is not None and isinstance(g, type(w)) and (type(g) is bool) == (type(w) is bool))
        if g != w or not same_type:
            problems.append(f"{name}: got {g!r} ({type(g).__name__}), expected {w!r} ({type(w).__name__})")
        elif isinstance(w, datetime) and g.utcoffset() is None:
            problems.append(f"{name}: got a naive datetime {g!r}")
    return problems


def one_line(e):
    """An exception as one short line, with its SQLSTATE when it has one."""
    state = getattr(e, "sqlstate", None) or getattr(getattr(e, "orig", None), "sqlstate", None)
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}{' ' + state if state else ''}: {text}"


class Check:
    """Collects the problems of one client's check and prints its single result line."""

    def __init__(self, client):
        self.client = client
        self.problems = []

    @contextlib.contextmanager
    def step(self, name):
        try:
            yield
        except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal
            self.problems.append(f"{name}: {one_line(e)}")

    def expect(self, ok, message):
        if not ok:
            self.problems.append(message)

    def report(self):
        if self.problems:
            print(f"FAIL {self.client}: " + "; ".join(self.problems))
            sys.exit(1)
        print(f"PASS {self.client}")
        sys.exit(0)


def sqlalchemy_engine(check, **kw):
    """A SQLAlchemy engine on psycopg 3, or None (the failure recorded). The dialect's first
    connect runs `select pg_catalog.version()`, `select current_schema()`, `show transaction
    isolation level`, `show standard_conforming_strings` and looks hstore up in pg_type with
    `to_regtype`: all of that must work as in PostgreSQL, nothing is stubbed out."""
    from sqlalchemy import create_engine

    url = f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{DBNAME}"
    engine = create_engine(url, **kw)
    before = len(check.problems)
    with check.step("connect"):
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    return engine if len(check.problems) == before else None
