//! CREATE INDEX, DROP INDEX and UNIQUE constraints: the secondary indexes of a table's schema.
//!
//! An index is part of its table's definition (`TableSchema::indexes`), so creating or
//! dropping one is a change of that definition, carried like ALTER TABLE: a new schema in the
//! change log, from which storage builds or deletes the index's entries (`crate::index`).
//! The router computes the same new schema with the same functions for meta.
//!
//! Only plain column indexes exist: an index on an expression, a partial index (`WHERE`)
//! or `NULLS NOT DISTINCT` is refused rather than built wrong.

use std::collections::HashMap;

use protocol::schema::{IndexDef, QueryResult, TableSchema};
use protocol::{DataType, Error, Result, Value, sqlstate};
use sqlparser::ast;

use super::parse::{ident, object_name};
use crate::txn::{ReadTxn, WriteTxn};

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1).
const MAX_NAME: usize = 63;

/// PostgreSQL's name for an index or constraint of a table over some columns
/// (`<table>_<col>_<col>_<suffix>`), the first of `name`, `name1`, `name2`, … not `taken`.
pub fn default_name(
    table: &str,
    columns: &[&str],
    suffix: &str,
    taken: &dyn Fn(&str) -> bool,
) -> String {
    let mut base = if columns.is_empty() {
        table.to_string()
    } else {
        format!("{table}_{}", columns.join("_"))
    };
    let mut n = 0u64;
    loop {
        let tail = if n == 0 {
            format!("_{suffix}")
        } else {
            format!("_{suffix}{n}")
        };
        // Like PostgreSQL, shorten the stem so the name fits, never the suffix.
        while base.len() + tail.len() > MAX_NAME && !base.is_empty() {
            base.pop();
        }
        let name = format!("{base}{tail}");
        if !taken(&name) {
            return name;
        }
        n += 1;
    }
}

/// The positions and directions of an index's columns in `schema`.
fn index_columns(
    schema: &TableSchema,
    columns: &[ast::IndexColumn],
) -> Result<(Vec<usize>, Vec<bool>)> {
    let mut positions = Vec::with_capacity(columns.len());
    let mut descending = Vec::with_capacity(columns.len());
    for c in columns {
        let name = match &c.column.expr {
            ast::Expr::Identifier(i) => ident(i),
            other => {
                return Err(Error::unsupported(format!(
                    "an index on the expression {other} is not supported (index plain columns)"
                )));
            }
        };
        positions.push(user_column(schema, &name)?);
        descending.push(matches!(
            c.column.options.sort,
            Some(ast::OrderBySort::Desc)
        ));
    }
    Ok((positions, descending))
}

/// Interval and json(b) values that SQL calls equal can have different encodings (`1 month`
/// and `30 days`; `1` and `1.0`), so a unique index could not see them as duplicates.
fn refuse_unique_on_inexact(schema: &TableSchema, columns: &[usize]) -> Result<()> {
    for &c in columns {
        let col = &schema.columns[c];
        if matches!(
            col.data_type,
            DataType::Interval | DataType::Json | DataType::Jsonb
        ) {
            return Err(Error::unsupported(format!(
                "a unique index on column \"{}\" of type {} is not supported",
                col.name,
                col.data_type.name()
            )));
        }
    }
    Ok(())
}

/// The position of a user column by name (42703 `column "x" does not exist`).
pub fn user_column(schema: &TableSchema, name: &str) -> Result<usize> {
    schema
        .user_columns()
        .find(|(_, col)| col.name == name)
        .map(|(i, _)| i)
        .ok_or_else(|| {
            Error::new(
                sqlstate::UNDEFINED_COLUMN,
                format!("column \"{name}\" does not exist"),
            )
        })
}

/// True if `name` is taken by a table or an index among `schemas`.
pub fn name_taken(schemas: &[TableSchema], name: &str) -> bool {
    schemas.iter().any(|s| {
        s.name == name
            || (s.rowid().is_none() && s.primary_key_name() == name)
            || s.indexes.iter().any(|i| i.name == name)
    })
}

/// The UNIQUE constraints a CREATE TABLE declares (column-level `UNIQUE` and table-level
/// `UNIQUE (…)`), as unique indexes of `schema`.
pub fn unique_constraints(schema: &TableSchema, ct: &ast::CreateTable) -> Result<Vec<IndexDef>> {
    let mut found: Vec<(
        Option<String>,
        Vec<ast::IndexColumn>,
        &ast::UniqueConstraint,
    )> = Vec::new();
    for c in &ct.columns {
        for opt in &c.options {
            if let ast::ColumnOption::Unique(u) = &opt.option {
                let name = opt.name.as_ref().or(u.name.as_ref()).map(ident);
                found.push((name, vec![ast::IndexColumn::from(c.name.clone())], u));
            }
        }
    }
    for constraint in &ct.constraints {
        if let ast::TableConstraint::Unique(u) = constraint {
            found.push((u.name.as_ref().map(ident), u.columns.clone(), u));
        }
    }
    let mut out: Vec<IndexDef> = Vec::with_capacity(found.len());
    for (name, columns, u) in found {
        if u.nulls_distinct == ast::NullsDistinctOption::NotDistinct {
            return Err(Error::unsupported(
                "UNIQUE NULLS NOT DISTINCT is not supported",
            ));
        }
        if u.characteristics
            .as_ref()
            .is_some_and(|c| c.deferrable == Some(true))
        {
            return Err(Error::unsupported(
                "DEFERRABLE constraints are not supported",
            ));
        }
        let (positions, descending) = index_columns(schema, &columns)?;
        refuse_unique_on_inexact(schema, &positions)?;
        let name = match name {
            Some(n) => n,
            None => {
                let cols: Vec<&str> = positions
                    .iter()
                    .map(|&i| schema.columns[i].name.as_str())
                    .collect();
                default_name(&schema.name, &cols, "key", &|n| {
                    n == schema.name
                        || n == schema.primary_key_name()
                        || out.iter().any(|i| i.name == n)
                })
            }
        };
        if out.iter().any(|i| i.name == name) || name == schema.name {
            return Err(Error::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        // PostgreSQL keeps one index for a repeated constraint over the same columns.
        if out.iter().any(|i| i.columns == positions) {
            continue;
        }
        out.push(IndexDef {
            name,
            columns: positions,
            descending,
            unique: true,
            constraint: true,
        });
    }
    Ok(out)
}

/// A UNIQUE constraint added by ALTER TABLE (besides those already in `schema` and `added`).
pub fn unique_constraint(
    schema: &TableSchema,
    name: Option<String>,
    columns: &[ast::IndexColumn],
    added: &[IndexDef],
) -> Result<IndexDef> {
    let (positions, descending) = index_columns(schema, columns)?;
    refuse_unique_on_inexact(schema, &positions)?;
    let taken = |n: &str| {
        n == schema.name
            || n == schema.primary_key_name()
            || schema.indexes.iter().any(|i| i.name == n)
            || added.iter().any(|i| i.name == n)
    };
    let name = match name {
        Some(n) if taken(&n) => {
            return Err(Error::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{n}\" already exists"),
            ));
        }
        Some(n) => n,
        None => {
            let cols: Vec<&str> = positions
                .iter()
                .map(|&i| schema.columns[i].name.as_str())
                .collect();
            default_name(&schema.name, &cols, "key", &taken)
        }
    };
    Ok(IndexDef {
        name,
        columns: positions,
        descending,
        unique: true,
        constraint: true,
    })
}

/// What CREATE INDEX does to a table's schema: `None` if the index exists and the statement
/// says IF NOT EXISTS. `taken` answers whether a relation name is in use anywhere.
pub fn schema_with_index(
    schema: &TableSchema,
    ci: &ast::CreateIndex,
    taken: &dyn Fn(&str) -> bool,
) -> Result<Option<TableSchema>> {
    if ci.predicate.is_some() {
        return Err(Error::unsupported(
            "partial indexes (CREATE INDEX … WHERE) are not supported",
        ));
    }
    if ci.nulls_distinct == Some(false) {
        return Err(Error::unsupported("NULLS NOT DISTINCT is not supported"));
    }
    match &ci.using {
        None => {}
        Some(t) => {
            let method = t.to_string().to_ascii_lowercase();
            if method != "btree" && method != "hash" {
                return Err(Error::unsupported(format!(
                    "index access method \"{method}\" is not supported (btree and hash are)"
                )));
            }
        }
    }
    let (columns, descending) = index_columns(schema, &ci.columns)?;
    if ci.unique {
        refuse_unique_on_inexact(schema, &columns)?;
    }
    let name = match &ci.name {
        Some(n) => object_name(n)?,
        None => {
            let cols: Vec<&str> = columns
                .iter()
                .map(|&i| schema.columns[i].name.as_str())
                .collect();
            default_name(&schema.name, &cols, "idx", taken)
        }
    };
    if taken(&name) {
        if ci.if_not_exists {
            return Ok(None);
        }
        return Err(Error::new(
            sqlstate::DUPLICATE_TABLE,
            format!("relation \"{name}\" already exists"),
        ));
    }
    let mut new = schema.clone();
    new.indexes.push(IndexDef {
        name,
        columns,
        descending,
        unique: ci.unique,
        constraint: false,
    });
    Ok(Some(new))
}

/// What DROP INDEX `name` does to the schema of the table that holds it.
pub fn schema_without_index(schema: &TableSchema, name: &str) -> Result<TableSchema> {
    let constraint_error = || {
        Error::new(
            sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
            format!(
                "cannot drop index {name} because constraint {name} on table {} requires it",
                schema.name
            ),
        )
    };
    if schema.rowid().is_none() && schema.primary_key_name() == name {
        return Err(constraint_error());
    }
    let Some(idx) = schema.index(name) else {
        return Err(undefined_index(name));
    };
    if idx.constraint {
        return Err(constraint_error());
    }
    let mut new = schema.clone();
    new.indexes.retain(|i| i.name != name);
    Ok(new)
}

pub fn undefined_index(name: &str) -> Error {
    Error::new(
        sqlstate::UNDEFINED_OBJECT,
        format!("index \"{name}\" does not exist"),
    )
}

/// The table among `schemas` that holds index `name` (its primary key's index included).
pub fn owner_of<'a>(schemas: &'a [TableSchema], name: &str) -> Option<&'a TableSchema> {
    schemas
        .iter()
        .find(|s| s.index(name).is_some() || (s.rowid().is_none() && s.primary_key_name() == name))
}

/// Fails with 23505 if the table's rows already hold a duplicate for a new unique index.
pub(super) fn check_no_duplicates(
    schema: &TableSchema,
    idx: &IndexDef,
    txn: &dyn ReadTxn,
) -> Result<()> {
    let mut seen: HashMap<Vec<u8>, ()> = HashMap::new();
    for entry in txn.scan(&schema.name, crate::txn::full_range())? {
        let (_, row) = entry?;
        let values = schema.index_values(idx, &row);
        if values.iter().any(Value::is_null) {
            continue;
        }
        if seen
            .insert(protocol::keycode::encode_key(&values), ())
            .is_some()
        {
            let columns: Vec<&str> = idx
                .columns
                .iter()
                .map(|&c| schema.columns[c].name.as_str())
                .collect();
            let shown: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            return Err(Error::new(
                sqlstate::UNIQUE_VIOLATION,
                format!("could not create unique index \"{}\"", idx.name),
            )
            .with_detail(format!(
                "Key ({})=({}) is duplicated.",
                columns.join(", "),
                shown.join(", ")
            )));
        }
    }
    Ok(())
}

/// CREATE INDEX on this shard's copy of the table.
pub fn create_index(ci: &ast::CreateIndex, txn: &mut dyn WriteTxn) -> Result<QueryResult> {
    let table = object_name(&ci.table_name)?;
    let schema = txn
        .schema(&table)?
        .ok_or_else(|| Error::undefined_table(&table))?;
    let schemas = txn.schemas()?;
    let Some(new) = schema_with_index(&schema, ci, &|n| name_taken(&schemas, n))? else {
        return Ok(QueryResult::command("CREATE INDEX", 0));
    };
    if let Some(idx) = new.indexes.last().filter(|i| i.unique) {
        check_no_duplicates(&new, idx, &*txn)?;
    }
    txn.alter_table(new)?;
    Ok(QueryResult::command("CREATE INDEX", 0))
}

/// DROP INDEX on this shard: every named index, or none if one is missing (without IF EXISTS).
pub fn drop_index(
    names: &[ast::ObjectName],
    if_exists: bool,
    txn: &mut dyn WriteTxn,
) -> Result<QueryResult> {
    for n in names {
        let name = object_name(n)?;
        let schemas = txn.schemas()?;
        match owner_of(&schemas, &name) {
            Some(owner) => {
                let new = schema_without_index(owner, &name)?;
                txn.alter_table(new)?;
            }
            None if schemas.iter().any(|s| s.name == name) => {
                return Err(Error::new(
                    sqlstate::WRONG_OBJECT_TYPE,
                    format!("\"{name}\" is not an index"),
                ));
            }
            None if if_exists => {}
            None => return Err(undefined_index(&name)),
        }
    }
    Ok(QueryResult::command("DROP INDEX", 0))
}

/// Keeps a table's indexes through ALTER TABLE: each column follows its row position in the
/// new layout; an index that loses a column goes with it, as in PostgreSQL.
pub fn remap_indexes(
    indexes: &[IndexDef],
    new_position: impl Fn(usize) -> Option<usize>,
) -> Vec<IndexDef> {
    indexes
        .iter()
        .filter_map(|idx| {
            let columns: Option<Vec<usize>> =
                idx.columns.iter().map(|&c| new_position(c)).collect();
            columns.map(|columns| IndexDef {
                columns,
                ..idx.clone()
            })
        })
        .collect()
}
