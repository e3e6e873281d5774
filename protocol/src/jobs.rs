//! Shard moves as jobs in the cluster map: what an operator asked for and how far it got.
//!
//! ```text
//!  Queued ──► Copying ──────────► Frozen ──────────────► Done
//!   (target added     (target caught   (writes drained, LSNs and row
//!    as a replica:     up, checksums    counts equal: primary or
//!    snapshot + log)   equal at one     replica switched, epoch + 1)
//!                      LSN: new writes
//!                      held)
//!                 ▲                │
//!                 └── drain too slow (unfreeze, try again)
//!  any phase ──► RolledBack (target copy removed, shard unfrozen, reason kept)
//!
//!  A split runs the same phases with a new shard as the target (its copies follow the
//!  old shard's primary and hold all its rows); the switch gives each its half of the range
//!  and seals both, then Trimming deletes from each the rows of the other half, then Done.
//! ```
//! A job lives in meta (Raft), so whichever meta voter leads runs it, and a restarted leader,
//! source or target resumes it from the phase the map records. Every step that changes
//! placement changes the job in the same Raft entry (`MetaCommand::JobStep`), so the map
//! never shows a half-taken step.

use serde::{Deserialize, Serialize};

use crate::cluster::{NodeId, ShardId};

pub type JobId = u64;

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    /// Move one copy of `shard` from `from` to `to`.
    Move,
    /// Split `shard`'s hash range in two: `new_shard` (id assigned when queued) takes the
    /// upper half, with its primary on `to`.
    Split { new_shard: ShardId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobPhase {
    /// Accepted; waits for the jobs before it.
    Queued,
    /// The target follows the shard's primary as an extra replica (snapshot, then the log).
    Copying,
    /// The shard takes no new writes; the last records reach the target and both sides are
    /// compared.
    Frozen,
    /// Split only: both shards have their new ranges and answer nothing while each deletes
    /// the rows that now belong to the other.
    Trimming,
    /// The target holds the copy and the source's copy is gone.
    Done,
    /// Undone: the target's copy is removed and the shard is as it was.
    RolledBack,
}

impl JobPhase {
    pub fn is_active(self) -> bool {
        !matches!(self, JobPhase::Done | JobPhase::RolledBack)
    }

    pub fn name(self) -> &'static str {
        match self {
            JobPhase::Queued => "queued",
            JobPhase::Copying => "copying",
            JobPhase::Frozen => "switching",
            JobPhase::Trimming => "trimming",
            JobPhase::Done => "done",
            JobPhase::RolledBack => "rolled back",
        }
    }
}

/// What the runner last saw of a job's copy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    /// Rows and file bytes at the target and at the source.
    pub rows_copied: u64,
    pub rows_total: u64,
    pub bytes_copied: u64,
    pub bytes_total: u64,
    /// Change-log records the target still lacks.
    pub lag: u64,
    /// The LSN at which the target's checksum was found equal to the primary's (0: not yet).
    pub verified_lsn: u64,
    /// Times the switch was tried (a drain that took too long unfreezes and tries again).
    pub attempts: u32,
    /// Wall-clock milliseconds (of the meta leader) when the current freeze began.
    pub frozen_at_ms: u64,
    /// How long the last freeze held new writes, in milliseconds.
    pub pause_ms: u64,
    pub started_ms: u64,
    pub finished_ms: u64,
}

/// Moves one copy of `shard` from node `from` to node `to`. If `from` is the primary, `to`
/// becomes the primary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveJob {
    pub id: JobId,
    pub kind: JobKind,
    pub shard: ShardId,
    pub from: NodeId,
    pub to: NodeId,
    /// Why it exists ("rebalance", "drain node 2"), for status output.
    pub reason: String,
    pub phase: JobPhase,
    pub progress: JobProgress,
    /// Why it rolled back.
    pub error: Option<String>,
    /// An operator asked to undo it; honoured before the switch (a split past its switch
    /// finishes instead).
    pub cancel_requested: bool,
}

impl MoveJob {
    /// Splits `shard`, putting the new shard's primary on node `to` (`from` is the shard's
    /// primary when planned, for display).
    pub fn split(shard: ShardId, from: NodeId, to: NodeId) -> MoveJob {
        MoveJob {
            kind: JobKind::Split { new_shard: 0 },
            ..MoveJob::new(shard, from, to, "split")
        }
    }

    pub fn new(shard: ShardId, from: NodeId, to: NodeId, reason: &str) -> MoveJob {
        MoveJob {
            id: 0,
            kind: JobKind::Move,
            shard,
            from,
            to,
            reason: reason.to_string(),
            phase: JobPhase::Queued,
            progress: JobProgress::default(),
            error: None,
            cancel_requested: false,
        }
    }
}
