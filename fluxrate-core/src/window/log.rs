//! Exact sliding log: the last `calls` admission times in a lock-free ring of slots that grows
//! with use.

use super::{limit_and_window, sat};
use crate::algorithm::{Admitted, Algorithm, KeyCell, RateAlgorithm, Refusal, Snapshot};
use crate::error::ConfigError;
use crate::quota::Quota;
use crate::sync::{AtomicU64, Ordering};

mod ring;

pub use ring::SlidingLogState;
use ring::{seg_len, seg_start, Segment};

/// The largest `calls` the sliding log accepts (8 MiB of slots per key at most).
pub const MAX_LOG_CALLS: u64 = 1 << 20;

/// Exact sliding window: at most `calls` admissions in *every* window of length `period`.
///
/// Admits at `t` iff fewer than `calls` admissions lie in `(t − period, t]`. Memory per key is
/// 8 bytes per slot of a ring that grows with use, in segments that double it, only when every
/// slot holds a stamp still in the window: at most twice the peak number of stamps in the window
/// (and at least 8 slots), never more than `calls` slots ([`MAX_LOG_CALLS`] is the limit), plus
/// a small header (see [`SlidingLogState`]). Admitting is O(1) in the common case; a refusal (and
/// [`peek`](RateAlgorithm::peek)) scans the allocated slots. For large limits where an estimate
/// is good enough, [`SlidingWindowCounter`](crate::SlidingWindowCounter) is O(1) in time and
/// memory.
///
/// A weighted request claims its `n` slots one by one; if it cannot get them all it gives them
/// back. While it does, a concurrent request may be refused that would otherwise have passed:
/// the log never over-admits, but weighted requests under contention may under-admit (and a
/// weighted request refused under contention may leave the ring grown).
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
                algorithm: Algorithm::SlidingLog,
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
    /// slots is not one that `raw` returns for this log (`min(calls, 8)`, 16, 32, … or `calls`).
    pub fn state_from_raw(&self, slots: &[u64], hint: usize) -> Option<SlidingLogState> {
        SlidingLogState::from_raw(self.limit as usize, slots, hint)
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

    /// Whether the admission stored as `val` has left the window at `now`: `leaves_at(val) ≤
    /// now`, i.e. `val ≤ now − (W − 1)`, one comparison (an empty slot, 0, always has; before
    /// `W − 1` only it has).
    #[inline]
    fn expired(&self, val: u64, now: u64) -> bool {
        val <= now.saturating_sub(self.w - 1)
    }

    /// Slots not allocated yet (all free).
    fn unallocated(&self, state: &SlidingLogState) -> u64 {
        let allocated: u64 = state.segs().map(|s| s.slots.len() as u64).sum();
        self.limit.saturating_sub(allocated)
    }

    /// Unit requests admissible now: slots that are empty, expired or not allocated yet.
    fn free_slots(&self, state: &SlidingLogState, now: u64) -> u64 {
        let expired = state
            .slots()
            .filter(|s| self.expired(s.load(Ordering::Acquire), now))
            .count() as u64;
        self.unallocated(state) + expired
    }

    /// Expired slots of `seg`, assuming its stamps are in ring order from its hint, as they are
    /// when time is monotone: a binary search for the first slot still in the window, in the
    /// slots from the hint to the end, then in those before the hint.
    fn expired_in_order(&self, seg: &Segment, now: u64) -> u64 {
        let expired = |s: &AtomicU64| self.expired(s.load(Ordering::Acquire), now);
        let (before, from) = seg.slots.split_at(seg.hint());
        if !expired(&from[0]) {
            return 0;
        }
        let n = if expired(&from[from.len() - 1]) {
            from.len() + before.partition_point(expired)
        } else {
            from.partition_point(expired)
        };
        n as u64
    }

    /// Free slots after an admission (exact when time is monotone): the unallocated ones, and
    /// the expired ones of each segment by a binary search from its hint.
    fn free_after(&self, state: &SlidingLogState, now: u64) -> u64 {
        let (mut allocated, mut expired) = (0u64, 0u64);
        for seg in state.segs() {
            allocated += seg.slots.len() as u64;
            expired += self.expired_in_order(seg, now);
        }
        self.limit.saturating_sub(allocated) + expired
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
        // One pass for the earliest and the latest departure: a unit request (the common case)
        // needs nothing else, and unallocated slots are free now (they come first).
        let (mut allocated, mut first, mut last) = (0u64, u128::MAX, 0u128);
        for s in state.slots() {
            let leaves = self.leaves_at(s.load(Ordering::Acquire));
            allocated += 1;
            first = first.min(leaves);
            last = last.max(leaves);
        }
        let unallocated = self.limit.saturating_sub(allocated);
        let i = n.clamp(1, self.limit) - 1;
        let nth = if i < unallocated {
            0
        } else if i == unallocated {
            first
        } else {
            let mut leaves: Vec<u128> = state
                .slots()
                .map(|s| self.leaves_at(s.load(Ordering::Acquire)))
                .collect();
            let i = ((i - unallocated) as usize).min(leaves.len() - 1);
            *leaves.select_nth_unstable(i).1
        };
        Refusal::Limited {
            retry_after: sat(nth.saturating_sub(u128::from(now))).max(1),
            reset_after: sat(last.saturating_sub(u128::from(now))),
        }
    }

    /// Try to claim an expired slot of `seg`, trying at most `tries` slots from its hint;
    /// returns its index and old value and moves the hint past it.
    #[inline(always)]
    fn claim_in(&self, seg: &Segment, now: u64, tries: usize) -> Option<(usize, u64)> {
        let stamp = Self::stamp(now);
        let mut idx = seg.hint();
        for _ in 0..tries.min(seg.slots.len()) {
            let slot = &seg.slots[idx];
            let mut cur = slot.load(Ordering::Acquire);
            while self.expired(cur, now) {
                match crate::sync::cas(slot, cur, stamp) {
                    Ok(_) => {
                        seg.hint.store(seg.after(idx), Ordering::Relaxed);
                        return Some((idx, cur));
                    }
                    Err(actual) => cur = actual,
                }
            }
            idx = seg.after(idx);
        }
        None
    }

    /// Claim one slot for an admission at `now`; returns its segment, index and old value. The
    /// hinted slot of the segment used last first (the common case, O(1)), then
    /// [`claim_slow`](Self::claim_slow).
    #[inline(always)]
    fn claim(&self, state: &SlidingLogState, now: u64, need: u64) -> Option<(usize, usize, u64)> {
        if state.more.is_empty() {
            // A ring of one segment (`calls ≤ 8`): every slot, from the hint.
            return self
                .claim_in(&state.first, now, usize::MAX)
                .map(|(idx, old)| (0, idx, old));
        }
        let c = state.cur.load(Ordering::Relaxed);
        if let Some(seg) = state.seg(c) {
            if let Some((idx, old)) = self.claim_in(seg, now, 1) {
                return Some((c, idx, old));
            }
        }
        self.claim_slow(state, now, c, need)
    }

    /// The other segments' hinted slots (when time is monotone, the oldest stamp of all is at
    /// one of them), then every slot of every segment, each from its hint, allocating the next
    /// segment only when every slot before it holds a live stamp and the `need` slots this
    /// request still needs fit in the ring's unallocated slots.
    #[inline(never)]
    fn claim_slow(
        &self,
        state: &SlidingLogState,
        now: u64,
        c: usize,
        need: u64,
    ) -> Option<(usize, usize, u64)> {
        let segments = state.more.len() + 1;
        let found = |k: usize, (idx, old): (usize, u64)| {
            state.cur.store(k, Ordering::Relaxed);
            Some((k, idx, old))
        };
        // The later segments up to the first unallocated one (they are allocated in order),
        // then the earlier ones.
        for k in c + 1..segments {
            let Some(seg) = state.seg(k) else { break };
            if let Some(claimed) = self.claim_in(seg, now, 1) {
                return found(k, claimed);
            }
        }
        for k in 0..c.min(segments) {
            if let Some(claimed) = state.seg(k).and_then(|seg| self.claim_in(seg, now, 1)) {
                return found(k, claimed);
            }
        }
        for k in 0..segments {
            let seg = match state.seg(k) {
                Some(seg) => seg,
                None => {
                    if self.limit.saturating_sub(seg_start(k) as u64) < need {
                        return None;
                    }
                    state.grow(k, seg_len(self.limit as usize, k))
                }
            };
            if let Some(claimed) = self.claim_in(seg, now, usize::MAX) {
                return found(k, claimed);
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
                cell: KeyCell::Own,
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
        if n == 1 {
            return match self.claim(state, now, 1) {
                Some(_) => Ok(self.admitted::<META>(state, now, 1)),
                None => Err(self.refusal::<META>(state, now, 1)),
            };
        }
        let cur = state.cur.load(Ordering::Relaxed);
        let mut claimed: Vec<(usize, usize, u64)> = Vec::with_capacity(n as usize);
        while (claimed.len() as u64) < n {
            match self.claim(state, now, n - claimed.len() as u64) {
                Some(c) => claimed.push(c),
                None => break,
            }
        }
        if claimed.len() as u64 == n {
            return Ok(self.admitted::<META>(state, now, n));
        }
        // Not enough room: give back what was taken, latest first, hints included. A slot we
        // stamped can only have been replaced since if our stamp expired for another thread, in
        // which case it is theirs.
        let stamp = Self::stamp(now);
        for &(k, idx, old) in claimed.iter().rev() {
            if let Some(seg) = state.seg(k) {
                let _ = seg.slots[idx].compare_exchange(
                    stamp,
                    old,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                seg.hint.store(idx, Ordering::Relaxed);
            }
        }
        state.cur.store(cur, Ordering::Relaxed);
        Err(self.refusal::<META>(state, now, n))
    }

    fn admitted<const META: bool>(&self, state: &SlidingLogState, now: u64, n: u64) -> Admitted {
        let newest_leaves = self.leaves_at(Self::stamp(now));
        Admitted {
            at: now,
            delay: 0,
            remaining: if META { self.free_after(state, now) } else { 0 },
            limit: self.limit,
            reset_after: sat(newest_leaves - u128::from(now)),
            weight: n,
            tat_after: 0,
            cell: KeyCell::Own,
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
        let (retry_after, reset_after, window) = if remaining > 0 {
            let (mut first, mut last) = (u128::MAX, 0u128);
            for s in state.slots() {
                let leaves = self.leaves_at(s.load(Ordering::Acquire));
                last = last.max(leaves);
                if leaves > u128::from(now) {
                    first = first.min(leaves);
                }
            }
            // Using every free slot now fills the log: the next unit goes in when the oldest
            // entry still in the window leaves, or one period from now if there is none.
            if first == u128::MAX {
                first = self.leaves_at(Self::stamp(now));
            }
            let after = |t: u128| sat(t.saturating_sub(u128::from(now)));
            (0, after(last), after(first))
        } else {
            match self.refusal::<true>(state, now, 1) {
                Refusal::Limited {
                    retry_after,
                    reset_after,
                } => (retry_after, reset_after, retry_after),
                Refusal::Never => (u64::MAX, u64::MAX, u64::MAX),
            }
        };
        Snapshot {
            at: now,
            remaining,
            limit: self.limit,
            retry_after,
            reset_after,
            window: Some(window),
        }
    }

    fn reset(&self, state: &SlidingLogState) {
        for seg in state.segs() {
            for s in seg.slots.iter() {
                s.store(0, Ordering::Release);
            }
            seg.hint.store(0, Ordering::Relaxed);
        }
        state.cur.store(0, Ordering::Relaxed);
    }

    fn idle_at(&self, state: &SlidingLogState, _now: u64) -> u64 {
        sat(state
            .slots()
            .map(|s| self.leaves_at(s.load(Ordering::Acquire)))
            .max()
            .unwrap_or(0))
    }
}
