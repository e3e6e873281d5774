//! Table schemas and query results: what a shard stores about a table and returns for a query.

use serde::{Deserialize, Serialize};

use crate::value::{DataType, Value};

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
    /// The DEFAULT expression as SQL text, evaluated at insert time.
    pub default: Option<String>,
}

/// A secondary index: a sorted copy of some columns of every row, pointing at the row's key.
/// A UNIQUE constraint is a unique index that belongs to a constraint of the same name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Unique among the relations of the database (tables, indexes, sequences, views).
    pub name: String,
    /// Positions of the indexed columns in the table's `columns`, in index order.
    pub columns: Vec<usize>,
    /// Per column: declared DESC (kept for display; storage order is always ascending).
    pub descending: Vec<bool>,
    pub unique: bool,
    /// Created by a UNIQUE constraint (dropped with it, not with DROP INDEX).
    pub constraint: bool,
}

/// A table as the shard's catalog and meta know it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Positions of the primary-key columns in `columns`, in key order.
    pub primary_key: Vec<usize>,
    /// Secondary indexes and UNIQUE constraints.
    pub indexes: Vec<IndexDef>,
    /// CHECK constraints, kept sorted by name (PostgreSQL tests them in that order).
    pub checks: Vec<CheckDef>,
    /// FOREIGN KEY constraints this table's rows must satisfy.
    pub foreign_keys: Vec<ForeignKeyDef>,
}

/// What happens to referencing rows when the referenced row goes or changes its key.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum FkAction {
    NoAction,
    Restrict,
    Cascade,
    SetNull,
}

/// A FOREIGN KEY: `columns` of this table reference `ref_columns` of `ref_table` (a primary
/// key or UNIQUE constraint there).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForeignKeyDef {
    pub name: String,
    pub columns: Vec<usize>,
    pub ref_table: String,
    /// Referenced column names (empty: the referenced table's primary key).
    pub ref_columns: Vec<String>,
    pub on_delete: FkAction,
    pub on_update: FkAction,
}

/// A CHECK constraint: a boolean expression over the row that must not be false.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckDef {
    pub name: String,
    /// The expression as SQL text.
    pub expr: String,
}

/// The system column that keys a table declared without a PRIMARY KEY: a bigint the shard
/// assigns on insert, unique within the shard, never shown by `*` (PostgreSQL's `ctid` is
/// likewise a hidden system column, so no user table can have a column of that name).
pub const ROWID_COLUMN: &str = "ctid";

impl TableSchema {
    /// The position of the row-id system column, if the table has no declared primary key.
    pub fn rowid(&self) -> Option<usize> {
        match self.primary_key.as_slice() {
            [i] if self.columns.get(*i).is_some_and(|c| c.name == ROWID_COLUMN) => Some(*i),
            _ => None,
        }
    }

    /// True for a system column, which `*`, COPY and INSERT without a column list skip.
    pub fn is_system(&self, index: usize) -> bool {
        self.rowid() == Some(index)
    }

    /// The columns a user declared, with their positions.
    pub fn user_columns(&self) -> impl Iterator<Item = (usize, &ColumnDef)> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.is_system(*i))
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn index(&self, name: &str) -> Option<&IndexDef> {
        self.indexes.iter().find(|i| i.name == name)
    }

    /// The name of the index that holds the primary key, as PostgreSQL names it.
    pub fn primary_key_name(&self) -> String {
        format!("{}_pkey", self.name)
    }

    /// The values a row contributes to an index, in index column order.
    pub fn index_values(&self, index: &IndexDef, row: &[Value]) -> Vec<Value> {
        index
            .columns
            .iter()
            .map(|&i| row.get(i).cloned().unwrap_or(Value::Null))
            .collect()
    }

    pub fn key_of(&self, row: &[Value]) -> Vec<Value> {
        self.primary_key
            .iter()
            .map(|&i| row.get(i).cloned().unwrap_or(Value::Null))
            .collect()
    }
}

/// A column of a result set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultColumn {
    pub name: String,
    pub data_type: DataType,
}

/// The outcome of one statement on one shard.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    /// Empty for statements that return no rows.
    pub columns: Vec<ResultColumn>,
    pub rows: Vec<Vec<Value>>,
    /// The command tag's verb, e.g. "SELECT", "INSERT", "CREATE TABLE".
    pub tag: String,
    /// Rows returned or affected.
    pub affected: u64,
}

impl QueryResult {
    pub fn command(tag: &str, affected: u64) -> Self {
        QueryResult {
            tag: tag.to_string(),
            affected,
            ..Default::default()
        }
    }

    /// The CommandComplete text, as PostgreSQL prints it.
    pub fn command_tag(&self) -> String {
        match self.tag.as_str() {
            "INSERT" => format!("INSERT 0 {}", self.affected),
            "SELECT" | "UPDATE" | "DELETE" | "COPY" | "MOVE" | "FETCH" => {
                format!("{} {}", self.tag, self.affected)
            }
            other => other.to_string(),
        }
    }

    pub fn returns_rows(&self) -> bool {
        !self.columns.is_empty()
    }
}
