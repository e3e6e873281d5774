//! Golden tests: SQL scripts in `testdata/` run against an in-memory transaction, and their
//! printed results must match the expected text that follows each statement.
//!
//! A script is a sequence of blocks: SQL, a `----` line, the expected output, a blank line.
//! Run with `UPDATE_GOLDENS=1` to rewrite the expectations from actual output (then review
//! the diff: a golden is only as good as the reading it got).

use std::collections::BTreeMap;
use std::ops::Bound;

use protocol::schema::{QueryResult, TableSchema};
use protocol::{DataType, Error, Result, Value};

use super::parse::internal_type_name;
use crate::txn::{KeyRange, ReadTxn, RowIter, WriteTxn};

/// A BTreeMap-backed transaction: tables by name, rows by encoded key.
#[derive(Default, Clone)]
pub struct MemTxn {
    tables: BTreeMap<String, MemTable>,
}

type MemTable = (TableSchema, BTreeMap<Vec<u8>, Vec<Value>>);

impl MemTxn {
    fn table(&self, name: &str) -> Result<&MemTable> {
        self.tables
            .get(name)
            .ok_or_else(|| Error::undefined_table(name))
    }
}

impl ReadTxn for MemTxn {
    fn schema(&self, table: &str) -> Result<Option<TableSchema>> {
        Ok(self.tables.get(table).map(|(s, _)| s.clone()))
    }
    fn schemas(&self) -> Result<Vec<TableSchema>> {
        Ok(self.tables.values().map(|(s, _)| s.clone()).collect())
    }
    fn scan(&self, table: &str, range: KeyRange) -> Result<RowIter<'_>> {
        let (_, rows) = self.table(table)?;
        // BTreeMap::range panics on inverted ranges; a real store must not see them either.
        if let (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) =
            (&range.0, &range.1)
        {
            assert!(l <= u, "inverted key range");
        }
        Ok(Box::new(
            rows.range(range).map(|(k, v)| Ok((k.clone(), v.clone()))),
        ))
    }
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<Value>>> {
        Ok(self.table(table)?.1.get(key).cloned())
    }
}

impl WriteTxn for MemTxn {
    fn next_rowid(&mut self) -> Result<i64> {
        static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
        Ok(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    fn put(&mut self, table: &str, key: Vec<u8>, row: Vec<Value>) -> Result<()> {
        let (schema, rows) = self
            .tables
            .get_mut(table)
            .ok_or_else(|| Error::undefined_table(table))?;
        assert_eq!(row.len(), schema.columns.len(), "row width");
        rows.insert(key, row);
        Ok(())
    }
    fn delete(&mut self, table: &str, key: &[u8]) -> Result<()> {
        self.tables
            .get_mut(table)
            .ok_or_else(|| Error::undefined_table(table))?
            .1
            .remove(key);
        Ok(())
    }
    fn create_table(&mut self, schema: TableSchema) -> Result<()> {
        self.tables
            .insert(schema.name.clone(), (schema, BTreeMap::new()));
        Ok(())
    }
    fn drop_table(&mut self, name: &str) -> Result<()> {
        self.tables.remove(name);
        Ok(())
    }
    fn alter_table(&mut self, schema: TableSchema) -> Result<()> {
        let (old, _) = self
            .tables
            .get_mut(&schema.name)
            .ok_or_else(|| Error::undefined_table(&schema.name))?;
        *old = schema;
        Ok(())
    }
}

fn show_result(r: &QueryResult) -> String {
    let mut out = String::new();
    if !r.columns.is_empty() {
        let header: Vec<String> = r
            .columns
            .iter()
            .map(|c| format!("{}:{}", c.name, internal_type_name(&c.data_type)))
            .collect();
        out.push_str(&header.join(" | "));
        out.push('\n');
        for row in &r.rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&r.columns)
                .map(|(v, c)| v.to_pg_text(&c.data_type).unwrap_or_else(|| "NULL".into()))
                .collect();
            out.push_str(&cells.join(" | "));
            out.push('\n');
        }
    }
    if r.tag != "SELECT" || r.columns.is_empty() {
        out.push_str(&r.command_tag());
        out.push('\n');
    }
    out
}

fn show_error(e: &Error) -> String {
    let mut out = format!("ERROR {}: {}\n", e.code, e.message);
    if let Some(d) = &e.detail {
        out.push_str(&format!("DETAIL: {d}\n"));
    }
    out
}

/// Runs every statement of `sql` (through `query` for reads, to exercise both entries).
pub fn run_sql(txn: &mut MemTxn, sql: &str) -> String {
    let stmts = match super::parse(sql) {
        Ok(s) => s,
        Err(e) => return show_error(&e),
    };
    let mut out = String::new();
    for stmt in &stmts {
        // A failed statement rolls back, as the transaction around it would.
        let before = txn.clone();
        let result = if super::is_read_only(stmt) {
            super::query(stmt, &[], txn)
        } else {
            super::execute(stmt, &[], txn)
        };
        match result {
            Ok(r) => out.push_str(&show_result(&r)),
            Err(e) => {
                *txn = before;
                out.push_str(&show_error(&e));
                break;
            }
        }
    }
    out
}

fn run_script(path: &str) {
    let full = format!("{}/src/sql/testdata/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    let mut txn = MemTxn::default();
    let mut rewritten = String::new();
    let mut failures = Vec::new();
    let mut lines = text.lines().peekable();
    loop {
        // Leading comments and blank lines pass through.
        while let Some(l) = lines.peek() {
            if l.trim().is_empty() || l.starts_with('#') {
                rewritten.push_str(l);
                rewritten.push('\n');
                lines.next();
            } else {
                break;
            }
        }
        let mut sql = String::new();
        let mut saw_separator = false;
        for l in lines.by_ref() {
            if l == "----" {
                saw_separator = true;
                break;
            }
            sql.push_str(l);
            sql.push('\n');
        }
        if sql.trim().is_empty() {
            break;
        }
        assert!(saw_separator, "{path}: statement without ---- : {sql}");
        let mut expected = String::new();
        for l in lines.by_ref() {
            if l.is_empty() {
                break;
            }
            expected.push_str(l);
            expected.push('\n');
        }
        let actual = run_sql(&mut txn, &sql);
        if actual != expected {
            failures.push(format!(
                "--- {path}\n{sql}expected:\n{expected}actual:\n{actual}"
            ));
        }
        rewritten.push_str(&sql);
        rewritten.push_str("----\n");
        rewritten.push_str(&actual);
        rewritten.push('\n');
    }
    if std::env::var("UPDATE_GOLDENS").is_ok() {
        std::fs::write(&full, rewritten.trim_end().to_string() + "\n")
            .unwrap_or_else(|e| panic!("{full}: {e}"));
        return;
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

macro_rules! golden {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(#[test]
        fn $name() {
            run_script($file);
        })*
    };
}

golden! {
    golden_ddl => "ddl.txt",
    golden_insert => "insert.txt",
    golden_expressions => "expressions.txt",
    golden_select => "select.txt",
    golden_aggregates => "aggregates.txt",
    golden_update_delete => "update_delete.txt",
    golden_joins => "joins.txt",
    golden_subqueries => "subqueries.txt",
    golden_pg_compat => "pg_compat.txt",
    golden_explain => "explain.txt",
}

fn setup() -> MemTxn {
    let mut txn = MemTxn::default();
    let out = run_sql(
        &mut txn,
        "CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL, score float8, v varchar(3));",
    );
    assert_eq!(out, "CREATE TABLE\n");
    txn
}

fn one(sql: &str) -> super::Statement {
    let mut stmts = super::parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(stmts.len(), 1);
    stmts.remove(0)
}

#[test]
fn parameters_are_typed_from_context() {
    let txn = setup();
    type Case<'a> = (&'a str, &'a [DataType], &'a [(&'a str, DataType)]);
    let cases: &[Case] = &[
        (
            "SELECT name FROM t WHERE id = $1",
            &[DataType::Int4],
            &[("name", DataType::Text)],
        ),
        (
            "SELECT $1::int8 AS x",
            &[DataType::Int8],
            &[("x", DataType::Int8)],
        ),
        (
            "INSERT INTO t (id, name, v) VALUES ($1, $2, $3)",
            &[DataType::Int4, DataType::Text, DataType::Varchar(Some(3))],
            &[],
        ),
        (
            "UPDATE t SET score = $2 WHERE id = $1 RETURNING id",
            &[DataType::Int4, DataType::Float8],
            &[("id", DataType::Int4)],
        ),
        (
            "SELECT count(*) FROM t WHERE name LIKE $1 LIMIT $2",
            &[DataType::Text, DataType::Int8],
            &[("count", DataType::Int8)],
        ),
        (
            "SELECT $1",
            &[DataType::Text],
            &[("?column?", DataType::Text)],
        ),
        (
            "DELETE FROM t WHERE id IN ($1, $2)",
            &[DataType::Int4, DataType::Int4],
            &[],
        ),
        (
            "SELECT id + $1 FROM t",
            &[DataType::Int4],
            &[("?column?", DataType::Int4)],
        ),
    ];
    for (sql, params, columns) in cases {
        let (p, c) = super::describe(&one(sql), &txn).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(&p, params, "{sql}");
        let c: Vec<(&str, DataType)> = c.iter().map(|c| (c.name.as_str(), c.data_type)).collect();
        assert_eq!(&c, columns, "{sql}");
    }
}

#[test]
fn parameters_bind_and_convert() {
    let mut txn = setup();
    let insert = one("INSERT INTO t (id, name, score) VALUES ($1, $2, $3)");
    let params = [
        Value::Int(1),
        Value::Text("a".into()),
        Value::Text("2.5".into()),
    ];
    assert_eq!(
        super::execute(&insert, &params, &mut txn).map(|r| r.affected),
        Ok(1)
    );
    // A text-format parameter converts to the inferred integer type.
    let select = one("SELECT name, score FROM t WHERE id = $1");
    let r =
        super::query(&select, &[Value::Text("1".into())], &txn).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.rows,
        vec![vec![Value::Text("a".into()), Value::Float(2.5)]]
    );
    let missing = super::query(&select, &[], &txn).map(|_| ()).unwrap_err();
    assert_eq!(missing.code, "42P02");
    let bad = super::query(&select, &[Value::Text("x".into())], &txn)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(bad.code, "22P02");
}

#[test]
fn values_match_their_column_types() {
    let mut txn = setup();
    run_sql(
        &mut txn,
        "INSERT INTO t (id, name, score) VALUES (1, 'a', 2)",
    );
    let sqls = [
        "SELECT 1 AS a UNION ALL SELECT 2.5",
        "SELECT score FROM t",
        "SELECT CASE WHEN true THEN 1 ELSE 2.5 END, coalesce(id, 1.5), greatest(1, 2.5), id / 1.0 FROM t",
        "VALUES (1), (2.5)",
        "SELECT id::float4, sum(id), avg(id), -score FROM t GROUP BY id, score",
        "SELECT ARRAY[id, score], array_agg(name), unnest(ARRAY[1.5]) FROM t GROUP BY id, score",
    ];
    for sql in sqls {
        let r = super::query(&one(sql), &[], &txn).unwrap_or_else(|e| panic!("{sql}: {e}"));
        for row in &r.rows {
            for (v, c) in row.iter().zip(&r.columns) {
                let ok = match v {
                    Value::Null => true,
                    Value::Int(_) => c.data_type.is_integer(),
                    Value::Float(_) => matches!(c.data_type, DataType::Float4 | DataType::Float8),
                    Value::Text(_) => c.data_type.is_text(),
                    Value::Bool(_) => c.data_type == DataType::Bool,
                    Value::Bytes(_) => c.data_type == DataType::Bytea,
                    Value::Numeric(_) => matches!(c.data_type, DataType::Numeric(_)),
                    Value::Date(_) => c.data_type == DataType::Date,
                    Value::Time(_) => c.data_type == DataType::Time,
                    Value::Timestamp(_) => c.data_type == DataType::Timestamp,
                    Value::TimestampTz(_) => c.data_type == DataType::TimestampTz,
                    Value::Interval(_) => c.data_type == DataType::Interval,
                    Value::Uuid(_) => c.data_type == DataType::Uuid,
                    Value::Json(_) => c.data_type == DataType::Json,
                    Value::Jsonb(_) => c.data_type == DataType::Jsonb,
                    Value::BpChar(_) => matches!(c.data_type, DataType::Bpchar(_)),
                    Value::Array(_) => {
                        matches!(c.data_type, DataType::Array(_) | DataType::Vector(_))
                    }
                };
                assert!(ok, "{sql}: {v:?} in a {} column", c.data_type);
            }
        }
    }
}

#[test]
fn query_refuses_writes() {
    let txn = setup();
    let err = super::query(&one("DELETE FROM t"), &[], &txn)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code, "25006");
}

#[test]
fn schema_from_create_keys_rows() {
    // Without a primary key, a hidden row id keys the rows.
    let s =
        super::schema_from_create(&one("CREATE TABLE x (a int)")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.rowid(), Some(1));
    assert_eq!(s.user_columns().count(), 1);
    let s = super::schema_from_create(&one(
        "CREATE TABLE x (a int, b text DEFAULT 'q', PRIMARY KEY (b, a))",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.primary_key, vec![1, 0]);
    assert!(!s.columns[0].nullable && !s.columns[1].nullable);
    assert_eq!(s.columns[1].default.as_deref(), Some("'q'"));
}

#[test]
fn access_paths_read_only_what_they_need() {
    use super::plan::{Access, Node, Source};
    let txn = setup();
    let access = |sql: &str| -> Access {
        let mut b = super::bind::Binder::new(&txn);
        let super::Statement::Query(q) = one(sql) else {
            panic!("not a query")
        };
        let plan = b.query(&q).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let Node::Select(s) = plan.body else {
            panic!("not a select")
        };
        let Source::Scan { access, .. } = s.source else {
            panic!("not a scan")
        };
        access
    };
    assert!(matches!(
        access("SELECT * FROM t WHERE id = 3"),
        Access::Key(_)
    ));
    assert!(matches!(
        access("SELECT * FROM t WHERE 3 = id AND name = 'x'"),
        Access::Key(_)
    ));
    assert!(matches!(
        access("SELECT * FROM t WHERE id > 3 AND id <= 9"),
        Access::Range {
            lower: Some(_),
            upper: Some(_)
        }
    ));
    assert!(matches!(
        access("SELECT * FROM t WHERE name = 'x'"),
        Access::Full
    ));
    assert!(matches!(
        access("SELECT * FROM t WHERE id = 1 OR id = 2"),
        Access::Full
    ));
}

#[test]
fn like_patterns() {
    use super::expr::like;
    let cases = [
        ("abc", "a%", true),
        ("abc", "%c", true),
        ("abc", "a_c", true),
        ("abc", "a_", false),
        ("a%c", "a\\%c", true),
        ("abc", "a\\%c", false),
        ("", "%", true),
        ("mississippi", "%iss%ppi", true),
        ("mississippi", "%iss%ppx", false),
    ];
    for (s, p, want) in cases {
        assert_eq!(like(s, p, Some('\\')), Ok(want), "{s} LIKE {p}");
    }
}

#[test]
fn failing_writes_leave_nothing_behind() {
    let mut txn = setup();
    assert_eq!(
        run_sql(
            &mut txn,
            "INSERT INTO t (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c');"
        ),
        "INSERT 0 3\n"
    );
    // Executed directly (no harness rollback): the statement itself must not half-apply.
    for sql in [
        "UPDATE t SET id = 1",
        "INSERT INTO t (id, name) VALUES (4, 'd'), (1, 'x')",
        "UPDATE t SET id = id % 2",
    ] {
        let err = super::execute(&one(sql), &[], &mut txn)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.code, "23505", "{sql}");
        let r = super::query(&one("SELECT id, name FROM t ORDER BY id"), &[], &txn)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.rows.len(), 3, "{sql}");
        assert_eq!(
            r.rows[0],
            vec![Value::Int(1), Value::Text("a".into())],
            "{sql}"
        );
    }
    // Keys may shift past each other within one statement.
    let r = super::execute(
        &one("UPDATE t SET id = 4 - id WHERE id <> 2"),
        &[],
        &mut txn,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.affected, 2);
    let r = super::query(&one("SELECT name FROM t ORDER BY id"), &[], &txn)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.rows,
        vec![
            vec![Value::Text("c".into())],
            vec![Value::Text("b".into())],
            vec![Value::Text("a".into())]
        ]
    );
}

/// A statement whose intermediate rows pass the memory budget fails with 53200 instead of
/// growing (nextest runs each test in its own process, so the budget here is this test's).
#[test]
fn memory_budget_fails_with_53200() {
    super::QUERY_MEMORY.store(256 << 10, std::sync::atomic::Ordering::Relaxed);
    let mut txn = MemTxn::default();
    let mut values = Vec::new();
    for i in 0..300 {
        values.push(format!("({i}, 'row {i}')"));
    }
    run_sql(&mut txn, "CREATE TABLE big (id int PRIMARY KEY, v text)");
    run_sql(
        &mut txn,
        &format!("INSERT INTO big VALUES {}", values.join(", ")),
    );
    // 300 rows fit; their 90 000-row cross product does not.
    let ok = super::query(&one("SELECT count(*) FROM big"), &[], &txn);
    assert!(ok.is_ok(), "{ok:?}");
    let err = super::query(&one("SELECT count(*) FROM big a, big b"), &[], &txn)
        .expect_err("a cross product past the budget must fail");
    assert_eq!(err.code, "53200", "{err}");
    // An equi-join from the WHERE clause is a hash join: its output stays small.
    let r = super::query(
        &one("SELECT count(*) FROM big a, big b WHERE a.id = b.id"),
        &[],
        &txn,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.rows, vec![vec![Value::Int(300)]]);
}

/// A bound read is reusable only when its plan holds for any execution: it names the tables
/// whose schemas it read, and a plan that folded the statement's time or keeps a subquery's
/// rows is not offered for reuse. A reused plan gives what binding afresh gives.
#[test]
fn bound_reads_are_reusable_only_when_nothing_execution_bound_is_folded_in() {
    let mut txn = setup();
    run_sql(
        &mut txn,
        "INSERT INTO t (id, name) VALUES (1, 'one'), (2, 'two');",
    );
    // (statement, the tables binding read and whether the plan is reusable; None where
    // bind_read binds nothing: a failed bind, a write, a locking read)
    type Case<'a> = (&'a str, Option<(&'a [&'a str], bool)>);
    let cases: &[Case] = &[
        ("SELECT name FROM t WHERE id = $1", Some((&["t"], true))),
        ("SELECT name FROM missing WHERE id = $1", None),
        (
            "SELECT name, now() FROM t WHERE id = $1",
            Some((&["t"], false)),
        ),
        (
            "SELECT name FROM t WHERE id = $1 AND current_date > '2000-01-01'",
            Some((&["t"], false)),
        ),
        (
            "SELECT name, 'today'::date FROM t WHERE id = $1",
            Some((&["t"], false)),
        ),
        (
            "SELECT name, 'epoch'::date FROM t WHERE id = $1",
            Some((&["t"], true)),
        ),
        (
            "SELECT name FROM t WHERE id = (SELECT max(id) FROM t)",
            Some((&["t"], false)),
        ),
        ("UPDATE t SET name = 'x' WHERE id = $1", None),
        ("SELECT name FROM t FOR UPDATE", None),
    ];
    for (sql, expected) in cases {
        let got = match super::reuse::bind_read(&one(sql), &txn) {
            Ok(Some(b)) => Some((b.tables.clone(), b.reusable)),
            Ok(None) | Err(_) => None,
        };
        let expected = expected.map(|(t, r)| (t.iter().map(|t| t.to_string()).collect(), r));
        assert_eq!(got, expected, "{sql}");
    }
    let stmt = one("SELECT name FROM t WHERE id = $1");
    let bound = super::reuse::bind_read(&stmt, &txn).unwrap().unwrap();
    for id in [1, 2, 3] {
        let params = [Value::Text(id.to_string())];
        let reused = super::reuse::run_bound(&bound, &params, &txn).unwrap();
        let fresh = super::query(&stmt, &params, &txn).unwrap();
        assert_eq!(show_result(&reused), show_result(&fresh), "id {id}");
    }
}
