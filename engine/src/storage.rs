//! A shard replica's redb file: its tables, and read access to one snapshot of it.
//!
//! ```text
//! shard-<id>.redb
//!  ├─ "catalog"     &str  → bincode(TableSchema)      one entry per SQL table
//!  ├─ "t/<table>"   key   → row                        keycode(primary key) → bincode(Vec<Value>)
//!  ├─ "x/<table>/<index>"  entry → key                 keycode(index values) ‖ keycode(pk) → keycode(pk)
//!  ├─ "changelog"   u64   → bincode(ChangeRecord)      LSN → committed transaction
//!  ├─ "prepared"    u64   → bincode(PreparedTxn)      2PC: prepared, undecided transactions
//!  ├─ "decisions"   u64   → u8                        2PC: outcomes this shard coordinates
//!  └─ "state"       &str  → u64                        "lsn": last committed or applied LSN
//!                                                      "log_start": oldest LSN kept in changelog
//!                                                      "txn": last transaction id
//! ```
//! Data, change log and `lsn` change together in one redb write transaction, so after a crash
//! they always agree. The byte layouts are in docs/FORMATS.md.

use std::ops::Bound;
use std::sync::{Arc, Mutex};

use protocol::changes::ChangeRecord;
use protocol::error::{Error, Result, sqlstate};
use protocol::schema::TableSchema;
use protocol::{Value, frame, row};
use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};

use crate::txn::{KeyRange, ReadTxn, RowIter};

/// Raw (key, row) byte pairs of a table, in key order.
pub type RawRows = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>>;

pub const CATALOG: TableDefinition<&str, &[u8]> = TableDefinition::new("catalog");
pub const CHANGELOG: TableDefinition<u64, &[u8]> = TableDefinition::new("changelog");
pub const STATE: TableDefinition<&str, u64> = TableDefinition::new("state");
/// Two-phase commit: transactions prepared here, by id → bincode(PreparedTxn).
pub const PREPARED: TableDefinition<u64, &[u8]> = TableDefinition::new("prepared");
/// Two-phase commit: decisions of transactions this shard coordinates, by id → 1 commit / 0 abort.
pub const DECISIONS: TableDefinition<u64, u8> = TableDefinition::new("decisions");

pub const STATE_LSN: &str = "lsn";
pub const STATE_LOG_START: &str = "log_start";
/// The bytes of the records in `changelog` (the sum of their encoded lengths), kept in the
/// commit that changes the log so the byte bound needs no scan (`Shard::trim_log`).
pub const STATE_LOG_BYTES: &str = "log_bytes";
pub const STATE_TXN: &str = "txn";
/// The highest placement epoch under which this node held the copy (see
/// `Shard::record_placement_epoch`).
pub const STATE_PLACEMENT_EPOCH: &str = "placement_epoch";
/// The last journal entry this file holds the writes of (see `crate::journal`).
pub const STATE_JOURNAL: &str = "journal";
/// This file's incarnation: its journal carries the same number, so a journal left by an
/// earlier file at the same path is never replayed onto this one.
pub const STATE_JOURNAL_ID: &str = "journal_id";

/// Row tables a snapshot keeps open for reuse (more are opened each time they are read).
const MAX_OPENED: usize = 16;

/// The redb table name that holds a SQL table's rows.
pub fn data_table_name(table: &str) -> String {
    format!("t/{table}")
}

pub fn data_table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Maps any redb error to a SQL error; the storage layer is the only place they arise.
pub fn storage_err(e: impl std::fmt::Display) -> Error {
    Error::new(sqlstate::IO_ERROR, format!("storage error: {e}"))
}

pub fn decode_schema(bytes: &[u8]) -> Result<TableSchema> {
    frame::decode(bytes).map_err(|e| {
        Error::new(
            sqlstate::DATA_CORRUPTED,
            format!("corrupt catalog entry: {e}"),
        )
    })
}

pub fn decode_record(bytes: &[u8]) -> Result<ChangeRecord> {
    frame::decode(bytes).map_err(|e| {
        Error::new(
            sqlstate::DATA_CORRUPTED,
            format!("corrupt change record: {e}"),
        )
    })
}

/// Creates the fixed tables of a new shard file.
pub fn init(db: &redb::Database) -> Result<()> {
    let txn = db.begin_write().map_err(storage_err)?;
    {
        txn.open_table(CATALOG).map_err(storage_err)?;
        txn.open_table(CHANGELOG).map_err(storage_err)?;
        let mut state = txn.open_table(STATE).map_err(storage_err)?;
        if state.get(STATE_JOURNAL_ID).map_err(storage_err)?.is_none() {
            state
                .insert(STATE_JOURNAL_ID, rand::random::<u64>() | 1)
                .map_err(storage_err)?;
        }
        if state.get(STATE_LOG_BYTES).map_err(storage_err)?.is_none() {
            // A new file, or one written before the count was kept: counted once here.
            let log = txn.open_table(CHANGELOG).map_err(storage_err)?;
            let mut bytes = 0u64;
            for entry in log.iter().map_err(storage_err)? {
                let (_, record) = entry.map_err(storage_err)?;
                bytes += record.value().len() as u64;
            }
            state.insert(STATE_LOG_BYTES, bytes).map_err(storage_err)?;
        }
        drop(state);
        txn.open_table(PREPARED).map_err(storage_err)?;
        txn.open_table(DECISIONS).map_err(storage_err)?;
    }
    txn.commit().map_err(storage_err)
}

/// A table of rows as a snapshot opened it.
type RowsTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// One consistent read-only view of a shard.
///
/// A snapshot may be shared by many reads at once (`Shard::read_snapshot`), so it keeps
/// the first `MAX_OPENED` row tables it opened: opening one is a lookup in redb's table
/// tree and a name allocation, which cost about as much as the primary-key lookup that
/// follows.
pub struct Snapshot {
    txn: ReadTransaction,
    opened: Mutex<Vec<(String, Arc<RowsTable>)>>,
}

impl Snapshot {
    pub fn new(db: &redb::Database) -> Result<Self> {
        Ok(Snapshot {
            txn: db.begin_read().map_err(storage_err)?,
            opened: Mutex::new(Vec::new()),
        })
    }

    /// The stored catalog entries of `tables` (`None` where a table does not exist), to
    /// check later with [`Snapshot::catalog_is`] that their definitions have not changed.
    pub fn catalog_entries(&self, tables: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        let catalog = self.txn.open_table(CATALOG).map_err(storage_err)?;
        tables
            .iter()
            .map(|t| {
                let bytes = catalog.get(t.as_str()).map_err(storage_err)?;
                Ok((t.clone(), bytes.map(|b| b.value().to_vec())))
            })
            .collect()
    }

    /// True if this snapshot's catalog holds exactly `entries` for their tables.
    pub fn catalog_is(&self, entries: &[(String, Option<Vec<u8>>)]) -> Result<bool> {
        let catalog = self.txn.open_table(CATALOG).map_err(storage_err)?;
        for (table, expected) in entries {
            let bytes = catalog.get(table.as_str()).map_err(storage_err)?;
            if bytes.as_ref().map(|b| b.value()) != expected.as_deref() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub fn state(&self, key: &str) -> Result<u64> {
        let table = self.txn.open_table(STATE).map_err(storage_err)?;
        Ok(table
            .get(key)
            .map_err(storage_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    fn rows_table(&self, table: &str) -> Result<Option<Arc<RowsTable>>> {
        if let Ok(opened) = self.opened.lock()
            && let Some((_, t)) = opened.iter().find(|(name, _)| name == table)
        {
            return Ok(Some(t.clone()));
        }
        let name = data_table_name(table);
        let t = match self.txn.open_table(data_table(&name)) {
            Ok(t) => Arc::new(t),
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage_err(e)),
        };
        // A handful of tables per statement; past `MAX_OPENED` (a snapshot that reads many),
        // the rest are opened on each read rather than kept.
        if let Ok(mut opened) = self.opened.lock()
            && opened.len() < MAX_OPENED
            && !opened.iter().any(|(name, _)| name == table)
        {
            opened.push((table.to_string(), t.clone()));
        }
        Ok(Some(t))
    }

    /// Raw (key, row bytes) pairs of a table, for snapshots sent to replicas.
    pub fn raw_rows(&self, table: &str) -> Result<RawRows> {
        let Some(t) = self.rows_table(table)? else {
            return Ok(Box::new(std::iter::empty()));
        };
        let range = t.range::<&[u8]>(..).map_err(storage_err)?;
        Ok(Box::new(range.map(|r| {
            let (k, v) = r.map_err(storage_err)?;
            Ok((k.value().to_vec(), v.value().to_vec()))
        })))
    }

    /// The stored bytes of one row, or `None` (also when the table does not exist).
    pub fn get_raw(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(t) = self.rows_table(table)? else {
            return Ok(None);
        };
        Ok(t.get(key).map_err(storage_err)?.map(|v| v.value().to_vec()))
    }

    /// Primary keys stored in the entries of an index within `range`, in entry order.
    pub fn index_keys(&self, table: &str, index: &str, range: &KeyRange) -> Result<Vec<Vec<u8>>> {
        let name = crate::index::index_table_name(table, index);
        let t = match self.txn.open_table(crate::index::index_table(&name)) {
            Ok(t) => t,
            // Created with the first entry: no table, no entries.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage_err(e)),
        };
        let mut out = Vec::new();
        for entry in t
            .range::<&[u8]>(to_redb_bounds(range))
            .map_err(storage_err)?
        {
            let (_, pk) = entry.map_err(storage_err)?;
            out.push(pk.value().to_vec());
        }
        Ok(out)
    }

    /// Number of rows in a table.
    pub fn row_count(&self, table: &str) -> Result<u64> {
        use redb::ReadableTableMetadata;
        match self.rows_table(table)? {
            Some(t) => t.len().map_err(storage_err),
            None => Ok(0),
        }
    }

    /// Change-log records with LSN in `(after, after + limit]`.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>> {
        let table = self.txn.open_table(CHANGELOG).map_err(storage_err)?;
        let mut out = Vec::new();
        for entry in table
            .range(after.saturating_add(1)..)
            .map_err(storage_err)?
        {
            let (_, v) = entry.map_err(storage_err)?;
            out.push(decode_record(v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

fn to_redb_bounds(range: &KeyRange) -> (Bound<&[u8]>, Bound<&[u8]>) {
    fn map(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
        match b {
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        }
    }
    (map(&range.0), map(&range.1))
}

impl ReadTxn for Snapshot {
    fn schema(&self, table: &str) -> Result<Option<TableSchema>> {
        let catalog = self.txn.open_table(CATALOG).map_err(storage_err)?;
        match catalog.get(table).map_err(storage_err)? {
            Some(bytes) => Ok(Some(decode_schema(bytes.value())?)),
            None => Ok(None),
        }
    }

    fn has_table(&self, table: &str) -> Result<bool> {
        let catalog = self.txn.open_table(CATALOG).map_err(storage_err)?;
        Ok(catalog.get(table).map_err(storage_err)?.is_some())
    }

    fn schemas(&self) -> Result<Vec<TableSchema>> {
        let catalog = self.txn.open_table(CATALOG).map_err(storage_err)?;
        let mut out = Vec::new();
        for entry in catalog.range::<&str>(..).map_err(storage_err)? {
            let (_, v) = entry.map_err(storage_err)?;
            out.push(decode_schema(v.value())?);
        }
        Ok(out)
    }

    fn referencing_tables(&self, table: &str) -> Result<Vec<String>> {
        // A foreign key to `table` stores its name in the entry's bytes (strings are written
        // whole, see FORMATS.md), so an entry without them needs no decoding.
        let needle = table.as_bytes();
        let catalog = self.txn.open_table(CATALOG).map_err(storage_err)?;
        let mut out = Vec::new();
        for entry in catalog.range::<&str>(..).map_err(storage_err)? {
            let (_, v) = entry.map_err(storage_err)?;
            let bytes = v.value();
            if !needle.is_empty() && !bytes.windows(needle.len()).any(|w| w == needle) {
                continue;
            }
            let schema = decode_schema(bytes)?;
            if crate::txn::references(&schema, table) {
                out.push(schema.name);
            }
        }
        Ok(out)
    }

    fn scan(&self, table: &str, range: KeyRange) -> Result<RowIter<'_>> {
        let Some(t) = self.rows_table(table)? else {
            return Err(Error::undefined_table(table));
        };
        let iter = t
            .range::<&[u8]>(to_redb_bounds(&range))
            .map_err(storage_err)?;
        Ok(Box::new(iter.map(|r| {
            let (k, v) = r.map_err(storage_err)?;
            Ok((k.value().to_vec(), row::decode_row(v.value())?))
        })))
    }

    fn index_scan(
        &self,
        table: &str,
        index: &str,
        range: KeyRange,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(Some(self.index_keys(table, index, &range)?))
    }

    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<Value>>> {
        let Some(t) = self.rows_table(table)? else {
            return Err(Error::undefined_table(table));
        };
        match t.get(key).map_err(storage_err)? {
            Some(v) => Ok(Some(row::decode_row(v.value())?)),
            None => Ok(None),
        }
    }
}
