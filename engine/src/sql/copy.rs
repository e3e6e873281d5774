//! The shard's half of COPY FROM: `COPY t (cols) FROM STDIN` whose rows arrive as the
//! statement's parameters, row after row (the router decodes the client's data and sends
//! each shard its batch this way, see `router::copy`). Each row is inserted exactly as
//! `INSERT INTO t (cols) VALUES ($1, …)` would insert it, bound once per batch.

use protocol::schema::QueryResult;
use protocol::{Error, Result, Value};
use sqlparser::ast::{self, CopySource, CopyTarget};

use super::bind::Binder;
use super::parse::{ident, object_name};
use super::{Plan, bind, dml, prepare_params};
use crate::txn::WriteTxn;

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn copy_rows(
    stmt: &ast::Statement,
    params: &[Value],
    txn: &mut dyn WriteTxn,
) -> Result<QueryResult> {
    let ast::Statement::Copy {
        source: CopySource::Table {
            table_name,
            columns,
        },
        to: false,
        target: CopyTarget::Stdin,
        ..
    } = stmt
    else {
        return Err(Error::unsupported(
            "a shard runs only COPY ... FROM STDIN with its rows as parameters",
        ));
    };
    let table = object_name(table_name)?;
    let schema = txn
        .schema(&table)?
        .ok_or_else(|| Error::undefined_table(&table))?;
    let names: Vec<String> = if columns.is_empty() {
        schema.user_columns().map(|(_, c)| c.name.clone()).collect()
    } else {
        columns.iter().map(ident).collect()
    };
    let width = names.len();
    if width == 0 || !params.len().is_multiple_of(width) {
        return Err(Error::internal(format!(
            "COPY batch of {} values does not divide into rows of {width}",
            params.len()
        )));
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote(&table),
        names
            .iter()
            .map(|n| quote(n))
            .collect::<Vec<_>>()
            .join(", "),
        (1..=width)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let insert = super::parse(&sql)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("empty COPY insert"))?;
    let (plan, types) = {
        let mut binder = Binder::new(&*txn);
        let plan = bind(&insert, &mut binder)?;
        (plan, binder.param_types())
    };
    let Plan::Insert(p) = plan else {
        return Err(Error::internal("COPY insert did not bind to an insert"));
    };
    let mut rows = 0;
    for row in params.chunks(width) {
        let row = prepare_params(row, &types)?;
        dml::run_insert(&p, txn, &row)?;
        rows += 1;
    }
    Ok(QueryResult::command("COPY", rows))
}
