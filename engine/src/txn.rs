//! What the SQL executor may do to a shard's data: the seam between SQL and storage.
//!
//! The executor (`sql`) sees a shard only through these two traits, so it neither knows nor
//! cares whether writes go straight into a redb write transaction (the spine) or into a
//! transaction's private buffer that a group commit later applies (the transactions work).
//! Keys are `protocol::keycode` encodings of primary-key tuples; rows are decoded values.

use std::ops::Bound;

use protocol::schema::TableSchema;
use protocol::{Result, Value};

/// A half-open or bounded range of encoded keys.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Rows of a scan, in key order.
pub type RowIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<Value>)>> + 'a>;

/// Read access within one consistent snapshot.
pub trait ReadTxn {
    /// The schema of a table, or `None` if it does not exist.
    fn schema(&self, table: &str) -> Result<Option<TableSchema>>;
    /// Every table's schema, by name.
    fn schemas(&self) -> Result<Vec<TableSchema>>;
    /// Whether the table exists (a reader that can tell without decoding its schema
    /// overrides it: every row a statement reads or writes asks).
    fn has_table(&self, table: &str) -> Result<bool> {
        Ok(self.schema(table)?.is_some())
    }
    /// The tables whose foreign keys reference `table`, itself included if it references
    /// itself (UPDATE and DELETE ask this of every statement, so a reader that can answer
    /// without decoding the whole catalog overrides it).
    fn referencing_tables(&self, table: &str) -> Result<Vec<String>> {
        Ok(referencing(self.schemas()?, table))
    }
    /// Rows of `table` whose key lies in `range`, in key order.
    fn scan(&self, table: &str, range: KeyRange) -> Result<RowIter<'_>>;
    /// The row stored under `key`.
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<Value>>>;
    /// Primary keys of the rows whose entries in secondary index `index` lie in `range`
    /// (entry keys begin with the encoded index values; see `crate::index`), or `None` when
    /// this reader keeps no indexes and the caller must scan the table instead. The keys
    /// may include rows that no longer match: callers re-check the row they fetch.
    fn index_scan(
        &self,
        table: &str,
        index: &str,
        range: KeyRange,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let _ = (table, index, range);
        Ok(None)
    }
}

/// True if `schema` (possibly `table` itself) has a foreign key to `table`.
pub fn references(schema: &TableSchema, table: &str) -> bool {
    schema.foreign_keys.iter().any(|f| f.ref_table == table)
}

/// The names of `schemas` that reference `table` (see [`ReadTxn::referencing_tables`]).
pub fn referencing(schemas: Vec<TableSchema>, table: &str) -> Vec<String> {
    schemas
        .into_iter()
        .filter(|s| references(s, table))
        .map(|s| s.name)
        .collect()
}

/// What locking a row found: whether a transaction that committed after this statement's
/// snapshot changed it.
#[derive(Debug, PartialEq)]
pub enum RowLock {
    /// The row is as the statement's snapshot shows it.
    Unchanged,
    /// The newest committed version (`None`: deleted). Only READ COMMITTED sees this; stricter
    /// levels fail with 40001 instead.
    Changed(Option<Vec<Value>>),
}

/// Read and write access; every write becomes part of the transaction's change-log record.
pub trait WriteTxn: ReadTxn {
    /// Locks a row the statement is about to change (or insert) until the transaction ends,
    /// waiting for a concurrent writer; then reports whether the row changed since the
    /// snapshot, so UPDATE and DELETE can re-check the newest version as PostgreSQL does.
    fn lock_row(&mut self, table: &str, key: &[u8]) -> Result<RowLock> {
        let _ = (table, key);
        Ok(RowLock::Unchanged)
    }

    /// As `lock_row`, but fails with 55P03 at once instead of waiting (NOWAIT).
    fn lock_row_nowait(&mut self, table: &str, key: &[u8]) -> Result<RowLock> {
        self.lock_row(table, key)
    }

    /// A fresh row id for a table without a primary key: unique within this shard, also
    /// across restarts and failovers (see `Hlc`: it is a timestamp no earlier commit used).
    fn next_rowid(&mut self) -> Result<i64> {
        Err(protocol::Error::unsupported(
            "this transaction cannot assign row ids",
        ))
    }

    /// The key of the row that holds `values` in unique index `index` (in this transaction's
    /// view, or committed by another since), locking the values so the answer stays true.
    fn unique_holder(
        &mut self,
        table: &str,
        index: &str,
        values: &[Value],
    ) -> Result<Option<Vec<u8>>> {
        let _ = (table, index, values);
        Err(protocol::Error::unsupported(
            "this transaction cannot look up unique indexes",
        ))
    }

    /// Stores `row` under `key`, replacing any row there.
    fn put(&mut self, table: &str, key: Vec<u8>, row: Vec<Value>) -> Result<()>;
    fn delete(&mut self, table: &str, key: &[u8]) -> Result<()>;
    fn create_table(&mut self, schema: TableSchema) -> Result<()>;
    fn drop_table(&mut self, name: &str) -> Result<()>;
    /// Replaces a table's schema (ALTER TABLE); the caller rewrites rows to match it.
    fn alter_table(&mut self, schema: TableSchema) -> Result<()> {
        let _ = schema;
        Err(protocol::Error::unsupported(
            "ALTER TABLE is not supported on this transaction",
        ))
    }
}

/// The whole key space of a table.
pub fn full_range() -> KeyRange {
    (Bound::Unbounded, Bound::Unbounded)
}
