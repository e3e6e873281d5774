//! FOREIGN KEY constraints, enforced within one shard.
//!
//! ```text
//!  child INSERT/UPDATE ──► lock + find the parent row by its key (or unique index) ──► 23503 if absent
//!  parent DELETE/UPDATE of the key ──► find referencing child rows ──► NO ACTION/RESTRICT: 23503
//!                                                                  CASCADE: delete / re-key them
//!                                                                  SET NULL: null their columns
//! ```
//! A shard sees only its own rows, so the router allows foreign keys only between tables of
//! a keyspace with one shard (and refuses to split it). The child locks the parent row it
//! relies on, so a concurrent delete of that parent waits for it, or it for the delete.

use protocol::keycode::encode_key;
use protocol::schema::{FkAction, ForeignKeyDef, TableSchema};
use protocol::{Error, Result, Value, sqlstate};
use sqlparser::ast;

use super::parse::{ident, object_name};
use crate::txn::{RowLock, WriteTxn};

fn action(a: &Option<ast::ReferentialAction>) -> Result<FkAction> {
    Ok(match a {
        None | Some(ast::ReferentialAction::NoAction) => FkAction::NoAction,
        Some(ast::ReferentialAction::Restrict) => FkAction::Restrict,
        Some(ast::ReferentialAction::Cascade) => FkAction::Cascade,
        Some(ast::ReferentialAction::SetNull) => FkAction::SetNull,
        Some(ast::ReferentialAction::SetDefault) => {
            return Err(Error::unsupported(
                "ON DELETE/UPDATE SET DEFAULT is not supported",
            ));
        }
    })
}

/// The FOREIGN KEY constraints a CREATE TABLE declares (column `REFERENCES` and table-level).
pub fn from_create(schema: &TableSchema, ct: &ast::CreateTable) -> Result<Vec<ForeignKeyDef>> {
    let mut found: Vec<(Option<String>, Vec<String>, &ast::ForeignKeyConstraint)> = Vec::new();
    for c in &ct.columns {
        for opt in &c.options {
            if let ast::ColumnOption::ForeignKey(fk) = &opt.option {
                let name = opt.name.as_ref().or(fk.name.as_ref()).map(ident);
                found.push((name, vec![ident(&c.name)], fk));
            }
        }
    }
    for constraint in &ct.constraints {
        if let ast::TableConstraint::ForeignKey(fk) = constraint {
            found.push((
                fk.name.as_ref().map(ident),
                fk.columns.iter().map(ident).collect(),
                fk,
            ));
        }
    }
    let mut out: Vec<ForeignKeyDef> = Vec::new();
    for (name, columns, fk) in found {
        let mut positions = Vec::with_capacity(columns.len());
        for c in &columns {
            positions.push(schema.column_index(c).ok_or_else(|| {
                Error::new(
                    sqlstate::UNDEFINED_COLUMN,
                    format!("column \"{c}\" referenced in foreign key constraint does not exist"),
                )
            })?);
        }
        let name = match name {
            Some(n) => n,
            None => {
                let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
                super::index_ddl::default_name(&schema.name, &cols, "fkey", &|n| {
                    out.iter().any(|f| f.name == n)
                })
            }
        };
        out.push(ForeignKeyDef {
            name,
            columns: positions,
            ref_table: object_name(&fk.foreign_table)?,
            ref_columns: fk.referred_columns.iter().map(ident).collect(),
            on_delete: action(&fk.on_delete)?,
            on_update: action(&fk.on_update)?,
        });
    }
    Ok(out)
}

/// How a foreign key finds its parent row: by the parent's primary key, or a unique index.
enum Lookup {
    PrimaryKey(Vec<usize>),
    Unique(String),
}

/// Resolves the referenced columns against the parent's schema: 42830 unless they are its
/// primary key or a UNIQUE constraint's columns.
fn lookup(fk: &ForeignKeyDef, parent: &TableSchema) -> Result<(Vec<usize>, Lookup)> {
    let no_match = || {
        Error::new(
            "42830",
            format!(
                "there is no unique constraint matching given keys for referenced table \"{}\"",
                parent.name
            ),
        )
    };
    let columns: Vec<usize> = if fk.ref_columns.is_empty() {
        if parent.rowid().is_some() {
            return Err(Error::new(
                "42830",
                format!(
                    "there is no primary key for referenced table \"{}\"",
                    parent.name
                ),
            ));
        }
        parent.primary_key.clone()
    } else {
        fk.ref_columns
            .iter()
            .map(|c| {
                parent.column_index(c).ok_or_else(|| {
                    Error::new(
                        sqlstate::UNDEFINED_COLUMN,
                        format!(
                            "column \"{c}\" referenced in foreign key constraint does not exist"
                        ),
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    if columns.len() != fk.columns.len() {
        return Err(Error::new(
            "42830",
            "number of referencing and referenced columns for foreign key disagree",
        ));
    }
    let same = |set: &[usize]| {
        let (mut a, mut b) = (set.to_vec(), columns.clone());
        a.sort_unstable();
        b.sort_unstable();
        a == b
    };
    if parent.rowid().is_none() && same(&parent.primary_key) {
        return Ok((columns, Lookup::PrimaryKey(parent.primary_key.clone())));
    }
    match parent.indexes.iter().find(|i| i.unique && same(&i.columns)) {
        Some(idx) => Ok((columns, Lookup::Unique(idx.name.clone()))),
        None => Err(no_match()),
    }
}

/// Checks at CREATE TABLE that every foreign key references a key of an existing table.
pub fn validate(schema: &TableSchema, txn: &dyn crate::txn::ReadTxn) -> Result<()> {
    for fk in &schema.foreign_keys {
        let parent = if fk.ref_table == schema.name {
            schema.clone()
        } else {
            txn.schema(&fk.ref_table)?
                .ok_or_else(|| Error::undefined_table(&fk.ref_table))?
        };
        lookup(fk, &parent)?;
    }
    Ok(())
}

fn show(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn names(schema: &TableSchema, columns: &[usize]) -> String {
    columns
        .iter()
        .map(|&c| {
            schema
                .columns
                .get(c)
                .map(|c| c.name.as_str())
                .unwrap_or("?")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`check_child`] for each of `rows`.
pub fn check_children(
    child: &TableSchema,
    rows: &[Vec<Value>],
    txn: &mut dyn WriteTxn,
) -> Result<()> {
    if child.foreign_keys.is_empty() {
        return Ok(());
    }
    rows.iter().try_for_each(|row| check_child(child, row, txn))
}

/// 23503 unless every foreign key of `child` finds its parent row for `row` (NULLs pass).
pub fn check_child(child: &TableSchema, row: &[Value], txn: &mut dyn WriteTxn) -> Result<()> {
    for fk in &child.foreign_keys {
        let values: Vec<Value> = fk
            .columns
            .iter()
            .map(|&c| row.get(c).cloned().unwrap_or(Value::Null))
            .collect();
        if values.iter().any(Value::is_null) {
            continue;
        }
        let parent = if fk.ref_table == child.name {
            child.clone()
        } else {
            txn.schema(&fk.ref_table)?
                .ok_or_else(|| Error::undefined_table(&fk.ref_table))?
        };
        let (ref_columns, how) = lookup(fk, &parent)?;
        let found = match how {
            Lookup::PrimaryKey(pk) => {
                // The key in primary-key order, converted to the parent's column types.
                let mut key = Vec::with_capacity(pk.len());
                for p in &pk {
                    let at = ref_columns.iter().position(|c| c == p).unwrap_or(0);
                    let ty = parent.columns[*p].data_type;
                    key.push(ty.coerce(values[at].clone())?);
                }
                let key = encode_key(&key);
                match txn.lock_row(&parent.name, &key)? {
                    RowLock::Changed(latest) => latest.is_some(),
                    RowLock::Unchanged => txn.get(&parent.name, &key)?.is_some(),
                }
            }
            Lookup::Unique(index) => {
                let idx = parent
                    .index(&index)
                    .ok_or_else(|| Error::internal("unique index vanished"))?;
                let mut ordered = Vec::with_capacity(idx.columns.len());
                for c in &idx.columns {
                    let at = ref_columns.iter().position(|r| r == c).unwrap_or(0);
                    ordered.push(parent.columns[*c].data_type.coerce(values[at].clone())?);
                }
                txn.unique_holder(&parent.name, &index, &ordered)?.is_some()
            }
        };
        if !found {
            return Err(Error::new(
                sqlstate::FOREIGN_KEY_VIOLATION,
                format!(
                    "insert or update on table \"{}\" violates foreign key constraint \"{}\"",
                    child.name, fk.name
                ),
            )
            .with_detail(format!(
                "Key ({})=({}) is not present in table \"{}\".",
                names(child, &fk.columns),
                show(&values),
                parent.name
            )));
        }
    }
    Ok(())
}

/// A parent row is deleted (`new` None) or changes its referenced values (`new` Some): apply
/// every referencing foreign key's action to the child rows that point at it.
pub fn on_parent_change(
    parent: &TableSchema,
    old: &[Value],
    new: Option<&[Value]>,
    txn: &mut dyn WriteTxn,
    depth: usize,
) -> Result<()> {
    if depth > 32 {
        return Err(Error::new(
            sqlstate::PROGRAM_LIMIT_EXCEEDED,
            "foreign key actions nested too deeply",
        ));
    }
    let children: Vec<TableSchema> = txn
        .schemas()?
        .into_iter()
        .filter(|s| s.foreign_keys.iter().any(|f| f.ref_table == parent.name))
        .collect();
    for child in children {
        for fk in child
            .foreign_keys
            .iter()
            .filter(|f| f.ref_table == parent.name)
        {
            let (ref_columns, _) = lookup(fk, parent)?;
            let old_values: Vec<Value> = ref_columns
                .iter()
                .map(|&c| old.get(c).cloned().unwrap_or(Value::Null))
                .collect();
            if let Some(new) = new {
                let unchanged = ref_columns.iter().all(|&c| {
                    old.get(c)
                        .zip(new.get(c))
                        .is_some_and(|(a, b)| a.total_cmp(b).is_eq())
                });
                if unchanged {
                    continue;
                }
            }
            let referencing: Vec<(Vec<u8>, Vec<Value>)> = txn
                .scan(&child.name, crate::txn::full_range())?
                .filter_map(|r| match r {
                    Ok((k, row)) => {
                        let matches = fk.columns.iter().zip(&old_values).all(|(&c, v)| {
                            row.get(c)
                                .is_some_and(|x| x.sql_cmp(v).is_some_and(|o| o.is_eq()))
                        });
                        matches.then_some(Ok((k, row)))
                    }
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_>>()?;
            if referencing.is_empty() {
                continue;
            }
            let act = if new.is_some() {
                fk.on_update
            } else {
                fk.on_delete
            };
            match act {
                FkAction::NoAction | FkAction::Restrict => {
                    return Err(Error::new(
                        sqlstate::FOREIGN_KEY_VIOLATION,
                        format!(
                            "update or delete on table \"{}\" violates foreign key constraint \"{}\" on table \"{}\"",
                            parent.name, fk.name, child.name
                        ),
                    )
                    .with_detail(format!(
                        "Key ({})=({}) is still referenced from table \"{}\".",
                        names(parent, &ref_columns),
                        show(&old_values),
                        child.name
                    )));
                }
                FkAction::Cascade => {
                    for (key, row) in referencing {
                        txn.lock_row(&child.name, &key)?;
                        match new {
                            None => {
                                on_parent_change(&child, &row, None, txn, depth + 1)?;
                                txn.delete(&child.name, &key)?;
                            }
                            Some(new) => {
                                let mut updated = row.clone();
                                for (&c, &r) in fk.columns.iter().zip(&ref_columns) {
                                    updated[c] = new.get(r).cloned().unwrap_or(Value::Null);
                                }
                                on_parent_change(&child, &row, Some(&updated), txn, depth + 1)?;
                                let new_key = encode_key(&child.key_of(&updated));
                                if new_key != key {
                                    txn.delete(&child.name, &key)?;
                                }
                                txn.put(&child.name, new_key, updated)?;
                            }
                        }
                    }
                }
                FkAction::SetNull => {
                    for (key, row) in referencing {
                        txn.lock_row(&child.name, &key)?;
                        let mut updated = row.clone();
                        for &c in &fk.columns {
                            if !child.columns[c].nullable {
                                return Err(Error::new(
                                    sqlstate::NOT_NULL_VIOLATION,
                                    format!(
                                        "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                                        child.columns[c].name, child.name
                                    ),
                                ));
                            }
                            updated[c] = Value::Null;
                        }
                        on_parent_change(&child, &row, Some(&updated), txn, depth + 1)?;
                        txn.put(&child.name, key, updated)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The tables (other than `except`) whose foreign keys reference `table`.
pub fn referencing_tables(schemas: &[TableSchema], table: &str, except: &[String]) -> Vec<String> {
    schemas
        .iter()
        .filter(|s| s.name != table && !except.contains(&s.name))
        .filter(|s| crate::txn::references(s, table))
        .map(|s| s.name.clone())
        .collect()
}
