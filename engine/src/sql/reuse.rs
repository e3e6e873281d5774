//! Bound read plans that a prepared statement can run again without binding.
//!
//! Binding (names resolved against the catalog, types inferred, expressions compiled) costs
//! more than fetching one row by key. A statement the client prepared is sent with the same
//! text every time, so its bound plan can be kept with its parse and run again, as long as
//! nothing the binding read has changed:
//!
//! ```text
//!  bind_read(stmt) ──► BoundRead { plan, parameter types, tables whose schemas it read }
//!                          │ kept (by the caller) with the catalog bytes of those tables
//!  next execution ──► same catalog bytes in this snapshot? ──► run_bound(plan, params)
//!                          │ no: bind again
//! ```
//!
//! Binding reads nothing but table schemas, so the bytes of those schemas are a complete
//! check; [`bind_read`] records every schema it asked for through [`SchemaReads`]. A plan
//! that holds the statement's time (`now()`, `current_date`, a `'now'` or `'today'`
//! literal: anything that read the clock while binding) is not reusable, nor is one with a
//! subquery, whose plan keeps the subquery's rows for the rest of its statement; the caller
//! binds those each time.

use std::cell::{Cell, RefCell};

use protocol::schema::{QueryResult, TableSchema};
use protocol::{DataType, Result, Value};
use sqlparser::ast::Statement;

use super::{Binder, Plan, bind, prepare_params, run_plan_read};
use crate::txn::{KeyRange, ReadTxn, RowIter};

/// A read-only statement, bound.
pub struct BoundRead {
    plan: Plan,
    param_types: Vec<DataType>,
    /// Every table whose schema binding read (existing or not), in first-read order.
    pub tables: Vec<String>,
    /// The plan may serve later executions (over the same catalog entries of `tables`); if
    /// not, it holds something of this execution's (its time, a subquery's rows).
    pub reusable: bool,
}

/// Binds a plain read-only query; `None` if it is not one (a write, EXPLAIN, …).
pub fn bind_read(stmt: &Statement, txn: &dyn ReadTxn) -> Result<Option<BoundRead>> {
    if !matches!(stmt, Statement::Query(_)) || !super::is_read_only(stmt) {
        return Ok(None);
    }
    let reads = SchemaReads {
        inner: txn,
        tables: RefCell::default(),
        other: Cell::new(false),
    };
    let mut binder = Binder::new(&reads);
    let clock = protocol::value::datetime::clock_reads();
    let plan = bind(stmt, &mut binder)?;
    let reusable = !binder.made_subquery
        && !reads.other.get()
        && protocol::value::datetime::clock_reads() == clock;
    let param_types = binder.param_types();
    drop(binder);
    Ok(Some(BoundRead {
        plan,
        param_types,
        tables: reads.tables.into_inner(),
        reusable,
    }))
}

/// Runs a plan [`bind_read`] made, with this execution's parameters.
pub fn run_bound(bound: &BoundRead, params: &[Value], txn: &dyn ReadTxn) -> Result<QueryResult> {
    let params = prepare_params(params, &bound.param_types)?;
    run_plan_read(&bound.plan, &params, txn)
}

/// A `ReadTxn` that remembers which schemas were asked for; anything else binding might
/// read marks the plan as not reusable.
struct SchemaReads<'a> {
    inner: &'a dyn ReadTxn,
    tables: RefCell<Vec<String>>,
    other: Cell<bool>,
}

impl ReadTxn for SchemaReads<'_> {
    fn schema(&self, table: &str) -> Result<Option<TableSchema>> {
        let mut tables = self.tables.borrow_mut();
        if !tables.iter().any(|t| t == table) {
            tables.push(table.to_string());
        }
        self.inner.schema(table)
    }

    fn schemas(&self) -> Result<Vec<TableSchema>> {
        self.other.set(true);
        self.inner.schemas()
    }

    fn scan(&self, table: &str, range: KeyRange) -> Result<RowIter<'_>> {
        self.other.set(true);
        self.inner.scan(table, range)
    }

    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<Value>>> {
        self.other.set(true);
        self.inner.get(table, key)
    }

    fn index_scan(
        &self,
        table: &str,
        index: &str,
        range: KeyRange,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        self.other.set(true);
        self.inner.index_scan(table, index, range)
    }
}
