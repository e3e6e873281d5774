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
//! the worker, as it would be by the blocking thread. A refused read has read at most a few rows of a snapshot and changed
//! nothing, so running it again elsewhere is invisible to the client.

use std::cell::Cell;
use std::ops::ControlFlow;

use protocol::schema::TableSchema;
use protocol::{Error, Result, Value};
use sqlparser::ast::{Expr, Query, SetExpr, Statement, TableFactor, Visit, Visitor};

use crate::txn::{KeyRange, ReadTxn, RowIter};

/// Rows a point read may fetch before it is sent to a blocking thread.
const MAX_GETS: usize = 64;

const NOT_A_POINT_READ: &str = "not a point read";

/// True if `stmt` is a plain `SELECT` from one table, with no WITH, join, subquery, set
/// operation or function call: run through [`PointsOnly`], it either fetches a few rows by
/// key or is refused at once.
pub fn is_point_shaped(stmt: &Statement) -> bool {
    let Statement::Query(q) = stmt else {
        return false;
    };
    if q.with.is_some() || !q.locks.is_empty() {
        return false;
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return false;
    };
    let [from] = select.from.as_slice() else {
        return false;
    };
    if !from.joins.is_empty() || !matches!(from.relation, TableFactor::Table { args: None, .. }) {
        return false;
    }
    /// Counts queries (the statement's own is the first) and stops at a second one or at a
    /// function call.
    struct Plain(usize);
    impl Visitor for Plain {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.0 += 1;
            if self.0 > 1 {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            use sqlparser::ast::BinaryOperator as B;
            match expr {
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
    stmt.visit(&mut Plain(0)).is_continue()
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

fn refused() -> Error {
    Error::new(protocol::error::sqlstate::INTERNAL_ERROR, NOT_A_POINT_READ)
}

impl ReadTxn for PointsOnly<'_> {
    fn schema(&self, table: &str) -> Result<Option<TableSchema>> {
        self.inner.schema(table)
    }

    fn schemas(&self) -> Result<Vec<TableSchema>> {
        self.inner.schemas()
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
}
