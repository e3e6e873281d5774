//! The cluster as operators see it: every shard's placement, size and replication lag.
//!
//! Collected from meta's map plus a `ShardStats` call to every replica, and shown both as the
//! `tessera.*` system views and by `tessera admin status`.

use std::time::Duration;

use protocol::cluster::ClusterState;
use protocol::message::{Request, Response, ShardStats};
use protocol::rpc::Pool;
use protocol::schema::{ColumnDef, TableSchema};
use protocol::{DataType, Value};

/// One shard replica's state as last observed.
#[derive(Clone, Debug)]
pub struct ReplicaStatus {
    pub node: u64,
    pub primary: bool,
    /// `None` when the node did not answer.
    pub stats: Option<ShardStats>,
}

#[derive(Clone, Debug)]
pub struct ShardStatus {
    pub shard: u32,
    pub keyspace: String,
    pub start: u64,
    pub end: u64,
    pub epoch: u64,
    pub primary: u64,
    pub replicas: Vec<ReplicaStatus>,
}

impl ShardStatus {
    pub fn primary_stats(&self) -> Option<&ShardStats> {
        self.replicas
            .iter()
            .find(|r| r.primary)
            .and_then(|r| r.stats.as_ref())
    }
}

/// Asks every replica of every shard for its stats, concurrently, each bounded in time.
pub async fn collect(state: &ClusterState, pool: &Pool) -> Vec<ShardStatus> {
    let mut calls = Vec::new();
    for shard in state.shards.values() {
        for (node, primary) in
            std::iter::once((shard.primary, true)).chain(shard.replicas.iter().map(|&n| (n, false)))
        {
            let addr = state.node_addr(node).map(str::to_string);
            let pool = pool.clone();
            let id = shard.id;
            calls.push(async move {
                let stats = match addr {
                    Some(addr) => {
                        let call = pool.call(&addr, Request::ShardStats { shard: id });
                        match tokio::time::timeout(Duration::from_secs(2), call).await {
                            Ok(Ok(Response::ShardStats(s))) => Some(s),
                            _ => None,
                        }
                    }
                    None => None,
                };
                (
                    id,
                    ReplicaStatus {
                        node,
                        primary,
                        stats,
                    },
                )
            });
        }
    }
    let answers = futures::future::join_all(calls).await;
    state
        .shards
        .values()
        .map(|s| ShardStatus {
            shard: s.id,
            keyspace: s.keyspace.clone(),
            start: s.range.start,
            end: s.range.end,
            epoch: s.epoch,
            primary: s.primary,
            replicas: answers
                .iter()
                .filter(|(id, _)| *id == s.id)
                .map(|(_, r)| r.clone())
                .collect(),
        })
        .collect()
}

fn col(name: &str, data_type: DataType) -> ColumnDef {
    ColumnDef {
        name: name.into(),
        data_type,
        nullable: true,
        default: None,
    }
}

fn opt_int(v: Option<u64>) -> Value {
    v.map(|v| Value::Int(v as i64)).unwrap_or(Value::Null)
}

/// `tessera.nodes`: one row per registered node.
pub fn nodes_view(state: &ClusterState) -> (TableSchema, Vec<Vec<Value>>) {
    let schema = TableSchema {
        name: "tessera.nodes".into(),
        columns: vec![
            col("node", DataType::Int8),
            col("addr", DataType::Text),
            col("primaries", DataType::Int8),
            col("replicas", DataType::Int8),
            col("draining", DataType::Bool),
        ],
        primary_key: vec![0],
        indexes: Vec::new(),
        checks: Vec::new(),
        foreign_keys: Vec::new(),
    };
    let rows = state
        .nodes
        .values()
        .map(|n| {
            let primaries = state.shards.values().filter(|s| s.primary == n.id).count();
            let replicas = state
                .shards
                .values()
                .filter(|s| s.replicas.contains(&n.id))
                .count();
            vec![
                Value::Int(n.id as i64),
                Value::Text(n.addr.clone()),
                Value::Int(primaries as i64),
                Value::Int(replicas as i64),
                Value::Bool(state.draining.contains(&n.id)),
            ]
        })
        .collect();
    (schema, rows)
}

/// `tessera.jobs`: shard moves, newest last, with their phase and progress.
pub fn jobs_view(state: &ClusterState) -> (TableSchema, Vec<Vec<Value>>) {
    let schema = TableSchema {
        name: "tessera.jobs".into(),
        columns: vec![
            col("job", DataType::Int8),
            col("shard", DataType::Int8),
            col("from_node", DataType::Int8),
            col("to_node", DataType::Int8),
            col("reason", DataType::Text),
            col("phase", DataType::Text),
            col("rows_copied", DataType::Int8),
            col("rows_total", DataType::Int8),
            col("bytes_copied", DataType::Int8),
            col("bytes_total", DataType::Int8),
            col("lag", DataType::Int8),
            col("attempts", DataType::Int8),
            col("pause_ms", DataType::Int8),
            col("error", DataType::Text),
        ],
        primary_key: vec![0],
        indexes: Vec::new(),
        checks: Vec::new(),
        foreign_keys: Vec::new(),
    };
    let rows = state
        .jobs
        .values()
        .map(|j| {
            let p = &j.progress;
            vec![
                Value::Int(j.id as i64),
                Value::Int(i64::from(j.shard)),
                Value::Int(j.from as i64),
                Value::Int(j.to as i64),
                Value::Text(j.reason.clone()),
                Value::Text(j.phase.name().into()),
                Value::Int(p.rows_copied as i64),
                Value::Int(p.rows_total as i64),
                Value::Int(p.bytes_copied as i64),
                Value::Int(p.bytes_total as i64),
                Value::Int(p.lag as i64),
                Value::Int(i64::from(p.attempts)),
                Value::Int(p.pause_ms as i64),
                j.error.clone().map_or(Value::Null, Value::Text),
            ]
        })
        .collect();
    (schema, rows)
}

/// `tessera.shards`: one row per shard, with its primary's figures and its furthest-behind
/// replica's applied LSN and lag.
pub fn shards_view(status: &[ShardStatus]) -> (TableSchema, Vec<Vec<Value>>) {
    let schema = TableSchema {
        name: "tessera.shards".into(),
        columns: vec![
            col("shard", DataType::Int4),
            col("keyspace", DataType::Text),
            col("hash_start", DataType::Text),
            col("hash_end", DataType::Text),
            col("primary_node", DataType::Int8),
            col("replica_nodes", DataType::Text),
            col("epoch", DataType::Int8),
            col("rows", DataType::Int8),
            col("bytes", DataType::Int8),
            col("primary_lsn", DataType::Int8),
            col("replica_lsn", DataType::Int8),
            col("lag_lsn", DataType::Int8),
        ],
        primary_key: vec![0],
        indexes: Vec::new(),
        checks: Vec::new(),
        foreign_keys: Vec::new(),
    };
    let rows = status
        .iter()
        .map(|s| {
            let p = s.primary_stats();
            let followers: Vec<&ReplicaStatus> = s.replicas.iter().filter(|r| !r.primary).collect();
            let replica_lsn =
                if followers.iter().all(|r| r.stats.is_some()) && !followers.is_empty() {
                    followers
                        .iter()
                        .filter_map(|r| r.stats.as_ref().map(|st| st.lsn))
                        .min()
                } else {
                    None
                };
            let lag = match (p, replica_lsn) {
                (Some(p), Some(r)) => Some(p.lsn.saturating_sub(r)),
                _ => None,
            };
            let names: Vec<String> = followers.iter().map(|r| r.node.to_string()).collect();
            vec![
                Value::Int(s.shard as i64),
                Value::Text(s.keyspace.clone()),
                Value::Text(format!("{:016x}", s.start)),
                Value::Text(format!("{:016x}", s.end)),
                Value::Int(s.primary as i64),
                Value::Text(names.join(",")),
                Value::Int(s.epoch as i64),
                opt_int(p.map(|p| p.rows)),
                opt_int(p.map(|p| p.bytes)),
                opt_int(p.map(|p| p.lsn)),
                opt_int(replica_lsn),
                opt_int(lag),
            ]
        })
        .collect();
    (schema, rows)
}

/// `tessera.replication`: one row per shard replica.
pub fn replication_view(status: &[ShardStatus]) -> (TableSchema, Vec<Vec<Value>>) {
    let schema = TableSchema {
        name: "tessera.replication".into(),
        columns: vec![
            col("shard", DataType::Int4),
            col("node", DataType::Int8),
            col("role", DataType::Text),
            col("rows", DataType::Int8),
            col("lsn", DataType::Int8),
            col("lag_lsn", DataType::Int8),
            col("snapshots", DataType::Int8),
            col("durable_lsn", DataType::Int8),
        ],
        primary_key: vec![0, 1],
        indexes: Vec::new(),
        checks: Vec::new(),
        foreign_keys: Vec::new(),
    };
    let mut rows = Vec::new();
    for s in status {
        let primary_lsn = s.primary_stats().map(|p| p.lsn);
        for r in &s.replicas {
            let lsn = r.stats.as_ref().map(|st| st.lsn);
            let lag = match (primary_lsn, lsn) {
                (Some(p), Some(l)) => Some(p.saturating_sub(l)),
                _ => None,
            };
            rows.push(vec![
                Value::Int(s.shard as i64),
                Value::Int(r.node as i64),
                Value::Text(if r.primary { "primary" } else { "replica" }.into()),
                opt_int(r.stats.as_ref().map(|st| st.rows)),
                opt_int(lsn),
                opt_int(lag),
                opt_int(r.stats.as_ref().map(|st| st.snapshots_installed)),
                opt_int(r.stats.as_ref().map(|st| st.durable_lsn)),
            ]);
        }
    }
    (schema, rows)
}

/// A human-readable report for `tessera admin status`.
pub fn render(state: &ClusterState, status: &[ShardStatus]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "cluster map version {}\n\nnodes:\n",
        state.version
    ));
    for n in state.nodes.values() {
        let draining = if state.draining.contains(&n.id) {
            "  (draining)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  node {:<3} {}  {} copies{draining}\n",
            n.id,
            n.addr,
            state.copies_on(n.id)
        ));
    }
    out.push_str("\nshards:\n");
    out.push_str(&format!(
        "  {:<5} {:<10} {:<35} {:<8} {:<6} {:>10} {:>10}  replicas (node: applied lsn, lag)\n",
        "shard", "keyspace", "hash range", "primary", "epoch", "rows", "lsn"
    ));
    for s in status {
        let p = s.primary_stats();
        let reps: Vec<String> = s
            .replicas
            .iter()
            .filter(|r| !r.primary)
            .map(|r| match (&r.stats, p) {
                (Some(st), Some(p)) => {
                    format!("{}: {}, {}", r.node, st.lsn, p.lsn.saturating_sub(st.lsn))
                }
                (Some(st), None) => format!("{}: {}, ?", r.node, st.lsn),
                _ => format!("{}: unreachable", r.node),
            })
            .collect();
        out.push_str(&format!(
            "  {:<5} {:<10} [{:016x}, {:016x}] {:<8} {:<6} {:>10} {:>10}  {}\n",
            s.shard,
            s.keyspace,
            s.start,
            s.end,
            s.primary,
            s.epoch,
            p.map(|p| p.rows.to_string()).unwrap_or_else(|| "?".into()),
            p.map(|p| p.lsn.to_string()).unwrap_or_else(|| "?".into()),
            reps.join("; ")
        ));
    }
    let recent: Vec<_> = state.jobs.values().rev().take(20).collect();
    if !recent.is_empty() {
        out.push_str("\njobs (newest last):\n");
        for j in recent.into_iter().rev() {
            out.push_str(&format!(
                "  job {:<4} {}\n",
                j.id,
                replication::operations::describe(j, state)
            ));
        }
    }
    out
}
