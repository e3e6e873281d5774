//! INSERT, UPDATE and DELETE.
//!
//! Each statement runs in two phases. The first only reads: it evaluates every new row (and
//! checks types and NOT NULL) against the transaction's state as the statement began. The
//! second writes. So `INSERT INTO t SELECT ... FROM t` never sees its own rows, and an UPDATE
//! that shifts primary keys (`SET id = id + 1`) first removes every old key and then checks
//! each new one for duplicates, instead of failing on the order rows happen to come in.

use std::collections::HashSet;

use protocol::keycode::encode_key;
use protocol::schema::{ColumnDef, QueryResult, TableSchema};
use protocol::{DataType, Error, Result, Value, sqlstate};
use sqlparser::ast;

use super::access;
use super::bind::{Binder, Scope};
use super::exec::{Rows, run_query, scan};
use super::expr::{Ctx, Env, Expr};
use super::parse::{ident, name_parts, object_name, parse_expr};
use super::plan::{Access, Projection, QueryPlan};
use crate::txn::{ReadTxn, RowLock, WriteTxn};

pub struct InsertPlan {
    pub schema: TableSchema,
    pub targets: Vec<usize>,
    pub source: InsertSource,
    /// Each column's DEFAULT, bound; `None` means NULL.
    pub defaults: Vec<Option<Expr>>,
    pub returning: Projection,
    pub on_conflict: Option<super::upsert::OnConflict>,
    pub checks: Vec<super::checks::BoundCheck>,
}

pub enum InsertSource {
    /// One entry per target column; `None` is the DEFAULT keyword.
    Values(Vec<Vec<Option<Expr>>>),
    Query(Box<QueryPlan>),
}

pub struct UpdatePlan {
    pub schema: TableSchema,
    pub access: Access,
    pub filter: Option<Expr>,
    /// Column position and new value (`None`: DEFAULT).
    pub sets: Vec<(usize, Option<Expr>)>,
    pub defaults: Vec<Option<Expr>>,
    pub returning: Projection,
    pub checks: Vec<super::checks::BoundCheck>,
}

pub struct DeletePlan {
    pub schema: TableSchema,
    pub access: Access,
    pub filter: Option<Expr>,
    pub returning: Projection,
}

/// Checks that an expression can be stored in `col` and converts it where PostgreSQL's
/// assignment rules do: unknown literals parse as the column type, numbers convert between
/// widths, and anything may be stored in a text column.
pub(super) fn assign(
    b: &mut Binder,
    e: Expr,
    ty: Option<DataType>,
    col: &ColumnDef,
) -> Result<Expr> {
    let target = col.data_type;
    match ty {
        None => b.coerce(e, None, target),
        Some(t) if t == target => Ok(e),
        Some(t) if (t.is_numeric() && target.is_numeric()) || (t.is_text() && target.is_text()) => {
            Ok(e)
        }
        Some(t) if target.is_text() => Ok(Expr::Cast {
            expr: e.boxed(),
            from: Some(t),
            to: DataType::Text,
        }),
        // PostgreSQL's assignment casts between date/time types and between json types
        // (`INSERT … VALUES (now())` into a timestamp column).
        Some(t) if assignment_cast(t, target) => Ok(Expr::Cast {
            expr: e.boxed(),
            from: Some(t),
            to: target,
        }),
        Some(t) => Err(Error::new(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "column \"{}\" is of type {} but expression is of type {}",
                col.name,
                target.name(),
                t.name()
            ),
        )),
    }
}

fn assignment_cast(from: DataType, to: DataType) -> bool {
    use DataType::*;
    matches!(
        (from, to),
        (
            Date | Timestamp | TimestampTz,
            Date | Timestamp | TimestampTz
        ) | (Timestamp | TimestampTz | Interval, Time)
            | (Json, Jsonb)
            | (Jsonb, Json)
    )
}

fn bind_defaults(b: &mut Binder, schema: &TableSchema) -> Result<Vec<Option<Expr>>> {
    let saved = std::mem::take(&mut b.scopes);
    let result = schema
        .columns
        .iter()
        .map(|c| match &c.default {
            None => Ok(None),
            Some(text) => {
                let (e, t) = b.expr(&parse_expr(text)?)?;
                assign(b, e, t, c).map(Some)
            }
        })
        .collect();
    b.scopes = saved;
    result
}

fn table_name(t: &ast::TableObject) -> Result<&ast::ObjectName> {
    match t {
        ast::TableObject::TableName(n) => Ok(n),
        _ => Err(Error::unsupported(
            "INSERT into a table function is not supported",
        )),
    }
}

/// The position of a column a statement assigns to; system columns cannot be assigned.
pub(super) fn column_position(schema: &TableSchema, name: &str) -> Result<usize> {
    if let Some(i) = schema.column_index(name)
        && schema.is_system(i)
    {
        return Err(Error::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("cannot assign to system column \"{name}\""),
        ));
    }
    schema.column_index(name).ok_or_else(|| {
        Error::new(
            sqlstate::UNDEFINED_COLUMN,
            format!(
                "column \"{name}\" of relation \"{}\" does not exist",
                schema.name
            ),
        )
    })
}

pub fn bind_insert(b: &mut Binder, ins: &ast::Insert) -> Result<InsertPlan> {
    if ins.or.is_some()
        || ins.ignore
        || ins.overwrite
        || ins.partitioned.is_some()
        || !ins.after_columns.is_empty()
        || !ins.assignments.is_empty()
        || ins.replace_into
        || ins.output.is_some()
    {
        return Err(Error::unsupported("INSERT form is not supported"));
    }
    let schema = b.table(table_name(&ins.table)?)?;
    let mut targets = Vec::new();
    for c in &ins.columns {
        let parts = name_parts(c)?;
        let name = parts.last().cloned().unwrap_or_default();
        // PostgreSQL does not even see system columns in an INSERT's column list.
        let pos = match schema.column_index(&name) {
            Some(i) if !schema.is_system(i) => i,
            _ => {
                return Err(Error::new(
                    sqlstate::UNDEFINED_COLUMN,
                    format!(
                        "column \"{name}\" of relation \"{}\" does not exist",
                        schema.name
                    ),
                ));
            }
        };
        if targets.contains(&pos) {
            return Err(Error::new(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{name}\" specified more than once"),
            ));
        }
        targets.push(pos);
    }
    let explicit = !targets.is_empty();
    if !explicit {
        targets = schema.user_columns().map(|(i, _)| i).collect();
    }
    let source = match &ins.source {
        None => InsertSource::Values(vec![vec![None; 0]]),
        Some(q) => match q.body.as_ref() {
            ast::SetExpr::Values(values)
                if q.with.is_none() && q.order_by.is_none() && q.limit_clause.is_none() =>
            {
                let mut rows = Vec::with_capacity(values.rows.len());
                let first_len = values.rows.first().map_or(0, |r| r.content.len());
                for row in &values.rows {
                    let exprs = &row.content;
                    // As in PostgreSQL, each row's expressions are bound before its length is
                    // compared with the first row's, and then with the target columns.
                    let mut bound_row = Vec::with_capacity(exprs.len());
                    for e in exprs {
                        bound_row.push(if Binder::is_default(e) {
                            None
                        } else {
                            Some(b.expr(e)?)
                        });
                    }
                    if exprs.len() != first_len {
                        return Err(Error::syntax("VALUES lists must all be the same length"));
                    }
                    if exprs.len() > targets.len() {
                        return Err(Error::syntax(
                            "INSERT has more expressions than target columns",
                        ));
                    }
                    if explicit && exprs.len() < targets.len() {
                        return Err(Error::syntax(
                            "INSERT has more target columns than expressions",
                        ));
                    }
                    let mut out = Vec::with_capacity(exprs.len());
                    for (e, &pos) in bound_row.into_iter().zip(&targets) {
                        out.push(match e {
                            None => None,
                            Some((bound, ty)) => Some(assign(b, bound, ty, &schema.columns[pos])?),
                        });
                    }
                    rows.push(out);
                }
                InsertSource::Values(rows)
            }
            _ => {
                let plan = b.query(q)?;
                if plan.columns.len() > targets.len() {
                    return Err(Error::syntax(
                        "INSERT has more expressions than target columns",
                    ));
                }
                if explicit && plan.columns.len() < targets.len() {
                    return Err(Error::syntax(
                        "INSERT has more target columns than expressions",
                    ));
                }
                for (rc, &pos) in plan.columns.iter().zip(&targets) {
                    let col = &schema.columns[pos];
                    assign(b, Expr::Const(Value::Null), Some(rc.data_type), col)?;
                }
                InsertSource::Query(Box::new(plan))
            }
        },
    };
    let defaults = bind_defaults(b, &schema)?;
    let qualifier = ins
        .table_alias
        .as_ref()
        .map(|a| ident(&a.alias))
        .unwrap_or_else(|| schema.name.clone());
    let on_conflict = ins
        .on
        .as_ref()
        .map(|on| super::upsert::bind(b, &schema, &qualifier, on))
        .transpose()?;
    b.scopes.push(Scope::of_table(&schema, &qualifier));
    let returning = b.returning(ins.returning.as_ref());
    b.scopes.pop();
    let checks = super::checks::bind(b, &schema)?;
    Ok(InsertPlan {
        schema,
        targets,
        source,
        defaults,
        returning: returning?,
        on_conflict,
        checks,
    })
}

/// Converts a new row to the table's column types and checks NOT NULL.
pub(super) fn finish_row(schema: &TableSchema, row: Vec<Value>) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(row.len());
    for (v, col) in row.into_iter().zip(&schema.columns) {
        let v = match v {
            Value::Text(s) if !col.data_type.is_text() => {
                // A text value reaches a non-text column only through an explicit cast to
                // text, and PostgreSQL refuses that at bind time; be safe at run time too.
                col.data_type.parse_text(&s)?
            }
            v => col.data_type.coerce(v)?,
        };
        out.push(v);
    }
    for (i, (v, col)) in out.iter().zip(&schema.columns).enumerate() {
        // The row id is assigned after the row is built (INSERT) or kept (UPDATE).
        if v.is_null() && !col.nullable && !schema.is_system(i) {
            return Err(Error::new(
                sqlstate::NOT_NULL_VIOLATION,
                format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    col.name, schema.name
                ),
            )
            .with_detail(format!(
                "Failing row contains ({}).",
                show_values(&out, schema)
            )));
        }
    }
    Ok(out)
}

pub(super) fn show_values(values: &[Value], schema: &TableSchema) -> String {
    values
        .iter()
        .zip(&schema.columns)
        .enumerate()
        .filter(|(i, _)| !schema.is_system(*i))
        .map(|(_, (v, c))| v.to_pg_text(&c.data_type).unwrap_or_else(|| "null".into()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn duplicate_key(schema: &TableSchema, row: &[Value]) -> Error {
    let names: Vec<&str> = schema
        .primary_key
        .iter()
        .filter_map(|&i| schema.columns.get(i))
        .map(|c| c.name.as_str())
        .collect();
    let values: Vec<String> = schema
        .primary_key
        .iter()
        .filter_map(|&i| {
            Some(
                row.get(i)?
                    .to_pg_text(&schema.columns.get(i)?.data_type)
                    .unwrap_or_else(|| "null".into()),
            )
        })
        .collect();
    Error::new(
        sqlstate::UNIQUE_VIOLATION,
        format!(
            "duplicate key value violates unique constraint \"{}_pkey\"",
            schema.name
        ),
    )
    .with_detail(format!(
        "Key ({})=({}) already exists.",
        names.join(", "),
        values.join(", ")
    ))
}

pub(super) fn eval_default(defaults: &[Option<Expr>], col: usize, env: &Env) -> Result<Value> {
    match defaults.get(col) {
        Some(Some(e)) => e.eval(env),
        _ => Ok(Value::Null),
    }
}

fn returning_rows(
    p: &Projection,
    rows: &[Vec<Value>],
    txn: &dyn ReadTxn,
    params: &[Value],
) -> Result<Rows> {
    let ctx = Ctx::new(txn, params);
    rows.iter()
        .map(|r| {
            let env = Env::new(r, None, &ctx);
            p.exprs.iter().map(|e| e.eval(&env)).collect()
        })
        .collect()
}

fn result(
    tag: &str,
    p: &Projection,
    changed: &[Vec<Value>],
    txn: &dyn ReadTxn,
    params: &[Value],
) -> Result<QueryResult> {
    let rows = if p.columns.is_empty() {
        vec![]
    } else {
        returning_rows(p, changed, txn, params)?
    };
    Ok(QueryResult {
        columns: p.columns.clone(),
        rows,
        tag: tag.into(),
        affected: changed.len() as u64,
    })
}

pub fn run_insert(p: &InsertPlan, txn: &mut dyn WriteTxn, params: &[Value]) -> Result<QueryResult> {
    let width = p.schema.columns.len();
    let new_rows = {
        let ctx = Ctx::new(&*txn, params);
        let empty = Env::new(&[], None, &ctx);
        let sources: Vec<Vec<Option<Value>>> = match &p.source {
            InsertSource::Values(rows) => rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|e| e.as_ref().map(|e| e.eval(&empty)).transpose())
                        .collect::<Result<_>>()
                })
                .collect::<Result<_>>()?,
            InsertSource::Query(q) => run_query(q, &ctx, None)?
                .into_iter()
                .map(|r| r.into_iter().map(Some).collect())
                .collect(),
        };
        let mut rows = Vec::with_capacity(sources.len());
        for src in sources {
            let mut given: Vec<Option<Value>> = vec![None; width];
            for (v, &pos) in src.into_iter().zip(&p.targets) {
                given[pos] = v;
            }
            let mut row = Vec::with_capacity(width);
            for (col, v) in given.into_iter().enumerate() {
                row.push(match v {
                    Some(v) => v,
                    None => eval_default(&p.defaults, col, &empty)?,
                });
            }
            let row = finish_row(&p.schema, row)?;
            super::checks::enforce(&p.checks, &p.schema, &row, &ctx)?;
            rows.push(row);
        }
        rows
    };
    let mut new_rows = new_rows;
    if let Some(rowid) = p.schema.rowid() {
        for row in &mut new_rows {
            if let Some(slot) = row.get_mut(rowid) {
                *slot = Value::Int(txn.next_rowid()?);
            }
        }
    }
    if let Some(oc) = &p.on_conflict {
        super::foreign_keys::check_children(&p.schema, &new_rows, txn)?;
        let written = super::upsert::run(p, oc, new_rows, txn, params)?;
        return result("INSERT", &p.returning, &written, &*txn, params);
    }
    // Check every key before writing any, so a failing statement leaves nothing behind.
    let mut keys = Vec::with_capacity(new_rows.len());
    let mut fresh = HashSet::with_capacity(new_rows.len());
    for row in &new_rows {
        let key = encode_key(&p.schema.key_of(row));
        // Lock the key first: a concurrent insert of the same key is then either committed
        // (and seen here) or waits for us.
        let committed_since = matches!(
            txn.lock_row(&p.schema.name, &key)?,
            RowLock::Changed(Some(_))
        );
        if !fresh.insert(key.clone()) || committed_since || txn.get(&p.schema.name, &key)?.is_some()
        {
            return Err(duplicate_key(&p.schema, row));
        }
        keys.push(key);
    }
    // The rows are needed after they are written only by foreign-key checks and RETURNING;
    // without either (a COPY batch, a bulk INSERT) they move into the write set uncopied.
    let affected = new_rows.len() as u64;
    let kept = if p.schema.foreign_keys.is_empty() && p.returning.columns.is_empty() {
        Vec::new()
    } else {
        new_rows.clone()
    };
    for (key, row) in keys.into_iter().zip(new_rows) {
        txn.put(&p.schema.name, key, row)?;
    }
    // Checked once the statement's rows are written, as PostgreSQL checks at the end of the
    // statement: a row may reference another row of the same INSERT. A failure discards the
    // statement's writes with the statement.
    super::foreign_keys::check_children(&p.schema, &kept, txn)?;
    let mut done = result("INSERT", &p.returning, &kept, &*txn, params)?;
    done.affected = affected;
    Ok(done)
}

/// The UPDATE/DELETE target: its schema and scope, with an optional alias.
fn target(b: &mut Binder, relation: &ast::TableFactor) -> Result<(TableSchema, Scope)> {
    let ast::TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = relation
    else {
        return Err(Error::unsupported(format!(
            "target {relation} is not supported"
        )));
    };
    let schema = b.table(name)?;
    let qualifier = alias
        .as_ref()
        .map(|a| ident(&a.name))
        .unwrap_or_else(|| schema.name.clone());
    let scope = Scope::of_table(&schema, &qualifier);
    Ok((schema, scope))
}

fn bind_filter(
    b: &mut Binder,
    schema: &TableSchema,
    selection: Option<&ast::Expr>,
) -> Result<(Option<Expr>, Access)> {
    let saved = std::mem::replace(&mut b.no_aggregates_in, "WHERE");
    let filter = selection.map(|w| b.condition(w, "WHERE")).transpose();
    b.no_aggregates_in = saved;
    let filter = filter?;
    let access = filter
        .as_ref()
        .map(|f| access::choose(schema, f))
        .unwrap_or(Access::Full);
    Ok((filter, access))
}

pub fn bind_update(b: &mut Binder, u: &ast::Update) -> Result<UpdatePlan> {
    if u.from.is_some() || !u.table.joins.is_empty() {
        return Err(Error::unsupported("UPDATE ... FROM is not supported"));
    }
    if u.or.is_some()
        || !u.order_by.is_empty()
        || u.limit.is_some()
        || u.output.is_some()
        || u.on_cluster.is_some()
    {
        return Err(Error::unsupported("UPDATE form is not supported"));
    }
    let (schema, scope) = target(b, &u.table.relation)?;
    b.scopes.push(scope);
    let result = (|| -> Result<_> {
        let (filter, access) = bind_filter(b, &schema, u.selection.as_ref())?;
        let mut sets = Vec::with_capacity(u.assignments.len());
        for a in &u.assignments {
            let ast::AssignmentTarget::ColumnName(name) = &a.target else {
                return Err(Error::unsupported(
                    "UPDATE of a column tuple is not supported",
                ));
            };
            let name = object_name(name)
                .or_else(|_| name_parts(name).map(|p| p.last().cloned().unwrap_or_default()))?;
            let pos = column_position(&schema, &name)?;
            if sets.iter().any(|(p, _)| *p == pos) {
                return Err(Error::new(
                    sqlstate::DUPLICATE_COLUMN,
                    format!("multiple assignments to same column \"{name}\""),
                ));
            }
            if Binder::is_default(&a.value) {
                sets.push((pos, None));
                continue;
            }
            let saved = std::mem::replace(&mut b.no_aggregates_in, "UPDATE");
            let bound = b.expr(&a.value);
            b.no_aggregates_in = saved;
            let (e, ty) = bound?;
            sets.push((pos, Some(assign(b, e, ty, &schema.columns[pos])?)));
        }
        let returning = b.returning(u.returning.as_ref())?;
        Ok((filter, access, sets, returning))
    })();
    b.scopes.pop();
    let (filter, access, sets, returning) = result?;
    let defaults = bind_defaults(b, &schema)?;
    let checks = super::checks::bind(b, &schema)?;
    Ok(UpdatePlan {
        schema,
        access,
        filter,
        sets,
        defaults,
        returning,
        checks,
    })
}

/// The rows of the target that the WHERE clause selects.
fn matching_rows(
    schema: &TableSchema,
    access: &Access,
    filter: Option<&Expr>,
    ctx: &Ctx,
) -> Result<Rows> {
    let rows = scan(schema, access, ctx, None)?;
    let Some(f) = filter else { return Ok(rows) };
    let mut kept = Vec::with_capacity(rows.len());
    for r in rows {
        if f.is_true(&Env::new(&r, None, ctx))? {
            kept.push(r);
        }
    }
    Ok(kept)
}

/// Locks the rows a statement selected; under READ COMMITTED a row that a concurrent
/// transaction changed meanwhile is re-checked in its newest version (PostgreSQL's
/// EvalPlanQual), so `SET n = n + 1` never loses an increment.
fn lock_rows(
    schema: &TableSchema,
    filter: Option<&Expr>,
    rows: Rows,
    txn: &mut dyn WriteTxn,
    params: &[Value],
) -> Result<Rows> {
    let mut current = Vec::with_capacity(rows.len());
    for row in rows {
        let key = encode_key(&schema.key_of(&row));
        match txn.lock_row(&schema.name, &key)? {
            RowLock::Unchanged => current.push(row),
            RowLock::Changed(None) => {}
            RowLock::Changed(Some(latest)) => {
                let ctx = Ctx::new(&*txn, params);
                let still = match filter {
                    Some(f) => f.is_true(&Env::new(&latest, None, &ctx))?,
                    None => true,
                };
                if still {
                    current.push(latest);
                }
            }
        }
    }
    Ok(current)
}

pub fn run_update(p: &UpdatePlan, txn: &mut dyn WriteTxn, params: &[Value]) -> Result<QueryResult> {
    let selected = {
        let ctx = Ctx::new(&*txn, params);
        matching_rows(&p.schema, &p.access, p.filter.as_ref(), &ctx)?
    };
    let selected = lock_rows(&p.schema, p.filter.as_ref(), selected, txn, params)?;
    let mut olds = Vec::new();
    let changes = {
        let ctx = Ctx::new(&*txn, params);
        let mut changes = Vec::new();
        for old in selected {
            let env = Env::new(&old, None, &ctx);
            let mut new = old.clone();
            for (pos, e) in &p.sets {
                let v = match e {
                    Some(e) => e.eval(&env)?,
                    None => eval_default(&p.defaults, *pos, &Env::new(&[], None, &ctx))?,
                };
                let slot = new
                    .get_mut(*pos)
                    .ok_or_else(|| Error::internal("stored row is narrower than its table"))?;
                *slot = v;
            }
            let new = finish_row(&p.schema, new)?;
            super::checks::enforce(&p.checks, &p.schema, &new, &ctx)?;
            let (old_key, new_key) = (
                encode_key(&p.schema.key_of(&old)),
                encode_key(&p.schema.key_of(&new)),
            );
            olds.push(old);
            changes.push((old_key, new_key, new));
        }
        changes
    };
    // A moved row must not land on another row's key, nor on one this statement writes;
    // keys that moved rows vacate are free, so `SET id = id + 1` works in any row order.
    // Everything is checked before anything is written.
    let vacated: HashSet<&Vec<u8>> = changes
        .iter()
        .filter(|(o, n, _)| o != n)
        .map(|(o, _, _)| o)
        .collect();
    let mut taken = HashSet::with_capacity(changes.len());
    for (old_key, new_key, new) in &changes {
        let moved = old_key != new_key;
        let clash =
            moved && !vacated.contains(new_key) && txn.get(&p.schema.name, new_key)?.is_some();
        if !taken.insert(new_key.clone()) || clash {
            return Err(duplicate_key(&p.schema, new));
        }
    }
    // Foreign keys: rows that reference a changed key (in other tables or this one) follow
    // their ON UPDATE action; this table's new rows must find their parents, checked once
    // all are written (a row's parent may be another row of the same statement).
    if !txn.referencing_tables(&p.schema.name)?.is_empty() {
        for (old, (_, _, new)) in olds.iter().zip(&changes) {
            super::foreign_keys::on_parent_change(&p.schema, old, Some(new), txn, 0)?;
        }
    }
    for (old_key, new_key, _) in &changes {
        if old_key != new_key {
            txn.delete(&p.schema.name, old_key)?;
        }
    }
    let mut written = Vec::with_capacity(changes.len());
    for (_, new_key, new) in changes {
        txn.put(&p.schema.name, new_key, new.clone())?;
        written.push(new);
    }
    super::foreign_keys::check_children(&p.schema, &written, txn)?;
    result("UPDATE", &p.returning, &written, &*txn, params)
}

pub fn bind_delete(b: &mut Binder, d: &ast::Delete) -> Result<DeletePlan> {
    if d.using.is_some()
        || !d.tables.is_empty()
        || !d.order_by.is_empty()
        || d.limit.is_some()
        || d.output.is_some()
    {
        return Err(Error::unsupported("DELETE ... USING is not supported"));
    }
    let from = match &d.from {
        ast::FromTable::WithFromKeyword(t) | ast::FromTable::WithoutKeyword(t) => t,
    };
    let [table] = from.as_slice() else {
        return Err(Error::unsupported(
            "DELETE from several tables is not supported",
        ));
    };
    if !table.joins.is_empty() {
        return Err(Error::unsupported("DELETE with joins is not supported"));
    }
    let (schema, scope) = target(b, &table.relation)?;
    b.scopes.push(scope);
    let result = (|| -> Result<_> {
        let (filter, access) = bind_filter(b, &schema, d.selection.as_ref())?;
        let returning = b.returning(d.returning.as_ref())?;
        Ok((filter, access, returning))
    })();
    b.scopes.pop();
    let (filter, access, returning) = result?;
    Ok(DeletePlan {
        schema,
        access,
        filter,
        returning,
    })
}

pub fn run_delete(p: &DeletePlan, txn: &mut dyn WriteTxn, params: &[Value]) -> Result<QueryResult> {
    let doomed = {
        let ctx = Ctx::new(&*txn, params);
        matching_rows(&p.schema, &p.access, p.filter.as_ref(), &ctx)?
    };
    let doomed = lock_rows(&p.schema, p.filter.as_ref(), doomed, txn, params)?;
    for row in &doomed {
        txn.delete(&p.schema.name, &encode_key(&p.schema.key_of(row)))?;
    }
    // Referencing rows are looked for once the statement's rows are gone, as PostgreSQL
    // checks at the end of the statement: a self-referencing table may lose a parent and
    // its children in one DELETE.
    if !txn.referencing_tables(&p.schema.name)?.is_empty() {
        for row in &doomed {
            super::foreign_keys::on_parent_change(&p.schema, row, None, txn, 0)?;
        }
    }
    result("DELETE", &p.returning, &doomed, &*txn, params)
}
