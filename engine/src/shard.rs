//! One shard replica: a redb file holding a hash range's rows, catalog and change log.
//!
//! ```text
//!  primary:  begin ─► execute_in(stmt)… (TxnView: snapshot + own writes, row locks)
//!            commit ─► group commit queue ─► one redb write transaction for the batch:
//!                                            rows + catalog + changelog[lsn] + state.lsn
//!  replica:  apply(records from upstream) ─► the same, in LSN order
//! ```
//! A primary assigns LSNs 1, 2, 3 … to its commits; a replica stores the very same records
//! under the same LSNs, so any replica can later serve the log onwards (after a failover, or
//! as an upstream in a tree). `watch_lsn` wakes change-log subscribers after every commit.
//! Old records are trimmed once `log_retain` newer ones exist; a subscriber that needs a
//! trimmed record gets a snapshot instead.
//!
//! Isolation: READ COMMITTED reads a fresh snapshot per statement and re-checks a locked row's
//! newest version (`RowLock::Changed`); REPEATABLE READ keeps its first snapshot and fails a
//! write to a row changed since with 40001; SERIALIZABLE additionally records its reads and is
//! validated at commit against every commit after its snapshot (rows it read by key, tables
//! it scanned), failing with 40001 on overlap — so write skew cannot commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use protocol::changes::{Change, ChangeRecord};
use protocol::clock::Hlc;
use protocol::cluster::{NodeId, ShardId};
use protocol::error::{Error, Result, sqlstate};
use protocol::message::{Isolation, ShardStats};
use protocol::schema::{QueryResult, ResultColumn, TableSchema};
use protocol::{DataType, Value, frame};
use redb::{Database, ReadableTable, WriteTransaction};
use tokio::sync::watch;

use crate::buffer::{Locking, ReadSet, TxnView, WriteSet};
use crate::index;
use crate::journal::{self, Journal, Redo};
use crate::locks::{LockTable, TxnId};
use crate::read_plans::{ReadPlan, ReadPlans};
use crate::sql::{self, Statement};
use crate::storage::{
    self, CATALOG, CHANGELOG, DECISIONS, PREPARED, STATE, STATE_JOURNAL, STATE_JOURNAL_ID,
    STATE_LOG_BYTES, STATE_LOG_START, STATE_LSN, STATE_PLACEMENT_EPOCH, STATE_TXN, Snapshot,
    storage_err,
};
use crate::txn::ReadTxn;

/// How long a lock wait may last before it is presumed part of a cross-shard deadlock.
pub const DEADLOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The newest change-log records the byte bound never trims (see `Shard::trim_log`).
const LOG_KEPT_BY_BYTES: u64 = 1024;

/// Commits remembered for SERIALIZABLE validation; a transaction older than all of them fails.
const RECENT_COMMITS: usize = 8192;

/// Ids of autocommit transactions (high bit set, so they never meet router-chosen ids that
/// happen to be small).
static AUTOCOMMIT_IDS: AtomicU64 = AtomicU64::new(1);

/// Tunables of a shard replica.
#[derive(Clone, Debug)]
pub struct ShardOptions {
    /// Change-log records kept behind the newest; older ones are trimmed.
    pub log_retain: u64,
    /// The bytes of change-log records kept; once over, the oldest are trimmed down to half
    /// of it (sparing the newest `LOG_KEPT_BY_BYTES` records).
    pub log_retain_bytes: u64,
    /// fsync every commit (`Immediate`) or leave durability to the next synced commit.
    pub sync_commits: bool,
    /// The bytes of redb's page cache for this copy's file (written pages waiting for their
    /// commit count too; see `DEFAULT_CACHE_BYTES`).
    pub cache_bytes: usize,
}

/// A shard copy's page cache unless told otherwise (`--cache-mb`): redb's own default. Every
/// copy a node hosts has a cache of its own, so a node with many copies may want less; 128
/// MiB cut `pgbench -i -s 10`'s peak RSS from 3.3 to 2.7 GB but raised the replica lag p99 of
/// the TPC-B run that follows the load from 12–18 ms to 84–208 ms (benches/RESULTS.md, the
/// fifteenth pass), so the default stays.
pub const DEFAULT_CACHE_BYTES: usize = 1 << 30;

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            log_retain: 100_000,
            log_retain_bytes: 64 << 20,
            sync_commits: true,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// A client transaction open on this shard.
pub struct Transaction {
    pub id: TxnId,
    pub isolation: Isolation,
    pub read_only: bool,
    lock_timeout: Option<Duration>,
    /// The snapshot of REPEATABLE READ and SERIALIZABLE, and the LSN it stands at.
    snapshot: Option<(Snapshot, u64)>,
    set: WriteSet,
    reads: ReadSet,
    /// SAVEPOINTs: name and the write and read sets as they stood.
    savepoints: Vec<(String, WriteSet, ReadSet)>,
    /// A statement failed after a savepoint: only ROLLBACK TO SAVEPOINT (or the end) helps.
    pub failed: bool,
    /// The running statement's statement_timeout deadline.
    pub deadline: Option<Instant>,
    /// Set when the client cancels the running statement (see `Request::Cancel`).
    pub cancelled: Option<Arc<AtomicBool>>,
    /// The running statement runs in quick mode (see `Shard::execute_in_quickly`).
    quick: bool,
}

impl Transaction {
    /// The position of the newest savepoint called `name` (3B001 if there is none).
    fn savepoint(&self, name: &str) -> Result<usize> {
        self.savepoints
            .iter()
            .rposition(|(n, _, _)| n == name)
            .ok_or_else(|| no_savepoint(name))
    }

    /// The lock_timeout of the statements that follow (a `SET lock_timeout` inside the block
    /// applies from the next statement on, as in PostgreSQL); `None` is the deadlock timeout.
    pub fn set_lock_timeout(&mut self, timeout: Option<Duration>) {
        self.lock_timeout = timeout;
    }

    /// True if a ROLLBACK TO SAVEPOINT could still recover this transaction after an error.
    pub fn has_savepoints(&self) -> bool {
        !self.savepoints.is_empty()
    }
}

/// A batch entry's ticket, outcome, and (if committed) what it wrote.
type BatchOutcome = (u64, Result<u64>, Option<CommitSummary>);

/// A transaction prepared for two-phase commit: its changes wait on disk, its row locks
/// stay held, until the coordinator's decision arrives.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PreparedTxn {
    pub changes: Vec<Change>,
    /// The shard whose `decisions` table holds this transaction's outcome.
    pub coordinator: ShardId,
    /// Wall-clock milliseconds when it was prepared (the in-doubt resolver waits a while).
    pub prepared_at_ms: u64,
}

/// What the in-doubt resolver needs of a prepared transaction (`Shard::prepared`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreparedInfo {
    pub coordinator: ShardId,
    pub prepared_at_ms: u64,
}

/// Work waiting in the group-commit queue. Everything queued while a batch is written goes
/// into the next batch: one redb write transaction, one fsync. Two-phase-commit steps share
/// batches with commits, so a distributed transaction's prepare, decision and finish cost no
/// fsync of their own under load.
enum Work {
    /// A commit: its changes become the next LSN. Outcome: the LSN.
    Commit(Pending),
    /// A two-phase-commit step that writes no LSN.
    Step(Step),
}

/// The two-phase-commit steps a group-commit batch carries beside commits.
enum Step {
    /// Phase one: the encoded `PreparedTxn` under its transaction's id, if the tables it
    /// was written against are unchanged. Outcome: 0.
    Prepare {
        id: TxnId,
        record: Vec<u8>,
        schemas: Vec<(String, Vec<u8>)>,
    },
    /// The coordinator's outcome unless one is recorded. Outcome: the one that stands (1:
    /// commit, 0: abort).
    Decide { id: TxnId, commit: bool },
    /// Writes the queued forgets (see `Shard::forget_decision`); any batch writes them, this
    /// makes one when enough have piled up. Outcome: 0.
    Forget,
    /// Drops an aborted prepared transaction. Outcome: 0.
    Discard(TxnId),
}

/// A commit waiting in the group-commit queue.
struct Pending {
    changes: Vec<Change>,
    /// The table definitions the changes were made against (see `check_schemas`).
    schemas: Vec<(String, Vec<u8>)>,
    /// A prepared transaction being committed: its `prepared` entry goes in the same write.
    prepared: Option<TxnId>,
    /// The coordinator's own part of a distributed transaction: committing it records the
    /// transaction's decision (commit) in the same write, unless an outcome is recorded.
    decides: Option<TxnId>,
    /// SERIALIZABLE: the snapshot LSN and what was read.
    validate: Option<(u64, ReadSet)>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<(u64, Work)>,
    writing: bool,
    next_ticket: u64,
    done: HashMap<u64, Result<u64>>,
}

/// A commit writing more rows than this is remembered by its tables alone.
const SUMMARY_MAX_KEYS: usize = 1024;

/// What a committed transaction wrote, for SERIALIZABLE validation.
#[derive(Clone)]
struct CommitSummary {
    lsn: u64,
    /// The rows written, or `None` for a large commit, which then counts as having written
    /// every row of its `tables`. *Why:* copying every key of a COPY or a table rewrite
    /// cost 6–7 % of its CPU and kept its keys in memory as long as the history; a
    /// serializable transaction overlapping it may now fail with 40001 where it need not.
    keys: Option<HashSet<(String, Vec<u8>)>>,
    tables: HashSet<String>,
}

impl CommitSummary {
    fn of(lsn: u64, changes: &[Change]) -> Self {
        let rows = changes
            .iter()
            .filter(|c| matches!(c, Change::Put { .. } | Change::Delete { .. }))
            .count();
        let mut s = CommitSummary {
            lsn,
            keys: (rows <= SUMMARY_MAX_KEYS).then(HashSet::new),
            tables: HashSet::new(),
        };
        for c in changes {
            match c {
                Change::Put { table, key, .. } | Change::Delete { table, key } => {
                    if let Some(keys) = &mut s.keys {
                        keys.insert((table.clone(), key.clone()));
                    }
                    if !s.tables.contains(table) {
                        s.tables.insert(table.clone());
                    }
                }
                Change::CreateTable { schema } => {
                    s.tables.insert(schema.name.clone());
                }
                Change::DropTable { name } => {
                    s.tables.insert(name.clone());
                }
                Change::AlterTable { schema } => {
                    s.tables.insert(schema.name.clone());
                }
            }
        }
        s
    }
}

/// True if a commit after `snapshot_lsn` wrote something the transaction read.
fn conflicts<'a>(
    snapshot_lsn: u64,
    reads: &ReadSet,
    commits: impl Iterator<Item = &'a CommitSummary>,
) -> bool {
    let mut oldest_seen = None;
    for c in commits {
        // Prepared write sets (lsn MAX) are not history: they say nothing about what we forgot.
        if c.lsn != u64::MAX {
            oldest_seen.get_or_insert(c.lsn);
        }
        if c.lsn <= snapshot_lsn {
            continue;
        }
        let wrote_a_read_row = match &c.keys {
            Some(keys) => keys.iter().any(|k| reads.keys.contains(k)),
            None => reads.keys.iter().any(|(t, _)| c.tables.contains(t)),
        };
        if wrote_a_read_row || c.tables.iter().any(|t| reads.tables.contains(t)) {
            return true;
        }
    }
    // History older than what we remember may hide a conflict: refuse to guess.
    oldest_seen.is_some_and(|oldest| oldest > snapshot_lsn + 1 && snapshot_lsn > 0)
}

fn no_savepoint(name: &str) -> Error {
    Error::new("3B001", format!("savepoint \"{name}\" does not exist"))
}

fn sql_ident(id: &sqlparser::ast::Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

fn serialization_failure() -> Error {
    Error::new(
        sqlstate::SERIALIZATION_FAILURE,
        "could not serialize access due to read/write dependencies among transactions",
    )
    .with_detail("Reason code: Canceled on identification as a pivot, during commit attempt.")
}

/// A transaction's changes as a group-commit entry, with the reads SERIALIZABLE (and DDL)
/// must validate; `decides` makes it the coordinator part that records the decision.
fn pending(t: Transaction, decides: Option<TxnId>) -> Pending {
    let validate = match (&t.isolation, &t.snapshot) {
        (Isolation::Serializable, Some((_, lsn))) => Some((*lsn, t.reads)),
        _ => None,
    };
    let ddl_snapshot = t.set.ddl_snapshot();
    let (changes, schemas) = t.set.into_parts();
    let validate = with_ddl_validation(validate, ddl_snapshot, &changes);
    Pending {
        changes,
        schemas,
        validate,
        prepared: None,
        decides,
    }
}

/// A distributed transaction whose outcome was recorded (as an abort, by an in-doubt
/// resolver) before its coordinator part could commit.
pub fn aborted_in_doubt() -> Error {
    Error::new(
        sqlstate::SERIALIZATION_FAILURE,
        "the transaction was aborted while its commit was in doubt",
    )
}

/// Whether `path` starts with redb's magic number still zeroed (see `Shard::open`).
fn creation_never_finished(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 9];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head.iter().all(|b| *b == 0))
}

pub struct Shard {
    pub id: ShardId,
    path: PathBuf,
    /// The read snapshot readers share until the next write commits. Declared before `db`
    /// so that its read transaction ends before the database is closed.
    snapshots: crate::snapshot_cache::SnapshotCache,
    db: Database,
    /// Serialises replica-side writes (apply, snapshot install).
    write_lock: Mutex<()>,
    locks: LockTable,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    recent: Mutex<VecDeque<CommitSummary>>,
    /// Upstream snapshots installed since open (see `ShardStats::snapshots_installed`).
    snapshots_installed: AtomicU64,
    /// Prepared (2PC) transactions awaiting their decision, also on disk in `prepared`.
    /// Shared, so listing one for its record and its commit does not copy its changes.
    prepared: Mutex<HashMap<TxnId, Arc<PreparedTxn>>>,
    /// redb write transactions written by group commit (each is one fsync when synced).
    batches: AtomicU64,
    hlc: Arc<Hlc>,
    origin: NodeId,
    lsn: watch::Sender<u64>,
    opts: ShardOptions,
    /// A replica applies nothing past this LSN until the instant passes (a move compares
    /// checksums at one LSN on both sides while the primary keeps writing).
    apply_hold: Mutex<Option<(u64, std::time::Instant)>>,
    /// See `record_placement_epoch`.
    placement_epoch: AtomicU64,
    /// On a copy that applied change records without an fsync (see `apply`): the last LSN
    /// known to be on disk. `None`: everything applied is durable.
    durable_behind: Mutex<Option<u64>>,
    /// Decision records to delete with the next batch (see `forget_decision`).
    forgotten: Mutex<Vec<TxnId>>,
    /// Bumped to odd before and to even after every commit that may change the catalog, so
    /// a reader that sees the same even value before and after opening its snapshot knows
    /// the snapshot's catalog is the one that value stands for (see `stamped_snapshot`).
    catalog_seq: AtomicU64,
    /// Held from a catalog write's first bump to its second: two such commits (a batch and
    /// a snapshot install, say) must not interleave their bumps, or the sequence would read
    /// even while one of them is still being committed.
    catalog_writers: Mutex<()>,
    /// The change log's first LSN as far as this process knows (a hint: never above the
    /// true first record for long, see `trim_log`).
    log_start: AtomicU64,
    /// Where group commit makes its batches durable (see `crate::journal`); `None` when
    /// commits are not synced at all.
    journal: Option<Mutex<Journal>>,
}

/// A redb write transaction on a shard copy. Its commit retires the copy's shared read
/// snapshot (see `snapshot_cache`) and, if it may change the catalog, moves the catalog
/// stamp (`CatalogWrite`); every write goes through here, so none can commit without that.
struct ShardWrite<'a> {
    txn: WriteTransaction,
    shard: &'a Shard,
}

impl std::ops::Deref for ShardWrite<'_> {
    type Target = WriteTransaction;

    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

impl ShardWrite<'_> {
    fn commit(self, changes_catalog: bool) -> Result<()> {
        // Dropped in reverse: the snapshot generation moves on before the catalog stamp.
        let _catalog = changes_catalog.then(|| CatalogWrite::begin(self.shard));
        let _committing = self.shard.snapshots.committing();
        self.txn.commit().map_err(storage_err)
    }
}

/// Hands each opened shard copy its own range of catalog stamps (see `Shard::catalog_seq`).
static CATALOG_SEQ_BASES: AtomicU64 = AtomicU64::new(1);

/// Marks a commit that may change the catalog: `catalog_seq` is odd from before the commit
/// until this is dropped, after it (whether it succeeded or not).
///
/// Catalog writes are serialised by `Shard::catalog_writers` (a poisoned lock is taken over:
/// it guards no data of its own).
struct CatalogWrite<'a> {
    seq: &'a AtomicU64,
    _exclusive: std::sync::MutexGuard<'a, ()>,
}

impl<'a> CatalogWrite<'a> {
    fn begin(shard: &'a Shard) -> Self {
        let exclusive = shard
            .catalog_writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        shard.catalog_seq.fetch_add(1, Ordering::SeqCst);
        CatalogWrite {
            seq: &shard.catalog_seq,
            _exclusive: exclusive,
        }
    }
}

impl Drop for CatalogWrite<'_> {
    fn drop(&mut self) {
        // Before the lock is released (fields drop after this body runs).
        self.seq.fetch_add(1, Ordering::SeqCst);
    }
}

/// True if `c` (re)defines a table rather than writing a row.
fn is_ddl(c: &Change) -> bool {
    !matches!(c, Change::Put { .. } | Change::Delete { .. })
}

fn has_ddl(changes: &[Change]) -> bool {
    changes.iter().any(is_ddl)
}

/// Queued forgets that make a batch of their own (see `Shard::forget_decision`).
const FORGET_BATCH: usize = 256;

/// How long an apply hold lasts if nobody lifts it (its runner died). Long, because the
/// primary's checksum of a big shard runs meanwhile; only a copy being moved in is held.
const APPLY_HOLD: Duration = Duration::from_secs(600);

impl Shard {
    /// Opens (or creates) the shard file at `path`.
    pub fn open(
        path: &Path,
        id: ShardId,
        origin: NodeId,
        hlc: Arc<Hlc>,
        opts: ShardOptions,
    ) -> Result<Shard> {
        let create = |path: &Path| {
            Database::builder()
                .set_cache_size(opts.cache_bytes)
                .create(path)
        };
        let db = match create(path) {
            Ok(db) => db,
            Err(e) if creation_never_finished(path) => {
                // redb writes its magic number last when it creates a file: a file whose magic
                // is still zero was cut short by a crash while being created and holds no
                // committed data (a copy arriving by a move, a replica's first start).
                tracing::warn!(
                    shard = id,
                    "shard file {} was never fully created ({e}); creating it again",
                    path.display()
                );
                std::fs::remove_file(path).map_err(Error::io)?;
                create(path).map_err(storage_err)?
            }
            Err(e) => return Err(storage_err(e)),
        };
        storage::init(&db)?;
        let journal = if opts.sync_commits {
            Some(Mutex::new(replay_journal(&db, path, id)?))
        } else {
            // Not journaling now, but a journal left by a run that did still holds writes.
            if journal::path_for(path).exists() {
                replay_journal(&db, path, id)?;
            }
            None
        };
        let snapshot = Snapshot::new(&db)?;
        let lsn = snapshot.state(STATE_LSN)?;
        let placement_epoch = snapshot.state(STATE_PLACEMENT_EPOCH)?;
        let log_start = snapshot.state(STATE_LOG_START)?.max(1);
        // Restart the clock past the newest commit: timestamps, and the row ids drawn from
        // them, must never repeat even if the wall clock stepped back while we were down.
        if let Some(last) = snapshot.changes_after(lsn.saturating_sub(1), 1)?.first() {
            hlc.observe(last.commit_ts);
        }
        drop(snapshot);
        let (tx, _) = watch::channel(lsn);
        let shard = Shard {
            id,
            path: path.to_path_buf(),
            db,
            write_lock: Mutex::new(()),
            locks: LockTable::default(),
            queue: Mutex::default(),
            queue_cv: Condvar::new(),
            recent: Mutex::default(),
            snapshots_installed: AtomicU64::new(0),
            prepared: Mutex::default(),
            batches: AtomicU64::new(0),
            hlc,
            origin,
            lsn: tx,
            opts,
            apply_hold: Mutex::new(None),
            placement_epoch: AtomicU64::new(placement_epoch),
            durable_behind: Mutex::new(None),
            forgotten: Mutex::default(),
            log_start: AtomicU64::new(log_start),
            journal,
            snapshots: Default::default(),
            // Each opened copy counts from its own base, so a stamp taken on one copy never
            // matches another copy's catalog (a shard dropped and hosted again).
            catalog_seq: AtomicU64::new(CATALOG_SEQ_BASES.fetch_add(1, Ordering::Relaxed) << 32),
            catalog_writers: Mutex::new(()),
        };
        shard.recover_prepared()?;
        Ok(shard)
    }

    /// Reloads prepared transactions after a restart and takes their row locks again, so no
    /// writer slips in before their decision is known.
    fn recover_prepared(&self) -> Result<()> {
        let read = redb::ReadableDatabase::begin_read(&self.db).map_err(storage_err)?;
        let table = read.open_table(PREPARED).map_err(storage_err)?;
        let mut prepared = self
            .prepared
            .lock()
            .map_err(|_| Error::internal("poisoned"))?;
        let catalog = read.open_table(CATALOG).map_err(storage_err)?;
        let mut schemas: HashMap<String, Option<TableSchema>> = HashMap::new();
        for entry in table.range::<u64>(..).map_err(storage_err)? {
            let (id, bytes) = entry.map_err(storage_err)?;
            let p: PreparedTxn = frame::decode(bytes.value())?;
            let wait = Some(Duration::from_secs(1));
            for c in &p.changes {
                if let Change::Put { table, key, .. } | Change::Delete { table, key } = c {
                    self.locks.acquire(id.value(), table, key, wait)?;
                }
                // The unique values it writes stay taken too (see `TxnView::check_unique`).
                if let Change::Put { table, row, .. } = c {
                    if !schemas.contains_key(table) {
                        let schema = match catalog.get(table.as_str()).map_err(storage_err)? {
                            Some(b) => Some(storage::decode_schema(b.value())?),
                            None => None,
                        };
                        schemas.insert(table.clone(), schema);
                    }
                    let Some(Some(schema)) = schemas.get(table) else {
                        continue;
                    };
                    if !schema.indexes.iter().any(|i| i.unique) {
                        continue;
                    }
                    let values = protocol::row::decode_row(row)?;
                    for idx in schema.indexes.iter().filter(|i| i.unique) {
                        let name = index::index_table_name(table, &idx.name);
                        let prefix = index::values_prefix(schema, idx, &values);
                        self.locks.acquire(id.value(), &name, &prefix, wait)?;
                    }
                }
            }
            prepared.insert(id.value(), Arc::new(p));
        }
        Ok(())
    }

    /// Phase one: makes a transaction's changes durable as prepared, keeping its locks.
    /// Afterwards only `finish_prepared` ends it.
    pub fn prepare(&self, t: Transaction, coordinator: ShardId, now_ms: u64) -> Result<()> {
        if t.isolation == Isolation::Serializable
            && let Some((_, snapshot_lsn)) = &t.snapshot
            && self.read_conflict(*snapshot_lsn, &t.reads, &[t.id])?
        {
            self.locks.release_all(t.id);
            return Err(serialization_failure());
        }
        let ddl_snapshot = t.set.ddl_snapshot();
        let (changes, schemas) = t.set.into_parts();
        if let Some((lsn, reads)) = with_ddl_validation(None, ddl_snapshot, &changes)
            && self.read_conflict(lsn, &reads, &[t.id])?
        {
            self.locks.release_all(t.id);
            return Err(serialization_failure());
        }
        let p = Arc::new(PreparedTxn {
            changes,
            coordinator,
            prepared_at_ms: now_ms,
        });
        // Listed before it is written, so a DDL commit that starts after this write can see
        // it (`crosses_prepared`); a DDL commit before it shows in the catalog checked here.
        self.prepared
            .lock()
            .map_err(|_| Error::internal("poisoned"))?
            .insert(t.id, p.clone());
        let write = || -> Result<u64> {
            self.crosses_prepared(&p.changes, Some(t.id))?;
            self.submit(Work::Step(Step::Prepare {
                id: t.id,
                record: frame::encode(&*p)?,
                schemas,
            }))
        };
        if let Err(e) = write() {
            if let Ok(mut prepared) = self.prepared.lock() {
                prepared.remove(&t.id);
            }
            self.locks.release_all(t.id);
            return Err(e);
        }
        Ok(())
    }

    /// Phase two: commits (as the next LSN) or discards a prepared transaction. Finishing one
    /// that is not prepared here is a no-op, so the decision can be delivered more than once.
    pub fn finish_prepared(&self, id: TxnId, commit: bool) -> Result<()> {
        let Some(p) = self
            .prepared
            .lock()
            .map_err(|_| Error::internal("poisoned"))?
            .get(&id)
            .cloned()
        else {
            return Ok(());
        };
        let result = if commit && !p.changes.is_empty() {
            self.submit(Work::Commit(Pending {
                changes: p.changes.clone(),
                // Checked when it was prepared; DDL since then waits for its decision.
                schemas: Vec::new(),
                validate: None,
                prepared: Some(id),
                decides: None,
            }))
            .map(|_| ())
        } else {
            self.submit(Work::Step(Step::Discard(id))).map(|_| ())
        };
        if result.is_ok() {
            if let Ok(mut prepared) = self.prepared.lock() {
                prepared.remove(&id);
            }
            self.locks.release_all(id);
        }
        result
    }

    /// 40001 if these changes and a prepared transaction (other than `except`) cross: one
    /// redefines a table the other writes. The prepared one's rows were made for the old
    /// definition and must commit under it, so the other goes.
    fn crosses_prepared(&self, changes: &[Change], except: Option<TxnId>) -> Result<()> {
        let prepared = self
            .prepared
            .lock()
            .map_err(|_| Error::internal("poisoned"))?;
        if prepared.is_empty() || (prepared.len() == 1 && except.is_some()) {
            return Ok(());
        }
        let mine_ddl = ddl_tables(changes);
        for (id, p) in prepared.iter() {
            if Some(*id) == except {
                continue;
            }
            let theirs_ddl = ddl_tables(&p.changes);
            if mine_ddl.is_empty() && theirs_ddl.is_empty() {
                continue;
            }
            let touches = |list: &[Change], tables: &[&str]| {
                list.iter().any(|c| tables.contains(&change_table(c)))
            };
            if touches(&p.changes, &mine_ddl) || touches(changes, &theirs_ddl) {
                return Err(Error::new(
                    sqlstate::SERIALIZATION_FAILURE,
                    "could not serialize access: a table definition changed by one transaction is written by another that is being committed",
                ));
            }
        }
        Ok(())
    }

    /// Prepared transactions, the shard coordinating each and when it was prepared. Their
    /// changes are left out: the in-doubt resolver lists them twice a second, and a
    /// prepared COPY or table rewrite holds hundreds of thousands of rows.
    pub fn prepared(&self) -> Vec<(TxnId, PreparedInfo)> {
        self.prepared
            .lock()
            .map(|p| {
                p.iter()
                    .map(|(k, v)| {
                        let info = PreparedInfo {
                            coordinator: v.coordinator,
                            prepared_at_ms: v.prepared_at_ms,
                        };
                        (*k, info)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records the outcome of a transaction this shard coordinates, unless one is recorded
    /// already; returns the outcome that stands. This is the single point of decision: the
    /// router's COMMIT and the in-doubt resolver's presumed abort race here, and one wins.
    pub fn decide(&self, id: TxnId, commit: bool) -> Result<bool> {
        self.submit(Work::Step(Step::Decide { id, commit }))
            .map(|d| d == 1)
    }

    /// Queues the deletion of a decision record once every participant has finished (see
    /// `Request::ForgetDecision`), so decisions do not pile up under a steady workload. The
    /// next group-commit batch deletes every queued record, at no cost of its own; true once
    /// `FORGET_BATCH` are waiting, when the caller should write them (`write_forgotten`).
    /// A record that survives a crash is only a few bytes of garbage, never wrong.
    pub fn forget_decision(&self, id: TxnId) -> bool {
        match self.forgotten.lock() {
            Ok(mut f) => {
                f.push(id);
                f.len() >= FORGET_BATCH
            }
            Err(_) => false,
        }
    }

    /// Deletes the queued decision records now (see `forget_decision`).
    pub fn write_forgotten(&self) -> Result<()> {
        self.submit(Work::Step(Step::Forget)).map(|_| ())
    }

    /// The number of decision records kept (for tests and stats).
    pub fn decision_count(&self) -> Result<u64> {
        let read = redb::ReadableDatabase::begin_read(&self.db).map_err(storage_err)?;
        let table = read.open_table(DECISIONS).map_err(storage_err)?;
        redb::ReadableTableMetadata::len(&table).map_err(storage_err)
    }

    /// Deletes, in one commit, every row whose shard key hashes outside `range`: after a
    /// split each half drops the rows of the other. `keys` gives each table's shard-key
    /// column; a table it does not name is left alone. Returns the LSN afterwards.
    pub fn trim_to_range(
        &self,
        keys: &[(String, usize)],
        range: protocol::hash::HashRange,
    ) -> Result<u64> {
        let snap = self.snapshot()?;
        let mut changes = Vec::new();
        for schema in snap.schemas()? {
            let Some((_, col)) = keys.iter().find(|(t, _)| *t == schema.name) else {
                continue;
            };
            for entry in snap.raw_rows(&schema.name)? {
                let (key, row) = entry?;
                let row = protocol::row::decode_row(&row)?;
                let value = row.get(*col).cloned().unwrap_or(Value::Null);
                if !range.contains(protocol::hash::shard_hash(&value)) {
                    changes.push(Change::Delete {
                        table: schema.name.clone(),
                        key,
                    });
                }
            }
        }
        drop(snap);
        if changes.is_empty() {
            return Ok(self.lsn());
        }
        self.submit(Work::Commit(Pending {
            changes,
            schemas: Vec::new(),
            prepared: None,
            validate: None,
            decides: None,
        }))
    }

    /// Every recorded decision (a move copies them to the shard's new primary).
    pub fn decisions(&self) -> Result<Vec<(TxnId, bool)>> {
        let read = redb::ReadableDatabase::begin_read(&self.db).map_err(storage_err)?;
        let table = read.open_table(DECISIONS).map_err(storage_err)?;
        // Forgotten already, only not yet deleted: the new copy would keep them for good.
        let forgotten: HashSet<TxnId> = self
            .forgotten
            .lock()
            .map(|f| f.iter().copied().collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for entry in redb::ReadableTable::range::<TxnId>(&table, ..).map_err(storage_err)? {
            let (k, v) = entry.map_err(storage_err)?;
            if !forgotten.contains(&k.value()) {
                out.push((k.value(), v.value() == 1));
            }
        }
        Ok(out)
    }

    /// Records decisions made on another copy of this shard; one already recorded here stands.
    pub fn import_decisions(&self, decisions: &[(TxnId, bool)]) -> Result<()> {
        let mut journal = self.lock_journal()?;
        let txn = self.begin_write(true)?;
        {
            let mut table = txn.open_table(DECISIONS).map_err(storage_err)?;
            for &(id, commit) in decisions {
                if table.get(id).map_err(storage_err)?.is_none() {
                    table.insert(id, commit as u8).map_err(storage_err)?;
                }
            }
        }
        journal_and_commit(txn, journal.as_deref_mut(), true, &[], true, false)
    }

    /// The recorded outcome of a transaction this shard coordinates.
    pub fn decision(&self, id: TxnId) -> Result<Option<bool>> {
        let read = redb::ReadableDatabase::begin_read(&self.db).map_err(storage_err)?;
        let table = read.open_table(DECISIONS).map_err(storage_err)?;
        Ok(table.get(id).map_err(storage_err)?.map(|v| v.value() == 1))
    }

    /// A snapshot and, when no catalog change was being committed meanwhile, the stamp of
    /// its catalog: two snapshots with the same stamp have the same catalog.
    fn stamped_snapshot(&self) -> Result<(Snapshot, Option<u64>)> {
        let before = self.catalog_seq.load(Ordering::SeqCst);
        let snap = self.snapshot()?;
        let after = self.catalog_seq.load(Ordering::SeqCst);
        Ok((
            snap,
            (before == after && before.is_multiple_of(2)).then_some(before),
        ))
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        Snapshot::new(&self.db)
    }

    /// The newest committed state, shared with other readers until a write commits (see
    /// `snapshot_cache`).
    pub fn read_snapshot(&self) -> Result<Arc<Snapshot>> {
        Ok(self.stamped_read_snapshot()?.0)
    }

    /// `read_snapshot` with its catalog stamp.
    fn stamped_read_snapshot(&self) -> Result<crate::snapshot_cache::Stamped> {
        self.snapshots.get(|| self.stamped_snapshot())
    }

    /// The last committed (primary) or applied (replica) LSN.
    pub fn lsn(&self) -> u64 {
        *self.lsn.borrow()
    }

    /// A receiver that changes whenever a new LSN is committed or applied.
    pub fn watch_lsn(&self) -> watch::Receiver<u64> {
        self.lsn.subscribe()
    }

    /// Group-commit batches written so far (each one redb write transaction and fsync).
    pub fn write_batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Rows locked by open transactions right now.
    pub fn locked_rows(&self) -> usize {
        self.locks.locked_rows()
    }

    /// Starts a client transaction; its snapshot is taken by its first statement. Without a
    /// `lock_timeout`, a lock wait longer than `DEADLOCK_TIMEOUT` is taken for a deadlock that
    /// spans shards (each shard sees only its own part of the waits-for graph) and fails with
    /// 40P01, as a wait in a local cycle does at once.
    pub fn begin(
        &self,
        id: TxnId,
        isolation: Isolation,
        read_only: bool,
        lock_timeout: Option<Duration>,
    ) -> Transaction {
        Transaction {
            id,
            isolation,
            read_only,
            lock_timeout,
            snapshot: None,
            set: WriteSet::default(),
            reads: ReadSet::default(),
            savepoints: Vec::new(),
            failed: false,
            deadline: None,
            cancelled: None,
            quick: false,
        }
    }

    /// Runs a statement of quick shape (`point_read::is_quick_shaped`) inside a transaction
    /// on the caller's thread, if it needs nothing but gets and free row locks: `None` if it
    /// needed more, with the transaction as it was before (run it with `execute_in` on a
    /// blocking thread then). A statement the transaction's state makes costly to undo
    /// (a large write set, DDL, an earlier failure) is not tried.
    pub fn execute_in_quickly(
        &self,
        t: &mut Transaction,
        stmt: &Statement,
        params: &[Value],
    ) -> Result<Option<QueryResult>> {
        if t.failed || !t.set.is_small() || !t.reads.is_small() {
            return Ok(None);
        }
        let (set, reads) = (t.set.clone(), t.reads.clone());
        t.quick = true;
        let result = self.execute_in(t, stmt, params);
        t.quick = false;
        match result {
            Err(e) if crate::point_read::is_not_a_point_read(&e) => {
                t.set = set;
                t.reads = reads;
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// Runs one statement inside a transaction.
    pub fn execute_in(
        &self,
        t: &mut Transaction,
        stmt: &Statement,
        params: &[Value],
    ) -> Result<QueryResult> {
        match stmt {
            Statement::Savepoint { name } => {
                if t.failed {
                    return Err(Error::in_failed_transaction());
                }
                let name = sql_ident(name);
                let saved = t.set.save();
                t.savepoints.push((name, saved, t.reads.clone()));
                return Ok(QueryResult::command("SAVEPOINT", 0));
            }
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => {
                let name = sql_ident(name);
                let at = t.savepoint(&name)?;
                t.savepoints.truncate(at + 1);
                let (_, set, reads) = &t.savepoints[at];
                t.set = WriteSet::restore(set);
                t.reads = reads.clone();
                t.failed = false;
                return Ok(QueryResult::command("ROLLBACK", 0));
            }
            Statement::ReleaseSavepoint { name } => {
                if t.failed {
                    return Err(Error::in_failed_transaction());
                }
                let name = sql_ident(name);
                let at = t.savepoint(&name)?;
                t.set.release(&t.savepoints[at].1);
                t.savepoints.truncate(at);
                return Ok(QueryResult::command("RELEASE", 0));
            }
            _ if t.failed => return Err(Error::in_failed_transaction()),
            _ => {}
        }
        // A locking read that met a row changed since its snapshot reruns on a fresh one
        // (READ COMMITTED only; it holds the row locks by then).
        for _ in 0..3 {
            match self.run_statement(t, stmt, params) {
                Err(e) if e.code == sql::locking::RERUN => continue,
                other => return other,
            }
        }
        Err(Error::new(
            sqlstate::SERIALIZATION_FAILURE,
            "could not lock rows that kept changing",
        ))
    }

    fn run_statement(
        &self,
        t: &mut Transaction,
        stmt: &Statement,
        params: &[Value],
    ) -> Result<QueryResult> {
        let read_only = sql::is_read_only(stmt);
        if t.read_only && !read_only {
            let verb = stmt
                .to_string()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase();
            let verb = match verb.split_whitespace().next() {
                Some("CREATE" | "DROP" | "ALTER") => verb,
                Some(first) => first.to_string(),
                None => verb,
            };
            return Err(Error::new(
                sqlstate::READ_ONLY_SQL_TRANSACTION,
                format!("cannot execute {verb} in a read-only transaction"),
            ));
        }
        // READ COMMITTED takes a new snapshot per statement; the stricter levels keep the first.
        if t.isolation != Isolation::ReadCommitted && t.snapshot.is_none() {
            let snap = self.snapshot()?;
            let lsn = snap.state(STATE_LSN)?;
            t.snapshot = Some((snap, lsn));
        }
        let fresh;
        let snap = match &t.snapshot {
            Some((snap, _)) => snap,
            None => {
                fresh = self.read_snapshot()?;
                &*fresh
            }
        };
        // The newest committed version: the shared snapshot is that until a write commits.
        let latest = |table: &str, key: &[u8]| self.read_snapshot()?.get_raw(table, key);
        let latest_index = |table: &str, index: &str, range: &crate::txn::KeyRange| {
            self.read_snapshot()?.index_keys(table, index, range)
        };
        let user_timeout = t.lock_timeout;
        let deadline = t.deadline;
        let mut wait = t.lock_timeout.unwrap_or(DEADLOCK_TIMEOUT);
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(Instant::now()));
        }
        let locking = Locking {
            locks: &self.locks,
            txn: t.id,
            isolation: t.isolation,
            timeout: Some(wait),
            latest: &latest,
            latest_index: &latest_index,
            hlc: &self.hlc,
            cancelled: t.cancelled.as_deref(),
        };
        let reads = (t.isolation == Isolation::Serializable).then_some(&mut t.reads);
        let mut view = TxnView::new(snap, &mut t.set, Some(locking), reads);
        if t.quick {
            view = view.quick();
        }
        let result = if read_only {
            sql::query(stmt, params, &view)
        } else {
            sql::execute(stmt, params, &mut view)
        };
        let past_deadline = || deadline.is_some_and(|d| Instant::now() >= d);
        if result.is_ok() && past_deadline() {
            return Err(Error::statement_timeout());
        }
        // Checked after the statement and before any commit: a cancelled statement never
        // commits, so the client's 57014 is the truth.
        if result.is_ok()
            && t.cancelled
                .as_ref()
                .is_some_and(|c| c.load(Ordering::SeqCst))
        {
            return Err(Error::new(
                sqlstate::QUERY_CANCELED,
                "canceling statement due to user request",
            ));
        }
        result.map_err(|e| {
            if e.code == sqlstate::LOCK_NOT_AVAILABLE
                && e.message.contains("lock timeout")
                && past_deadline()
            {
                Error::statement_timeout()
            } else if user_timeout.is_none() && e.message.contains("lock timeout") {
                Error::new(sqlstate::DEADLOCK_DETECTED, "deadlock detected").with_detail(
                    "A row lock wait outlasted the deadlock timeout; the cycle may span shards.",
                )
            } else {
                e
            }
        })
    }

    /// Commits a transaction: validates it (SERIALIZABLE), makes its changes durable as the
    /// next LSN together with the other commits waiting at that moment, then releases its
    /// locks. Returns the LSN, or 0 for a transaction that wrote nothing.
    pub fn commit(&self, t: Transaction) -> Result<u64> {
        self.commit_part(t, false)
    }

    /// Commits this shard's part of a transaction; `writes_elsewhere` says other shards were
    /// written, so reads made here must be validated even if nothing was written here.
    pub fn commit_part(&self, t: Transaction, writes_elsewhere: bool) -> Result<u64> {
        let id = t.id;
        let result = if t.set.is_empty() {
            // A SERIALIZABLE reader still validates its reads: it may be the read-only part of
            // a transaction that writes on other shards (write skew across shards).
            if writes_elsewhere && self.stale_reads(&t)? {
                Err(serialization_failure())
            } else {
                Ok(0)
            }
        } else {
            self.submit(Work::Commit(pending(t, None)))
        };
        self.locks.release_all(id);
        result
    }

    /// SERIALIZABLE: true if something `t` read was written after its snapshot, or by a
    /// transaction prepared here.
    fn stale_reads(&self, t: &Transaction) -> Result<bool> {
        match (&t.isolation, &t.snapshot) {
            (Isolation::Serializable, Some((_, lsn))) => self.read_conflict(*lsn, &t.reads, &[]),
            _ => Ok(false),
        }
    }

    /// Commits the coordinator shard's part of a distributed transaction and records the
    /// transaction's decision (commit) in the same write: one durable write where a prepare,
    /// a decision and a finish were three. The other participants must be prepared already.
    /// Fails, committing nothing and recording nothing, if validation fails; fails with 40001
    /// if an outcome was recorded first (an in-doubt resolver's presumed abort).
    pub fn commit_deciding(&self, t: Transaction) -> Result<u64> {
        let id = t.id;
        let result = if t.set.is_empty() {
            if self.stale_reads(&t)? {
                Err(serialization_failure())
            } else {
                match self.decide(id, true) {
                    Ok(true) => Ok(0),
                    Ok(false) => Err(aborted_in_doubt()),
                    Err(e) => Err(e),
                }
            }
        } else {
            self.submit(Work::Commit(pending(t, Some(id))))
        };
        self.locks.release_all(id);
        result
    }

    /// True if a commit after `snapshot_lsn`, or a transaction prepared here and not yet
    /// decided (other than `except`), wrote something in `reads`. Counting prepared writes as
    /// already committed closes the window in which a distributed transaction is decided but
    /// not yet visible.
    fn read_conflict(&self, snapshot_lsn: u64, reads: &ReadSet, except: &[TxnId]) -> Result<bool> {
        let recent = self
            .recent
            .lock()
            .map_err(|_| Error::internal("poisoned"))?;
        let prepared: Vec<CommitSummary> = self
            .prepared
            .lock()
            .map_err(|_| Error::internal("poisoned"))?
            .iter()
            .filter(|(id, _)| !except.contains(id))
            .map(|(_, p)| CommitSummary::of(u64::MAX, &p.changes))
            .collect();
        Ok(conflicts(
            snapshot_lsn,
            reads,
            recent.iter().chain(prepared.iter()),
        ))
    }

    /// Write sets of the transactions prepared here, as if committed after every snapshot.
    fn prepared_summaries(&self) -> Vec<CommitSummary> {
        self.prepared
            .lock()
            .map(|p| {
                p.values()
                    .map(|p| CommitSummary::of(u64::MAX, &p.changes))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Discards a transaction's writes and releases its locks.
    pub fn rollback(&self, t: Transaction) {
        self.locks.release_all(t.id);
    }

    /// Runs one statement as its own transaction; a serialization failure is retried here,
    /// invisibly to the client.
    pub fn execute(&self, stmt: &Statement, params: &[Value]) -> Result<QueryResult> {
        self.execute_until(stmt, params, None, None, None)
    }

    /// As `execute`, failing with 57014 (and committing nothing) once `deadline` passes, and
    /// with 55P03 after waiting `lock_timeout` for a row lock (the deadlock timeout if none).
    pub fn execute_until(
        &self,
        stmt: &Statement,
        params: &[Value],
        deadline: Option<Instant>,
        cancelled: Option<Arc<AtomicBool>>,
        lock_timeout: Option<Duration>,
    ) -> Result<QueryResult> {
        let mut attempt = 0;
        loop {
            let id = AUTOCOMMIT_IDS.fetch_add(1, Ordering::Relaxed) | (1 << 63);
            let mut t = self.begin(id, Isolation::ReadCommitted, false, lock_timeout);
            t.deadline = deadline;
            t.cancelled = cancelled.clone();
            let outcome = match self.execute_in(&mut t, stmt, params) {
                Ok(result) => self.commit(t).map(|_| result),
                Err(e) => {
                    self.rollback(t);
                    Err(e)
                }
            };
            match outcome {
                Err(e) if e.code == sqlstate::SERIALIZATION_FAILURE && attempt < 10 => attempt += 1,
                other => return other,
            }
        }
    }

    /// Runs a read-only autocommit statement on the calling thread if it fetches nothing but
    /// rows by key (see `point_read`); `None` if it must run on a blocking thread instead.
    ///
    /// `plans` holds the statement's bound plans when it is a prepared statement: one bound
    /// against this snapshot's catalog runs without binding (`crate::read_plans`).
    pub fn read_points(
        &self,
        stmt: &Statement,
        params: &[Value],
        plans: Option<&ReadPlans>,
    ) -> Result<Option<QueryResult>> {
        let (snap, stamp) = self.stamped_read_snapshot()?;
        let view = crate::point_read::PointsOnly::new(&*snap);
        let result = match plans {
            Some(plans) => match plans.get(self.id) {
                Some(plan) if plan.valid_in(&snap, stamp)? => match &plan.bound {
                    Some(bound) => sql::reuse::run_bound(bound, params, &view),
                    None => sql::query(stmt, params, &view),
                },
                _ => match sql::reuse::bind_read(stmt, &view)? {
                    Some(bound) => {
                        let catalog = snap.catalog_entries(&bound.tables)?;
                        let result = sql::reuse::run_bound(&bound, params, &view);
                        let bound = bound.reusable.then_some(bound);
                        plans.put(self.id, Arc::new(ReadPlan::new(catalog, bound, stamp)));
                        result
                    }
                    None => sql::query(stmt, params, &view),
                },
            },
            None => sql::query(stmt, params, &view),
        };
        match result {
            Err(e) if crate::point_read::is_not_a_point_read(&e) => Ok(None),
            other => other.map(Some),
        }
    }

    /// Parameter types and result columns of a statement.
    pub fn describe(&self, stmt: &Statement) -> Result<(Vec<DataType>, Vec<ResultColumn>)> {
        sql::describe(stmt, &self.snapshot()?)
    }

    /// Queues a commit; the first committer to find no batch in flight writes every queued
    /// commit in one redb transaction (one fsync) and hands each its outcome.
    fn submit(&self, work: Work) -> Result<u64> {
        let mut q = self
            .queue
            .lock()
            .map_err(|_| Error::internal("commit queue poisoned"))?;
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.pending.push((ticket, work));
        loop {
            if let Some(result) = q.done.remove(&ticket) {
                return result;
            }
            if q.writing {
                q = self
                    .queue_cv
                    .wait(q)
                    .map_err(|_| Error::internal("commit queue poisoned"))?;
                continue;
            }
            q.writing = true;
            let batch = std::mem::take(&mut q.pending);
            drop(q);
            let outcomes = self.write_batch(batch);
            q = self
                .queue
                .lock()
                .map_err(|_| Error::internal("commit queue poisoned"))?;
            q.writing = false;
            q.done.extend(outcomes);
            self.queue_cv.notify_all();
        }
    }

    /// Writes a batch of commits in one redb transaction; each gets an LSN or an error.
    fn write_batch(&self, batch: Vec<(u64, Work)>) -> Vec<(u64, Result<u64>)> {
        let tickets: Vec<u64> = batch.iter().map(|(t, _)| *t).collect();
        let Ok(mut recent) = self.recent.lock() else {
            return tickets
                .into_iter()
                .map(|t| (t, Err(Error::internal("commit history poisoned"))))
                .collect();
        };
        // Dropping a decision record or an aborted prepare may be lost in a crash: a lost
        // forget leaves a few bytes of garbage, a lost discard brings back a prepared
        // transaction whose coordinator answers "abort" (recorded, or presumed). A batch of
        // nothing else needs no fsync; the next durable batch makes it durable too.
        let durable = !batch
            .iter()
            .all(|(_, w)| matches!(w, Work::Step(Step::Forget | Step::Discard(_))));
        let forgotten = self
            .forgotten
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default();
        let ddl = batch
            .iter()
            .any(|(_, w)| matches!(w, Work::Commit(p) if has_ddl(&p.changes)));
        let written = (|| -> Result<(Vec<BatchOutcome>, bool)> {
            let mut journal = self.lock_journal()?;
            // With a journal, the batch's entry there is synced and redb's commit is not,
            // except at a checkpoint. A copy that applied records unsynced (a replica just
            // promoted) checkpoints first: replay must never run on top of a file that lost
            // writes the journal's entries came after.
            let checkpoint = journal
                .as_ref()
                .is_some_and(|j| j.checkpoint_due() || self.unflushed());
            let synced_commit = if journal.is_some() {
                checkpoint
            } else {
                durable
            };
            let txn = self.begin_write(synced_commit)?;
            let mut redo: Vec<Redo> = Vec::with_capacity(batch.len() + 2);
            let mut out = Vec::with_capacity(batch.len());
            let mut accepted: Vec<CommitSummary> = Vec::new();
            // Undecided prepared writes count as committed for SERIALIZABLE validation; read
            // them once per batch, and only if someone validates.
            let validates = |w: &Work| matches!(w, Work::Commit(p) if p.validate.is_some());
            let prepared = if batch.iter().any(|(_, w)| validates(w)) {
                self.prepared_summaries()
            } else {
                Vec::new()
            };
            let (mut lsn, mut txn_id) = {
                let state = txn.open_table(STATE).map_err(storage_err)?;
                let lsn = state
                    .get(STATE_LSN)
                    .map_err(storage_err)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                let id = state
                    .get(STATE_TXN)
                    .map_err(storage_err)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                (lsn, id)
            };
            for (ticket, work) in batch {
                let p = match work {
                    Work::Commit(p) => p,
                    Work::Step(step) => {
                        out.push((ticket, write_step(&txn, step, &mut redo), None));
                        continue;
                    }
                };
                // Finished already (the router and an in-doubt resolver raced): once only.
                if let Some(id) = p.prepared
                    && txn
                        .open_table(PREPARED)
                        .map_err(storage_err)?
                        .get(id)
                        .map_err(storage_err)?
                        .is_none()
                {
                    out.push((ticket, Ok(0), None));
                    continue;
                }
                if let Some(id) = p.decides
                    && txn
                        .open_table(DECISIONS)
                        .map_err(storage_err)?
                        .get(id)
                        .map_err(storage_err)?
                        .is_some()
                {
                    out.push((ticket, Err(aborted_in_doubt()), None));
                    continue;
                }
                if p.prepared.is_none() {
                    let checked = check_schemas(&txn, &p.schemas)
                        .and_then(|()| self.crosses_prepared(&p.changes, None));
                    if let Err(e) = checked {
                        out.push((ticket, Err(e), None));
                        continue;
                    }
                }
                if let Some((snapshot_lsn, reads)) = &p.validate
                    && conflicts(
                        *snapshot_lsn,
                        reads,
                        recent.iter().chain(accepted.iter()).chain(prepared.iter()),
                    )
                {
                    out.push((ticket, Err(serialization_failure()), None));
                    continue;
                }
                lsn += 1;
                txn_id += 1;
                let summary = CommitSummary::of(lsn, &p.changes);
                let record = ChangeRecord {
                    lsn,
                    txn_id,
                    commit_ts: self.hlc.now(),
                    origin: self.origin,
                    changes: p.changes,
                };
                let mut writes = vec![Redo::Commit(record)];
                if let Some(id) = p.prepared {
                    writes.push(Redo::Unprepare(id));
                }
                if let Some(id) = p.decides {
                    writes.push(Redo::Decide { id, commit: true });
                }
                for write in writes {
                    apply_redo(&txn, &write)?;
                    redo.push(write);
                }
                accepted.push(summary.clone());
                out.push((ticket, Ok(lsn), Some(summary)));
            }
            // Last: a step queued before a forget (an in-doubt resolver's decide of the same
            // transaction) must still find the record.
            if !forgotten.is_empty() {
                let write = Redo::Forget(forgotten.clone());
                apply_redo(&txn, &write)?;
                redo.push(write);
            }
            let write = Redo::TxnCounter(txn_id);
            apply_redo(&txn, &write)?;
            redo.push(write);
            self.trim_log(&txn, lsn)?;
            // A batch of forgets and discards only (which a crash may lose) rides on the
            // next synced entry.
            journal_and_commit(txn, journal.as_deref_mut(), checkpoint, &redo, durable, ddl)?;
            Ok((out, synced_commit))
        })();
        match written {
            Ok((out, synced_commit)) => {
                self.batches.fetch_add(1, Ordering::Relaxed);
                if synced_commit {
                    // A copy promoted to primary: its first synced batch covers what it
                    // applied as a replica.
                    self.note_synced();
                }
                let mut last = None;
                let mut outcomes = Vec::with_capacity(out.len());
                for (ticket, result, summary) in out {
                    if let Some(s) = summary {
                        last = Some(s.lsn);
                        recent.push_back(s);
                        if recent.len() > RECENT_COMMITS {
                            recent.pop_front();
                        }
                    }
                    outcomes.push((ticket, result));
                }
                if let Some(lsn) = last {
                    self.lsn.send_replace(lsn);
                }
                outcomes
            }
            Err(e) => {
                // The next batch deletes them (deleting one already gone is harmless).
                if let Ok(mut f) = self.forgotten.lock() {
                    f.extend(forgotten);
                }
                // A failed redb commit may still be on disk: report the outcome as unknown,
                // never as a clean rollback.
                let e = Error::new(&e.code, format!("commit outcome unknown: {}", e.message));
                tickets.into_iter().map(|t| (t, Err(e.clone()))).collect()
            }
        }
    }

    /// A redb write transaction; `durable: false` skips the fsync even where commits sync.
    fn begin_write(&self, durable: bool) -> Result<ShardWrite<'_>> {
        let mut txn = self.db.begin_write().map_err(storage_err)?;
        let durability = if self.opts.sync_commits && durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        txn.set_durability(durability).map_err(storage_err)?;
        Ok(ShardWrite { txn, shard: self })
    }

    /// Drops change-log records older than the retention window, a run of them at a time:
    /// trimming one record per commit rewrote the log's first leaf and its branch pages (and
    /// the `state` page) in every commit; waiting until a 64th of the window is due spreads
    /// that over many commits. Keeping a few more records than `log_retain` is harmless.
    ///
    /// The log is also bounded in bytes: once its records hold more than `log_retain_bytes`,
    /// the oldest go until they hold half of that, sparing the newest `LOG_KEPT_BY_BYTES`
    /// (a replica streaming the log reads them from here). *Why:* a COPY or a table rewrite
    /// is one record of tens to hundreds of megabytes, and a count of records alone kept
    /// each of them until 100 000 small commits followed: a data directory used for a few
    /// rounds of `pgbench -i -s 10` and TPC-B held up to a gigabyte of log per shard copy
    /// for 26 MB of rows. A subscriber that needs a trimmed record gets a snapshot, as with
    /// the count.
    fn trim_log(&self, txn: &WriteTransaction, lsn: u64) -> Result<()> {
        let slack = (self.opts.log_retain / 64).max(1);
        let by_count = lsn.saturating_sub(self.opts.log_retain);
        let count_due =
            by_count > 0 && by_count >= self.log_start.load(Ordering::Relaxed) + slack - 1;
        let mut state = txn.open_table(STATE).map_err(storage_err)?;
        let mut log_bytes = state
            .get(STATE_LOG_BYTES)
            .map_err(storage_err)?
            .map_or(0, |b| b.value());
        let budget = self.opts.log_retain_bytes;
        let over_budget = log_bytes > budget;
        if !count_due && !over_budget {
            return Ok(());
        }
        let cutoff = if count_due { by_count } else { 0 };
        let byte_floor = lsn.saturating_sub(LOG_KEPT_BY_BYTES);
        if count_due {
            // Set before the commit: if it fails the hint is ahead of the log for a while,
            // and the next trim (which pops everything up to its cutoff) catches up.
            self.log_start.fetch_max(cutoff + 1, Ordering::Relaxed);
        }
        let mut log = txn.open_table(CHANGELOG).map_err(storage_err)?;
        let mut new_start = None;
        loop {
            let Some((first, len)) = log
                .first()
                .map_err(storage_err)?
                .map(|(k, v)| (k.value(), v.value().len() as u64))
            else {
                break;
            };
            let by_bytes = over_budget && log_bytes > budget / 2 && first <= byte_floor;
            if first > cutoff && !by_bytes {
                break;
            }
            log.pop_first().map_err(storage_err)?;
            log_bytes = log_bytes.saturating_sub(len);
            new_start = Some(first + 1);
        }
        drop(log);
        if let Some(start) = new_start {
            state.insert(STATE_LOG_START, start).map_err(storage_err)?;
            state
                .insert(STATE_LOG_BYTES, log_bytes)
                .map_err(storage_err)?;
            self.log_start.fetch_max(start, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The highest placement epoch recorded for this copy.
    pub fn placement_epoch(&self) -> u64 {
        self.placement_epoch.load(Ordering::SeqCst)
    }

    /// Records, durably, that this node holds the copy under placement `epoch`. A node deletes
    /// a copy the map no longer places on it only when the map's epoch for the shard is
    /// newer than this: a stale map (from a lagging meta voter) never deletes a live copy.
    pub fn record_placement_epoch(&self, epoch: u64) -> Result<()> {
        if epoch <= self.placement_epoch() {
            return Ok(());
        }
        let mut journal = self.lock_journal()?;
        let txn = self.begin_write(true)?;
        txn.open_table(STATE)
            .map_err(storage_err)?
            .insert(STATE_PLACEMENT_EPOCH, epoch)
            .map_err(storage_err)?;
        journal_and_commit(txn, journal.as_deref_mut(), true, &[], true, false)?;
        self.placement_epoch.fetch_max(epoch, Ordering::SeqCst);
        Ok(())
    }

    /// Holds this replica's applying at `lsn` (or lifts the hold with `None`); a hold lapses
    /// by itself after `APPLY_HOLD`.
    pub fn hold_apply(&self, lsn: Option<u64>) {
        if let Ok(mut h) = self.apply_hold.lock() {
            *h = lsn.map(|l| (l, std::time::Instant::now() + APPLY_HOLD));
        }
    }

    /// The highest LSN the replica may apply now, if a hold is in force.
    pub fn apply_limit(&self) -> Option<u64> {
        let mut h = self.apply_hold.lock().ok()?;
        match *h {
            Some((lsn, until)) if std::time::Instant::now() < until => Some(lsn),
            Some(_) => {
                *h = None;
                None
            }
            None => None,
        }
    }

    /// Applies records received from the upstream, in LSN order, skipping ones already
    /// applied; a gap is an error (the subscriber then resubscribes).
    ///
    /// `durable: false` skips the fsync: a crash then takes this copy back to its last
    /// durable LSN, records and `state.lsn` together, and it subscribes again from there, so
    /// nothing is skipped or applied twice. Commits are asynchronous, so a replica's fsync
    /// is on no client's path; the follower syncs every few milliseconds instead of once per
    /// batch, and whatever must rely on the copy's position (a move's switch) reads the
    /// durable one (`stats`).
    pub fn apply(&self, records: &[ChangeRecord], durable: bool) -> Result<u64> {
        let _writer = self
            .write_lock
            .lock()
            .map_err(|_| Error::internal("shard writer lock poisoned"))?;
        let mut lsn = self.lsn();
        let fresh: Vec<&ChangeRecord> = records.iter().filter(|r| r.lsn > lsn).collect();
        if fresh.is_empty() {
            if durable {
                return self.flush_locked().map(|()| lsn);
            }
            return Ok(lsn);
        }
        // Journaled as a primary's batches are (taken before redb's writer, as there), but
        // synced only when asked: `flush` syncs the journal later.
        let mut journal = self.lock_journal()?;
        let checkpoint = journal.as_ref().is_some_and(|j| j.checkpoint_due());
        let synced_commit = if journal.is_some() {
            checkpoint
        } else {
            durable
        };
        let durable = durable || synced_commit;
        if !durable {
            // Before the commit makes the records visible: `stats` must never see them
            // without knowing they are not yet durable.
            self.note_unsynced(lsn);
        }
        let ddl = fresh.iter().any(|r| has_ddl(&r.changes));
        let txn = self.begin_write(synced_commit)?;
        let mut redo = Vec::with_capacity(fresh.len() + 1);
        let mut txn_id = None;
        for record in fresh {
            expect_next_lsn(lsn, record.lsn, || {
                format!("change log of shard {}", self.id)
            })?;
            self.hlc.observe(record.commit_ts);
            let write = Redo::Commit(record.clone());
            apply_redo(&txn, &write)?;
            redo.push(write);
            lsn = record.lsn;
            txn_id = Some(record.txn_id);
        }
        if let Some(id) = txn_id {
            let write = Redo::TxnCounter(id);
            apply_redo(&txn, &write)?;
            redo.push(write);
        }
        self.trim_log(&txn, lsn)?;
        journal_and_commit(txn, journal.as_deref_mut(), checkpoint, &redo, durable, ddl)?;
        if durable {
            self.note_synced();
        }
        self.lsn.send_replace(lsn);
        Ok(lsn)
    }

    /// The journal, locked (before redb's writer: every journaled write takes them in that
    /// order).
    fn lock_journal(&self) -> Result<Option<std::sync::MutexGuard<'_, Journal>>> {
        self.journal
            .as_ref()
            .map(|j| j.lock())
            .transpose()
            .map_err(|_| Error::internal("journal poisoned"))
    }

    /// Makes every record applied without an fsync durable: a sync of the journal they are
    /// in (or, without one, an empty synced write).
    pub fn flush(&self) -> Result<()> {
        let _writer = self
            .write_lock
            .lock()
            .map_err(|_| Error::internal("shard writer lock poisoned"))?;
        self.flush_locked()
    }

    fn flush_locked(&self) -> Result<()> {
        if !self.unflushed() {
            return Ok(());
        }
        // Everything applied unsynced is in the journal: syncing it is enough.
        let mut journal = self.lock_journal()?;
        if let Some(j) = journal.as_mut()
            && !j.is_broken()
        {
            j.sync()?;
            drop(journal);
            self.note_synced();
            return Ok(());
        }
        // No journal, or one that failed (after a failed fdatasync the kernel may have
        // dropped the pages it could not write, so syncing again proves nothing).
        let txn = self.begin_write(true)?;
        // A synced commit makes the unsynced ones before it durable; rewriting the LSN it
        // stands at gives it something to write.
        {
            let mut state = txn.open_table(STATE).map_err(storage_err)?;
            let lsn = state
                .get(STATE_LSN)
                .map_err(storage_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            state.insert(STATE_LSN, lsn).map_err(storage_err)?;
        }
        journal_and_commit(txn, journal.as_deref_mut(), true, &[], true, false)?;
        self.note_synced();
        Ok(())
    }

    /// True while some applied records are not yet durable.
    pub fn unflushed(&self) -> bool {
        self.durable_behind
            .lock()
            .map(|d| d.is_some())
            .unwrap_or(true)
    }

    /// An unsynced commit is about to land on top of `on_disk`: unless an earlier one is
    /// still unsynced, `on_disk` is the durable position until the next synced commit.
    /// (Pessimistic if that commit then fails: the next sync clears it.)
    fn note_unsynced(&self, on_disk: u64) {
        // Without synced commits (tests, benchmarks that opt out) nothing is ever more
        // durable than it is now.
        if !self.opts.sync_commits {
            return;
        }
        if let Ok(mut behind) = self.durable_behind.lock()
            && behind.is_none()
        {
            *behind = Some(on_disk);
        }
    }

    /// A synced commit landed: everything before it is durable.
    fn note_synced(&self) {
        if let Ok(mut behind) = self.durable_behind.lock() {
            *behind = None;
        }
    }

    /// Starts replacing this replica's whole contents with an upstream snapshot.
    pub fn begin_snapshot(&self, tables: &[TableSchema]) -> Result<SnapshotLoad<'_>> {
        let journal = self.lock_journal()?;
        let txn = self.begin_write(true)?;
        {
            let mut catalog = txn.open_table(CATALOG).map_err(storage_err)?;
            let old: Vec<String> = catalog
                .range::<&str>(..)
                .map_err(storage_err)?
                .map(|e| e.map(|(k, _)| k.value().to_string()))
                .collect::<std::result::Result<_, _>>()
                .map_err(storage_err)?;
            for name in old {
                if let Some(bytes) = catalog.get(name.as_str()).map_err(storage_err)? {
                    index::drop_indexes(&txn, &storage::decode_schema(bytes.value())?)?;
                }
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
        Ok(SnapshotLoad {
            shard: self,
            txn,
            journal,
        })
    }

    /// Row counts and log positions.
    pub fn stats(&self) -> Result<ShardStats> {
        let snap = self.snapshot()?;
        let mut rows = 0;
        for schema in snap.schemas()? {
            rows += snap.row_count(&schema.name)?;
        }
        let bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        // Read after the snapshot: an unsynced apply marks itself before it is visible, so
        // a snapshot that sees it also sees the mark.
        let lsn = snap.state(STATE_LSN)?;
        let durable_lsn = match self.durable_behind.lock().ok().and_then(|d| *d) {
            Some(on_disk) => on_disk.min(lsn),
            None => lsn,
        };
        let log_start = snap.state(STATE_LOG_START)?.max(1).min(lsn);
        Ok(ShardStats {
            shard: self.id,
            rows,
            lsn,
            durable_lsn,
            log_start,
            bytes,
            primary: false,
            epoch: 0,
            frozen: false,
            sealed: false,
            open_txns: 0,
            writers: 0,
            prepared: self.prepared.lock().map(|p| p.len() as u64).unwrap_or(0),
            snapshots_installed: self.snapshots_installed.load(Ordering::Relaxed),
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
    txn: ShardWrite<'a>,
    /// Held to the end: its commit is a checkpoint (see `journal_and_commit`).
    journal: Option<std::sync::MutexGuard<'a, Journal>>,
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
            // Indexes are not shipped: each replica builds its own from the rows.
            let catalog = self.txn.open_table(CATALOG).map_err(storage_err)?;
            for entry in catalog.range::<&str>(..).map_err(storage_err)? {
                let (_, v) = entry.map_err(storage_err)?;
                index::build_indexes(&self.txn, &storage::decode_schema(v.value())?)?;
            }
        }
        {
            let mut state = self.txn.open_table(STATE).map_err(storage_err)?;
            state.insert(STATE_LSN, lsn).map_err(storage_err)?;
            state
                .insert(STATE_LOG_START, lsn + 1)
                .map_err(storage_err)?;
            state.insert(STATE_LOG_BYTES, 0).map_err(storage_err)?;
        }
        let mut journal = self.journal;
        journal_and_commit(self.txn, journal.as_deref_mut(), true, &[], true, true)?;
        self.shard.log_start.store(lsn + 1, Ordering::Relaxed);
        self.shard.note_synced();
        self.shard.lsn.send_replace(lsn);
        self.shard
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
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

/// Writes one two-phase-commit step of a group-commit batch. A storage failure fails the
/// whole batch when it commits, so only the outcome is per step.
/// Ends a journaled write transaction: records in it which journal entry the file now holds,
/// appends its writes to the journal (synced if `sync`) unless it is a checkpoint, then
/// commits it, durably at a checkpoint, after which the journal starts over. The entry is
/// on disk before redb's commit makes the writes visible, so no reader sees a write a crash
/// could take back. Without a journal it only commits.
///
/// Every durable commit of a copy with a journal must come through here as a checkpoint
/// (`txn` begun durable, the journal locked before it): one that did not would leave
/// `state.journal` behind a failed append, which replay would then apply onto a file that
/// has moved on.
fn journal_and_commit(
    txn: ShardWrite<'_>,
    journal: Option<&mut Journal>,
    checkpoint: bool,
    redo: &[Redo],
    sync: bool,
    ddl: bool,
) -> Result<()> {
    let Some(journal) = journal else {
        return txn.commit(ddl);
    };
    // The entry this becomes (`append` numbers it so), or at a checkpoint every number
    // handed out so far, a failed append's included.
    let covered = if checkpoint {
        journal.next_seq() - 1
    } else {
        journal.next_seq()
    };
    txn.open_table(STATE)
        .map_err(storage_err)?
        .insert(STATE_JOURNAL, covered)
        .map_err(storage_err)?;
    if !checkpoint {
        journal.append(redo, sync)?;
    }
    match txn.commit(ddl) {
        Ok(()) => {
            if checkpoint {
                journal.checkpointed();
            }
            Ok(())
        }
        Err(e) => {
            // The entry may be on disk while its writes are not in redb: nothing may be
            // built on top of it until a checkpoint covers its number.
            journal.poison();
            Err(e)
        }
    }
}

/// Writes a two-phase-commit step, adding what it wrote to `redo`; returns its outcome.
fn write_step(txn: &WriteTransaction, step: Step, redo: &mut Vec<Redo>) -> Result<u64> {
    let (write, outcome) = match step {
        Step::Prepare {
            id,
            record,
            schemas,
        } => {
            check_schemas(txn, &schemas)?;
            (Some(Redo::Prepare { id, record }), 0)
        }
        Step::Decide { id, commit } => {
            let existing = txn
                .open_table(DECISIONS)
                .map_err(storage_err)?
                .get(id)
                .map_err(storage_err)?
                .map(|v| v.value() == 1);
            match existing {
                Some(decided) => (None, decided as u64),
                None => (Some(Redo::Decide { id, commit }), commit as u64),
            }
        }
        // The queued forgets were written with the batch (`write_batch`).
        Step::Forget => (None, 0),
        Step::Discard(id) => (Some(Redo::Unprepare(id)), 0),
    };
    if let Some(write) = write {
        apply_redo(txn, &write)?;
        redo.push(write);
    }
    Ok(outcome)
}

/// Makes one of a journaled write's writes (a group-commit batch's, a replica's apply).
/// Every write they make to rows, the change log, `prepared`, `decisions` and `state.txn`
/// goes through here, and replaying a journal entry calls it again with the same `Redo`s in
/// the same order (trimming the change log is not journaled: replay leaves it longer).
fn apply_redo(txn: &WriteTransaction, write: &Redo) -> Result<()> {
    match write {
        Redo::Commit(record) => write_record(txn, record)?,
        Redo::Prepare { id, record } => {
            txn.open_table(PREPARED)
                .map_err(storage_err)?
                .insert(*id, record.as_slice())
                .map_err(storage_err)?;
        }
        Redo::Unprepare(id) => {
            txn.open_table(PREPARED)
                .map_err(storage_err)?
                .remove(*id)
                .map_err(storage_err)?;
        }
        Redo::Decide { id, commit } => {
            txn.open_table(DECISIONS)
                .map_err(storage_err)?
                .insert(*id, *commit as u8)
                .map_err(storage_err)?;
        }
        Redo::Forget(ids) => {
            let mut decisions = txn.open_table(DECISIONS).map_err(storage_err)?;
            for id in ids {
                decisions.remove(id).map_err(storage_err)?;
            }
        }
        Redo::TxnCounter(id) => {
            txn.open_table(STATE)
                .map_err(storage_err)?
                .insert(STATE_TXN, *id)
                .map_err(storage_err)?;
        }
    }
    Ok(())
}

/// Opens a shard file's journal and replays the entries its last durable commit does not
/// cover, in one synced redb commit; the journal then starts a new run.
fn replay_journal(db: &Database, path: &Path, shard: ShardId) -> Result<Journal> {
    let (incarnation, covered, mut lsn) = {
        let read = redb::ReadableDatabase::begin_read(db).map_err(storage_err)?;
        let state = read.open_table(STATE).map_err(storage_err)?;
        let get = |key: &str| -> Result<u64> {
            Ok(state
                .get(key)
                .map_err(storage_err)?
                .map_or(0, |v| v.value()))
        };
        (get(STATE_JOURNAL_ID)?, get(STATE_JOURNAL)?, get(STATE_LSN)?)
    };
    let (mut journal, entries) = Journal::open(&journal::path_for(path), incarnation)?;
    let run = journal::to_replay(entries, covered)?;
    let last = run.last().map_or(covered, |e| e.seq);
    if !run.is_empty() {
        let txn = db.begin_write().map_err(storage_err)?;
        for entry in &run {
            for write in &entry.redo()? {
                if let Redo::Commit(record) = write {
                    // The entry was made on top of exactly this file's state; anything
                    // else is a journal that does not belong to it.
                    expect_next_lsn(lsn, record.lsn, || {
                        format!("journal of shard {shard}, entry {}", entry.seq)
                    })?;
                    lsn = record.lsn;
                }
                apply_redo(&txn, write)?;
            }
        }
        txn.open_table(STATE)
            .map_err(storage_err)?
            .insert(STATE_JOURNAL, last)
            .map_err(storage_err)?;
        txn.commit().map_err(storage_err)?;
        tracing::info!(
            shard,
            entries = run.len(),
            lsn,
            "replayed the journal past the last checkpoint"
        );
    }
    journal.continue_after(last);
    journal.checkpointed();
    Ok(journal)
}

/// Adds to a commit's validation the tables it redefined, as read since `ddl_snapshot`: a
/// concurrent write to them (a row a new unique index did not see, a row in the old layout)
/// fails the DDL with 40001 instead of committing beside it.
fn with_ddl_validation(
    validate: Option<(u64, ReadSet)>,
    ddl_snapshot: Option<u64>,
    changes: &[Change],
) -> Option<(u64, ReadSet)> {
    let Some(since) = ddl_snapshot else {
        return validate;
    };
    let (lsn, mut reads) = validate.unwrap_or((since, ReadSet::default()));
    for t in ddl_tables(changes) {
        reads.tables.insert(t.to_string());
    }
    Some((lsn.min(since), reads))
}

/// The table a change is about.
fn change_table(c: &Change) -> &str {
    match c {
        Change::Put { table, .. } | Change::Delete { table, .. } => table,
        Change::CreateTable { schema } | Change::AlterTable { schema } => &schema.name,
        Change::DropTable { name } => name,
    }
}

/// Tables whose definition the changes create, alter or drop.
fn ddl_tables(changes: &[Change]) -> Vec<&str> {
    let mut out: Vec<&str> = changes
        .iter()
        .filter(|c| is_ddl(c))
        .map(change_table)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// 40001 unless every table still has the committed definition a transaction made its
/// changes against: rows and index entries computed for another layout must not land.
/// DATA_CORRUPTED unless `got` is the LSN right after `have` (records apply in order, with
/// no gap); `source` names where the record came from.
fn expect_next_lsn(have: u64, got: u64, source: impl FnOnce() -> String) -> Result<()> {
    if got == have + 1 {
        return Ok(());
    }
    Err(Error::new(
        sqlstate::DATA_CORRUPTED,
        format!("{}: LSN {got} does not follow LSN {have}", source()),
    ))
}

fn check_schemas(txn: &WriteTransaction, schemas: &[(String, Vec<u8>)]) -> Result<()> {
    if schemas.is_empty() {
        return Ok(());
    }
    let catalog = txn.open_table(CATALOG).map_err(storage_err)?;
    for (name, bytes) in schemas {
        let same = catalog
            .get(name.as_str())
            .map_err(storage_err)?
            .is_some_and(|v| v.value() == bytes.as_slice());
        if !same {
            return Err(Error::new(
                sqlstate::SERIALIZATION_FAILURE,
                format!(
                    "could not serialize access: table \"{name}\" was altered by a concurrent transaction"
                ),
            ));
        }
    }
    Ok(())
}

/// A SQL table's rows, open in a write transaction.
type RowTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// Applies a record's changes and appends it to the change log, in the caller's transaction.
fn write_record(txn: &WriteTransaction, record: &ChangeRecord) -> Result<()> {
    let mut catalog = txn.open_table(CATALOG).map_err(storage_err)?;
    let mut indexes = index::Upkeep::default();
    let schema_of =
        |catalog: &redb::Table<&str, &[u8]>, name: &str| -> Result<Option<TableSchema>> {
            match catalog.get(name).map_err(storage_err)? {
                Some(bytes) => Ok(Some(storage::decode_schema(bytes.value())?)),
                None => Ok(None),
            }
        };
    // The data table the last row change opened, kept open while changes stay on it: a
    // large record (a COPY, a table rewrite) is a long run of rows of one table, and opening
    // the table for each row was a tenth of applying it. Closed before any DDL, which may
    // drop or redefine it.
    let mut open: Option<(&str, RowTable)> = None;
    for change in &record.changes {
        let rows_of = match change {
            Change::Put { table, .. } | Change::Delete { table, .. } => Some(table.as_str()),
            _ => None,
        };
        match (rows_of, &open) {
            (Some(table), Some((name, _))) if *name == table => {}
            (Some(table), _) => {
                drop(open.take());
                let name = storage::data_table_name(table);
                let t = txn
                    .open_table(storage::data_table(&name))
                    .map_err(storage_err)?;
                open = Some((table, t));
            }
            (None, _) => open = None,
        }
        match change {
            Change::Put { table, key, row } => {
                let Some((_, t)) = open.as_mut() else {
                    return Err(Error::internal("row change without its table"));
                };
                let old = t
                    .insert(key.as_slice(), row.as_slice())
                    .map_err(storage_err)?;
                if indexes.tracks(&catalog, table)? {
                    let old = old.map(|g| g.value().to_vec());
                    indexes.put(txn, &catalog, table, key, old.as_deref(), row)?;
                }
            }
            Change::Delete { table, key } => {
                let Some((_, t)) = open.as_mut() else {
                    return Err(Error::internal("row change without its table"));
                };
                let old = t.remove(key.as_slice()).map_err(storage_err)?;
                if indexes.tracks(&catalog, table)? {
                    let old = old.map(|g| g.value().to_vec());
                    indexes.delete(txn, &catalog, table, key, old.as_deref())?;
                }
            }
            Change::CreateTable { schema } => {
                create_table(&mut catalog, txn, schema)?;
                indexes.redefine(txn, None, Some(schema))?;
            }
            Change::AlterTable { schema } => {
                let old = schema_of(&catalog, &schema.name)?;
                catalog
                    .insert(schema.name.as_str(), frame::encode(schema)?.as_slice())
                    .map_err(storage_err)?;
                indexes.redefine(txn, old.as_ref(), Some(schema))?;
            }
            Change::DropTable { name } => {
                let old = schema_of(&catalog, name)?;
                catalog.remove(name.as_str()).map_err(storage_err)?;
                let table = storage::data_table_name(name);
                txn.delete_table(storage::data_table(&table))
                    .map_err(storage_err)?;
                indexes.redefine(txn, old.as_ref(), None)?;
            }
        }
    }
    drop(open);
    drop(catalog);
    indexes.finish(txn)?;
    let bytes = frame::encode(record)?;
    let replaced = txn
        .open_table(CHANGELOG)
        .map_err(storage_err)?
        .insert(record.lsn, bytes.as_slice())
        .map_err(storage_err)?
        .map_or(0, |old| old.value().len() as u64);
    let mut state = txn.open_table(STATE).map_err(storage_err)?;
    state.insert(STATE_LSN, record.lsn).map_err(storage_err)?;
    let log_bytes = state
        .get(STATE_LOG_BYTES)
        .map_err(storage_err)?
        .map_or(0, |b| b.value());
    state
        .insert(
            STATE_LOG_BYTES,
            (log_bytes + bytes.len() as u64).saturating_sub(replaced),
        )
        .map_err(storage_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use protocol::Value;
    use protocol::clock::{Hlc, SystemClock};

    use super::*;

    fn shard(name: &str) -> (Arc<Shard>, PathBuf) {
        shard_with(
            name,
            ShardOptions {
                log_retain: 1000,
                log_retain_bytes: 64 << 20,
                sync_commits: false,
                ..ShardOptions::default()
            },
        )
    }

    fn shard_with(name: &str, opts: ShardOptions) -> (Arc<Shard>, PathBuf) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "tessera-shard-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
        (
            Arc::new(Shard::open(&dir.join("s.redb"), 0, 1, hlc, opts).unwrap()),
            dir,
        )
    }

    fn run(s: &Shard, sql: &str) -> QueryResult {
        let stmt = sql::parse(sql).unwrap().remove(0);
        s.execute(&stmt, &[]).unwrap()
    }

    /// A prepared point read keeps its bound plan while the catalog stamp stands, and binds
    /// again after a table is redefined, on the primary (a commit), on a replica (an apply)
    /// and on a copy filled by snapshot installs: a plan kept across the redefinition would
    /// read the old column position.
    #[test]
    fn prepared_point_reads_rebind_after_a_table_is_redefined() {
        let (primary, dir) = shard("stamp-primary");
        let (replica, dir2) = shard("stamp-replica");
        let (installed, dir3) = shard("stamp-installed");
        let read = sql::parse("SELECT v FROM t WHERE k = $1")
            .unwrap()
            .remove(0);
        let (on_primary, on_replica) = (ReadPlans::default(), ReadPlans::default());
        let on_installed = ReadPlans::default();
        let value = |s: &Shard, plans: &ReadPlans| {
            let r = s.read_points(&read, &[Value::Int(1)], Some(plans)).unwrap();
            r.expect("a point read").rows
        };
        let ship = |from: u64| {
            let records = primary
                .snapshot()
                .unwrap()
                .changes_after(from, 100)
                .unwrap();
            replica.apply(&records, false).unwrap();
        };
        // A copy filled by snapshot installs, as a replica too far behind the log is.
        let install = || {
            let snap = primary.snapshot().unwrap();
            let schemas = snap.schemas().unwrap();
            let mut load = installed.begin_snapshot(&schemas).unwrap();
            for s in &schemas {
                let rows: Vec<(Vec<u8>, Vec<u8>)> = snap
                    .raw_rows(&s.name)
                    .unwrap()
                    .collect::<Result<_>>()
                    .unwrap();
                load.rows(&s.name, &rows).unwrap();
            }
            load.finish(primary.lsn()).unwrap();
        };
        run(&primary, "CREATE TABLE t (k INT PRIMARY KEY, v INT)");
        run(&primary, "INSERT INTO t VALUES (1, 10)");
        ship(0);
        install();
        for _ in 0..3 {
            assert_eq!(value(&primary, &on_primary), vec![vec![Value::Int(10)]]);
            assert_eq!(value(&replica, &on_replica), vec![vec![Value::Int(10)]]);
            assert_eq!(value(&installed, &on_installed), vec![vec![Value::Int(10)]]);
        }
        // Quiet copies stamp their snapshots (else the shortcut would never be taken).
        assert!(primary.stamped_snapshot().unwrap().1.is_some());
        assert!(replica.stamped_snapshot().unwrap().1.is_some());
        let before = primary.lsn();
        run(&primary, "DROP TABLE t");
        run(&primary, "CREATE TABLE t (k INT PRIMARY KEY, x INT, v INT)");
        run(&primary, "INSERT INTO t VALUES (1, 5, 20)");
        ship(before);
        install();
        assert_eq!(value(&primary, &on_primary), vec![vec![Value::Int(20)]]);
        assert_eq!(value(&replica, &on_replica), vec![vec![Value::Int(20)]]);
        assert_eq!(value(&installed, &on_installed), vec![vec![Value::Int(20)]]);
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(dir2);
        let _ = std::fs::remove_dir_all(dir3);
    }

    /// Point reads share one snapshot between writes: every kind of write (an autocommit
    /// statement, a transaction's commit, a prepared transaction's finish, a replica's
    /// apply) must retire it, or the next read returns the value from before the write.
    #[test]
    fn a_point_read_after_any_write_sees_it() {
        let (s, dir) = shard("shared-primary");
        let (replica, dir2) = shard("shared-replica");
        let read = sql::parse("SELECT v FROM t WHERE k = 1").unwrap().remove(0);
        let value = |s: &Shard| {
            let r = s.read_points(&read, &[], None).unwrap();
            r.expect("a point read").rows
        };
        let in_txn = |id: TxnId, sql: &str| {
            let mut t = s.begin(id, Isolation::ReadCommitted, false, None);
            let stmt = sql::parse(sql).unwrap().remove(0);
            s.execute_in(&mut t, &stmt, &[]).unwrap();
            t
        };
        run(&s, "CREATE TABLE t (k INT PRIMARY KEY, v INT)");
        run(&s, "INSERT INTO t VALUES (1, 1)");
        assert_eq!(value(&s), vec![vec![Value::Int(1)]]);
        run(&s, "UPDATE t SET v = 2 WHERE k = 1");
        assert_eq!(value(&s), vec![vec![Value::Int(2)]]);
        s.commit(in_txn(11, "UPDATE t SET v = 3 WHERE k = 1"))
            .unwrap();
        assert_eq!(value(&s), vec![vec![Value::Int(3)]]);
        s.prepare(in_txn(12, "UPDATE t SET v = 4 WHERE k = 1"), 0, 0)
            .unwrap();
        assert_eq!(value(&s), vec![vec![Value::Int(3)]]);
        s.finish_prepared(12, true).unwrap();
        assert_eq!(value(&s), vec![vec![Value::Int(4)]]);
        // An increment reads the newest version through the shared snapshot too.
        run(&s, "UPDATE t SET v = v + 1 WHERE k = 1");
        assert_eq!(value(&s), vec![vec![Value::Int(5)]]);
        let mut shipped = 0;
        for _ in 0..2 {
            let records = s.snapshot().unwrap().changes_after(shipped, 100).unwrap();
            shipped = replica.apply(&records, false).unwrap();
            assert_eq!(value(&replica), value(&s));
            run(&s, "UPDATE t SET v = v * 10 WHERE k = 1");
        }
        assert_eq!(value(&replica), vec![vec![Value::Int(50)]]);
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(dir2);
    }

    /// A file whose creation a crash cut short (redb's magic still zero) is created again;
    /// a file with any other damage is refused, never replaced.
    #[test]
    fn half_created_file_is_recreated_but_damaged_one_refused() {
        let (s, dir) = shard("halfcreated");
        drop(s);
        let path = dir.join("half.redb");
        let mut bytes = vec![0u8; 4096];
        bytes[9..13].copy_from_slice(&[0, 4, 0, 0]);
        std::fs::write(&path, &bytes).unwrap();
        let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
        let opened = Shard::open(&path, 0, 1, hlc.clone(), ShardOptions::default()).unwrap();
        run(&opened, "CREATE TABLE t (k int PRIMARY KEY)");
        drop(opened);
        let damaged = dir.join("damaged.redb");
        bytes[0] = b'x';
        std::fs::write(&damaged, &bytes).unwrap();
        assert!(Shard::open(&damaged, 0, 1, hlc, ShardOptions::default()).is_err());
        assert!(damaged.exists(), "a damaged file is left for the operator");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// READ COMMITTED increments from many threads: each waits for the row lock and re-reads
    /// the newest version, so none is lost or applied twice; group commit batches them.
    #[test]
    fn concurrent_increments_are_exact() {
        let (s, dir) = shard("incr");
        run(&s, "CREATE TABLE c (id int PRIMARY KEY, n bigint)");
        run(&s, "INSERT INTO c VALUES (1, 0)");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        assert_eq!(run(&s, "UPDATE c SET n = n + 1 WHERE id = 1").affected, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let r = run(&s, "SELECT n FROM c WHERE id = 1");
        assert_eq!(r.rows, vec![vec![Value::Int(1600)]]);
        assert_eq!(
            s.lsn(),
            2 + 1600,
            "one change record per committed statement"
        );
        assert_eq!(s.locked_rows(), 0, "every lock released");
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Writers racing on a UNIQUE column never both commit a value, and the index stays the
    /// same as the rows say (an index lookup answers like a full scan).
    #[test]
    fn concurrent_unique_inserts_keep_values_unique_and_index_exact() {
        let (s, dir) = shard("uniq");
        run(
            &s,
            "CREATE TABLE u (id int PRIMARY KEY, v int UNIQUE, w int)",
        );
        run(&s, "CREATE INDEX u_w ON u (w)");
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut won = 0;
                    for i in 0..60 {
                        let id = t * 1000 + i;
                        let v = (i * 7 + t * 3) % 50;
                        let sql = format!("INSERT INTO u VALUES ({id}, {v}, {})", id % 10);
                        let stmt = sql::parse(&sql).unwrap().remove(0);
                        match s.execute(&stmt, &[]) {
                            Ok(_) => won += 1,
                            Err(e) => assert_eq!(e.code, "23505", "{e}"),
                        }
                        if i % 10 == 0 {
                            let stmt =
                                sql::parse(&format!("UPDATE u SET w = w + 1 WHERE id = {id}"))
                                    .unwrap()
                                    .remove(0);
                            s.execute(&stmt, &[]).unwrap();
                        }
                    }
                    won
                })
            })
            .collect();
        let won: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let rows = run(&s, "SELECT count(*), count(DISTINCT v) FROM u");
        assert_eq!(rows.rows, vec![vec![Value::Int(won), Value::Int(won)]]);
        assert_eq!(won, 50, "every value 0..50 was inserted exactly once");
        for k in 0..12 {
            let by_index = run(&s, &format!("SELECT id FROM u WHERE w = {k} ORDER BY id"));
            let by_scan = run(
                &s,
                &format!("SELECT id FROM u WHERE w + 0 = {k} ORDER BY id"),
            );
            assert_eq!(by_index.rows, by_scan.rows, "index on w, value {k}");
        }
        assert_eq!(s.locked_rows(), 0, "every lock released");
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A shard copy whose commits sync (through its journal).
    fn journaled(name: &str) -> (Shard, PathBuf) {
        let (unsynced, dir) = shard(name);
        drop(unsynced);
        let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
        let opts = ShardOptions {
            log_retain: 1000,
            log_retain_bytes: 64 << 20,
            sync_commits: true,
            ..ShardOptions::default()
        };
        (
            Shard::open(&dir.join("s.redb"), 0, 1, hlc, opts).unwrap(),
            dir,
        )
    }

    /// A replica's unsynced applies go to its journal too; a flush syncs the journal, and a
    /// crash after it keeps them although the redb file never saw a synced commit.
    #[test]
    fn a_replica_applies_into_its_journal_and_a_flush_syncs_it() {
        let (primary, upstream) = shard("journal-upstream");
        table_of(&primary, 5);
        let records = primary.snapshot().unwrap().changes_after(0, 100).unwrap();
        assert_eq!(records.len(), 6);
        let (replica, dir) = journaled("journal-replica");
        replica.apply(&records[..3], false).unwrap();
        let stats = replica.stats().unwrap();
        assert_eq!((stats.lsn, stats.durable_lsn), (3, 0));
        replica.apply(&records[3..], false).unwrap();
        replica.flush().unwrap();
        let stats = replica.stats().unwrap();
        assert_eq!((stats.lsn, stats.durable_lsn), (6, 6));
        let behind = crashed_copy(&dir, "redb-only", false);
        assert_eq!(behind.stats().unwrap().lsn, 0);
        let back = crashed_copy(&dir, "crashed", true);
        assert_eq!(back.stats().unwrap().lsn, 6);
        assert_eq!(count(&back), Value::Int(5));
        // Replayed records keep applying in order afterwards.
        run(&primary, "INSERT INTO a VALUES (9, 9)");
        let next = primary.snapshot().unwrap().changes_after(6, 100).unwrap();
        assert_eq!(back.apply(&next, true).unwrap(), 7);
        let _ = std::fs::remove_dir_all(upstream);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The files as a kill -9 at this moment would leave them (the page cache survives
    /// the process; redb's unsynced commits live only in the process), copied beside the
    /// shard's directory and opened there without syncing.
    fn crashed_copy(dir: &Path, name: &str, with_journal: bool) -> Shard {
        let to = dir.join(name);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(dir.join("s.redb"), to.join("s.redb")).unwrap();
        if with_journal {
            std::fs::copy(dir.join("s.journal"), to.join("s.journal")).unwrap();
        }
        let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
        let opts = ShardOptions {
            log_retain: 1000,
            log_retain_bytes: 64 << 20,
            sync_commits: with_journal,
            ..ShardOptions::default()
        };
        Shard::open(&to.join("s.redb"), 0, 1, hlc, opts).unwrap()
    }

    /// Large records are trimmed from the change log once it holds more than
    /// `log_retain_bytes`, long before `log_retain` newer records exist, but never one of the
    /// newest `LOG_KEPT_BY_BYTES`; `state.log_bytes` stays the sum of what is left, across a
    /// restart too.
    #[test]
    fn the_log_is_bounded_in_bytes_sparing_its_newest_records() {
        let budget = 256 << 10;
        let opts = ShardOptions {
            log_retain: 1_000_000,
            log_retain_bytes: budget,
            sync_commits: false,
            ..ShardOptions::default()
        };
        let (s, dir) = shard_with("log-bytes", opts.clone());
        run(&s, "CREATE TABLE a (k INT PRIMARY KEY, v TEXT)");
        let long = "x".repeat(1000);
        for batch in 0..3 {
            let rows: Vec<String> = (0..200)
                .map(|i| format!("({}, '{long}')", batch * 200 + i))
                .collect();
            run(&s, &format!("INSERT INTO a VALUES {}", rows.join(", ")));
        }
        let log_bytes = |s: &Shard| s.snapshot().unwrap().state(STATE_LOG_BYTES).unwrap();
        let stored = |s: &Shard| -> u64 {
            let start = s.stats().unwrap().log_start;
            s.snapshot()
                .unwrap()
                .changes_after(start - 1, usize::MAX)
                .unwrap()
                .iter()
                .map(|r| frame::encode(r).unwrap().len() as u64)
                .sum()
        };
        // Over the budget, but every record is among the newest: nothing goes yet.
        assert_eq!(s.stats().unwrap().log_start, 1);
        assert!(log_bytes(&s) > budget);
        assert_eq!(log_bytes(&s), stored(&s));
        for i in 0..LOG_KEPT_BY_BYTES + 10 {
            run(&s, &format!("INSERT INTO a VALUES ({}, 'y')", 1000 + i));
        }
        let stats = s.stats().unwrap();
        // Two large records are more than the budget: at most the last is left.
        assert!(stats.log_start >= 4, "the large records stayed: {stats:?}");
        assert!(stats.log_start <= stats.lsn - LOG_KEPT_BY_BYTES + 1);
        assert!(log_bytes(&s) <= budget);
        assert_eq!(log_bytes(&s), stored(&s));
        let kept = log_bytes(&s);
        drop(s);
        let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
        let reopened = Shard::open(&dir.join("s.redb"), 0, 1, hlc, opts).unwrap();
        assert_eq!(log_bytes(&reopened), kept);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A commit of more rows than `SUMMARY_MAX_KEYS` conflicts with any read of its
    /// tables; one of exactly that many is still remembered row by row.
    #[test]
    fn a_large_commit_is_remembered_by_its_tables() {
        let key = |i: u32| i.to_be_bytes().to_vec();
        let changes: Vec<Change> = (0..=SUMMARY_MAX_KEYS as u32)
            .map(|i| Change::Delete {
                table: "big".into(),
                key: key(i),
            })
            .collect();
        let large = CommitSummary::of(10, &changes);
        let small = CommitSummary::of(10, &changes[..2]);
        let at_limit = CommitSummary::of(10, &changes[..SUMMARY_MAX_KEYS]);
        assert!(large.keys.is_none() && small.keys.is_some() && at_limit.keys.is_some());
        let read = |table: &str, k: Vec<u8>| ReadSet {
            keys: [(table.to_string(), k)].into(),
            tables: HashSet::new(),
        };
        // A row the large commit never wrote still conflicts: only its table is known.
        let unwritten = read("big", key(u32::MAX));
        assert!(conflicts(9, &unwritten, [&large].into_iter()));
        assert!(!conflicts(9, &unwritten, [&small].into_iter()));
        assert!(conflicts(9, &read("big", key(1)), [&small].into_iter()));
        assert!(!conflicts(9, &read("other", key(1)), [&large].into_iter()));
        // A snapshot taken after the commit sees it: no conflict.
        assert!(!conflicts(10, &unwritten, [&large].into_iter()));
    }

    /// The catalog answers which tables reference a table without decoding entries that
    /// cannot: one that only mentions the name (a column called `p`, a table called `pp`)
    /// is not a referencing table; a foreign key, also one to the table itself or one
    /// declared in a transaction that has not committed, is.
    #[test]
    fn referencing_tables_are_found_by_their_foreign_keys_only() {
        use crate::txn::ReadTxn;
        let (s, dir) = shard("referencing");
        run(&s, "CREATE TABLE p (id int PRIMARY KEY)");
        run(&s, "CREATE TABLE pp (id int PRIMARY KEY, p int)");
        run(
            &s,
            "CREATE TABLE c (id int PRIMARY KEY, pid int REFERENCES p (id))",
        );
        run(
            &s,
            "CREATE TABLE d (id int PRIMARY KEY, pid int REFERENCES pp (id))",
        );
        run(
            &s,
            "CREATE TABLE tree (id int PRIMARY KEY, up int REFERENCES tree (id))",
        );
        let snap = s.snapshot().unwrap();
        assert_eq!(snap.referencing_tables("p").unwrap(), vec!["c".to_string()]);
        assert_eq!(
            snap.referencing_tables("pp").unwrap(),
            vec!["d".to_string()]
        );
        assert_eq!(
            snap.referencing_tables("tree").unwrap(),
            vec!["tree".to_string()]
        );
        assert!(snap.referencing_tables("c").unwrap().is_empty());
        // A parent with a child is not deleted.
        run(&s, "INSERT INTO p VALUES (1)");
        run(&s, "INSERT INTO c VALUES (1, 1)");
        let delete = sql::parse("DELETE FROM p WHERE id = 1").unwrap().remove(0);
        let refused = s.execute(&delete, &[]).unwrap_err();
        assert_eq!(refused.code, sqlstate::FOREIGN_KEY_VIOLATION);
        // A transaction's own new table counts before it commits.
        let mut e = snap.schema("d").unwrap().unwrap();
        e.name = "e".to_string();
        let mut set = crate::buffer::WriteSet::default();
        let mut view = crate::buffer::TxnView::new(&snap, &mut set, None, None);
        crate::txn::WriteTxn::create_table(&mut view, e).unwrap();
        assert_eq!(
            view.referencing_tables("pp").unwrap(),
            vec!["d".to_string(), "e".to_string()]
        );
        drop(snap);
        std::fs::remove_dir_all(dir).ok();
    }

    /// Table `a` with `rows` rows (`id` and `bal` both 0, 1, …), one commit each.
    fn table_of(s: &Shard, rows: i64) {
        run(s, "CREATE TABLE a (id int PRIMARY KEY, bal bigint)");
        for i in 0..rows {
            run(s, &format!("INSERT INTO a VALUES ({i}, {i})"));
        }
    }

    /// Prepares transaction `id`, which takes 10 from row 1 of `a`, coordinated by shard 3.
    fn prepare_debit(s: &Shard, id: TxnId) {
        let stmt = sql::parse("UPDATE a SET bal = bal - 10 WHERE id = 1")
            .unwrap()
            .remove(0);
        let mut t = s.begin(id, Isolation::ReadCommitted, false, None);
        s.execute_in(&mut t, &stmt, &[]).unwrap();
        s.prepare(t, 3, 0).unwrap();
    }

    fn count(s: &Shard) -> Value {
        run(s, "SELECT count(*) FROM a").rows[0][0].clone()
    }

    /// Between checkpoints a primary's commits are durable only in its journal: a crash
    /// takes the redb file back to the last checkpoint, and opening it replays the rest,
    /// prepared transactions and decisions included; after a checkpoint the journal starts
    /// over and only the new run is replayed.
    #[test]
    fn a_crash_loses_nothing_the_journal_acknowledged() {
        let (s, dir) = journaled("journal");
        table_of(&s, 20);
        prepare_debit(&s, 77);
        assert!(s.decide(88, true).unwrap());

        let behind = crashed_copy(&dir, "redb-only", false);
        assert_eq!(
            behind.stats().unwrap().lsn,
            0,
            "the commits went to the journal, not to a synced redb commit"
        );
        let back = crashed_copy(&dir, "crashed", true);
        assert_eq!(back.stats().unwrap().lsn, 21);
        assert_eq!(count(&back), Value::Int(20));
        assert_eq!(back.prepared().len(), 1, "the prepare is replayed");
        assert_eq!(back.locked_rows(), 1, "and its row lock taken again");
        assert_eq!(back.decision(88).unwrap(), Some(true));
        drop((behind, back));

        // A checkpoint: the batch after the interval is a synced redb commit.
        std::thread::sleep(journal::CHECKPOINT_INTERVAL);
        run(&s, "INSERT INTO a VALUES (100, 0)");
        let checkpointed = crashed_copy(&dir, "checkpointed", false);
        assert_eq!(count(&checkpointed), Value::Int(21));
        drop(checkpointed);
        // The next run overwrites the first one's entries; only it is replayed.
        s.finish_prepared(77, true).unwrap();
        run(&s, "INSERT INTO a VALUES (101, 0)");
        let back = crashed_copy(&dir, "crashed-again", true);
        assert_eq!(back.stats().unwrap().lsn, 24);
        assert_eq!(count(&back), Value::Int(22));
        assert!(back.prepared().is_empty());
        assert_eq!(
            run(&back, "SELECT bal FROM a WHERE id = 1").rows,
            vec![vec![Value::Int(-9)]]
        );
        // Replayed once, synced, and the journal started over: opening again changes nothing.
        drop(back);
        let again = {
            let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
            let opts = ShardOptions {
                log_retain: 1000,
                log_retain_bytes: 64 << 20,
                sync_commits: true,
                ..ShardOptions::default()
            };
            Shard::open(&dir.join("crashed-again/s.redb"), 0, 1, hlc, opts).unwrap()
        };
        assert_eq!(again.stats().unwrap().lsn, 24);
        assert_eq!(count(&again), Value::Int(22));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A prepared transaction survives a restart with its locks, commits exactly once on
    /// its decision, and the coordinator's first decision is the one that stands.
    #[test]
    fn prepared_transactions_survive_restart_and_decide_once() {
        let (s, dir) = shard("2pc");
        run(&s, "CREATE TABLE a (id int PRIMARY KEY, bal bigint)");
        run(&s, "INSERT INTO a VALUES (1, 100)");
        prepare_debit(&s, 77);
        let path = dir.join("s.redb");
        drop(s);
        let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
        let s = Shard::open(
            &path,
            0,
            1,
            hlc,
            ShardOptions {
                log_retain: 1000,
                log_retain_bytes: 64 << 20,
                sync_commits: false,
                ..ShardOptions::default()
            },
        )
        .unwrap();
        assert_eq!(s.prepared().len(), 1, "prepared state is durable");
        assert_eq!(s.prepared()[0].1.coordinator, 3);
        assert_eq!(s.locked_rows(), 1, "its row lock is held again");
        assert_eq!(
            run(&s, "SELECT bal FROM a WHERE id = 1").rows,
            vec![vec![Value::Int(100)]],
            "not visible before the decision"
        );
        assert!(s.decide(77, true).unwrap());
        assert!(s.decide(77, false).unwrap(), "the first decision stands");
        assert_eq!(s.decision(77).unwrap(), Some(true));
        s.finish_prepared(77, true).unwrap();
        s.finish_prepared(77, true).unwrap();
        assert_eq!(
            run(&s, "SELECT bal FROM a WHERE id = 1").rows,
            vec![vec![Value::Int(90)]]
        );
        assert_eq!(s.locked_rows(), 0);
        assert!(s.prepared().is_empty());
        // Once every participant finished, the decision record is dropped.
        assert_eq!(s.decision_count().unwrap(), 1);
        assert!(!s.forget_decision(77), "one forget is not worth a write");
        assert_eq!(s.decision_count().unwrap(), 1, "queued");
        run(&s, "INSERT INTO a VALUES (2, 0)");
        assert_eq!(
            s.decision_count().unwrap(),
            0,
            "written with the next batch"
        );
        assert!(s.decide(78, true).unwrap());
        s.forget_decision(78);
        s.write_forgotten().unwrap();
        assert_eq!(s.decision_count().unwrap(), 0, "or on request");
        assert_eq!(s.decision(77).unwrap(), None);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A transaction's changes on a shard are bounded (`buffer::TXN_MEMORY`): a write past the
    /// bound fails with 54000, a savepoint's copy of the write set counts until it is
    /// released, and the shard keeps working.
    #[test]
    fn a_transaction_past_its_memory_bound_fails_with_54000() {
        // nextest runs each test in its own process, so the bound is this test's.
        crate::buffer::TXN_MEMORY.store(360 << 10, Ordering::Relaxed);
        let (s, dir) = shard("txn-memory");
        run(&s, "CREATE TABLE t (k int PRIMARY KEY, v text)");
        let exec = |t: &mut Transaction, sql: &str| {
            s.execute_in(t, &sql::parse(sql).unwrap().remove(0), &[])
        };
        // A row counts a little over 1 000 bytes: 100 rows are 30 % of the bound.
        let series = |from: i64, to: i64| {
            format!(
                "INSERT INTO t WITH RECURSIVE s(g) AS (SELECT {from} UNION ALL \
                 SELECT g + 1 FROM s WHERE g < {to}) SELECT g, repeat('x', 1000) FROM s"
            )
        };
        let rows = |from: i64| series(from, from + 99);
        let too_large = |r: Result<QueryResult>| match r {
            Err(e) => assert_eq!(e.code, sqlstate::PROGRAM_LIMIT_EXCEEDED, "{e:?}"),
            Ok(_) => panic!("a write past the bound must fail"),
        };
        let mut t = s.begin(1, Isolation::ReadCommitted, false, None);
        too_large(exec(&mut t, &series(1, 500)));
        s.rollback(t);

        let mut t = s.begin(2, Isolation::ReadCommitted, false, None);
        exec(&mut t, &rows(1)).unwrap();
        exec(&mut t, "SAVEPOINT a").unwrap();
        exec(&mut t, "SAVEPOINT b").unwrap();
        // Two copies held and 100 rows written: 100 more do not fit.
        too_large(exec(&mut t, &rows(101)));
        exec(&mut t, "ROLLBACK TO SAVEPOINT b").unwrap();
        exec(&mut t, "RELEASE SAVEPOINT a").unwrap();
        // Both copies are gone: now they fit.
        exec(&mut t, &rows(101)).unwrap();
        s.commit(t).unwrap();
        assert_eq!(
            run(&s, "SELECT count(*) FROM t").rows,
            vec![vec![Value::Int(200)]]
        );
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn quick_statements_run_without_waiting_or_scanning_and_leave_no_trace_when_refused() {
        let (s, dir) = shard("quick");
        run(&s, "CREATE TABLE a (id int PRIMARY KEY, bal bigint)");
        run(&s, "INSERT INTO a VALUES (1, 100), (2, 200)");
        let parse = |sql: &str| sql::parse(sql).unwrap().remove(0);
        let mut t = s.begin(7, Isolation::ReadCommitted, false, None);
        // By key, a free lock: done in quick mode.
        let r = s
            .execute_in_quickly(
                &mut t,
                &parse("UPDATE a SET bal = bal + 1 WHERE id = 1"),
                &[],
            )
            .unwrap();
        assert_eq!(r.map(|r| r.affected), Some(1));
        let r = s
            .execute_in_quickly(&mut t, &parse("INSERT INTO a VALUES (3, 300)"), &[])
            .unwrap();
        assert_eq!(r.map(|r| r.affected), Some(1));
        // A scan is refused, and the transaction is as it was.
        let before = t.set.clone().into_changes();
        let scan = parse("UPDATE a SET bal = 0 WHERE bal > 150");
        assert!(s.execute_in_quickly(&mut t, &scan, &[]).unwrap().is_none());
        assert_eq!(
            format!("{:?}", t.set.clone().into_changes()),
            format!("{before:?}")
        );
        // A row locked by another transaction: refused at once, not waited for.
        let mut other = s.begin(8, Isolation::ReadCommitted, false, None);
        s.execute_in(&mut other, &parse("UPDATE a SET bal = 5 WHERE id = 2"), &[])
            .unwrap();
        let locked = parse("UPDATE a SET bal = bal + 1 WHERE id = 2");
        assert!(
            s.execute_in_quickly(&mut t, &locked, &[])
                .unwrap()
                .is_none()
        );
        assert_eq!(
            format!("{:?}", t.set.clone().into_changes()),
            format!("{before:?}")
        );
        // Nor does it wait for a lock on a UNIQUE value another transaction is inserting.
        run(&s, "CREATE TABLE u (id int PRIMARY KEY, v int UNIQUE)");
        s.execute_in(&mut other, &parse("INSERT INTO u VALUES (1, 5)"), &[])
            .unwrap();
        let mut third = s.begin(9, Isolation::ReadCommitted, false, None);
        let clash = parse("INSERT INTO u VALUES (2, 5)");
        assert!(
            s.execute_in_quickly(&mut third, &clash, &[])
                .unwrap()
                .is_none()
        );
        s.rollback(third);
        s.rollback(other);
        // The refused statements run in full, as on the blocking thread.
        assert_eq!(s.execute_in(&mut t, &scan, &[]).unwrap().affected, 2);
        assert_eq!(s.execute_in(&mut t, &locked, &[]).unwrap().affected, 1);
        s.commit(t).unwrap();
        assert_eq!(
            run(&s, "SELECT id, bal FROM a ORDER BY id").rows,
            vec![
                vec![Value::Int(1), Value::Int(101)],
                vec![Value::Int(2), Value::Int(1)],
                vec![Value::Int(3), Value::Int(0)],
            ]
        );
        assert_eq!(s.locked_rows(), 0);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_coordinator_commits_with_its_decision_unless_an_abort_came_first() {
        let (s, dir) = shard("commit-decide");
        run(&s, "CREATE TABLE a (id int PRIMARY KEY, bal bigint)");
        run(&s, "INSERT INTO a VALUES (1, 100)");
        let stmt = sql::parse("UPDATE a SET bal = bal - 10 WHERE id = 1")
            .unwrap()
            .remove(0);
        let lsn = s.lsn();
        let mut t = s.begin(5, Isolation::ReadCommitted, false, None);
        s.execute_in(&mut t, &stmt, &[]).unwrap();
        assert_eq!(
            s.commit_deciding(t).unwrap(),
            lsn + 1,
            "its rows are the next LSN"
        );
        assert_eq!(
            s.decision(5).unwrap(),
            Some(true),
            "and the decision is recorded"
        );
        assert_eq!(s.locked_rows(), 0);
        let bal = |s: &Shard| run(s, "SELECT bal FROM a WHERE id = 1").rows;
        assert_eq!(bal(&s), vec![vec![Value::Int(90)]]);

        // An in-doubt resolver's presumed abort recorded first: nothing commits.
        let mut t = s.begin(6, Isolation::ReadCommitted, false, None);
        s.execute_in(&mut t, &stmt, &[]).unwrap();
        assert!(!s.decide(6, false).unwrap());
        let e = s.commit_deciding(t).unwrap_err();
        assert_eq!(e.code, sqlstate::SERIALIZATION_FAILURE);
        assert_eq!(s.decision(6).unwrap(), Some(false), "the abort stands");
        assert_eq!(bal(&s), vec![vec![Value::Int(90)]]);
        assert_eq!(s.locked_rows(), 0);

        // A part that wrote nothing still records the decision.
        let t = s.begin(7, Isolation::ReadCommitted, false, None);
        s.commit_deciding(t).unwrap();
        assert_eq!(s.decision(7).unwrap(), Some(true));
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
