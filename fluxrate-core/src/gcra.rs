//! GCRA (generic cell rate algorithm): the token bucket and the leaky bucket as a shaper.
//!
//! Both keep one `AtomicU64` per key, the theoretical arrival time `TAT` (virtual scheduling,
//! ITU-T I.371). With emission interval `T` and burst `b`, a request of `n` is admitted at `t`
//! when `max(TAT, t) + n·T − t ≤ b·T`, and then `TAT := max(TAT, t) + n·T`. The same condition
//! read for a queue of capacity `b` is the leaky bucket: the request departs at `max(TAT, t)`.

use crate::algorithm::{Admitted, KeyCell, RateAlgorithm, Refusal, Snapshot};
use crate::error::ConfigError;
use crate::quota::Quota;
use crate::sync::{AtomicU64, Ordering};

/// The per-key state of the GCRA algorithms: the theoretical arrival time.
///
/// A fresh state (`TAT = 0`) is fully available at any time.
///
/// # Memory ordering
///
/// The TAT is the only shared location and every decision is one compare-and-swap on it; no other
/// memory is published through it, so `Relaxed` would be enough for the count itself. Loads use
/// `Acquire` and successful CASes `AcqRel` so that a caller who observes an admission also
/// observes whatever the admitting thread wrote before it.
#[derive(Debug, Default)]
pub struct GcraState {
    tat: AtomicU64,
}

impl GcraState {
    /// A fresh state.
    pub fn new() -> Self {
        Self {
            tat: AtomicU64::new(0),
        }
    }

    /// The theoretical arrival time in ns (for tests and diagnostics).
    pub fn tat(&self) -> u64 {
        self.tat.load(Ordering::Acquire)
    }

    /// A state with the given TAT, as returned by [`tat`](Self::tat): for persisting a
    /// limiter's state, and for tests that branch from a known state.
    pub fn from_tat(tat: u64) -> Self {
        Self {
            tat: AtomicU64::new(tat),
        }
    }
}

/// Shared arithmetic of GCRA: interval `t` and the allowance `b·T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gcra {
    /// Emission interval T in ns (≥ 1).
    t: u64,
    /// b, the burst or queue capacity (≥ 1).
    b: u64,
    /// b·T, which fits in u64 (checked at construction).
    bt: u64,
}

impl Gcra {
    fn new(quota: &Quota, b: u64, zero: ConfigError) -> Result<Self, ConfigError> {
        let (calls, period_ns) = quota.validated()?;
        if b == 0 {
            return Err(zero);
        }
        let t = period_ns.div_ceil(calls);
        let bt = t
            .checked_mul(b)
            .ok_or(ConfigError::BurstTooLarge { burst: b })?;
        Ok(Self { t, b, bt })
    }

    /// `b − ceil((base − now)/T)`: unit requests admissible now.
    fn remaining(&self, base: u64, now: u64) -> u64 {
        self.b
            .saturating_sub((base.saturating_sub(now)).div_ceil(self.t))
    }

    /// Admit `n` at `now` if it departs within `max_wait`, with departure rule `depart`.
    ///
    /// `depart(tat)` gives the earliest departure `d ≥ now` at which the request may go, or
    /// `Err(retry_after)` if it may not be queued at all now. On admission
    /// `TAT := max(TAT, d) + n·T`. A refusal returns before any store.
    ///
    /// With `META = false` (the yes/no path of `allow`) the admission's metadata is not
    /// computed: it would cost a division.
    #[inline]
    fn decide<const META: bool>(
        &self,
        state: &GcraState,
        now: u64,
        n: u64,
        max_wait: u64,
        depart: impl Fn(u64) -> Result<u64, u64>,
    ) -> Result<Admitted, Refusal> {
        if n > self.b {
            return Err(Refusal::Never);
        }
        let inc = n * self.t; // n ≤ b, so n·T ≤ b·T fits.
        let mut tat = state.tat.load(Ordering::Acquire);
        loop {
            let reset_after = tat.saturating_sub(now);
            let limited = |retry_after| {
                Err(Refusal::Limited {
                    retry_after,
                    reset_after,
                })
            };
            let d = match depart(tat) {
                Ok(d) => d,
                Err(retry_after) => return limited(retry_after),
            };
            let wait = d - now;
            if wait > max_wait {
                return limited(wait);
            }
            let Some(new_tat) = tat.max(d).checked_add(inc) else {
                // A TAT that would wrap must never be stored (it would fail open).
                return limited(u64::MAX);
            };
            match crate::sync::cas(&state.tat, tat, new_tat) {
                Ok(_) => {
                    return Ok(Admitted {
                        at: d,
                        delay: wait,
                        remaining: if META {
                            self.remaining(new_tat, now)
                        } else {
                            0
                        },
                        limit: self.b,
                        reset_after: new_tat - now,
                        weight: n,
                        tat_after: new_tat,
                        cell: KeyCell::Own,
                    })
                }
                Err(actual) => tat = actual,
            }
        }
    }

    /// The token bucket's admission test without metadata (`allow`): admit `inc = n·T` now iff
    /// `TAT − slack ≤ now` with `slack = b·T − n·T`, then `TAT' = max(TAT, now) + inc`. The same
    /// decision as `decide` with `max_wait = 0` (the departure time `max(TAT − slack, now)` must
    /// be `now`), in 64-bit arithmetic: `TAT − slack` cannot overflow, and the only addition is
    /// checked.
    #[inline]
    fn admit_now(&self, state: &GcraState, now: u64, inc: u64, slack: u64) -> bool {
        let mut tat = state.tat.load(Ordering::Acquire);
        loop {
            if tat.saturating_sub(slack) > now {
                return false;
            }
            let Some(new_tat) = tat.max(now).checked_add(inc) else {
                return false;
            };
            match crate::sync::cas(&state.tat, tat, new_tat) {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }

    fn peek(&self, state: &GcraState, now: u64) -> Snapshot {
        let tat = state.tat.load(Ordering::Acquire);
        let base = tat.max(now);
        // A unit request conforms once max(TAT, t) + T − t ≤ b·T, i.e. t ≥ TAT + T − b·T.
        let retry_after = (u128::from(tat) + u128::from(self.t))
            .saturating_sub(u128::from(now) + u128::from(self.bt));
        let (reset_after, remaining) = (tat.saturating_sub(now), self.remaining(base, now));
        Snapshot {
            at: now,
            remaining,
            limit: self.b,
            retry_after: u64::try_from(retry_after).unwrap_or(u64::MAX),
            reset_after,
            window: Some(self.effective_window(reset_after, remaining)),
        }
    }

    /// The effective window for `r` remaining at a TAT `R = TAT − now` ahead: a unit conforms
    /// at `s` once `max(TAT, s) + T − s ≤ b·T`; using `r` now moves the TAT to
    /// `now + R + r·T`, so the next unit conforms `R + (r + 1)·T − b·T` from now. With
    /// `r = b − ⌈R/T⌉` that is `R mod T` in `(0, T]` (`T` at `R = 0`); with a TAT more than
    /// `b·T` ahead (a clock read behind the state), `r = 0` and it is the retry time.
    fn effective_window(&self, reset_after: u64, remaining: u64) -> u64 {
        let t = u128::from(self.t);
        let w = (u128::from(reset_after) + (u128::from(remaining) + 1) * t)
            .saturating_sub(u128::from(self.bt));
        u64::try_from(w).unwrap_or(u64::MAX)
    }

    /// `CAS(TAT, tat_after → tat_after − n·T)`: give back the latest reservation.
    fn refund(&self, state: &GcraState, tat_after: u64, n: u64) -> bool {
        let Some(back) = n
            .checked_mul(self.t)
            .and_then(|inc| tat_after.checked_sub(inc))
        else {
            return false;
        };
        state
            .tat
            .compare_exchange(tat_after, back, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Token bucket as GCRA: up to `burst` requests at once, refilled at `calls / period`.
///
/// The emission interval is `T = ceil(period / calls)` and `τ = (burst − 1)·T`. Any window of
/// length `len` admits at most `burst + ⌊len / T⌋` unit requests, under any interleaving of
/// threads and even if the clock goes backwards. Note that with `burst = calls` a window of one
/// `period` can therefore see up to `2·calls` admissions (a full bucket, then a full refill):
/// use [`SlidingLog`](crate::SlidingLog) if "never more than `calls` in any window" is required.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{GcraState, Quota, RateAlgorithm, TokenBucket};
///
/// let tb = TokenBucket::new(&Quota::per_second(2)).unwrap();
/// let state = GcraState::new();
/// assert!(tb.check(&state, 0, 1).is_ok());
/// assert!(tb.check(&state, 0, 1).is_ok());
/// assert!(tb.check(&state, 0, 1).is_err());
/// assert!(tb.check(&state, 500_000_000, 1).is_ok()); // one token back after T = 0.5 s
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    g: Gcra,
}

impl TokenBucket {
    /// Build from a quota (`burst` defaults to `calls`).
    pub fn new(quota: &Quota) -> Result<Self, ConfigError> {
        Ok(Self {
            g: Gcra::new(quota, quota.burst(), ConfigError::ZeroBurst)?,
        })
    }

    /// The emission interval T in ns.
    pub fn emission_interval_ns(&self) -> u64 {
        self.g.t
    }

    /// The burst b.
    pub fn burst(&self) -> u64 {
        self.g.b
    }

    /// The token bucket's departure rule, the earliest departure of `n` after a TAT:
    /// `d = max(now, TAT + n·T − b·T)`. It is evaluated only for `n ≤ b`, where `b·T − n·T` does not underflow and `TAT − (b·T − n·T)` fits in
    /// 64 bits, so no wider arithmetic is needed.
    #[inline]
    fn depart(&self, now: u64, n: u64) -> impl Fn(u64) -> Result<u64, u64> {
        let slack = self.g.bt.saturating_sub(n.saturating_mul(self.g.t));
        move |tat| Ok(tat.saturating_sub(slack).max(now))
    }

    /// Give back a reservation (cancellation): succeeds only if no later request was admitted
    /// since, i.e. if the TAT still equals `tat_after`, the value the reservation left.
    pub fn refund(&self, state: &GcraState, tat_after: u64, n: u64) -> bool {
        self.g.refund(state, tat_after, n)
    }
}

impl RateAlgorithm for TokenBucket {
    type State = GcraState;

    fn new_state(&self) -> GcraState {
        GcraState::new()
    }

    fn capacity(&self) -> u64 {
        self.g.b
    }

    #[inline]
    fn check(&self, state: &GcraState, now: u64, n: u64) -> Result<Admitted, Refusal> {
        self.reserve(state, now, n, 0)
    }

    /// Reservation (x/time/rate `Reserve`): the departure is the earliest `d ≥ now` at which the
    /// request conforms, `d = max(now, TAT + n·T − b·T)`; admitted if `d − now ≤ max_wait`.
    #[inline]
    fn reserve(
        &self,
        state: &GcraState,
        now: u64,
        n: u64,
        max_wait: u64,
    ) -> Result<Admitted, Refusal> {
        self.g
            .decide::<true>(state, now, n, max_wait, self.depart(now, n))
    }

    #[inline]
    fn allow(&self, state: &GcraState, now: u64, n: u64) -> bool {
        if n > self.g.b {
            return false;
        }
        let inc = n * self.g.t; // n ≤ b, so n·T ≤ b·T fits.
        self.g.admit_now(state, now, inc, self.g.bt - inc)
    }

    fn cancel(&self, state: &GcraState, admitted: &Admitted) -> bool {
        admitted.tat_after != 0 && self.refund(state, admitted.tat_after, admitted.weight)
    }

    fn peek(&self, state: &GcraState, now: u64) -> Snapshot {
        self.g.peek(state, now)
    }

    fn reset(&self, state: &GcraState) {
        state.tat.store(0, Ordering::Release);
    }

    fn idle_at(&self, state: &GcraState, _now: u64) -> u64 {
        state.tat.load(Ordering::Acquire)
    }
}

/// Leaky bucket as a shaper: the GCRA cell read as a queue of `capacity` slots, draining one
/// request per emission interval `T = ceil(period / calls)`.
///
/// An admitted request is given the delay until its departure slot, `max(TAT, now) − now`;
/// honouring it (as [`RateLimiter::blocking_acquire`](crate::RateLimiter::blocking_acquire) does) makes the
/// output exactly one request per `T`. A request that would overfill the queue is refused with
/// the time until there is room. `capacity` is the quota's burst (defaults to `calls`).
///
/// # Examples
///
/// ```
/// use fluxrate_core::{GcraState, LeakyBucket, Quota, RateAlgorithm};
/// use std::time::Duration;
///
/// let lb = LeakyBucket::new(&Quota::per_second(10).with_burst(3)).unwrap();
/// let state = GcraState::new();
/// let delays: Vec<_> = (0..3).map(|_| lb.check(&state, 0, 1).unwrap().delay()).collect();
/// assert_eq!(delays, [Duration::ZERO, Duration::from_millis(100), Duration::from_millis(200)]);
/// assert!(lb.check(&state, 0, 1).is_err()); // queue full
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakyBucket {
    g: Gcra,
}

impl LeakyBucket {
    /// Build from a quota; the queue capacity is the quota's burst (defaults to `calls`).
    pub fn new(quota: &Quota) -> Result<Self, ConfigError> {
        Ok(Self {
            g: Gcra::new(quota, quota.burst(), ConfigError::ZeroCapacity)?,
        })
    }

    /// The drain interval T in ns.
    pub fn emission_interval_ns(&self) -> u64 {
        self.g.t
    }

    /// The shaper's departure rule: room in the queue means
    /// `max(TAT, now) + n·T − now ≤ b·T`, and the request departs at `max(TAT, now)`; without
    /// room, the wait until there is some (`TAT + n·T − b·T − now`).
    #[inline]
    fn depart(&self, now: u64, n: u64) -> impl Fn(u64) -> Result<u64, u64> {
        let g = self.g;
        let inc = n.saturating_mul(g.t);
        move |tat| {
            let base = tat.max(now);
            let need = u128::from(base) + u128::from(inc);
            if need - u128::from(now) <= u128::from(g.bt) {
                Ok(base)
            } else {
                let retry = need - u128::from(now) - u128::from(g.bt);
                Err(u64::try_from(retry).unwrap_or(u64::MAX))
            }
        }
    }

    /// Give back a queued request that will not be sent; succeeds only if nothing was queued
    /// after it (the TAT still equals `tat_after`).
    pub fn refund(&self, state: &GcraState, tat_after: u64, n: u64) -> bool {
        self.g.refund(state, tat_after, n)
    }
}

impl RateAlgorithm for LeakyBucket {
    type State = GcraState;

    fn new_state(&self) -> GcraState {
        GcraState::new()
    }

    fn capacity(&self) -> u64 {
        self.g.b
    }

    /// Queue the request if the queue has room; the delay is its wait in the queue.
    #[inline]
    fn check(&self, state: &GcraState, now: u64, n: u64) -> Result<Admitted, Refusal> {
        self.reserve(state, now, n, u64::MAX)
    }

    /// Queue the request if the queue has room and its departure is within `max_wait`.
    fn reserve(
        &self,
        state: &GcraState,
        now: u64,
        n: u64,
        max_wait: u64,
    ) -> Result<Admitted, Refusal> {
        self.g
            .decide::<true>(state, now, n, max_wait, self.depart(now, n))
    }

    #[inline]
    fn allow(&self, state: &GcraState, now: u64, n: u64) -> bool {
        self.g
            .decide::<false>(state, now, n, u64::MAX, self.depart(now, n))
            .is_ok()
    }

    fn cancel(&self, state: &GcraState, admitted: &Admitted) -> bool {
        admitted.tat_after != 0 && self.refund(state, admitted.tat_after, admitted.weight)
    }

    fn peek(&self, state: &GcraState, now: u64) -> Snapshot {
        self.g.peek(state, now)
    }

    fn reset(&self, state: &GcraState) {
        state.tat.store(0, Ordering::Release);
    }

    fn idle_at(&self, state: &GcraState, _now: u64) -> u64 {
        state.tat.load(Ordering::Acquire)
    }
}
