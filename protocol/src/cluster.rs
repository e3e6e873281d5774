//! The cluster map that meta replicates with Raft and every router and node caches.
//!
//! ```text
//! ClusterState (version n)
//!  ├─ nodes:     id → address                     (service discovery)
//!  ├─ keyspaces: name → shard count, replication factor
//!  ├─ tables:    name → schema, keyspace, shard key, distribution
//!  └─ shards:    id → keyspace, hash range, primary, replicas, epoch
//! ```
//! Every applied command bumps `version`; followers of the map ask meta to "watch after
//! version n" and get the state as soon as it is newer, so they never miss a change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::HashRange;
use crate::schema::TableSchema;

pub type NodeId = u64;
pub type ShardId = u32;

pub const DEFAULT_KEYSPACE: &str = "default";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Internal-protocol address (host:port).
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyspaceInfo {
    pub name: String,
    pub shard_count: u32,
    /// Copies of each shard, primary included.
    pub replication_factor: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distribution {
    Sharded,
    Reference,
    Single,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableInfo {
    pub schema: TableSchema,
    pub keyspace: String,
    pub distribution: Distribution,
    /// Positions of the shard-key columns in `schema.columns`.
    pub shard_key: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub id: ShardId,
    pub keyspace: String,
    pub range: HashRange,
    pub primary: NodeId,
    /// Followers, in the order they were placed (never includes the primary).
    pub replicas: Vec<NodeId>,
    /// Bumped whenever the primary changes; a node refuses writes that carry an older epoch.
    pub epoch: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub version: u64,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub keyspaces: BTreeMap<String, KeyspaceInfo>,
    pub tables: BTreeMap<String, TableInfo>,
    pub shards: BTreeMap<ShardId, ShardInfo>,
}

/// A change to the cluster map, proposed through Raft.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    RegisterNode(NodeInfo),
    CreateKeyspace(KeyspaceInfo),
    /// Places a keyspace's shards; ignored if the keyspace already has shards.
    PlaceShards {
        keyspace: String,
        shards: Vec<ShardInfo>,
    },
    CreateTable(TableInfo),
    DropTable {
        name: String,
    },
    /// Replaces one shard's placement (primary, replicas, epoch).
    UpdateShard(ShardInfo),
    /// Replaces a table's definition after ALTER TABLE (`name` is its name before, which
    /// differs after RENAME TO).
    AlterTable {
        name: String,
        table: TableInfo,
    },
}

impl ClusterState {
    /// Applies a command; returns an error text for a command that does not fit the state.
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<(), String> {
        match cmd {
            MetaCommand::RegisterNode(node) => {
                self.nodes.insert(node.id, node.clone());
            }
            MetaCommand::CreateKeyspace(ks) => {
                if self.keyspaces.contains_key(&ks.name) {
                    return Err(format!("keyspace \"{}\" already exists", ks.name));
                }
                self.keyspaces.insert(ks.name.clone(), ks.clone());
            }
            MetaCommand::PlaceShards { keyspace, shards } => {
                if !self.keyspaces.contains_key(keyspace) {
                    return Err(format!("keyspace \"{keyspace}\" does not exist"));
                }
                if self.shards.values().any(|s| &s.keyspace == keyspace) {
                    return Ok(());
                }
                for s in shards {
                    self.shards.insert(s.id, s.clone());
                }
            }
            MetaCommand::CreateTable(table) => {
                if self.tables.contains_key(&table.schema.name) {
                    return Err(format!("relation \"{}\" already exists", table.schema.name));
                }
                self.tables.insert(table.schema.name.clone(), table.clone());
            }
            MetaCommand::DropTable { name } => {
                if self.tables.remove(name).is_none() {
                    return Err(format!("table \"{name}\" does not exist"));
                }
            }
            MetaCommand::UpdateShard(shard) => {
                self.shards.insert(shard.id, shard.clone());
            }
            MetaCommand::AlterTable { name, table } => {
                if !self.tables.contains_key(name) {
                    return Err(format!("table \"{name}\" does not exist"));
                }
                if *name != table.schema.name && self.tables.contains_key(&table.schema.name) {
                    return Err(format!("relation \"{}\" already exists", table.schema.name));
                }
                self.tables.remove(name);
                self.tables.insert(table.schema.name.clone(), table.clone());
            }
        }
        self.version += 1;
        Ok(())
    }

    /// The shards of a keyspace, in hash-range order.
    pub fn keyspace_shards(&self, keyspace: &str) -> Vec<&ShardInfo> {
        let mut shards: Vec<&ShardInfo> = self
            .shards
            .values()
            .filter(|s| s.keyspace == keyspace)
            .collect();
        shards.sort_by_key(|s| s.range.start);
        shards
    }

    /// The shard of `keyspace` whose range holds `hash`.
    pub fn shard_for_hash(&self, keyspace: &str, hash: u64) -> Option<&ShardInfo> {
        self.shards
            .values()
            .find(|s| s.keyspace == keyspace && s.range.contains(hash))
    }

    pub fn node_addr(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(&node).map(|n| n.addr.as_str())
    }
}
