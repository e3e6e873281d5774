//! Point reads that run on the caller's thread.
//!
//! A statement normally runs on a blocking thread (`spawn_blocking`): it may scan millions of
//! rows or wait for row locks, and must not hold up the async workers that carry every other
//! connection. For the commonest statement of all, a `SELECT` of one row by primary key,
//! that hand-off (wake a pool thread, park it again, wake the worker with the answer) costs
//! more CPU than the read itself. So a read-only autocommit statement whose shape can only
//! fetch rows by key first runs right where it is, through [`PointsOnly`], which serves
//! `get`s and refuses any scan:
//!
//! ```text
//!  SELECT … FROM t WHERE pk = $1 ──► is_point_shaped? ──► PointsOnly over a snapshot
//!                                      │ no                  │ a scan or index scan
//!                                      ▼                     ▼ (NotAPointRead)
//!                                 spawn_blocking ◄────── run it there instead
//! ```
//!
//! The shape check keeps out what could run long without touching a table: WITH (recursive
//! queries), subqueries, joins, set operations, function calls (set-returning functions,
//! `repeat`, …) and pattern matching (LIKE, SIMILAR TO, regular expressions). What is left
//! is a few comparisons per row; a page that is not in memory is still read from disk on
//! the worker, as it would be by the blocking thread. A refused read has read at most a few
//! rows of a snapshot and changed nothing, so running it again elsewhere is invisible to the
//! client.
//!
//! **Inside a transaction** the same goes for writes of that shape (`is_quick_shaped`:
//! `UPDATE … WHERE pk = $1`, a few rows of `INSERT … VALUES`, `DELETE … WHERE pk = $1`),
//! which is most of what an OLTP transaction sends. They run through the transaction's own
//! view in *quick* mode (`TxnView::quick`): gets only, and a row lock only if it is free at
//! once. Anything else (a scan, a lock held by another transaction) is refused; the
//! statement's write and read sets are put back as they were and it runs again on a blocking
//! thread, where it may scan and wait. A lock it took before the refusal stays with the
//! transaction (it is on a row the statement was about to change anyway).

use std::cell::Cell;
use std::ops::ControlFlow;

use protocol::schema::TableSchema;
use protocol::{Error, Result, Value};
use sqlparser::ast::{
    Expr, FromTable, FunctionArguments, Query, SetExpr, Statement, TableFactor, TableWithJoins,
    Visit, Visitor,
};

use crate::txn::{KeyRange, ReadTxn, RowIter};

/// Rows a point read may fetch before it is sent to a blocking thread.
pub const MAX_GETS: usize = 64;

/// The most `VALUES` rows a quick `INSERT` may carry.
const MAX_VALUES_ROWS: usize = 16;

const NOT_A_POINT_READ: &str = "not a point read";

/// True if `stmt` is a plain `SELECT` from one table, with no WITH, join, subquery, set
/// operation or function call: run through [`PointsOnly`], it either fetches a few rows by
/// key or is refused at once.
pub fn is_point_shaped(stmt: &Statement) -> bool {
    match stmt {
        Statement::Query(q) => plain_select(q) && is_plain(stmt, 1),
        _ => false,
    }
}

/// True if `stmt` is point-shaped (above), or a write of the same simplicity: an `UPDATE` or
/// `DELETE` of one table with no FROM, USING, LIMIT or subquery, or an `INSERT` of at most
/// `MAX_VALUES_ROWS` rows of `VALUES`. Inside a transaction such a statement runs on the
/// caller's thread through a view that serves gets and takes row locks only when they are
/// free, and is refused otherwise (see `Shard::execute_in_quickly`).
pub fn is_quick_shaped(stmt: &Statement) -> bool {
    let single = |t: &TableWithJoins| {
        t.joins.is_empty() && matches!(t.relation, TableFactor::Table { args: None, .. })
    };
    let shaped = match stmt {
        Statement::Query(_) => return is_point_shaped(stmt),
        Statement::Update(u) => single(&u.table) && u.from.is_none() && u.limit.is_none(),
        Statement::Delete(d) => {
            let from = match &d.from {
                FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
            };
            matches!(from.as_slice(), [t] if single(t))
                && d.using.is_none()
                && d.limit.is_none()
                && d.tables.is_empty()
        }
        Statement::Insert(i) => i.on.is_none() && i.source.as_ref().is_some_and(|q| {
            q.with.is_none()
                && matches!(q.body.as_ref(), SetExpr::Values(v) if v.rows.len() <= MAX_VALUES_ROWS)
        }),
        _ => false,
    };
    // An INSERT's VALUES is a query of its own; an UPDATE or DELETE has none.
    let queries = usize::from(matches!(stmt, Statement::Insert(_)));
    shaped && is_plain(stmt, queries)
}

/// The body of a point read: one table, no WITH, no locking clause.
fn plain_select(q: &Query) -> bool {
    if q.with.is_some() || !q.locks.is_empty() {
        return false;
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return false;
    };
    let [from] = select.from.as_slice() else {
        return false;
    };
    from.joins.is_empty() && matches!(from.relation, TableFactor::Table { args: None, .. })
}

/// True if `stmt` holds no more than `queries` queries (the statement's own) and nothing
/// whose cost grows without a table's help: function calls (set-returning functions,
/// `repeat`, …; the argument-less SQL keywords such as `CURRENT_TIMESTAMP` excepted) and
/// pattern matching.
fn is_plain(stmt: &Statement, queries: usize) -> bool {
    struct Plain {
        seen: usize,
        allowed: usize,
    }
    impl Visitor for Plain {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.seen += 1;
            if self.seen > self.allowed {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            use sqlparser::ast::BinaryOperator as B;
            match expr {
                Expr::Function(f)
                    if matches!(f.args, FunctionArguments::None) && f.over.is_none() =>
                {
                    ControlFlow::Continue(())
                }
                // Pattern matching costs time in the pattern's and the text's length.
                Expr::Function(_)
                | Expr::Like { .. }
                | Expr::ILike { .. }
                | Expr::SimilarTo { .. }
                | Expr::RLike { .. }
                | Expr::BinaryOp {
                    op:
                        B::PGRegexMatch
                        | B::PGRegexIMatch
                        | B::PGRegexNotMatch
                        | B::PGRegexNotIMatch
                        | B::PGLikeMatch
                        | B::PGILikeMatch
                        | B::PGNotLikeMatch
                        | B::PGNotILikeMatch,
                    ..
                } => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    stmt.visit(&mut Plain {
        seen: 0,
        allowed: queries,
    })
    .is_continue()
}

/// True if `e` is [`PointsOnly`] refusing a scan: run the statement on a blocking thread.
pub fn is_not_a_point_read(e: &Error) -> bool {
    e.code == protocol::error::sqlstate::INTERNAL_ERROR && e.message == NOT_A_POINT_READ
}

/// A reader that fetches rows by key and refuses scans (see the module comment).
pub struct PointsOnly<'a> {
    inner: &'a dyn ReadTxn,
    gets: Cell<usize>,
}

impl<'a> PointsOnly<'a> {
    pub fn new(inner: &'a dyn ReadTxn) -> Self {
        PointsOnly {
            inner,
            gets: Cell::new(0),
        }
    }
}

/// The refusal of a quick statement: run it on a blocking thread instead.
pub fn refused() -> Error {
    Error::new(protocol::error::sqlstate::INTERNAL_ERROR, NOT_A_POINT_READ)
}

impl ReadTxn for PointsOnly<'_> {
    fn schema(&self, table: &str) -> Result<Option<TableSchema>> {
        self.inner.schema(table)
    }

    fn schemas(&self) -> Result<Vec<TableSchema>> {
        self.inner.schemas()
    }

    fn referencing_tables(&self, table: &str) -> Result<Vec<String>> {
        self.inner.referencing_tables(table)
    }

    fn scan(&self, _table: &str, _range: KeyRange) -> Result<RowIter<'_>> {
        Err(refused())
    }

    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<Value>>> {
        let gets = self.gets.get() + 1;
        if gets > MAX_GETS {
            return Err(refused());
        }
        self.gets.set(gets);
        self.inner.get(table, key)
    }

    fn index_scan(
        &self,
        _table: &str,
        _index: &str,
        _range: KeyRange,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        Err(refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_single_table_selects_are_point_shaped() {
        let shaped = |sql: &str| {
            let stmts = crate::sql::parse(sql).unwrap();
            is_point_shaped(&stmts[0])
        };
        assert!(shaped(
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        ));
        assert!(shaped(
            "SELECT * FROM t WHERE a = 1 AND b > 2 ORDER BY b LIMIT 3"
        ));
        for sql in [
            "SELECT count(*) FROM t",
            "SELECT generate_series(1, 100000000) FROM t WHERE k = 1",
            "SELECT * FROM t WHERE k IN (SELECT k FROM u)",
            "SELECT (SELECT 1) FROM t",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION SELECT n + 1 FROM r) SELECT * FROM t",
            "SELECT * FROM t, u",
            "SELECT * FROM t JOIN u ON t.k = u.k",
            "SELECT * FROM t UNION SELECT * FROM u",
            "SELECT * FROM t WHERE k = 1 FOR UPDATE",
            "SELECT 1",
            "SELECT * FROM t WHERE k = 1 AND v LIKE $2",
            "SELECT * FROM t WHERE k = 1 AND v ~ $2",
            "UPDATE t SET v = 1 WHERE k = 1",
        ] {
            assert!(!shaped(sql), "{sql}");
        }
    }

    #[test]
    fn quick_statements_are_single_table_writes_without_subqueries() {
        let quick = |sql: &str| {
            let stmts = crate::sql::parse(sql).unwrap();
            is_quick_shaped(&stmts[0])
        };
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b') RETURNING k",
            "DELETE FROM t WHERE k = $1",
        ] {
            assert!(quick(sql), "{sql}");
        }
        for sql in [
            "UPDATE t SET v = (SELECT max(v) FROM u) WHERE k = 1",
            "UPDATE t SET v = u.v FROM u WHERE t.k = u.k",
            "UPDATE t SET v = repeat('x', 1000000) WHERE k = 1",
            "DELETE FROM t USING u WHERE t.k = u.k",
            "DELETE FROM t WHERE k IN (SELECT k FROM u)",
            "INSERT INTO t SELECT * FROM u",
            "INSERT INTO t VALUES ((SELECT 1))",
            "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
            "SELECT * FROM t WHERE k = 1 FOR UPDATE",
            "CREATE TABLE q (k int)",
        ] {
            assert!(!quick(sql), "{sql}");
        }
    }
}
