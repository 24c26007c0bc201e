//! The direct API: one limit for all callers, on the engine's padded direct cell.

use crate::algorithm::{Admitted, RateAlgorithm, Snapshot};
use crate::clock::{nanos_saturating, Clock};
use crate::error::{AcquireError, Denied, InsufficientCapacity, RateLimited, TimeoutExceeded};
use std::time::Duration;

use super::engine::{decide, dispatch};
use super::{NotKeyed, RateLimiter};

/// Direct (un-keyed) use: one limit for all callers.
impl<C: Clock, H> RateLimiter<NotKeyed, C, H> {
    /// Admit one request if the limit allows it now: the leanest check (no metadata).
    ///
    /// ```
    /// use fluxrate_core::{Quota, RateLimiter};
    ///
    /// let limiter = RateLimiter::direct(Quota::per_second(2))?;
    /// assert!(limiter.allow());
    /// assert!(limiter.allow());
    /// assert!(!limiter.allow()); // the burst (2) is spent
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    #[inline]
    #[must_use = "an admitted request is counted whether or not the answer is used"]
    pub fn allow(&self) -> bool {
        let now = self.now();
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
        let ok = self.allow_at(now, |t| alg.allow(state, t, 1), |t| alg.check(state, t, 1));
        self.record(ok);
        ok
    }

    /// Admit one request, or say when to retry.
    ///
    /// ```
    /// use fluxrate_core::{ManualClock, Quota, RateLimiter};
    /// use std::time::Duration;
    ///
    /// let limiter = RateLimiter::builder(Quota::per_second(1)).clock(ManualClock::new()).build()?;
    /// let admitted = limiter.check().unwrap();
    /// assert_eq!(admitted.remaining(), 0);
    /// let refused = limiter.check().unwrap_err();
    /// assert_eq!(refused.retry_after(), Duration::from_secs(1));
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    #[inline]
    pub fn check(&self) -> Result<Admitted, RateLimited> {
        self.check_n(1).map_err(Denied::unit)
    }

    /// Admit a request of weight `n` (all or nothing). `n` above the capacity is
    /// [`Denied::Never`], at once; `n = 0` only looks.
    ///
    /// ```
    /// use fluxrate_core::{Denied, Quota, RateLimiter};
    ///
    /// let limiter = RateLimiter::direct(Quota::per_second(10))?;
    /// assert!(limiter.check_n(7).is_ok());
    /// assert!(matches!(limiter.check_n(7), Err(Denied::Limited(_)))); // 3 left
    /// assert!(matches!(limiter.check_n(11), Err(Denied::Never(_)))); // can never pass
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    #[doc(alias = "consume")]
    #[inline]
    pub fn check_n(&self, n: u64) -> Result<Admitted, Denied> {
        let now = self.now();
        let r = dispatch!(&self.engine, |alg, cells| self
            .attempt_at(now, |t| { decide(alg, &cells.direct, t, n) }));
        self.finish(now, n, r)
    }

    /// Block the thread until one request is admitted or `timeout` would be exceeded (then
    /// fail at once, consuming nothing). The token bucket reserves its slot (first come, first
    /// served); the leaky bucket queues; window algorithms sleep exactly until the window
    /// allows.
    ///
    /// # Blocking
    ///
    /// This sleeps the calling thread (through [`Clock::sleep_until`]); in async code use the
    /// facade's `acquire` (`fluxrate::AcquireAsync`), which waits on the runtime's timer.
    ///
    /// ```
    /// use fluxrate_core::{ManualClock, Quota, RateLimiter};
    /// use std::time::Duration;
    ///
    /// // A manual clock's sleep advances it, so this runs instantly.
    /// let limiter = RateLimiter::builder(Quota::per_second(1)).clock(ManualClock::new()).build()?;
    /// limiter.check().unwrap();
    /// let admitted = limiter.blocking_acquire(Duration::from_secs(2)).unwrap();
    /// assert_eq!(admitted.admitted_at(), 1_000_000_000); // it waited one second
    /// assert!(limiter.blocking_acquire(Duration::from_millis(10)).is_err()); // too long a wait
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    pub fn blocking_acquire(&self, timeout: Duration) -> Result<Admitted, TimeoutExceeded> {
        self.blocking_acquire_n(1, timeout)
            .map_err(AcquireError::unit)
    }

    /// Reserve one request that may go at most `max_wait` from now, without waiting:
    /// [`reserve_n`](Self::reserve_n) for a unit request.
    pub fn reserve(&self, max_wait: Duration) -> Result<Admitted, RateLimited> {
        self.reserve_n(1, max_wait).map_err(Denied::unit)
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
        let now = self.now();
        let max_wait = nanos_saturating(max_wait);
        let r = dispatch!(&self.engine, |alg, cells| if n == 0 {
            decide(alg, &cells.direct, now, 0)
        } else {
            self.attempt_at(now, |t| {
                alg.reserve(&cells.direct, t, n, max_wait.saturating_sub(t - now))
            })
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

    /// [`blocking_acquire`](Self::blocking_acquire) for a weight `n`.
    ///
    /// # Blocking
    ///
    /// Sleeps the calling thread, like [`blocking_acquire`](Self::blocking_acquire).
    pub fn blocking_acquire_n(&self, n: u64, timeout: Duration) -> Result<Admitted, AcquireError> {
        dispatch!(&self.engine, |alg, cells| self.acquire_loop(
            n,
            timeout,
            |now, budget| {
                if n == 0 {
                    return decide(alg, &cells.direct, now, 0);
                }
                self.attempt_at(now, |t| {
                    alg.reserve(&cells.direct, t, n, budget.saturating_sub(t - now))
                })
            }
        ))
    }

    /// Block the thread until one request is admitted, however long it takes.
    ///
    /// # Blocking
    ///
    /// Sleeps the calling thread, like [`blocking_acquire`](Self::blocking_acquire).
    ///
    /// ```
    /// use fluxrate_core::{Clock, ManualClock, Quota, RateLimiter};
    ///
    /// let limiter = RateLimiter::builder(Quota::per_second(2)).clock(ManualClock::new()).build()?;
    /// for _ in 0..3 {
    ///     limiter.blocking_wait();
    /// }
    /// assert_eq!(limiter.clock().now(), 500_000_000); // the third waited for its slot
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    pub fn blocking_wait(&self) -> Admitted {
        self.blocking_wait_n(1).unwrap_or_else(|e| e.unit())
    }

    /// Block the thread until a request of weight `n` is admitted; fails at once only if `n`
    /// exceeds the capacity.
    ///
    /// # Blocking
    ///
    /// Sleeps the calling thread, like [`blocking_acquire`](Self::blocking_acquire).
    pub fn blocking_wait_n(&self, n: u64) -> Result<Admitted, InsufficientCapacity> {
        self.blocking_acquire_n(n, Duration::MAX)
            .map_err(AcquireError::unbounded)
    }

    /// The current state, without changing it: what is left ([`Snapshot::remaining`]), when
    /// the next request may go ([`Snapshot::retry_after`]), and the algorithm's own numbers.
    ///
    /// ```
    /// use fluxrate_core::{Quota, RateLimiter};
    ///
    /// let limiter = RateLimiter::direct(Quota::per_second(5))?;
    /// limiter.check_n(2).unwrap();
    /// assert_eq!(limiter.peek().remaining(), 3);
    /// assert_eq!(limiter.peek().remaining(), 3); // looking changes nothing
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    #[doc(alias = "available")]
    #[doc(alias = "count")]
    #[doc(alias = "level")]
    #[must_use]
    pub fn peek(&self) -> Snapshot {
        let now = self.now();
        dispatch!(&self.engine, |alg, cells| alg.peek(&cells.direct, now))
    }

    /// How long until one request would be admitted (zero if now).
    #[must_use]
    pub fn retry_after(&self) -> Duration {
        self.peek().retry_after()
    }

    /// Return to a fresh, fully available state.
    pub fn reset(&self) {
        dispatch!(&self.engine, |alg, cells| alg.reset(&cells.direct))
    }
}
