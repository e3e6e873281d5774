//! One shard replica: a redb file holding a hash range's rows, catalog and change log.
//!
//! ```text
//!  primary:  execute(stmt) ─► BufferedTxn over a snapshot ─► changes ─► commit ─┐
//!  replica:  apply(records from upstream) ────────────────────────────────────►─┤
//!                                                                                ▼
//!            one redb write transaction: rows + catalog + changelog[lsn] + state.lsn
//! ```
//! A primary assigns LSNs 1, 2, 3 … to its commits; a replica stores the very same records
//! under the same LSNs, so any replica can later serve the log onwards (after a failover, or
//! as an upstream in a tree). `watch_lsn` wakes change-log subscribers after every commit.
//! Old records are trimmed once `log_retain` newer ones exist; a subscriber that needs a
//! trimmed record gets a snapshot instead.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protocol::changes::{Change, ChangeRecord};
use protocol::clock::Hlc;
use protocol::cluster::{NodeId, ShardId};
use protocol::error::{Error, Result, sqlstate};
use protocol::message::ShardStats;
use protocol::schema::{QueryResult, ResultColumn, TableSchema};
use protocol::{DataType, Value, frame};
use redb::{Database, ReadableTable, WriteTransaction};
use tokio::sync::watch;

use crate::buffer::BufferedTxn;
use crate::sql::{self, Statement};
use crate::storage::{
    self, CATALOG, CHANGELOG, STATE, STATE_LOG_START, STATE_LSN, STATE_TXN, Snapshot, storage_err,
};
use crate::txn::ReadTxn;

/// Tunables of a shard replica.
#[derive(Clone, Debug)]
pub struct ShardOptions {
    /// Change-log records kept behind the newest; older ones are trimmed.
    pub log_retain: u64,
    /// fsync every commit (`Immediate`) or leave durability to the next synced commit.
    pub sync_commits: bool,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            log_retain: 100_000,
            sync_commits: true,
        }
    }
}

pub struct Shard {
    pub id: ShardId,
    path: PathBuf,
    db: Database,
    /// Serialises write statements on this shard: each runs on a snapshot that already holds
    /// every earlier commit, so no conflict checks are needed.
    write_lock: Mutex<()>,
    hlc: Arc<Hlc>,
    origin: NodeId,
    lsn: watch::Sender<u64>,
    opts: ShardOptions,
}

impl Shard {
    /// Opens (or creates) the shard file at `path`.
    pub fn open(
        path: &Path,
        id: ShardId,
        origin: NodeId,
        hlc: Arc<Hlc>,
        opts: ShardOptions,
    ) -> Result<Shard> {
        let db = Database::create(path).map_err(storage_err)?;
        storage::init(&db)?;
        let lsn = Snapshot::new(&db)?.state(STATE_LSN)?;
        let (tx, _) = watch::channel(lsn);
        Ok(Shard {
            id,
            path: path.to_path_buf(),
            db,
            write_lock: Mutex::new(()),
            hlc,
            origin,
            lsn: tx,
            opts,
        })
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        Snapshot::new(&self.db)
    }

    /// The last committed (primary) or applied (replica) LSN.
    pub fn lsn(&self) -> u64 {
        *self.lsn.borrow()
    }

    /// A receiver that changes whenever a new LSN is committed or applied.
    pub fn watch_lsn(&self) -> watch::Receiver<u64> {
        self.lsn.subscribe()
    }

    /// Runs one statement in its own transaction.
    pub fn execute(&self, stmt: &Statement, params: &[Value]) -> Result<QueryResult> {
        if sql::is_read_only(stmt) {
            let snap = self.snapshot()?;
            return sql::query(stmt, params, &snap);
        }
        let _writer = self
            .write_lock
            .lock()
            .map_err(|_| Error::internal("shard writer lock poisoned"))?;
        let snap = self.snapshot()?;
        let mut txn = BufferedTxn::new(&snap);
        let result = sql::execute(stmt, params, &mut txn)?;
        let changes = txn.into_changes();
        drop(snap);
        if !changes.is_empty() {
            self.commit(changes)?;
        }
        Ok(result)
    }

    /// Parameter types and result columns of a statement.
    pub fn describe(&self, stmt: &Statement) -> Result<(Vec<DataType>, Vec<ResultColumn>)> {
        sql::describe(stmt, &self.snapshot()?)
    }

    /// Makes `changes` durable as the next LSN; returns that LSN.
    fn commit(&self, changes: Vec<Change>) -> Result<u64> {
        let txn = self.begin_write()?;
        let lsn = {
            let mut state = txn.open_table(STATE).map_err(storage_err)?;
            let lsn = state
                .get(STATE_LSN)
                .map_err(storage_err)?
                .map(|v| v.value())
                .unwrap_or(0)
                + 1;
            let txn_id = state
                .get(STATE_TXN)
                .map_err(storage_err)?
                .map(|v| v.value())
                .unwrap_or(0)
                + 1;
            state.insert(STATE_TXN, txn_id).map_err(storage_err)?;
            drop(state);
            let record = ChangeRecord {
                lsn,
                txn_id,
                commit_ts: self.hlc.now(),
                origin: self.origin,
                changes,
            };
            write_record(&txn, &record)?;
            self.trim_log(&txn, lsn)?;
            lsn
        };
        txn.commit().map_err(storage_err)?;
        self.lsn.send_replace(lsn);
        Ok(lsn)
    }

    fn begin_write(&self) -> Result<WriteTransaction> {
        let mut txn = self.db.begin_write().map_err(storage_err)?;
        let durability = if self.opts.sync_commits {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        txn.set_durability(durability).map_err(storage_err)?;
        Ok(txn)
    }

    /// Drops change-log records older than the retention window.
    fn trim_log(&self, txn: &WriteTransaction, lsn: u64) -> Result<()> {
        if lsn <= self.opts.log_retain {
            return Ok(());
        }
        let cutoff = lsn - self.opts.log_retain;
        let mut log = txn.open_table(CHANGELOG).map_err(storage_err)?;
        let mut trimmed = false;
        loop {
            let first = log.first().map_err(storage_err)?.map(|(k, _)| k.value());
            match first {
                Some(lsn) if lsn <= cutoff => {
                    log.pop_first().map_err(storage_err)?;
                    trimmed = true;
                }
                _ => break,
            }
        }
        drop(log);
        if trimmed {
            let mut state = txn.open_table(STATE).map_err(storage_err)?;
            state
                .insert(STATE_LOG_START, cutoff + 1)
                .map_err(storage_err)?;
        }
        Ok(())
    }

    /// Applies records received from the upstream, in LSN order, skipping ones already
    /// applied; a gap is an error (the subscriber then resubscribes).
    pub fn apply(&self, records: &[ChangeRecord]) -> Result<u64> {
        let _writer = self
            .write_lock
            .lock()
            .map_err(|_| Error::internal("shard writer lock poisoned"))?;
        let mut lsn = self.lsn();
        let fresh: Vec<&ChangeRecord> = records.iter().filter(|r| r.lsn > lsn).collect();
        if fresh.is_empty() {
            return Ok(lsn);
        }
        let txn = self.begin_write()?;
        for record in fresh {
            if record.lsn != lsn + 1 {
                return Err(Error::new(
                    sqlstate::DATA_CORRUPTED,
                    format!(
                        "change log gap on shard {}: have {lsn}, got {}",
                        self.id, record.lsn
                    ),
                ));
            }
            self.hlc.observe(record.commit_ts);
            write_record(&txn, record)?;
            lsn = record.lsn;
            let mut state = txn.open_table(STATE).map_err(storage_err)?;
            state
                .insert(STATE_TXN, record.txn_id)
                .map_err(storage_err)?;
        }
        self.trim_log(&txn, lsn)?;
        txn.commit().map_err(storage_err)?;
        self.lsn.send_replace(lsn);
        Ok(lsn)
    }

    /// Starts replacing this replica's whole contents with an upstream snapshot.
    pub fn begin_snapshot(&self, tables: &[TableSchema]) -> Result<SnapshotLoad<'_>> {
        let txn = self.begin_write()?;
        {
            let mut catalog = txn.open_table(CATALOG).map_err(storage_err)?;
            let old: Vec<String> = catalog
                .range::<&str>(..)
                .map_err(storage_err)?
                .map(|e| e.map(|(k, _)| k.value().to_string()))
                .collect::<std::result::Result<_, _>>()
                .map_err(storage_err)?;
            for name in old {
                catalog.remove(name.as_str()).map_err(storage_err)?;
                let table = storage::data_table_name(&name);
                txn.delete_table(storage::data_table(&table))
                    .map_err(storage_err)?;
            }
            for schema in tables {
                create_table(&mut catalog, &txn, schema)?;
            }
            let mut log = txn.open_table(CHANGELOG).map_err(storage_err)?;
            while log.pop_first().map_err(storage_err)?.is_some() {}
        }
        Ok(SnapshotLoad { shard: self, txn })
    }

    /// Row counts and log positions.
    pub fn stats(&self) -> Result<ShardStats> {
        let snap = self.snapshot()?;
        let mut rows = 0;
        for schema in snap.schemas()? {
            rows += snap.row_count(&schema.name)?;
        }
        let bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let lsn = snap.state(STATE_LSN)?;
        let log_start = snap.state(STATE_LOG_START)?.max(1).min(lsn);
        Ok(ShardStats {
            shard: self.id,
            rows,
            lsn,
            log_start,
            bytes,
        })
    }

    /// A checksum of the shard's catalog and rows at its current LSN (equal on replicas that
    /// hold the same data).
    pub fn checksum(&self) -> Result<(u64, u64)> {
        let snap = self.snapshot()?;
        let mut h: u64 = 0xcbf29ce484222325;
        let mut feed = |bytes: &[u8]| {
            for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
                h ^= *b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
        };
        for schema in snap.schemas()? {
            feed(schema.name.as_bytes());
            for entry in snap.raw_rows(&schema.name)? {
                let (k, v) = entry?;
                feed(&k);
                feed(&v);
            }
        }
        Ok((snap.state(STATE_LSN)?, h))
    }
}

/// A snapshot being installed: one redb write transaction, committed by `finish`.
pub struct SnapshotLoad<'a> {
    shard: &'a Shard,
    txn: WriteTransaction,
}

impl SnapshotLoad<'_> {
    pub fn rows(&mut self, table: &str, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let name = storage::data_table_name(table);
        let mut t = self
            .txn
            .open_table(storage::data_table(&name))
            .map_err(storage_err)?;
        for (k, v) in rows {
            t.insert(k.as_slice(), v.as_slice()).map_err(storage_err)?;
        }
        Ok(())
    }

    /// Commits the snapshot as of `lsn`; the change log restarts after it.
    pub fn finish(self, lsn: u64) -> Result<()> {
        {
            let mut state = self.txn.open_table(STATE).map_err(storage_err)?;
            state.insert(STATE_LSN, lsn).map_err(storage_err)?;
            state
                .insert(STATE_LOG_START, lsn + 1)
                .map_err(storage_err)?;
        }
        self.txn.commit().map_err(storage_err)?;
        self.shard.lsn.send_replace(lsn);
        Ok(())
    }
}

fn create_table(
    catalog: &mut redb::Table<&str, &[u8]>,
    txn: &WriteTransaction,
    schema: &TableSchema,
) -> Result<()> {
    catalog
        .insert(schema.name.as_str(), frame::encode(schema)?.as_slice())
        .map_err(storage_err)?;
    let name = storage::data_table_name(&schema.name);
    txn.open_table(storage::data_table(&name))
        .map_err(storage_err)?;
    Ok(())
}

/// Applies a record's changes and appends it to the change log, in the caller's transaction.
fn write_record(txn: &WriteTransaction, record: &ChangeRecord) -> Result<()> {
    let mut catalog = txn.open_table(CATALOG).map_err(storage_err)?;
    for change in &record.changes {
        match change {
            Change::Put { table, key, row } => {
                let name = storage::data_table_name(table);
                let mut t = txn
                    .open_table(storage::data_table(&name))
                    .map_err(storage_err)?;
                t.insert(key.as_slice(), row.as_slice())
                    .map_err(storage_err)?;
            }
            Change::Delete { table, key } => {
                let name = storage::data_table_name(table);
                let mut t = txn
                    .open_table(storage::data_table(&name))
                    .map_err(storage_err)?;
                t.remove(key.as_slice()).map_err(storage_err)?;
            }
            Change::CreateTable { schema } => create_table(&mut catalog, txn, schema)?,
            Change::DropTable { name } => {
                catalog.remove(name.as_str()).map_err(storage_err)?;
                let table = storage::data_table_name(name);
                txn.delete_table(storage::data_table(&table))
                    .map_err(storage_err)?;
            }
        }
    }
    drop(catalog);
    let bytes = frame::encode(record)?;
    txn.open_table(CHANGELOG)
        .map_err(storage_err)?
        .insert(record.lsn, bytes.as_slice())
        .map_err(storage_err)?;
    txn.open_table(STATE)
        .map_err(storage_err)?
        .insert(STATE_LSN, record.lsn)
        .map_err(storage_err)?;
    Ok(())
}
