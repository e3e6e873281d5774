//! The bound plans of one prepared point read, one per shard that ran it.
//!
//! A node keeps each prepared statement's parse (`node::Parsed`); this sits beside it and
//! holds, per shard, the plan `sql::reuse::bind_read` made and the catalog entries it was
//! bound against. The next execution on that shard checks the entries in its own snapshot
//! and runs the plan without binding; if a table's definition changed (or the plan could
//! not be reused) it binds as before and keeps the new plan.
//!
//! Checking the entries costs a catalog lookup per table on every execution, so a plan also
//! keeps the shard's *catalog stamp* under which they last matched (`Shard::catalog_seq`, a
//! sequence every catalog-changing commit moves on): a snapshot taken under the same stamp
//! has the same catalog, and the lookup is skipped.
//!
//! ```text
//!  Parsed (per statement text) ── ReadPlans ── shard 3 → (catalog entries, BoundRead)
//!                                           └─ shard 7 → (catalog entries, BoundRead)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use protocol::Result;

use protocol::cluster::ShardId;

use crate::sql::reuse::BoundRead;
use crate::storage::Snapshot;

/// A bound plan and the catalog entries it is valid for; `bound` `None` records that the
/// statement's plan is single-use over these entries (it is bound each time, once).
pub struct ReadPlan {
    pub catalog: Vec<(String, Option<Vec<u8>>)>,
    pub bound: Option<BoundRead>,
    /// The catalog stamp under which `catalog` was last found current (`NO_STAMP`: none).
    stamp: AtomicU64,
}

const NO_STAMP: u64 = u64::MAX;

impl ReadPlan {
    pub fn new(
        catalog: Vec<(String, Option<Vec<u8>>)>,
        bound: Option<BoundRead>,
        stamp: Option<u64>,
    ) -> Self {
        ReadPlan {
            catalog,
            bound,
            stamp: AtomicU64::new(stamp.unwrap_or(NO_STAMP)),
        }
    }

    /// True if the plan was made for `snap`'s catalog; `stamp` is the snapshot's catalog
    /// stamp, if it has one.
    pub fn valid_in(&self, snap: &Snapshot, stamp: Option<u64>) -> Result<bool> {
        if stamp.is_some_and(|s| s == self.stamp.load(Ordering::Relaxed)) {
            return Ok(true);
        }
        let valid = snap.catalog_is(&self.catalog)?;
        if valid && let Some(s) = stamp {
            self.stamp.store(s, Ordering::Relaxed);
        }
        Ok(valid)
    }
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
