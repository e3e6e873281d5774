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

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::iter::Peekable;
use std::time::Duration;

use protocol::changes::Change;
use protocol::error::{Error, Result, sqlstate};
use protocol::message::Isolation;
use protocol::schema::TableSchema;
use protocol::{Value, row};

use crate::locks::{LockTable, TxnId};
use crate::storage::Snapshot;
use crate::txn::{KeyRange, ReadTxn, RowIter, RowLock, WriteTxn};

type Overlay = BTreeMap<Vec<u8>, Option<Vec<Value>>>;
/// Overlay entries of one scan: key → row, or `None` where the transaction deleted it.
type OverlayEntries = std::vec::IntoIter<(Vec<u8>, Option<Vec<Value>>)>;

/// Everything a transaction has written so far.
#[derive(Default, Clone)]
pub struct WriteSet {
    writes: BTreeMap<String, Overlay>,
    /// Tables created (Some) or dropped (None) by this transaction.
    ddl: BTreeMap<String, Option<TableSchema>>,
    /// Tables whose snapshot rows are hidden because this transaction (re)created them.
    fresh: BTreeSet<String>,
    changes: Vec<Change>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The transaction's changes in the order they were made.
    pub fn into_changes(self) -> Vec<Change> {
        self.changes
    }

    fn wrote(&self, table: &str, key: &[u8]) -> bool {
        self.writes.get(table).is_some_and(|w| w.contains_key(key))
    }
}

/// What a SERIALIZABLE transaction read: rows by key, and tables it scanned.
#[derive(Default, Debug, Clone)]
pub struct ReadSet {
    pub keys: HashSet<(String, Vec<u8>)>,
    pub tables: HashSet<String>,
}

/// Reads the newest committed bytes of a row (table, key), outside any snapshot.
pub type LatestRow<'a> = dyn Fn(&str, &[u8]) -> Result<Option<Vec<u8>>> + 'a;

/// How a view locks rows and learns their newest committed version.
pub struct Locking<'a> {
    pub locks: &'a LockTable,
    pub txn: TxnId,
    pub isolation: Isolation,
    pub timeout: Option<Duration>,
    /// The newest committed bytes of a row, read outside the snapshot.
    pub latest: &'a LatestRow<'a>,
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
        }
    }

    fn require_table(&self, table: &str) -> Result<()> {
        match self.schema(table)? {
            Some(_) => Ok(()),
            None => Err(Error::undefined_table(table)),
        }
    }

    fn lock(&self, table: &str, key: &[u8]) -> Result<()> {
        match &self.locking {
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
            Some(pending) => Ok(pending.clone()),
            None => self.base.schema(table),
        }
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
                Some(s) => by_name.insert(name.clone(), s.clone()),
                None => by_name.remove(name),
            };
        }
        Ok(by_name.into_values().collect())
    }

    fn scan(&self, table: &str, range: KeyRange) -> Result<RowIter<'_>> {
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
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
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

    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<Value>>> {
        self.require_table(table)?;
        if let Some(reads) = &self.reads {
            reads
                .borrow_mut()
                .keys
                .insert((table.to_string(), key.to_vec()));
        }
        if let Some(entry) = self.set.writes.get(table).and_then(|w| w.get(key)) {
            return Ok(entry.clone());
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

    fn put(&mut self, table: &str, key: Vec<u8>, values: Vec<Value>) -> Result<()> {
        self.require_table(table)?;
        self.lock(table, &key)?;
        self.set.changes.push(Change::Put {
            table: table.to_string(),
            key: key.clone(),
            row: row::encode_row(&values),
        });
        self.set
            .writes
            .entry(table.to_string())
            .or_default()
            .insert(key, Some(values));
        Ok(())
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<()> {
        self.require_table(table)?;
        self.lock(table, key)?;
        self.set.changes.push(Change::Delete {
            table: table.to_string(),
            key: key.to_vec(),
        });
        self.set
            .writes
            .entry(table.to_string())
            .or_default()
            .insert(key.to_vec(), None);
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
        self.set.ddl.insert(name.clone(), Some(schema));
        self.set.writes.remove(&name);
        self.set.fresh.insert(name);
        Ok(())
    }

    fn alter_table(&mut self, schema: TableSchema) -> Result<()> {
        self.require_table(&schema.name)?;
        self.set.changes.push(Change::AlterTable {
            schema: schema.clone(),
        });
        self.set.ddl.insert(schema.name.clone(), Some(schema));
        Ok(())
    }

    fn drop_table(&mut self, name: &str) -> Result<()> {
        self.require_table(name)?;
        self.set.changes.push(Change::DropTable {
            name: name.to_string(),
        });
        self.set.ddl.insert(name.to_string(), None);
        self.set.writes.remove(name);
        self.set.fresh.insert(name.to_string());
        Ok(())
    }
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
        l.locks
            .acquire_or_cancel(l.txn, table, key, timeout, l.cancelled)?;
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
