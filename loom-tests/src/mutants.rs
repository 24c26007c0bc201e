//! Deliberately broken cells. Each one has the bug its name says; the models in
//! `tests/models.rs` must find it.

use loom::sync::atomic::{AtomicU64, Ordering};

/// GCRA with a load followed by a plain store instead of a compare-and-swap: two threads can
/// both read the old TAT and both admit.
#[derive(Debug)]
pub struct RacyGcra {
    tat: AtomicU64,
    t: u64,
    tau: u64,
}

impl RacyGcra {
    /// Emission interval `t`, burst `b`.
    pub fn new(t: u64, b: u64) -> Self {
        Self {
            tat: AtomicU64::new(0),
            t,
            tau: (b - 1) * t,
        }
    }

    /// Admit `n` at `now` (racy).
    pub fn check(&self, now: u64, n: u64) -> bool {
        let tat = self.tat.load(Ordering::Acquire);
        if now + self.tau < tat + (n - 1) * self.t {
            return false;
        }
        self.tat.store(tat.max(now) + n * self.t, Ordering::Release);
        true
    }
}

/// A fixed window stored as `(window, count)` that resets whenever the reader's window differs
/// from the stored one, even when the reader's clock is behind (the stale reset of F4).
#[derive(Debug)]
pub struct ResettingWindow {
    v: AtomicU64,
    w: u64,
    limit: u64,
}

impl ResettingWindow {
    /// `limit` per window of `w`.
    pub fn new(w: u64, limit: u64) -> Self {
        Self {
            v: AtomicU64::new(0),
            w,
            limit,
        }
    }

    /// Admit one at `now`.
    pub fn check(&self, now: u64) -> bool {
        let k = now / self.w;
        let mut v = self.v.load(Ordering::Acquire);
        loop {
            let (sk, count) = (v >> 32, v & 0xffff_ffff);
            let next = if sk != k {
                (k << 32) | 1
            } else if count < self.limit {
                v + 1
            } else {
                return false;
            };
            match self
                .v
                .compare_exchange(v, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => v = actual,
            }
        }
    }
}
