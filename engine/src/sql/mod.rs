//! The SQL executor of one shard: parse, bind, plan and run statements over a transaction.
//!
//! ```text
//!  SQL text ─parse─► sqlparser AST ─bind─► Plan (names resolved, types checked)
//!                                            │
//!             describe ◄── parameter types, result columns
//!                                            │
//!                      execute/query ─► exec (scans via ReadTxn, writes via WriteTxn)
//! ```
//! The executor reaches data only through [`crate::txn`]'s `ReadTxn` and `WriteTxn`, so the
//! same code runs on a shard's redb transaction or on any other implementation (the router
//! runs its merge step with it, and the tests use an in-memory one). Errors carry the
//! SQLSTATE PostgreSQL would report; nothing derived from SQL input panics.

mod access;
mod aggregate;
pub mod alter;
mod arrays;
mod bind;
mod bind_window;
mod checks;
mod copy;
mod datetime;
mod ddl;
mod dml;
mod exec;
mod explain;
pub use aggregate::is_aggregate;
pub use expr::QUERY_MEMORY;
mod expr;
mod foreign_keys;
mod functions;
pub mod index_ddl;
pub mod locking;
mod outer_refs;
mod parse;
mod plan;
mod query;
mod recursive;
pub mod reuse;
#[cfg(test)]
mod tests;
mod types;
mod upsert;
mod window;

use protocol::schema::{QueryResult, ResultColumn, TableSchema};
use protocol::{DataType, Error, Result, Value, sqlstate};
pub use sqlparser::ast::Statement;

use crate::txn::{ReadTxn, WriteTxn};
use bind::Binder;
use expr::Ctx;
use plan::QueryPlan;

/// Parses one or more statements with PostgreSQL's dialect; syntax errors are 42601.
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    parse::parse(sql)
}

/// Builds the schema a CREATE TABLE declares; a table without a PRIMARY KEY is 0A000.
pub fn schema_from_create(stmt: &Statement) -> Result<TableSchema> {
    ddl::schema_from_create(stmt)
}

/// True if the statement only reads: SELECT (without FOR UPDATE/SHARE), VALUES, and EXPLAIN
/// of those.
pub fn is_read_only(stmt: &Statement) -> bool {
    match stmt {
        Statement::Query(q) => q.locks.is_empty() && query_reads_only(&q.body),
        Statement::Explain {
            statement, analyze, ..
        } => !*analyze || is_read_only(statement),
        Statement::ShowVariable { .. } | Statement::ShowVariables { .. } => true,
        _ => false,
    }
}

fn query_reads_only(body: &sqlparser::ast::SetExpr) -> bool {
    use sqlparser::ast::SetExpr;
    match body {
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => true,
        SetExpr::Query(q) => q.locks.is_empty() && query_reads_only(&q.body),
        SetExpr::SetOperation { left, right, .. } => {
            query_reads_only(left) && query_reads_only(right)
        }
        _ => false,
    }
}

/// A bound statement.
enum Plan {
    Query(Box<QueryPlan>),
    Insert(Box<dml::InsertPlan>),
    Update(Box<dml::UpdatePlan>),
    Delete(Box<dml::DeletePlan>),
    /// DDL binds nothing ahead of running.
    Ddl,
}

fn bind(stmt: &Statement, binder: &mut Binder) -> Result<Plan> {
    Ok(match stmt {
        Statement::Query(q) => Plan::Query(Box::new(binder.query(q)?)),
        Statement::Insert(i) => Plan::Insert(Box::new(dml::bind_insert(binder, i)?)),
        Statement::Update(u) => Plan::Update(Box::new(dml::bind_update(binder, u)?)),
        Statement::Delete(d) => Plan::Delete(Box::new(dml::bind_delete(binder, d)?)),
        Statement::CreateTable(_)
        | Statement::Drop { .. }
        | Statement::AlterTable(_)
        | Statement::CreateIndex(_)
        | Statement::Truncate(_) => Plan::Ddl,
        other => return Err(unsupported_statement(other)),
    })
}

fn unsupported_statement(stmt: &Statement) -> Error {
    let text = stmt.to_string();
    let head: Vec<&str> = text.split_whitespace().take(2).collect();
    Error::unsupported(format!(
        "statement not supported by the shard executor: {}",
        head.join(" ")
    ))
}

/// Converts parameter values to the types binding inferred (a text-format `'42'` bound to an
/// integer column becomes 42), and checks every referenced parameter was supplied.
fn prepare_params(params: &[Value], types: &[DataType]) -> Result<Vec<Value>> {
    if params.len() < types.len() {
        return Err(Error::new(
            sqlstate::UNDEFINED_PARAMETER,
            format!("there is no parameter ${}", params.len() + 1),
        ));
    }
    params
        .iter()
        .enumerate()
        .map(|(i, v)| match (types.get(i), v) {
            (Some(t), Value::Text(s)) if !t.is_text() => t.parse_text(s),
            (Some(t), v) if t.is_integer() || *t == DataType::Float4 || *t == DataType::Float8 => {
                t.coerce(v.clone())
            }
            (Some(t), v) if t.accepts_assignment(v) => t.coerce(v.clone()),
            (_, v) => Ok(v.clone()),
        })
        .collect()
}

fn run_plan_read(plan: &Plan, params: &[Value], txn: &dyn ReadTxn) -> Result<QueryResult> {
    match plan {
        Plan::Query(q) => {
            let ctx = Ctx::new(txn, params);
            let rows = exec::run_query(q, &ctx, None)?;
            let affected = rows.len() as u64;
            Ok(QueryResult {
                columns: q.columns.clone(),
                rows,
                tag: "SELECT".into(),
                affected,
            })
        }
        _ => Err(Error::new(
            sqlstate::READ_ONLY_SQL_TRANSACTION,
            "cannot execute a write in a read-only transaction",
        )),
    }
}

/// Runs a read-only statement.
pub fn query(stmt: &Statement, params: &[Value], txn: &dyn ReadTxn) -> Result<QueryResult> {
    if !is_read_only(stmt) {
        return Err(Error::new(
            sqlstate::READ_ONLY_SQL_TRANSACTION,
            "cannot execute this statement in a read-only transaction",
        ));
    }
    if let Statement::Explain {
        statement, analyze, ..
    } = stmt
    {
        if *analyze {
            return Err(Error::unsupported("EXPLAIN ANALYZE is not supported"));
        }
        let mut binder = Binder::new(txn);
        let plan = bind(statement, &mut binder)?;
        let rows: Vec<Vec<Value>> = explain::lines(&plan)
            .into_iter()
            .map(|l| vec![Value::Text(l)])
            .collect();
        return Ok(QueryResult {
            columns: vec![ResultColumn {
                name: "QUERY PLAN".into(),
                data_type: DataType::Text,
            }],
            affected: rows.len() as u64,
            rows,
            tag: "EXPLAIN".into(),
        });
    }
    if matches!(
        stmt,
        Statement::ShowVariable { .. } | Statement::ShowVariables { .. }
    ) {
        return Err(unsupported_statement(stmt));
    }
    let mut binder = Binder::new(txn);
    let plan = bind(stmt, &mut binder)?;
    let params = prepare_params(params, &binder.param_types())?;
    run_plan_read(&plan, &params, txn)
}

/// Runs any supported statement inside a write transaction.
pub fn execute(stmt: &Statement, params: &[Value], txn: &mut dyn WriteTxn) -> Result<QueryResult> {
    match stmt {
        Statement::CreateTable(_) => return ddl::create_table(stmt, txn),
        Statement::Drop { .. } => return ddl::drop_table(stmt, txn),
        Statement::Truncate(_) => return ddl::truncate(stmt, txn),
        Statement::AlterTable(_) => return alter::alter_table(stmt, txn),
        Statement::CreateIndex(ci) => return index_ddl::create_index(ci, txn),
        Statement::Explain { .. } => return query(stmt, params, &*txn),
        Statement::Copy { .. } => return copy::copy_rows(stmt, params, txn),
        Statement::Query(q) if !q.locks.is_empty() => return locking::run(stmt, q, params, txn),
        _ => {}
    }
    let (plan, params) = {
        let mut binder = Binder::new(&*txn);
        let plan = bind(stmt, &mut binder)?;
        let params = prepare_params(params, &binder.param_types())?;
        (plan, params)
    };
    match &plan {
        Plan::Insert(p) => dml::run_insert(p, txn, &params),
        Plan::Update(p) => dml::run_update(p, txn, &params),
        Plan::Delete(p) => dml::run_delete(p, txn, &params),
        Plan::Query(_) | Plan::Ddl => run_plan_read(&plan, &params, &*txn),
    }
}

/// Parameter types and result columns of a statement, without running it.
pub fn describe(stmt: &Statement, txn: &dyn ReadTxn) -> Result<(Vec<DataType>, Vec<ResultColumn>)> {
    let mut binder = Binder::new(txn);
    let plan = bind(stmt, &mut binder)?;
    let columns = match &plan {
        Plan::Query(q) => q.columns.clone(),
        Plan::Insert(p) => p.returning.columns.clone(),
        Plan::Update(p) => p.returning.columns.clone(),
        Plan::Delete(p) => p.returning.columns.clone(),
        Plan::Ddl => vec![],
    };
    Ok((binder.param_types(), columns))
}
