//! The keyed API: an independent limit per key, its cell found (or made) in the keyed store,
//! and the store's overflow policy; the store's housekeeping (`sweep`, `reset_all`, stats).

use crate::algorithm::{Admitted, KeyCell, RateAlgorithm, Refusal, Snapshot};
use crate::clock::{nanos_saturating, Clock};
use crate::error::{AcquireError, Denied, InsufficientCapacity, RateLimited, TimeoutExceeded};
use crate::stats::KeyStats;
use crate::store::{KeyedStore, Lookup, OverflowPolicy};
use core::borrow::Borrow;
use core::hash::{BuildHasher, Hash};
use std::time::Duration;

use super::engine::{decide, dispatch, Attempt, Cells};
use super::RateLimiter;

/// What one attempt on a key does.
#[derive(Clone, Copy)]
enum Op {
    /// Admit now or refuse.
    Check,
    /// Reserve the earliest admission that goes at most this many ns from now.
    Reserve(u64),
}

/// The answer of a decision on a key: whether it counts as admitted (per-key stats), what a
/// store full of live keys answers under [`OverflowPolicy::Reject`], and the same answer given
/// by the shared cell under [`OverflowPolicy::Shared`].
trait KeyOutcome {
    fn admitted(&self) -> bool;

    /// The refusal when no held key can go idle for `wait` ns.
    fn full(wait: u64) -> Self;

    /// This answer, given by the shared overflow cell.
    fn shared(self) -> Self;
}

/// `allow_key`'s.
impl KeyOutcome for bool {
    #[inline]
    fn admitted(&self) -> bool {
        *self
    }

    #[inline]
    fn full(_wait: u64) -> Self {
        false
    }

    #[inline]
    fn shared(self) -> Self {
        self
    }
}

/// An attempt on a key, and the cell that decided it.
type KeyAttempt = (Attempt, KeyCell);

/// Every other decision's.
impl KeyOutcome for KeyAttempt {
    #[inline]
    fn admitted(&self) -> bool {
        self.0.is_ok()
    }

    #[inline]
    fn full(wait: u64) -> Self {
        let refusal = Refusal::Limited {
            retry_after: wait,
            reset_after: wait,
        };
        (Err(refusal), KeyCell::StoreFull)
    }

    #[inline]
    fn shared(self) -> Self {
        (self.0, KeyCell::Shared)
    }
}

/// The attempt, its admission marked with the cell that made it.
#[inline]
fn marked((r, cell): KeyAttempt) -> Attempt {
    r.map(|a| Admitted { cell, ..a })
}

/// Keyed use: an independent limit per key.
///
/// Every method takes the key by reference, and anything the key type can be borrowed as: a
/// `String`-keyed limiter is checked with a `&str`, and allocates only the first time a key is
/// seen.
impl<K, C, H> RateLimiter<K, C, H>
where
    K: Hash + Eq,
    C: Clock,
    H: BuildHasher + Clone,
{
    fn store<V>(cells: &Cells<K, V, H>) -> &KeyedStore<K, V, H> {
        match &cells.keyed {
            Some(store) => store,
            // `Builder::build` for a hashable key type always makes the store.
            None => unreachable!("a keyed limiter without a keyed store"),
        }
    }

    /// Admit one request for `key` if its limit allows it now: the leanest keyed check.
    ///
    /// ```
    /// use fluxrate_core::{Quota, RateLimiter};
    ///
    /// let limiter = RateLimiter::<String>::keyed(Quota::per_minute(1))?;
    /// assert!(limiter.allow_key("alice")); // a `&str` looks up a `String` key
    /// assert!(!limiter.allow_key("alice"));
    /// assert!(limiter.allow_key("bob")); // every key has its own limit
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    #[inline]
    #[must_use = "an admitted request is counted whether or not the answer is used"]
    pub fn allow_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.now();
        let ok = dispatch!(&self.engine, |alg, cells| {
            let mut ok =
                self.decide_key(alg, cells, key, now, |state, now| alg.allow(state, now, 1));
            if !ok && self.refine_lag() > 0 {
                ok = self.allow_key_refined(alg, cells, key, now);
            }
            Self::store(cells).record(key, ok);
            ok
        });
        self.record(ok);
        ok
    }

    /// `allow_key` refused at a lagging reading: if the refusal's wait (which `check` finds,
    /// changing nothing unless it admits) is within the lag, `allow` again at the precise
    /// reading. The precise clock is read between the two lookups, never under a shard guard.
    #[cold]
    #[inline(never)]
    fn allow_key_refined<Q, A>(
        &self,
        alg: &A,
        cells: &Cells<K, A::State, H>,
        key: &Q,
        now: u64,
    ) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        A: RateAlgorithm,
    {
        let (checked, _) = self.decide_key(alg, cells, key, now, |state, now| {
            (alg.check(state, now, 1), KeyCell::Own)
        });
        match checked {
            Ok(_) => true,
            Err(Refusal::Limited { retry_after, .. }) if self.refines(retry_after) => {
                let precise = self.clock.now_precise().max(now);
                self.decide_key(alg, cells, key, precise, |state, t| alg.allow(state, t, 1))
            }
            Err(_) => false,
        }
    }

    /// Admit one request for `key`, or say when to retry.
    #[inline]
    pub fn check_key<Q>(&self, key: &Q) -> Result<Admitted, RateLimited>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.check_key_n(key, 1).map_err(Denied::unit)
    }

    /// Admit a request of weight `n` for `key` (all or nothing); `n` above the capacity is
    /// [`Denied::Never`], at once; `n = 0` only looks.
    ///
    /// ```
    /// use fluxrate_core::{Denied, Quota, RateLimiter};
    ///
    /// let limiter = RateLimiter::<u64>::keyed(Quota::per_second(10))?;
    /// let admitted = limiter.check_key_n(&7, 4).unwrap();
    /// assert_eq!(admitted.remaining(), 6);
    /// match limiter.check_key_n(&7, 8) {
    ///     Err(Denied::Limited(e)) => assert!(!e.retry_after().is_zero()),
    ///     other => panic!("expected a refusal, got {other:?}"),
    /// }
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    #[doc(alias = "consume")]
    #[inline]
    pub fn check_key_n<Q>(&self, key: &Q, n: u64) -> Result<Admitted, Denied>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.now();
        let r = dispatch!(&self.engine, |alg, cells| {
            self.key_attempt(alg, cells, key, now, n, Op::Check)
        });
        self.finish_key(now, n, r)
    }

    /// One attempt on `key`: a check, or a reservation (`n = 0` only looks, either way).
    #[inline]
    fn key_attempt<Q, A>(
        &self,
        alg: &A,
        cells: &Cells<K, A::State, H>,
        key: &Q,
        now: u64,
        n: u64,
        op: Op,
    ) -> KeyAttempt
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        A: RateAlgorithm,
    {
        // `now` is the reading; the store may raise it to its latest sweep (`at`).
        let run = |state: &A::State, at: u64, now: u64| match op {
            Op::Reserve(max_wait) if n > 0 => (
                alg.reserve(state, at, n, max_wait.saturating_sub(at - now)),
                KeyCell::Own,
            ),
            _ => (decide(alg, state, at, n), KeyCell::Own),
        };
        let r = self.decide_key(alg, cells, key, now, |state, at| run(state, at, now));
        let r = match r {
            (Err(Refusal::Limited { retry_after, .. }), _) if self.refines(retry_after) => {
                self.key_attempt_refined(alg, cells, key, now, run)
            }
            r => r,
        };
        Self::store(cells).record(key, r.admitted());
        r
    }

    /// [`key_attempt`](Self::key_attempt) refused at a lagging reading, within the lag of what
    /// it could take: decided again at the precise reading (read between the two lookups,
    /// never under a shard guard), a refusal's waits made relative to `now`, the reading the
    /// answer reports.
    #[cold]
    #[inline(never)]
    fn key_attempt_refined<Q, A>(
        &self,
        alg: &A,
        cells: &Cells<K, A::State, H>,
        key: &Q,
        now: u64,
        run: impl Fn(&A::State, u64, u64) -> KeyAttempt,
    ) -> KeyAttempt
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        A: RateAlgorithm,
    {
        let precise = self.clock.now_precise().max(now);
        self.decide_key(alg, cells, key, precise, |state, at| {
            let (r, cell) = run(state, at, now);
            (r.map_err(|refusal| refusal.later_by(at - now)), cell)
        })
    }

    /// Run `run` on the cell of `key` (created on a miss), without counting it per key. When
    /// the store is full of live keys, apply the overflow policy: [`KeyOutcome::full`] for
    /// [`OverflowPolicy::Reject`], `run` on the shared cell for [`OverflowPolicy::Shared`].
    /// `run` is called with the key's shard guard held: it must not read the clock.
    #[inline]
    fn decide_key<Q, A, R: KeyOutcome>(
        &self,
        alg: &A,
        cells: &Cells<K, A::State, H>,
        key: &Q,
        now: u64,
        run: impl Fn(&A::State, u64) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        A: RateAlgorithm,
    {
        match Self::store(cells).with(alg, key, now, &run) {
            Lookup::Found(r) => r,
            Lookup::Full { until } => match self.overflow {
                OverflowPolicy::Reject => R::full(until.saturating_sub(now).max(1)),
                OverflowPolicy::Shared => run(&cells.direct, now).shared(),
            },
        }
    }

    /// Block the thread until one request for `key` is admitted or `timeout` would be exceeded
    /// (then fail at once, consuming nothing). No lock is held while waiting.
    ///
    /// # Blocking
    ///
    /// Sleeps the calling thread, like
    /// [`blocking_acquire`](RateLimiter::blocking_acquire); in async code use the facade's
    /// `acquire_key` (`fluxrate::AcquireKeyAsync`).
    pub fn blocking_acquire_key<Q>(
        &self,
        key: &Q,
        timeout: Duration,
    ) -> Result<Admitted, TimeoutExceeded>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.blocking_acquire_key_n(key, 1, timeout)
            .map_err(AcquireError::unit)
    }

    /// [`reserve`](RateLimiter::reserve) for `key`: reserve one request without waiting.
    pub fn reserve_key<Q>(&self, key: &Q, max_wait: Duration) -> Result<Admitted, RateLimited>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.reserve_key_n(key, 1, max_wait).map_err(Denied::unit)
    }

    /// [`reserve_n`](RateLimiter::reserve_n) for `key`: reserve without waiting.
    pub fn reserve_key_n<Q>(&self, key: &Q, n: u64, max_wait: Duration) -> Result<Admitted, Denied>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.now();
        let max_wait = nanos_saturating(max_wait);
        let r = dispatch!(&self.engine, |alg, cells| {
            self.key_attempt(alg, cells, key, now, n, Op::Reserve(max_wait))
        });
        self.finish_key(now, n, r)
    }

    /// [`cancel`](RateLimiter::cancel) for an admission of `key`.
    pub fn cancel_key<Q>(&self, key: &Q, admitted: &Admitted) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.now();
        dispatch!(&self.engine, |alg, cells| {
            if admitted.cell == KeyCell::Shared {
                // The shared overflow cell admitted it: it goes back there.
                return alg.cancel(&cells.direct, admitted);
            }
            let store = Self::store(cells);
            // A refund moves the key's idle time earlier: the store files it again (after the
            // shard guard is released), so that a full store sees the room it may free.
            let idle = store
                .get(key, |state| {
                    alg.cancel(state, admitted).then(|| alg.idle_at(state, now))
                })
                .flatten();
            if let Some(idle) = idle {
                store.refiled(key, idle);
            }
            idle.is_some()
        })
    }

    /// [`blocking_acquire_key`](Self::blocking_acquire_key) for a weight `n`.
    ///
    /// # Blocking
    ///
    /// Sleeps the calling thread, like [`blocking_acquire`](RateLimiter::blocking_acquire).
    pub fn blocking_acquire_key_n<Q>(
        &self,
        key: &Q,
        n: u64,
        timeout: Duration,
    ) -> Result<Admitted, AcquireError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        dispatch!(&self.engine, |alg, cells| self.acquire_loop(
            n,
            timeout,
            |now, budget| marked(self.key_attempt(alg, cells, key, now, n, Op::Reserve(budget)))
        ))
    }

    /// Block the thread until one request for `key` is admitted, however long it takes.
    ///
    /// # Blocking
    ///
    /// Sleeps the calling thread, like [`blocking_acquire`](RateLimiter::blocking_acquire).
    pub fn blocking_wait_key<Q>(&self, key: &Q) -> Admitted
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.blocking_wait_key_n(key, 1)
            .unwrap_or_else(|e| e.unit())
    }

    /// Block the thread until a request of weight `n` for `key` is admitted; fails at once
    /// only if `n` exceeds the capacity.
    ///
    /// # Blocking
    ///
    /// Sleeps the calling thread, like [`blocking_acquire`](RateLimiter::blocking_acquire).
    pub fn blocking_wait_key_n<Q>(&self, key: &Q, n: u64) -> Result<Admitted, InsufficientCapacity>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.blocking_acquire_key_n(key, n, Duration::MAX)
            .map_err(AcquireError::unbounded)
    }

    /// The current state of `key`, without changing it (a key never seen is fresh, and is not
    /// stored by looking).
    ///
    /// ```
    /// use fluxrate_core::{Quota, RateLimiter};
    ///
    /// let limiter = RateLimiter::<String>::keyed(Quota::per_second(3))?;
    /// limiter.check_key("a").unwrap();
    /// assert_eq!(limiter.peek_key("a").remaining(), 2);
    /// assert_eq!(limiter.peek_key("never seen").remaining(), 3);
    /// assert_eq!(limiter.len(), 1);
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    #[doc(alias = "available")]
    #[doc(alias = "count")]
    #[doc(alias = "level")]
    #[must_use]
    pub fn peek_key<Q>(&self, key: &Q) -> Snapshot
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.now();
        dispatch!(&self.engine, |alg, cells| Self::store(cells)
            .get(key, |state| alg.peek(state, now))
            .unwrap_or_else(|| alg.peek(&alg.new_state(), now)))
    }

    /// How long until one request for `key` would be admitted (zero if now).
    #[must_use]
    pub fn retry_after_key<Q>(&self, key: &Q) -> Duration
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.peek_key(key).retry_after()
    }

    /// Return `key` to a fresh state (its state is dropped).
    pub fn reset_key<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        dispatch!(&self.engine, |_alg, cells| Self::store(cells).remove(key))
    }

    /// Return every key to a fresh state.
    pub fn reset_all(&self) {
        dispatch!(&self.engine, |alg, cells| {
            Self::store(cells).clear();
            alg.reset(&cells.direct);
        })
    }

    /// One key's current usage and, with [`per_key_stats`](crate::Builder::per_key_stats), its counts.
    pub fn key_stats<Q>(&self, key: &Q) -> KeyStats
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let counts = dispatch!(&self.engine, |_alg, cells| Self::store(cells).counts(key));
        KeyStats {
            counts,
            current: self.peek_key(key),
        }
    }

    /// How many keys hold state.
    pub fn len(&self) -> usize {
        self.stats().keys
    }

    /// Whether no key holds state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop every key whose state is fresh again and return the memory to the allocator;
    /// returns how many keys were dropped. Keys are also dropped on their own, amortized over
    /// insertions, so calling this is only needed to give memory back promptly.
    ///
    /// ```
    /// use fluxrate_core::{ManualClock, Quota, RateLimiter};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::builder(Quota::per_second(10))
    ///     .clock(clock.clone())
    ///     .keyed::<u32>()
    ///     .build()?;
    /// for user in 0..100 {
    ///     limiter.check_key(&user).unwrap();
    /// }
    /// assert_eq!(limiter.len(), 100);
    /// clock.advance(Duration::from_secs(1)); // every key is full again
    /// assert_eq!(limiter.sweep(), 100);
    /// assert!(limiter.is_empty());
    /// # Ok::<(), fluxrate_core::ConfigError>(())
    /// ```
    pub fn sweep(&self) -> usize {
        let now = self.now();
        dispatch!(&self.engine, |alg, cells| {
            let store = Self::store(cells);
            let removed = store.sweep(alg, now);
            store.shrink();
            removed
        })
    }
}
