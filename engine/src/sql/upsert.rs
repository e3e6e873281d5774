//! INSERT … ON CONFLICT: DO NOTHING, or DO UPDATE the row that is in the way.
//!
//! ```text
//!  proposed row ──► arbiter: primary key and/or unique index ──► no holder: insert it
//!                                                            └─► holder row: skip (NOTHING)
//!                                                                or UPDATE it, its SET and
//!                                                                WHERE reading the holder
//!                                                                and EXCLUDED (the proposal)
//! ```
//! Rows are handled one at a time in order, so a later proposal sees what an earlier one
//! inserted: DO NOTHING keeps the first of two equal keys, and DO UPDATE refuses to touch
//! one row twice (21000), as PostgreSQL does. The holder is found under its row or value
//! lock, so a concurrent insert of the same key either committed already (and is the
//! holder) or waits.

use std::collections::HashSet;

use protocol::keycode::encode_key;
use protocol::schema::TableSchema;
use protocol::{Error, Result, Value, sqlstate};
use sqlparser::ast;

use super::bind::{Binder, Scope};
use super::dml::{InsertPlan, assign, column_position, duplicate_key, eval_default, finish_row};
use super::expr::{Ctx, Env, Expr};
use super::parse::{ident, name_parts, object_name};
use crate::txn::{RowLock, WriteTxn};

/// The constraint whose conflicts ON CONFLICT handles.
#[derive(Clone, Debug, PartialEq)]
pub enum Arbiter {
    /// No target (DO NOTHING only): every unique constraint.
    Any,
    PrimaryKey,
    /// A unique index, by name.
    Index(String),
}

pub enum Action {
    Nothing,
    Update {
        /// Column position and new value (`None`: DEFAULT), over the holder row followed by
        /// the proposed (EXCLUDED) row.
        sets: Vec<(usize, Option<Expr>)>,
        filter: Option<Expr>,
    },
}

pub struct OnConflict {
    pub arbiter: Arbiter,
    pub action: Action,
}

fn no_matching_constraint() -> Error {
    Error::new(
        sqlstate::INVALID_COLUMN_REFERENCE,
        "there is no unique or exclusion constraint matching the ON CONFLICT specification",
    )
}

/// Binds the ON CONFLICT clause of an INSERT into `schema` (named `qualifier` there).
pub fn bind(
    b: &mut Binder,
    schema: &TableSchema,
    qualifier: &str,
    on: &ast::OnInsert,
) -> Result<OnConflict> {
    let ast::OnInsert::OnConflict(oc) = on else {
        return Err(Error::unsupported(
            "ON DUPLICATE KEY UPDATE is not supported",
        ));
    };
    let arbiter = match &oc.conflict_target {
        None => Arbiter::Any,
        Some(ast::ConflictTarget::Columns {
            predicate: Some(_), ..
        }) => {
            return Err(Error::unsupported(
                "ON CONFLICT with an index predicate is not supported",
            ));
        }
        Some(ast::ConflictTarget::Columns { columns, .. }) => {
            let mut positions = Vec::with_capacity(columns.len());
            for c in columns {
                positions.push(super::index_ddl::user_column(schema, &ident(c))?);
            }
            positions.sort_unstable();
            positions.dedup();
            let same = |cols: &[usize]| {
                let mut cols = cols.to_vec();
                cols.sort_unstable();
                cols == positions
            };
            if schema.rowid().is_none() && same(&schema.primary_key) {
                Arbiter::PrimaryKey
            } else if let Some(idx) = schema.indexes.iter().find(|i| i.unique && same(&i.columns)) {
                Arbiter::Index(idx.name.clone())
            } else {
                return Err(no_matching_constraint());
            }
        }
        Some(ast::ConflictTarget::OnConstraint(name)) => {
            let name = object_name(name)?;
            if schema.rowid().is_none() && name == schema.primary_key_name() {
                Arbiter::PrimaryKey
            } else if schema
                .indexes
                .iter()
                .any(|i| i.unique && i.constraint && i.name == name)
            {
                Arbiter::Index(name)
            } else {
                return Err(Error::new(
                    sqlstate::UNDEFINED_OBJECT,
                    format!(
                        "constraint \"{name}\" for table \"{}\" does not exist",
                        schema.name
                    ),
                ));
            }
        }
    };
    let action = match &oc.action {
        ast::OnConflictAction::DoNothing => Action::Nothing,
        ast::OnConflictAction::DoUpdate(u) => {
            if arbiter == Arbiter::Any {
                return Err(Error::syntax(
                    "ON CONFLICT DO UPDATE requires inference specification or constraint name",
                ));
            }
            // The holder's columns by name (or the table's alias), then EXCLUDED's, which
            // only a qualified name reaches.
            let mut scope = Scope::of_table(schema, qualifier);
            let mut excluded = Scope::of_table(schema, "excluded");
            for c in &mut excluded.columns {
                c.hidden = true;
            }
            scope.columns.extend(excluded.columns);
            b.scopes.push(scope);
            let bound = bind_update(b, schema, u);
            b.scopes.pop();
            bound?
        }
    };
    Ok(OnConflict { arbiter, action })
}

fn bind_update(b: &mut Binder, schema: &TableSchema, u: &ast::DoUpdate) -> Result<Action> {
    let mut sets: Vec<(usize, Option<Expr>)> = Vec::with_capacity(u.assignments.len());
    for a in &u.assignments {
        let names: Vec<&ast::ObjectName> = match &a.target {
            ast::AssignmentTarget::ColumnName(n) => vec![n],
            ast::AssignmentTarget::Tuple(ns) => ns.iter().collect(),
        };
        let values: Vec<&ast::Expr> = match (&a.target, &a.value) {
            (ast::AssignmentTarget::Tuple(_), ast::Expr::Tuple(vs)) => vs.iter().collect(),
            (ast::AssignmentTarget::Tuple(_), _) => {
                return Err(Error::unsupported(
                    "a column tuple may only be set from a parenthesized list",
                ));
            }
            (_, v) => vec![v],
        };
        if names.len() != values.len() {
            return Err(Error::syntax(
                "number of columns does not match number of values",
            ));
        }
        for (name, value) in names.into_iter().zip(values) {
            let name = name_parts(name)?.last().cloned().unwrap_or_default();
            let pos = column_position(schema, &name)?;
            if sets.iter().any(|(p, _)| *p == pos) {
                return Err(Error::new(
                    sqlstate::DUPLICATE_COLUMN,
                    format!("multiple assignments to same column \"{name}\""),
                ));
            }
            if Binder::is_default(value) {
                sets.push((pos, None));
                continue;
            }
            let saved = std::mem::replace(&mut b.no_aggregates_in, "UPDATE");
            let bound = b.expr(value);
            b.no_aggregates_in = saved;
            let (e, ty) = bound?;
            sets.push((pos, Some(assign(b, e, ty, &schema.columns[pos])?)));
        }
    }
    let filter = u
        .selection
        .as_ref()
        .map(|w| b.condition(w, "WHERE"))
        .transpose()?;
    Ok(Action::Update { sets, filter })
}

/// The row in the way of `row` under the arbiter: its key and newest version.
fn holder(
    schema: &TableSchema,
    arbiter: &Arbiter,
    row: &[Value],
    txn: &mut dyn WriteTxn,
) -> Result<Option<(Vec<u8>, Vec<Value>)>> {
    let current = |txn: &mut dyn WriteTxn, key: &[u8]| -> Result<Option<Vec<Value>>> {
        Ok(match txn.lock_row(&schema.name, key)? {
            RowLock::Changed(latest) => latest,
            RowLock::Unchanged => txn.get(&schema.name, key)?,
        })
    };
    if matches!(arbiter, Arbiter::Any | Arbiter::PrimaryKey) && schema.rowid().is_none() {
        let key = encode_key(&schema.key_of(row));
        if let Some(existing) = current(txn, &key)? {
            return Ok(Some((key, existing)));
        }
    }
    for idx in schema.indexes.iter().filter(|i| i.unique) {
        let wanted = match arbiter {
            Arbiter::Any => true,
            Arbiter::Index(name) => *name == idx.name,
            Arbiter::PrimaryKey => false,
        };
        if !wanted {
            continue;
        }
        let values = schema.index_values(idx, row);
        if values.iter().any(Value::is_null) {
            continue;
        }
        if let Some(key) = txn.unique_holder(&schema.name, &idx.name, &values)?
            && let Some(existing) = current(txn, &key)?
        {
            return Ok(Some((key, existing)));
        }
    }
    Ok(None)
}

/// Inserts the proposed rows, handling conflicts on the arbiter; returns the rows inserted
/// or updated (what RETURNING sees and the count reports).
pub fn run(
    p: &InsertPlan,
    oc: &OnConflict,
    proposed: Vec<Vec<Value>>,
    txn: &mut dyn WriteTxn,
    params: &[Value],
) -> Result<Vec<Vec<Value>>> {
    let schema = &p.schema;
    let mut touched: HashSet<Vec<u8>> = HashSet::new();
    let mut out = Vec::new();
    for row in proposed {
        let Some((key, old)) = holder(schema, &oc.arbiter, &row, txn)? else {
            let key = encode_key(&schema.key_of(&row));
            // Another unique constraint may still object (23505), as in PostgreSQL.
            if txn.get(&schema.name, &key)?.is_some() {
                return Err(duplicate_key(schema, &row));
            }
            txn.put(&schema.name, key.clone(), row.clone())?;
            touched.insert(key);
            out.push(row);
            continue;
        };
        let Action::Update { sets, filter } = &oc.action else {
            continue;
        };
        if touched.contains(&key) {
            return Err(Error::new(
                sqlstate::CARDINALITY_VIOLATION,
                "ON CONFLICT DO UPDATE command cannot affect row a second time",
            )
            .with_detail(
                "Ensure that no rows proposed for insertion within the same command have duplicate constrained values.",
            ));
        }
        let new = {
            let ctx = Ctx::new(&*txn, params);
            let mut both = old.clone();
            both.extend(row.iter().cloned());
            let env = Env::new(&both, None, &ctx);
            if let Some(f) = filter
                && !f.is_true(&env)?
            {
                continue;
            }
            let mut new = old.clone();
            for (pos, e) in sets {
                let v = match e {
                    Some(e) => e.eval(&env)?,
                    None => eval_default(&p.defaults, *pos, &Env::new(&[], None, &ctx))?,
                };
                let slot = new
                    .get_mut(*pos)
                    .ok_or_else(|| Error::internal("stored row is narrower than its table"))?;
                *slot = v;
            }
            let new = finish_row(schema, new)?;
            super::checks::enforce(&p.checks, schema, &new, &ctx)?;
            new
        };
        if !schema.foreign_keys.is_empty() {
            super::foreign_keys::check_child(schema, &new, txn)?;
        }
        let new_key = encode_key(&schema.key_of(&new));
        if new_key != key {
            let clash = match txn.lock_row(&schema.name, &new_key)? {
                RowLock::Changed(latest) => latest.is_some(),
                RowLock::Unchanged => txn.get(&schema.name, &new_key)?.is_some(),
            };
            if clash {
                return Err(duplicate_key(schema, &new));
            }
            txn.delete(&schema.name, &key)?;
        }
        txn.put(&schema.name, new_key.clone(), new.clone())?;
        touched.insert(new_key);
        out.push(new);
    }
    Ok(out)
}
