//! Injectable time: a wall clock trait and a hybrid logical clock (HLC) built on it.
//!
//! Roles never read the system clock directly; they take an `Arc<dyn Clock>`, so simulation and
//! tests can drive time by hand. Commit timestamps are HLC values: the upper 48 bits are
//! milliseconds since the Unix epoch, the lower 16 a logical counter, so timestamps from one
//! clock strictly increase even when the wall clock stalls or steps back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_millis(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to: for tests and simulation.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start_millis: u64) -> Self {
        ManualClock(AtomicU64::new(start_millis))
    }
    pub fn advance(&self, millis: u64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A hybrid logical clock: `(millis << 16) | counter`, strictly increasing per instance.
#[derive(Debug)]
pub struct Hlc {
    clock: Arc<dyn Clock>,
    last: AtomicU64,
}

impl Hlc {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Hlc {
            clock,
            last: AtomicU64::new(0),
        }
    }

    /// A timestamp greater than every one this clock returned or observed before.
    pub fn now(&self) -> u64 {
        let physical = self.clock.now_millis() << 16;
        let mut last = self.last.load(Ordering::SeqCst);
        loop {
            let next = if physical > last { physical } else { last + 1 };
            match self
                .last
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Moves the clock past a timestamp received from another node.
    pub fn observe(&self, remote: u64) {
        self.last.fetch_max(remote, Ordering::SeqCst);
    }

    /// The wall-clock milliseconds of an HLC timestamp.
    pub fn millis(ts: u64) -> u64 {
        ts >> 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_monotonic_when_wall_clock_stalls() {
        let clock = Arc::new(ManualClock::new(1000));
        let hlc = Hlc::new(clock.clone());
        let a = hlc.now();
        let b = hlc.now();
        assert!(b > a);
        hlc.observe(b + 100);
        assert!(hlc.now() > b + 100);
        clock.advance(10_000);
        assert_eq!(Hlc::millis(hlc.now()), 11_000);
    }
}
