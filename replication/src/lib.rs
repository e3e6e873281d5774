//! Replication and the control plane.
//!
//! ```text
//!  meta (openraft group) ── cluster map ──► node_runtime (per node) ──► replica::follow
//!                                                 │                        │ Subscribe
//!                                                 ▼                        ▼
//!                                      engine::node::NodeService ◄── upstream primary
//! ```
//! `meta` is the Raft control plane and its client; `replica` applies an upstream's change log;
//! `node_runtime` runs a storage node: it serves shards and follows the map to decide which
//! it hosts and whom each replica follows; `operations` are the operator's commands (add and
//! drain nodes, rebalance) shared by `tessera admin` and the router's SQL functions.

pub mod meta;
pub mod node_runtime;
pub mod operations;
pub mod replica;
