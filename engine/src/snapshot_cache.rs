//! One read snapshot per shard copy, shared by every read until the next write commits.
//!
//! ```text
//!  point read ──► generation g ──► cached snapshot taken under g? ──yes──► reuse it
//!                                        │ no
//!                                        ▼
//!                                  begin a redb read, keep it under g
//!
//!  any redb write commit ──► generation g+1, drop the cached snapshot
//! ```
//! Opening a redb read transaction and its row table cost about as much as the
//! primary-key lookup a point read then does. Between two commits every reader would open
//! the very same view, so one is kept and shared.
//!
//! Why it is never stale: the generation moves *after* a commit returns and before the
//! commit is acknowledged to anyone. A snapshot is kept under the generation its opener read
//! *before* opening it, so it holds every commit counted up to that generation (and maybe
//! more). A reader that finds the generation unchanged therefore sees every commit
//! acknowledged before it started, which is what a fresh snapshot would give it. The cached
//! snapshot is dropped at the next commit, so it never pins pages that later commits free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use protocol::error::Result;

use crate::storage::Snapshot;

/// A snapshot with its catalog stamp (see `Shard::stamped_snapshot`).
pub type Stamped = (Arc<Snapshot>, Option<u64>);

#[derive(Default)]
pub struct SnapshotCache {
    generation: AtomicU64,
    current: Mutex<Option<(u64, Stamped)>>,
}

impl SnapshotCache {
    /// The shared snapshot if no write committed since it was opened, else a new one from
    /// `open`, which is kept for the readers that follow.
    pub fn get(&self, open: impl FnOnce() -> Result<(Snapshot, Option<u64>)>) -> Result<Stamped> {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Ok(current) = self.current.lock()
            && let Some((g, (snap, stamp))) = current.as_ref()
            && *g == generation
        {
            return Ok((snap.clone(), *stamp));
        }
        let (snap, stamp) = open()?;
        let snap = Arc::new(snap);
        if let Ok(mut current) = self.current.lock()
            // A commit since `generation` was read: keeping this one would only pin pages
            // until the next reader replaced it.
            && self.generation.load(Ordering::SeqCst) == generation
        {
            *current = Some((generation, (snap.clone(), stamp)));
        }
        Ok((snap, stamp))
    }

    /// Called after every redb write transaction's commit (whether it succeeded or not),
    /// before its outcome is reported.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let dropped = self.current.lock().ok().and_then(|mut c| c.take());
        // The read transaction ends here, outside the lock.
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> redb::Database {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        crate::storage::init(&db).unwrap();
        db
    }

    #[test]
    fn a_snapshot_is_shared_until_a_write_commits() {
        let db = db();
        let cache = SnapshotCache::default();
        let mut opened = 0;
        let mut open = || {
            opened += 1;
            Ok((Snapshot::new(&db)?, None))
        };
        let (a, _) = cache.get(&mut open).unwrap();
        let (b, _) = cache.get(&mut open).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        cache.invalidate();
        let (c, _) = cache.get(&mut open).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(opened, 2);
    }

    #[test]
    fn a_snapshot_opened_across_a_commit_is_not_kept() {
        let db = db();
        let cache = SnapshotCache::default();
        let (a, _) = cache
            .get(|| {
                let snap = Snapshot::new(&db)?;
                // A write commits while this reader opens its snapshot.
                cache.invalidate();
                Ok((snap, None))
            })
            .unwrap();
        let (b, _) = cache.get(|| Ok((Snapshot::new(&db)?, None))).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
    }
}
