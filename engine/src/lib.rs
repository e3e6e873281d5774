//! One shard's SQL engine on redb, and the node service that hosts shard replicas.
//!
//! ```text
//!  node (RPC) ──► Shard::execute ──► sql (parse, plan, execute) ──► BufferedTxn ──► commit
//!       │                                    reads: storage::Snapshot                │
//!       └─ Subscribe ◄── change log (storage "changelog" table) ◄────────────────────┘
//! ```
//! `txn` is the seam between SQL and storage; `storage` is the on-disk layout (`index`: secondary indexes, derived from rows); `shard` owns a
//! replica's file, commits and change log; `node` serves the internal protocol for every shard
//! replica a node hosts.

pub mod buffer;
pub mod index;
pub mod journal;
pub mod locks;
pub mod node;
pub mod point_read;
pub mod read_plans;
pub mod shard;
pub mod snapshot_cache;
pub mod sql;
pub mod storage;
pub mod txn;
