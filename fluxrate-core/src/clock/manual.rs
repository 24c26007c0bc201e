//! A clock that moves only when told to.

use super::{nanos_saturating, Clock};
use crate::sync::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A clock that only moves when told to: for tests, simulations and demos.
///
/// Clones share the same time. [`sleep_until`](Clock::sleep_until) advances the clock to the
/// deadline instead of sleeping, so a blocking wait returns at once having "waited" exactly.
/// [`set`](Self::set) may move time backwards, to test how limiters cope with clock faults.
///
/// # Memory ordering
///
/// Readings and updates are `SeqCst`: a test that advances the clock in one thread and checks
/// in another sees the new time once `advance` has returned.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let shared = clock.clone();
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(shared.now(), 5_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    ns: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock at time 0.
    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// A manual clock at `ns` nanoseconds.
    pub fn starting_at(ns: u64) -> Self {
        Self {
            ns: Arc::new(AtomicU64::new(ns)),
        }
    }

    /// Move time forward by `d` (saturating at `u64::MAX` nanoseconds).
    pub fn advance(&self, d: Duration) {
        self.advance_ns(nanos_saturating(d));
    }

    /// Move time forward by `ns` nanoseconds (saturating).
    pub fn advance_ns(&self, ns: u64) {
        let _ = self
            .ns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ns))
            });
    }

    /// Set the time to `ns`, forwards or backwards.
    pub fn set(&self, ns: u64) {
        self.ns.store(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> u64 {
        self.ns.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, deadline: u64) {
        self.ns.fetch_max(deadline, Ordering::SeqCst);
    }
}
