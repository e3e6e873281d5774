//! In-memory tables the router runs its part of a plan over.
//!
//! Rows gathered from shards (or produced by the router, like the `tessera.*` system views)
//! are loaded into a `MemTables`, and the engine's own executor runs the client's query over
//! them. The router thus answers exactly what one shard holding all the rows would answer,
//! with no second implementation of SQL semantics.

use std::collections::BTreeMap;

use engine::txn::{KeyRange, ReadTxn, RowIter};
use protocol::Value;
use protocol::error::{Error, Result, sqlstate};
use protocol::keycode::encode_key;
use protocol::schema::TableSchema;

/// The most rows the router holds for one statement; past it the query fails with 53200.
pub const DEFAULT_ROW_BUDGET: usize = 2_000_000;

/// A row with its storage key.
type KeyedRow = (Vec<u8>, Vec<Value>);

#[derive(Default)]
pub struct MemTables {
    tables: BTreeMap<String, (TableSchema, Vec<KeyedRow>)>,
    rows: usize,
    budget: usize,
}

impl MemTables {
    pub fn new(budget: usize) -> Self {
        MemTables {
            budget,
            ..Default::default()
        }
    }

    pub fn add_table(&mut self, mut schema: TableSchema) {
        // Shards send a row-id table's rows as `SELECT *` shows them, without the row id.
        if let Some(rowid) = schema.rowid() {
            schema.columns.remove(rowid);
            schema.primary_key.clear();
        }
        self.tables
            .entry(schema.name.clone())
            .or_insert((schema, Vec::new()));
    }

    /// Adds rows to a table added before; rows are keyed by their primary key, or by arrival
    /// order when the table has none.
    pub fn add_rows(&mut self, table: &str, rows: Vec<Vec<Value>>) -> Result<()> {
        self.rows += rows.len();
        if self.rows > self.budget {
            return Err(Error::new(
                sqlstate::OUT_OF_MEMORY,
                format!(
                    "query needs more than {} rows at the router (tessera.router_row_budget)",
                    self.budget
                ),
            ));
        }
        let (schema, stored) = self
            .tables
            .get_mut(table)
            .ok_or_else(|| Error::undefined_table(table))?;
        for row in rows {
            let key = if schema.primary_key.is_empty() {
                encode_key(&[Value::Int(stored.len() as i64)])
            } else {
                encode_key(&schema.key_of(&row))
            };
            stored.push((key, row));
        }
        Ok(())
    }

    /// Sorts every table by key, as a shard would store it.
    pub fn seal(&mut self) {
        for (_, rows) in self.tables.values_mut() {
            rows.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }
}

impl ReadTxn for MemTables {
    fn schema(&self, table: &str) -> Result<Option<TableSchema>> {
        Ok(self.tables.get(table).map(|(s, _)| s.clone()))
    }

    fn schemas(&self) -> Result<Vec<TableSchema>> {
        Ok(self.tables.values().map(|(s, _)| s.clone()).collect())
    }

    fn scan(&self, table: &str, range: KeyRange) -> Result<RowIter<'_>> {
        let (_, rows) = self
            .tables
            .get(table)
            .ok_or_else(|| Error::undefined_table(table))?;
        Ok(Box::new(
            rows.iter()
                .filter(move |(k, _)| {
                    std::ops::RangeBounds::<Vec<u8>>::contains(
                        &(range.0.as_ref(), range.1.as_ref()),
                        k,
                    )
                })
                .map(|(k, r)| Ok((k.clone(), r.clone()))),
        ))
    }

    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<Value>>> {
        let (_, rows) = self
            .tables
            .get(table)
            .ok_or_else(|| Error::undefined_table(table))?;
        Ok(rows
            .binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()
            .map(|i| rows[i].1.clone()))
    }
}
