#!/usr/bin/env python3
"""Check the sqllogictest corpus against a real PostgreSQL server.

Runs every record of each .slt file against PostgreSQL (through libpq, loaded
with ctypes: standard library only, no pip install) and reports every place
where PostgreSQL's behaviour differs from what the file expects.  It also
enforces the corpus rules that Tessera depends on (see README.md):

  * each file drops every table it creates;
  * non-pending files use only the supported column / result types;
  * non-pending files contain no BEGIN/COMMIT/ROLLBACK, except transactions.slt;
  * a query returning more than one row either has ORDER BY or uses
    rowsort/valuesort.

Each file runs in a fresh database (dropped afterwards), on one connection,
with the simple query protocol; results are taken in PostgreSQL's text format
and printed the way the Tessera runner prints them: NULL as `NULL`, the empty
string as `(empty)`, booleans as `t`/`f`.

Usage:
    python3 tests/slt/check_against_postgres.py [--port 55499] [FILE_OR_DIR ...]
    python3 tests/slt/check_against_postgres.py --rewrite FILE ...

With no path it checks tests/slt/ recursively (pending/ included).
--rewrite replaces the expected results (and column-type letters) of every
`query` record with PostgreSQL's output, and fills in the regex of a bare
`statement error` / `query error` with PostgreSQL's message; review the diff.

Only ever connects to 127.0.0.1 (host and port are options; user postgres).
Exit status: 0 when everything matches, 1 otherwise.
"""

import argparse
import ctypes
import ctypes.util
import os
import re
import sys

# --------------------------------------------------------------------------
# libpq through ctypes
# --------------------------------------------------------------------------

PGRES_EMPTY_QUERY, PGRES_COMMAND_OK, PGRES_TUPLES_OK = 0, 1, 2
PQTRANS_IDLE = 0
PG_DIAG_MESSAGE_PRIMARY = ord("M")
PG_DIAG_SQLSTATE = ord("C")


def load_libpq():
    candidates = [ctypes.util.find_library("pq"), "libpq.so.5", "libpq.so"]
    for name in candidates:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        sys.exit("cannot load libpq (apt-get install libpq5)")
    vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    sigs = {
        "PQconnectdb": ([cp], vp),
        "PQstatus": ([vp], ci),
        "PQerrorMessage": ([vp], cp),
        "PQfinish": ([vp], None),
        "PQexec": ([vp, cp], vp),
        "PQresultStatus": ([vp], ci),
        "PQresultErrorField": ([vp, ci], cp),
        "PQntuples": ([vp], ci),
        "PQnfields": ([vp], ci),
        "PQftype": ([vp, ci], ctypes.c_uint),
        "PQgetvalue": ([vp, ci, ci], ctypes.POINTER(ctypes.c_char)),
        "PQgetlength": ([vp, ci, ci], ci),
        "PQgetisnull": ([vp, ci, ci], ci),
        "PQcmdTuples": ([vp], cp),
        "PQclear": ([vp], None),
        "PQtransactionStatus": ([vp], ci),
    }
    for fname, (args, res) in sigs.items():
        f = getattr(lib, fname)
        f.argtypes = args
        f.restype = res
    return lib


LIBPQ = None


class PgError(Exception):
    def __init__(self, message, sqlstate):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


class Result:
    def __init__(self, oids, rows, cmd_tuples):
        self.oids = oids
        self.rows = rows  # list of list of (str or None)
        self.cmd_tuples = cmd_tuples


class Conn:
    def __init__(self, host, port, user, dbname):
        conninfo = (
            f"host={host} port={port} user={user} dbname={dbname} "
            "options='-c client_min_messages=error -c lc_messages=C "
            "-c extra_float_digits=1 -c DateStyle=ISO,MDY -c TimeZone=UTC "
            "-c IntervalStyle=postgres -c bytea_output=hex' connect_timeout=10"
        )
        self.pg = LIBPQ.PQconnectdb(conninfo.encode())
        if LIBPQ.PQstatus(self.pg) != 0:
            msg = LIBPQ.PQerrorMessage(self.pg).decode(errors="replace")
            LIBPQ.PQfinish(self.pg)
            raise SystemExit(f"cannot connect to PostgreSQL ({conninfo}): {msg}")

    def close(self):
        LIBPQ.PQfinish(self.pg)

    def idle(self):
        return LIBPQ.PQtransactionStatus(self.pg) == PQTRANS_IDLE

    def execute(self, sql):
        res = LIBPQ.PQexec(self.pg, sql.encode())
        if not res:
            raise PgError(LIBPQ.PQerrorMessage(self.pg).decode(errors="replace").strip(), None)
        try:
            status = LIBPQ.PQresultStatus(res)
            if status not in (PGRES_EMPTY_QUERY, PGRES_COMMAND_OK, PGRES_TUPLES_OK):
                msg = LIBPQ.PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
                code = LIBPQ.PQresultErrorField(res, PG_DIAG_SQLSTATE)
                if msg is None:
                    msg = LIBPQ.PQerrorMessage(self.pg)
                raise PgError(msg.decode(errors="replace").strip(),
                              code.decode() if code else None)
            nf, nt = LIBPQ.PQnfields(res), LIBPQ.PQntuples(res)
            oids = [LIBPQ.PQftype(res, c) for c in range(nf)]
            rows = []
            for r in range(nt):
                row = []
                for c in range(nf):
                    if LIBPQ.PQgetisnull(res, r, c):
                        row.append(None)
                    else:
                        n = LIBPQ.PQgetlength(res, r, c)
                        raw = ctypes.string_at(LIBPQ.PQgetvalue(res, r, c), n)
                        row.append(raw.decode(errors="replace"))
                rows.append(row)
            ct = LIBPQ.PQcmdTuples(res).decode()
            return Result(oids, rows, int(ct) if ct else None)
        finally:
            LIBPQ.PQclear(res)


# --------------------------------------------------------------------------
# Type letters and value formatting
# --------------------------------------------------------------------------

INT_OIDS = {20, 21, 23}  # int8, int2, int4
FLOAT_OIDS = {700, 701, 1700}  # float4, float8, numeric
# Result types allowed in files outside pending/:
# int2 int4 int8 float4 float8 text varchar bool bytea, numeric, the date/time types,
# uuid, json, jsonb, bpchar
SUPPORTED_OIDS = {21, 23, 20, 700, 701, 25, 1043, 16, 17,
                  1700, 1082, 1083, 1114, 1184, 1186, 2950, 114, 3802, 1042,
                  # arrays of those (results only; Tessera stores no array columns)
                  1000, 1001, 1005, 1007, 1009, 1014, 1015, 1016, 1021, 1022, 1115,
                  1182, 1183, 1185, 1187, 1231, 2951, 199, 3807}
OID_NAMES = {1700: "numeric", 1082: "date", 1083: "time", 1114: "timestamp",
             1184: "timestamptz", 1186: "interval", 114: "json", 3802: "jsonb",
             705: "unknown", 18: "char", 1042: "bpchar", 19: "name", 26: "oid"}


def type_letter(oid):
    if oid in INT_OIDS:
        return "I"
    if oid in FLOAT_OIDS:
        return "R"
    return "T"


def fmt_value(v):
    if v is None:
        return "NULL"
    if v == "":
        return "(empty)"
    return v


def normalize(s):
    """The crate's default_normalizer: trim and collapse whitespace."""
    return " ".join(s.split())


def row_line(row):
    return " ".join(normalize(fmt_value(v)) for v in row)


def sorted_lines(rows, sort_mode):
    vals = [[fmt_value(v) for v in row] for row in rows]
    if sort_mode == "rowsort":
        vals.sort(key=lambda r: [x.encode() for x in r])  # Vec<String> order
        return [" ".join(normalize(x) for x in r) for r in vals]
    if sort_mode == "valuesort":
        flat = sorted((x for r in vals for x in r), key=lambda x: x.encode())
        return [normalize(x) for x in flat]
    return [" ".join(normalize(x) for x in r) for r in vals]


# --------------------------------------------------------------------------
# .slt parsing (the subset of sqllogictest 0.28 syntax the corpus uses)
# --------------------------------------------------------------------------

SORT_MODES = ("nosort", "rowsort", "valuesort")


class Record:
    def __init__(self, kind, line, header):
        self.kind = kind  # "statement" | "query"
        self.line = line  # 0-based index of the header line
        self.header = header
        self.sql_lines = []
        self.delim = None  # index of the ---- line
        self.end = None  # index one past the last result line
        self.expect = None  # "ok" | "error" | "count" | "results"
        self.error_regex = None
        self.count = None
        self.types = ""
        self.sort_mode = None
        self.label = None
        self.results = []
        self.skip = False

    @property
    def sql(self):
        return "\n".join(self.sql_lines)


class ParseError(Exception):
    pass


# The labels skipif/onlyif lines are read against. PostgreSQL is one server, so records
# for a one-shard Tessera (`onlyif single-shard`) hold for it too.
ENGINE = "postgres"
LABELS = {"postgres", "single-shard"}


def parse(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    records = []
    conditions = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") or line == "" or not line.split():
            i += 1
            continue
        toks = line.split()
        if toks[0] in ("skipif", "onlyif") and len(toks) == 2:
            conditions.append((toks[0], toks[1]))
            i += 1
            continue
        if toks[0] in ("hash-threshold", "halt", "control", "subtest", "sleep",
                       "include", "connection", "system"):
            if toks[0] == "halt":
                break
            if toks[0] in ("include", "connection", "system"):
                raise ParseError(f"{path}:{i+1}: '{toks[0]}' is not used by this corpus")
            i += 1
            continue
        if toks[0] not in ("statement", "query"):
            raise ParseError(f"{path}:{i+1}: invalid line: {line!r}")
        rec = Record(toks[0], i, line)
        for kind, label in conditions:
            if (kind == "skipif" and label in LABELS) or (
                kind == "onlyif" and label not in LABELS
            ):
                rec.skip = True
        conditions = []
        rest = toks[1:]
        if rec.kind == "statement":
            if not rest:
                raise ParseError(f"{path}:{i+1}: bare 'statement'")
            if rest[0] == "ok":
                rec.expect = "ok"
            elif rest[0] == "error":
                rec.expect = "error"
                rec.error_regex = " ".join(rest[1:])
            elif rest[0] == "count" and len(rest) >= 2:
                rec.expect = "count"
                rec.count = int(rest[1])
            else:
                raise ParseError(f"{path}:{i+1}: invalid line: {line!r}")
        else:
            if rest and rest[0] == "error":
                rec.expect = "error"
                rec.error_regex = " ".join(rest[1:])
            else:
                rec.expect = "results"
                if rest:
                    rec.types = rest[0]
                    if len(rest) > 1 and rest[1] in SORT_MODES:
                        rec.sort_mode = rest[1]
                        if len(rest) > 2:
                            rec.label = rest[2]
                    elif len(rest) > 1:
                        rec.label = rest[1]
        i += 1
        if i >= len(lines) or lines[i] == "":
            raise ParseError(f"{path}:{rec.line+1}: record without SQL")
        while i < len(lines) and lines[i] != "":
            if lines[i] == "----":
                rec.delim = i
                i += 1
                break
            rec.sql_lines.append(lines[i])
            i += 1
        if rec.delim is not None:
            if rec.kind == "statement" or rec.expect == "error":
                raise ParseError(f"{path}:{rec.line+1}: multi-line error blocks are not "
                                 "used by this corpus; use an inline regex")
            while i < len(lines) and lines[i] != "":
                rec.results.append(lines[i])
                i += 1
        rec.end = i
        records.append(rec)
    return lines, records


# --------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------

TXN_RE = re.compile(r"^\s*(begin|commit|rollback|start\s+transaction|end|savepoint)\b", re.I)
ORDER_BY_RE = re.compile(r"\border\s+by\b", re.I)
CREATE_TABLE_RE = re.compile(r"^\s*create\s+table\b", re.I)

LINT_TYPES = """
select c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
from pg_attribute a join pg_class c on c.oid = a.attrelid
join pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public' and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped
  and a.atttypid not in (21, 23, 20, 700, 701, 25, 1043, 16, 17,
                       1042, 1700, 1082, 1083, 1114, 1184, 1186, 2950, 114, 3802)
order by 1, 2"""

LINT_LEFTOVERS = """
select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public' and c.relkind in ('r','p','v','m','S') order by 1"""


def regex_escape(s):
    """Escape like Rust's regex::escape (spaces stay unescaped)."""
    return re.sub(r"([\\.+*?()|\[\]{}^$#&\-~])", r"\\\1", s)


class FileChecker:
    def __init__(self, args, path):
        self.args = args
        self.path = path
        self.rel = os.path.relpath(path)
        self.pending = os.sep + "pending" + os.sep in os.path.abspath(path)
        self.transactional = os.path.basename(path) == "transactions.slt"
        self.failures = []
        self.warnings = []
        self.replacements = {}  # line index -> (end index, new lines)

    def fail(self, rec, msg):
        where = f"{self.rel}:{rec.line + 1}" if rec is not None else self.rel
        self.failures.append(f"{where}: {msg}")

    def run(self):
        lines, records = parse(self.path)
        dbname = "slt_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(self.path))[0])
        if self.pending:
            dbname += "_pending"
        if self.args.tessera:
            # A running `tessera dev`: one database, the file cleans up after itself.
            admin = None
            conn = Conn(self.args.host, self.args.port, "tessera", "tessera")
        else:
            admin = Conn(self.args.host, self.args.port, self.args.user, "postgres")
            admin.execute(f'drop database if exists "{dbname}" with (force)')
            admin.execute(f'create database "{dbname}" template template0 '
                          "encoding 'UTF8' lc_collate 'C' lc_ctype 'C'")
            conn = Conn(self.args.host, self.args.port, self.args.user, dbname)
        try:
            for rec in records:
                if not rec.skip:
                    self.check_record(conn, rec)
            if conn.idle():
                left = conn.execute(LINT_LEFTOVERS).rows
                if left:
                    self.fail(None, "file leaves relations behind (DROP them at the end): "
                              + ", ".join(r[0] for r in left))
            else:
                self.fail(None, "file ends inside an open transaction")
        finally:
            conn.close()
            if admin is not None:
                admin.execute(f'drop database if exists "{dbname}" with (force)')
                admin.close()
        if self.args.rewrite and self.replacements:
            out = []
            i = 0
            while i < len(lines):
                if i in self.replacements:
                    end, new = self.replacements[i]
                    out.extend(new)
                    i = end
                else:
                    out.append(lines[i])
                    i += 1
            with open(self.path, "w", encoding="utf-8") as f:
                f.write("\n".join(out) + "\n")
        return records

    def lint_static(self, rec):
        if not self.pending and not self.transactional and TXN_RE.match(rec.sql):
            self.fail(rec, "transaction control is only allowed in transactions.slt and under pending/")

    def lint_after_create(self, conn, rec):
        if not conn.idle():
            return
        if not self.pending:
            bad = conn.execute(LINT_TYPES).rows
            if bad:
                self.fail(rec, "unsupported column type(s) outside pending/: "
                          + ", ".join(f"{t}.{c} {ty}" for t, c, ty in bad))

    def check_record(self, conn, rec):
        self.lint_static(rec)
        sql = rec.sql
        try:
            res = conn.execute(sql)
            err = None
        except PgError as e:
            res, err = None, e

        if rec.expect == "error":
            if err is None:
                self.fail(rec, "expected an error, but the statement succeeded")
                return
            if rec.error_regex == "":
                if self.args.rewrite:
                    hdr = f"{rec.kind} error {regex_escape(err.message)}"
                    self.replacements[rec.line] = (rec.line + 1, [hdr])
                else:
                    self.warnings.append(
                        f"{self.rel}:{rec.line + 1}: bare error expectation "
                        f"(PostgreSQL says: {err.message})")
                return
            try:
                pat = re.compile(rec.error_regex)
            except re.error as e:
                self.fail(rec, f"invalid regex {rec.error_regex!r}: {e}")
                return
            if not pat.search(err.message):
                self.fail(rec, f"error message mismatch\n    expected /{rec.error_regex}/"
                          f"\n    actual   {err.message}")
            return

        if err is not None:
            self.fail(rec, f"unexpected error: {err.message}\n    SQL: {sql}")
            return

        if rec.kind == "statement":
            if CREATE_TABLE_RE.match(sql):
                self.lint_after_create(conn, rec)
            if rec.expect == "count" and res.cmd_tuples != rec.count:
                self.fail(rec, f"expected count {rec.count}, got {res.cmd_tuples}")
            return

        # query with results
        letters = "".join(type_letter(o) for o in res.oids)
        if not self.pending:
            bad = [OID_NAMES.get(o, f"oid {o}") for o in res.oids if o not in SUPPORTED_OIDS]
            if bad:
                self.fail(rec, "result column type(s) not supported outside pending/: "
                          + ", ".join(bad))
        if len(res.rows) > 1 and rec.sort_mode not in ("rowsort", "valuesort") \
                and not ORDER_BY_RE.search(sql):
            self.fail(rec, f"{len(res.rows)} rows without ORDER BY: use rowsort")
        actual = sorted_lines(res.rows, rec.sort_mode)
        for v in (x for r in res.rows for x in r):
            if v is not None and "\n" in v:
                self.fail(rec, "a result value contains a newline; the format cannot hold it")
        if any(line == "" for line in actual):
            self.fail(rec, "a result line is empty (whitespace-only value); "
                      "it would end the record")
        if self.args.rewrite:
            parts = [rec.kind, letters]
            if rec.sort_mode:
                parts.append(rec.sort_mode)
            if rec.label:
                parts.append(rec.label)
            new = [" ".join(parts)] + rec.sql_lines + ["----"] + actual
            self.replacements[rec.line] = (rec.end, new)
            return
        if rec.types != letters:
            self.fail(rec, f"column types: expected '{rec.types}', PostgreSQL gives '{letters}'")
        expected = [normalize(x) for x in rec.results]
        if expected != actual:
            diff = ["    expected:"] + ["      " + x for x in expected] + \
                   ["    actual:"] + ["      " + x for x in actual]
            self.fail(rec, "result mismatch\n    SQL: " + sql.replace("\n", "\n         ")
                      + "\n" + "\n".join(diff))


def collect(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, _dirs, names in os.walk(p):
                files.extend(os.path.join(root, n) for n in names if n.endswith(".slt"))
        else:
            files.append(p)
    return sorted(files)


def main():
    global LIBPQ
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("SLT_PG_PORT", "55499")))
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--rewrite", action="store_true",
                    help="write PostgreSQL's results into the files")
    ap.add_argument("--tessera", action="store_true",
                    help="run against a `tessera dev` router instead (no database per file; "
                         "skipif/onlyif read the label 'tessera'); never with --rewrite")
    args = ap.parse_args()
    global ENGINE, LABELS
    if args.tessera:
        if args.rewrite:
            sys.exit("--rewrite takes PostgreSQL's answers, not Tessera's")
        ENGINE = "tessera"
        LABELS.clear()
        LABELS.update({"tessera", "single-shard"})
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("refusing to connect anywhere but the loopback address")
    LIBPQ = load_libpq()
    paths = args.paths or [os.path.dirname(os.path.abspath(__file__))]
    files = collect(paths)
    if not files:
        sys.exit("no .slt files found")
    total_fail = 0
    total_records = 0
    for path in files:
        try:
            fc = FileChecker(args, path)
            records = fc.run()
        except ParseError as e:
            print(f"PARSE ERROR {e}")
            total_fail += 1
            continue
        n = len(records)
        total_records += n
        status = "ok" if not fc.failures else f"{len(fc.failures)} FAILED"
        print(f"{fc.rel}: {n} records, {status}")
        for w in fc.warnings:
            print("  warning: " + w)
        for f in fc.failures:
            print("  " + f)
        total_fail += len(fc.failures)
    print(f"{len(files)} files, {total_records} records, {total_fail} failures")
    sys.exit(1 if total_fail else 0)


if __name__ == "__main__":
    main()
