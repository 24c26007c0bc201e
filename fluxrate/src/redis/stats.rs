//! What a limiter counts: who decided its requests and how the calls to Redis failed.

use super::error::FailureClass;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one [`RedisRateLimiter`](super::RedisRateLimiter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Admitted by Redis.
    pub admitted: u64,
    /// Refused by Redis (limited or over capacity).
    pub limited: u64,
    /// Calls that failed with [`FailureClass::NotExecuted`].
    pub not_executed: u64,
    /// Calls that failed with [`FailureClass::Indeterminate`].
    pub indeterminate: u64,
    /// Calls refused at once by the open circuit breaker.
    pub short_circuited: u64,
    /// Admitted by [`FailurePolicy::FailOpen`](super::FailurePolicy::FailOpen).
    pub fail_open: u64,
    /// Refused by [`FailurePolicy::FailClosed`](super::FailurePolicy::FailClosed).
    pub fail_closed: u64,
    /// Admitted by the local fallback.
    pub local_admitted: u64,
    /// Refused by the local fallback.
    pub local_limited: u64,
}

/// The live counters behind [`RedisStats`], one relaxed atomic each (they order nothing).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) admitted: AtomicU64,
    pub(crate) limited: AtomicU64,
    pub(crate) not_executed: AtomicU64,
    pub(crate) indeterminate: AtomicU64,
    pub(crate) short_circuited: AtomicU64,
    pub(crate) fail_open: AtomicU64,
    pub(crate) fail_closed: AtomicU64,
    pub(crate) local_admitted: AtomicU64,
    pub(crate) local_limited: AtomicU64,
}

/// Count one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// The counter of calls that failed as `class`.
    pub(crate) fn failed(&self, class: FailureClass) -> &AtomicU64 {
        match class {
            FailureClass::NotExecuted => &self.not_executed,
            FailureClass::Indeterminate => &self.indeterminate,
            FailureClass::CircuitOpen => &self.short_circuited,
        }
    }

    /// Their values now (each read on its own: not one consistent moment).
    pub(crate) fn snapshot(&self) -> RedisStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RedisStats {
            admitted: get(&self.admitted),
            limited: get(&self.limited),
            not_executed: get(&self.not_executed),
            indeterminate: get(&self.indeterminate),
            short_circuited: get(&self.short_circuited),
            fail_open: get(&self.fail_open),
            fail_closed: get(&self.fail_closed),
            local_admitted: get(&self.local_admitted),
            local_limited: get(&self.local_limited),
        }
    }
}
