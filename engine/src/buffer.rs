//! A write transaction that buffers its writes over a read snapshot.
//!
//! ```text
//!  executor ──put/delete/create/drop──► overlay (per table: key → Some(row) | None)
//!      │                                  + ordered change list (becomes the ChangeRecord)
//!      └──scan/get──► overlay merged over the snapshot, so a statement sees its own writes
//! ```
//! Nothing reaches redb until the shard commits the change list: a redb write transaction is
//! never held while SQL runs, and an aborted statement just drops its buffer.

use std::collections::{BTreeMap, BTreeSet};
use std::iter::Peekable;

use protocol::changes::Change;
use protocol::error::{Error, Result, sqlstate};
use protocol::schema::TableSchema;
use protocol::{Value, row};

use crate::storage::Snapshot;
use crate::txn::{KeyRange, ReadTxn, RowIter, WriteTxn};

type Overlay = BTreeMap<Vec<u8>, Option<Vec<Value>>>;
/// Overlay entries of one scan: key → row, or `None` where the transaction deleted it.
type OverlayEntries = std::vec::IntoIter<(Vec<u8>, Option<Vec<Value>>)>;

pub struct BufferedTxn<'a> {
    base: &'a Snapshot,
    writes: BTreeMap<String, Overlay>,
    /// Tables created (Some) or dropped (None) by this transaction.
    ddl: BTreeMap<String, Option<TableSchema>>,
    /// Tables whose snapshot rows are hidden because this transaction (re)created them.
    fresh: BTreeSet<String>,
    changes: Vec<Change>,
}

impl<'a> BufferedTxn<'a> {
    pub fn new(base: &'a Snapshot) -> Self {
        BufferedTxn {
            base,
            writes: BTreeMap::new(),
            ddl: BTreeMap::new(),
            fresh: BTreeSet::new(),
            changes: Vec::new(),
        }
    }

    /// The transaction's changes in the order they were made.
    pub fn into_changes(self) -> Vec<Change> {
        self.changes
    }

    fn require_table(&self, table: &str) -> Result<()> {
        match self.schema(table)? {
            Some(_) => Ok(()),
            None => Err(Error::undefined_table(table)),
        }
    }
}

impl ReadTxn for BufferedTxn<'_> {
    fn schema(&self, table: &str) -> Result<Option<TableSchema>> {
        match self.ddl.get(table) {
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
        for (name, pending) in &self.ddl {
            match pending {
                Some(s) => by_name.insert(name.clone(), s.clone()),
                None => by_name.remove(name),
            };
        }
        Ok(by_name.into_values().collect())
    }

    fn scan(&self, table: &str, range: KeyRange) -> Result<RowIter<'_>> {
        self.require_table(table)?;
        let base: RowIter<'_> = if self.fresh.contains(table) {
            Box::new(std::iter::empty())
        } else {
            self.base.scan(table, range.clone())?
        };
        let overlay: Vec<(Vec<u8>, Option<Vec<Value>>)> = match self.writes.get(table) {
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
        if let Some(entry) = self.writes.get(table).and_then(|w| w.get(key)) {
            return Ok(entry.clone());
        }
        if self.fresh.contains(table) {
            return Ok(None);
        }
        self.base.get(table, key)
    }
}

impl WriteTxn for BufferedTxn<'_> {
    fn put(&mut self, table: &str, key: Vec<u8>, values: Vec<Value>) -> Result<()> {
        self.require_table(table)?;
        self.changes.push(Change::Put {
            table: table.to_string(),
            key: key.clone(),
            row: row::encode_row(&values),
        });
        self.writes
            .entry(table.to_string())
            .or_default()
            .insert(key, Some(values));
        Ok(())
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<()> {
        self.require_table(table)?;
        self.changes.push(Change::Delete {
            table: table.to_string(),
            key: key.to_vec(),
        });
        self.writes
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
        self.changes.push(Change::CreateTable {
            schema: schema.clone(),
        });
        self.ddl.insert(name.clone(), Some(schema));
        self.writes.remove(&name);
        self.fresh.insert(name);
        Ok(())
    }

    fn drop_table(&mut self, name: &str) -> Result<()> {
        self.require_table(name)?;
        self.changes.push(Change::DropTable {
            name: name.to_string(),
        });
        self.ddl.insert(name.to_string(), None);
        self.writes.remove(name);
        self.fresh.insert(name.to_string());
        Ok(())
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
