//! The bound plans of one prepared point read, one per shard that ran it.
//!
//! A node keeps each prepared statement's parse (`node::Parsed`); this sits beside it and
//! holds, per shard, the plan `sql::reuse::bind_read` made and the catalog entries it was
//! bound against. The next execution on that shard checks the entries in its own snapshot
//! and runs the plan without binding; if a table's definition changed (or the plan could
//! not be reused) it binds as before and keeps the new plan.
//!
//! ```text
//!  Parsed (per statement text) ── ReadPlans ── shard 3 → (catalog entries, BoundRead)
//!                                           └─ shard 7 → (catalog entries, BoundRead)
//! ```

use std::sync::{Arc, Mutex};

use protocol::cluster::ShardId;

use crate::sql::reuse::BoundRead;

/// A bound plan and the catalog entries it is valid for; `bound` `None` records that the
/// statement's plan is single-use over these entries (it is bound each time, once).
pub struct ReadPlan {
    pub catalog: Vec<(String, Option<Vec<u8>>)>,
    pub bound: Option<BoundRead>,
}

#[derive(Default)]
pub struct ReadPlans {
    by_shard: Mutex<Vec<(ShardId, Arc<ReadPlan>)>>,
}

impl ReadPlans {
    pub fn get(&self, shard: ShardId) -> Option<Arc<ReadPlan>> {
        let plans = self.by_shard.lock().ok()?;
        plans
            .iter()
            .find(|(s, _)| *s == shard)
            .map(|(_, p)| p.clone())
    }

    pub fn put(&self, shard: ShardId, plan: Arc<ReadPlan>) {
        if let Ok(mut plans) = self.by_shard.lock() {
            match plans.iter_mut().find(|(s, _)| *s == shard) {
                Some(slot) => slot.1 = plan,
                None => plans.push((shard, plan)),
            }
        }
    }
}
