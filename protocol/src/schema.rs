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

/// A table as the shard's catalog and meta know it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Positions of the primary-key columns in `columns`, in key order.
    pub primary_key: Vec<usize>,
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
