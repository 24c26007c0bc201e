//! Exact sliding log: the last `calls` admission times in a lock-free ring of slots.

use super::{limit_and_window, sat};
use crate::algorithm::{Admitted, RateAlgorithm, Refusal, Snapshot};
use crate::error::ConfigError;
use crate::quota::Quota;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// The largest `calls` the sliding log accepts (8 MiB of slots per key).
pub const MAX_LOG_CALLS: u64 = 1 << 20;

/// The per-key state of [`SlidingLog`]: `calls` slots, each the time of one admission (+1; 0 is
/// an empty slot), and a hint to where the oldest one probably is.
///
/// An admission at `t` claims a slot by one CAS from a value that has *expired* (`≤ t − W`) to
/// `t`. So along the history of any single slot, successive stamps are at least `W` apart, and a
/// half-open window of length `W` can hold at most one stamp per slot: at most `calls`
/// admissions in any window, under any interleaving and any clock behaviour. The hint makes the
/// admit path O(1) in the common case; a refusal scans all slots to be exact.
///
/// # Memory ordering
///
/// Each slot is its own location updated by CAS (`AcqRel`/`Acquire`); the invariant above is
/// per slot, so no ordering between slots is needed. The hint is `Relaxed`: any value is correct.
#[derive(Debug)]
pub struct SlidingLogState {
    slots: Box<[AtomicU64]>,
    hint: AtomicUsize,
}

impl SlidingLogState {
    /// A fresh state with room for `calls` timestamps.
    fn new(calls: usize) -> Self {
        Self {
            slots: (0..calls.max(1)).map(|_| AtomicU64::new(0)).collect(),
            hint: AtomicUsize::new(0),
        }
    }

    /// The raw slots (admission time + 1, or 0 when empty) and the hint, for persistence,
    /// diagnostics and tests.
    pub fn raw(&self) -> (Vec<u64>, usize) {
        (
            self.slots
                .iter()
                .map(|s| s.load(Ordering::Acquire))
                .collect(),
            self.hint.load(Ordering::Relaxed),
        )
    }
}

/// Exact sliding window: at most `calls` admissions in *every* window of length `period`.
///
/// Admits at `t` iff fewer than `calls` admissions lie in `(t − period, t]`. Memory is
/// `8·calls` bytes per key; [`MAX_LOG_CALLS`] is the limit. Admitting is O(1) in the common case;
/// a refusal (and [`peek`](RateAlgorithm::peek)) scans the `calls` slots. For large limits where
/// an estimate is good enough, [`SlidingWindowCounter`](crate::SlidingWindowCounter) is O(1).
///
/// A weighted request claims its `n` slots one by one; if it cannot get them all it gives them
/// back. While it does, a concurrent request may be refused that would otherwise have passed:
/// the log never over-admits, but weighted requests under contention may under-admit.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Quota, RateAlgorithm, SlidingLog};
///
/// let log = SlidingLog::new(&Quota::per_second(2)).unwrap();
/// let s = log.new_state();
/// assert!(log.check(&s, 0, 1).is_ok());
/// assert!(log.check(&s, 600_000_000, 1).is_ok());
/// assert!(log.check(&s, 999_999_999, 1).is_err());
/// assert!(log.check(&s, 1_000_000_000, 1).is_ok()); // the first one left the window
/// assert!(log.check(&s, 1_500_000_000, 1).is_err()); // 600 ms and 1 s are still in it
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingLog {
    limit: u64,
    w: u64,
}

impl SlidingLog {
    /// Build from a quota: `calls` per any window of `period`.
    pub fn new(quota: &Quota) -> Result<Self, ConfigError> {
        let (limit, w) = limit_and_window(quota)?;
        if limit > MAX_LOG_CALLS {
            return Err(ConfigError::TooManyCalls {
                algorithm: "sliding log",
                calls: limit,
                max: MAX_LOG_CALLS,
            });
        }
        Ok(Self { limit, w })
    }

    /// The window length in ns.
    pub fn window_ns(&self) -> u64 {
        self.w
    }

    /// A state from values returned by [`SlidingLogState::raw`], or `None` if the number of
    /// slots is not this log's `calls`.
    pub fn state_from_raw(&self, slots: &[u64], hint: usize) -> Option<SlidingLogState> {
        (slots.len() as u64 == self.limit).then(|| SlidingLogState {
            slots: slots.iter().map(|&v| AtomicU64::new(v)).collect(),
            hint: AtomicUsize::new(hint),
        })
    }

    /// The value stored for an admission at `now` (never 0, the empty mark).
    #[inline]
    fn stamp(now: u64) -> u64 {
        now.saturating_add(1)
    }

    /// When the admission stored as `val` leaves the window (0 for an empty slot).
    #[inline]
    fn leaves_at(&self, val: u64) -> u128 {
        if val == 0 {
            0
        } else {
            u128::from(val - 1) + u128::from(self.w)
        }
    }

    #[inline]
    fn expired(&self, val: u64, now: u64) -> bool {
        self.leaves_at(val) <= u128::from(now)
    }

    /// Unit requests admissible now: slots that are empty or expired.
    fn free_slots(&self, state: &SlidingLogState, now: u64) -> u64 {
        state
            .slots
            .iter()
            .filter(|s| self.expired(s.load(Ordering::Acquire), now))
            .count() as u64
    }

    /// Free slots after an admission into `idx`, assuming stamps are in ring order from the
    /// slot after `idx` (oldest) round to `idx` (newest), as they are when time is monotone:
    /// a binary search for the first slot still in the window.
    fn free_after(&self, state: &SlidingLogState, idx: usize, now: u64) -> u64 {
        let len = state.slots.len();
        let at = |i: usize| state.slots[(idx + 1 + i) % len].load(Ordering::Acquire);
        let (mut lo, mut hi) = (0usize, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.expired(at(mid), now) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo as u64
    }

    /// The time at which `n` slots will be free, and when all will be (a scan; skipped for
    /// `META = false`).
    fn refusal<const META: bool>(&self, state: &SlidingLogState, now: u64, n: u64) -> Refusal {
        if !META {
            return Refusal::Limited {
                retry_after: 0,
                reset_after: 0,
            };
        }
        let mut leaves: Vec<u128> = state
            .slots
            .iter()
            .map(|s| self.leaves_at(s.load(Ordering::Acquire)))
            .collect();
        let last = leaves.iter().copied().max().unwrap_or(0);
        let i = (n as usize).clamp(1, leaves.len()) - 1;
        let (_, nth, _) = leaves.select_nth_unstable(i);
        Refusal::Limited {
            retry_after: sat(nth.saturating_sub(u128::from(now))).max(1),
            reset_after: sat(last.saturating_sub(u128::from(now))),
        }
    }

    /// Try to claim one expired slot, scanning from `start`; returns its index and old value.
    #[inline]
    fn claim(&self, state: &SlidingLogState, now: u64, start: usize) -> Option<(usize, u64)> {
        let len = state.slots.len();
        let stamp = Self::stamp(now);
        for i in 0..len {
            let mut idx = start + i;
            if idx >= len {
                idx -= len;
            }
            let slot = &state.slots[idx];
            let mut cur = slot.load(Ordering::Acquire);
            while self.expired(cur, now) {
                match crate::sync::cas(slot, cur, stamp) {
                    Ok(_) => return Some((idx, cur)),
                    Err(actual) => cur = actual,
                }
            }
        }
        None
    }

    /// The decision; with `META = false` (`allow`) the metadata (a binary search on admission,
    /// a scan on refusal) is skipped.
    fn decide<const META: bool>(
        &self,
        state: &SlidingLogState,
        now: u64,
        n: u64,
    ) -> Result<Admitted, Refusal> {
        if n > self.limit {
            return Err(Refusal::Never);
        }
        if n == 0 {
            let free = self.free_slots(state, now);
            return Ok(Admitted {
                at: now,
                delay: 0,
                remaining: free,
                limit: self.limit,
                reset_after: self.peek(state, now).reset_after,
                weight: 0,
                tat_after: 0,
            });
        }
        if now == u64::MAX {
            // The end of time (584 years after the epoch) cannot be stamped (`now + 1`): refuse
            // rather than store a stamp that would already have expired.
            return Err(Refusal::Limited {
                retry_after: u64::MAX,
                reset_after: u64::MAX,
            });
        }
        let len = state.slots.len();
        let start = state.hint.load(Ordering::Relaxed) % len;
        if n == 1 {
            return match self.claim(state, now, start) {
                Some((idx, _)) => {
                    state.hint.store(idx + 1, Ordering::Relaxed);
                    Ok(self.admitted::<META>(state, now, idx, 1))
                }
                None => Err(self.refusal::<META>(state, now, 1)),
            };
        }
        let mut claimed: Vec<(usize, u64)> = Vec::with_capacity(n as usize);
        let mut next = start;
        while (claimed.len() as u64) < n {
            match self.claim(state, now, next) {
                Some((idx, old)) => {
                    claimed.push((idx, old));
                    next = if idx + 1 == len { 0 } else { idx + 1 };
                }
                None => break,
            }
        }
        if claimed.len() as u64 == n {
            let (last, _) = claimed[claimed.len() - 1];
            state.hint.store(last + 1, Ordering::Relaxed);
            return Ok(self.admitted::<META>(state, now, last, n));
        }
        // Not enough room: give back what was taken. A slot we stamped can only have been
        // replaced since if our stamp expired for another thread, in which case it is theirs.
        let stamp = Self::stamp(now);
        for (idx, old) in claimed {
            let _ =
                state.slots[idx].compare_exchange(stamp, old, Ordering::AcqRel, Ordering::Acquire);
        }
        Err(self.refusal::<META>(state, now, n))
    }

    fn admitted<const META: bool>(
        &self,
        state: &SlidingLogState,
        now: u64,
        last_idx: usize,
        n: u64,
    ) -> Admitted {
        let newest_leaves = self.leaves_at(Self::stamp(now));
        Admitted {
            at: now,
            delay: 0,
            remaining: if META {
                self.free_after(state, last_idx, now)
            } else {
                0
            },
            limit: self.limit,
            reset_after: sat(newest_leaves - u128::from(now)),
            weight: n,
            tat_after: 0,
        }
    }
}

impl RateAlgorithm for SlidingLog {
    type State = SlidingLogState;

    fn new_state(&self) -> SlidingLogState {
        SlidingLogState::new(self.limit as usize)
    }

    fn capacity(&self) -> u64 {
        self.limit
    }

    fn check(&self, state: &SlidingLogState, now: u64, n: u64) -> Result<Admitted, Refusal> {
        self.decide::<true>(state, now, n)
    }

    fn allow(&self, state: &SlidingLogState, now: u64, n: u64) -> bool {
        self.decide::<false>(state, now, n).is_ok()
    }

    fn peek(&self, state: &SlidingLogState, now: u64) -> Snapshot {
        let remaining = self.free_slots(state, now);
        let (retry_after, reset_after) = if remaining > 0 {
            let last = state
                .slots
                .iter()
                .map(|s| self.leaves_at(s.load(Ordering::Acquire)))
                .max()
                .unwrap_or(0);
            (0, sat(last.saturating_sub(u128::from(now))))
        } else {
            match self.refusal::<true>(state, now, 1) {
                Refusal::Limited {
                    retry_after,
                    reset_after,
                } => (retry_after, reset_after),
                Refusal::Never => (u64::MAX, u64::MAX),
            }
        };
        Snapshot {
            at: now,
            remaining,
            limit: self.limit,
            retry_after,
            reset_after,
        }
    }

    fn reset(&self, state: &SlidingLogState) {
        for s in state.slots.iter() {
            s.store(0, Ordering::Release);
        }
        state.hint.store(0, Ordering::Relaxed);
    }

    fn idle_at(&self, state: &SlidingLogState, _now: u64) -> u64 {
        sat(state
            .slots
            .iter()
            .map(|s| self.leaves_at(s.load(Ordering::Acquire)))
            .max()
            .unwrap_or(0))
    }
}
