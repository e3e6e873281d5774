//! Routes that a prepared statement remembers, so its executions skip planning.
//!
//! Planning a statement means walking its tree for the tables it reads, looking them up,
//! finding the shard-key condition and rendering the text each shard runs; for a prepared
//! `SELECT … WHERE id = $1` that is most of the router's work per execution. But when the
//! plan is "the one shard that owns `$n`'s value" (`Planner::point_param`), only the shard
//! depends on the parameters. So the statement keeps, beside its parse:
//!
//! ```text
//!  PointRoute { cluster map version, table, n, text for the shard }
//!    execution ─► same map version? ─► shard of params[n] ─► Plan::Direct
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
    param: usize,
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
        let targets = vec![shard_target(state, &route.table, params.get(route.param)?)?];
        Some(Plan::Direct {
            targets,
            sql: route.sql,
        })
    }

    /// Remembers `plan` (made at `state` with `params`) if parameter `param` alone chose
    /// its one shard.
    pub fn remember(
        &self,
        state: &ClusterState,
        params: &[Value],
        table: &str,
        param: usize,
        plan: &Plan,
    ) {
        let Plan::Direct { targets, sql } = plan else {
            return;
        };
        let [planned] = targets.as_slice() else {
            return;
        };
        let agrees = params
            .get(param)
            .and_then(|v| shard_target(state, table, v))
            .is_some_and(|t| t.shard == planned.shard);
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
