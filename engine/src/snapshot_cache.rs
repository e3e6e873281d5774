//! One read snapshot per shard copy, shared by every read until the next write commits.
//!
//! ```text
//!  point read ──► generation g ──► cached snapshot taken under g? ──yes──► reuse it
//!                                        │ no
//!                                        ▼
//!                                  begin a redb read, keep it under g
//!
//!  a redb write commit: committing+1, generation+1, drop the cached snapshot
//!                       redb commit
//!                       generation+1, committing-1      (a guard: also on panic)
//! ```
//! Opening a redb read transaction and its row table cost about as much as the
//! primary-key lookup a point read then does. Between two commits every reader would open
//! the very same view, so one is kept and shared.
//!
//! Why it is never stale: a snapshot is kept only if no commit was under way while it was
//! opened, under the generation read before it was opened; every commit moves the
//! generation before it starts and again after it returns, before its outcome is reported to
//! anyone. So a kept snapshot holds every commit that finished before its generation, and
//! a reader that finds the generation unchanged sees every commit acknowledged before it
//! started, which is what a fresh snapshot would show. While a commit is under way nothing
//! is shared: redb makes a commit visible to new readers inside `commit`, so a reader that
//! opens a snapshot of its own then may already see it, and a shared snapshot must never be
//! older than what a fresh one shows (a REPEATABLE READ transaction, or a 2PC decision read,
//! opens its own). Snapshots are dropped when a commit starts, so they never pin pages that
//! later commits free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use protocol::error::Result;

use crate::storage::Snapshot;

/// A snapshot with its catalog stamp (see `Shard::stamped_snapshot`).
pub type Stamped = (Arc<Snapshot>, Option<u64>);

#[derive(Default)]
pub struct SnapshotCache {
    generation: AtomicU64,
    /// Commits between their two generation moves.
    committing: AtomicU64,
    current: Mutex<Option<(u64, Stamped)>>,
}

/// Held across a redb commit (see `SnapshotCache::committing`); its drop ends it.
pub struct Committing<'a>(&'a SnapshotCache);

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.0.generation.fetch_add(1, Ordering::SeqCst);
        self.0.committing.fetch_sub(1, Ordering::SeqCst);
    }
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
        let quiet = self.committing.load(Ordering::SeqCst) == 0;
        let (snap, stamp) = open()?;
        let snap = Arc::new(snap);
        // Not kept: one opened while a commit was under way (it may or may not hold it), one
        // with a commit since `generation` was read, and one without a catalog stamp (opened
        // while a catalog change was being committed: every read of it would check the
        // catalog until the next commit).
        if quiet
            && stamp.is_some()
            && let Ok(mut current) = self.current.lock()
            && self.committing.load(Ordering::SeqCst) == 0
            && self.generation.load(Ordering::SeqCst) == generation
        {
            *current = Some((generation, (snap.clone(), stamp)));
        }
        Ok((snap, stamp))
    }

    /// Taken before every redb write transaction's commit and dropped after it (whether it
    /// succeeded, failed or panicked), before its outcome is reported.
    pub fn committing(&self) -> Committing<'_> {
        self.committing.fetch_add(1, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        let dropped = self.current.lock().ok().and_then(|mut c| c.take());
        // The read transaction ends here, outside the lock.
        drop(dropped);
        Committing(self)
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
            Ok((Snapshot::new(&db)?, Some(0)))
        };
        let (a, _) = cache.get(&mut open).unwrap();
        let (b, _) = cache.get(&mut open).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        drop(cache.committing());
        let (c, _) = cache.get(&mut open).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(opened, 2);
    }

    #[test]
    fn nothing_is_shared_while_a_commit_is_under_way() {
        let db = db();
        let cache = SnapshotCache::default();
        let open = || Ok((Snapshot::new(&db)?, Some(0)));
        let (a, _) = cache.get(open).unwrap();
        let under_way = cache.committing();
        let (b, _) = cache.get(open).unwrap();
        let (c, _) = cache.get(open).unwrap();
        assert!(!Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&b, &c));
        drop(under_way);
        let (d, _) = cache.get(open).unwrap();
        let (e, _) = cache.get(open).unwrap();
        assert!(Arc::ptr_eq(&d, &e));
    }

    #[test]
    fn a_snapshot_without_a_catalog_stamp_is_not_kept() {
        let db = db();
        let cache = SnapshotCache::default();
        let open = || Ok((Snapshot::new(&db)?, None));
        let (a, _) = cache.get(open).unwrap();
        let (b, _) = cache.get(open).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn a_snapshot_opened_across_a_commit_is_not_kept() {
        let db = db();
        let cache = SnapshotCache::default();
        let (a, _) = cache
            .get(|| {
                let snap = Snapshot::new(&db)?;
                // A write commits while this reader opens its snapshot.
                drop(cache.committing());
                Ok((snap, Some(0)))
            })
            .unwrap();
        let (b, _) = cache.get(|| Ok((Snapshot::new(&db)?, Some(0)))).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
    }
}
