//! The node service: hosts shard replicas and answers the internal protocol for them.
//!
//! ```text
//!  router ──Execute/Describe──► primary replica ──► Shard
//!  replica node ──Subscribe(from lsn)──► snapshot (if the log no longer reaches back)
//!                                        then Changes batches, forever, as commits happen
//!  admin/router ──ShardStats/ShardChecksum──► any replica
//! ```
//! Which shards a node hosts, and in which role and epoch, is set from outside (the runtime
//! that follows meta's cluster map); the service refuses writes to a shard it does not hold as
//! primary in the caller's epoch, so a router with a stale map cannot write to an old primary.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use protocol::Value;
use protocol::clock::Hlc;
use protocol::cluster::{NodeId, ShardId};
use protocol::error::{Error, Result, sqlstate};
use protocol::message::{Request, Response, StreamItem, TxnSpec};
use protocol::rpc::{Replier, Service};
use tokio::sync::mpsc;

use crate::shard::{Shard, ShardOptions, Transaction};
use crate::sql;
use crate::txn::ReadTxn;

/// Rows per snapshot chunk and records per change batch sent to a subscriber.
const SNAPSHOT_CHUNK: usize = 1000;
const CHANGE_BATCH: usize = 512;
/// A subscriber at most this many records behind has its log read on the async worker, at
/// most this many records at a time.
const INLINE_LOG_READ: usize = 64;

#[derive(Clone)]
struct Hosted {
    shard: Arc<Shard>,
    primary: bool,
    epoch: u64,
    gate: Arc<Mutex<WriteGate>>,
}

/// Admission of new writes to a shard this node leads. A move freezes the gate, then waits
/// until the writes already admitted are done (`writers` and the shard's open transactions
/// at zero) before it compares and switches copies; nothing admitted later can slip past.
#[derive(Default)]
struct WriteGate {
    /// The shard's placement epoch, as in `Hosted` (here too so a split's log stream can
    /// watch it).
    epoch: u64,
    frozen: bool,
    /// A split trims the shard: nothing is answered, reads included.
    sealed: bool,
    /// Autocommit writing statements running now.
    writers: u64,
}

/// Counts one admitted autocommit write until dropped.
struct Admitted(Arc<Mutex<WriteGate>>);

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut g) = self.0.lock() {
            g.writers = g.writers.saturating_sub(1);
        }
    }
}

/// The refusal a router answers by holding the statement until the map moves on, then
/// sending it again: it proves the statement did not run.
pub fn moving(id: ShardId) -> Error {
    Error::new(
        sqlstate::CANNOT_CONNECT_NOW,
        format!("shard {id} is being moved; new writes wait for the switch"),
    )
}

/// Who sent a statement: the connection (owner of any transaction it opens) and the
/// statement's deadline from statement_timeout.
struct Caller {
    conn: u64,
    deadline: Option<std::time::Instant>,
    /// lock_timeout of a statement outside a transaction block.
    lock_timeout: Option<Duration>,
    /// Set when the router forwards the client's cancel of this statement.
    cancelled: Arc<std::sync::atomic::AtomicBool>,
}

/// A client transaction open on one of this node's shards, owned by the connection that
/// opened it: if that connection drops, the transaction rolls back.
struct OpenTxn {
    conn: u64,
    shard: Arc<Shard>,
    txn: Arc<Mutex<Option<Transaction>>>,
}

pub struct NodeService {
    pub id: NodeId,
    txns: Mutex<HashMap<(ShardId, u64), OpenTxn>>,
    data_dir: PathBuf,
    hlc: Arc<Hlc>,
    opts: ShardOptions,
    shards: RwLock<HashMap<ShardId, Hosted>>,
    /// Serializes `host`, `unhost`, `drop_copy`, `stored_epoch` and `remove_unhosted_file`
    /// among themselves, so the slow part of hosting (opening a shard's file, the durable
    /// write of a new placement epoch) runs without holding `shards`, which every request
    /// reads: it used to stall the whole node for an fsync. It guards no data, so a poisoned
    /// lock is simply taken.
    hosting: Mutex<()>,
    /// Parses of statements that came with parameters (prepared statements, whose text
    /// repeats), so a shard parses each such text once. Syntax only: no catalog state.
    parsed: Mutex<HashMap<String, Arc<Parsed>>>,
    /// The router connection that prepared each two-phase transaction, while it stays open:
    /// a live router is still driving the commit, so the in-doubt resolver gives it longer.
    preparers: Mutex<HashMap<(ShardId, u64), u64>>,
}

/// Parsed statement texts kept per node; the cache is emptied when it fills.
const PARSE_CACHE: usize = 4096;

/// A statement text's parse and what its syntax alone says about running it, worked out
/// once per text (walking the tree on every execution of a prepared statement showed in
/// the profile).
struct Parsed {
    stmts: Vec<sql::Statement>,
    /// Some statement may write.
    writes: bool,
    /// One statement, of `point_read::is_point_shaped` shape.
    point: bool,
    /// One statement, of `point_read::is_quick_shaped` shape.
    quick: bool,
    /// Bound plans of a point read, per shard; `None` for a parse that is not kept.
    read_plans: Option<crate::read_plans::ReadPlans>,
}

impl Parsed {
    fn new(stmts: Vec<sql::Statement>, kept: bool) -> Parsed {
        let writes = stmts.iter().any(|s| !sql::is_read_only(s));
        let (point, quick) = match stmts.as_slice() {
            [stmt] => (
                crate::point_read::is_point_shaped(stmt),
                crate::point_read::is_quick_shaped(stmt),
            ),
            _ => (false, false),
        };
        Parsed {
            read_plans: (kept && point && !writes).then(Default::default),
            stmts,
            writes,
            point,
            quick,
        }
    }
}

impl NodeService {
    pub fn new(id: NodeId, data_dir: PathBuf, hlc: Arc<Hlc>, opts: ShardOptions) -> Result<Self> {
        std::fs::create_dir_all(&data_dir).map_err(Error::io)?;
        Ok(NodeService {
            id,
            txns: Mutex::default(),
            data_dir,
            hlc,
            opts,
            shards: RwLock::default(),
            hosting: Mutex::default(),
            parsed: Mutex::default(),
            preparers: Mutex::default(),
        })
    }

    /// Hosts a shard replica in the given role, opening its file on first use. `frozen`
    /// closes the write gate of a primary for a move's switch.
    pub fn host(
        &self,
        id: ShardId,
        primary: bool,
        epoch: u64,
        frozen: bool,
        sealed: bool,
    ) -> Result<Arc<Shard>> {
        let _hosting = self.hosting.lock().unwrap_or_else(|e| e.into_inner());
        let hosted = {
            let mut shards = self
                .shards
                .write()
                .map_err(|_| Error::internal("poisoned lock"))?;
            shards.get_mut(&id).map(|h| {
                h.primary = primary;
                h.epoch = epoch;
                if let Ok(mut g) = h.gate.lock() {
                    g.epoch = epoch;
                    g.frozen = frozen;
                    g.sealed = sealed;
                }
                h.shard.clone()
            })
        };
        if let Some(shard) = hosted {
            shard.record_placement_epoch(epoch)?;
            return Ok(shard);
        }
        let path = self.shard_path(id);
        let shard = Arc::new(Shard::open(
            &path,
            id,
            self.id,
            self.hlc.clone(),
            self.opts.clone(),
        )?);
        shard.record_placement_epoch(epoch)?;
        self.shards
            .write()
            .map_err(|_| Error::internal("poisoned lock"))?
            .insert(
                id,
                Hosted {
                    shard: shard.clone(),
                    primary,
                    epoch,
                    gate: Arc::new(Mutex::new(WriteGate {
                        epoch,
                        frozen,
                        sealed,
                        writers: 0,
                    })),
                },
            );
        Ok(shard)
    }

    /// Stops hosting a shard (its file stays on disk).
    pub fn unhost(&self, id: ShardId) {
        let _hosting = self.hosting.lock().unwrap_or_else(|e| e.into_inner());
        self.unhost_locked(id);
    }

    /// `unhost`, for a caller that holds `hosting`.
    fn unhost_locked(&self, id: ShardId) {
        if let Ok(mut shards) = self.shards.write() {
            shards.remove(&id);
        }
    }

    /// Stops hosting a shard whose copy moved elsewhere and deletes its file. Open
    /// transactions on it are rolled back (a move only switches once there are none).
    pub fn drop_copy(&self, id: ShardId) -> Result<()> {
        let _hosting = self.hosting.lock().unwrap_or_else(|e| e.into_inner());
        self.unhost_locked(id);
        if let Ok(mut txns) = self.txns.lock() {
            txns.retain(|(s, _), _| *s != id);
        }
        self.remove_file(id)
    }

    fn shard_path(&self, id: ShardId) -> PathBuf {
        self.data_dir.join(format!("shard-{id}.redb"))
    }

    /// Deletes a copy's file and its journal (the file first: a journal without its file
    /// is never read, see `crate::journal`).
    fn remove_file(&self, id: ShardId) -> Result<()> {
        let path = self.shard_path(id);
        for file in [path.clone(), crate::journal::path_for(&path)] {
            match std::fs::remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(e)),
            }
        }
        Ok(())
    }

    /// Shard files in the data directory, hosted or not (a copy whose move finished while
    /// this node was down is found here and removed).
    pub fn shard_files(&self) -> Vec<ShardId> {
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("shard-")?
                    .strip_suffix(".redb")?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// The placement epoch recorded in a copy's file, hosted or not.
    pub fn stored_epoch(&self, id: ShardId) -> Result<u64> {
        // Not while `host` may be opening the same file.
        let _hosting = self.hosting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = self.shard(id) {
            return Ok(s.placement_epoch());
        }
        let shard = Shard::open(
            &self.shard_path(id),
            id,
            self.id,
            self.hlc.clone(),
            self.opts.clone(),
        )?;
        Ok(shard.placement_epoch())
    }

    /// Deletes the file of a shard this node does not host.
    pub fn remove_unhosted_file(&self, id: ShardId) -> Result<()> {
        let _hosting = self.hosting.lock().unwrap_or_else(|e| e.into_inner());
        if self.shard(id).is_some() {
            return Err(Error::internal(format!("shard {id} is hosted here")));
        }
        self.remove_file(id)
    }

    pub fn shard(&self, id: ShardId) -> Option<Arc<Shard>> {
        self.shards.read().ok()?.get(&id).map(|h| h.shard.clone())
    }

    pub fn hosted(&self) -> Vec<ShardId> {
        self.shards
            .read()
            .map(|s| s.keys().copied().collect())
            .unwrap_or_default()
    }

    fn hosted_entry(&self, id: ShardId) -> Result<Hosted> {
        self.shards
            .read()
            .map_err(|_| Error::internal("poisoned lock"))?
            .get(&id)
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    sqlstate::CANNOT_CONNECT_NOW,
                    format!("shard {id} is not hosted on node {}", self.id),
                )
            })
    }

    async fn execute(
        &self,
        id: ShardId,
        epoch: u64,
        sql_text: String,
        params: Vec<Value>,
        spec: Option<TxnSpec>,
        caller: Caller,
    ) -> Result<Response> {
        let Caller {
            conn,
            deadline,
            lock_timeout,
            cancelled,
        } = caller;
        let hosted = self.hosted_entry(id)?;
        if hosted.gate.lock().is_ok_and(|g| g.sealed) {
            return Err(moving(id));
        }
        let parsed = self.parse(&sql_text, !params.is_empty())?;
        let writes = parsed.writes;
        // Reads too: a router whose map is older (or newer) than ours may have planned for
        // other hash ranges (a split) or another primary; it holds the statement and plans
        // or routes it again.
        if hosted.epoch != epoch || (writes && !hosted.primary) {
            return Err(Error::new(
                sqlstate::READ_ONLY_SQL_TRANSACTION,
                format!(
                    "shard {id} on node {} is not primary in epoch {epoch} (role {}, epoch {})",
                    self.id,
                    if hosted.primary { "primary" } else { "replica" },
                    hosted.epoch
                ),
            ));
        }
        let shard = hosted.shard;
        let Some(spec) = spec else {
            // A lookup by key is cheaper than the hand-off to a blocking thread.
            if let [stmt] = parsed.stmts.as_slice()
                && !writes
                && parsed.point
                && let Some(result) =
                    shard.read_points(stmt, &params, parsed.read_plans.as_ref())?
            {
                return Ok(Response::Result(result));
            }
            let admitted = if writes {
                let mut g = hosted
                    .gate
                    .lock()
                    .map_err(|_| Error::internal("poisoned lock"))?;
                if g.frozen {
                    return Err(moving(id));
                }
                g.writers += 1;
                Some(Admitted(hosted.gate.clone()))
            } else {
                None
            };
            let result = tokio::task::spawn_blocking(move || {
                let _admitted = admitted;
                let mut last = None;
                for stmt in parsed.stmts.iter() {
                    last = Some(shard.execute_until(
                        stmt,
                        &params,
                        deadline,
                        Some(cancelled.clone()),
                        lock_timeout,
                    )?);
                }
                last.ok_or_else(|| Error::syntax("empty query"))
            })
            .await
            .map_err(|e| Error::internal(format!("executor task failed: {e}")))??;
            return Ok(Response::Result(result));
        };
        let slot = {
            let mut txns = self
                .txns
                .lock()
                .map_err(|_| Error::internal("poisoned lock"))?;
            // A new transaction on a frozen shard waits for the switch (a read-only one can
            // go on: it will never write here).
            if !spec.read_only && !txns.contains_key(&(id, spec.id)) {
                let g = hosted
                    .gate
                    .lock()
                    .map_err(|_| Error::internal("poisoned lock"))?;
                if g.frozen {
                    return Err(moving(id));
                }
            }
            let open = txns.entry((id, spec.id)).or_insert_with(|| {
                let timeout =
                    (spec.lock_timeout_ms > 0).then(|| Duration::from_millis(spec.lock_timeout_ms));
                let txn = shard.begin(spec.id, spec.isolation, spec.read_only, timeout);
                OpenTxn {
                    conn,
                    shard: shard.clone(),
                    txn: Arc::new(Mutex::new(Some(txn))),
                }
            });
            open.txn.clone()
        };
        let quick = match parsed.stmts.as_slice() {
            [stmt] if parsed.quick => run_quickly(
                &shard,
                &slot,
                stmt,
                &params,
                deadline,
                lock_timeout,
                &cancelled,
            ),
            _ => None,
        };
        let result = match quick {
            Some(result) => result,
            None => {
                let run_shard = shard.clone();
                tokio::task::spawn_blocking(move || {
                    let mut guard = slot.lock().map_err(|_| Error::internal("poisoned transaction"))?;
                    let txn = guard.as_mut().ok_or_else(|| {
                        Error::new(sqlstate::IN_FAILED_SQL_TRANSACTION, "current transaction is aborted, commands ignored until end of transaction block")
                    })?;
                    txn.deadline = deadline;
                    txn.set_lock_timeout(lock_timeout);
                    txn.cancelled = Some(cancelled.clone());
                    let mut last = None;
                    for stmt in parsed.stmts.iter() {
                        match run_shard.execute_in(txn, stmt, &params) {
                            Ok(r) => last = Some(r),
                            Err(e) => return Err(statement_failed(&run_shard, &mut guard, e)),
                        }
                    }
                    last.ok_or_else(|| Error::syntax("empty query"))
                })
                .await
                .map_err(|e| Error::internal(format!("executor task failed: {e}")))?
            }
        };
        if result.is_err()
            && let Ok(mut txns) = self.txns.lock()
            && txns
                .get(&(id, spec.id))
                .is_some_and(|o| o.txn.lock().map(|t| t.is_none()).unwrap_or(true))
        {
            txns.remove(&(id, spec.id));
        }
        Ok(Response::Result(result?))
    }

    /// Commits or rolls back a client transaction on one shard.
    async fn end_txn(
        &self,
        id: ShardId,
        txn_id: u64,
        commit: bool,
        writes_elsewhere: bool,
    ) -> Result<Response> {
        // Counted before the transaction leaves the open table, so a move's drain never sees
        // neither while the commit is running.
        let _admitted = self.admit_finish(id);
        let open = self.take_open(id, txn_id)?;
        let Some(open) = open else {
            return if commit {
                Err(part_lost(id))
            } else {
                Ok(Response::Ok)
            };
        };
        finish_open(open, move |shard, txn| match txn {
            Some(t) if commit => shard.commit_part(t, writes_elsewhere).map(|_| Response::Ok),
            Some(t) => {
                shard.rollback(t);
                Ok(Response::Ok)
            }
            None if commit => Err(aborted_part()),
            None => Ok(Response::Ok),
        })
        .await
    }

    /// Records a transaction's outcome on its coordinator shard unless one stands; answers
    /// the one that stands.
    async fn decide_txn(&self, id: ShardId, txn_id: u64, commit: bool) -> Result<Response> {
        let shard = self.hosted_entry(id)?.shard;
        let decided = tokio::task::spawn_blocking(move || shard.decide(txn_id, commit))
            .await
            .map_err(|e| Error::internal(e.to_string()))??;
        if !decided {
            // The coordinator's own part is never prepared; if its router stopped before
            // `CommitDecide`, it is still open here. It can never commit now: free its locks.
            if let Some(open) = self.take_open(id, txn_id)? {
                finish_open(open, |shard, txn| {
                    if let Some(t) = txn {
                        shard.rollback(t);
                    }
                    Ok(Response::Ok)
                })
                .await?;
            }
        }
        Ok(Response::Decision(Some(decided)))
    }

    /// Two-phase commit on the coordinator shard: its own part commits together with the
    /// decision (see `Request::CommitDecide`).
    async fn commit_decide(&self, id: ShardId, txn_id: u64) -> Result<Response> {
        let _admitted = self.admit_finish(id);
        let Some(open) = self.take_open(id, txn_id)? else {
            return Err(part_lost(id));
        };
        finish_open(open, move |shard, txn| match txn {
            Some(t) => shard
                .commit_deciding(t)
                .map(|_| Response::Decision(Some(true))),
            None => Err(aborted_part()),
        })
        .await
    }

    /// Two-phase commit, phase one, for a transaction open on one of this node's shards.
    async fn prepare_txn(
        &self,
        id: ShardId,
        txn_id: u64,
        coordinator: ShardId,
    ) -> Result<Response> {
        let _admitted = self.admit_finish(id);
        let open = self.take_open(id, txn_id)?;
        let Some(open) = open else {
            return Err(part_lost(id));
        };
        if let Ok(mut p) = self.preparers.lock() {
            p.insert((id, txn_id), open.conn);
        }
        let now = self.hlc_millis();
        finish_open(open, move |shard, txn| match txn {
            Some(t) => shard.prepare(t, coordinator, now).map(|_| Response::Ok),
            None => Err(aborted_part()),
        })
        .await
    }

    /// Counts a COMMIT or PREPARE of an open transaction as a write in flight until dropped
    /// (it passes a frozen gate: the transaction was admitted before the freeze).
    fn admit_finish(&self, id: ShardId) -> Option<Admitted> {
        let hosted = self.hosted_entry(id).ok()?;
        let mut g = hosted.gate.lock().ok()?;
        g.writers += 1;
        drop(g);
        Some(Admitted(hosted.gate.clone()))
    }

    fn hlc_millis(&self) -> u64 {
        protocol::clock::Hlc::millis(self.hlc.now())
    }

    fn take_open(&self, id: ShardId, txn_id: u64) -> Result<Option<OpenTxn>> {
        Ok(self
            .txns
            .lock()
            .map_err(|_| Error::internal("poisoned lock"))?
            .remove(&(id, txn_id)))
    }

    /// Rolls back every transaction a vanished connection left open.
    /// True while the connection that prepared `txn` on `shard` is open (its router lives).
    pub fn preparer_connected(&self, shard: ShardId, txn: u64) -> bool {
        self.preparers
            .lock()
            .is_ok_and(|p| p.contains_key(&(shard, txn)))
    }

    /// Forgets preparers of transactions no longer prepared on `shard`.
    pub fn prune_preparers(&self, shard: ShardId, still_prepared: &[u64]) {
        if let Ok(mut p) = self.preparers.lock() {
            p.retain(|(s, t), _| *s != shard || still_prepared.contains(t));
        }
    }

    fn abandon(&self, conn: u64) {
        if let Ok(mut p) = self.preparers.lock() {
            p.retain(|_, c| *c != conn);
        }
        let orphans: Vec<OpenTxn> = match self.txns.lock() {
            Ok(mut txns) => {
                let keys: Vec<(ShardId, u64)> = txns
                    .iter()
                    .filter(|(_, o)| o.conn == conn)
                    .map(|(k, _)| *k)
                    .collect();
                keys.into_iter().filter_map(|k| txns.remove(&k)).collect()
            }
            Err(_) => return,
        };
        for o in orphans {
            if let Ok(mut t) = o.txn.lock()
                && let Some(t) = t.take()
            {
                o.shard.rollback(t);
            }
        }
    }

    /// Parses `sql_text`, through the cache when the statement is parameterised.
    fn parse(&self, sql_text: &str, cache: bool) -> Result<Arc<Parsed>> {
        if !cache {
            return Ok(Arc::new(Parsed::new(sql::parse(sql_text)?, false)));
        }
        if let Ok(parsed) = self.parsed.lock()
            && let Some(hit) = parsed.get(sql_text)
        {
            return Ok(hit.clone());
        }
        let stmts = Arc::new(Parsed::new(sql::parse(sql_text)?, true));
        if let Ok(mut parsed) = self.parsed.lock() {
            if parsed.len() >= PARSE_CACHE {
                parsed.clear();
            }
            parsed.insert(sql_text.to_string(), stmts.clone());
        }
        Ok(stmts)
    }

    async fn describe(&self, id: ShardId, sql_text: String) -> Result<Response> {
        let shard = self.hosted_entry(id)?.shard;
        let stmts = sql::parse(&sql_text)?;
        let (params, columns) = tokio::task::spawn_blocking(move || match stmts.first() {
            Some(stmt) => shard.describe(stmt),
            None => Ok((Vec::new(), Vec::new())),
        })
        .await
        .map_err(|e| Error::internal(format!("describe task failed: {e}")))??;
        Ok(Response::Described { params, columns })
    }

    /// Streams the change log to a subscriber until it goes away.
    async fn subscribe(
        &self,
        id: ShardId,
        from_lsn: u64,
        split_epoch: Option<u64>,
        reply: &Replier,
    ) -> Result<()> {
        let hosted = self.hosted_entry(id)?;
        let shard = hosted.shard;
        // A shard being split off this one follows it only while this shard's epoch is the
        // one the follower's map names: the split's switch bumps it, and the trim that
        // follows must never reach the new shard's copies (checked after every read of the
        // log or a snapshot, before sending).
        let gate = hosted.gate.clone();
        let valid: Arc<dyn Fn() -> bool + Send + Sync> =
            Arc::new(move || split_epoch.is_none_or(|e| gate.lock().is_ok_and(|g| g.epoch == e)));
        if !valid() {
            return Err(stale_split_source(id));
        }
        let mut lsn_rx = shard.watch_lsn();
        let mut pos = from_lsn;
        // A subscriber ahead of our log has a history we do not: only a snapshot
        // brings it back. (Read from the file, not the LSN watch: the watch is set just after
        // each commit, so it can trail records a reader already sees.)
        let s = shard.clone();
        let stored =
            tokio::task::spawn_blocking(move || s.snapshot()?.state(crate::storage::STATE_LSN))
                .await
                .map_err(|e| Error::internal(format!("log reader failed: {e}")))??;
        let mut need_snapshot = from_lsn > stored;
        loop {
            if need_snapshot {
                // The log no longer reaches back to `pos`, or the subscriber is ahead of us:
                // start it over from a snapshot.
                pos = send_snapshot(shard.clone(), valid.clone(), reply).await?;
                need_snapshot = false;
            }
            let read = move |s: &Shard,
                             limit: usize|
                  -> Result<Option<Vec<protocol::changes::ChangeRecord>>> {
                let snap = s.read_snapshot()?;
                let start = snap.state(crate::storage::STATE_LOG_START)?;
                // Our log went back below what was sent (a snapshot replaced this copy while
                // it served): only a snapshot can bring the subscriber back in line.
                if start > pos + 1 || snap.state(crate::storage::STATE_LSN)? < pos {
                    return Ok(None);
                }
                snap.changes_after(pos, limit).map(Some)
            };
            // A subscriber that keeps up reads a few records just committed, still in redb's
            // cache: cheaper here than the two thread hand-offs of a blocking task, which
            // every commit would pay. One that is catching up reads on a blocking thread.
            let batch = if shard.lsn().saturating_sub(pos) <= INLINE_LOG_READ as u64 {
                read(&shard, INLINE_LOG_READ)?
            } else {
                let s = shard.clone();
                tokio::task::spawn_blocking(move || read(&s, CHANGE_BATCH))
                    .await
                    .map_err(|e| Error::internal(format!("log reader failed: {e}")))??
            };
            match batch {
                None => need_snapshot = true,
                Some(records) if records.first().is_some_and(|r| r.lsn != pos + 1) => {
                    need_snapshot = true
                }
                Some(_) if !valid() => return Err(stale_split_source(id)),
                Some(records) if !records.is_empty() => {
                    pos = records.last().map(|r| r.lsn).unwrap_or(pos);
                    if !reply
                        .send(Response::Stream(StreamItem::Changes(records)))
                        .await
                    {
                        return Ok(());
                    }
                    // Read again only if a commit came meanwhile (a full batch means more are
                    // waiting), not to find the log empty after every send.
                    let newest = *lsn_rx.borrow_and_update();
                    if newest <= pos && !reply.is_closed() {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), lsn_rx.changed()).await;
                    }
                }
                Some(_) => {
                    // Caught up: wait for the next commit, checking now and then that the
                    // subscriber is still there.
                    lsn_rx.borrow_and_update();
                    if *lsn_rx.borrow() > pos {
                        continue;
                    }
                    if reply.is_closed() {
                        return Ok(());
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), lsn_rx.changed()).await;
                }
            }
        }
    }
}

/// A split follower's map is behind: the shard it follows has switched (its epoch moved on).
fn stale_split_source(id: ShardId) -> Error {
    Error::new(
        sqlstate::CANNOT_CONNECT_NOW,
        format!("shard {id} is no longer being split at the epoch the subscriber knows"),
    )
}

/// A transaction's part on a shard is gone (the node restarted, or its connection dropped):
/// it did not commit, and retrying the whole transaction is safe.
/// The checksum of a shard and the LSN it was taken at; with `lsn`, on a replica, first lets
/// applying run up to exactly that LSN and holds it there, then lifts the hold.
async fn checksum_at(shard: Arc<Shard>, lsn: Option<u64>) -> Result<Response> {
    if let Some(l) = lsn {
        shard.hold_apply(Some(l));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let at = shard.lsn();
            if at == l {
                break;
            }
            if at > l || std::time::Instant::now() > deadline {
                shard.hold_apply(None);
                return Err(Error::new(
                    sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("shard {} is at LSN {at}, not {l}", shard.id),
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let s = shard.clone();
    let taken = tokio::task::spawn_blocking(move || s.checksum())
        .await
        .map_err(|e| Error::internal(format!("checksum task failed: {e}")));
    if lsn.is_some() {
        shard.hold_apply(None);
    }
    let (at, sum) = taken??;
    if lsn.is_some_and(|l| l != at) {
        return Err(Error::internal(format!(
            "shard {} moved past the checksum's LSN",
            shard.id
        )));
    }
    Ok(Response::LsnChecksum { lsn: at, sum })
}

/// A transaction whose part here was rolled back by an earlier error cannot commit.
fn aborted_part() -> Error {
    Error::new(
        sqlstate::IN_FAILED_SQL_TRANSACTION,
        "transaction was aborted",
    )
}

fn part_lost(shard: ShardId) -> Error {
    Error::new(
        sqlstate::SERIALIZATION_FAILURE,
        format!(
            "the transaction's part on shard {shard} was lost (its node restarted); it did not commit"
        ),
    )
}

/// Runs a quick-shaped statement of an open transaction right here (see `point_read`):
/// `None` if it must go to a blocking thread after all — it needed a scan or a held lock,
/// or the slot is busy (a statement of this transaction still runs) or empty.
fn run_quickly(
    shard: &Shard,
    slot: &Mutex<Option<Transaction>>,
    stmt: &sql::Statement,
    params: &[Value],
    deadline: Option<std::time::Instant>,
    lock_timeout: Option<Duration>,
    cancelled: &Arc<std::sync::atomic::AtomicBool>,
) -> Option<Result<protocol::schema::QueryResult>> {
    let mut guard = slot.try_lock().ok()?;
    let txn = guard.as_mut()?;
    txn.deadline = deadline;
    txn.set_lock_timeout(lock_timeout);
    txn.cancelled = Some(cancelled.clone());
    match shard.execute_in_quickly(txn, stmt, params) {
        Ok(Some(r)) => Some(Ok(r)),
        Ok(None) => None,
        Err(e) => Some(Err(statement_failed(shard, &mut guard, e))),
    }
}

/// A statement of an open transaction failed with `e`. PostgreSQL aborts the whole
/// transaction on an error. With a savepoint to return to it stays (failed) so ROLLBACK TO
/// can recover it; otherwise its writes and locks go now, not at the client's ROLLBACK.
fn statement_failed(shard: &Shard, slot: &mut Option<Transaction>, e: Error) -> Error {
    match slot {
        Some(txn) if txn.has_savepoints() => txn.failed = true,
        _ => {
            if let Some(t) = slot.take() {
                shard.rollback(t);
            }
        }
    }
    e
}

/// Ends an open transaction on a blocking thread: `f` gets its shard and the transaction
/// (`None` if an error already rolled it back).
async fn finish_open(
    open: OpenTxn,
    f: impl FnOnce(&Shard, Option<Transaction>) -> Result<Response> + Send + 'static,
) -> Result<Response> {
    tokio::task::spawn_blocking(move || {
        let txn = open
            .txn
            .lock()
            .map_err(|_| Error::internal("poisoned transaction"))?
            .take();
        f(&open.shard, txn)
    })
    .await
    .map_err(|e| Error::internal(format!("transaction task failed: {e}")))?
}

/// Sends a consistent snapshot of the shard; returns the LSN it stands at.
async fn send_snapshot(
    shard: Arc<Shard>,
    valid: Arc<dyn Fn() -> bool + Send + Sync>,
    reply: &Replier,
) -> Result<u64> {
    let (tx, mut rx) = mpsc::channel::<Result<StreamItem>>(4);
    let id = shard.id;
    tokio::task::spawn_blocking(move || {
        let produce = || -> Result<()> {
            let snap = shard.snapshot()?;
            if !valid() {
                return Err(stale_split_source(id));
            }
            let lsn = snap.state(crate::storage::STATE_LSN)?;
            let tables = snap.schemas()?;
            let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
            tx.blocking_send(Ok(StreamItem::SnapshotBegin { lsn, tables }))
                .map_err(|_| Error::connection("subscriber gone"))?;
            for name in names {
                let mut chunk = Vec::with_capacity(SNAPSHOT_CHUNK);
                for entry in snap.raw_rows(&name)? {
                    chunk.push(entry?);
                    if chunk.len() == SNAPSHOT_CHUNK {
                        let rows = std::mem::take(&mut chunk);
                        tx.blocking_send(Ok(StreamItem::SnapshotRows {
                            table: name.clone(),
                            rows,
                        }))
                        .map_err(|_| Error::connection("subscriber gone"))?;
                    }
                }
                if !chunk.is_empty() {
                    tx.blocking_send(Ok(StreamItem::SnapshotRows {
                        table: name.clone(),
                        rows: chunk,
                    }))
                    .map_err(|_| Error::connection("subscriber gone"))?;
                }
            }
            tx.blocking_send(Ok(StreamItem::SnapshotEnd { lsn }))
                .map_err(|_| Error::connection("subscriber gone"))?;
            Ok(())
        };
        if let Err(e) = produce() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mut end = None;
    while let Some(item) = rx.recv().await {
        let item = item?;
        if let StreamItem::SnapshotEnd { lsn } = item {
            end = Some(lsn);
        }
        if !reply.send(Response::Stream(item)).await {
            return Err(Error::connection("subscriber gone"));
        }
    }
    end.ok_or_else(|| Error::internal("snapshot ended early"))
}

impl Service for NodeService {
    async fn handle(self: Arc<Self>, req: Request, reply: Replier) {
        let result = match req {
            Request::Execute {
                shard,
                epoch,
                sql,
                params,
                txn,
                timeout_ms,
                lock_timeout_ms,
            } => {
                let deadline = (timeout_ms > 0)
                    .then(|| std::time::Instant::now() + Duration::from_millis(timeout_ms));
                let lock_timeout =
                    (lock_timeout_ms > 0).then(|| Duration::from_millis(lock_timeout_ms));
                self.execute(
                    shard,
                    epoch,
                    sql,
                    params,
                    txn,
                    Caller {
                        conn: reply.conn,
                        deadline,
                        lock_timeout,
                        cancelled: reply.cancelled.clone(),
                    },
                )
                .await
            }
            Request::EndTxn {
                shard,
                txn,
                commit,
                writes_elsewhere,
            } => self.end_txn(shard, txn, commit, writes_elsewhere).await,
            Request::PrepareTxn {
                shard,
                txn,
                coordinator,
            } => self.prepare_txn(shard, txn, coordinator).await,
            Request::CommitDecide { shard, txn } => self.commit_decide(shard, txn).await,
            Request::DecideTxn { shard, txn, commit } => self.decide_txn(shard, txn, commit).await,
            Request::TxnDecision { shard, txn } => match self.hosted_entry(shard) {
                Ok(h) => h.shard.decision(txn).map(Response::Decision),
                Err(e) => Err(e),
            },
            Request::FinishPrepared { shard, txn, commit } => match self.hosted_entry(shard) {
                Ok(h) => tokio::task::spawn_blocking(move || {
                    h.shard.finish_prepared(txn, commit).map(|_| Response::Ok)
                })
                .await
                .unwrap_or_else(|e| Err(Error::internal(e.to_string()))),
                Err(e) => Err(e),
            },
            Request::ReleasePrepared { shard, txn } => {
                if let Ok(mut p) = self.preparers.lock() {
                    p.remove(&(shard, txn));
                }
                Ok(Response::Ok)
            }
            Request::ForgetDecision { shard, txn } => match self.hosted_entry(shard) {
                Ok(h) if h.shard.forget_decision(txn) => tokio::task::spawn_blocking(move || {
                    h.shard.write_forgotten().map(|_| Response::Ok)
                })
                .await
                .unwrap_or_else(|e| Err(Error::internal(e.to_string()))),
                Ok(_) => Ok(Response::Ok),
                Err(e) => Err(e),
            },
            Request::Describe { shard, sql } => self.describe(shard, sql).await,
            Request::Subscribe {
                shard,
                from_lsn,
                subscriber,
                split_epoch,
            } => {
                tracing::debug!(shard, from_lsn, subscriber, "replica subscribed");
                match self.subscribe(shard, from_lsn, split_epoch, &reply).await {
                    Ok(()) => Ok(Response::End),
                    Err(e) => Err(e),
                }
            }
            // Sent by older replicas after every apply; nothing reads it.
            Request::ReportApplied { .. } => Ok(Response::Ok),
            Request::ShardStats { shard } => match self.hosted_entry(shard) {
                Ok(h) => {
                    // Read `frozen` before counting: once frozen is seen, no transaction opens.
                    // Read `writers` after counting: a COMMIT is admitted as a writer before
                    // it leaves the open table, so one that left before the count is still
                    // counted here until its write is done.
                    let frozen = h.gate.lock().map(|g| g.frozen).unwrap_or(false);
                    let open_txns = self
                        .txns
                        .lock()
                        .map(|t| t.keys().filter(|(s, _)| *s == shard).count() as u64)
                        .unwrap_or(0);
                    let (sealed, writers) = h
                        .gate
                        .lock()
                        .map(|g| (g.sealed, g.writers))
                        .unwrap_or((false, 0));
                    let (primary, epoch) = (h.primary, h.epoch);
                    tokio::task::spawn_blocking(move || {
                        h.shard.stats().map(|mut st| {
                            st.primary = primary;
                            st.epoch = epoch;
                            st.frozen = frozen;
                            st.sealed = sealed;
                            st.writers = writers;
                            st.open_txns = open_txns;
                            Response::ShardStats(st)
                        })
                    })
                    .await
                    .unwrap_or_else(|e| Err(Error::internal(e.to_string())))
                }
                Err(e) => Err(e),
            },
            Request::HoldApply { shard } => match self.hosted_entry(shard) {
                Ok(h) if h.primary => Err(Error::internal(format!(
                    "shard {shard} is primary on node {}: nothing to hold",
                    self.id
                ))),
                Ok(h) => {
                    // Hold first, then read where applying stopped: a batch in flight may
                    // still land, so report the position once it has.
                    h.shard.hold_apply(Some(h.shard.lsn()));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let lsn = h.shard.lsn();
                    h.shard.hold_apply(Some(lsn));
                    Ok(Response::Lsn(lsn))
                }
                Err(e) => Err(e),
            },
            Request::ChecksumAt { shard, lsn } => match self.hosted_entry(shard) {
                Ok(h) => checksum_at(h.shard, lsn).await,
                Err(e) => Err(e),
            },
            Request::TrimToRange { shard, range, keys } => match self.hosted_entry(shard) {
                Ok(h) if !h.primary => Err(Error::internal(format!(
                    "shard {shard} is not primary on node {}",
                    self.id
                ))),
                Ok(h) => tokio::task::spawn_blocking(move || {
                    h.shard.trim_to_range(&keys, range).map(Response::Lsn)
                })
                .await
                .unwrap_or_else(|e| Err(Error::internal(e.to_string()))),
                Err(e) => Err(e),
            },
            Request::ShardDecisions { shard } => match self.hosted_entry(shard) {
                Ok(h) => h.shard.decisions().map(Response::Decisions),
                Err(e) => Err(e),
            },
            Request::ImportDecisions { shard, decisions } => match self.hosted_entry(shard) {
                Ok(h) => tokio::task::spawn_blocking(move || {
                    h.shard.import_decisions(&decisions).map(|_| Response::Ok)
                })
                .await
                .unwrap_or_else(|e| Err(Error::internal(e.to_string()))),
                Err(e) => Err(e),
            },
            Request::ShardChecksum { shard } => match self.hosted_entry(shard) {
                Ok(h) => tokio::task::spawn_blocking(move || {
                    h.shard.checksum().map(|(_, sum)| Response::Checksum(sum))
                })
                .await
                .unwrap_or_else(|e| Err(Error::internal(e.to_string()))),
                Err(e) => Err(e),
            },
            other => Err(Error::unsupported(format!(
                "a storage node does not serve {:?}",
                request_name(&other)
            ))),
        };
        let resp = result.unwrap_or_else(Response::Error);
        let _ = reply.send(resp).await;
    }

    async fn disconnected(self: Arc<Self>, conn: u64) {
        let _ = tokio::task::spawn_blocking(move || self.abandon(conn)).await;
    }
}

fn request_name(req: &Request) -> &'static str {
    match req {
        Request::MetaGet | Request::MetaWatch { .. } | Request::MetaPropose(_) => "meta requests",
        Request::MetaHeartbeat { .. } | Request::MetaStatus | Request::Raft { .. } => {
            "meta requests"
        }
        _ => "this request",
    }
}

#[cfg(test)]
mod tests {
    use protocol::auth::ClusterSecret;
    use protocol::clock::SystemClock;
    use protocol::message::Isolation;
    use protocol::rpc::Pool;

    use super::*;

    /// A node hosting shard 0 as primary, served on a loopback port, and an in-process pool.
    async fn node(name: &str) -> (Arc<NodeService>, Pool, String, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "tessera-node-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let hlc = Arc::new(Hlc::new(Arc::new(SystemClock)));
        let opts = ShardOptions {
            log_retain: 1000,
            log_retain_bytes: 64 << 20,
            sync_commits: false,
            ..ShardOptions::default()
        };
        let svc = Arc::new(NodeService::new(1, dir.clone(), hlc, opts).unwrap());
        svc.host(0, true, 1, false, false).unwrap();
        let listener = protocol::net::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let secret = ClusterSecret::new("s");
        tokio::spawn(protocol::rpc::serve(listener, secret.clone(), svc.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        (svc, Pool::new(secret).with_local_calls(), addr, dir)
    }

    fn execute(sql: &str, txn: Option<u64>) -> Request {
        Request::Execute {
            shard: 0,
            epoch: 1,
            sql: sql.into(),
            params: Vec::new(),
            txn: txn.map(|id| TxnSpec {
                id,
                isolation: Isolation::ReadCommitted,
                read_only: false,
                lock_timeout_ms: 0,
            }),
            timeout_ms: 0,
            lock_timeout_ms: 0,
        }
    }

    async fn balance(pool: &Pool, addr: &str) -> Vec<Vec<Value>> {
        match pool
            .call(addr, execute("SELECT bal FROM a WHERE id = 1", None))
            .await
            .unwrap()
        {
            Response::Result(r) => r.rows,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn commit_decide_commits_with_the_decision_and_an_abort_frees_the_open_part() {
        let (svc, pool, addr, dir) = node("commit-decide").await;
        for sql in [
            "CREATE TABLE a (id int PRIMARY KEY, bal bigint)",
            "INSERT INTO a VALUES (1, 100)",
        ] {
            pool.call(&addr, execute(sql, None)).await.unwrap();
        }
        let update = "UPDATE a SET bal = bal - 10 WHERE id = 1";
        let shard = svc.shard(0).unwrap();

        // The coordinator's part commits with its decision.
        pool.call(&addr, execute(update, Some(10))).await.unwrap();
        let decided = pool
            .call(&addr, Request::CommitDecide { shard: 0, txn: 10 })
            .await
            .unwrap();
        assert_eq!(decided, Response::Decision(Some(true)));
        assert_eq!(shard.decision(10).unwrap(), Some(true));
        assert_eq!(balance(&pool, &addr).await, vec![vec![Value::Int(90)]]);

        // Its router went away before CommitDecide; a resolver's abort frees the open part.
        pool.call(&addr, execute(update, Some(11))).await.unwrap();
        assert_eq!(shard.locked_rows(), 1);
        let decided = pool
            .call(
                &addr,
                Request::DecideTxn {
                    shard: 0,
                    txn: 11,
                    commit: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(decided, Response::Decision(Some(false)));
        assert_eq!(shard.locked_rows(), 0, "the open part's locks are gone");
        let late = pool
            .call(&addr, Request::CommitDecide { shard: 0, txn: 11 })
            .await
            .unwrap_err();
        assert_eq!(late.code, sqlstate::SERIALIZATION_FAILURE);
        assert_eq!(balance(&pool, &addr).await, vec![vec![Value::Int(90)]]);
        drop(svc);
        let _ = std::fs::remove_dir_all(dir);
    }
}
