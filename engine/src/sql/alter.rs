//! ALTER TABLE: a new schema, and the rows rewritten to fit it, in one transaction.
//!
//! ```text
//!  old schema ──apply operations──► new schema + layout (new column i ← old column j, or DEFAULT)
//!  every row  ──layout──► new row ──NOT NULL / key checks──► put (delete the old key if it moved)
//! ```
//! Supported: ADD COLUMN, DROP COLUMN, RENAME COLUMN, RENAME TO, ALTER COLUMN SET/DROP DEFAULT
//! and SET/DROP NOT NULL, and ADD PRIMARY KEY on a table created without one (which re-keys
//! its rows from the hidden row id to the new key, as `pgbench -i` needs). Every row is
//! rewritten when the layout changes, like PostgreSQL's table rewrite, so stored rows always
//! match their schema. The router computes the same new schema with [`altered_schema`] for
//! meta, so shards and meta agree.

use std::collections::HashSet;

use protocol::keycode::encode_key;
use protocol::schema::{ColumnDef, QueryResult, TableSchema};
use protocol::{Error, Result, Value, sqlstate};
use sqlparser::ast::{self, AlterColumnOperation, AlterTableOperation, TableConstraint};

use super::bind::Binder;
use super::expr::{Ctx, Env};
use super::parse::{ident, object_name, parse_expr};
use crate::txn::WriteTxn;

/// Where a column of the altered table gets its values from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// The old table's column at this position.
    Old(usize),
    /// A new column: its DEFAULT (NULL without one).
    Default,
}

/// What an ALTER TABLE does to one table.
#[derive(Clone, Debug)]
pub struct Alteration {
    pub schema: TableSchema,
    /// For each new column, where its values come from.
    pub layout: Vec<Source>,
    /// True if the storage key changes (ADD PRIMARY KEY).
    pub rekey: bool,
    /// Columns that must hold no NULL afterwards, checked against every row.
    pub check_not_null: Vec<usize>,
    /// CHECK constraints and unique indexes added, which every existing row must satisfy.
    pub new_checks: Vec<String>,
    pub new_unique: Vec<String>,
}

impl Alteration {
    /// True if stored rows must be rewritten.
    pub fn rewrites(&self, old_width: usize) -> bool {
        self.rekey
            || self.layout.len() != old_width
            || self
                .layout
                .iter()
                .enumerate()
                .any(|(i, s)| *s != Source::Old(i))
    }
}

fn column_missing(column: &str, table: &str) -> Error {
    Error::new(
        sqlstate::UNDEFINED_COLUMN,
        format!("column \"{column}\" of relation \"{table}\" does not exist"),
    )
}

/// A column as ADD COLUMN declares it, read through CREATE TABLE's rules.
fn column_def(def: &ast::ColumnDef) -> Result<ColumnDef> {
    let create = format!("CREATE TABLE t ({def})");
    let stmt = super::parse(&create)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("empty column definition"))?;
    let schema = super::ddl::schema_from_create(&stmt)?;
    if schema.rowid().is_none() {
        return Err(Error::unsupported(
            "ADD COLUMN ... PRIMARY KEY is not supported; use ADD PRIMARY KEY",
        ));
    }
    schema
        .columns
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("empty column definition"))
}

/// The schema an ALTER TABLE gives `old`, and how rows map onto it.
pub fn altered_schema(old: &TableSchema, at: &ast::AlterTable) -> Result<Alteration> {
    let mut schema = old.clone();
    let mut layout: Vec<Source> = (0..old.columns.len()).map(Source::Old).collect();
    let mut rekey = false;
    let mut check_not_null = Vec::new();
    let mut new_checks = Vec::new();
    let mut added_indexes: Vec<protocol::schema::IndexDef> = Vec::new();
    let mut dropped_indexes: Vec<String> = Vec::new();
    let table = old.name.clone();
    for op in &at.operations {
        match op {
            AlterTableOperation::AddColumn {
                if_not_exists,
                column_def: def,
                column_position: None,
                ..
            } => {
                let col = column_def(def)?;
                if schema.column_index(&col.name).is_some() {
                    if *if_not_exists {
                        continue;
                    }
                    return Err(Error::new(
                        sqlstate::DUPLICATE_COLUMN,
                        format!(
                            "column \"{}\" of relation \"{table}\" already exists",
                            col.name
                        ),
                    ));
                }
                // User columns stay ahead of the row id, which is always last.
                let at = schema.rowid().unwrap_or(schema.columns.len());
                if !col.nullable {
                    check_not_null.push(col.name.clone());
                }
                schema.columns.insert(at, col);
                layout.insert(at, Source::Default);
                for k in &mut schema.primary_key {
                    if *k >= at {
                        *k += 1;
                    }
                }
            }
            AlterTableOperation::DropColumn {
                column_names,
                if_exists,
                ..
            } => {
                for c in column_names {
                    let name = ident(c);
                    let Some(i) = schema.column_index(&name).filter(|i| !schema.is_system(*i))
                    else {
                        if *if_exists {
                            continue;
                        }
                        return Err(column_missing(&name, &table));
                    };
                    if schema.primary_key.contains(&i) {
                        return Err(Error::unsupported(format!(
                            "cannot drop column \"{name}\" of table \"{table}\": it is part of the primary key"
                        )));
                    }
                    schema.columns.remove(i);
                    layout.remove(i);
                    for k in &mut schema.primary_key {
                        if *k > i {
                            *k -= 1;
                        }
                    }
                }
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let (from, to) = (ident(old_column_name), ident(new_column_name));
                let i = schema
                    .column_index(&from)
                    .filter(|i| !schema.is_system(*i))
                    .ok_or_else(|| column_missing(&from, &table))?;
                if schema.column_index(&to).is_some() || to == protocol::schema::ROWID_COLUMN {
                    return Err(Error::new(
                        sqlstate::DUPLICATE_COLUMN,
                        format!("column \"{to}\" of relation \"{table}\" already exists"),
                    ));
                }
                schema.columns[i].name = to;
            }
            AlterTableOperation::RenameTable { table_name } => {
                let name = match table_name {
                    ast::RenameTableNameKind::To(n) | ast::RenameTableNameKind::As(n) => n,
                };
                schema.name = object_name(name)?;
            }
            AlterTableOperation::AlterColumn { column_name, op } => {
                let name = ident(column_name);
                let i = schema
                    .column_index(&name)
                    .filter(|i| !schema.is_system(*i))
                    .ok_or_else(|| column_missing(&name, &table))?;
                match op {
                    AlterColumnOperation::SetNotNull => {
                        schema.columns[i].nullable = false;
                        check_not_null.push(name);
                    }
                    AlterColumnOperation::DropNotNull => {
                        if schema.primary_key.contains(&i) {
                            return Err(Error::new(
                                sqlstate::INVALID_TABLE_DEFINITION,
                                format!("column \"{name}\" is in a primary key"),
                            ));
                        }
                        schema.columns[i].nullable = true;
                    }
                    AlterColumnOperation::SetDefault { value } => {
                        let text = value.to_string();
                        parse_expr(&text)?;
                        schema.columns[i].default = Some(text);
                    }
                    AlterColumnOperation::DropDefault => schema.columns[i].default = None,
                    other => {
                        return Err(Error::unsupported(format!(
                            "ALTER COLUMN {other} is not supported"
                        )));
                    }
                }
            }
            AlterTableOperation::AddConstraint {
                constraint: TableConstraint::PrimaryKey(pk),
                ..
            } => {
                let Some(rowid) = schema.rowid() else {
                    return Err(Error::new(
                        sqlstate::INVALID_TABLE_DEFINITION,
                        format!("multiple primary keys for table \"{table}\" are not allowed"),
                    ));
                };
                let mut key = Vec::with_capacity(pk.columns.len());
                for c in &pk.columns {
                    let ast::Expr::Identifier(id) = &c.column.expr else {
                        return Err(Error::unsupported("primary key on an expression"));
                    };
                    let name = ident(id);
                    let i = schema
                        .column_index(&name)
                        .filter(|i| !schema.is_system(*i))
                        .ok_or_else(|| {
                            Error::new(
                                sqlstate::UNDEFINED_COLUMN,
                                format!("column \"{name}\" named in key does not exist"),
                            )
                        })?;
                    if key.contains(&i) {
                        return Err(Error::new(
                            sqlstate::DUPLICATE_COLUMN,
                            format!("column \"{name}\" appears twice in primary key constraint"),
                        ));
                    }
                    schema.columns[i].nullable = false;
                    check_not_null.push(name);
                    key.push(i);
                }
                schema.columns.remove(rowid);
                layout.remove(rowid);
                schema.primary_key = key;
                rekey = true;
            }
            AlterTableOperation::AddConstraint {
                constraint: TableConstraint::Check(chk),
                ..
            } => {
                let def = super::checks::define(
                    &schema,
                    &schema.checks,
                    chk.name.as_ref().map(ident),
                    None,
                    &chk.expr,
                )?;
                new_checks.push(def.name.clone());
                schema.checks.push(def);
                schema.checks.sort_by(|a, b| a.name.cmp(&b.name));
            }
            AlterTableOperation::AddConstraint {
                constraint: TableConstraint::Unique(u),
                ..
            } => {
                let idx = super::index_ddl::unique_constraint(
                    &schema,
                    u.name.as_ref().map(ident),
                    &u.columns,
                    &added_indexes,
                )?;
                added_indexes.push(idx);
            }
            AlterTableOperation::DropConstraint {
                if_exists, name, ..
            } => {
                let name = ident(name);
                if let Some(pos) = schema.checks.iter().position(|c| c.name == name) {
                    schema.checks.remove(pos);
                } else if schema
                    .indexes
                    .iter()
                    .any(|i| i.constraint && i.name == name)
                {
                    dropped_indexes.push(name);
                } else if schema.rowid().is_none() && name == schema.primary_key_name() {
                    return Err(Error::unsupported(
                        "dropping the primary key is not supported",
                    ));
                } else if !*if_exists {
                    return Err(Error::new(
                        sqlstate::UNDEFINED_OBJECT,
                        format!("constraint \"{name}\" of relation \"{table}\" does not exist"),
                    ));
                }
            }
            other => {
                return Err(Error::unsupported(format!(
                    "ALTER TABLE ... {other} is not supported"
                )));
            }
        }
    }
    schema.indexes = super::index_ddl::remap_indexes(&old.indexes, |c| {
        layout.iter().position(|s| *s == Source::Old(c))
    });
    schema
        .indexes
        .retain(|i| !dropped_indexes.contains(&i.name));
    // Foreign keys follow their columns; one that loses a column goes with it.
    schema.foreign_keys = old
        .foreign_keys
        .iter()
        .filter_map(|fk| {
            let columns: Option<Vec<usize>> = fk
                .columns
                .iter()
                .map(|&c| layout.iter().position(|s| *s == Source::Old(c)))
                .collect();
            columns.map(|columns| protocol::schema::ForeignKeyDef {
                columns,
                ..fk.clone()
            })
        })
        .collect();
    let new_unique: Vec<String> = added_indexes.iter().map(|i| i.name.clone()).collect();
    schema.indexes.extend(added_indexes);
    let check_not_null = check_not_null
        .iter()
        .filter_map(|n| schema.column_index(n))
        .collect();
    Ok(Alteration {
        schema,
        layout,
        rekey,
        check_not_null,
        new_checks,
        new_unique,
    })
}

/// Runs ALTER TABLE on this shard's copy of the table.
pub fn alter_table(stmt: &ast::Statement, txn: &mut dyn WriteTxn) -> Result<QueryResult> {
    let ast::Statement::AlterTable(at) = stmt else {
        return Err(Error::internal(
            "alter_table needs an ALTER TABLE statement",
        ));
    };
    let name = object_name(&at.name)?;
    let Some(old) = txn.schema(&name)? else {
        if at.if_exists {
            return Ok(QueryResult::command("ALTER TABLE", 0));
        }
        return Err(Error::undefined_table(&name));
    };
    let alt = altered_schema(&old, at)?;
    let renamed = alt.schema.name != old.name;
    if renamed && txn.schema(&alt.schema.name)?.is_some() {
        return Err(Error::new(
            sqlstate::DUPLICATE_TABLE,
            format!("relation \"{}\" already exists", alt.schema.name),
        ));
    }
    super::ddl::check_defaults(&alt.schema, &*txn)?;
    super::checks::validate(&alt.schema, &*txn)?;
    // Other tables' foreign keys name this table and its columns.
    let names_changed = renamed
        || old.columns.len() != alt.schema.columns.len()
        || old
            .columns
            .iter()
            .zip(&alt.schema.columns)
            .any(|(a, b)| a.name != b.name);
    if names_changed && !txn.referencing_tables(&old.name)?.is_empty() {
        return Err(Error::unsupported(format!(
            "cannot rename or drop columns of, or rename, table \"{}\": foreign keys reference it",
            old.name
        )));
    }
    verify_new_constraints(&alt, &old, &*txn)?;
    let rewrite = alt.rewrites(old.columns.len());
    if !rewrite && !renamed && alt.check_not_null.is_empty() {
        txn.alter_table(alt.schema)?;
        return Ok(QueryResult::command("ALTER TABLE", 0));
    }
    let rows = new_rows(&old, &alt, &*txn)?;
    if renamed {
        // A rename moves the rows to the new name's storage table.
        txn.create_table(alt.schema.clone())?;
        for (_, key, row) in rows {
            txn.put(&alt.schema.name, key, row)?;
        }
        txn.drop_table(&old.name)?;
    } else {
        txn.alter_table(alt.schema.clone())?;
        if rewrite {
            for (old_key, key, row) in rows {
                if old_key != key {
                    txn.delete(&name, &old_key)?;
                }
                txn.put(&name, key, row)?;
            }
        }
    }
    Ok(QueryResult::command("ALTER TABLE", 0))
}

/// Added CHECK constraints and unique indexes must hold for the rows already there.
fn verify_new_constraints(alt: &Alteration, old: &TableSchema, txn: &dyn WriteTxn) -> Result<()> {
    if alt.new_checks.is_empty() && alt.new_unique.is_empty() {
        return Ok(());
    }
    let table = old.name.as_str();
    if alt.rewrites(old.columns.len()) {
        return Err(Error::unsupported(
            "ADD CONSTRAINT together with column changes is not supported; run them separately",
        ));
    }
    let mut binder = Binder::new(txn);
    let checks: Vec<_> = super::checks::bind(&mut binder, &alt.schema)?
        .into_iter()
        .filter(|(n, _)| alt.new_checks.contains(n))
        .collect();
    let ctx = Ctx::new(txn, &[]);
    for entry in txn.scan(table, crate::txn::full_range())? {
        let (_, row) = entry?;
        for (name, e) in &checks {
            if let Value::Bool(false) = e.eval(&super::expr::Env::new(&row, None, &ctx))? {
                return Err(Error::new(
                    sqlstate::CHECK_VIOLATION,
                    format!(
                        "check constraint \"{name}\" of relation \"{table}\" is violated by some row"
                    ),
                ));
            }
        }
    }
    for name in &alt.new_unique {
        if let Some(idx) = alt.schema.index(name) {
            super::index_ddl::check_no_duplicates(&alt.schema, idx, txn)?;
        }
    }
    Ok(())
}

/// A row in its new layout: old key, new key, values.
type RewrittenRow = (Vec<u8>, Vec<u8>, Vec<Value>);

/// Every row of the table in its new layout, with its old and new key; fails on a NULL in a
/// column that must have none, or on a duplicate of the new primary key.
fn new_rows(old: &TableSchema, alt: &Alteration, txn: &dyn WriteTxn) -> Result<Vec<RewrittenRow>> {
    let ctx = Ctx::new(txn, &[]);
    let mut binder = Binder::new(txn);
    let mut defaults = Vec::with_capacity(alt.layout.len());
    for (i, s) in alt.layout.iter().enumerate() {
        let col = &alt.schema.columns[i];
        defaults.push(match (s, &col.default) {
            (Source::Default, Some(text)) => {
                let (e, _) = binder.expr(&parse_expr(text)?)?;
                Some(e)
            }
            _ => None,
        });
    }
    let empty = Env::new(&[], None, &ctx);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for item in txn.scan(&old.name, crate::txn::full_range())? {
        let (old_key, row) = item?;
        let mut new = Vec::with_capacity(alt.layout.len());
        for (i, s) in alt.layout.iter().enumerate() {
            let col = &alt.schema.columns[i];
            let v = match s {
                Source::Old(j) => row.get(*j).cloned().unwrap_or(Value::Null),
                Source::Default => match &defaults[i] {
                    Some(e) => col.data_type.coerce(e.eval(&empty)?)?,
                    None => Value::Null,
                },
            };
            new.push(v);
        }
        for &c in &alt.check_not_null {
            if new.get(c).is_none_or(Value::is_null) {
                return Err(Error::new(
                    sqlstate::NOT_NULL_VIOLATION,
                    format!(
                        "column \"{}\" of relation \"{}\" contains null values",
                        alt.schema.columns[c].name, old.name
                    ),
                ));
            }
        }
        let key = if alt.rekey {
            let key = encode_key(&alt.schema.key_of(&new));
            if !seen.insert(key.clone()) {
                return Err(duplicate(alt, &new));
            }
            key
        } else {
            old_key.clone()
        };
        out.push((old_key, key, new));
    }
    Ok(out)
}

fn duplicate(alt: &Alteration, row: &[Value]) -> Error {
    let s = &alt.schema;
    let cols: Vec<&str> = s
        .primary_key
        .iter()
        .map(|&i| s.columns[i].name.as_str())
        .collect();
    let vals: Vec<String> = s
        .primary_key
        .iter()
        .map(|&i| {
            row[i]
                .to_pg_text(&s.columns[i].data_type)
                .unwrap_or_else(|| "null".into())
        })
        .collect();
    Error::new(
        sqlstate::UNIQUE_VIOLATION,
        format!("could not create unique index \"{}_pkey\"", s.name),
    )
    .with_detail(format!(
        "Key ({})=({}) is duplicated.",
        cols.join(", "),
        vals.join(", ")
    ))
}
