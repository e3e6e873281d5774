//! Operator operations on the cluster: add or drain a node, plan and submit rebalance moves.
//! The `tessera admin` commands and the router's `tessera.*()` SQL functions both call these,
//! so psql and the command line do exactly the same thing.
//!
//! ```text
//!  rebalance(keyspace?, dry_run) ─► sizes of every shard (ShardStats of its primary)
//!                                ─► meta::plan_rebalance ─► SubmitJobs ─► the leader runs them
//!  drain_node(n)                 ─► SetDraining(n) ─► meta::plan_drain ─► SubmitJobs
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::cluster::{ClusterState, MetaCommand, NodeId, NodeInfo, ShardId};
use protocol::jobs::{JobPhase, MoveJob};
use protocol::message::{Request, Response};
use protocol::rpc::Pool;
use protocol::{Error, Result, sqlstate};

use crate::meta::{MetaClient, plan_drain, plan_rebalance};

/// Each shard's size in bytes, from its primary (a shard whose primary does not answer
/// counts as empty: the plan still evens out copies).
pub async fn shard_bytes(state: &ClusterState, pool: &Pool) -> BTreeMap<ShardId, u64> {
    let calls = state.shards.values().filter_map(|s| {
        let addr = state.node_addr(s.primary)?.to_string();
        let (pool, id) = (pool.clone(), s.id);
        Some(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(3),
                pool.call(&addr, Request::ShardStats { shard: id }),
            )
            .await;
            match r {
                Ok(Ok(Response::ShardStats(st))) => Some((id, st.bytes)),
                _ => None,
            }
        })
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Plans moves that even out the cluster (or one keyspace) and, unless `dry_run`, queues them.
/// Returns the moves, with their job ids once queued.
pub async fn rebalance(
    meta: &MetaClient,
    pool: &Pool,
    keyspace: Option<&str>,
    dry_run: bool,
) -> Result<Vec<MoveJob>> {
    let state = meta.state();
    if let Some(k) = keyspace
        && !state.keyspaces.contains_key(k)
    {
        return Err(Error::new(
            sqlstate::UNDEFINED_OBJECT,
            format!("keyspace \"{k}\" does not exist"),
        ));
    }
    refuse_if_busy(&state)?;
    let bytes = shard_bytes(&state, pool).await;
    let moves = plan_rebalance(&state, keyspace, &bytes);
    if dry_run || moves.is_empty() {
        return Ok(moves);
    }
    submit(meta, moves).await
}

/// Marks `node` as draining (no new copies land there) and, unless `dry_run`, queues moves of
/// every copy it holds. A drain that cannot place some copy (too few other nodes for the
/// replication factor) is refused before anything changes.
pub async fn drain_node(
    meta: &MetaClient,
    pool: &Pool,
    node: NodeId,
    dry_run: bool,
) -> Result<Vec<MoveJob>> {
    let state = meta.state();
    if !state.nodes.contains_key(&node) {
        return Err(Error::new(
            sqlstate::UNDEFINED_OBJECT,
            format!("node {node} does not exist"),
        ));
    }
    refuse_if_busy(&state)?;
    let bytes = shard_bytes(&state, pool).await;
    let moves = plan_drain(&state, node, &bytes);
    let held = state.copies_on(node);
    if moves.len() < held {
        return Err(Error::new(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "node {node} holds {held} shard copies but only {} can move: every shard needs its copies on distinct nodes; add a node first",
                moves.len()
            ),
        ));
    }
    if dry_run {
        return Ok(moves);
    }
    meta.propose(MetaCommand::SetDraining {
        node,
        draining: true,
    })
    .await?;
    if moves.is_empty() {
        return Ok(moves);
    }
    submit(meta, moves).await
}

/// Splits `shard`'s hash range in two online; the new shard (upper half) gets its primary on
/// `to`, or on the node holding the fewest copies. Returns the queued job.
pub async fn split(meta: &MetaClient, shard: ShardId, to: Option<NodeId>) -> Result<MoveJob> {
    let state = meta.state();
    let info = state.shards.get(&shard).ok_or_else(|| {
        Error::new(
            sqlstate::UNDEFINED_OBJECT,
            format!("shard {shard} does not exist"),
        )
    })?;
    refuse_if_busy(&state)?;
    // A unique index is enforced by each shard alone: after a split, equal values that do
    // not decide the shard could sit on two shards unnoticed.
    for t in state
        .tables
        .values()
        .filter(|t| t.keyspace == info.keyspace)
    {
        if let Some(fk) = t.schema.foreign_keys.first() {
            return Err(Error::unsupported(format!(
                "cannot split shard {shard}: table \"{}\" has foreign key \"{}\"",
                t.schema.name, fk.name
            ))
            .with_detail("Each shard enforces foreign keys only among its own rows."));
        }
        if let Some(idx) = t
            .schema
            .indexes
            .iter()
            .find(|i| i.unique && !t.shard_key.iter().all(|k| i.columns.contains(k)))
        {
            return Err(Error::unsupported(format!(
                "cannot split shard {shard}: unique index \"{}\" on table \"{}\" does not include the shard key",
                idx.name, t.schema.name
            ))
            .with_detail("Each shard enforces uniqueness only among its own rows."));
        }
    }
    let to = match to {
        Some(n)
            if state.nodes.contains_key(&n)
                && !state.draining.contains(&n)
                && state.shard_may_use(shard, n) =>
        {
            n
        }
        Some(n) => {
            return Err(Error::new(
                sqlstate::UNDEFINED_OBJECT,
                format!(
                    "node {n} does not exist, is draining, or is not one of the keyspace's nodes"
                ),
            ));
        }
        None => state
            .nodes
            .keys()
            .copied()
            .filter(|n| !state.draining.contains(n) && state.shard_may_use(shard, *n))
            .min_by_key(|n| (state.copies_on(*n), *n))
            .ok_or_else(|| Error::internal("no node to place the new shard on"))?,
    };
    let job = MoveJob::split(shard, info.primary, to);
    submit(meta, vec![job])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("the split was not queued"))
}

/// Registers a node by id and internal address (a node also registers itself when it starts).
pub async fn add_node(meta: &MetaClient, id: NodeId, addr: &str) -> Result<()> {
    if addr.is_empty() || !addr.contains(':') {
        return Err(Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("node address \"{addr}\" must be host:port"),
        ));
    }
    meta.propose(MetaCommand::RegisterNode(NodeInfo {
        id,
        addr: addr.to_string(),
    }))
    .await?;
    // A node that was drained and comes back takes copies again.
    if meta.state().draining.contains(&id) {
        meta.propose(MetaCommand::SetDraining {
            node: id,
            draining: false,
        })
        .await?;
    }
    Ok(())
}

/// Creates a keyspace (federation: its own shard count, copies and, optionally, its own
/// nodes) and waits, bounded, until meta has placed its shards. `CREATE KEYSPACE` and
/// `tessera admin create-keyspace` both come here.
pub async fn create_keyspace(
    meta: &MetaClient,
    ks: protocol::cluster::KeyspaceInfo,
    if_not_exists: bool,
) -> Result<()> {
    let state = meta.state();
    if state.keyspaces.contains_key(&ks.name) {
        if if_not_exists {
            return Ok(());
        }
        return Err(Error::new(
            sqlstate::DUPLICATE_OBJECT,
            format!("keyspace \"{}\" already exists", ks.name),
        ));
    }
    if ks.name.is_empty() || ks.name.len() > 63 {
        return Err(Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "a keyspace name has 1 to 63 characters",
        ));
    }
    if !(1..=4096).contains(&ks.shard_count) {
        return Err(Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("shards must be between 1 and 4096, not {}", ks.shard_count),
        ));
    }
    if ks.replication_factor == 0 {
        return Err(Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "replicas must be at least 1",
        ));
    }
    if let Some(n) = ks.nodes.iter().find(|n| !state.nodes.contains_key(n)) {
        return Err(Error::new(
            sqlstate::UNDEFINED_OBJECT,
            format!("node {n} does not exist"),
        ));
    }
    let usable = state
        .nodes
        .keys()
        .filter(|n| ks.allows(**n) && !state.draining.contains(n))
        .count();
    if (ks.replication_factor as usize) > usable {
        return Err(Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "replicas = {} needs as many nodes, and the keyspace can use {usable}",
                ks.replication_factor
            ),
        ));
    }
    let name = ks.name.clone();
    if let Err(e) = meta.propose(MetaCommand::CreateKeyspace(ks)).await {
        // Another session created it meanwhile.
        if !(if_not_exists && meta.state().keyspaces.contains_key(&name)) {
            return Err(e);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = meta.state();
        if state.shards.values().any(|s| s.keyspace == name) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("keyspace \"{name}\" was created but its shards are not placed yet"),
            ));
        }
        let _ = meta
            .wait_for_version(state.version + 1, Duration::from_millis(200))
            .await;
    }
}

/// Asks for a running job to be rolled back (a split already trimming finishes instead).
pub async fn cancel_job(meta: &MetaClient, id: u64) -> Result<()> {
    meta.propose(MetaCommand::CancelJob { id }).await?;
    Ok(())
}

/// Forgets a node that holds nothing any more.
pub async fn remove_node(meta: &MetaClient, id: NodeId) -> Result<()> {
    meta.propose(MetaCommand::RemoveNode { node: id }).await?;
    Ok(())
}

fn refuse_if_busy(state: &ClusterState) -> Result<()> {
    let active = state.jobs.values().filter(|j| j.phase.is_active()).count();
    if active > 0 {
        return Err(Error::new(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "{active} shard moves are still running; wait for them (tessera admin status) before planning more"
            ),
        ));
    }
    Ok(())
}

/// Queues `moves`; returns them as queued (with ids).
async fn submit(meta: &MetaClient, moves: Vec<MoveJob>) -> Result<Vec<MoveJob>> {
    let before = meta.state().jobs.keys().next_back().copied().unwrap_or(0);
    let state = meta.propose(MetaCommand::SubmitJobs(moves)).await?;
    Ok(state
        .jobs
        .range(before + 1..)
        .map(|(_, j)| j.clone())
        .collect())
}

/// One line about a move, for plans, status and SQL.
pub fn describe(job: &MoveJob, state: &ClusterState) -> String {
    let role = match state.shards.get(&job.shard) {
        Some(s) if job.phase == JobPhase::Queued && s.primary == job.from => " (primary)",
        _ => "",
    };
    let p = &job.progress;
    let mut line = match job.kind {
        protocol::jobs::JobKind::Move => format!(
            "shard {} node {} -> node {}{role}: {}",
            job.shard,
            job.from,
            job.to,
            job.phase.name()
        ),
        protocol::jobs::JobKind::Split { new_shard } => format!(
            "split shard {} -> new shard {new_shard} (primary on node {}): {}",
            job.shard,
            job.to,
            job.phase.name()
        ),
    };
    match job.phase {
        JobPhase::Copying | JobPhase::Frozen | JobPhase::Trimming => line.push_str(&format!(
            ", {}/{} rows, {}/{} bytes, lag {}",
            p.rows_copied, p.rows_total, p.bytes_copied, p.bytes_total, p.lag
        )),
        JobPhase::Done => line.push_str(&format!(
            ", {} rows, writes paused {} ms, took {} ms",
            p.rows_total,
            p.pause_ms,
            p.finished_ms.saturating_sub(p.started_ms)
        )),
        JobPhase::RolledBack => line.push_str(&format!(
            ": {}",
            job.error.as_deref().unwrap_or("cancelled")
        )),
        JobPhase::Queued => {}
    }
    line
}
