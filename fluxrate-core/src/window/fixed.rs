//! Fixed window: a counter per aligned window, in one `AtomicU64`.

use super::{limit_and_window, sat, start_of, Divisor};
use crate::algorithm::{Admitted, KeyCell, RateAlgorithm, Refusal, Snapshot};
use crate::error::ConfigError;
use crate::quota::Quota;
use crate::sync::{AtomicU64, Ordering};

/// The per-key state of [`FixedWindow`]: one `AtomicU64` holding `v = k·L + count`.
///
/// Encoding the window index `k` and the count as one number that only grows makes the window
/// monotone: a reader whose clock is in an older window sees `v` beyond its own window's range
/// and is denied; it can never reset the counter of a newer window. The encoding
/// needs no bit split and never wraps, because `k·L ≤ t` whenever `L ≤ period` in ns, which the
/// quota guarantees.
///
/// # Memory ordering
///
/// One location, updated by CAS (`AcqRel` on success, `Acquire` loads), as for
/// [`GcraState`](crate::GcraState).
#[derive(Debug, Default)]
pub struct FixedWindowState {
    v: AtomicU64,
}

impl FixedWindowState {
    /// A fresh state.
    pub fn new() -> Self {
        Self {
            v: AtomicU64::new(0),
        }
    }

    /// The raw encoded value `k·L + count` (for persistence, diagnostics and tests).
    pub fn raw(&self) -> u64 {
        self.v.load(Ordering::Acquire)
    }

    /// A state from a value returned by [`raw`](Self::raw).
    pub fn from_raw(v: u64) -> Self {
        Self {
            v: AtomicU64::new(v),
        }
    }
}

/// Fixed window: at most `calls` admissions per aligned window of length `period`.
///
/// Windows are aligned to the clock's epoch (`k = ⌊t / period⌋`). Cheap and exact per aligned
/// window, but a window of length `period` straddling a boundary can see up to `2·calls`
/// (`calls` at the end of one window, `calls` at the start of the next).
///
/// # Examples
///
/// ```
/// use fluxrate_core::{FixedWindow, FixedWindowState, Quota, RateAlgorithm};
///
/// let fw = FixedWindow::new(&Quota::per_second(2)).unwrap();
/// let s = FixedWindowState::new();
/// assert!(fw.check(&s, 100, 1).is_ok());
/// assert!(fw.check(&s, 200, 1).is_ok());
/// let denied = fw.check(&s, 300, 1).unwrap_err();
/// assert!(matches!(denied, fluxrate_core::Refusal::Limited { retry_after: 999_999_700, .. }));
/// assert!(fw.check(&s, 1_000_000_000, 1).is_ok()); // next window
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindow {
    limit: u64,
    w: u64,
    div: Divisor,
}

impl FixedWindow {
    /// Build from a quota: `calls` per window of `period`.
    pub fn new(quota: &Quota) -> Result<Self, ConfigError> {
        let (limit, w) = limit_and_window(quota)?;
        Ok(Self {
            limit,
            w,
            div: Divisor::new(w),
        })
    }

    /// The window length in ns.
    pub fn window_ns(&self) -> u64 {
        self.w
    }

    /// `k·L` for the window containing `now` (fits: `k·L ≤ now` since `L ≤ w`).
    #[inline]
    fn base(&self, now: u64) -> u64 {
        self.div.div(now) * self.limit
    }

    /// The decision; with `META = false` (`allow`) the metadata that costs divisions is skipped.
    #[inline]
    fn decide<const META: bool>(
        &self,
        state: &FixedWindowState,
        now: u64,
        n: u64,
    ) -> Result<Admitted, Refusal> {
        if n > self.limit {
            return Err(Refusal::Never);
        }
        let base = self.base(now);
        let top = u128::from(base) + u128::from(self.limit);
        let mut v = state.v.load(Ordering::Acquire);
        loop {
            let cur = v.max(base);
            let want = u128::from(cur) + u128::from(n);
            if want > top {
                // First window k' whose range k'·L + L reaches cur + n.
                let l = u128::from(self.limit);
                let next_k = (want - l).div_ceil(l);
                let at = next_k * u128::from(self.w);
                return Err(if META {
                    Refusal::Limited {
                        retry_after: sat(at - u128::from(now)),
                        reset_after: sat(self.end_of(cur).saturating_sub(u128::from(now))),
                    }
                } else {
                    Refusal::Limited {
                        retry_after: 0,
                        reset_after: 0,
                    }
                });
            }
            let Ok(nv) = u64::try_from(want) else {
                // Only in the last window before u64::MAX ns (584 years): refuse, never wrap.
                return Err(Refusal::Limited {
                    retry_after: u64::MAX,
                    reset_after: u64::MAX,
                });
            };
            match crate::sync::cas(&state.v, v, nv) {
                Ok(_) => {
                    return Ok(Admitted {
                        at: now,
                        delay: 0,
                        remaining: sat(top - want),
                        limit: self.limit,
                        reset_after: if META {
                            sat(self.end_of(nv) - u128::from(now))
                        } else {
                            0
                        },
                        weight: n,
                        tat_after: 0,
                        cell: KeyCell::Own,
                    })
                }
                Err(actual) => v = actual,
            }
        }
    }

    /// When the latest admission recorded in `v` stops counting: the end of its window.
    fn end_of(&self, v: u64) -> u128 {
        if v == 0 {
            return 0;
        }
        start_of((v - 1) / self.limit + 1, self.w)
    }
}

impl RateAlgorithm for FixedWindow {
    type State = FixedWindowState;

    fn new_state(&self) -> FixedWindowState {
        FixedWindowState::new()
    }

    fn capacity(&self) -> u64 {
        self.limit
    }

    #[inline]
    fn check(&self, state: &FixedWindowState, now: u64, n: u64) -> Result<Admitted, Refusal> {
        self.decide::<true>(state, now, n)
    }

    #[inline]
    fn allow(&self, state: &FixedWindowState, now: u64, n: u64) -> bool {
        self.decide::<false>(state, now, n).is_ok()
    }

    fn peek(&self, state: &FixedWindowState, now: u64) -> Snapshot {
        let base = self.base(now);
        let cur = state.v.load(Ordering::Acquire).max(base);
        let top = u128::from(base) + u128::from(self.limit);
        let remaining = top.saturating_sub(u128::from(cur));
        let retry_after = if remaining > 0 {
            0
        } else {
            let l = u128::from(self.limit);
            let next_k = (u128::from(cur) + 1 - l).div_ceil(l);
            sat((next_k * u128::from(self.w)).saturating_sub(u128::from(now)))
        };
        // With units left, using them all now leaves the rest of this window; without, the
        // next unit comes when the window that holds `cur` has passed.
        let window = if remaining > 0 {
            sat(start_of(self.div.div(now), self.w) + u128::from(self.w) - u128::from(now))
        } else {
            retry_after
        };
        Snapshot {
            at: now,
            remaining: sat(remaining),
            limit: self.limit,
            retry_after,
            window: Some(window),
            reset_after: if cur == base {
                0
            } else {
                sat(self.end_of(cur).saturating_sub(u128::from(now)))
            },
        }
    }

    fn reset(&self, state: &FixedWindowState) {
        state.v.store(0, Ordering::Release);
    }

    fn idle_at(&self, state: &FixedWindowState, _now: u64) -> u64 {
        sat(self.end_of(state.v.load(Ordering::Acquire)))
    }
}
