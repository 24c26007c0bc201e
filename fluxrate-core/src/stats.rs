//! Allowed / rejected counters: striped per limiter, plain per key.

use crate::algorithm::Snapshot;
use crate::sync::{AtomicU64, Ordering};

/// Stripes a limiter keeps for threads that own one: counted with a plain load and store.
const OWNED: usize = 16;
/// All stripes: the owned ones, then those shared by the threads beyond [`OWNED`], counted
/// with `fetch_add`. A power of two, so that masking an index proves it in bounds.
const STRIPES: usize = 32;

/// One cache line (two, against adjacent-line prefetch) of counters.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    allowed: AtomicU64,
    rejected: AtomicU64,
}

/// Limiter-wide counters that cost no atomic read-modify-write on the hot path.
///
/// Each thread owns one of the first [`OWNED`] stripes while it lives (the same index in
/// every limiter, handed out by a process-wide registry and given back when the thread exits),
/// and counts on it with a plain load and store: no `lock` prefix, no contention. Threads
/// beyond those share the other stripes and count with `fetch_add`. Reading sums every
/// stripe; [`clear`](Self::clear) does not write the stripes (a racing owner's store would
/// undo it) but records the sums as the new zero. 4 KiB per limiter.
///
/// # Memory ordering
///
/// Counts are statistics, not synchronisation: `Relaxed`. An owned stripe has one writer at a
/// time: a thread's last store happens before it gives its index back (the registry's mutex),
/// which happens before the next owner takes it, so no increment is lost across owners. The
/// zero recorded by `clear` is stored with `Release` and read with `Acquire`, so a reader that
/// sees it also sees stripe values at least as large as those it was summed from.
#[derive(Debug)]
pub(crate) struct Counters {
    stripes: Box<[Stripe; STRIPES]>,
    zero_allowed: AtomicU64,
    zero_rejected: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            stripes: Box::new(core::array::from_fn(|_| Stripe::default())),
            zero_allowed: AtomicU64::new(0),
            zero_rejected: AtomicU64::new(0),
        }
    }
}

/// The process-wide registry of owned stripe indices. (Plain `std` synchronisation: a
/// registry of threads, not part of any cell's state machine, so not modelled by loom.)
mod registry {
    use super::{OWNED, STRIPES};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Indices given back by threads that exited, and the next never-used index.
    static FREE: Mutex<(Vec<usize>, usize)> = Mutex::new((Vec::new(), 0));
    /// Round-robin over the shared stripes, for threads that found no owned one.
    static NEXT_SHARED: AtomicUsize = AtomicUsize::new(0);

    /// No stripe yet: the thread has not counted.
    const UNSET: usize = usize::MAX;

    thread_local! {
        /// This thread's stripe index (`UNSET` until it first counts): a plain thread-local
        /// with no destructor, so that reading it costs one load.
        static SLOT: Cell<usize> = const { Cell::new(UNSET) };
        /// Gives an owned index back when the thread exits (set when one is claimed).
        static OWNER: Owner = const { Owner(Cell::new(UNSET)) };
    }

    struct Owner(Cell<usize>);

    impl Drop for Owner {
        fn drop(&mut self) {
            let i = self.0.get();
            if i < OWNED {
                // Counting after this (other thread-locals' destructors) uses a shared stripe.
                let _ = SLOT.try_with(|s| s.set(OWNED));
                FREE.lock().unwrap_or_else(|e| e.into_inner()).0.push(i);
            }
        }
    }

    /// Take an owned index if one is free (and arrange to give it back at thread exit), else
    /// a shared one.
    #[cold]
    #[inline(never)]
    fn claim() -> usize {
        let shared = || OWNED + NEXT_SHARED.fetch_add(1, Ordering::Relaxed) % (STRIPES - OWNED);
        let i = {
            let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
            match free.0.pop() {
                Some(i) => i,
                None if free.1 < OWNED => {
                    free.1 += 1;
                    free.1 - 1
                }
                None => UNSET,
            }
        };
        if i == UNSET {
            return shared();
        }
        // Registering the destructor fails only while the thread's thread-locals are being
        // destroyed: then the index goes straight back and the thread shares.
        if OWNER.try_with(|o| o.0.set(i)).is_err() {
            FREE.lock().unwrap_or_else(|e| e.into_inner()).0.push(i);
            return shared();
        }
        i
    }

    /// This thread's stripe: an owned one (`< OWNED`) or a shared one.
    #[inline]
    pub(super) fn slot() -> usize {
        SLOT.try_with(|s| {
            let i = s.get();
            if i != UNSET {
                return i;
            }
            let i = claim();
            s.set(i);
            i
        })
        .unwrap_or(OWNED)
    }
}

impl Counters {
    #[inline]
    pub(crate) fn record(&self, allowed: bool) {
        let i = registry::slot();
        let s = &self.stripes[i % STRIPES];
        let c = if allowed { &s.allowed } else { &s.rejected };
        if i < OWNED {
            // The only writer of this stripe: no read-modify-write needed.
            c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        } else {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sums(&self) -> (u64, u64) {
        self.stripes.iter().fold((0u64, 0u64), |(a, r), s| {
            (
                a.wrapping_add(s.allowed.load(Ordering::Relaxed)),
                r.wrapping_add(s.rejected.load(Ordering::Relaxed)),
            )
        })
    }

    pub(crate) fn totals(&self) -> (u64, u64) {
        let zero = (
            self.zero_allowed.load(Ordering::Acquire),
            self.zero_rejected.load(Ordering::Acquire),
        );
        let (a, r) = self.sums();
        (a.saturating_sub(zero.0), r.saturating_sub(zero.1))
    }

    pub(crate) fn clear(&self) {
        let (a, r) = self.sums();
        self.zero_allowed.store(a, Ordering::Release);
        self.zero_rejected.store(r, Ordering::Release);
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
