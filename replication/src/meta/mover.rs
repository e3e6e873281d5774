//! The job runner: the meta leader drives shard moves, one at a time, through their phases.
//!
//! ```text
//!  Queued   ─► propose: target joins the shard's replicas          (snapshot, then the log)
//!  Copying  ─► poll ShardStats of primary and target; record progress
//!              target within CATCHUP_LAG records ─► verify: hold the target's applying,
//!              checksum the primary now (LSN L), let the target apply exactly to L and
//!              checksum it there; equal ─► propose: shard frozen
//!  Frozen   ─► poll the primary until it has closed its write gate, nothing it admitted is
//!              still open (writes, transactions, prepared), and the target's LSN (and row
//!              count) equals its own; carry the 2PC decisions across; propose, in one
//!              entry: new primary or replica set, epoch + 1, unfrozen, job done
//!              too slow (DRAIN_WAIT) ─► propose: unfrozen, back to Copying, try again
//!  mismatch, vanished shard or node, too many tries ─► propose: target removed, unfrozen,
//!              job rolled back
//!
//!  split: Queued adds the new shard (split_from = the old one: its copies follow the old
//!  primary, nothing routes to it); Copying and Frozen as above with the new shard as the
//!  target; the switch gives the old shard the lower half of its range and the new shard the
//!  upper half, both sealed (nothing answered, reads included); Trimming has each primary
//!  delete the other half's rows (TrimToRange), then unseals both.
//! ```
//! Every decision is re-derived from the map and from what the nodes report now, so a new
//! leader (after the old one died) simply continues from the recorded phase; a `JobStep` is
//! refused unless the job is still in the phase the runner read, so two runners cannot both
//! act. Nodes act on the map alone: the source drops its copy once the map no longer places
//! it there, the target drops a rolled-back copy the same way.

use std::sync::Arc;
use std::time::Duration;

use protocol::cluster::{ClusterState, MetaCommand, ShardId, ShardInfo};
use protocol::jobs::{JobKind, JobPhase, JobProgress, MoveJob};
use protocol::message::{Request, Response, ShardStats};
use protocol::rpc::Pool;
use protocol::{Error, Result};
use tokio::sync::watch;

use super::types::MetaRaft;

/// The target may lag this many change records when the freeze begins; the rest arrive
/// while new writes wait.
const CATCHUP_LAG: u64 = 64;
/// How long a freeze may wait for admitted writes to finish before it lets go and tries again.
const DRAIN_WAIT_MS: u64 = 1_000;
/// Freezes tried before the move gives up and rolls back.
const MAX_ATTEMPTS: u32 = 30;
/// How often progress is written to the map while copying.
const PROGRESS_EVERY_MS: u64 = 500;
/// Bound on one call to a node.
const CALL_WAIT: Duration = Duration::from_secs(3);
/// Bound on a call that scans a shard.
const SCAN_WAIT: Duration = Duration::from_secs(600);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs on every voter; acts only while this voter leads.
pub async fn run(
    raft: MetaRaft,
    id: u64,
    pool: Pool,
    state_rx: watch::Receiver<Arc<ClusterState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut role = raft.server_metrics();
    let mut runner = Runner {
        raft,
        pool,
        last_progress_ms: 0,
    };
    let mut was_leading = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let leading = super::types::leads(&mut role, id);
        let mut pause = Duration::from_millis(500);
        if leading {
            // A new leader first applies everything committed before it acts on the map.
            if !was_leading && runner.raft.ensure_linearizable().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let state = state_rx.borrow().clone();
            if let Some(job) = state.active_job().cloned() {
                pause = match runner.step(&state, &job).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!(job = job.id, "move step failed: {e}");
                        Duration::from_millis(100)
                    }
                };
            }
        }
        was_leading = leading;
        tokio::select! {
            r = role.changed() => if r.is_err() { return },
            _ = shutdown.changed() => {},
            _ = tokio::time::sleep(pause) => {},
        }
    }
}

struct Runner {
    raft: MetaRaft,
    pool: Pool,
    last_progress_ms: u64,
}

/// The shard a job copies into: the moved shard itself, or a split's new shard.
fn target_shard(job: &MoveJob) -> ShardId {
    match job.kind {
        JobKind::Move => job.shard,
        JobKind::Split { new_shard } => new_shard,
    }
}

impl Runner {
    /// Takes one step of `job`; returns how soon to look again.
    async fn step(&mut self, state: &ClusterState, job: &MoveJob) -> Result<Duration> {
        let Some(shard) = state.shards.get(&job.shard).cloned() else {
            return self
                .finish(
                    job,
                    JobPhase::RolledBack,
                    vec![],
                    vec![],
                    Some("the shard no longer exists"),
                )
                .await;
        };
        for n in [job.to, shard.primary] {
            if !state.nodes.contains_key(&n) && job.phase != JobPhase::Trimming {
                let why = format!("node {n} is no longer registered");
                return self.roll_back(state, job, &shard, &why).await;
            }
        }
        if job.cancel_requested && job.phase != JobPhase::Trimming {
            return self
                .roll_back(state, job, &shard, "cancelled by the operator")
                .await;
        }
        match job.phase {
            JobPhase::Queued => self.start(state, job, shard).await,
            JobPhase::Copying => self.copy(state, job, shard).await,
            JobPhase::Frozen => self.switch(state, job, shard).await,
            JobPhase::Trimming => self.trim(state, job, shard).await,
            JobPhase::Done | JobPhase::RolledBack => Ok(Duration::from_millis(500)),
        }
    }

    async fn start(
        &mut self,
        state: &ClusterState,
        job: &MoveJob,
        mut shard: ShardInfo,
    ) -> Result<Duration> {
        let progress = JobProgress {
            started_ms: now_ms(),
            ..job.progress.clone()
        };
        let placed = match job.kind {
            JobKind::Move => {
                if !shard.placed_on(job.from) || shard.placed_on(job.to) {
                    let why = format!(
                        "shard {} no longer has a copy on node {} and none on node {}",
                        shard.id, job.from, job.to
                    );
                    return self
                        .finish(job, JobPhase::RolledBack, vec![], vec![], Some(&why))
                        .await;
                }
                shard.replicas.push(job.to);
                shard
            }
            JobKind::Split { new_shard } => {
                if state.shards.contains_key(&new_shard) {
                    let why = format!("shard id {new_shard} was taken meanwhile");
                    return self
                        .finish(job, JobPhase::RolledBack, vec![], vec![], Some(&why))
                        .await;
                }
                let Some((_, upper)) = shard.range.halves() else {
                    return self
                        .finish(
                            job,
                            JobPhase::RolledBack,
                            vec![],
                            vec![],
                            Some("the range cannot be halved"),
                        )
                        .await;
                };
                let copies = state
                    .keyspaces
                    .get(&shard.keyspace)
                    .map_or(1, |k| k.replication_factor.max(1) as usize);
                ShardInfo {
                    id: new_shard,
                    keyspace: shard.keyspace.clone(),
                    range: upper,
                    primary: job.to,
                    replicas: least_loaded(state, shard.id, job.to, copies - 1),
                    epoch: 1,
                    frozen: false,
                    sealed: false,
                    split_from: Some(shard.id),
                }
            }
        };
        tracing::info!(job = job.id, shard = job.shard, to = job.to, kind = ?job.kind, "job starts copying");
        self.propose(job, JobPhase::Copying, progress, None, vec![placed], vec![])
            .await?;
        Ok(Duration::from_millis(50))
    }

    async fn copy(
        &mut self,
        state: &ClusterState,
        job: &MoveJob,
        mut shard: ShardInfo,
    ) -> Result<Duration> {
        let target_id = target_shard(job);
        let primary = self.stats(state, shard.id, shard.primary).await?;
        // The target answers once it hosts the copy; until then it has copied nothing.
        let target = self.stats(state, target_id, job.to).await.ok();
        let mut progress = job.progress.clone();
        progress.rows_total = primary.rows;
        progress.bytes_total = primary.bytes;
        progress.rows_copied = target.as_ref().map_or(0, |t| t.rows);
        progress.bytes_copied = target.as_ref().map_or(0, |t| t.bytes);
        progress.lag = primary
            .lsn
            .saturating_sub(target.as_ref().map_or(0, |t| t.lsn));
        let caught_up = target.is_some() && progress.lag <= CATCHUP_LAG;
        if caught_up && progress.verified_lsn == 0 {
            // Compared while writes go on, so the pause does not grow with the shard: from
            // the verified LSN on, the log (applied gap-free, in order) keeps both equal.
            match self.verify(state, &shard, target_id, job.to).await? {
                Some(lsn) => progress.verified_lsn = lsn,
                None => {
                    let why = "the target's checksum differs from the primary's at the same LSN";
                    return self.roll_back(state, job, &shard, why).await;
                }
            }
        }
        if caught_up {
            progress.attempts += 1;
            progress.frozen_at_ms = now_ms();
            shard.frozen = true;
            tracing::info!(
                job = job.id,
                shard = shard.id,
                attempt = progress.attempts,
                "job freezes the shard for its switch"
            );
            self.propose(job, JobPhase::Frozen, progress, None, vec![shard], vec![])
                .await?;
            return Ok(Duration::from_millis(1));
        }
        let now = now_ms();
        if progress != job.progress
            && now.saturating_sub(self.last_progress_ms) >= PROGRESS_EVERY_MS
        {
            self.last_progress_ms = now;
            self.propose(job, JobPhase::Copying, progress, None, vec![], vec![])
                .await?;
        }
        Ok(Duration::from_millis(50))
    }

    async fn switch(
        &mut self,
        state: &ClusterState,
        job: &MoveJob,
        shard: ShardInfo,
    ) -> Result<Duration> {
        let target_id = target_shard(job);
        let waited = now_ms().saturating_sub(job.progress.frozen_at_ms);
        let primary = self.stats(state, shard.id, shard.primary).await;
        let target = self.stats(state, target_id, job.to).await;
        let ready = match (&primary, &target) {
            (Ok(p), Ok(t)) => {
                p.frozen
                    && p.primary
                    && p.epoch == shard.epoch
                    && p.writers == 0
                    && p.open_txns == 0
                    && p.prepared == 0
                    && t.lsn == p.lsn
                    // The old primary goes right after: the copy must keep it all in a crash.
                    && t.durable_lsn == p.lsn
            }
            _ => false,
        };
        if !ready {
            if waited < DRAIN_WAIT_MS {
                return Ok(Duration::from_millis(2));
            }
            return self.unfreeze(state, job, shard, waited).await;
        }
        let (Ok(p), Ok(t)) = (primary, target) else {
            return Err(Error::internal("stats vanished"));
        };
        if p.rows != t.rows {
            let why = format!(
                "at LSN {} the primary has {} rows and the target {}",
                p.lsn, p.rows, t.rows
            );
            return self.roll_back(state, job, &shard, &why).await;
        }
        let now = now_ms();
        let mut progress = job.progress.clone();
        progress.pause_ms = now.saturating_sub(progress.frozen_at_ms);
        progress.lag = 0;
        progress.rows_copied = p.rows;
        progress.rows_total = p.rows;
        let mut next = shard.clone();
        next.epoch += 1;
        next.frozen = false;
        if let JobKind::Split { .. } = job.kind {
            let (Some((lower, upper)), Some(new)) =
                (shard.range.halves(), state.shards.get(&target_id))
            else {
                return self
                    .roll_back(state, job, &shard, "the split's shards changed under it")
                    .await;
            };
            next.range = lower;
            next.sealed = true;
            let mut new = new.clone();
            new.range = upper;
            new.split_from = None;
            new.sealed = true;
            new.epoch = next.epoch;
            tracing::info!(
                job = job.id,
                shard = shard.id,
                new = new.id,
                "split switched; trimming"
            );
            self.propose(
                job,
                JobPhase::Trimming,
                progress,
                None,
                vec![next, new],
                vec![],
            )
            .await?;
            return Ok(Duration::from_millis(2));
        }
        if job.from == shard.primary {
            // The new primary must answer for the transactions this shard coordinated.
            self.carry_decisions(state, shard.id, shard.primary, job.to)
                .await?;
            next.primary = job.to;
            next.replicas.retain(|n| *n != job.to);
        } else {
            next.replicas.retain(|n| *n != job.from);
        }
        progress.finished_ms = now;
        tracing::info!(
            job = job.id,
            shard = shard.id,
            pause_ms = progress.pause_ms,
            primary = next.primary,
            epoch = next.epoch,
            "move switched"
        );
        self.propose(job, JobPhase::Done, progress, None, vec![next], vec![])
            .await?;
        Ok(Duration::from_millis(10))
    }

    /// Split, after the switch: each primary deletes the rows outside its new range, then
    /// both shards answer again. Only forward from here (both halves are in the map).
    async fn trim(
        &mut self,
        state: &ClusterState,
        job: &MoveJob,
        shard: ShardInfo,
    ) -> Result<Duration> {
        let Some(new) = state.shards.get(&target_shard(job)).cloned() else {
            return Err(Error::internal("the split's new shard vanished"));
        };
        let keys: Vec<(String, usize)> = state
            .tables
            .values()
            .filter(|t| t.keyspace == shard.keyspace)
            .filter_map(|t| Some((t.schema.name.clone(), *t.shard_key.first()?)))
            .collect();
        for s in [&shard, &new] {
            // The primary must hold the sealed placement before it trims.
            let st = self.stats(state, s.id, s.primary).await?;
            if !(st.primary && st.sealed && st.epoch == s.epoch) {
                return Ok(Duration::from_millis(2));
            }
            self.call(
                &addr(state, s.primary)?,
                Request::TrimToRange {
                    shard: s.id,
                    range: s.range,
                    keys: keys.clone(),
                },
            )
            .await?;
        }
        let now = now_ms();
        let mut progress = job.progress.clone();
        progress.pause_ms = now.saturating_sub(progress.frozen_at_ms);
        progress.finished_ms = now;
        let (mut a, mut b) = (shard, new);
        a.sealed = false;
        b.sealed = false;
        tracing::info!(
            job = job.id,
            shard = a.id,
            new = b.id,
            pause_ms = progress.pause_ms,
            "split done"
        );
        self.propose(job, JobPhase::Done, progress, None, vec![a, b], vec![])
            .await?;
        Ok(Duration::from_millis(10))
    }

    async fn carry_decisions(
        &self,
        state: &ClusterState,
        shard: ShardId,
        from: u64,
        to: u64,
    ) -> Result<()> {
        let Response::Decisions(decisions) = self
            .call(&addr(state, from)?, Request::ShardDecisions { shard })
            .await?
        else {
            return Err(Error::protocol("unexpected answer to ShardDecisions"));
        };
        self.call(
            &addr(state, to)?,
            Request::ImportDecisions { shard, decisions },
        )
        .await?;
        Ok(())
    }

    /// Compares the target's checksum with the primary's at one LSN while the primary keeps
    /// writing: the target stops applying, the primary is checksummed at its LSN L, the target
    /// applies exactly up to L and is checksummed there. `Some(L)` when they agree, `None`
    /// when they differ; an error (a node away, the target past L) means try again.
    async fn verify(
        &self,
        state: &ClusterState,
        shard: &ShardInfo,
        target_id: ShardId,
        to: u64,
    ) -> Result<Option<u64>> {
        let primary_addr = addr(state, shard.primary)?;
        let target_addr = addr(state, to)?;
        self.call(&target_addr, Request::HoldApply { shard: target_id })
            .await?;
        let at_primary = self
            .call(
                &primary_addr,
                Request::ChecksumAt {
                    shard: shard.id,
                    lsn: None,
                },
            )
            .await;
        let Ok(Response::LsnChecksum { lsn, sum: sum_p }) = at_primary else {
            // Lift the hold (LSN 0 is always behind it; it would also lapse in seconds).
            let _ = self
                .call(
                    &target_addr,
                    Request::ChecksumAt {
                        shard: target_id,
                        lsn: Some(0),
                    },
                )
                .await;
            return Err(Error::connection(format!(
                "checksum of the primary failed: {at_primary:?}"
            )));
        };
        let Response::LsnChecksum { sum: sum_t, .. } = self
            .call(
                &target_addr,
                Request::ChecksumAt {
                    shard: target_id,
                    lsn: Some(lsn),
                },
            )
            .await?
        else {
            return Err(Error::protocol("unexpected answer to ChecksumAt"));
        };
        tracing::info!(
            shard = shard.id,
            lsn,
            equal = sum_p == sum_t,
            "job compared checksums"
        );
        Ok((sum_p == sum_t).then_some(lsn))
    }

    /// The drain took too long (a long transaction, a lock wait that crosses shards): let
    /// the held writes go and try again after a pause, or give up after `MAX_ATTEMPTS`.
    async fn unfreeze(
        &mut self,
        state: &ClusterState,
        job: &MoveJob,
        mut shard: ShardInfo,
        waited: u64,
    ) -> Result<Duration> {
        if job.progress.attempts >= MAX_ATTEMPTS {
            let why = format!(
                "writes did not drain within {DRAIN_WAIT_MS} ms in {MAX_ATTEMPTS} attempts"
            );
            return self.roll_back(state, job, &shard, &why).await;
        }
        tracing::info!(
            job = job.id,
            shard = shard.id,
            waited,
            "freeze did not drain in time; unfreezing"
        );
        let mut progress = job.progress.clone();
        progress.pause_ms = waited;
        shard.frozen = false;
        self.propose(job, JobPhase::Copying, progress, None, vec![shard], vec![])
            .await?;
        // Give the held statements time to run before freezing again.
        Ok(Duration::from_millis(
            200 + 50 * u64::from(job.progress.attempts),
        ))
    }

    /// Undoes a job that has not switched: the target copy (or a split's new shard) goes,
    /// the shard is unfrozen.
    async fn roll_back(
        &mut self,
        state: &ClusterState,
        job: &MoveJob,
        shard: &ShardInfo,
        why: &str,
    ) -> Result<Duration> {
        if job.phase == JobPhase::Trimming {
            return Err(Error::internal(format!(
                "a split past its switch cannot roll back: {why}"
            )));
        }
        tracing::warn!(job = job.id, shard = shard.id, "job rolls back: {why}");
        let mut restored = shard.clone();
        restored.frozen = false;
        let mut dropped = Vec::new();
        match job.kind {
            JobKind::Move => {
                restored
                    .replicas
                    .retain(|n| *n != job.to || shard.primary == job.to);
                // A new epoch tells the target its copy may go (see node_runtime::moved_away).
                restored.epoch += 1;
            }
            JobKind::Split { new_shard } => {
                if state.shards.contains_key(&new_shard) {
                    dropped.push(new_shard);
                }
            }
        }
        self.finish(
            job,
            JobPhase::RolledBack,
            vec![restored],
            dropped,
            Some(why),
        )
        .await
    }

    async fn finish(
        &mut self,
        job: &MoveJob,
        phase: JobPhase,
        shards: Vec<ShardInfo>,
        drop_shards: Vec<ShardId>,
        why: Option<&str>,
    ) -> Result<Duration> {
        let mut progress = job.progress.clone();
        progress.finished_ms = now_ms();
        self.propose(
            job,
            phase,
            progress,
            why.map(str::to_string),
            shards,
            drop_shards,
        )
        .await?;
        Ok(Duration::from_millis(10))
    }

    async fn propose(
        &mut self,
        job: &MoveJob,
        phase: JobPhase,
        progress: JobProgress,
        error: Option<String>,
        shards: Vec<ShardInfo>,
        drop_shards: Vec<ShardId>,
    ) -> Result<()> {
        let cmd = MetaCommand::JobStep {
            id: job.id,
            expect: job.phase,
            phase,
            progress,
            error,
            shards,
            drop_shards,
        };
        let resp = self
            .raft
            .client_write(cmd)
            .await
            .map_err(|e| Error::connection(format!("proposing a job step: {e}")))?;
        match resp.data.error {
            Some(e) => Err(Error::internal(format!("job step refused: {e}"))),
            None => Ok(()),
        }
    }

    async fn stats(&self, state: &ClusterState, shard: ShardId, node: u64) -> Result<ShardStats> {
        match self
            .call(&addr(state, node)?, Request::ShardStats { shard })
            .await?
        {
            Response::ShardStats(s) => Ok(s),
            other => Err(Error::protocol(format!(
                "unexpected answer to ShardStats: {other:?}"
            ))),
        }
    }

    async fn call(&self, addr: &str, req: Request) -> Result<Response> {
        // A checksum or trim scans a whole shard: give it as long as a big one takes.
        let wait = match req {
            Request::ChecksumAt { .. } | Request::TrimToRange { .. } => SCAN_WAIT,
            _ => CALL_WAIT,
        };
        tokio::time::timeout(wait, self.pool.call(addr, req))
            .await
            .map_err(|_| Error::connection(format!("node {addr} did not answer in time")))?
    }
}

/// `n` nodes other than `except`, not draining, holding the fewest copies.
/// The `n` nodes with the fewest copies that `shard`'s keyspace may use, `except` aside.
fn least_loaded(state: &ClusterState, shard: u32, except: u64, n: usize) -> Vec<u64> {
    let mut nodes: Vec<u64> = state
        .nodes
        .keys()
        .copied()
        .filter(|id| {
            *id != except && !state.draining.contains(id) && state.shard_may_use(shard, *id)
        })
        .collect();
    nodes.sort_by_key(|id| (state.copies_on(*id), *id));
    nodes.truncate(n);
    nodes
}

fn addr(state: &ClusterState, node: u64) -> Result<String> {
    state
        .node_addr(node)
        .map(str::to_string)
        .ok_or_else(|| Error::connection(format!("node {node} is not registered")))
}
