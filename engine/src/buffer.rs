//! A transaction's private writes, and its view of a shard: snapshot plus own writes.
//!
//! ```text
//!  executor ──put/delete/create/drop──► WriteSet overlay (per table: key → Some(row) | None)
//!      │          (each row locked first)   + ordered change list (becomes the ChangeRecord)
//!      └──scan/get──► overlay merged over the snapshot, so a transaction sees its own writes
//! ```
//! Nothing reaches redb until the shard commits the change list: a redb write transaction is
//! never held while SQL runs, and a rolled-back transaction just drops its write set. Under
//! SERIALIZABLE the view also records what was read, for validation at commit.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use protocol::changes::Change;
use protocol::error::{Error, Result, sqlstate};
use protocol::message::Isolation;
use protocol::schema::TableSchema;
use protocol::{Value, row};

use crate::index;
use crate::locks::{LockTable, TxnId};
use crate::storage::Snapshot;
use crate::txn::{KeyRange, ReadTxn, RowIter, RowLock, WriteTxn};

/// Per table: row key → where in `WriteSet::changes` the transaction's newest change of that
/// row is. The row itself is read from the change when asked for: keeping it decoded too
/// doubled a large write set's memory for rows that are seldom read back.
type Overlay = BTreeMap<Vec<u8>, usize>;
/// Overlay entries of one scan: key → row, or `None` where the transaction deleted it.
type OverlayEntries = std::vec::IntoIter<(Vec<u8>, Option<Vec<Value>>)>;

/// Everything a transaction has written so far.
#[derive(Default, Clone)]
pub struct WriteSet {
    writes: BTreeMap<String, Overlay>,
    /// Tables created or redefined (Some) or dropped (None) by this transaction. Shared:
    /// a table rewrite writes every row against its pending definition.
    ddl: BTreeMap<String, Option<Arc<TableSchema>>>,
    /// Tables whose snapshot rows are hidden because this transaction (re)created them.
    fresh: BTreeSet<String>,
    /// Index entries of the rows this transaction wrote (their current versions), by index
    /// table name (`index::index_table_name`): what the snapshot's indexes cannot know.
    index_entries: BTreeMap<String, BTreeSet<Vec<u8>>>,
    /// The encoded definition of each existing table this transaction wrote or altered, as
    /// it first saw it: commit refuses the transaction if a concurrent DDL changed it since
    /// (its rows and index entries were computed for that definition).
    schemas: BTreeMap<String, Vec<u8>>,
    /// The snapshot LSN of the first statement that redefined an existing table: the
    /// redefinition (a new unique index checked, rows rewritten) holds only if no other
    /// commit wrote those tables after it.
    ddl_snapshot: Option<u64>,
    changes: Vec<Change>,
    /// The bytes of `changes`' rows, as counted against `TXN_MEMORY` (see `charge`).
    bytes: usize,
    /// The bytes held by the copies of this set that savepoints keep (see `save`).
    held: usize,
}

/// The bytes of row changes one transaction may hold on one shard; past it a write fails
/// with 54000. A change counts its table name, key and encoded row plus `CHANGE_OVERHEAD`;
/// each savepoint's copy of the write set counts again. *Why a bound:* a transaction's writes
/// stay in memory until it commits (on the shard, then as its prepared record and change
/// record), and a COPY of a large file or an UPDATE of a large table grew them until the node
/// ran out of memory, taking every shard copy it hosts down with it. The write set holds
/// about twice what is counted, and a commit's copies on the way several times that
/// (docs/ARCHITECTURE.md). Set with `TESSERA_TXN_MEMORY_MB`; the default is 1 GiB.
pub static TXN_MEMORY: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(1 << 30);

/// What a change costs beyond its table name, key and row (its vectors and list entry).
const CHANGE_OVERHEAD: usize = 48;

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// True if copying this set (to put it back after a refused quick statement) is cheap.
    pub fn is_small(&self) -> bool {
        self.changes.len() <= SMALL_WRITE_SET && self.ddl.is_empty()
    }

    /// The transaction's changes in the order they were made.
    pub fn into_changes(self) -> Vec<Change> {
        self.changes
    }

    /// The changes, and the table definitions they were made against.
    pub fn into_parts(self) -> (Vec<Change>, Vec<(String, Vec<u8>)>) {
        (self.changes, self.schemas.into_iter().collect())
    }

    /// See `ddl_snapshot`.
    pub fn ddl_snapshot(&self) -> Option<u64> {
        self.ddl_snapshot
    }

    fn wrote(&self, table: &str, key: &[u8]) -> bool {
        self.writes.get(table).is_some_and(|w| w.contains_key(key))
    }

    /// The row the change at `at` leaves: its values, or `None` where it deleted the row.
    fn row_at(&self, at: usize) -> Result<Option<Vec<Value>>> {
        match self.changes.get(at) {
            Some(Change::Put { row, .. }) => Ok(Some(row::decode_row(row)?)),
            Some(Change::Delete { .. }) => Ok(None),
            _ => Err(Error::internal(
                "a write set's overlay points at no row change",
            )),
        }
    }

    /// The row `key` of `table` as this transaction left it, if it wrote it.
    fn written_row(&self, table: &str, key: &[u8]) -> Result<Option<Option<Vec<Value>>>> {
        match self.writes.get(table).and_then(|w| w.get(key)) {
            Some(&at) => self.row_at(at).map(Some),
            None => Ok(None),
        }
    }

    /// Pushes a row change and points the overlay at it.
    fn push_row_change(&mut self, table: &str, key: Vec<u8>, change: Change) {
        let at = self.changes.len();
        self.changes.push(change);
        match self.writes.get_mut(table) {
            Some(w) => {
                w.insert(key, at);
            }
            None => {
                self.writes
                    .insert(table.to_string(), BTreeMap::from([(key, at)]));
            }
        }
    }

    /// Counts a change of `bytes` against the transaction's budget (54000 past it).
    fn charge(&mut self, bytes: usize) -> Result<()> {
        let limit = TXN_MEMORY.load(std::sync::atomic::Ordering::Relaxed);
        let total = self.bytes + self.held + bytes + CHANGE_OVERHEAD;
        if total > limit {
            return Err(Error::new(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                "transaction is too large",
            )
            .with_detail(format!(
                "Its changes on one shard would pass the {} MB a transaction may hold there (TESSERA_TXN_MEMORY_MB). Split the work into smaller transactions: a COPY into several, an UPDATE by ranges of keys.",
                limit >> 20
            )));
        }
        self.bytes += bytes + CHANGE_OVERHEAD;
        Ok(())
    }

    /// A copy of this set for a SAVEPOINT; from now on this set counts the copy as held.
    pub fn save(&mut self) -> WriteSet {
        let copy = self.clone();
        self.held += copy.bytes;
        copy
    }

    /// This set as a savepoint kept it, for ROLLBACK TO SAVEPOINT (the savepoint stays).
    pub fn restore(saved: &WriteSet) -> WriteSet {
        let mut set = saved.clone();
        set.held += saved.bytes;
        set
    }

    /// The savepoint whose copy is `saved` is released, and every later one with it.
    pub fn release(&mut self, saved: &WriteSet) {
        self.held = saved.held;
    }
}

/// See `WriteSet::is_small`.
const SMALL_WRITE_SET: usize = 64;

/// What a SERIALIZABLE transaction read: rows by key, and tables it scanned.
#[derive(Default, Debug, Clone)]
pub struct ReadSet {
    pub keys: HashSet<(String, Vec<u8>)>,
    pub tables: HashSet<String>,
}

impl ReadSet {
    /// True if copying this set is cheap (see `WriteSet::is_small`).
    pub fn is_small(&self) -> bool {
        self.keys.len() + self.tables.len() <= SMALL_WRITE_SET
    }
}

/// Reads the newest committed bytes of a row (table, key), outside any snapshot.
pub type LatestRow<'a> = dyn Fn(&str, &[u8]) -> Result<Option<Vec<u8>>> + 'a;

/// Reads the primary keys in the newest committed entries of an index (table, index, range).
pub type LatestIndex<'a> = dyn Fn(&str, &str, &KeyRange) -> Result<Vec<Vec<u8>>> + 'a;

/// How a view locks rows and learns their newest committed version.
pub struct Locking<'a> {
    pub locks: &'a LockTable,
    pub txn: TxnId,
    pub isolation: Isolation,
    pub timeout: Option<Duration>,
    /// The newest committed bytes of a row, read outside the snapshot.
    pub latest: &'a LatestRow<'a>,
    /// The newest committed entries of an index, read outside the snapshot (UNIQUE checks).
    pub latest_index: &'a LatestIndex<'a>,
    /// The shard's clock, which also hands out row ids (see `WriteTxn::next_rowid`).
    pub hlc: &'a protocol::clock::Hlc,
    /// Set when the client cancels the running statement: lock waits end with 57014.
    pub cancelled: Option<&'a std::sync::atomic::AtomicBool>,
}

/// A transaction's view for one statement.
pub struct TxnView<'a> {
    base: &'a Snapshot,
    set: &'a mut WriteSet,
    locking: Option<Locking<'a>>,
    reads: Option<RefCell<&'a mut ReadSet>>,
    /// Quick mode (see `crate::point_read`): the gets served so far; scans and lock waits
    /// are refused.
    quick: Option<Cell<usize>>,
    /// The snapshot's definitions this statement has looked up (None: no such table),
    /// decoded once: a COPY batch or a table rewrite writes thousands of rows of one table,
    /// and decoding its definition for each row was a seventh of a COPY's time. The
    /// snapshot never changes under a view; definitions pending in the transaction are
    /// read from `set.ddl` first (shared there) and never kept here.
    base_schemas: RefCell<HashMap<String, Option<Arc<TableSchema>>>>,
}

impl<'a> TxnView<'a> {
    pub fn new(
        base: &'a Snapshot,
        set: &'a mut WriteSet,
        locking: Option<Locking<'a>>,
        reads: Option<&'a mut ReadSet>,
    ) -> Self {
        TxnView {
            base,
            set,
            locking,
            reads: reads.map(RefCell::new),
            quick: None,
            base_schemas: RefCell::default(),
        }
    }

    /// Quick mode: serve up to `point_read::MAX_GETS` gets, refuse scans, take a row lock
    /// only if it is free (`point_read::refused()` otherwise).
    pub fn quick(mut self) -> Self {
        self.quick = Some(Cell::new(0));
        self
    }

    fn refuse_scans(&self) -> Result<()> {
        match self.quick {
            Some(_) => Err(crate::point_read::refused()),
            None => Ok(()),
        }
    }

    fn count_get(&self) -> Result<()> {
        if let Some(gets) = &self.quick {
            let n = gets.get() + 1;
            if n > crate::point_read::MAX_GETS {
                return Err(crate::point_read::refused());
            }
            gets.set(n);
        }
        Ok(())
    }

    /// The definition of `table` as this statement sees it (see `base_schemas`).
    fn table_schema(&self, table: &str) -> Result<Option<Arc<TableSchema>>> {
        if let Some(pending) = self.set.ddl.get(table) {
            return Ok(pending.clone());
        }
        if let Some(seen) = self.base_schemas.borrow().get(table) {
            return Ok(seen.clone());
        }
        let found = self.base.schema(table)?.map(Arc::new);
        self.base_schemas
            .borrow_mut()
            .insert(table.to_string(), found.clone());
        Ok(found)
    }

    fn require_table(&self, table: &str) -> Result<()> {
        if self.has_table(table)? {
            Ok(())
        } else {
            Err(Error::undefined_table(table))
        }
    }

    fn lock(&self, table: &str, key: &[u8]) -> Result<()> {
        match &self.locking {
            // Quick mode never waits (it runs on an async worker).
            Some(l) if self.quick.is_some() => match l.locks.try_acquire(l.txn, table, key)? {
                true => Ok(()),
                false => Err(crate::point_read::refused()),
            },
            Some(l) => l
                .locks
                .acquire_or_cancel(l.txn, table, key, l.timeout, l.cancelled),
            None => Ok(()),
        }
    }
}

impl ReadTxn for TxnView<'_> {
    fn schema(&self, table: &str) -> Result<Option<TableSchema>> {
        match self.set.ddl.get(table) {
            Some(pending) => Ok(pending.as_deref().cloned()),
            None => self.base.schema(table),
        }
    }

    fn has_table(&self, table: &str) -> Result<bool> {
        if let Some(pending) = self.set.ddl.get(table) {
            return Ok(pending.is_some());
        }
        if let Some(seen) = self.base_schemas.borrow().get(table) {
            return Ok(seen.is_some());
        }
        self.base.has_table(table)
    }

    fn schemas(&self) -> Result<Vec<TableSchema>> {
        let mut by_name: BTreeMap<String, TableSchema> = self
            .base
            .schemas()?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        for (name, pending) in &self.set.ddl {
            match pending {
                Some(s) => by_name.insert(name.clone(), TableSchema::clone(s)),
                None => by_name.remove(name),
            };
        }
        Ok(by_name.into_values().collect())
    }

    fn referencing_tables(&self, table: &str) -> Result<Vec<String>> {
        if !self.set.ddl.is_empty() {
            // This transaction changed the catalog: its own view of it decides.
            return Ok(crate::txn::referencing(self.schemas()?, table));
        }
        self.base.referencing_tables(table)
    }

    fn scan(&self, table: &str, range: KeyRange) -> Result<RowIter<'_>> {
        self.refuse_scans()?;
        self.require_table(table)?;
        if let Some(reads) = &self.reads {
            reads.borrow_mut().tables.insert(table.to_string());
        }
        let base: RowIter<'_> = if self.set.fresh.contains(table) {
            Box::new(std::iter::empty())
        } else {
            self.base.scan(table, range.clone())?
        };
        let overlay: Vec<(Vec<u8>, Option<Vec<Value>>)> = match self.set.writes.get(table) {
            Some(w) => w
                .range::<Vec<u8>, _>((range.0.as_ref(), range.1.as_ref()))
                .map(|(k, &at)| Ok((k.clone(), self.set.row_at(at)?)))
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        if overlay.is_empty() {
            return Ok(base);
        }
        Ok(Box::new(Merge {
            base: base.peekable(),
            overlay: overlay.into_iter().peekable(),
        }))
    }

    fn index_scan(
        &self,
        table: &str,
        index: &str,
        range: KeyRange,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        self.refuse_scans()?;
        let schema = self
            .schema(table)?
            .ok_or_else(|| Error::undefined_table(table))?;
        if let Some(reads) = &self.reads {
            reads.borrow_mut().tables.insert(table.to_string());
        }
        let width = schema
            .index(index)
            .map(|i| i.columns.len())
            .ok_or_else(|| Error::internal(format!("index \"{index}\" is not defined")))?;
        let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
        if !self.set.fresh.contains(table) {
            keys.extend(self.base.index_keys(table, index, &range)?);
        }
        let name = index::index_table_name(table, index);
        if let Some(entries) = self.set.index_entries.get(&name) {
            for entry in entries.range::<Vec<u8>, _>((range.0.as_ref(), range.1.as_ref())) {
                keys.insert(entry_pk(entry, width)?);
            }
        }
        Ok(Some(keys.into_iter().collect()))
    }

    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<Value>>> {
        self.count_get()?;
        self.require_table(table)?;
        if let Some(reads) = &self.reads {
            reads
                .borrow_mut()
                .keys
                .insert((table.to_string(), key.to_vec()));
        }
        if let Some(row) = self.set.written_row(table, key)? {
            return Ok(row);
        }
        if self.set.fresh.contains(table) {
            return Ok(None);
        }
        self.base.get(table, key)
    }
}

impl WriteTxn for TxnView<'_> {
    fn lock_row(&mut self, table: &str, key: &[u8]) -> Result<RowLock> {
        let timeout = self.locking.as_ref().and_then(|l| l.timeout);
        self.lock_row_within(table, key, timeout)
    }

    fn lock_row_nowait(&mut self, table: &str, key: &[u8]) -> Result<RowLock> {
        self.lock_row_within(table, key, Some(Duration::ZERO))
    }
    fn next_rowid(&mut self) -> Result<i64> {
        let hlc = self
            .locking
            .as_ref()
            .map(|l| l.hlc)
            .ok_or_else(|| Error::internal("a read-only view cannot assign row ids"))?;
        i64::try_from(hlc.now()).map_err(|_| Error::internal("row id space exhausted"))
    }

    fn unique_holder(
        &mut self,
        table: &str,
        index: &str,
        values: &[Value],
    ) -> Result<Option<Vec<u8>>> {
        let schema = self
            .schema(table)?
            .ok_or_else(|| Error::undefined_table(table))?;
        let idx = schema
            .index(index)
            .filter(|i| i.unique)
            .ok_or_else(|| Error::internal(format!("no unique index \"{index}\"")))?;
        self.holder_of(&schema, idx, None, values)
    }

    fn put(&mut self, table: &str, key: Vec<u8>, values: Vec<Value>) -> Result<()> {
        let schema = self
            .table_schema(table)?
            .ok_or_else(|| Error::undefined_table(table))?;
        self.lock(table, &key)?;
        self.note_schema(table)?;
        if !schema.indexes.is_empty() {
            self.check_unique(&schema, &key, &values)?;
            self.unindex_overlay(&schema, &key)?;
            for idx in &schema.indexes {
                self.set
                    .index_entries
                    .entry(index::index_table_name(table, &idx.name))
                    .or_default()
                    .insert(index::entry_key(&schema, idx, &values, &key));
            }
        }
        let encoded = row::encode_row(&values);
        self.set.charge(table.len() + key.len() + encoded.len())?;
        let change = Change::Put {
            table: table.to_string(),
            key: key.clone(),
            row: encoded,
        };
        self.set.push_row_change(table, key, change);
        Ok(())
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<()> {
        let schema = self
            .table_schema(table)?
            .ok_or_else(|| Error::undefined_table(table))?;
        self.lock(table, key)?;
        self.note_schema(table)?;
        self.set.charge(table.len() + key.len())?;
        self.unindex_overlay(&schema, key)?;
        let change = Change::Delete {
            table: table.to_string(),
            key: key.to_vec(),
        };
        self.set.push_row_change(table, key.to_vec(), change);
        Ok(())
    }

    fn create_table(&mut self, schema: TableSchema) -> Result<()> {
        if self.schema(&schema.name)?.is_some() {
            return Err(Error::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{}\" already exists", schema.name),
            ));
        }
        let name = schema.name.clone();
        self.set.changes.push(Change::CreateTable {
            schema: schema.clone(),
        });
        self.forget_index_entries(&name);
        self.set.ddl.insert(name.clone(), Some(Arc::new(schema)));
        self.set.writes.remove(&name);
        self.set.fresh.insert(name);
        Ok(())
    }

    fn alter_table(&mut self, schema: TableSchema) -> Result<()> {
        self.require_table(&schema.name)?;
        self.note_schema(&schema.name)?;
        if self.set.ddl_snapshot.is_none() && !self.set.fresh.contains(&schema.name) {
            self.set.ddl_snapshot = Some(self.base.state(crate::storage::STATE_LSN)?);
        }
        self.set.changes.push(Change::AlterTable {
            schema: schema.clone(),
        });
        // The overlay's entries follow the new definition (new indexes, moved columns).
        self.forget_index_entries(&schema.name);
        if let Some(rows) = self.set.writes.get(&schema.name) {
            let mut written = Vec::with_capacity(rows.len());
            for (key, &at) in rows {
                if let Some(row) = self.set.row_at(at)? {
                    written.push((key.clone(), row));
                }
            }
            for idx in &schema.indexes {
                let entries = self
                    .set
                    .index_entries
                    .entry(index::index_table_name(&schema.name, &idx.name))
                    .or_default();
                for (key, row) in &written {
                    entries.insert(index::entry_key(&schema, idx, row, key));
                }
            }
        }
        self.set
            .ddl
            .insert(schema.name.clone(), Some(Arc::new(schema)));
        Ok(())
    }

    fn drop_table(&mut self, name: &str) -> Result<()> {
        self.require_table(name)?;
        self.note_schema(name)?;
        self.set.changes.push(Change::DropTable {
            name: name.to_string(),
        });
        self.forget_index_entries(name);
        self.set.ddl.insert(name.to_string(), None);
        self.set.writes.remove(name);
        self.set.fresh.insert(name.to_string());
        Ok(())
    }
}

/// The primary key an index entry points at: the entry key minus the prefix its `width`
/// index values take.
fn entry_pk(entry: &[u8], width: usize) -> Result<Vec<u8>> {
    let values = protocol::keycode::decode_key(entry)?;
    let prefix = protocol::keycode::encode_key(&values[..width.min(values.len())]);
    Ok(entry[prefix.len().min(entry.len())..].to_vec())
}

impl TxnView<'_> {
    /// Remembers the committed definition of `table` the first time this transaction writes
    /// or alters it (not for tables it created itself).
    fn note_schema(&mut self, table: &str) -> Result<()> {
        if self.set.schemas.contains_key(table)
            || self.set.fresh.contains(table)
            || self.set.ddl.contains_key(table)
        {
            return Ok(());
        }
        if let Some(schema) = self.base.schema(table)? {
            self.set
                .schemas
                .insert(table.to_string(), protocol::frame::encode(&schema)?);
        }
        Ok(())
    }

    /// Drops the overlay's index entries of a table (it is being dropped or redefined).
    fn forget_index_entries(&mut self, table: &str) {
        let prefix = index::index_table_name(table, "");
        self.set
            .index_entries
            .retain(|name, _| !name.starts_with(&prefix));
    }

    /// Removes the overlay index entries of the version of row `key` this transaction wrote.
    fn unindex_overlay(&mut self, schema: &TableSchema, key: &[u8]) -> Result<()> {
        let Some(Some(old)) = self.set.written_row(&schema.name, key)? else {
            return Ok(());
        };
        for idx in &schema.indexes {
            let entry = index::entry_key(schema, idx, &old, key);
            if let Some(entries) = self
                .set
                .index_entries
                .get_mut(&index::index_table_name(&schema.name, &idx.name))
            {
                entries.remove(&entry);
            }
        }
        Ok(())
    }

    /// Fails with 23505 if storing `values` under `key` would give a unique index two rows
    /// with equal, non-NULL values. The values are locked first, so two transactions that
    /// insert the same value queue on the lock and the second sees the first's commit.
    fn check_unique(&self, schema: &TableSchema, key: &[u8], values: &[Value]) -> Result<()> {
        for idx in schema.indexes.iter().filter(|i| i.unique) {
            let index_values = schema.index_values(idx, values);
            if index_values.iter().any(|v| v.is_null()) {
                continue;
            }
            if self
                .holder_of(schema, idx, Some(key), &index_values)?
                .is_some()
            {
                return Err(unique_violation(schema, idx, &index_values));
            }
        }
        Ok(())
    }

    /// The key of a row other than `except` whose values in unique index `idx` are
    /// `index_values`: one this transaction wrote, or a committed one (after locking the
    /// values, so a concurrent writer of them has committed or waits for us).
    fn holder_of(
        &self,
        schema: &TableSchema,
        idx: &protocol::schema::IndexDef,
        except: Option<&[u8]>,
        index_values: &[Value],
    ) -> Result<Option<Vec<u8>>> {
        {
            let prefix = protocol::keycode::encode_key(index_values);
            let range: KeyRange = (
                Bound::Included(prefix.clone()),
                match index::prefix_successor(&prefix) {
                    Some(end) => Bound::Excluded(end),
                    None => Bound::Unbounded,
                },
            );
            let name = index::index_table_name(&schema.name, &idx.name);
            let other = |pk: &[u8]| except != Some(pk);
            let here = self.set.index_entries.get(&name).and_then(|entries| {
                entries
                    .range::<Vec<u8>, _>((range.0.as_ref(), range.1.as_ref()))
                    .map(|e| e[prefix.len().min(e.len())..].to_vec())
                    .find(|pk| other(pk))
            });
            if here.is_some() || self.set.fresh.contains(&schema.name) {
                return Ok(here);
            }
            self.lock(&name, &prefix)?;
            let committed = match &self.locking {
                Some(l) => (l.latest_index)(&schema.name, &idx.name, &range)?,
                None => self.base.index_keys(&schema.name, &idx.name, &range)?,
            };
            // A committed holder that this transaction changed is judged by its overlay
            // version, which the overlay entries above already cover.
            Ok(committed
                .into_iter()
                .find(|pk| other(pk) && !self.set.wrote(&schema.name, pk)))
        }
    }
}

/// PostgreSQL's 23505 for a unique index.
pub fn unique_violation(
    schema: &TableSchema,
    idx: &protocol::schema::IndexDef,
    values: &[Value],
) -> Error {
    let columns: Vec<&str> = idx
        .columns
        .iter()
        .map(|&c| {
            schema
                .columns
                .get(c)
                .map(|c| c.name.as_str())
                .unwrap_or("?")
        })
        .collect();
    let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    Error::new(
        sqlstate::UNIQUE_VIOLATION,
        format!(
            "duplicate key value violates unique constraint \"{}\"",
            idx.name
        ),
    )
    .with_detail(format!(
        "Key ({})=({}) already exists.",
        columns.join(", "),
        values.join(", ")
    ))
}

impl TxnView<'_> {
    fn lock_row_within(
        &mut self,
        table: &str,
        key: &[u8],
        timeout: Option<Duration>,
    ) -> Result<RowLock> {
        let Some(l) = &self.locking else {
            return Ok(RowLock::Unchanged);
        };
        if self.set.wrote(table, key) || self.set.fresh.contains(table) {
            return Ok(RowLock::Unchanged);
        }
        if self.quick.is_some() {
            self.lock(table, key)?;
        } else {
            l.locks
                .acquire_or_cancel(l.txn, table, key, timeout, l.cancelled)?;
        }
        let latest = (l.latest)(table, key)?;
        if latest == self.base.get_raw(table, key)? {
            return Ok(RowLock::Unchanged);
        }
        if l.isolation != Isolation::ReadCommitted {
            return Err(Error::new(
                sqlstate::SERIALIZATION_FAILURE,
                "could not serialize access due to concurrent update",
            ));
        }
        Ok(RowLock::Changed(
            latest.map(|b| row::decode_row(&b)).transpose()?,
        ))
    }
}

/// Merges overlay entries over snapshot rows by key; a `None` overlay entry hides the row.
struct Merge<'a> {
    base: Peekable<RowIter<'a>>,
    overlay: Peekable<OverlayEntries>,
}

impl Iterator for Merge<'_> {
    type Item = Result<(Vec<u8>, Vec<Value>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let base_key = match self.base.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                Some(Err(_)) => return self.base.next(),
                None => None,
            };
            let take_overlay = match (&base_key, self.overlay.peek()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(bk), Some((ok, _))) => {
                    if ok == bk {
                        self.base.next();
                    }
                    ok <= bk
                }
            };
            if take_overlay {
                let (k, v) = self.overlay.next()?;
                match v {
                    Some(row) => return Some(Ok((k, row))),
                    None => continue,
                }
            }
            return self.base.next();
        }
    }
}
