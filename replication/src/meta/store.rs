//! Durable Raft storage for meta: log, vote and state machine in one redb file.
//!
//! ```text
//! <data_dir>/meta.redb
//!  ├─ raft_log:  index (u64) → bincode(Entry)
//!  └─ raft_meta: "vote"        → bincode(Vote)
//!                "committed"   → bincode(Option<LogId>)
//!                "last_purged" → bincode(Option<LogId>)
//!                "sm"          → bincode(SmData: last applied, membership, ClusterState)
//!                "snapshot"    → bincode(StoredSnapshot: meta + bytes)
//! ```
//! Keeping everything in one file means one fsync discipline and one thing to back up. Every
//! write commits with redb's `Immediate` durability before openraft hears it is done, so a
//! restarted voter comes back with the vote it cast, the log it acknowledged and the map it
//! applied. The state machine is small, so each applied batch rewrites it whole.
//!
//! redb calls block, so every access runs on tokio's blocking pool (`spawn_blocking`), which
//! also works on a current-thread runtime. The applied map is mirrored in memory and published
//! on a `watch` channel that `MetaWatch` long-polls feed on.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, StorageIOError,
};
use protocol::cluster::ClusterState;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{
    Entry, LogId, MetaReply, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
    Vote,
};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_SM: &str = "sm";
const KEY_SNAPSHOT: &str = "snapshot";

/// The state machine as persisted and as carried in snapshots.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: ClusterState,
}

/// The latest snapshot, kept so a restarted leader can still ship it to a lagging follower.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

fn any<E: std::error::Error + 'static>(e: E) -> AnyError {
    AnyError::new(&e)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    protocol::frame::encode(v).map_err(any)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnyError> {
    protocol::frame::decode(bytes).map_err(any)
}

/// Runs a blocking redb operation off the async reactor.
async fn blocking<T, F>(f: F) -> Result<T, AnyError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, AnyError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AnyError::error(format!("storage task failed: {e}")))?
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, AnyError> {
    let tx = db.begin_read().map_err(any)?;
    let table = tx.open_table(META).map_err(any)?;
    match table.get(key).map_err(any)? {
        Some(v) => decode(v.value()).map(Some),
        None => Ok(None),
    }
}

fn write_meta(db: &Database, entries: &[(&str, Vec<u8>)]) -> Result<(), AnyError> {
    let tx = db.begin_write().map_err(any)?;
    {
        let mut table = tx.open_table(META).map_err(any)?;
        for (k, v) in entries {
            table.insert(*k, v.as_slice()).map_err(any)?;
        }
    }
    tx.commit().map_err(any)
}

/// Opens (creating if needed) `<dir>/meta.redb` with both tables present.
///
/// A previous instance in the same process may still be releasing the file (its Raft tasks wind
/// down asynchronously after shutdown), so "already open" is retried for a few seconds.
pub async fn open_db(dir: &Path) -> protocol::Result<Arc<Database>> {
    let dir = dir.to_path_buf();
    std::fs::create_dir_all(&dir)
        .map_err(|e| protocol::Error::io(format!("creating {}: {e}", dir.display())))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let d = dir.clone();
        let res = tokio::task::spawn_blocking(move || Database::create(d.join("meta.redb")))
            .await
            .map_err(|e| protocol::Error::internal(format!("storage task failed: {e}")))?;
        match res {
            Ok(db) => {
                let db = Arc::new(db);
                let init = db.clone();
                blocking(move || {
                    let tx = init.begin_write().map_err(any)?;
                    tx.open_table(LOG).map_err(any)?;
                    tx.open_table(META).map_err(any)?;
                    tx.commit().map_err(any)
                })
                .await
                .map_err(|e| protocol::Error::io(format!("initialising meta.redb: {e}")))?;
                return Ok(db);
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(protocol::Error::io(format!(
                    "opening {}: {e}",
                    dir.join("meta.redb").display()
                )));
            }
        }
    }
}

/// The Raft log and vote. Cloning shares the database; a clone serves as the log reader.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }
}

/// Turns any range over log indexes into `[start, end)` with `end = None` for unbounded.
fn index_bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.checked_add(1),
        Bound::Excluded(e) => Some(*e),
        Bound::Unbounded => None,
    };
    (start, end)
}

/// Deletes the log entries with index in `[from, to]` inside one write transaction.
fn remove_log_range(
    table: &mut redb::Table<u64, &[u8]>,
    from: u64,
    to: u64,
) -> Result<(), AnyError> {
    let mut keys = Vec::new();
    for item in table.range(from..).map_err(any)? {
        let (k, _) = item.map_err(any)?;
        let k = k.value();
        if k > to {
            break;
        }
        keys.push(k);
    }
    for k in keys {
        table.remove(k).map_err(any)?;
    }
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = index_bounds(&range);
        let db = self.db.clone();
        blocking(move || {
            let mut out = Vec::new();
            if end.is_some_and(|e| e <= start) {
                return Ok(out);
            }
            let tx = db.begin_read().map_err(any)?;
            let table = tx.open_table(LOG).map_err(any)?;
            for item in table.range(start..).map_err(any)? {
                let (k, v) = item.map_err(any)?;
                if end.is_some_and(|e| k.value() >= e) {
                    break;
                }
                out.push(decode::<Entry>(v.value())?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let last_purged: Option<LogId> =
                read_meta::<Option<LogId>>(&db, KEY_LAST_PURGED)?.flatten();
            let tx = db.begin_read().map_err(any)?;
            let table = tx.open_table(LOG).map_err(any)?;
            let last = match table.last().map_err(any)? {
                Some((_, v)) => Some(decode::<Entry>(v.value())?.log_id),
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        })
        .await
        .map_err(|e| StorageIOError::read_logs(e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let db = self.db.clone();
        let vote = *vote;
        blocking(move || write_meta(&db, &[(KEY_VOTE, encode(&vote)?)]))
            .await
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let db = self.db.clone();
        blocking(move || read_meta(&db, KEY_VOTE))
            .await
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Persisting the commit point lets a restarted voter re-apply committed entries at once
        // instead of waiting to hear from a leader.
        let db = self.db.clone();
        blocking(move || write_meta(&db, &[(KEY_COMMITTED, encode(&committed)?)]))
            .await
            .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(move || Ok(read_meta::<Option<LogId>>(&db, KEY_COMMITTED)?.flatten()))
            .await
            .map_err(|e| StorageIOError::read(e).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let db = self.db.clone();
        let res = blocking(move || {
            let tx = db.begin_write().map_err(any)?;
            {
                let mut table = tx.open_table(LOG).map_err(any)?;
                for e in &entries {
                    table
                        .insert(e.log_id.index, encode(e)?.as_slice())
                        .map_err(any)?;
                }
            }
            tx.commit().map_err(any)
        })
        .await;
        // openraft counts an entry as persisted only once the callback fires; report the
        // failure through it too so the core does not wait forever.
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let tx = db.begin_write().map_err(any)?;
            {
                let mut table = tx.open_table(LOG).map_err(any)?;
                remove_log_range(&mut table, log_id.index, u64::MAX)?;
            }
            tx.commit().map_err(any)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let tx = db.begin_write().map_err(any)?;
            {
                let mut meta = tx.open_table(META).map_err(any)?;
                meta.insert(KEY_LAST_PURGED, encode(&Some(log_id))?.as_slice())
                    .map_err(any)?;
                let mut table = tx.open_table(LOG).map_err(any)?;
                remove_log_range(&mut table, 0, log_id.index)?;
            }
            tx.commit().map_err(any)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(e).into())
    }
}

/// The applied cluster map, persisted after every applied batch.
pub struct StateMachine {
    db: Arc<Database>,
    data: SmData,
    /// Feeds `MetaWatch` and the placement task; replaced whenever the version moves.
    state_tx: Arc<watch::Sender<Arc<ClusterState>>>,
    /// Distinguishes snapshots built at the same log position.
    snapshot_seq: u64,
}

impl StateMachine {
    /// Loads the persisted state machine and publishes its map on `state_tx`.
    pub async fn open(
        db: Arc<Database>,
        state_tx: Arc<watch::Sender<Arc<ClusterState>>>,
    ) -> protocol::Result<Self> {
        let d = db.clone();
        let data = blocking(move || read_meta::<SmData>(&d, KEY_SM))
            .await
            .map_err(|e| protocol::Error::io(format!("reading meta state machine: {e}")))?
            .unwrap_or_default();
        state_tx.send_replace(Arc::new(data.state.clone()));
        Ok(StateMachine {
            db,
            data,
            state_tx,
            snapshot_seq: 0,
        })
    }

    fn publish(&self) {
        let state = &self.data.state;
        self.state_tx.send_if_modified(|cur| {
            if cur.version != state.version || **cur != *state {
                *cur = Arc::new(state.clone());
                true
            } else {
                false
            }
        });
    }

    async fn persist(&self, snapshot: Option<StoredSnapshot>) -> Result<(), AnyError> {
        let db = self.db.clone();
        let sm = encode(&self.data)?;
        blocking(move || {
            let mut writes = vec![(KEY_SM, sm)];
            if let Some(s) = snapshot {
                writes.push((KEY_SNAPSHOT, encode(&s)?));
            }
            write_meta(&db, &writes)
        })
        .await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.data.last_applied, self.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id);
            self.data.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => MetaReply::default(),
                EntryPayload::Normal(cmd) => match self.data.state.apply(&cmd) {
                    Ok(()) => MetaReply {
                        error: None,
                        state: Some(self.data.state.clone()),
                    },
                    Err(text) => MetaReply {
                        error: Some(text),
                        state: None,
                    },
                },
                EntryPayload::Membership(m) => {
                    self.data.membership = StoredMembership::new(Some(entry.log_id), m);
                    MetaReply::default()
                }
            };
            replies.push(reply);
        }
        if let Some(last) = last {
            self.persist(None)
                .await
                .map_err(|e| StorageIOError::apply(last, e))?;
            self.publish();
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        SnapshotBuilder {
            db: self.db.clone(),
            data: self.data.clone(),
            seq: self.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: SmData =
            decode(&bytes).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        // The snapshot's own meta is authoritative for position and membership.
        self.data = SmData {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: data.state,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        self.persist(Some(stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let db = self.db.clone();
        let stored = blocking(move || read_meta::<StoredSnapshot>(&db, KEY_SNAPSHOT))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// A copy of the state machine taken when openraft asked for a snapshot.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    data: SmData,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let bytes = encode(&self.data).map_err(|e| StorageIOError::write_snapshot(None, e))?;
        let snapshot_id = match self.data.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.seq),
            None => format!("none-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.data.last_applied,
            last_membership: self.data.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        };
        let db = self.db.clone();
        blocking(move || write_meta(&db, &[(KEY_SNAPSHOT, encode(&stored)?)]))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}
