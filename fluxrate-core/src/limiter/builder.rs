//! [`Builder`]: the options of a limiter, checked once by `build`; the keyed options exist only
//! after [`keyed`](Builder::keyed).

use crate::algorithm::{Algorithm, RateAlgorithm};
use crate::clock::{nanos_saturating, Clock, CoarseClock};
use crate::error::ConfigError;
use crate::quota::Quota;
use crate::stats::Counters;
use crate::store::{KeyHasher, OverflowPolicy};
use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::marker::PhantomData;

use super::engine::{dispatch, Engine, MakeStore, NoStore, Stores};
use super::{NotKeyed, RateLimiter};

/// Builds a [`RateLimiter`]; start with [`RateLimiter::builder`].
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Algorithm, OverflowPolicy, Quota, RateLimiter};
///
/// let limiter = RateLimiter::builder("100/minute".parse().unwrap())
///     .algorithm(Algorithm::TokenBucket)
///     .burst(150)
///     .keyed::<u64>()
///     .max_keys(100_000)
///     .overflow(OverflowPolicy::Reject)
///     .build()
///     .unwrap();
/// assert!(limiter.allow_key(&7));
/// ```
#[must_use]
pub struct Builder<K = NotKeyed, C = CoarseClock, H = KeyHasher> {
    common: Common,
    clock: C,
    hasher: H,
    _key: PhantomData<fn() -> K>,
}

/// The options that do not change the builder's type: carried whole by `clock`, `keyed` and
/// `hasher`.
struct Common {
    quota: Quota,
    algorithm: Algorithm,
    max_keys: Option<usize>,
    overflow: OverflowPolicy,
    per_key_stats: bool,
    stats: bool,
}

impl<K, C: fmt::Debug, H> fmt::Debug for Builder<K, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.common;
        f.debug_struct("Builder")
            .field("quota", &c.quota)
            .field("algorithm", &c.algorithm)
            .field("clock", &self.clock)
            .field("max_keys", &c.max_keys)
            .field("overflow", &c.overflow)
            .field("per_key_stats", &c.per_key_stats)
            .field("stats", &c.stats)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Start building a limiter for `quota` (token bucket, direct, [`CoarseClock`] by default).
    pub fn builder(quota: Quota) -> Builder {
        Builder {
            common: Common {
                quota,
                algorithm: Algorithm::TokenBucket,
                max_keys: None,
                overflow: OverflowPolicy::Reject,
                per_key_stats: false,
                stats: true,
            },
            clock: CoarseClock::new(),
            hasher: KeyHasher::new(),
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

impl<K, C, H> Builder<K, C, H> {
    /// Choose the algorithm (default: [`Algorithm::TokenBucket`]).
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.common.algorithm = algorithm;
        self
    }

    /// Set the burst (token bucket) or queue capacity (leaky bucket); defaults to `calls`.
    /// Window algorithms ignore it: their limit is `calls` per window.
    pub fn burst(mut self, burst: u64) -> Self {
        self.common.quota = self.common.quota.with_burst(burst);
        self
    }

    /// Use another clock.
    pub fn clock<C2: Clock>(self, clock: C2) -> Builder<K, C2, H> {
        Builder {
            common: self.common,
            clock,
            hasher: self.hasher,
            _key: PhantomData,
        }
    }

    /// Count allowed / rejected requests for [`RateLimiter::stats`] (default: on). Counting
    /// costs a plain load and store on a counter the calling thread owns (no atomic
    /// read-modify-write, no contention: the first 16 live threads that count, on any
    /// limiter, own a counter each; others share counters with an atomic add), and 4 KiB per
    /// limiter.
    pub fn stats(mut self, enabled: bool) -> Self {
        self.common.stats = enabled;
        self
    }

    /// Make it a keyed limiter: one independent limit per key of type `K2`.
    pub fn keyed<K2: Hash + Eq>(self) -> Builder<K2, C, H> {
        Builder {
            common: self.common,
            clock: self.clock,
            hasher: self.hasher,
            _key: PhantomData,
        }
    }

    /// Check the options and build the limiter, its keyed store (or none) made by `stores`.
    fn build_with(self, stores: &impl MakeStore<K, H>) -> Result<RateLimiter<K, C, H>, ConfigError>
    where
        C: Clock,
    {
        let c = self.common;
        let engine = Engine::new(c.algorithm, &c.quota, stores)?;
        let precise = loosened_by_lag(self.clock.lag(), c.algorithm, &c.quota, &engine);
        Ok(RateLimiter {
            engine,
            clock: self.clock,
            precise,
            counters: c.stats.then(Counters::default),
            quota: c.quota,
            algorithm: c.algorithm,
            overflow: c.overflow,
        })
    }
}

/// Whether a clock lagging by `lag` would let a limit admit more than one request and more than
/// 1 % of its capacity beyond what it admits on a precise clock: then the limiter reads the
/// precise clock on every decision.
///
/// A lagging reading stamps a decision up to `lag` early, so over a real interval of length
/// `len` a limit admits at most what it admits over `len + lag` on a precise clock. For the
/// buckets (GCRA) that is `⌈lag / T⌉` more (`T` the emission interval). The window algorithms
/// can admit a whole window's quota within `lag`, in every window the lag spans (at a fixed
/// window's boundary, or when a burst's entries leave the log or the counter's previous
/// window), so they always read the precise clock.
fn loosened_by_lag<K, H>(
    lag: u64,
    algorithm: Algorithm,
    quota: &Quota,
    engine: &Engine<K, H>,
) -> bool {
    if lag == 0 {
        return false;
    }
    let capacity = dispatch!(engine, |alg, _cells| alg.capacity());
    let extra = match algorithm {
        Algorithm::TokenBucket | Algorithm::LeakyBucket => {
            // The quota is valid once the engine is built.
            let Ok(interval) = quota.emission_interval() else {
                return true;
            };
            lag.div_ceil(nanos_saturating(interval).max(1))
        }
        // A window's count depends on which side of a boundary (or of an entry's expiry) a
        // request falls: a lagging reading can put a whole quota on the wrong side in every
        // window the lag spans (a capacity of 1 with a window shorter than the lag admitted
        // 3 in one window), so the window algorithms always read the precise clock.
        Algorithm::FixedWindow | Algorithm::SlidingWindowCounter | Algorithm::SlidingLog => {
            return true; // whatever their capacity
        }
    };
    extra > (capacity / 100).max(1)
}

impl<C: Clock, H> Builder<NotKeyed, C, H> {
    /// Check every parameter and build the direct limiter.
    pub fn build(self) -> Result<RateLimiter<NotKeyed, C, H>, ConfigError> {
        self.build_with(&NoStore)
    }
}

/// The keyed builder options: after [`keyed`](Builder::keyed) only.
impl<K: Hash + Eq, C, H: BuildHasher + Clone> Builder<K, C, H> {
    /// Use another hasher for the keyed store. Keep it randomly seeded if keys come from
    /// untrusted input (see [`KeyHasher`]).
    pub fn hasher<H2: BuildHasher + Clone>(self, hasher: H2) -> Builder<K, C, H2> {
        Builder {
            common: self.common,
            clock: self.clock,
            hasher,
            _key: PhantomData,
        }
    }

    /// Bound the number of keys held at once (keyed limiters). When every held key is live, new
    /// keys follow the [`OverflowPolicy`] policy; a live key is never evicted to make room.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.common.max_keys = Some(max_keys);
        self
    }

    /// What to do with new keys when `max_keys` live keys are held (default: reject).
    pub fn overflow(mut self, overflow: OverflowPolicy) -> Self {
        self.common.overflow = overflow;
        self
    }

    /// Count allowed / rejected requests per key (keyed limiters; off by default: it costs a
    /// second map lookup per request).
    pub fn per_key_stats(mut self, enabled: bool) -> Self {
        self.common.per_key_stats = enabled;
        self
    }

    /// Check every parameter and build the keyed limiter.
    pub fn build(self) -> Result<RateLimiter<K, C, H>, ConfigError>
    where
        C: Clock,
    {
        if self.common.max_keys == Some(0) {
            return Err(ConfigError::ZeroMaxKeys);
        }
        let stores = Stores {
            hasher: self.hasher.clone(),
            max_keys: self.common.max_keys,
            per_key_stats: self.common.per_key_stats,
        };
        self.build_with(&stores)
    }
}
