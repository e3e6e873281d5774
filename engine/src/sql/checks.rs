//! CHECK constraints: declared with CREATE TABLE (column or table level) or ALTER TABLE ADD
//! CONSTRAINT, stored as SQL text in the table's schema, bound with each INSERT or UPDATE
//! and tested on every new row version. As in PostgreSQL a check that yields NULL passes,
//! and when several fail the first by name is reported.

use std::ops::ControlFlow;

use protocol::schema::{CheckDef, TableSchema};
use protocol::{DataType, Error, Result, Value, sqlstate};
use sqlparser::ast;

use super::bind::{Binder, Scope};
use super::expr::{Ctx, Env, Expr};
use super::parse::{ident, parse_expr};
use crate::txn::ReadTxn;

/// A check ready to test rows: its name and bound expression.
pub type BoundCheck = (String, Expr);

/// The CHECK constraints a CREATE TABLE declares, named as PostgreSQL names them.
pub fn from_create(schema: &TableSchema, ct: &ast::CreateTable) -> Result<Vec<CheckDef>> {
    let mut found: Vec<(Option<String>, Option<String>, &ast::Expr)> = Vec::new();
    for c in &ct.columns {
        for opt in &c.options {
            if let ast::ColumnOption::Check(chk) = &opt.option {
                let name = opt.name.as_ref().or(chk.name.as_ref()).map(ident);
                found.push((name, Some(ident(&c.name)), &chk.expr));
            }
        }
    }
    for constraint in &ct.constraints {
        if let ast::TableConstraint::Check(chk) = constraint {
            found.push((chk.name.as_ref().map(ident), None, &chk.expr));
        }
    }
    let mut out: Vec<CheckDef> = Vec::new();
    for (name, column, expr) in found {
        out.push(define(schema, &out, name, column, expr)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One check named `name`, or by PostgreSQL's rule: `<table>_<column>_check` when it reads
/// one column (or is declared on one), else `<table>_check`, numbered past names in use.
pub fn define(
    schema: &TableSchema,
    existing: &[CheckDef],
    name: Option<String>,
    column: Option<String>,
    expr: &ast::Expr,
) -> Result<CheckDef> {
    let name = match name {
        Some(n) => {
            if existing.iter().any(|c| c.name == n) {
                return Err(Error::new(
                    sqlstate::DUPLICATE_OBJECT,
                    format!(
                        "constraint \"{n}\" for relation \"{}\" already exists",
                        schema.name
                    ),
                ));
            }
            n
        }
        None => {
            let column = column.or_else(|| {
                let cols = columns_read(schema, expr);
                match cols.as_slice() {
                    [one] => Some(one.clone()),
                    _ => None,
                }
            });
            let stem: Vec<&str> = column.as_deref().into_iter().collect();
            super::index_ddl::default_name(&schema.name, &stem, "check", &|n| {
                existing.iter().any(|c| c.name == n)
            })
        }
    };
    Ok(CheckDef {
        name,
        expr: expr.to_string(),
    })
}

/// The table's columns an expression names, in order of first mention.
fn columns_read(schema: &TableSchema, expr: &ast::Expr) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let _ = ast::visit_expressions(expr, |e| {
        let name = match e {
            ast::Expr::Identifier(i) => Some(ident(i)),
            ast::Expr::CompoundIdentifier(parts) => parts.last().map(ident),
            _ => None,
        };
        if let Some(n) = name
            && schema.column_index(&n).is_some()
            && !out.contains(&n)
        {
            out.push(n);
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

/// Binds every check of `schema` over its rows (in name order).
pub fn bind(b: &mut Binder, schema: &TableSchema) -> Result<Vec<BoundCheck>> {
    if schema.checks.is_empty() {
        return Ok(Vec::new());
    }
    b.scopes.push(Scope::of_table(schema, &schema.name));
    let bound = schema
        .checks
        .iter()
        .map(|c| Ok((c.name.clone(), bind_one(b, &c.expr)?)))
        .collect::<Result<Vec<_>>>();
    b.scopes.pop();
    bound
}

fn bind_one(b: &mut Binder, text: &str) -> Result<Expr> {
    let ast = parse_expr(text)?;
    let mut subquery = false;
    let _ = ast::visit_expressions(&ast, |e| {
        if matches!(
            e,
            ast::Expr::Subquery(_)
                | ast::Expr::Exists { .. }
                | ast::Expr::In {
                    target: ast::InTarget::Subquery(_),
                    ..
                }
        ) {
            subquery = true;
        }
        ControlFlow::<()>::Continue(())
    });
    if subquery {
        return Err(Error::unsupported(
            "cannot use subquery in check constraint",
        ));
    }
    let saved = std::mem::replace(&mut b.no_aggregates_in, "check constraints");
    let saved_aggs = b.aggregates.take();
    let bound = b.expr(&ast);
    b.no_aggregates_in = saved;
    b.aggregates = saved_aggs;
    let (e, ty) = bound?;
    match ty {
        None | Some(DataType::Bool) => b.coerce(e, ty, DataType::Bool),
        Some(t) => Err(Error::new(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "argument of CHECK must be type boolean, not type {}",
                t.name()
            ),
        )),
    }
}

/// Checks that every CHECK of a new table definition binds (columns, types, no subqueries).
pub fn validate(schema: &TableSchema, txn: &dyn ReadTxn) -> Result<()> {
    let mut b = Binder::new(txn);
    bind(&mut b, schema).map(|_| ())
}

/// 23514 if a new row version fails a check.
pub fn enforce(
    checks: &[BoundCheck],
    schema: &TableSchema,
    row: &[Value],
    ctx: &Ctx,
) -> Result<()> {
    for (name, e) in checks {
        if let Value::Bool(false) = e.eval(&Env::new(row, None, ctx))? {
            return Err(Error::new(
                sqlstate::CHECK_VIOLATION,
                format!(
                    "new row for relation \"{}\" violates check constraint \"{name}\"",
                    schema.name
                ),
            )
            .with_detail(format!(
                "Failing row contains ({}).",
                super::dml::show_values(row, schema)
            )));
        }
    }
    Ok(())
}
