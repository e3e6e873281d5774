//! Shard placement: the leader turns "a keyspace without shards" into a `PlaceShards` command.
//!
//! ```text
//! nodes sorted by id: [n0, n1, n2]      keyspace: 4 shards, replication factor 2
//! shard i:  range = split_space(4)[i]   primary = nodes[i % 3]   replicas = next rf-1 nodes
//!   0: n0 (+n1)   1: n1 (+n2)   2: n2 (+n0)   3: n0 (+n1)
//! ```
//! A keyspace is placed once it has no shards and at least `replication_factor` registered
//! nodes, so every shard gets its full set of copies on distinct nodes. Shard ids are global:
//! the next id is one past the largest id in use, and `default` is placed first so it starts
//! at 0. Only the leader runs the task, and it re-reads a linearizable view before proposing,
//! so a fresh leader never allocates ids over shards it has not applied yet.

use std::sync::Arc;
use std::time::Duration;

use protocol::cluster::{
    ClusterState, DEFAULT_KEYSPACE, KeyspaceInfo, MetaCommand, NodeId, ShardInfo,
};
use protocol::hash::split_space;
use tokio::sync::watch;

use super::types::MetaRaft;

/// The `PlaceShards` commands the current map calls for, in the order to propose them.
pub fn plan(state: &ClusterState) -> Vec<MetaCommand> {
    // A node being drained takes no new copies.
    let nodes: Vec<NodeId> = state
        .nodes
        .keys()
        .copied()
        .filter(|n| !state.draining.contains(n))
        .collect();
    // Past every shard id in use and every id a split has taken (ids are never reused: a
    // node may still hold a file of a rolled-back split's shard).
    let mut next_id = state
        .shards
        .keys()
        .copied()
        .chain(state.jobs.values().filter_map(|j| match j.kind {
            protocol::jobs::JobKind::Split { new_shard } => Some(new_shard),
            protocol::jobs::JobKind::Move => None,
        }))
        .max()
        .map_or(0, |id| id + 1);
    let mut keyspaces: Vec<&KeyspaceInfo> = state.keyspaces.values().collect();
    // `default` first, then by name (the map's order), so ids are stable and default's start at 0.
    keyspaces.sort_by_key(|ks| (ks.name != DEFAULT_KEYSPACE, ks.name.clone()));
    let mut out = Vec::new();
    for ks in keyspaces {
        let copies = ks.replication_factor.max(1) as usize;
        let nodes: Vec<NodeId> = nodes.iter().copied().filter(|n| ks.allows(*n)).collect();
        if nodes.len() < copies || state.shards.values().any(|s| s.keyspace == ks.name) {
            continue;
        }
        let shards = split_space(ks.shard_count)
            .into_iter()
            .enumerate()
            .map(|(i, range)| {
                let id = next_id;
                next_id += 1;
                ShardInfo {
                    id,
                    keyspace: ks.name.clone(),
                    range,
                    primary: nodes[i % nodes.len()],
                    replicas: (1..copies).map(|k| nodes[(i + k) % nodes.len()]).collect(),
                    epoch: 1,
                    frozen: false,
                    sealed: false,
                    split_from: None,
                }
            })
            .collect();
        out.push(MetaCommand::PlaceShards {
            keyspace: ks.name.clone(),
            shards,
        });
    }
    out
}

/// What bootstrap asks of a map: the `default` keyspace.
pub struct Bootstrap {
    pub default_shards: u32,
    pub replication_factor: u32,
}

/// The next command the leader should propose, if any.
fn next_command(state: &ClusterState, boot: &Bootstrap) -> Option<MetaCommand> {
    if !state.keyspaces.contains_key(DEFAULT_KEYSPACE) {
        return Some(MetaCommand::CreateKeyspace(KeyspaceInfo {
            name: DEFAULT_KEYSPACE.to_string(),
            shard_count: boot.default_shards,
            replication_factor: boot.replication_factor,
            nodes: Vec::new(),
        }));
    }
    plan(state).into_iter().next()
}

/// Runs on every voter; acts only while this voter leads. Wakes on every map or role change,
/// and once a second to retry a proposal that failed.
pub async fn run(
    raft: MetaRaft,
    id: u64,
    boot: Bootstrap,
    mut state_rx: watch::Receiver<Arc<ClusterState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut role = raft.server_metrics();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let leading = super::types::leads(&mut role, id);
        let _ = state_rx.borrow_and_update();
        let mut failed = false;
        if leading && next_command(&state_rx.borrow().clone(), &boot).is_some() {
            // Make sure every committed entry is applied here before allocating anything.
            match raft.ensure_linearizable().await {
                Ok(_) => {
                    let state = state_rx.borrow().clone();
                    if let Some(cmd) = next_command(&state, &boot) {
                        tracing::info!(voter = id, ?cmd, "meta leader proposes");
                        match raft.client_write(cmd).await {
                            Ok(resp) => {
                                // A refusal leaves the map as it was: back off, don't spin.
                                if let Some(e) = resp.data.error {
                                    tracing::warn!("placement command refused: {e}");
                                    failed = true;
                                }
                            }
                            Err(e) => {
                                tracing::debug!("placement proposal failed: {e}");
                                failed = true;
                            }
                        }
                        // Applied: loop to look at the new map at once.
                        if !failed {
                            continue;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("placement waits for leadership: {e}");
                    failed = true;
                }
            }
        }
        let pause = if failed {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            r = state_rx.changed() => if r.is_err() { return },
            r = role.changed() => if r.is_err() { return },
            _ = shutdown.changed() => {},
            _ = tokio::time::sleep(pause) => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::cluster::NodeInfo;

    fn state(nodes: &[u64], keyspaces: &[(&str, u32, u32)]) -> ClusterState {
        let mut s = ClusterState::default();
        for &n in nodes {
            s.apply(&MetaCommand::RegisterNode(NodeInfo {
                id: n,
                addr: format!("n{n}:1"),
            }))
            .unwrap();
        }
        for &(name, shard_count, replication_factor) in keyspaces {
            let ks = KeyspaceInfo {
                name: name.into(),
                shard_count,
                replication_factor,
                nodes: Vec::new(),
            };
            s.apply(&MetaCommand::CreateKeyspace(ks)).unwrap();
        }
        s
    }

    #[test]
    fn waits_for_enough_nodes() {
        assert!(plan(&state(&[7], &[("default", 4, 2)])).is_empty());
        assert_eq!(plan(&state(&[7, 9], &[("default", 4, 2)])).len(), 1);
    }

    #[test]
    fn round_robin_with_distinct_replicas_and_global_ids() {
        let mut s = state(&[3, 1, 2], &[("a", 2, 3), ("default", 4, 2)]);
        let cmds = plan(&s);
        assert_eq!(cmds.len(), 2);
        let MetaCommand::PlaceShards { keyspace, shards } = &cmds[0] else {
            panic!()
        };
        assert_eq!(keyspace, "default");
        let ids: Vec<u32> = shards.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![0, 1, 2, 3]);
        let primaries: Vec<u64> = shards.iter().map(|s| s.primary).collect();
        assert_eq!(primaries, vec![1, 2, 3, 1]);
        assert_eq!(shards[2].replicas, vec![1]);
        let MetaCommand::PlaceShards { shards: a, .. } = &cmds[1] else {
            panic!()
        };
        assert_eq!(a[0].id, 4);
        assert_eq!(a[0].replicas, vec![2, 3]);
        for sh in shards.iter().chain(a) {
            assert!(!sh.replicas.contains(&sh.primary));
            assert_eq!(sh.epoch, 1);
        }
        // Once applied, nothing more to place.
        for c in &cmds {
            s.apply(c).unwrap();
        }
        assert!(plan(&s).is_empty());
    }
}
