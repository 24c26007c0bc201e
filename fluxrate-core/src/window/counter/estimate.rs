//! The sliding window counter's arithmetic: the packed state word (window index, previous and
//! current counts) read as a [`View`] at a reader's time, and the weighted estimate on it (what
//! fits, what remains, when a request will fit, when the state empties).

use super::SlidingWindowCounter;
use crate::window::{sat, start_of};

/// The state as seen at some time: counts, and the window they belong to.
#[derive(Debug, Clone, Copy)]
pub(super) struct View {
    pub(super) prev: u64,
    pub(super) curr: u64,
    /// Absolute index of the window `curr` counts.
    pub(super) k: u64,
    /// Time elapsed in that window (0 when the state's window is ahead of the reader).
    pub(super) e: u64,
}

impl SlidingWindowCounter {
    #[inline]
    pub(super) fn kmask(&self) -> u64 {
        self.kmask
    }

    #[inline]
    pub(super) fn cmask(&self) -> u64 {
        self.cmask
    }

    pub(super) fn pack(&self, k: u64, prev: u64, curr: u64) -> u64 {
        ((k & self.kmask()) << self.kshift) | (prev << self.cb) | curr
    }

    #[inline]
    pub(super) fn view(&self, v: u64, now: u64) -> View {
        self.view_in(v, self.div.div(now), now)
    }

    /// [`view`](Self::view) with the reader's window index `k_now = now / W` already known
    /// (one division per decision).
    #[inline]
    pub(super) fn view_in(&self, v: u64, k_now: u64, now: u64) -> View {
        self.view_at(v, k_now, now - k_now * self.w)
    }

    /// [`view_in`](Self::view_in) with the time into the reader's window, `e`, known too.
    #[inline]
    pub(super) fn view_at(&self, v: u64, k_now: u64, e: u64) -> View {
        let ks = v >> self.kshift;
        let prev = (v >> self.cb) & self.cmask();
        let curr = v & self.cmask();
        let fresh = View {
            prev: 0,
            curr: 0,
            k: k_now,
            e,
        };
        if prev == 0 && curr == 0 {
            return fresh;
        }
        let d = (k_now & self.kmask()).wrapping_sub(ks) & self.kmask();
        match d {
            0 => View {
                prev,
                curr,
                k: k_now,
                e,
            },
            1 => View {
                prev: curr,
                curr: 0,
                k: k_now,
                e,
            },
            // The state is one or two windows ahead of this reader (its clock is stale): judge
            // it at the start of the state's window, which only refuses more.
            d if d >= self.kmask() - 1 => View {
                prev,
                curr,
                k: k_now.saturating_add(self.kmask() - d + 1),
                e: 0,
            },
            _ => fresh,
        }
    }

    /// Whether `n` more fit: `prev·(W − e) + (curr + n)·W ≤ L·W`.
    #[inline]
    pub(super) fn fits(&self, v: &View, n: u64) -> bool {
        if self.narrow {
            return self.fits_narrow(v, n, self.w);
        }
        self.fits_wide(v, n)
    }

    /// [`fits`](Self::fits) in 64-bit arithmetic: only where `narrow`, and `w` is the window
    /// length (the caller's copy of it).
    #[inline]
    pub(super) fn fits_narrow(&self, v: &View, n: u64, w: u64) -> bool {
        v.prev * (w - v.e) + (v.curr + n) * w <= self.lw
    }

    /// [`fits`](Self::fits) in 128-bit arithmetic, for any limit and window.
    #[inline]
    pub(super) fn fits_wide(&self, v: &View, n: u64) -> bool {
        let w = u128::from(self.w);
        u128::from(v.prev) * (w - u128::from(v.e)) + u128::from(v.curr + n) * w
            <= u128::from(self.limit) * w
    }

    /// Largest unit count admissible now.
    pub(super) fn remaining(&self, v: &View) -> u64 {
        let w = u128::from(self.w);
        // Saturating: a state restored from a raw value may hold counts above the limit.
        let room =
            (u128::from(self.limit) * w).saturating_sub(u128::from(v.prev) * (w - u128::from(v.e)));
        sat(room / w).saturating_sub(v.curr)
    }

    /// Absolute time at which `n` (≤ L) will fit, given a view where it does not.
    pub(super) fn fits_at(&self, v: &View, n: u64) -> u128 {
        let w = u128::from(self.w);
        let l = u128::from(self.limit);
        let start = start_of(v.k, self.w);
        let (curr, n) = (u128::from(v.curr), u128::from(n));
        if curr + n <= l {
            // Later in this window, once the previous window's weight has decayed enough.
            let r = l - curr - n;
            start + w - (r * w / u128::from(v.prev.max(1)))
        } else {
            // In the next window, where `curr` becomes the previous count.
            let r = l - n;
            start + w + w - (r * w / curr)
        }
    }

    /// When every admission counted in `v` has left the window (0 if none is).
    pub(super) fn reset_at(&self, v: &View) -> u128 {
        let start = start_of(v.k, self.w);
        let w = u128::from(self.w);
        if v.curr > 0 {
            start + 2 * w
        } else if v.prev > 0 {
            start + w
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Quota;
    use std::time::Duration;

    /// The 64-bit estimate equals the 128-bit one wherever it is used (`5·L·W` fits), at the
    /// largest windows that still qualify and with every count the state word can hold.
    #[test]
    fn narrow_fits_agrees_with_wide() {
        let mut next = crate::window::xorshift(0x2545_F491_4F6C_DD1D);
        for (limit, w) in [
            (1u64, 1u64),
            (7, 1000),
            (1000, 1 << 40),
            ((1 << 24) - 1, (1 << 36) - 1),
        ] {
            let c = SlidingWindowCounter::new(&Quota::new(limit, Duration::from_nanos(w))).unwrap();
            assert!(c.narrow, "{limit} × {w}");
            for _ in 0..20_000 {
                let v = View {
                    prev: next() % (c.cmask + 1),
                    curr: next() % (c.cmask + 1),
                    k: 0,
                    e: next() % w,
                };
                let n = next() % (limit + 1);
                assert_eq!(c.fits(&v, n), c.fits_wide(&v, n), "{v:?} n={n}");
            }
        }
        let wide =
            SlidingWindowCounter::new(&Quota::new(1 << 20, Duration::from_secs(86_400 * 365)))
                .unwrap();
        assert!(!wide.narrow);
    }
}
