//! The direct API: one limit for all callers, on the engine's padded direct cell.

use crate::algorithm::{Admitted, RateAlgorithm, Snapshot};
use crate::clock::{nanos_saturating, Clock};
use crate::error::{AcquireError, Denied, InsufficientCapacity, RateLimited, TimeoutExceeded};
use std::time::Duration;

use super::engine::{decide, dispatch};
use super::{NotKeyed, RateLimiter};

/// Direct (un-keyed) use: one limit for all callers.
impl<C: Clock, S> RateLimiter<NotKeyed, C, S> {
    /// Admit one request if the limit allows it now.
    #[inline]
    pub fn allow(&self) -> bool {
        let now = self.clock.now();
        dispatch!(&self.engine, |alg, cells| self.allow_on(
            alg,
            &cells.direct,
            now
        ))
    }

    /// One algorithm's `allow`, kept out of line: each variant is then a tail call into a
    /// function that needs only its own registers (inlining all five into `allow` made every
    /// call save and restore the registers of the largest; measured with callgrind).
    #[inline(never)]
    fn allow_on<A: RateAlgorithm>(&self, alg: &A, state: &A::State, now: u64) -> bool {
        let ok = alg.allow(state, now, 1);
        self.record(ok);
        ok
    }

    /// Admit one request, or say when to retry.
    #[inline]
    pub fn check(&self) -> Result<Admitted, RateLimited> {
        self.check_n(1).map_err(Denied::unit)
    }

    /// Admit a request of weight `n` (all or nothing). `n` above the capacity is
    /// [`Denied::Never`], at once; `n = 0` only looks.
    #[inline]
    pub fn check_n(&self, n: u64) -> Result<Admitted, Denied> {
        let now = self.clock.now();
        let r = dispatch!(&self.engine, |alg, cells| decide(
            alg,
            &cells.direct,
            now,
            n
        ));
        self.finish(now, n, r)
    }

    /// The Python name of [`check_n`](Self::check_n).
    pub fn consume(&self, n: u64) -> Result<Admitted, Denied> {
        self.check_n(n)
    }

    /// Block until one request is admitted or `timeout` would be exceeded (then fail at once,
    /// consuming nothing). The token bucket reserves its slot (first come, first served); the
    /// leaky bucket queues; window algorithms sleep exactly until the window allows.
    pub fn acquire(&self, timeout: Duration) -> Result<Admitted, TimeoutExceeded> {
        self.acquire_n(1, timeout).map_err(AcquireError::unit)
    }

    /// Reserve a request of weight `n` that may go at most `max_wait` from now, without waiting:
    /// the building block of waiting acquires (for example an async one).
    ///
    /// On success the request counts as admitted at [`Admitted::admitted_at`]; the caller must
    /// wait [`Admitted::delay`] before acting. The token bucket reserves the earliest slot
    /// (first come, first served), the leaky bucket queues, window algorithms only admit now
    /// (delay zero). A refusal consumes nothing and its `retry_after` is the wait before the
    /// same request could be admitted with no delay.
    ///
    /// ```
    /// use fluxrate_core::{ManualClock, Quota, RateLimiter};
    /// use std::time::Duration;
    ///
    /// let l = RateLimiter::builder(Quota::per_second(1)).clock(ManualClock::new()).build()?;
    /// assert_eq!(l.reserve_n(1, Duration::ZERO).unwrap().delay(), Duration::ZERO);
    /// let later = l.reserve_n(1, Duration::from_secs(2)).unwrap();
    /// assert_eq!(later.delay(), Duration::from_secs(1)); // the next slot, reserved
    /// assert!(l.reserve_n(1, Duration::from_millis(1500)).is_err()); // the one after is at 2 s
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    pub fn reserve_n(&self, n: u64, max_wait: Duration) -> Result<Admitted, Denied> {
        let now = self.clock.now();
        let max_wait = nanos_saturating(max_wait);
        let r = dispatch!(&self.engine, |alg, cells| if n == 0 {
            decide(alg, &cells.direct, now, 0)
        } else {
            alg.reserve(&cells.direct, now, n, max_wait)
        });
        self.finish(now, n, r)
    }

    /// Give back an admission that will not be used, typically a reservation from
    /// [`reserve_n`](Self::reserve_n) whose waiter went away. Possible for the token and leaky
    /// buckets when nothing was admitted after it; returns whether the capacity came back.
    ///
    /// ```
    /// use fluxrate_core::{ManualClock, Quota, RateLimiter};
    /// use std::time::Duration;
    ///
    /// let l = RateLimiter::builder(Quota::per_second(1)).clock(ManualClock::new()).build()?;
    /// l.check().unwrap();
    /// let r = l.reserve_n(1, Duration::from_secs(5)).unwrap(); // the slot at 1 s
    /// assert!(l.cancel(&r));
    /// assert_eq!(l.reserve_n(1, Duration::from_secs(5)).unwrap().delay(), Duration::from_secs(1));
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    pub fn cancel(&self, admitted: &Admitted) -> bool {
        dispatch!(&self.engine, |alg, cells| alg
            .cancel(&cells.direct, admitted))
    }

    /// [`acquire`](Self::acquire) for a weight `n`.
    pub fn acquire_n(&self, n: u64, timeout: Duration) -> Result<Admitted, AcquireError> {
        dispatch!(&self.engine, |alg, cells| self.acquire_loop(
            n,
            timeout,
            |now, budget| {
                if n == 0 {
                    return decide(alg, &cells.direct, now, 0);
                }
                alg.reserve(&cells.direct, now, n, budget)
            }
        ))
    }

    /// Block until one request is admitted, however long it takes.
    pub fn wait(&self) -> Admitted {
        self.wait_n(1).unwrap_or_else(|e| e.unit())
    }

    /// Block until a request of weight `n` is admitted; fails at once only if `n` exceeds the
    /// capacity.
    pub fn wait_n(&self, n: u64) -> Result<Admitted, InsufficientCapacity> {
        self.acquire_n(n, Duration::MAX)
            .map_err(AcquireError::unbounded)
    }

    /// The current state, without changing it.
    pub fn peek(&self) -> Snapshot {
        let now = self.clock.now();
        dispatch!(&self.engine, |alg, cells| alg.peek(&cells.direct, now))
    }

    /// How long until one request would be admitted (zero if now).
    pub fn retry_after(&self) -> Duration {
        self.peek().retry_after()
    }

    /// How many unit requests would be admitted now (Python: `available`).
    pub fn available(&self) -> u64 {
        self.peek().remaining()
    }

    /// Return to a fresh, fully available state.
    pub fn reset(&self) {
        dispatch!(&self.engine, |alg, cells| alg.reset(&cells.direct))
    }
}
