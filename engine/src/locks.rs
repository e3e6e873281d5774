//! Row locks: which transaction may write a row, and who waits for whom.
//!
//! ```text
//!  holders: table → key → txn           waits_for: txn → txn it waits for
//!  acquire: free → take it │ mine → ok │ held → deadlock check, then wait (lock_timeout)
//!  release_all(txn) at commit or rollback wakes every waiter
//! ```
//! A writer locks a row before it buffers a change to it and keeps the lock until its
//! transaction ends, so two transactions never both change a row: the second waits, then
//! sees the first one's outcome. Before waiting, a transaction follows the waits-for chain from
//! the holder; reaching itself means a cycle, and it becomes the victim (40P01).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use protocol::error::{Error, Result, sqlstate};

pub type TxnId = u64;
type LockKey = (String, Vec<u8>);

#[derive(Default)]
struct State {
    /// By table, then key: a lookup borrows the caller's name and key, so asking again for a
    /// lock the transaction holds (every `put` after its `lock_row`) allocates nothing.
    holders: HashMap<String, HashMap<Vec<u8>, TxnId>>,
    held: HashMap<TxnId, Vec<LockKey>>,
    waits_for: HashMap<TxnId, TxnId>,
}

impl State {
    fn holder(&self, table: &str, key: &[u8]) -> Option<TxnId> {
        self.holders
            .get(table)
            .and_then(|keys| keys.get(key))
            .copied()
    }

    fn take(&mut self, txn: TxnId, table: &str, key: &[u8]) {
        match self.holders.get_mut(table) {
            Some(keys) => {
                keys.insert(key.to_vec(), txn);
            }
            None => {
                self.holders
                    .insert(table.to_string(), HashMap::from([(key.to_vec(), txn)]));
            }
        }
        self.held
            .entry(txn)
            .or_default()
            .push((table.to_string(), key.to_vec()));
    }
}

#[derive(Default)]
pub struct LockTable {
    state: Mutex<State>,
    released: Condvar,
}

impl LockTable {
    /// Takes the exclusive lock on a row for `txn`, waiting while another transaction holds it.
    pub fn acquire(
        &self,
        txn: TxnId,
        table: &str,
        key: &[u8],
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.acquire_or_cancel(txn, table, key, timeout, None)
    }

    /// Takes the lock on a row for `txn` if it is free (or `txn`'s already); false, without
    /// waiting, if another transaction holds it.
    pub fn try_acquire(&self, txn: TxnId, table: &str, key: &[u8]) -> Result<bool> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::internal("lock table poisoned"))?;
        match state.holder(table, key) {
            Some(h) => Ok(h == txn),
            None => {
                state.take(txn, table, key);
                Ok(true)
            }
        }
    }

    /// As `acquire`, giving up with 57014 once `cancelled` is set (the client cancelled).
    pub fn acquire_or_cancel(
        &self,
        txn: TxnId,
        table: &str,
        key: &[u8],
        timeout: Option<Duration>,
        cancelled: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<()> {
        let mut deadline = None;
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::internal("lock table poisoned"))?;
        loop {
            let holder = match state.holder(table, key) {
                None => {
                    state.take(txn, table, key);
                    return Ok(());
                }
                Some(h) if h == txn => return Ok(()),
                Some(h) => h,
            };
            // Timed from the first wait: a lock that is free or already ours needs no clock.
            let deadline = *deadline.get_or_insert_with(|| timeout.map(|t| Instant::now() + t));
            if Self::closes_cycle(&state, txn, holder) {
                state.waits_for.remove(&txn);
                return Err(Error::new(sqlstate::DEADLOCK_DETECTED, "deadlock detected")
                    .with_detail(format!(
                        "Transaction {txn} waits for transaction {holder}, which waits for it."
                    )));
            }
            if cancelled.is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst)) {
                return Err(Error::new(
                    sqlstate::QUERY_CANCELED,
                    "canceling statement due to user request",
                ));
            }
            state.waits_for.insert(txn, holder);
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        state.waits_for.remove(&txn);
                        return Err(Error::new(
                            sqlstate::LOCK_NOT_AVAILABLE,
                            "canceling statement due to lock timeout",
                        ));
                    }
                    left
                }
                // Wake now and then to re-run deadlock detection against a changed graph.
                None => Duration::from_millis(100),
            };
            state = self
                .released
                .wait_timeout(state, wait.min(Duration::from_millis(100)))
                .map_err(|_| Error::internal("lock table poisoned"))?
                .0;
            state.waits_for.remove(&txn);
        }
    }

    /// True if `holder` (transitively) waits for `txn`.
    fn closes_cycle(state: &State, txn: TxnId, holder: TxnId) -> bool {
        let mut at = holder;
        for _ in 0..=state.waits_for.len() {
            match state.waits_for.get(&at) {
                Some(&next) if next == txn => return true,
                Some(&next) => at = next,
                None => return false,
            }
        }
        false
    }

    /// Releases every lock `txn` holds and wakes the waiters.
    pub fn release_all(&self, txn: TxnId) {
        if let Ok(mut state) = self.state.lock() {
            if let Some(keys) = state.held.remove(&txn) {
                for (table, key) in keys {
                    if let Some(held) = state.holders.get_mut(&table) {
                        held.remove(&key);
                        if held.is_empty() {
                            state.holders.remove(&table);
                        }
                    }
                }
            }
            state.waits_for.remove(&txn);
        }
        self.released.notify_all();
    }

    /// Number of rows currently locked (for tests and metrics).
    pub fn locked_rows(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.holders.values().map(HashMap::len).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn second_writer_waits_until_release() {
        let locks = Arc::new(LockTable::default());
        locks.acquire(1, "t", b"k", None).unwrap();
        locks.acquire(1, "t", b"k", None).unwrap();
        let l2 = locks.clone();
        let waiter =
            std::thread::spawn(move || l2.acquire(2, "t", b"k", Some(Duration::from_secs(5))));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished());
        locks.release_all(1);
        waiter.join().unwrap().unwrap();
        assert_eq!(locks.locked_rows(), 1);
    }

    #[test]
    fn lock_timeout_and_deadlock() {
        let locks = Arc::new(LockTable::default());
        locks.acquire(1, "t", b"a", None).unwrap();
        let err = locks
            .acquire(2, "t", b"a", Some(Duration::from_millis(20)))
            .unwrap_err();
        assert_eq!(err.code, sqlstate::LOCK_NOT_AVAILABLE);
        locks.acquire(2, "t", b"b", None).unwrap();
        let l = locks.clone();
        let t1 = std::thread::spawn(move || l.acquire(1, "t", b"b", Some(Duration::from_secs(5))));
        std::thread::sleep(Duration::from_millis(50));
        let err = locks
            .acquire(2, "t", b"a", Some(Duration::from_secs(5)))
            .unwrap_err();
        assert_eq!(err.code, sqlstate::DEADLOCK_DETECTED);
        locks.release_all(2);
        t1.join().unwrap().unwrap();
    }

    #[test]
    fn try_acquire_takes_free_or_own_locks_and_never_waits() {
        let locks = LockTable::default();
        assert!(locks.try_acquire(1, "t", b"k").unwrap());
        assert!(locks.try_acquire(1, "t", b"k").unwrap(), "its own");
        assert!(!locks.try_acquire(2, "t", b"k").unwrap(), "held by 1");
        assert_eq!(locks.locked_rows(), 1);
        locks.release_all(1);
        assert!(locks.try_acquire(2, "t", b"k").unwrap());
    }
}
