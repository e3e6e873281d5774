//! Routes that a prepared statement remembers, so its executions skip planning.
//!
//! Planning a statement means walking its tree for the tables it reads, looking them up,
//! finding the shard-key condition and rendering the text each shard runs; for a prepared
//! `SELECT … WHERE id = $1` that is most of the router's work per execution. But when the
//! plan is "the one shard that owns `$n`'s value" (`Planner::point_param`), only the shard
//! depends on the parameters; when it is "the only shard of a one-shard keyspace", nothing
//! does. So the statement keeps, beside its parse:
//!
//! ```text
//!  PointRoute { cluster map version, table, n or none, text for the shard }
//!    execution ─► same map version? ─► shard of params[n] (or the keyspace's) ─► Plan::Direct
//!                   │ no (DDL, a move, a new view, …)
//!                   └─► plan in full, remember the new route
//! ```
//!
//! Every planning input other than the parameters (tables, views, shard map, primaries) is
//! part of the cluster map, whose version changes with any of them. A route is remembered
//! only when the steps before planning changed nothing (no view, sequence or `tessera.*`
//! call), and only after checking that it picks the shard the planner picked.

use std::sync::Mutex;

use protocol::Value;
use protocol::cluster::ClusterState;

use crate::plan::{Plan, shard_of_key, target};

/// How one prepared statement was last routed.
#[derive(Clone, Debug)]
struct PointRoute {
    version: u64,
    table: String,
    /// The parameter whose value picks the shard, or `None`: the only shard of `table`'s
    /// keyspace.
    param: Option<usize>,
    sql: String,
}

/// A prepared statement's remembered route (empty until one is known).
#[derive(Debug, Default)]
pub struct RouteCache(Mutex<Option<PointRoute>>);

impl RouteCache {
    /// The plan for these parameters, if the remembered route still holds.
    pub fn plan(&self, state: &ClusterState, params: &[Value]) -> Option<Plan> {
        let route = self.0.lock().ok()?.clone()?;
        if route.version != state.version {
            return None;
        }
        let target = match route.param {
            Some(n) => shard_target(state, &route.table, params.get(n)?)?,
            None => sole_target(state, &route.table)?,
        };
        let targets = vec![target];
        Some(Plan::Direct {
            targets,
            sql: route.sql,
        })
    }

    /// Remembers `plan` (made at `state` with `params`) if parameter `param` alone chose
    /// its one shard, or (`param` `None`) if it is the one shard of `table`'s keyspace.
    pub fn remember(
        &self,
        state: &ClusterState,
        params: &[Value],
        table: &str,
        param: Option<usize>,
        plan: &Plan,
    ) {
        let Plan::Direct { targets, sql } = plan else {
            return;
        };
        let [planned] = targets.as_slice() else {
            return;
        };
        let chosen = match param {
            Some(n) => params.get(n).and_then(|v| shard_target(state, table, v)),
            None => sole_target(state, table),
        };
        let agrees = chosen.is_some_and(|t| t.shard == planned.shard);
        if agrees && let Ok(mut slot) = self.0.lock() {
            *slot = Some(PointRoute {
                version: state.version,
                table: table.to_string(),
                param,
                sql: sql.clone(),
            });
        }
    }
}

/// The primary of the only shard of `table`'s keyspace; `None` if it has more (or none).
fn sole_target(state: &ClusterState, table: &str) -> Option<crate::plan::Target> {
    let info = state.tables.get(table)?;
    let shards = state.keyspace_shards(&info.keyspace);
    let [only] = shards.as_slice() else {
        return None;
    };
    target(state, only).ok()
}

/// The primary of the shard that owns `value` as `table`'s shard key, as the planner finds
/// it; `None` for NULL or a value the key's type cannot hold (those are planned in full).
fn shard_target(state: &ClusterState, table: &str, value: &Value) -> Option<crate::plan::Target> {
    if value.is_null() {
        return None;
    }
    let info = state.tables.get(table)?;
    let [key] = info.shard_key.as_slice() else {
        return None;
    };
    let key_type = &info.schema.columns.get(*key)?.data_type;
    let shard = shard_of_key(state, info, key_type, value.clone()).ok()?;
    target(state, shard).ok()
}
