//! [`RateLimiter`]: one type for every algorithm, direct or keyed.

use crate::algorithm::{Admitted, Algorithm, RateAlgorithm, Refusal, Snapshot};
use crate::clock::{nanos_saturating, Clock, MonotonicClock};
use crate::error::{
    AcquireError, ConfigError, Denied, InsufficientCapacity, RateLimited, TimeoutExceeded,
};
use crate::gcra::{GcraState, LeakyBucket, TokenBucket};
use crate::quota::Quota;
use crate::stats::{Counters, KeyStats, Stats};
use crate::store::{KeyHasher, KeyedStore, Lookup, Overflow};
use crate::window::counter::{SlidingWindowCounter, SlidingWindowCounterState};
use crate::window::fixed::{FixedWindow, FixedWindowState};
use crate::window::log::{SlidingLog, SlidingLogState};
use core::borrow::Borrow;
use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::marker::PhantomData;
use std::time::Duration;

/// The key type of a direct (un-keyed) limiter: one state for all callers.
///
/// The direct methods (`check`, …) exist only on `RateLimiter<NotKeyed, …>`, the keyed ones
/// (`check_key`, `sweep`, `reset_all`, …) and the keyed builder options (`max_keys`,
/// `overflow`, `per_key_stats`, `hasher`) only for key types that hash, which `NotKeyed` does
/// not: a direct limiter cannot call them at all.
///
/// ```compile_fail
/// let direct = fluxrate_core::RateLimiter::direct("10/s".parse().unwrap()).unwrap();
/// direct.sweep(); // no keyed store to sweep
/// ```
///
/// ```compile_fail
/// let direct = fluxrate_core::RateLimiter::direct("10/s".parse().unwrap()).unwrap();
/// direct.reset_all();
/// ```
///
/// ```compile_fail
/// use fluxrate_core::{Quota, RateLimiter};
/// let _ = RateLimiter::builder(Quota::per_second(1)).max_keys(10).build();
/// ```
///
/// ```compile_fail
/// use fluxrate_core::{Overflow, Quota, RateLimiter};
/// let _ = RateLimiter::builder(Quota::per_second(1)).overflow(Overflow::Shared).build();
/// ```
///
/// ```compile_fail
/// use fluxrate_core::{Quota, RateLimiter};
/// let _ = RateLimiter::builder(Quota::per_second(1)).per_key_stats(true).build();
/// ```
///
/// ```compile_fail
/// use fluxrate_core::{KeyHasher, Quota, RateLimiter};
/// let _ = RateLimiter::builder(Quota::per_second(1)).hasher(KeyHasher::new()).build();
/// ```
///
/// ```compile_fail
/// use fluxrate_core::{NotKeyed, Quota, RateLimiter};
/// let _ = RateLimiter::builder(Quota::per_second(1)).keyed::<NotKeyed>().build();
/// ```
///
/// The same options after [`keyed`](crate::Builder::keyed) build a keyed limiter:
///
/// ```
/// use fluxrate_core::{KeyHasher, Overflow, Quota, RateLimiter};
/// let keyed = RateLimiter::builder(Quota::per_second(1))
///     .keyed::<u64>()
///     .max_keys(10)
///     .overflow(Overflow::Shared)
///     .per_key_stats(true)
///     .hasher(KeyHasher::new())
///     .build()
///     .unwrap();
/// assert_eq!(keyed.sweep(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotKeyed(());

/// The cells of one algorithm: the direct cell, and the keyed store if keyed (always `Some` for
/// a key type other than [`NotKeyed`], always `None` for `NotKeyed`: `build` decides by type).
///
/// A keyed limiter uses its direct cell as the shared cell of [`Overflow::Shared`].
struct Cells<K, V, S> {
    direct: Padded<V>,
    keyed: Option<KeyedStore<K, V, S>>,
}

/// The direct cell on cache lines of its own (two, against adjacent-line prefetch): threads
/// contending on it then do not also evict the limiter's read-only parameters, which sit next
/// to it, from each other's caches.
#[repr(align(128))]
struct Padded<V>(V);

impl<V> core::ops::Deref for Padded<V> {
    type Target = V;

    #[inline(always)]
    fn deref(&self) -> &V {
        &self.0
    }
}

/// Enum dispatch over the algorithms: parameters and cells side by side.
enum Engine<K, S> {
    TokenBucket(TokenBucket, Cells<K, GcraState, S>),
    LeakyBucket(LeakyBucket, Cells<K, GcraState, S>),
    FixedWindow(FixedWindow, Cells<K, FixedWindowState, S>),
    SlidingWindowCounter(SlidingWindowCounter, Cells<K, SlidingWindowCounterState, S>),
    SlidingLog(SlidingLog, Cells<K, SlidingLogState, S>),
}

/// Run `$body` with `$alg` bound to the algorithm and `$cells` to its cells.
macro_rules! dispatch {
    ($engine:expr, |$alg:ident, $cells:ident| $body:expr) => {
        match $engine {
            Engine::TokenBucket($alg, $cells) => $body,
            Engine::LeakyBucket($alg, $cells) => $body,
            Engine::FixedWindow($alg, $cells) => $body,
            Engine::SlidingWindowCounter($alg, $cells) => $body,
            Engine::SlidingLog($alg, $cells) => $body,
        }
    };
}

/// A rate limiter: any algorithm, direct or keyed, with a pluggable clock.
///
/// * `K` is the key type, or [`NotKeyed`] for one limit shared by all callers.
/// * `C` is the [`Clock`]: [`MonotonicClock`] by default, [`ManualClock`](crate::ManualClock) in
///   tests, [`CachedClock`](crate::CachedClock) when every nanosecond counts.
/// * `S` is the hasher of the keyed store.
///
/// Every check reads the clock once (outside any lock) and runs one CAS loop on the key's
/// atomic state; a keyed check also takes the shard read guard of its key. A refused request
/// changes nothing. The limiter is `Send + Sync`; share it by reference or in an `Arc`.
///
/// Three ways to use it, as in the Python original: [`allow`](Self::allow) /
/// [`check`](Self::check) (manual guard), [`acquire`](Self::acquire) (block until admitted, with
/// a timeout), and the `#[rate_limit]` attribute of the `fluxrate` crate.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Algorithm, ManualClock, Quota, RateLimiter};
/// use std::time::Duration;
///
/// // Direct: one limit.
/// let limiter = RateLimiter::builder(Quota::per_second(2)).build().unwrap();
/// assert!(limiter.allow());
///
/// // Keyed: one limit per user, an exact sliding window, a manual clock.
/// let clock = ManualClock::new();
/// let per_user = RateLimiter::builder(Quota::per_minute(2))
///     .algorithm(Algorithm::SlidingLog)
///     .clock(clock.clone())
///     .keyed::<String>()
///     .build()
///     .unwrap();
/// assert!(per_user.allow_key("alice")); // &str lookups, no allocation for known keys
/// assert!(per_user.allow_key("alice"));
/// let denied = per_user.check_key("alice").unwrap_err();
/// assert_eq!(denied.retry_after(), Duration::from_secs(60));
/// assert!(per_user.allow_key("bob"));
/// clock.advance(Duration::from_secs(60));
/// assert!(per_user.allow_key("alice"));
/// ```
pub struct RateLimiter<K = NotKeyed, C = MonotonicClock, S = KeyHasher> {
    engine: Engine<K, S>,
    clock: C,
    /// Limiter-wide counters; `None` when built with `.stats(false)`.
    counters: Option<Counters>,
    quota: Quota,
    algorithm: Algorithm,
    overflow: Overflow,
}

impl<K, C, S> fmt::Debug for RateLimiter<K, C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("quota", &self.quota)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RateLimiter`]; start with [`RateLimiter::builder`].
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Algorithm, Overflow, Quota, RateLimiter};
///
/// let limiter = RateLimiter::builder("100/minute".parse().unwrap())
///     .algorithm(Algorithm::TokenBucket)
///     .burst(150)
///     .keyed::<u64>()
///     .max_keys(100_000)
///     .overflow(Overflow::Reject)
///     .build()
///     .unwrap();
/// assert!(limiter.allow_key(&7));
/// ```
#[must_use]
pub struct Builder<K = NotKeyed, C = MonotonicClock, S = KeyHasher> {
    quota: Quota,
    algorithm: Algorithm,
    clock: C,
    hasher: S,
    max_keys: Option<usize>,
    overflow: Overflow,
    per_key_stats: bool,
    stats: bool,
    _key: PhantomData<fn() -> K>,
}

impl<K, C: fmt::Debug, S> fmt::Debug for Builder<K, C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("quota", &self.quota)
            .field("algorithm", &self.algorithm)
            .field("clock", &self.clock)
            .field("max_keys", &self.max_keys)
            .field("overflow", &self.overflow)
            .field("per_key_stats", &self.per_key_stats)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Start building a limiter for `quota` (token bucket, direct, monotonic clock by default).
    pub fn builder(quota: Quota) -> Builder {
        Builder {
            quota,
            algorithm: Algorithm::TokenBucket,
            clock: MonotonicClock::new(),
            hasher: KeyHasher::new(),
            max_keys: None,
            overflow: Overflow::Reject,
            per_key_stats: false,
            stats: true,
            _key: PhantomData,
        }
    }

    /// A direct token-bucket limiter for `quota`.
    ///
    /// ```
    /// let limiter = fluxrate_core::RateLimiter::direct("10/s".parse().unwrap()).unwrap();
    /// assert!(limiter.allow());
    /// ```
    pub fn direct(quota: Quota) -> Result<Self, ConfigError> {
        Self::builder(quota).build()
    }
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// A keyed token-bucket limiter for `quota`.
    ///
    /// ```
    /// use fluxrate_core::{Quota, RateLimiter};
    /// let limiter = RateLimiter::<String>::keyed(Quota::per_second(1)).unwrap();
    /// assert!(limiter.allow_key("a") && limiter.allow_key("b") && !limiter.allow_key("a"));
    /// ```
    pub fn keyed(quota: Quota) -> Result<Self, ConfigError> {
        RateLimiter::builder(quota).keyed::<K>().build()
    }
}

impl<K, C, S> Builder<K, C, S> {
    /// Choose the algorithm (default: [`Algorithm::TokenBucket`]).
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Set the burst (token bucket) or queue capacity (leaky bucket); defaults to `calls`.
    /// Window algorithms ignore it: their limit is `calls` per window.
    pub fn burst(mut self, burst: u64) -> Self {
        self.quota = self.quota.with_burst(burst);
        self
    }

    /// Use another clock.
    pub fn clock<C2: Clock>(self, clock: C2) -> Builder<K, C2, S> {
        Builder {
            quota: self.quota,
            algorithm: self.algorithm,
            clock,
            hasher: self.hasher,
            max_keys: self.max_keys,
            overflow: self.overflow,
            per_key_stats: self.per_key_stats,
            stats: self.stats,
            _key: PhantomData,
        }
    }

    /// Count allowed / rejected requests for [`RateLimiter::stats`] (default: on). Counting
    /// costs one uncontended atomic add per decision (striped by thread); turn it off on the
    /// hottest paths.
    pub fn stats(mut self, enabled: bool) -> Self {
        self.stats = enabled;
        self
    }

    /// Make it a keyed limiter: one independent limit per key of type `K2`.
    pub fn keyed<K2: Hash + Eq>(self) -> Builder<K2, C, S> {
        Builder {
            quota: self.quota,
            algorithm: self.algorithm,
            clock: self.clock,
            hasher: self.hasher,
            max_keys: self.max_keys,
            overflow: self.overflow,
            per_key_stats: self.per_key_stats,
            stats: self.stats,
            _key: PhantomData,
        }
    }
}

impl<C: Clock, S> Builder<NotKeyed, C, S> {
    /// Check every parameter and build the direct limiter.
    pub fn build(self) -> Result<RateLimiter<NotKeyed, C, S>, ConfigError> {
        RateLimiter::from_builder(self, &NoStore)
    }
}

/// The keyed builder options: after [`keyed`](Builder::keyed) only.
impl<K: Hash + Eq, C, S: BuildHasher + Clone> Builder<K, C, S> {
    /// Use another hasher for the keyed store. Keep it randomly seeded if keys come from
    /// untrusted input (see [`KeyHasher`]).
    pub fn hasher<S2: BuildHasher + Clone>(self, hasher: S2) -> Builder<K, C, S2> {
        Builder {
            quota: self.quota,
            algorithm: self.algorithm,
            clock: self.clock,
            hasher,
            max_keys: self.max_keys,
            overflow: self.overflow,
            per_key_stats: self.per_key_stats,
            stats: self.stats,
            _key: PhantomData,
        }
    }

    /// Bound the number of keys held at once (keyed limiters). When every held key is live, new
    /// keys follow the [`Overflow`] policy; a live key is never evicted to make room.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = Some(max_keys);
        self
    }

    /// What to do with new keys when `max_keys` live keys are held (default: reject).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Count allowed / rejected requests per key (keyed limiters; off by default: it costs a
    /// second map lookup per request).
    pub fn per_key_stats(mut self, enabled: bool) -> Self {
        self.per_key_stats = enabled;
        self
    }

    /// Check every parameter and build the keyed limiter.
    pub fn build(self) -> Result<RateLimiter<K, C, S>, ConfigError>
    where
        C: Clock,
    {
        if self.max_keys == Some(0) {
            return Err(ConfigError::ZeroMaxKeys);
        }
        let stores = Stores {
            hasher: self.hasher.clone(),
            max_keys: self.max_keys,
            per_key_stats: self.per_key_stats,
        };
        RateLimiter::from_builder(self, &stores)
    }
}

/// Makes the keyed store (or none) of each algorithm's cells.
trait MakeStore<K, S> {
    fn store<V>(&self) -> Option<KeyedStore<K, V, S>>;
}

/// A direct limiter's: none.
struct NoStore;

impl<S> MakeStore<NotKeyed, S> for NoStore {
    fn store<V>(&self) -> Option<KeyedStore<NotKeyed, V, S>> {
        None
    }
}

/// A keyed limiter's: one store per limiter with the builder's options.
struct Stores<S> {
    hasher: S,
    max_keys: Option<usize>,
    per_key_stats: bool,
}

impl<K: Hash + Eq, S: BuildHasher + Clone> MakeStore<K, S> for Stores<S> {
    fn store<V>(&self) -> Option<KeyedStore<K, V, S>> {
        Some(KeyedStore::new(
            self.hasher.clone(),
            self.max_keys,
            self.per_key_stats,
        ))
    }
}

impl<K, V, S> Cells<K, V, S> {
    fn new(direct: V, stores: &impl MakeStore<K, S>) -> Self {
        Self {
            direct: Padded(direct),
            keyed: stores.store(),
        }
    }
}

impl<K, C: Clock, S> RateLimiter<K, C, S> {
    /// Check the builder's parameters and build the cells of its algorithm.
    fn from_builder(
        b: Builder<K, C, S>,
        stores: &impl MakeStore<K, S>,
    ) -> Result<Self, ConfigError> {
        let q = &b.quota;
        let engine = match b.algorithm {
            Algorithm::TokenBucket => {
                let a = TokenBucket::new(q)?;
                Engine::TokenBucket(a, Cells::new(a.new_state(), stores))
            }
            Algorithm::LeakyBucket => {
                let a = LeakyBucket::new(q)?;
                Engine::LeakyBucket(a, Cells::new(a.new_state(), stores))
            }
            Algorithm::FixedWindow => {
                let a = FixedWindow::new(q)?;
                Engine::FixedWindow(a, Cells::new(a.new_state(), stores))
            }
            Algorithm::SlidingWindowCounter => {
                let a = SlidingWindowCounter::new(q)?;
                let direct = a.new_state();
                Engine::SlidingWindowCounter(a, Cells::new(direct, stores))
            }
            Algorithm::SlidingLog => {
                let a = SlidingLog::new(q)?;
                Engine::SlidingLog(a, Cells::new(a.new_state(), stores))
            }
        };
        Ok(RateLimiter {
            engine,
            clock: b.clock,
            counters: b.stats.then(Counters::default),
            quota: b.quota,
            algorithm: b.algorithm,
            overflow: b.overflow,
        })
    }
}

/// A unit request can always succeed eventually (every capacity is at least 1).
fn never_fails<T>(r: Result<T, InsufficientCapacity>) -> T {
    match r {
        Ok(t) => t,
        Err(e) => unreachable!("unit request refused as over capacity: {e}"),
    }
}

/// Outcome of one attempt inside an acquire loop.
type Attempt = Result<Admitted, Refusal>;

impl<K, C: Clock, S> RateLimiter<K, C, S> {
    /// The quota the limiter was built with.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// The algorithm the limiter runs.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The limiter's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The largest weight one request can be granted (burst, queue capacity, or calls).
    pub fn capacity(&self) -> u64 {
        dispatch!(&self.engine, |alg, _cells| alg.capacity())
    }

    /// Limiter-wide statistics.
    pub fn stats(&self) -> Stats {
        let (allowed, rejected) = self.counters.as_ref().map_or((0, 0), Counters::totals);
        let store = dispatch!(&self.engine, |_alg, cells| cells
            .keyed
            .as_ref()
            .map(|k| k.summary()));
        let (keys, sweeps, evicted) = store.map_or((0, 0, 0), |s| (s.keys, s.sweeps, s.evicted));
        Stats {
            allowed,
            rejected,
            keys,
            sweeps,
            evicted,
            counted: self.counters.is_some(),
        }
    }

    /// Zero the limiter-wide counters (not the limits).
    pub fn reset_stats(&self) {
        if let Some(c) = &self.counters {
            c.clear();
        }
    }

    #[inline]
    fn record(&self, allowed: bool) {
        if let Some(c) = &self.counters {
            c.record(allowed);
        }
    }

    fn limited(&self, now: u64, retry_after: u64, reset_after: u64) -> RateLimited {
        RateLimited {
            at: now,
            retry_after: retry_after.max(1),
            limit: self.capacity(),
            reset_after,
        }
    }

    fn never(&self, n: u64) -> InsufficientCapacity {
        InsufficientCapacity {
            requested: n,
            capacity: self.capacity(),
        }
    }

    /// Turn an algorithm's answer into the public one, and count it.
    #[inline]
    fn finish(&self, now: u64, n: u64, r: Attempt) -> Result<Admitted, Denied> {
        self.record(r.is_ok());
        r.map_err(|refusal| match refusal {
            Refusal::Limited {
                retry_after,
                reset_after,
            } => Denied::Limited(self.limited(now, retry_after, reset_after)),
            Refusal::Never => Denied::Never(self.never(n)),
        })
    }

    /// Block until `attempt` admits, sleeping exactly as long as the algorithm says, or fail at
    /// once if the wait would exceed `timeout`. Nothing is consumed by a refusal.
    fn acquire_loop(
        &self,
        n: u64,
        timeout: Duration,
        mut attempt: impl FnMut(u64, u64) -> Attempt,
    ) -> Result<Admitted, AcquireError> {
        let timeout_ns = nanos_saturating(timeout);
        let deadline = self.clock.now().saturating_add(timeout_ns);
        loop {
            let now = self.clock.now();
            let budget = deadline.saturating_sub(now);
            match attempt(now, budget) {
                Ok(admitted) => {
                    self.record(true);
                    if admitted.delay > 0 {
                        self.clock.sleep_until(admitted.at);
                    }
                    return Ok(admitted);
                }
                Err(Refusal::Never) => {
                    self.record(false);
                    return Err(AcquireError::Never(self.never(n)));
                }
                Err(Refusal::Limited { retry_after, .. }) => {
                    if retry_after > budget {
                        self.record(false);
                        return Err(AcquireError::Timeout(TimeoutExceeded {
                            timeout,
                            retry_after,
                        }));
                    }
                    self.clock
                        .sleep_until(now.saturating_add(retry_after.max(1)));
                }
            }
        }
    }
}

/// Decide `n` on `state`, treating `n = 0` as a look that changes nothing.
#[inline]
fn decide<A: RateAlgorithm>(alg: &A, state: &A::State, now: u64, n: u64) -> Attempt {
    if n == 0 {
        let s = alg.peek(state, now);
        return Ok(Admitted {
            at: now,
            delay: 0,
            remaining: s.remaining,
            limit: s.limit,
            reset_after: s.reset_after,
            weight: 0,
            tat_after: 0,
        });
    }
    alg.check(state, now, n)
}

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
        self.check_n(1).map_err(|d| match d {
            Denied::Limited(l) => l,
            Denied::Never(e) => unreachable!("unit request refused as over capacity: {e}"),
        })
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
        self.acquire_n(1, timeout).map_err(|e| match e {
            AcquireError::Timeout(t) => t,
            AcquireError::Never(e) => unreachable!("unit request refused as over capacity: {e}"),
        })
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
        never_fails(self.wait_n(1))
    }

    /// Block until a request of weight `n` is admitted; fails at once only if `n` exceeds the
    /// capacity.
    pub fn wait_n(&self, n: u64) -> Result<Admitted, InsufficientCapacity> {
        self.acquire_n(n, Duration::MAX).map_err(|e| match e {
            AcquireError::Never(e) => e,
            AcquireError::Timeout(t) => unreachable!("an unbounded wait timed out: {t}"),
        })
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

/// Keyed use: an independent limit per key.
///
/// Every method takes the key by reference, and anything the key type can be borrowed as: a
/// `String`-keyed limiter is checked with a `&str`, and allocates only the first time a key is
/// seen.
impl<K, C, S> RateLimiter<K, C, S>
where
    K: Hash + Eq,
    C: Clock,
    S: BuildHasher + Clone,
{
    fn store<V>(cells: &Cells<K, V, S>) -> &KeyedStore<K, V, S> {
        match &cells.keyed {
            Some(store) => store,
            // `Builder::build` for a hashable key type always makes the store.
            None => unreachable!("a keyed limiter without a keyed store"),
        }
    }

    /// Admit one request for `key` if its limit allows it now.
    #[inline]
    pub fn allow_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now();
        let ok = dispatch!(&self.engine, |alg, cells| self.on_key(
            alg,
            cells,
            key,
            now,
            |state, now| alg.allow(state, now, 1),
            |ok| *ok,
            |_| false
        ));
        self.record(ok);
        ok
    }

    /// Admit one request for `key`, or say when to retry.
    #[inline]
    pub fn check_key<Q>(&self, key: &Q) -> Result<Admitted, RateLimited>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.check_key_n(key, 1).map_err(|d| match d {
            Denied::Limited(l) => l,
            Denied::Never(e) => unreachable!("unit request refused as over capacity: {e}"),
        })
    }

    /// Admit a request of weight `n` for `key` (all or nothing).
    #[inline]
    pub fn check_key_n<Q>(&self, key: &Q, n: u64) -> Result<Admitted, Denied>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now();
        let r = dispatch!(&self.engine, |alg, cells| self
            .key_attempt(alg, cells, key, now, n, 0, false));
        self.finish(now, n, r)
    }

    /// One attempt on `key`: a check, or a reservation within `max_wait` if `reserve`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn key_attempt<Q, A>(
        &self,
        alg: &A,
        cells: &Cells<K, A::State, S>,
        key: &Q,
        now: u64,
        n: u64,
        max_wait: u64,
        reserve: bool,
    ) -> Attempt
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        A: RateAlgorithm,
    {
        let run = |state: &A::State, now: u64| {
            if reserve && n > 0 {
                alg.reserve(state, now, n, max_wait)
            } else {
                decide(alg, state, now, n)
            }
        };
        self.on_key(
            alg,
            cells,
            key,
            now,
            run,
            |r: &Attempt| r.is_ok(),
            |wait| {
                Err(Refusal::Limited {
                    retry_after: wait,
                    reset_after: wait,
                })
            },
        )
    }

    /// Run `run` on the cell of `key` (created on a miss) and count the outcome per key. When
    /// the store is full of live keys, apply the overflow policy: `full(wait)` for
    /// [`Overflow::Reject`], `run` on the shared cell for [`Overflow::Shared`].
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn on_key<Q, A, R>(
        &self,
        alg: &A,
        cells: &Cells<K, A::State, S>,
        key: &Q,
        now: u64,
        run: impl Fn(&A::State, u64) -> R,
        admitted: impl Fn(&R) -> bool,
        full: impl FnOnce(u64) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        A: RateAlgorithm,
    {
        let store = Self::store(cells);
        match store.with(alg, key, now, &run) {
            Lookup::Found(r) => {
                store.record(key, admitted(&r));
                r
            }
            Lookup::Full { until } => match self.overflow {
                Overflow::Reject => full(until.saturating_sub(now).max(1)),
                Overflow::Shared => run(&cells.direct, now),
            },
        }
    }

    /// Block until one request for `key` is admitted or `timeout` would be exceeded (then fail
    /// at once, consuming nothing). No lock is held while waiting.
    pub fn acquire_key<Q>(&self, key: &Q, timeout: Duration) -> Result<Admitted, TimeoutExceeded>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.acquire_key_n(key, 1, timeout).map_err(|e| match e {
            AcquireError::Timeout(t) => t,
            AcquireError::Never(e) => unreachable!("unit request refused as over capacity: {e}"),
        })
    }

    /// [`reserve_n`](RateLimiter::reserve_n) for `key`: reserve without waiting.
    pub fn reserve_key_n<Q>(&self, key: &Q, n: u64, max_wait: Duration) -> Result<Admitted, Denied>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now();
        let max_wait = nanos_saturating(max_wait);
        let r = dispatch!(&self.engine, |alg, cells| self
            .key_attempt(alg, cells, key, now, n, max_wait, true));
        self.finish(now, n, r)
    }

    /// [`cancel`](RateLimiter::cancel) for an admission of `key`.
    pub fn cancel_key<Q>(&self, key: &Q, admitted: &Admitted) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        dispatch!(&self.engine, |alg, cells| {
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

    /// [`acquire_key`](Self::acquire_key) for a weight `n`.
    pub fn acquire_key_n<Q>(
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
            |now, budget| self.key_attempt(alg, cells, key, now, n, budget, true)
        ))
    }

    /// Block until one request for `key` is admitted, however long it takes.
    pub fn wait_key<Q>(&self, key: &Q) -> Admitted
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        never_fails(
            self.acquire_key_n(key, 1, Duration::MAX)
                .map_err(|e| match e {
                    AcquireError::Never(e) => e,
                    AcquireError::Timeout(t) => unreachable!("an unbounded wait timed out: {t}"),
                }),
        )
    }

    /// The current state of `key`, without changing it (a key never seen is fresh).
    pub fn peek_key<Q>(&self, key: &Q) -> Snapshot
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        dispatch!(&self.engine, |alg, cells| Self::store(cells)
            .get(key, |state| alg.peek(state, now))
            .unwrap_or_else(|| alg.peek(&alg.new_state(), now)))
    }

    /// How long until one request for `key` would be admitted (zero if now).
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

    /// One key's current usage and, with [`per_key_stats`](Builder::per_key_stats), its counts.
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
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        dispatch!(&self.engine, |alg, cells| {
            let store = Self::store(cells);
            let removed = store.sweep(alg, now);
            store.shrink();
            removed
        })
    }
}
