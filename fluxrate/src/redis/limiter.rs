//! [`RedisRateLimiter`]: one named limit, decided inside Redis.

use super::backend::{FailureClass, RedisBackend, Unavailable};
use super::key::{escape_into, valid_name, RedisKey};
use crate::{
    Admitted, Algorithm, ConfigError, InsufficientCapacity, Overflow, Quota, RateLimited,
    RateLimiter, Snapshot, TimeoutExceeded,
};
use core::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest time, emission interval × burst, or window × 3 × limit the script accepts, in
/// microseconds: Lua numbers are doubles, exact for integers up to 2^53.
pub const MAX_MICROS: u64 = 1 << 52;

/// Where a limiter's "now" comes from.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum TimeSource {
    /// The Redis server's `TIME` (default): the hosts need not agree on time.
    #[default]
    Server,
    /// This host's wall clock (for deployments that forbid `TIME` in scripts). Hosts whose
    /// clocks differ by δ can over-admit by up to ⌈2δ/T⌉ calls.
    Client,
    /// A time you set: for tests, so that the scripts can be checked exactly. Keys then live an
    /// hour longer than their state needs, since this time does not follow the server's clock.
    Manual(ManualTime),
}

/// A settable time in microseconds for [`TimeSource::Manual`]; clones share it.
#[derive(Debug, Clone, Default)]
pub struct ManualTime(Arc<AtomicU64>);

impl ManualTime {
    /// A time starting at `micros`.
    pub fn new(micros: u64) -> Self {
        Self(Arc::new(AtomicU64::new(micros)))
    }

    /// Set it.
    pub fn set(&self, micros: u64) {
        self.0.store(micros, Ordering::Release);
    }

    /// Move it forward by `d` (whole microseconds).
    pub fn advance(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(us))
            });
    }

    /// The current value.
    pub fn micros(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// What a limiter does when Redis cannot decide (down, too slow, breaker open).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Refuse ([`RedisDenied::Unavailable`]). Never admits more than the limit.
    FailClosed,
    /// Admit. Over-admission is bounded by the number of requests decided during the outage;
    /// the circuit breaker keeps each of them from waiting for the full time budget.
    FailOpen,
    /// Decide with an in-process limiter of the same algorithm holding `share` of the quota
    /// (e.g. `1.0 / number_of_processes`). The local limiter also counts every request Redis
    /// admits, so it is warm when an outage begins.
    FailLocal {
        /// The fraction of the quota (calls and burst) each process may admit on its own.
        share: f64,
    },
}

/// Why a [`RedisRateLimiter`] was not built.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RedisConfigError {
    /// The quota itself is invalid (the same checks as the in-process limiter).
    Quota(ConfigError),
    /// A limit id or key prefix is empty, longer than 64 bytes, or has characters other than
    /// `A-Z a-z 0-9 _ - . /`.
    InvalidName {
        /// `"id"` or `"prefix"`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// The period is not a whole number of microseconds (the script's unit).
    NotMicroseconds {
        /// The period in nanoseconds.
        period_ns: u128,
    },
    /// More than one call per microsecond: the emission interval would round to zero.
    TooFast {
        /// Calls per period.
        calls: u64,
        /// The period in microseconds.
        period_us: u64,
    },
    /// A product the script computes would exceed 2^52 microseconds (Lua numbers are doubles).
    NotRepresentable {
        /// What overflowed.
        what: &'static str,
    },
    /// The `FailLocal` share is not in (0, 1], or leaves less than one call.
    InvalidShare {
        /// The share given.
        share: f64,
    },
    /// The time budget is zero.
    ZeroTimeout,
}

impl fmt::Display for RedisConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quota(e) => e.fmt(f),
            Self::InvalidName { what, name } => write!(
                f,
                "invalid {what} {name:?}: use 1 to 64 of A-Z a-z 0-9 _ - . /"
            ),
            Self::NotMicroseconds { period_ns } => write!(
                f,
                "period of {period_ns} ns is not a whole number of microseconds"
            ),
            Self::TooFast { calls, period_us } => write!(
                f,
                "{calls} calls per {period_us} µs is more than one call per microsecond"
            ),
            Self::NotRepresentable { what } => {
                write!(
                    f,
                    "{what} exceeds 2^52 microseconds, which the script cannot represent"
                )
            }
            Self::InvalidShare { share } => write!(
                f,
                "local share {share} must be in (0, 1] and leave at least one call"
            ),
            Self::ZeroTimeout => f.write_str("the time budget must be longer than zero"),
        }
    }
}

impl std::error::Error for RedisConfigError {}

impl From<ConfigError> for RedisConfigError {
    fn from(e: ConfigError) -> Self {
        Self::Quota(e)
    }
}

/// A request that cannot be sent as given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidInput {
    /// The escaped subject is longer than the limiter's `max_key_len`.
    KeyTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The time (client or manual) is 2^52 µs or more: probably not microseconds.
    TimeOutOfRange {
        /// The value.
        micros: u64,
    },
    /// A batch mixes limiters on different backends, or is empty.
    Batch(&'static str),
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyTooLong { len, max } => {
                write!(f, "key of {len} bytes is longer than the maximum of {max}")
            }
            Self::TimeOutOfRange { micros } => write!(
                f,
                "time {micros} is not a plausible count of microseconds (at least 2^52)"
            ),
            Self::Batch(why) => write!(f, "invalid batch: {why}"),
        }
    }
}

impl std::error::Error for InvalidInput {}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RedisDenied {
    /// Over the limit now: retry later.
    Limited(RateLimited),
    /// Larger than the limit's capacity: never admitted.
    Never(InsufficientCapacity),
    /// `acquire`: the wait would be longer than the timeout (nothing was consumed).
    Timeout(TimeoutExceeded),
    /// Redis could not decide and the policy is [`FailurePolicy::FailClosed`] (for decisions),
    /// or any failure (for `peek`, `reset`, `cancel`).
    Unavailable(Unavailable),
    /// The request was refused before anything was sent.
    Invalid(InvalidInput),
}

impl RedisDenied {
    /// When to try again, if that can help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Limited(l) => Some(l.retry_after()),
            Self::Timeout(t) => Some(t.retry_after()),
            Self::Unavailable(u) => Some(u.retry_after()),
            Self::Never(_) | Self::Invalid(_) => None,
        }
    }
}

impl fmt::Display for RedisDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Limited(e) => e.fmt(f),
            Self::Never(e) => e.fmt(f),
            Self::Timeout(e) => e.fmt(f),
            Self::Unavailable(e) => e.fmt(f),
            Self::Invalid(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RedisDenied {}

/// Who made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecidedBy {
    /// The script, in Redis.
    Redis,
    /// The failure policy: [`FailurePolicy::FailOpen`] admitted it.
    FailOpen,
    /// The failure policy: [`FailurePolicy::FailClosed`] refused it.
    FailClosed,
    /// The local fallback limiter ([`FailurePolicy::FailLocal`]).
    Local,
    /// Nobody: the input was invalid.
    Invalid,
}

/// A decision and who made it.
///
/// Give an admission back with [`RedisRateLimiter::cancel_decision`], which goes to whoever
/// decided it (and also gives back what a Redis admission charged the local fallback).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The outcome.
    pub result: Result<Admitted, RedisDenied>,
    /// Who decided.
    pub decided_by: DecidedBy,
    /// What a Redis admission charged the local fallback to keep it warm.
    warmed: Option<Admitted>,
}

impl Decision {
    fn new(result: Result<Admitted, RedisDenied>, decided_by: DecidedBy) -> Self {
        Self {
            result,
            decided_by,
            warmed: None,
        }
    }
}

/// Counters of one [`RedisRateLimiter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Admitted by Redis.
    pub admitted: u64,
    /// Refused by Redis (limited or over capacity).
    pub limited: u64,
    /// Calls that failed with [`FailureClass::NotExecuted`].
    pub not_executed: u64,
    /// Calls that failed with [`FailureClass::Indeterminate`].
    pub indeterminate: u64,
    /// Calls refused at once by the open circuit breaker.
    pub short_circuited: u64,
    /// Admitted by [`FailurePolicy::FailOpen`].
    pub fail_open: u64,
    /// Refused by [`FailurePolicy::FailClosed`].
    pub fail_closed: u64,
    /// Admitted by the local fallback.
    pub local_admitted: u64,
    /// Refused by the local fallback.
    pub local_limited: u64,
}

#[derive(Default)]
struct Counters([AtomicU64; 9]);

impl Counters {
    fn add(&self, i: usize) {
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::Relaxed)
    }
}

const ADMITTED: usize = 0;
const LIMITED: usize = 1;
const NOT_EXECUTED: usize = 2;
const INDETERMINATE: usize = 3;
const SHORT: usize = 4;
const OPEN: usize = 5;
const CLOSED: usize = 6;
const LOCAL_OK: usize = 7;
const LOCAL_NO: usize = 8;

/// Script modes (see `decide.lua`).
const DECIDE: i64 = 0;
const DRY_RUN: i64 = 1;
const SNAPSHOT: i64 = 2;
const RESET: i64 = 3;
const REFUND: i64 = 4;

enum Policy {
    Closed,
    Open,
    Local(Box<RateLimiter<Vec<u8>>>),
}

struct Inner {
    backend: RedisBackend,
    id: String,
    quota: Quota,
    algorithm: Algorithm,
    code: i64,
    /// Emission interval (token / leaky bucket) or window (the others), µs.
    t: u64,
    /// Burst / capacity, or calls per window.
    cap: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
    max_key_len: usize,
    time: TimeSource,
    timeout: Duration,
    policy: Policy,
    counters: Counters,
}

/// A rate limit shared by every process that uses the same Redis, id and key prefix.
///
/// Each decision is one atomic Lua script (by `EVALSHA`) that reads the state, decides with the
/// same arithmetic as the in-process limiter (in integer microseconds), and writes the new
/// state with a TTL of exactly what it needs. The state of subject `k` under limit `id` lives in
/// `prefix:{k}:id:alg` (the hash tag `{k}` keeps every limit of one subject on one Redis
/// Cluster slot, so [`check_all`](Self::check_all) can decide them together).
///
/// Clones share everything.
///
/// ```no_run
/// use fluxrate::redis::{FailurePolicy, RedisBackend, RedisRateLimiter};
/// use fluxrate::{Algorithm, Quota};
/// use std::time::Duration;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::connect("redis://127.0.0.1:6379").await?;
/// let per_user = RedisRateLimiter::builder(&redis, "login", Quota::per_minute(10))
///     .algorithm(Algorithm::SlidingWindowCounter)
///     .timeout(Duration::from_millis(20))
///     .on_failure(FailurePolicy::FailLocal { share: 0.25 })
///     .build()?;
/// match per_user.check_key("alice").await {
///     Ok(admitted) => println!("{} left", admitted.remaining()),
///     Err(denied) => println!("no: {denied}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("id", &self.inner.id)
            .field("quota", &self.inner.quota)
            .field("algorithm", &self.inner.algorithm)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisRateLimiter`]; see [`RedisRateLimiter::builder`].
#[derive(Debug, Clone)]
pub struct RedisBuilder {
    backend: RedisBackend,
    id: String,
    quota: Quota,
    algorithm: Algorithm,
    prefix: String,
    time: TimeSource,
    timeout: Duration,
    policy: FailurePolicy,
    max_key_len: usize,
}

impl RedisBuilder {
    /// The algorithm (default: token bucket).
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The burst of the token bucket / the queue of the leaky bucket (default: calls).
    pub fn burst(mut self, burst: u64) -> Self {
        self.quota = self.quota.with_burst(burst);
        self
    }

    /// The first part of every key (default `"fluxrate"`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Where "now" comes from (default: the server's `TIME`).
    pub fn time(mut self, time: TimeSource) -> Self {
        self.time = time;
        self
    }

    /// The longest one decision may take, reconnecting included (default 50 ms). Past it the
    /// call fails as [`FailureClass::Indeterminate`] and the failure policy decides.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when Redis cannot decide (default: [`FailurePolicy::FailClosed`]).
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The longest escaped subject accepted, in bytes (default 512).
    pub fn max_key_len(mut self, max: usize) -> Self {
        self.max_key_len = max;
        self
    }

    /// Check everything and build.
    pub fn build(self) -> Result<RedisRateLimiter, RedisConfigError> {
        for (what, name) in [("id", &self.id), ("prefix", &self.prefix)] {
            if !valid_name(name) {
                return Err(RedisConfigError::InvalidName {
                    what,
                    name: name.clone(),
                });
            }
        }
        if self.timeout.is_zero() {
            return Err(RedisConfigError::ZeroTimeout);
        }
        // The in-process checks first: zero calls, zero period, burst 0, per-algorithm limits.
        RateLimiter::builder(self.quota)
            .algorithm(self.algorithm)
            .build()?;
        let period_ns = self.quota.period().as_nanos();
        if period_ns % 1000 != 0 {
            return Err(RedisConfigError::NotMicroseconds { period_ns });
        }
        let period_us = u64::try_from(period_ns / 1000)
            .ok()
            .filter(|&p| p < MAX_MICROS)
            .ok_or(RedisConfigError::NotRepresentable { what: "the period" })?;
        let calls = self.quota.calls();
        let (code, t, cap) = match self.algorithm {
            Algorithm::TokenBucket | Algorithm::LeakyBucket => {
                if calls > period_us {
                    return Err(RedisConfigError::TooFast { calls, period_us });
                }
                let t = period_us.div_ceil(calls);
                let b = self.quota.burst();
                if t.checked_mul(b).map_or(true, |bt| bt >= MAX_MICROS) {
                    return Err(RedisConfigError::NotRepresentable {
                        what: "burst × emission interval",
                    });
                }
                let code = if self.algorithm == Algorithm::TokenBucket {
                    1
                } else {
                    2
                };
                (code, t, b)
            }
            other => {
                if period_us
                    .checked_mul(calls)
                    .and_then(|x| x.checked_mul(3))
                    .map_or(true, |x| x >= MAX_MICROS)
                {
                    return Err(RedisConfigError::NotRepresentable {
                        what: "3 × calls × window",
                    });
                }
                let code = match other {
                    Algorithm::FixedWindow => 3,
                    Algorithm::SlidingWindowCounter => 4,
                    _ => SLIDING_LOG,
                };
                (code, period_us, calls)
            }
        };
        let policy = match self.policy {
            FailurePolicy::FailClosed => Policy::Closed,
            FailurePolicy::FailOpen => Policy::Open,
            FailurePolicy::FailLocal { share } => {
                Policy::Local(Box::new(local(self.quota, self.algorithm, share)?))
            }
        };
        let short = match self.algorithm {
            Algorithm::TokenBucket => "tb",
            Algorithm::LeakyBucket => "lb",
            Algorithm::FixedWindow => "fw",
            Algorithm::SlidingWindowCounter => "swc",
            Algorithm::SlidingLog => "log",
        };
        Ok(RedisRateLimiter {
            inner: Arc::new(Inner {
                backend: self.backend,
                head: format!("{}:{{", self.prefix).into_bytes(),
                tail: format!("}}:{}:{short}", self.id).into_bytes(),
                id: self.id,
                quota: self.quota,
                algorithm: self.algorithm,
                code,
                t,
                cap,
                max_key_len: self.max_key_len,
                time: self.time,
                timeout: self.timeout,
                policy,
                counters: Counters::default(),
            }),
        })
    }
}

/// The in-process fallback: `share` of the calls and of the burst, at least one of each.
fn local(
    quota: Quota,
    algorithm: Algorithm,
    share: f64,
) -> Result<RateLimiter<Vec<u8>>, RedisConfigError> {
    let scale = |x: u64| (x as f64 * share).floor() as u64;
    if !(share > 0.0 && share <= 1.0) || scale(quota.calls()) == 0 {
        return Err(RedisConfigError::InvalidShare { share });
    }
    let q =
        Quota::new(scale(quota.calls()), quota.period()).with_burst(scale(quota.burst()).max(1));
    Ok(RateLimiter::builder(q)
        .algorithm(algorithm)
        .keyed::<Vec<u8>>()
        .max_keys(100_000)
        .overflow(Overflow::Shared)
        .build()?)
}

fn ns(us: i64) -> u64 {
    u64::try_from(us).unwrap_or(0).saturating_mul(1000)
}

impl RedisRateLimiter {
    /// A limit named `id` (part of every key: two limiters with the same prefix and id share
    /// their state) on `backend`.
    pub fn builder(backend: &RedisBackend, id: &str, quota: Quota) -> RedisBuilder {
        RedisBuilder {
            backend: backend.clone(),
            id: id.to_owned(),
            quota,
            algorithm: Algorithm::TokenBucket,
            prefix: "fluxrate".to_owned(),
            time: TimeSource::Server,
            timeout: Duration::from_millis(50),
            policy: FailurePolicy::FailClosed,
            max_key_len: 512,
        }
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.inner.quota
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// The largest weight a request can have (burst, queue, or calls per window).
    pub fn capacity(&self) -> u64 {
        self.inner.cap
    }

    /// The backend.
    pub fn backend(&self) -> &RedisBackend {
        &self.inner.backend
    }

    /// The Redis key holding `key`'s state (the sliding log also uses this name + `:seq`).
    pub fn state_key<K: RedisKey + ?Sized>(&self, key: &K) -> Result<Vec<u8>, InvalidInput> {
        let mut raw = Vec::new();
        key.write_redis_key(&mut raw);
        self.inner.names(&raw).map(|(state, _)| state)
    }

    /// The counters.
    pub fn stats(&self) -> RedisStats {
        let c = &self.inner.counters;
        RedisStats {
            admitted: c.get(ADMITTED),
            limited: c.get(LIMITED),
            not_executed: c.get(NOT_EXECUTED),
            indeterminate: c.get(INDETERMINATE),
            short_circuited: c.get(SHORT),
            fail_open: c.get(OPEN),
            fail_closed: c.get(CLOSED),
            local_admitted: c.get(LOCAL_OK),
            local_limited: c.get(LOCAL_NO),
        }
    }

    /// Admit one request for `key` if the limit allows it now (or the failure policy does).
    pub async fn allow_key<K: RedisKey + ?Sized>(&self, key: &K) -> bool {
        self.check_key(key).await.is_ok()
    }

    /// How long until one more request for `key` would be admitted (zero if now).
    pub async fn retry_after_key<K: RedisKey + ?Sized>(
        &self,
        key: &K,
    ) -> Result<Duration, RedisDenied> {
        self.peek_key(key).await.map(|s| s.retry_after())
    }

    /// Admit one request for `key` if the limit allows it now.
    pub async fn check_key<K: RedisKey + ?Sized>(&self, key: &K) -> Result<Admitted, RedisDenied> {
        self.decide_key_n(key, 1).await.result
    }

    /// Admit a request of weight `n` (all or nothing); `n = 0` only looks.
    pub async fn check_key_n<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        n: u64,
    ) -> Result<Admitted, RedisDenied> {
        self.decide_key_n(key, n).await.result
    }

    /// [`check_key_n`](Self::check_key_n), saying who decided (Redis, or the failure policy).
    pub async fn decide_key_n<K: RedisKey + ?Sized>(&self, key: &K, n: u64) -> Decision {
        let max_wait = if self.inner.algorithm == Algorithm::LeakyBucket {
            -1
        } else {
            0
        };
        self.decide(key, n, max_wait, DECIDE).await
    }

    /// Decide as [`check_key_n`](Self::check_key_n) would, without counting anything.
    pub async fn dry_run_key_n<K: RedisKey + ?Sized>(&self, key: &K, n: u64) -> Decision {
        let max_wait = if self.inner.algorithm == Algorithm::LeakyBucket {
            -1
        } else {
            0
        };
        self.decide(key, n, max_wait, DRY_RUN).await
    }

    /// Reserve `n` for `key` if that means waiting at most `max_wait` (token and leaky bucket:
    /// the admission says how long to wait in [`Admitted::delay`]; the others admit only now).
    pub async fn reserve_key_n<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        n: u64,
        max_wait: Duration,
    ) -> Result<Admitted, RedisDenied> {
        let us = i64::try_from(max_wait.as_micros()).unwrap_or(i64::MAX);
        self.decide(key, n, us, DECIDE).await.result
    }

    /// [`reserve_key_n`](Self::reserve_key_n), saying who decided (Redis, or the failure
    /// policy; a `FailLocal` fallback queues without the `max_wait` cap).
    pub async fn decide_reserve_key_n<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        n: u64,
        max_wait: Duration,
    ) -> Decision {
        let us = i64::try_from(max_wait.as_micros()).unwrap_or(i64::MAX);
        self.decide(key, n, us, DECIDE).await
    }

    /// Wait (asynchronously) until `n` is admitted for `key`, or fail at once with
    /// [`RedisDenied::Timeout`], consuming nothing, if that would take longer than `timeout`.
    /// The token and leaky bucket reserve a place and sleep once; the window algorithms sleep
    /// until their retry time and try again. A future dropped while it sleeps keeps its
    /// reservation (giving it back would take a round trip from a destructor); where that
    /// matters, use [`reserve_key_n`](Self::reserve_key_n), sleep for its
    /// [`delay`](Admitted::delay), and [`cancel_key`](Self::cancel_key) if the wait is
    /// abandoned.
    pub async fn acquire_key_n<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        n: u64,
        timeout: Duration,
    ) -> Result<Admitted, RedisDenied> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.reserve_key_n(key, n, left).await {
                Ok(a) => {
                    if !a.delay().is_zero() {
                        tokio::time::sleep(a.delay()).await;
                    }
                    return Ok(a);
                }
                Err(RedisDenied::Limited(l)) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if l.retry_after() > left {
                        return Err(RedisDenied::Timeout(TimeoutExceeded::new(
                            timeout,
                            l.retry_after(),
                        )));
                    }
                    tokio::time::sleep(l.retry_after().max(Duration::from_micros(1))).await;
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// The state of `key` now: remaining calls, and when one more would be admitted.
    pub async fn peek_key<K: RedisKey + ?Sized>(&self, key: &K) -> Result<Snapshot, RedisDenied> {
        let rows = self.plain(key, SNAPSHOT, 0, 0).await?;
        let now = ns(rows[0]);
        Ok(Snapshot::from_remote(
            now,
            u64::try_from(rows[4]).unwrap_or(0),
            self.inner.cap,
            ns(rows[3]),
            ns(rows[5]),
        ))
    }

    /// Forget `key`'s state (a fresh limit).
    pub async fn reset_key<K: RedisKey + ?Sized>(&self, key: &K) -> Result<(), RedisDenied> {
        self.plain(key, RESET, 0, 0).await.map(|_| ())
    }

    /// Give back an admission Redis decided (token and leaky bucket), as the in-process
    /// [`cancel_key`](RateLimiter::cancel_key): only if nothing was admitted for `key` since.
    /// Returns whether it was given back.
    ///
    /// This always asks Redis. An admission the failure policy made (the local fallback, fail
    /// open) is not in Redis, and under [`FailurePolicy::FailLocal`] a Redis admission also
    /// charged the local fallback: give back a [`Decision`] with
    /// [`cancel_decision`](Self::cancel_decision) instead, which handles both.
    pub async fn cancel_key<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        admitted: &Admitted,
    ) -> Result<bool, RedisDenied> {
        self.refund(key, admitted).await
    }

    /// Give back what `decision` (from [`decide_key_n`](Self::decide_key_n) for `key`) took,
    /// through whoever decided it (token and leaky bucket; only if nothing was admitted for
    /// `key` since, there). A Redis admission is refunded in Redis and, once Redis has given it
    /// back, so is its charge on the local fallback; an admission by the local fallback is given
    /// back to the local fallback, without a round trip; a fail-open admission and a refusal
    /// took nothing. Returns whether something was given back.
    ///
    /// ```no_run
    /// # use fluxrate::redis::RedisRateLimiter;
    /// # async fn demo(limit: &RedisRateLimiter, other_step_failed: bool) -> Result<(), fluxrate::redis::RedisDenied> {
    /// let decision = limit.decide_key_n("alice", 1).await;
    /// if decision.result.is_ok() && other_step_failed {
    ///     limit.cancel_decision("alice", &decision).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel_decision<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        decision: &Decision,
    ) -> Result<bool, RedisDenied> {
        let Ok(admitted) = &decision.result else {
            return Ok(false);
        };
        let local = match &self.inner.policy {
            Policy::Local(local) => Some(local),
            Policy::Closed | Policy::Open => None,
        };
        let mut raw = Vec::new();
        key.write_redis_key(&mut raw);
        match decision.decided_by {
            DecidedBy::Redis => {
                let back = self.refund(&raw[..], admitted).await?;
                if let (true, Some(local), Some(warmed)) = (back, local, &decision.warmed) {
                    local.cancel_key(&raw[..], warmed);
                }
                Ok(back)
            }
            DecidedBy::Local => Ok(match local {
                Some(local) => local.cancel_key(&raw[..], admitted),
                None => false,
            }),
            DecidedBy::FailOpen | DecidedBy::FailClosed | DecidedBy::Invalid => Ok(false),
        }
    }

    /// The script's REFUND of a Redis admission.
    async fn refund<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        admitted: &Admitted,
    ) -> Result<bool, RedisDenied> {
        let tat = admitted.tat_after() / 1000;
        if tat == 0 || admitted.weight() == 0 {
            return Ok(false);
        }
        let rows = self
            .plain(
                key,
                REFUND,
                admitted.weight(),
                i64::try_from(tat).unwrap_or(i64::MAX),
            )
            .await?;
        Ok(rows[2] == 1)
    }

    /// Decide several limits for one subject in one round trip, all or nothing: either every
    /// limit admits its weight and all are counted, or none is counted and the error names the
    /// first limit that refused (its index in `limits`). The limiters must share one backend;
    /// the first one's time source and time budget are used. On Redis Cluster this works
    /// because every limit of one subject hashes to the same slot.
    ///
    /// # Refunds
    ///
    /// The admissions come back without who decided them, so there is no
    /// [`cancel_decision`](Self::cancel_decision) for them: [`cancel_key`](Self::cancel_key)
    /// always refunds in Redis, which is wrong for an admission a `FailLocal` fallback made
    /// (it stays charged locally), and a warm charge of the fallback is not given back. Decide
    /// limits one by one with [`decide_key_n`](Self::decide_key_n) where admissions may be
    /// refunded.
    pub async fn check_all<K: RedisKey + ?Sized>(
        key: &K,
        limits: &[(&RedisRateLimiter, u64)],
    ) -> Result<Vec<Admitted>, (usize, RedisDenied)> {
        let Some((first, _)) = limits.first() else {
            return Err((0, RedisDenied::Invalid(InvalidInput::Batch("no limits"))));
        };
        if limits
            .iter()
            .any(|(l, _)| !l.inner.backend.same(&first.inner.backend))
        {
            return Err((
                0,
                RedisDenied::Invalid(InvalidInput::Batch("limiters on different backends")),
            ));
        }
        let mut raw = Vec::new();
        key.write_redis_key(&mut raw);
        let calls: Vec<Call<'_>> = limits
            .iter()
            .map(|(l, n)| Call {
                limit: &l.inner,
                n: *n,
                max_wait: if l.inner.algorithm == Algorithm::LeakyBucket {
                    -1
                } else {
                    0
                },
                extra: 0,
            })
            .collect();
        match first.inner.send(&raw, &calls, DECIDE).await {
            Ok(out) => {
                let now = out[0];
                let mut admitted = Vec::with_capacity(calls.len());
                for (i, (c, row)) in calls.iter().zip(out[2..].chunks(5)).enumerate() {
                    match c.limit.row(now, c.n, row) {
                        Ok(a) => admitted.push(a),
                        Err(d) => {
                            c.limit.counters.add(LIMITED);
                            return Err((i, d));
                        }
                    }
                }
                for c in &calls {
                    c.limit.counters.add(ADMITTED);
                    let _ = c.limit.warm(&raw, c.n);
                }
                Ok(admitted)
            }
            Err(RedisDenied::Unavailable(u)) => {
                // Each limit's own policy decides; all or nothing across the local fallbacks.
                let mut taken: Vec<(&Inner, Admitted)> = Vec::new();
                for (i, c) in calls.iter().enumerate() {
                    let d = c.limit.fallback(&raw, c.n, &u);
                    match d.result {
                        Ok(a) => taken.push((c.limit, a)),
                        Err(e) => {
                            for (l, a) in &taken {
                                if let Policy::Local(local) = &l.policy {
                                    local.cancel_key(&raw[..], a);
                                }
                            }
                            return Err((i, e));
                        }
                    }
                }
                Ok(taken.into_iter().map(|(_, a)| a).collect())
            }
            Err(other) => Err((0, other)),
        }
    }

    async fn decide<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        n: u64,
        max_wait: i64,
        mode: i64,
    ) -> Decision {
        let inner = &*self.inner;
        let mut raw = Vec::new();
        key.write_redis_key(&mut raw);
        if n == 0 {
            // A look that changes nothing, as in-process.
            return match self.peek_key(&raw[..]).await {
                Ok(s) => Decision::new(
                    Ok(Admitted::from_remote(
                        s.taken_at(),
                        0,
                        s.remaining(),
                        s.limit(),
                        s.reset_after().as_nanos() as u64,
                        0,
                        0,
                    )),
                    DecidedBy::Redis,
                ),
                Err(RedisDenied::Unavailable(u)) => inner.fallback(&raw, 0, &u),
                Err(e) => Decision::new(Err(e), DecidedBy::Invalid),
            };
        }
        let call = [Call {
            limit: inner,
            n,
            max_wait,
            extra: 0,
        }];
        match inner.send(&raw, &call, mode).await {
            Ok(out) => {
                let result = inner.row(out[0], n, &out[2..7]);
                let mut warmed = None;
                if mode == DECIDE {
                    if result.is_ok() {
                        inner.counters.add(ADMITTED);
                        warmed = inner.warm(&raw, n);
                    } else {
                        inner.counters.add(LIMITED);
                    }
                }
                Decision {
                    warmed,
                    ..Decision::new(result, DecidedBy::Redis)
                }
            }
            Err(RedisDenied::Unavailable(u)) => inner.fallback(&raw, n, &u),
            Err(e) => Decision::new(Err(e), DecidedBy::Invalid),
        }
    }

    /// A call whose failures are returned as they are (no policy).
    async fn plain<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        mode: i64,
        n: u64,
        extra: i64,
    ) -> Result<Vec<i64>, RedisDenied> {
        let mut raw = Vec::new();
        key.write_redis_key(&mut raw);
        let call = [Call {
            limit: &self.inner,
            n,
            max_wait: 0,
            extra,
        }];
        self.inner.send(&raw, &call, mode).await
    }
}

/// The script's code of the sliding log (see `decide.lua`).
const SLIDING_LOG: i64 = 5;

struct Call<'a> {
    limit: &'a Inner,
    n: u64,
    max_wait: i64,
    extra: i64,
}

impl Inner {
    /// The state and auxiliary key names for subject `raw`.
    fn names(&self, raw: &[u8]) -> Result<(Vec<u8>, Vec<u8>), InvalidInput> {
        let mut state = Vec::with_capacity(self.head.len() + raw.len() + self.tail.len() + 8);
        state.extend_from_slice(&self.head);
        escape_into(raw, &mut state);
        let len = state.len() - self.head.len();
        if len > self.max_key_len {
            return Err(InvalidInput::KeyTooLong {
                len,
                max: self.max_key_len,
            });
        }
        state.extend_from_slice(&self.tail);
        let mut aux = state.clone();
        // Only the sliding log has an auxiliary key. The others name their state twice, so
        // that every key a script declares exists together: on a cluster, a slot being
        // migrated refuses a script whose keys are only partly present (`TRYAGAIN`).
        if self.code == SLIDING_LOG {
            aux.extend_from_slice(b":seq");
        }
        Ok((state, aux))
    }

    fn now_arg(&self) -> Result<i64, InvalidInput> {
        let us = match &self.time {
            TimeSource::Server => return Ok(-1),
            TimeSource::Client => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            TimeSource::Manual(m) => m.micros(),
        };
        if us >= MAX_MICROS {
            return Err(InvalidInput::TimeOutOfRange { micros: us });
        }
        Ok(us as i64)
    }

    async fn send(
        &self,
        raw: &[u8],
        calls: &[Call<'_>],
        mode: i64,
    ) -> Result<Vec<i64>, RedisDenied> {
        let now = self.now_arg().map_err(RedisDenied::Invalid)?;
        let mut keys = Vec::with_capacity(calls.len() * 2);
        // Manual time does not follow the server's clock: keep its keys an hour longer.
        let ttl_extra = if matches!(self.time, TimeSource::Manual(_)) {
            3_600_000
        } else {
            0
        };
        let mut args = vec![now, mode, calls.len() as i64, ttl_extra];
        for c in calls {
            let (state, aux) = c.limit.names(raw).map_err(RedisDenied::Invalid)?;
            keys.push(state);
            keys.push(aux);
            let l = c.limit;
            args.extend([
                l.code,
                l.t as i64,
                l.cap as i64,
                i64::try_from(c.n).unwrap_or(i64::MAX),
                c.max_wait,
                c.extra,
            ]);
        }
        let out = self
            .backend
            .eval(&keys, &args, self.timeout)
            .await
            .map_err(RedisDenied::Unavailable)?;
        if out.len() != 2 + 5 * calls.len() {
            return Err(RedisDenied::Unavailable(Unavailable {
                class: FailureClass::Indeterminate,
                retry_after: self.backend.breaker_open_for(),
                cause: format!("unexpected reply of {} integers", out.len()),
            }));
        }
        Ok(out)
    }

    /// One limit's row of the script's reply.
    fn row(&self, now: i64, n: u64, r: &[i64]) -> Result<Admitted, RedisDenied> {
        match r[0] {
            1 => Ok(Admitted::from_remote(
                ns(now.saturating_add(r[1])),
                ns(r[1]),
                u64::try_from(r[2]).unwrap_or(0),
                self.cap,
                ns(r[3]),
                n,
                ns(r[4]),
            )),
            0 => Err(RedisDenied::Limited(RateLimited::from_remote(
                ns(now),
                ns(r[1]).max(1),
                self.cap,
                ns(r[3]),
            ))),
            _ => Err(RedisDenied::Never(InsufficientCapacity::new(n, self.cap))),
        }
    }

    /// Keep the local fallback warm: it counts what Redis admitted (its own refusals are
    /// ignored: Redis decided). Returns the local admission, to give back with a refund.
    fn warm(&self, raw: &[u8], n: u64) -> Option<Admitted> {
        match &self.policy {
            Policy::Local(local) => local.check_key_n(raw, n).ok(),
            Policy::Closed | Policy::Open => None,
        }
    }

    fn fallback(&self, raw: &[u8], n: u64, u: &Unavailable) -> Decision {
        let c = &self.counters;
        c.add(match u.class {
            FailureClass::NotExecuted => NOT_EXECUTED,
            FailureClass::Indeterminate => INDETERMINATE,
            FailureClass::CircuitOpen => SHORT,
        });
        match &self.policy {
            Policy::Closed => {
                c.add(CLOSED);
                Decision::new(
                    Err(RedisDenied::Unavailable(u.clone())),
                    DecidedBy::FailClosed,
                )
            }
            Policy::Open => {
                c.add(OPEN);
                Decision::new(
                    Ok(Admitted::from_remote(0, 0, 0, self.cap, 0, n, 0)),
                    DecidedBy::FailOpen,
                )
            }
            Policy::Local(local) => {
                let result = match local.check_key_n(raw, n) {
                    Ok(a) => {
                        c.add(LOCAL_OK);
                        Ok(a)
                    }
                    Err(crate::Denied::Limited(l)) => {
                        c.add(LOCAL_NO);
                        Err(RedisDenied::Limited(l))
                    }
                    Err(crate::Denied::Never(e)) => {
                        c.add(LOCAL_NO);
                        Err(RedisDenied::Never(e))
                    }
                };
                Decision::new(result, DecidedBy::Local)
            }
        }
    }
}
