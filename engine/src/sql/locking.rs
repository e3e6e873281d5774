//! SELECT … FOR UPDATE / FOR SHARE [NOWAIT]: lock the rows a query returns.
//!
//! ```text
//!  SELECT … FROM t WHERE p FOR UPDATE
//!    1. rows of t matching p (SELECT * FROM t WHERE p, same snapshot)
//!    2. lock each row's key (wait, or 55P03 at once with NOWAIT)
//!    3. a row changed since the snapshot: READ COMMITTED asks the shard to rerun the statement
//!       on a fresh snapshot (the locks are held, so it cannot change again); the stricter
//!       levels have already failed with 40001
//!    4. run the query itself
//! ```
//! FOR SHARE takes the same exclusive row lock as FOR UPDATE: it serialises share lockers
//! with each other too, which is stricter than PostgreSQL but never weaker. Locking clauses
//! over joins are refused.
//!
//! SKIP LOCKED (the job-queue pattern): candidates are tried in the query's ORDER BY, without
//! waiting; rows another transaction holds are skipped, and once LIMIT + OFFSET rows are
//! locked no more are tried. The query then runs over exactly the rows this statement locked.

use protocol::keycode::encode_key;
use protocol::{Error, Result, Value, sqlstate};
use sqlparser::ast::{self, NonBlock, SetExpr, Statement, TableFactor};

use super::bind::Binder;
use super::{bind, prepare_params, run_plan_read};
use crate::txn::{RowLock, WriteTxn};

/// The error a READ COMMITTED statement returns to have the shard rerun it on a new
/// snapshot; it never reaches a client.
pub const RERUN: &str = "TSRUN";

pub fn run(
    stmt: &Statement,
    q: &ast::Query,
    params: &[Value],
    txn: &mut dyn WriteTxn,
) -> Result<protocol::schema::QueryResult> {
    let skip_locked = q
        .locks
        .iter()
        .any(|l| matches!(l.nonblock, Some(NonBlock::SkipLocked)));
    let nowait = q
        .locks
        .iter()
        .any(|l| matches!(l.nonblock, Some(NonBlock::Nowait)));
    let SetExpr::Select(select) = q.body.as_ref() else {
        return Err(Error::unsupported(
            "FOR UPDATE/SHARE is supported on a plain SELECT",
        ));
    };
    let [from] = select.from.as_slice() else {
        return Err(Error::unsupported(
            "FOR UPDATE/SHARE is supported on a SELECT from one table",
        ));
    };
    if !from.joins.is_empty() || !matches!(from.relation, TableFactor::Table { .. }) {
        return Err(Error::unsupported(
            "FOR UPDATE/SHARE is supported on a SELECT from one table",
        ));
    }
    let TableFactor::Table { name, .. } = &from.relation else {
        return Err(Error::unsupported(
            "FOR UPDATE/SHARE is supported on a SELECT from one table",
        ));
    };
    let (schema, rows) = {
        let mut binder = Binder::new(&*txn);
        let schema = binder.table(name)?;
        // Whole stored rows (with the hidden row id, if the table keys rows by one).
        let columns = if schema.rowid().is_some() {
            format!("*, {}", protocol::schema::ROWID_COLUMN)
        } else {
            "*".to_string()
        };
        let mut fetch = match &select.selection {
            Some(p) => format!("SELECT {columns} FROM {} WHERE {p}", from.relation),
            None => format!("SELECT {columns} FROM {}", from.relation),
        };
        if skip_locked && let Some(order) = &q.order_by {
            fetch.push_str(&format!(" {order}"));
        }
        let fetch = super::parse(&fetch)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::internal("empty fetch"))?;
        let plan = bind(&fetch, &mut binder)?;
        let params = prepare_params(params, &binder.param_types())?;
        (schema, run_plan_read(&plan, &params, &*txn)?.rows)
    };
    let wanted = if skip_locked { row_limit(q) } else { None };
    let mut locked: std::collections::HashSet<Vec<u8>> = Default::default();
    for row in &rows {
        if wanted.is_some_and(|n| locked.len() >= n) {
            break;
        }
        let key = encode_key(&schema.key_of(row));
        if skip_locked {
            match txn.lock_row_nowait(&schema.name, &key) {
                Ok(RowLock::Unchanged) => {
                    locked.insert(key);
                }
                Ok(RowLock::Changed(_)) => {
                    return Err(Error::new(RERUN, "row changed while waiting for its lock"));
                }
                Err(e) if e.code == sqlstate::LOCK_NOT_AVAILABLE => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        let outcome = if nowait {
            txn.lock_row_nowait(&schema.name, &key)
        } else {
            txn.lock_row(&schema.name, &key)
        };
        match outcome {
            Ok(RowLock::Unchanged) => {}
            Ok(RowLock::Changed(_)) => {
                return Err(Error::new(RERUN, "row changed while waiting for its lock"));
            }
            Err(e) if nowait && e.code == sqlstate::LOCK_NOT_AVAILABLE => {
                return Err(Error::new(
                    sqlstate::LOCK_NOT_AVAILABLE,
                    format!(
                        "could not obtain lock on row in relation \"{}\"",
                        schema.name
                    ),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    let mut unlocked = q.clone();
    unlocked.locks.clear();
    let stmt = match stmt {
        Statement::Query(_) => Statement::Query(Box::new(unlocked)),
        other => other.clone(),
    };
    if skip_locked {
        let only = OnlyRows {
            inner: &*txn,
            table: &schema.name,
            keys: &locked,
        };
        let mut binder = Binder::new(&only);
        let plan = bind(&stmt, &mut binder)?;
        let params = prepare_params(params, &binder.param_types())?;
        return run_plan_read(&plan, &params, &only);
    }
    let mut binder = Binder::new(&*txn);
    let plan = bind(&stmt, &mut binder)?;
    let params = prepare_params(params, &binder.param_types())?;
    run_plan_read(&plan, &params, &*txn)
}

/// LIMIT + OFFSET when both are constants: how many rows SKIP LOCKED needs to lock.
fn row_limit(q: &ast::Query) -> Option<usize> {
    let number = |e: &ast::Expr| match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse::<usize>().ok(),
            _ => None,
        },
        _ => None,
    };
    match &q.limit_clause {
        Some(ast::LimitClause::LimitOffset {
            limit: Some(limit),
            offset,
            ..
        }) => {
            let offset = match offset {
                Some(o) => number(&o.value)?,
                None => 0,
            };
            Some(number(limit)? + offset)
        }
        _ => None,
    }
}

/// The transaction's data with one table narrowed to the rows a SKIP LOCKED statement locked.
struct OnlyRows<'a> {
    inner: &'a dyn crate::txn::ReadTxn,
    table: &'a str,
    keys: &'a std::collections::HashSet<Vec<u8>>,
}

impl crate::txn::ReadTxn for OnlyRows<'_> {
    fn schema(&self, table: &str) -> Result<Option<protocol::schema::TableSchema>> {
        self.inner.schema(table)
    }

    fn schemas(&self) -> Result<Vec<protocol::schema::TableSchema>> {
        self.inner.schemas()
    }

    fn referencing_tables(&self, table: &str) -> Result<Vec<String>> {
        self.inner.referencing_tables(table)
    }

    fn scan(&self, table: &str, range: crate::txn::KeyRange) -> Result<crate::txn::RowIter<'_>> {
        let rows = self.inner.scan(table, range)?;
        if table != self.table {
            return Ok(rows);
        }
        Ok(Box::new(rows.filter(|r| match r {
            Ok((k, _)) => self.keys.contains(k),
            Err(_) => true,
        })))
    }

    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<Value>>> {
        if table == self.table && !self.keys.contains(key) {
            return Ok(None);
        }
        self.inner.get(table, key)
    }
}
