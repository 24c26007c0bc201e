//! Sliding window counter: the O(1) two-window weighted estimate, in one `AtomicU64`.

use super::{limit_and_window, sat, start_of, Divisor};
use crate::algorithm::{Admitted, Algorithm, KeyCell, RateAlgorithm, Refusal, Snapshot};
use crate::error::ConfigError;
use crate::quota::Quota;
use crate::sync::{AtomicU64, Ordering};

mod estimate;

use estimate::View;

/// The largest `calls` the sliding window counter accepts (24-bit counts).
pub const MAX_COUNTER_CALLS: u64 = (1 << 24) - 1;

/// The per-key state of [`SlidingWindowCounter`]: one `AtomicU64` packing
/// `[window index mod 2^kb | previous count | current count]`, and the latest window any
/// reader has decided in on this state.
///
/// Each count takes just enough bits for `calls`; the rest (at least 16 bits) hold the window
/// index modulo `2^kb`. Packing all three in one word makes the window roll-over and the
/// admission one CAS: two separate words could not move "current" to "previous" atomically.
///
/// # Memory ordering
///
/// Two locations, one protocol. The packed word is updated by CAS (`AcqRel` on success,
/// `Acquire` loads). `latest` is raised (`fetch_max`, `AcqRel`) by the first reader of a window
/// *before* its CAS publishes that window in the word, and read (`Acquire`) *after* the word
/// was loaded. If a reader's load of the word sees a value written by a CAS that published
/// window `k` (or any later CAS: successful CASes on one word form a release sequence), that
/// CAS's `Release` synchronizes with the load, so the `fetch_max` before it happens-before the
/// reader's load of `latest`, which by coherence reads at least `k`. So a reader never sees a
/// window in the word that `latest` does not cover, and one whose clock is more than two
/// windows behind `latest` is refused instead of misreading the modular index (and can never
/// write an older window over a newer one: its CAS is never tried).
#[derive(Debug, Default)]
pub struct SlidingWindowCounterState {
    v: AtomicU64,
    latest: AtomicU64,
}

impl SlidingWindowCounterState {
    /// A fresh state.
    pub fn new() -> Self {
        Self {
            v: AtomicU64::new(0),
            latest: AtomicU64::new(0),
        }
    }

    /// The raw packed value (for persistence, diagnostics and tests).
    pub fn raw(&self) -> u64 {
        self.v.load(Ordering::Acquire)
    }

    /// A state from a value returned by [`raw`](Self::raw). It knows of no newer window than
    /// its readers' clocks, so restore it only where those clocks are not behind the window it
    /// was saved in.
    pub fn from_raw(v: u64) -> Self {
        Self {
            v: AtomicU64::new(v),
            latest: AtomicU64::new(0),
        }
    }
}

/// Sliding window counter: admits while `prev·(W − e)/W + curr + n ≤ calls`, where `prev` and
/// `curr` are the counts of the previous and current aligned windows and `e` the time elapsed
/// in the current one (integer arithmetic, no floats).
///
/// O(1) memory per key (16 bytes) and exact per aligned window (≤ `calls`), but approximate for
/// unaligned windows: an adversary who puts all `calls` at the very end of one window can get up
/// to **`2·calls − 1`** admissions into a window of length `period` that straddles the boundary.
/// Use [`SlidingLog`](crate::SlidingLog) where the limit must hold for every window.
///
/// `calls` is at most [`MAX_COUNTER_CALLS`]. The window index is kept modulo `2^kb` (`kb ≥ 16`,
/// `kb = 64 − 2·bits(calls)`); a key left idle, and not swept, for a whole multiple of `2^kb`
/// windows (± 2) can then be refused for up to three windows. This errs only on the side of
/// refusing; it never over-admits.
///
/// Because the per-key index is modular, a reader whose clock reading is far behind (a thread
/// descheduled for several windows between reading the clock and deciding) could not tell an
/// old state from a newer one. So each state also keeps the latest window any reader has
/// decided in on it (a second `AtomicU64`, written once per window): a reader more than two
/// windows behind it is refused, with the wait until its clock catches up, and never resets a
/// newer state. The parameters hold no mutable state: any number of copies, or independently
/// built parameters of the same quota, may decide on one state.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Quota, RateAlgorithm, SlidingWindowCounter, SlidingWindowCounterState};
///
/// let swc = SlidingWindowCounter::new(&Quota::per_second(10)).unwrap();
/// let s = SlidingWindowCounterState::new();
/// for _ in 0..10 {
///     swc.check(&s, 999_000_000, 1).unwrap(); // all 10 at the end of window 0
/// }
/// // Halfway through window 1, the previous window still weighs 10 × 0.5 = 5.
/// let at_half = 1_500_000_000;
/// assert_eq!(swc.peek(&s, at_half).remaining(), 5);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindowCounter {
    limit: u64,
    w: u64,
    /// Bits per count.
    cb: u32,
    /// `2·cb`: where the window index starts in the word.
    kshift: u32,
    /// `2^kb − 1` (`kb = 64 − 2·cb` bits of the window index), `2^cb − 1`.
    kmask: u64,
    cmask: u64,
    /// Whether `5·L·W` fits in 64 bits, so that [`fits`](Self::fits) needs no 128-bit products
    /// (counts in the word are below `2L`, a request at most `L`).
    narrow: bool,
    /// `L·W` when `narrow` (else 0).
    lw: u64,
    /// The window length for the inline path of [`admit_now`](Self::admit_now): `w` when
    /// `narrow`, else 0, so that no time falls in the window there and every call takes
    /// [`admit_slow`](Self::admit_slow) (one test fewer on the path taken).
    fast_w: u64,
    div: Divisor,
}

impl SlidingWindowCounter {
    /// Build from a quota: `calls` per window of `period`.
    pub fn new(quota: &Quota) -> Result<Self, ConfigError> {
        let (limit, w) = limit_and_window(quota)?;
        if limit > MAX_COUNTER_CALLS {
            return Err(ConfigError::TooManyCalls {
                algorithm: Algorithm::SlidingWindowCounter,
                calls: limit,
                max: MAX_COUNTER_CALLS,
            });
        }
        let cb = 64 - limit.leading_zeros();
        let kb = 64 - 2 * cb;
        let narrow = limit
            .checked_mul(w)
            .and_then(|x| x.checked_mul(5))
            .is_some();
        Ok(Self {
            limit,
            w,
            cb,
            kshift: 2 * cb,
            kmask: (1u64 << kb) - 1,
            cmask: (1u64 << cb) - 1,
            narrow,
            lw: limit
                .checked_mul(w)
                .filter(|x| x.checked_mul(5).is_some())
                .unwrap_or(0),
            fast_w: if narrow { w } else { 0 },
            div: Divisor::new(w),
        })
    }

    /// The window length in ns.
    pub fn window_ns(&self) -> u64 {
        self.w
    }

    /// Refusal for a reader more than two windows behind the latest window seen (its clock
    /// reading is stale): wait until its clock reaches that window. `None` if not stale.
    /// Also raises `latest` when this reader is the first in a new window. Must run after the
    /// state word was loaded, so that it sees every window published by that word.
    #[inline]
    fn stale_reader(
        &self,
        state: &SlidingWindowCounterState,
        k_now: u64,
        now: u64,
    ) -> Option<Refusal> {
        let latest = state.latest.load(Ordering::Acquire);
        if k_now > latest {
            state.latest.fetch_max(k_now, Ordering::AcqRel);
            None
        } else if k_now.saturating_add(2) < latest {
            let wait = sat(start_of(latest, self.w).saturating_sub(u128::from(now)));
            Some(Refusal::Limited {
                retry_after: wait,
                reset_after: wait,
            })
        } else {
            None
        }
    }

    /// `allow`: the decision of `decide::<false>`, without metadata.
    ///
    /// The common case is tried first, inline: `now` falls in the `latest` window (found with a
    /// multiplication instead of a division), the state word counts that window, and the
    /// narrow estimate applies. That is exactly the first pass of [`admit_slow`](Self::admit_slow)
    /// in that case: the reader is in `latest`, so the stale-reader guard neither raises nor
    /// refuses, and re-packing the same window and previous count with `curr + n` is adding `n`
    /// to the word (`curr + n ≤ L` fits in a count once the estimate admits). Anything else (a
    /// new window, a state from another window, a wide limit, a lost CAS) goes to `admit_slow`,
    /// which starts over from a fresh load as a retry would. Kept out of line, the loop's
    /// invariants (the division, the 128-bit products) are not computed on every call.
    #[inline(always)]
    fn admit_now(&self, state: &SlidingWindowCounterState, now: u64, n: u64) -> bool {
        // The limit is at least 1: saying so lets the compiler drop this test for `n = 1`.
        if n > self.limit.max(1) {
            return false;
        }
        // The word first, then `latest`: the order the guard's protocol needs.
        let v = state.v.load(Ordering::Acquire);
        let latest = state.latest.load(Ordering::Acquire);
        // `latest` is 0 or some reading's `now / W`, so `latest·W` cannot overflow.
        if let Some(e) = now.checked_sub(latest.wrapping_mul(self.fast_w)) {
            // `e < fast_w`: `narrow`, and `now` is in the window `latest`.
            if e < self.fast_w && v >> self.kshift == latest & self.kmask() {
                let view = View {
                    prev: (v >> self.cb) & self.cmask(),
                    curr: v & self.cmask(),
                    k: latest,
                    e,
                };
                if !self.fits_narrow(&view, n, self.fast_w) {
                    return false;
                }
                if crate::sync::cas(&state.v, v, v + n).is_ok() {
                    return true;
                }
            }
        }
        self.admit_slow(state, now, n)
    }

    /// [`admit_now`](Self::admit_now) in every case: the reader's window, the stale-reader
    /// guard on every attempt (after the state word was loaded, as in `decide`), and the CAS
    /// loop.
    #[cold]
    #[inline(never)]
    fn admit_slow(&self, state: &SlidingWindowCounterState, now: u64, n: u64) -> bool {
        let mut v = state.v.load(Ordering::Acquire);
        loop {
            let latest = state.latest.load(Ordering::Acquire);
            // `latest` is 0 or some reading's `now / W`, so `latest·W` cannot overflow.
            let start = latest.wrapping_mul(self.w);
            let (k_now, e) = if now >= start && now - start < self.w {
                (latest, now - start)
            } else {
                let k = self.div.div(now);
                (k, now - k * self.w)
            };
            if k_now > latest {
                state.latest.fetch_max(k_now, Ordering::AcqRel);
            } else if latest > k_now.saturating_add(2) {
                return false;
            }
            let view = self.view_at(v, k_now, e);
            if !self.fits(&view, n) {
                return false;
            }
            let nv = self.pack(view.k, view.prev, view.curr + n);
            match crate::sync::cas(&state.v, v, nv) {
                Ok(_) => return true,
                Err(actual) => v = actual,
            }
        }
    }

    /// The decision; with `META = false` the metadata that costs divisions (retry-after,
    /// remaining, reset) is skipped.
    #[inline]
    fn decide<const META: bool>(
        &self,
        state: &SlidingWindowCounterState,
        now: u64,
        n: u64,
    ) -> Result<Admitted, Refusal> {
        if n > self.limit {
            return Err(Refusal::Never);
        }
        let k_now = self.div.div(now);
        let mut v = state.v.load(Ordering::Acquire);
        loop {
            if let Some(refusal) = self.stale_reader(state, k_now, now) {
                return Err(refusal);
            }
            let view = self.view_in(v, k_now, now);
            if !self.fits(&view, n) {
                if !META {
                    return Err(Refusal::Limited {
                        retry_after: 0,
                        reset_after: 0,
                    });
                }
                return Err(Refusal::Limited {
                    retry_after: sat(self.fits_at(&view, n).saturating_sub(u128::from(now))),
                    reset_after: sat(self.reset_at(&view).saturating_sub(u128::from(now))),
                });
            }
            let after = View {
                curr: view.curr + n,
                ..view
            };
            let nv = self.pack(after.k, after.prev, after.curr);
            match crate::sync::cas(&state.v, v, nv) {
                Ok(_) => {
                    return Ok(Admitted {
                        // A reader behind the state's window is counted at that window's start.
                        at: sat(start_of(after.k, self.w) + u128::from(after.e)).max(now),
                        delay: 0,
                        remaining: if META { self.remaining(&after) } else { 0 },
                        limit: self.limit,
                        reset_after: if META {
                            sat(self.reset_at(&after).saturating_sub(u128::from(now)))
                        } else {
                            0
                        },
                        weight: n,
                        tat_after: 0,
                        cell: KeyCell::Own,
                    });
                }
                Err(actual) => v = actual,
            }
        }
    }
}

impl RateAlgorithm for SlidingWindowCounter {
    type State = SlidingWindowCounterState;

    fn new_state(&self) -> SlidingWindowCounterState {
        SlidingWindowCounterState::new()
    }

    fn capacity(&self) -> u64 {
        self.limit
    }

    #[inline]
    fn check(
        &self,
        state: &SlidingWindowCounterState,
        now: u64,
        n: u64,
    ) -> Result<Admitted, Refusal> {
        self.decide::<true>(state, now, n)
    }

    #[inline]
    fn allow(&self, state: &SlidingWindowCounterState, now: u64, n: u64) -> bool {
        self.admit_now(state, now, n)
    }

    fn peek(&self, state: &SlidingWindowCounterState, now: u64) -> Snapshot {
        let v = state.v.load(Ordering::Acquire);
        let k_now = self.div.div(now);
        let latest = state.latest.load(Ordering::Acquire);
        if k_now.saturating_add(2) < latest {
            let wait = sat(start_of(latest, self.w).saturating_sub(u128::from(now)));
            // A stale reader may be admitted as soon as it is two windows behind `latest`
            // (judged at the start of the state's window), depending on the counts: nothing
            // before then, so that is the window (a lower bound; `retry_after` stays the
            // latest window's start, which never points too early).
            let not_stale = sat(start_of(latest - 2, self.w).saturating_sub(u128::from(now)));
            return Snapshot {
                at: now,
                remaining: 0,
                limit: self.limit,
                retry_after: wait,
                reset_after: wait,
                window: Some(not_stale),
            };
        }
        let view = self.view(v, now);
        let remaining = self.remaining(&view);
        let after = |t: u128| sat(t.saturating_sub(u128::from(now)));
        // Using every remaining unit now (`curr + remaining`, which fits), the next unit fits
        // once the previous window's weight has decayed by one (or in the next window).
        let used = View {
            curr: view.curr.saturating_add(remaining),
            ..view
        };
        Snapshot {
            at: now,
            remaining,
            limit: self.limit,
            retry_after: if remaining > 0 {
                0
            } else {
                after(self.fits_at(&view, 1))
            },
            window: Some(after(self.fits_at(&used, 1))),
            reset_after: sat(self.reset_at(&view).saturating_sub(u128::from(now))),
        }
    }

    fn reset(&self, state: &SlidingWindowCounterState) {
        // `latest` stays: it only refuses readers whose clocks are behind a window this state
        // has already been decided in.
        state.v.store(0, Ordering::Release);
    }

    fn idle_at(&self, state: &SlidingWindowCounterState, now: u64) -> u64 {
        sat(self.reset_at(&self.view(state.v.load(Ordering::Acquire), now)))
    }
}
