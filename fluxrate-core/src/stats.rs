//! Allowed / rejected counters: striped per limiter, plain per key.

use crate::algorithm::Snapshot;
use crate::sync::{AtomicU64, Ordering};

const STRIPES: usize = 8;

/// One cache line (two, against adjacent-line prefetch) of counters.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    allowed: AtomicU64,
    rejected: AtomicU64,
}

/// Limiter-wide counters, striped so that threads do not contend on one cache line.
///
/// Each thread adds to its own stripe (assigned round-robin on first use); reading sums all
/// stripes. Counts are `Relaxed`: they are statistics, not synchronisation.
#[derive(Debug)]
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        }
    }
}

/// Hands each thread the next stripe, round-robin, the first time it counts: the first
/// `STRIPES` threads never share a cache line. (A plain `core` atomic: a process-wide
/// registry, not part of any cell's state machine, so not modelled by loom.)
static NEXT_STRIPE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, core::sync::atomic::Ordering::Relaxed) % STRIPES;
}

#[inline]
fn stripe_index() -> usize {
    STRIPE.with(|s| *s)
}

impl Counters {
    #[inline]
    pub(crate) fn record(&self, allowed: bool) {
        let s = &self.stripes[stripe_index()];
        let c = if allowed { &s.allowed } else { &s.rejected };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn totals(&self) -> (u64, u64) {
        self.stripes.iter().fold((0, 0), |(a, r), s| {
            (
                a + s.allowed.load(Ordering::Relaxed),
                r + s.rejected.load(Ordering::Relaxed),
            )
        })
    }

    pub(crate) fn clear(&self) {
        for s in self.stripes.iter() {
            s.allowed.store(0, Ordering::Relaxed);
            s.rejected.store(0, Ordering::Relaxed);
        }
    }
}

/// Per-key counters, kept only when the limiter was built with
/// [`per_key_stats`](crate::Builder::per_key_stats).
#[derive(Debug, Default)]
pub(crate) struct KeyCounters {
    allowed: AtomicU64,
    rejected: AtomicU64,
}

impl KeyCounters {
    pub(crate) fn record(&self, allowed: bool) {
        let c = if allowed {
            &self.allowed
        } else {
            &self.rejected
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn totals(&self) -> (u64, u64) {
        (
            self.allowed.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }
}

/// Limiter-wide statistics.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Quota, RateLimiter};
///
/// let limiter = RateLimiter::builder(Quota::per_minute(2)).build().unwrap();
/// for _ in 0..3 {
///     limiter.allow();
/// }
/// let s = limiter.stats();
/// assert_eq!((s.allowed(), s.rejected(), s.keys()), (2, 1, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub(crate) allowed: u64,
    pub(crate) rejected: u64,
    pub(crate) keys: usize,
    pub(crate) counted: bool,
    pub(crate) sweeps: u64,
    pub(crate) evicted: u64,
}

impl Stats {
    /// Requests admitted since the limiter was built (or [`reset_stats`](crate::RateLimiter::reset_stats)).
    pub fn allowed(&self) -> u64 {
        self.allowed
    }

    /// Requests refused (including weights that could never succeed and timed-out acquires).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Keys currently holding state (0 for a direct limiter).
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Whether decisions are counted (false if built with
    /// [`stats(false)`](crate::Builder::stats): `allowed` and `rejected` then stay 0).
    pub fn counted(&self) -> bool {
        self.counted
    }

    /// Full passes over the keyed store that dropped idle keys (automatic, explicit
    /// [`sweep`](crate::RateLimiter::sweep)es, and those a full store runs to make room), since
    /// the limiter was built. Always counted; 0 for a direct limiter.
    pub fn sweeps(&self) -> u64 {
        self.sweeps
    }

    /// Idle keys dropped from the keyed store (by sweeps, or one at a time by a full store
    /// making room for a new key), since the limiter was built. Always counted; 0 for a direct
    /// limiter.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

/// One key's statistics: its current state and, when enabled, its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStats {
    pub(crate) counts: Option<(u64, u64)>,
    pub(crate) current: Snapshot,
}

impl KeyStats {
    /// Requests admitted for this key while its state was kept, if per-key stats are enabled.
    pub fn allowed(&self) -> Option<u64> {
        self.counts.map(|c| c.0)
    }

    /// Requests refused for this key while its state was kept, if per-key stats are enabled.
    pub fn rejected(&self) -> Option<u64> {
        self.counts.map(|c| c.1)
    }

    /// The key's current usage.
    pub fn current(&self) -> Snapshot {
        self.current
    }
}
