//! The openraft type configuration of the meta group.
//!
//! The replicated command is `protocol::cluster::MetaCommand`; applying one yields a `MetaReply`
//! (the command's error text, or the cluster map right after it). Voters are `u64` ids whose
//! openraft node is a `BasicNode` holding the address of the voter's internal-protocol listener.
//! Snapshots are in-memory byte buffers: the whole cluster map is small.

use std::io::Cursor;

use openraft::BasicNode;
use protocol::cluster::{ClusterState, MetaCommand};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Types of the meta Raft group.
    pub TypeConfig:
        D = MetaCommand,
        R = MetaReply,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What applying one log entry produced.
///
/// `ClusterState::apply` refuses commands that do not fit the state (a table that already
/// exists); such an entry stays in the log but changes nothing, and the refusal travels back
/// to the proposer as `error`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaReply {
    pub error: Option<String>,
    /// The map right after this entry (only for application commands that succeeded).
    pub state: Option<ClusterState>,
}

pub type MetaRaft = openraft::Raft<TypeConfig>;

/// Whether voter `id` leads, by its latest Raft metrics (the leader-only tasks, placement and
/// the job runner, ask this on every wake-up).
pub fn leads(
    role: &mut tokio::sync::watch::Receiver<openraft::metrics::RaftServerMetrics<u64, BasicNode>>,
    id: u64,
) -> bool {
    let m = role.borrow_and_update();
    m.state == openraft::ServerState::Leader && m.current_leader == Some(id)
}
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
