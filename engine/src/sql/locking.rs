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
//! with each other too, which is stricter than PostgreSQL but never weaker. SKIP LOCKED and
//! locking clauses over joins are refused.

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
    if q.locks
        .iter()
        .any(|l| matches!(l.nonblock, Some(NonBlock::SkipLocked)))
    {
        return Err(Error::unsupported(
            "SELECT … SKIP LOCKED is not supported yet",
        ));
    }
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
        let fetch = match &select.selection {
            Some(p) => format!("SELECT * FROM {} WHERE {p}", from.relation),
            None => format!("SELECT * FROM {}", from.relation),
        };
        let fetch = super::parse(&fetch)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::internal("empty fetch"))?;
        let plan = bind(&fetch, &mut binder)?;
        let params = prepare_params(params, &binder.param_types())?;
        (schema, run_plan_read(&plan, &params, &*txn)?.rows)
    };
    for row in &rows {
        let key = encode_key(&schema.key_of(row));
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
    let mut binder = Binder::new(&*txn);
    let plan = bind(&stmt, &mut binder)?;
    let params = prepare_params(params, &binder.param_types())?;
    run_plan_read(&plan, &params, &*txn)
}
