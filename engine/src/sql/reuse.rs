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
//! that folded the statement's start time (`now()`, `current_date`) is not reusable: it
//! returns `None`, and the caller binds each time as before; so does one with a subquery,
//! whose plan keeps the subquery's rows for the rest of its statement.

use std::cell::{Cell, RefCell};

use protocol::schema::{QueryResult, TableSchema};
use protocol::{DataType, Result, Value};
use sqlparser::ast::Statement;

use super::{Binder, Plan, bind, prepare_params, run_plan_read};
use crate::txn::{KeyRange, ReadTxn, RowIter};

/// A read-only statement, bound once.
pub struct BoundRead {
    plan: Plan,
    param_types: Vec<DataType>,
    /// Every table whose schema binding read (existing or not), in first-read order.
    pub tables: Vec<String>,
}

/// Binds a plain read-only query for reuse; `None` if its plan cannot be reused (not a
/// query, a write, or it folded the statement's time).
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
    let plan = bind(stmt, &mut binder)?;
    if binder.folded_now || binder.made_subquery || reads.other.get() {
        return Ok(None);
    }
    let param_types = binder.param_types();
    drop(binder);
    Ok(Some(BoundRead {
        plan,
        param_types,
        tables: reads.tables.into_inner(),
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
