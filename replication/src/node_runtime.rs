//! A storage node process: the node service plus the loop that follows meta's cluster map.
//!
//! ```text
//!  meta watch ──► reconcile(state):
//!                  for each shard placed on this node: host it (role, epoch)
//!                  replica → run `replica::follow` toward the shard's primary
//!                  no longer placed here → stop following, stop serving
//! ```
//! The node registers its address in meta at start (service discovery) and heartbeats.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engine::node::NodeService;
use engine::shard::ShardOptions;
use protocol::auth::ClusterSecret;
use protocol::clock::{Clock, Hlc};
use protocol::cluster::{ClusterState, MetaCommand, NodeId, NodeInfo, ShardId, ShardInfo};
use protocol::error::{Error, Result};
use protocol::jobs::{JobKind, JobPhase};
use protocol::rpc::Pool;
use tokio::task::JoinHandle;

use crate::meta::MetaClient;
use crate::replica;

pub struct NodeConfig {
    pub id: NodeId,
    /// Internal-protocol listen address; port 0 picks one.
    pub listen: String,
    /// The address others use to reach this node (defaults to the bound address).
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub meta: Vec<String>,
    pub secret: ClusterSecret,
    pub shard: ShardOptions,
    pub clock: Arc<dyn Clock>,
}

/// A running node; dropping it does not stop it, `shutdown` does.
pub struct NodeHandle {
    pub id: NodeId,
    pub addr: String,
    pub service: Arc<NodeService>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub async fn start_node(cfg: NodeConfig) -> Result<NodeHandle> {
    let listener = protocol::net::bind(&cfg.listen)
        .await
        .map_err(|e| Error::io(format!("bind {}: {e}", cfg.listen)))?;
    let bound = listener.local_addr().map_err(Error::io)?.to_string();
    let addr = cfg.advertise.clone().unwrap_or(bound);
    let hlc = Arc::new(Hlc::new(cfg.clock.clone()));
    let service = Arc::new(NodeService::new(
        cfg.id,
        cfg.data_dir.clone(),
        hlc,
        cfg.shard.clone(),
    )?);
    let mut tasks = vec![tokio::spawn(protocol::rpc::serve(
        listener,
        cfg.secret.clone(),
        service.clone(),
    ))];

    let meta = MetaClient::connect(cfg.meta.clone(), cfg.secret.clone()).await?;
    let info = NodeInfo {
        id: cfg.id,
        addr: addr.clone(),
    };
    if meta.state().nodes.get(&cfg.id) != Some(&info) {
        meta.propose(MetaCommand::RegisterNode(info)).await?;
    }
    tracing::info!(node = cfg.id, %addr, "node registered");

    let hb_meta = meta.clone();
    let id = cfg.id;
    tasks.push(tokio::spawn(async move {
        loop {
            let _ = hb_meta.heartbeat(id).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }));

    let pool = Pool::new(cfg.secret.clone());
    let (r_svc, r_meta, r_pool, r_clock) = (
        service.clone(),
        meta.clone(),
        pool.clone(),
        cfg.clock.clone(),
    );
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            resolve_in_doubt(&r_svc, &r_meta.state(), &r_pool, r_clock.now_millis()).await;
        }
    }));
    let svc = service.clone();
    tasks.push(tokio::spawn(async move {
        let mut followers: HashMap<ShardId, (String, JoinHandle<()>)> = HashMap::new();
        let mut rx = meta.subscribe();
        let mut swept = false;
        loop {
            let state = rx.borrow_and_update().clone();
            // Each failing shard was logged with its id by `reconcile`.
            let failed = reconcile(&svc, &state, &pool, &mut followers).is_err();
            if !swept && state.version > 0 {
                sweep_orphans(&svc, &state);
                swept = true;
            }
            // A failure (a shard file still locked by a process that is exiting, say) is
            // retried on a timer too: the map may not change again for a long time.
            if failed {
                match tokio::time::timeout(Duration::from_millis(500), rx.changed()).await {
                    Ok(Err(_)) => break,
                    Ok(Ok(())) | Err(_) => continue,
                }
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    }));
    Ok(NodeHandle {
        id: cfg.id,
        addr,
        service,
        tasks,
    })
}

fn reconcile(
    svc: &Arc<NodeService>,
    state: &ClusterState,
    pool: &Pool,
    followers: &mut HashMap<ShardId, (String, JoinHandle<()>)>,
) -> Result<()> {
    // One shard that cannot be hosted (its file still locked, say) must not keep this node
    // from serving the others: each is reconciled on its own, and the first failure is
    // reported once all have been tried (the caller retries).
    let mut first_failure = None;
    let mut note = |shard: ShardId, r: Result<()>| {
        if let Err(e) = r {
            tracing::warn!(shard, "reconcile of shard failed: {e}");
            first_failure.get_or_insert(e);
        }
    };
    for shard in state.shards.values() {
        if shard.placed_on(svc.id) {
            note(
                shard.id,
                reconcile_placed(svc, state, shard, pool, followers),
            );
        }
    }
    for id in svc.hosted() {
        if !state.shards.get(&id).is_some_and(|s| s.placed_on(svc.id)) {
            note(id, reconcile_unplaced(svc, state, id, followers));
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// Hosts a copy the map places on this node: as primary, or as a replica following its
/// upstream.
fn reconcile_placed(
    svc: &Arc<NodeService>,
    state: &ClusterState,
    shard: &ShardInfo,
    pool: &Pool,
    followers: &mut HashMap<ShardId, (String, JoinHandle<()>)>,
) -> Result<()> {
    let me = svc.id;
    if shard.primary == me && shard.split_from.is_none() {
        svc.host(shard.id, true, shard.epoch, shard.frozen, shard.sealed)?;
        if let Some((_, task)) = followers.remove(&shard.id) {
            task.abort();
        }
        return Ok(());
    }
    // A replica follows its shard's primary; every copy of a shard being split off
    // another follows that other shard's primary.
    let source = match shard.split_from {
        Some(from) => replica::Source {
            shard: from,
            split_epoch: state.shards.get(&from).map(|s| s.epoch),
        },
        None => replica::Source::own(shard.id),
    };
    let hosted = svc.host(shard.id, false, shard.epoch, false, false)?;
    let Some(upstream) = state
        .shards
        .get(&source.shard)
        .and_then(|s| state.node_addr(s.primary))
    else {
        return Ok(());
    };
    let follows = format!("{upstream}/{source:?}");
    if followers.get(&shard.id).map(|(f, _)| f.as_str()) != Some(follows.as_str()) {
        if let Some((_, task)) = followers.remove(&shard.id) {
            task.abort();
        }
        let task = tokio::spawn(replica::follow(
            hosted,
            source,
            me,
            upstream.to_string(),
            pool.clone(),
        ));
        followers.insert(shard.id, (follows, task));
    }
    Ok(())
}

/// Lets go of a hosted copy the map no longer places here: its file is dropped only if a
/// newer placement moved the shard away (see `moved_away`).
fn reconcile_unplaced(
    svc: &Arc<NodeService>,
    state: &ClusterState,
    id: ShardId,
    followers: &mut HashMap<ShardId, (String, JoinHandle<()>)>,
) -> Result<()> {
    if let Some((_, task)) = followers.remove(&id) {
        task.abort();
    }
    if svc
        .stored_epoch(id)
        .is_ok_and(|epoch| moved_away(state, id, svc.id, epoch))
    {
        tracing::info!(
            shard = id,
            "shard copy moved to another node; dropping it here"
        );
        svc.drop_copy(id)?;
    } else {
        svc.unhost(id);
    }
    Ok(())
}

/// Whether this node's copy of `shard`, last held under placement epoch `held`, is surplus:
/// a newer placement puts the shard on other nodes only. Only then may its file go; a map
/// no newer than what this copy saw (a lagging meta voter's) never deletes it.
fn moved_away(state: &ClusterState, shard: ShardId, me: NodeId, held: u64) -> bool {
    match state.shards.get(&shard) {
        Some(s) => !s.placed_on(me) && state.nodes.contains_key(&s.primary) && s.epoch > held,
        // A split that rolled back removed the shard it was creating.
        None => state.jobs.values().any(|j| {
            j.phase == JobPhase::RolledBack && j.kind == JobKind::Split { new_shard: shard }
        }),
    }
}

/// Removes shard files left behind by moves that finished while this node was down.
fn sweep_orphans(svc: &NodeService, state: &ClusterState) {
    for id in svc.shard_files() {
        if svc.shard(id).is_none()
            && svc
                .stored_epoch(id)
                .is_ok_and(|epoch| moved_away(state, id, svc.id, epoch))
        {
            tracing::info!(
                shard = id,
                "removing a copy that moved away while this node was down"
            );
            if let Err(e) = svc.remove_unhosted_file(id) {
                tracing::warn!(shard = id, "could not remove orphaned copy: {e}");
            }
        }
    }
}

/// How long a prepared transaction may wait for its router before the node asks the
/// coordinator itself, once the router's connection is gone (or this node restarted)...
const IN_DOUBT_AFTER_MS: u64 = 3_000;
/// ... and while the router that prepared it is still connected: a loaded cluster can take
/// seconds between prepare and decision, and presuming abort then would fail a healthy
/// commit.
const IN_DOUBT_ROUTER_CONNECTED_MS: u64 = 30_000;

/// Finishes prepared transactions whose router went quiet: the coordinator shard's recorded
/// decision stands, and with none recorded the resolver records an abort there (presumed
/// abort) — the coordinator's "decide unless decided" makes the router's commit and this abort
/// mutually exclusive.
async fn resolve_in_doubt(svc: &Arc<NodeService>, state: &ClusterState, pool: &Pool, now_ms: u64) {
    for shard_id in svc.hosted() {
        let Some(shard) = svc.shard(shard_id) else {
            continue;
        };
        let prepared = shard.prepared();
        let ids: Vec<u64> = prepared.iter().map(|(t, _)| *t).collect();
        svc.prune_preparers(shard_id, &ids);
        for (txn, p) in prepared {
            let patience = if svc.preparer_connected(shard_id, txn) {
                IN_DOUBT_ROUTER_CONNECTED_MS
            } else {
                IN_DOUBT_AFTER_MS
            };
            if now_ms.saturating_sub(p.prepared_at_ms) < patience {
                continue;
            }
            let Some(addr) = state
                .shards
                .get(&p.coordinator)
                .and_then(|c| state.node_addr(c.primary))
            else {
                continue;
            };
            let req = protocol::message::Request::DecideTxn {
                shard: p.coordinator,
                txn,
                commit: false,
            };
            let decided = match pool.call(addr, req).await {
                Ok(protocol::message::Response::Decision(Some(c))) => c,
                _ => continue,
            };
            tracing::info!(
                shard = shard_id,
                txn,
                commit = decided,
                "resolved an in-doubt transaction"
            );
            let s = shard.clone();
            let _ = tokio::task::spawn_blocking(move || s.finish_prepared(txn, decided)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::cluster::{NodeInfo, ShardInfo};
    use protocol::hash::HashRange;
    use protocol::jobs::MoveJob;

    use super::*;

    fn state(primary: NodeId, epoch: u64) -> ClusterState {
        let mut s = ClusterState::default();
        for id in [1, 2] {
            s.nodes.insert(
                id,
                NodeInfo {
                    id,
                    addr: format!("n{id}:1"),
                },
            );
        }
        s.shards.insert(
            0,
            ShardInfo {
                id: 0,
                keyspace: "default".into(),
                range: HashRange {
                    start: 0,
                    end: u64::MAX,
                },
                primary,
                replicas: vec![],
                epoch,
                frozen: false,
                sealed: false,
                split_from: None,
            },
        );
        s
    }

    /// A copy goes only when a placement newer than any this node held it under leaves it
    /// out: a stale map from a lagging voter never deletes it.
    #[test]
    fn only_a_newer_placement_removes_a_copy() {
        let moved = state(2, 5);
        assert!(moved_away(&moved, 0, 1, 4), "moved away under epoch 5");
        assert!(
            !moved_away(&moved, 0, 1, 5),
            "a map no newer than our copy's"
        );
        assert!(!moved_away(&moved, 0, 2, 1), "placed here");
        assert!(
            !moved_away(&moved, 7, 1, 0),
            "unknown shard, no rolled-back split"
        );
        let mut rolled = moved.clone();
        let mut job = MoveJob::split(0, 1, 2);
        job.kind = JobKind::Split { new_shard: 7 };
        job.phase = JobPhase::RolledBack;
        rolled.jobs.insert(1, job);
        assert!(moved_away(&rolled, 7, 1, 0), "a rolled-back split's shard");
    }

    /// A shard whose file cannot be opened does not keep the node from hosting the others;
    /// the failure is still reported, so the caller retries it.
    #[tokio::test]
    async fn one_unopenable_shard_does_not_stop_the_rest() {
        let dir = std::env::temp_dir().join(format!(
            "tessera-reconcile-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // Shard 0's file is a directory: redb cannot open it.
        std::fs::create_dir_all(dir.join("shard-0.redb")).unwrap();
        let hlc = Arc::new(Hlc::new(Arc::new(protocol::clock::SystemClock)));
        let svc = Arc::new(NodeService::new(1, dir.clone(), hlc, ShardOptions::default()).unwrap());
        let mut map = state(1, 1);
        let mut second = map.shards[&0].clone();
        second.id = 1;
        map.shards.insert(1, second);
        let mut followers = HashMap::new();
        let pool = Pool::new(ClusterSecret::new("s"));
        let result = reconcile(&svc, &map, &pool, &mut followers);
        assert!(result.is_err(), "shard 0's failure is reported");
        assert_eq!(svc.hosted(), vec![1], "shard 1 is hosted all the same");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
