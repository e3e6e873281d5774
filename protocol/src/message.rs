//! The internal RPC messages between routers, nodes and meta.
//!
//! Every frame after the handshake is `(request id, Request)` one way and
//! `(request id, Response)` the other. A request is answered by one response, except
//! `Subscribe` and `MetaWatch`-style streams, whose responses share the request id and end with
//! `Response::End` or `Response::Error`.

use serde::{Deserialize, Serialize};

use crate::changes::ChangeRecord;
use crate::cluster::{ClusterState, MetaCommand, NodeId, ShardId};
use crate::error::Error;
use crate::schema::{QueryResult, TableSchema};
use crate::value::Value;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Node: run one SQL statement on a shard's primary, in its own transaction (`txn: None`)
    /// or in the client transaction `txn`, which the shard opens on first use.
    Execute {
        shard: ShardId,
        epoch: u64,
        sql: String,
        params: Vec<Value>,
        txn: Option<TxnSpec>,
        /// statement_timeout in milliseconds (0: none). A statement past it is rolled back and
        /// fails with 57014 — it never commits after its deadline.
        timeout_ms: u64,
        /// lock_timeout in milliseconds for this statement (0: the deadlock timeout). In a
        /// transaction block it replaces the `TxnSpec`'s from this statement on, so a `SET
        /// lock_timeout` inside the block applies to the statements after it.
        lock_timeout_ms: u64,
    },
    /// Node: commit or roll back a client transaction on a shard.
    EndTxn {
        shard: ShardId,
        txn: u64,
        commit: bool,
        /// The transaction writes on other shards: a SERIALIZABLE part that only read here
        /// must still validate its reads (a purely read-only transaction need not).
        writes_elsewhere: bool,
    },
    /// Node, two-phase commit phase one: make the transaction's changes durable as prepared
    /// (locks kept); `coordinator` is the shard that will hold the decision.
    PrepareTxn {
        shard: ShardId,
        txn: u64,
        coordinator: ShardId,
    },
    /// Node, on the coordinator shard: record the outcome unless one is recorded; the answer
    /// is `Decision(Some(outcome that stands))`.
    DecideTxn {
        shard: ShardId,
        txn: u64,
        commit: bool,
    },
    /// Node, on the coordinator shard: the recorded outcome, if any.
    TxnDecision { shard: ShardId, txn: u64 },
    /// Node, two-phase commit phase two: commit or discard a prepared transaction.
    FinishPrepared {
        shard: ShardId,
        txn: u64,
        commit: bool,
    },
    /// Node: stream the shard's change log from `from_lsn` (exclusive), preceded by a snapshot
    /// when the log no longer reaches back that far.
    Subscribe {
        shard: ShardId,
        from_lsn: u64,
        subscriber: NodeId,
        /// Set by the copies of a shard being split off `shard`: the epoch of `shard` in the
        /// subscriber's map. The stream is refused, or ends, once `shard`'s epoch differs.
        split_epoch: Option<u64>,
    },
    /// Node: a replica reported how far it had applied a shard's log. Replicas no longer send
    /// it (nothing read it); a node still answers `Ok`, and the variant keeps its place so
    /// the variants after it keep their numbers.
    ReportApplied {
        shard: ShardId,
        subscriber: NodeId,
        lsn: u64,
    },
    /// Node: parameter types and result columns of a statement, from the shard's catalog.
    Describe { shard: ShardId, sql: String },
    /// Node: row count and log positions of the shard replica it hosts.
    ShardStats { shard: ShardId },
    /// Node: the shard's rows as (table, key, row) for comparing replicas.
    ShardChecksum { shard: ShardId },

    /// Meta: the current cluster map.
    MetaGet,
    /// Meta: the cluster map as soon as its version exceeds `after_version`.
    MetaWatch { after_version: u64 },
    /// Meta: propose a change through Raft (only the leader accepts; others answer NotLeader).
    MetaPropose(MetaCommand),
    /// Meta: a node is alive.
    MetaHeartbeat { node: NodeId },
    /// Meta: Raft role and membership of this voter.
    MetaStatus,
    /// Meta: an openraft RPC between voters, bincode-encoded by the replication crate.
    Raft { kind: RaftKind, body: Vec<u8> },
    /// The caller stopped waiting for request `id` of this connection (the client cancelled
    /// its statement): stop it if it still runs. No response; the request still answers,
    /// with its real outcome (57014 if it stopped before committing).
    Cancel { id: u64 },
    /// Node, on the coordinator shard: every participant finished transaction `txn`, so no
    /// resolver will ask for its decision again and the record can go.
    ForgetDecision { shard: ShardId, txn: u64 },
    /// Node, on a participant: the router gave up driving transaction `txn` (its outcome
    /// is unknown to it), so the in-doubt resolver should not wait for it any longer.
    ReleasePrepared { shard: ShardId, txn: u64 },
    /// Node, on a replica: stop applying the shard's log where it stands (for at most a few
    /// seconds); answers `Lsn` with that position.
    HoldApply { shard: ShardId },
    /// Node: the shard's checksum with the LSN it was taken at. `lsn: None` takes it now; on
    /// a replica, `Some(l)` lets applying run up to exactly `l`, takes it there, and lifts
    /// the hold. A move compares the two while the primary keeps writing.
    ChecksumAt { shard: ShardId, lsn: Option<u64> },
    /// Node, on a shard's primary: delete every row whose shard key hashes outside `range`
    /// (a split trims both halves). `keys` names each table's shard-key column position.
    /// Runs past a sealed gate; answers `Lsn` with the shard's LSN afterwards.
    TrimToRange {
        shard: ShardId,
        range: crate::hash::HashRange,
        keys: Vec<(String, usize)>,
    },
    /// Node: the two-phase-commit decisions a shard's primary records as coordinator (they
    /// live beside the rows, outside the change log, so a move carries them across).
    ShardDecisions { shard: ShardId },
    /// Node: records decisions (from `ShardDecisions` of the shard's old primary) on this copy.
    ImportDecisions {
        shard: ShardId,
        decisions: Vec<(u64, bool)>,
    },
    /// Node, on the coordinator shard of a distributed commit, once every other written
    /// shard is prepared: commit this shard's part of `txn` and record the decision
    /// (commit) in the same durable write. Answers `Decision(Some(true))`; an error means
    /// nothing was committed or recorded here (40001 when an in-doubt resolver's abort was
    /// recorded first).
    CommitDecide { shard: ShardId, txn: u64 },
}

/// A client transaction as a shard sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnSpec {
    /// Chosen by the router; unique in the cluster (random 64 bits).
    pub id: u64,
    pub isolation: Isolation,
    pub read_only: bool,
    /// How long a row-lock wait may last before 55P03; 0 waits forever.
    pub lock_timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    #[default]
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

impl Isolation {
    /// Parses PostgreSQL's spelling (`read committed`, `REPEATABLE READ`, …).
    pub fn parse(text: &str) -> Option<Isolation> {
        match text
            .trim()
            .to_ascii_lowercase()
            .replace(['_', '-'], " ")
            .as_str()
        {
            "read committed" | "read uncommitted" => Some(Isolation::ReadCommitted),
            "repeatable read" => Some(Isolation::RepeatableRead),
            "serializable" => Some(Isolation::Serializable),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read committed",
            Isolation::RepeatableRead => "repeatable read",
            Isolation::Serializable => "serializable",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftKind {
    Vote,
    AppendEntries,
    InstallSnapshot,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    Result(QueryResult),
    Stream(StreamItem),
    ShardStats(ShardStats),
    Checksum(u64),
    Decision(Option<bool>),
    Decisions(Vec<(u64, bool)>),
    Lsn(u64),
    LsnChecksum {
        lsn: u64,
        sum: u64,
    },
    Described {
        params: Vec<crate::value::DataType>,
        columns: Vec<crate::schema::ResultColumn>,
    },
    State(ClusterState),
    /// This meta voter is not the leader; `leader` is the leader's address if known.
    NotLeader {
        leader: Option<String>,
    },
    MetaStatus(MetaStatus),
    Raft(Vec<u8>),
    Error(Error),
    /// The last response of a stream.
    End,
}

/// One element of a change-log subscription.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StreamItem {
    /// A snapshot follows: the replica must discard its contents and load these tables,
    /// then continue from `lsn`.
    SnapshotBegin {
        lsn: u64,
        tables: Vec<TableSchema>,
    },
    SnapshotRows {
        table: String,
        rows: Vec<(Vec<u8>, Vec<u8>)>,
    },
    SnapshotEnd {
        lsn: u64,
    },
    /// Committed transactions in LSN order.
    Changes(Vec<ChangeRecord>),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    pub shard: ShardId,
    pub rows: u64,
    /// Highest LSN present (primary: last committed; replica: last applied).
    pub lsn: u64,
    /// Highest LSN that survives a crash: `lsn` on a primary; on a replica, which applies
    /// without an fsync and syncs every few milliseconds, up to 50 ms of commits behind it.
    pub durable_lsn: u64,
    /// Oldest LSN still in the change log (0 if empty).
    pub log_start: u64,
    pub bytes: u64,
    /// What the hosting node holds of the shard's placement: role, epoch and whether it is
    /// frozen for a move.
    pub primary: bool,
    pub epoch: u64,
    pub frozen: bool,
    pub sealed: bool,
    /// Work a move must wait out before switching: open client transactions, autocommit
    /// writes in flight, and prepared two-phase transactions.
    pub open_txns: u64,
    pub writers: u64,
    pub prepared: u64,
    /// Snapshots this copy has installed since its node started: a replica that keeps
    /// needing them has fallen off its primary's log (or hit a bug), and each costs a full
    /// copy of the shard.
    pub snapshots_installed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaStatus {
    pub id: u64,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub term: u64,
    pub voters: Vec<u64>,
    pub last_applied: u64,
}
