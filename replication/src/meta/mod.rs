//! The meta control plane: the cluster map replicated by an openraft group of 1 or 3+ voters.
//!
//! ```text
//!  MetaClient (router, node) ──internal protocol──► MetaServer (voter) ─┐
//!       ▲  watch (long poll)                          │ service         │ Raft RPCs over the
//!       └─────────────────────────────────────────────┤                 │ same protocol
//!                                                     ▼                 ▼
//!                                   openraft ── store: log + vote + state machine in meta.redb
//!                                      │
//!                                      └─► ClusterState::apply ─► watch channel ─► MetaWatch
//!                                                      placement (leader only) ─► PlaceShards
//! ```
//! - `types`: the openraft type configuration.
//! - `store`: redb-backed `RaftLogStorage` and `RaftStateMachine`.
//! - `network`: Raft RPCs as `Request::Raft` frames.
//! - `server`: `MetaServer`, bootstrap and the request handler.
//! - `placement`: default keyspace and shard placement, proposed by the leader.
//! - `rebalance`: which shard copies to move so nodes hold even shares (a pure function).
//! - `mover`: the leader's job runner, which carries out the moves.
//! - `client`: `MetaClient`, the cached map and leader-following proposals.

mod client;
mod mover;
mod network;
mod placement;
mod rebalance;
mod server;
mod store;
mod types;

#[cfg(test)]
mod tests;

use protocol::{Error, sqlstate};

pub use client::MetaClient;
pub use placement::plan as plan_placement;
pub use rebalance::{plan_drain, plan_rebalance};
pub use server::MetaServer;
pub use types::{MetaReply, TypeConfig};

/// How to start one meta voter.
#[derive(Clone, Debug)]
pub struct MetaConfig {
    pub id: u64,
    /// Internal-protocol listen address; port 0 picks one (then the bound address is used).
    pub listen: String,
    /// Holds `meta.redb`.
    pub data_dir: std::path::PathBuf,
    /// Every initial voter including this one; empty or only self means a single-voter group.
    pub voters: Vec<(u64, String)>,
    pub secret: protocol::auth::ClusterSecret,
    /// Shard count of the `default` keyspace created at bootstrap.
    pub default_shards: u32,
    /// Copies per shard, primary included.
    pub replication_factor: u32,
}

/// Turns a refusal text of `ClusterState::apply` into an error with the SQLSTATE PostgreSQL
/// would give the equivalent statement.
pub(crate) fn command_error(text: &str) -> Error {
    let relation = text.starts_with("relation") || text.starts_with("table");
    let code = if text.contains("depend on it") {
        sqlstate::DEPENDENT_OBJECTS_STILL_EXIST
    } else if text.contains("already exists") {
        if relation {
            sqlstate::DUPLICATE_TABLE
        } else {
            sqlstate::DUPLICATE_OBJECT
        }
    } else if text.contains("does not exist") {
        if relation {
            sqlstate::UNDEFINED_TABLE
        } else {
            sqlstate::UNDEFINED_OBJECT
        }
    } else {
        sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE
    };
    Error::new(code, text)
}
