//! [`RateLimitLayer`]: the limits of a layer and its options.

use super::decide::{Backend, Limit};
use super::headers::{policy_fields, sf_int, sf_string_of, validate_name, Policy};
use super::key::{KeyExtractor, RequestInfo, RequestKey};
use super::service::RateLimit;
use crate::{Algorithm, Clock, ConfigError, OverflowPolicy, Quota, RateLimiter};
use ::http::{HeaderValue, StatusCode};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

/// How many keys a limit built by [`RateLimitLayer::limit`] holds at most, unless
/// [`RateLimitLayer::max_keys`] says otherwise.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

pub(super) type Predicate = dyn Fn(&RequestInfo<'_>) -> bool + Send + Sync;
pub(super) type Cost = dyn Fn(&RequestInfo<'_>) -> u64 + Send + Sync;

#[derive(Clone)]
pub(super) struct Config {
    pub(super) limits: Vec<Limit>,
    pub(super) dry_run: bool,
    pub(super) legacy_headers: bool,
    pub(super) exempt: Option<Arc<Predicate>>,
    pub(super) cost: Option<Arc<Cost>>,
    pub(super) status: StatusCode,
    pub(super) body: String,
    pub(super) never_status: StatusCode,
    pub(super) problem_details: bool,
    pub(super) unit: Option<Arc<str>>,
    pub(super) max_delay: Option<Duration>,
    pub(super) max_keys: usize,
    pub(super) overflow: OverflowPolicy,
    /// The `RateLimit-Policy` value of a request decided up to limit `k` (built from the
    /// limits and the quota unit: rebuilt by [`refresh_fields`](Self::refresh_fields) whenever
    /// either changes).
    pub(super) policy_fields: Vec<HeaderValue>,
}

impl Config {
    /// Rebuild what the fields precompute from the limits and the quota unit.
    fn refresh_fields(&mut self) {
        self.policy_fields = policy_fields(
            self.limits.iter().map(|l| (&*l.name, l.policy)),
            self.unit.as_deref(),
        );
    }
}

/// A tower [`Layer`](tower_layer::Layer) that rate-limits HTTP requests.
///
/// Clones share the same limiters. See the module documentation for the headers.
///
/// # Examples
///
/// ```
/// use fluxrate::http::{Global, Header, RateLimitLayer};
/// use fluxrate::{Quota, RateLimiter};
///
/// let layer = RateLimitLayer::new()
///     .limit("per-key", Quota::per_minute(60), Header(http::HeaderName::from_static("x-api-key")))?
///     .limit("global", Quota::per_second(1_000), Global)?
///     .legacy_headers(true);
/// # let _ = layer;
/// # Ok::<(), fluxrate::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RateLimitLayer {
    pub(super) config: Arc<Config>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field(
                "limits",
                &self
                    .config
                    .limits
                    .iter()
                    .map(|l| &l.name)
                    .collect::<Vec<_>>(),
            )
            .field("dry_run", &self.config.dry_run)
            .finish_non_exhaustive()
    }
}

impl Default for RateLimitLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimitLayer {
    /// A layer with no limits yet.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                limits: Vec::new(),
                dry_run: false,
                legacy_headers: false,
                exempt: None,
                cost: None,
                status: StatusCode::TOO_MANY_REQUESTS,
                body: "Too Many Requests\n".to_owned(),
                never_status: StatusCode::PAYLOAD_TOO_LARGE,
                problem_details: false,
                unit: None,
                max_delay: None,
                max_keys: DEFAULT_MAX_KEYS,
                overflow: OverflowPolicy::Reject,
                policy_fields: Vec::new(),
            }),
        }
    }

    /// The configuration, copied first if a clone shares it (limiters stay shared).
    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Add a limit named `name` (the name appears in the headers): a token bucket for `quota`,
    /// keyed by `extractor`, holding at most [`max_keys`](Self::max_keys) keys
    /// ([`DEFAULT_MAX_KEYS`] unless set before this call) with the layer's
    /// [`overflow`](Self::overflow) policy.
    ///
    /// Limits are checked in the order they were added. If a later one refuses, the earlier
    /// admissions are cancelled ([`RateLimiter::cancel_key`]): they are given back unless
    /// another request was admitted by that limit in between, in which case the refused
    /// request stays counted there (it never lets more through; it may count a refused request).
    /// An admission by a full store's shared overflow cell (`OverflowPolicy::Shared`) goes back
    /// to that cell.
    ///
    /// # Memory
    ///
    /// Each key held costs one store entry: 64 bytes for an IP key, 320 for a 256-byte header
    /// value (token bucket, measured by `tests/http_memory.rs`), so the default bound holds
    /// about 6.4 MB of IP keys, or 32 MB of the longest header keys, per limit. A key stays
    /// for as long as its state is not fresh (for a token bucket, `burst × period / calls`
    /// after its last request). Someone rotating keys (fresh IPv6
    /// addresses beyond the /64 grouping, random header values) fills the store up to
    /// `max_keys` and no further: when every held key is still live, a new key is refused
    /// (`OverflowPolicy::Reject`, with a `Retry-After` saying when a slot frees) or shares one extra
    /// cell (`OverflowPolicy::Shared`). A limit keyed by an unauthenticated header limits nothing
    /// against such a client: put an IP limit before it. Someone who keeps `max_keys` keys
    /// live locks new clients out of the limit until slots free: size `max_keys` for the
    /// legitimate population.
    ///
    /// # Errors
    ///
    /// The quota's errors, and [`ConfigError::InvalidName`] / [`ConfigError::DuplicateName`]
    /// for a name that cannot be told apart in the headers.
    pub fn limit(
        self,
        name: &str,
        quota: Quota,
        extractor: impl KeyExtractor,
    ) -> Result<Self, ConfigError> {
        let limiter = RateLimiter::builder(quota)
            .keyed::<RequestKey>()
            .max_keys(self.config.max_keys)
            .overflow(self.config.overflow)
            .build()?;
        self.limiter(name, Arc::new(limiter), extractor)
    }

    /// Add a limit with a limiter you built (any algorithm, clock, hasher, `max_keys`). A
    /// leaky bucket shapes: see [`max_delay`](Self::max_delay).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidName`] / [`ConfigError::DuplicateName`].
    pub fn limiter<C, S>(
        self,
        name: &str,
        limiter: Arc<RateLimiter<RequestKey, C, S>>,
        extractor: impl KeyExtractor,
    ) -> Result<Self, ConfigError>
    where
        C: Clock,
        S: BuildHasher + Clone + Send + Sync + 'static,
    {
        let (quota, algorithm, capacity) =
            (limiter.quota(), limiter.algorithm(), limiter.capacity());
        let interval = quota.emission_interval().map_or(0, |t| t.as_nanos() as u64);
        self.push(
            name,
            Backend::Local(limiter),
            extractor,
            (quota, algorithm, capacity, interval),
        )
    }

    fn push(
        mut self,
        name: &str,
        backend: Backend,
        extractor: impl KeyExtractor,
        (quota, algorithm, capacity, interval): (Quota, Algorithm, u64, u64),
    ) -> Result<Self, ConfigError> {
        validate_name(name)?;
        if self.config.limits.iter().any(|l| &*l.name == name) {
            return Err(ConfigError::DuplicateName {
                name: name.to_owned(),
            });
        }
        let config = self.config_mut();
        config.limits.push(Limit {
            name: name.into(),
            sf_name: sf_string_of(name),
            capacity_value: HeaderValue::from(sf_int(capacity)),
            backend,
            extractor: Arc::new(extractor),
            policy: Policy::of(quota, algorithm, capacity),
            algorithm,
            capacity,
            interval,
        });
        config.refresh_fields();
        Ok(self)
    }

    /// Add a limit decided in Redis (feature `redis`): shared by every instance of the service.
    ///
    /// A layer with a Redis limit decides each request asynchronously before calling the inner
    /// service. When Redis cannot decide and the limiter fails closed, the request gets `503
    /// Service Unavailable` with a `Retry-After`; fail-open and local-fallback limiters decide
    /// as their policy says, and the [`Decision`](super::Decision) says so
    /// ([`DecidedBy`](super::DecidedBy)); a fail-open admission has no numbers, so its item is
    /// left out of `RateLimit`. On a refusal by a later limit, earlier Redis admissions of the
    /// token and leaky bucket are given back as with the in-process ones, to whoever decided
    /// them ([`RedisRateLimiter::cancel_decision`](crate::redis::RedisRateLimiter::cancel_decision)):
    /// Redis (and the charge its admission put on a `FailLocal` fallback), or the local
    /// fallback. A key Redis does not take (too long once escaped) is decided, and given back,
    /// as [`RequestKey::Unknown`].
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidName`] / [`ConfigError::DuplicateName`].
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_limit(
        self,
        name: &str,
        limiter: crate::redis::RedisRateLimiter,
        extractor: impl KeyExtractor,
    ) -> Result<Self, ConfigError> {
        let (quota, algorithm, capacity) =
            (limiter.quota(), limiter.algorithm(), limiter.capacity());
        // The script's interval (⌈period / calls⌉ in whole microseconds), in ns.
        let interval = crate::redis::script::emission_interval_us(&quota).saturating_mul(1_000);
        self.push(
            name,
            Backend::Redis(limiter),
            extractor,
            (quota, algorithm, capacity, interval),
        )
    }

    /// The most keys each limit added by [`limit`](Self::limit) *after this call* holds
    /// (default [`DEFAULT_MAX_KEYS`]); limits built with [`limiter`](Self::limiter) keep their
    /// own. See [`limit`](Self::limit) for what an attacker rotating keys costs.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.config_mut().max_keys = max_keys;
        self
    }

    /// What limits added by [`limit`](Self::limit) after this call do with a new key when they
    /// hold `max_keys` live keys (default [`OverflowPolicy::Reject`]).
    pub fn overflow(mut self, overflow: OverflowPolicy) -> Self {
        self.config_mut().overflow = overflow;
        self
    }

    /// The longest a shaping limit (a leaky bucket) may hold a request before passing it on.
    ///
    /// A leaky-bucket limit is a shaper, like nginx's `limit_req … burst=N` without `nodelay`:
    /// an admitted request waits in the response future for its place in the queue
    /// ([`Admitted::delay`](crate::Admitted::delay)) before the inner service sees it, so the
    /// backend gets one request per interval. By default the queue's own capacity bounds the
    /// wait (`(capacity − 1) × period / calls`); with a maximum, a request whose place is
    /// further away is refused (`429` with the `Retry-After` at which it would fit). A request
    /// whose future is dropped while it waits (the client went away) gives its place back
    /// when no later request was queued behind it ([`RateLimiter::cancel_key`]); otherwise
    /// the place passes unused, which keeps the spacing of the requests behind it. Each
    /// waiting request holds its connection. A request admitted by several shaping limits
    /// waits for the longest of its delays (as with nginx): give a route one shaper. The
    /// response's fields describe the state when it is sent, after the wait. For a Redis
    /// limit the cap is applied in the script; a `FailLocal` fallback queues without it, so
    /// past the cap the layer gives the fallback's place back and refuses.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.config_mut().max_delay = Some(max_delay);
        self
    }

    /// Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (from the
    /// most restrictive limit; `Reset` is the seconds until the key is fully replenished).
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.config_mut().legacy_headers = on;
        self
    }

    /// Decide and send headers, but never refuse: refused requests go through, marked by a
    /// [`Decision`](super::Decision) extension on the response.
    pub fn dry_run(mut self, on: bool) -> Self {
        self.config_mut().dry_run = on;
        self
    }

    /// Requests for which `exempt` is true are neither limited nor counted.
    pub fn exempt(
        mut self,
        exempt: impl Fn(&RequestInfo<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.config_mut().exempt = Some(Arc::new(exempt));
        self
    }

    /// The weight of a request (default 1). A request whose weight is above a limit's
    /// capacity can never pass: it gets [`never_status`](Self::never_status), no
    /// `Retry-After`. Name the unit with [`quota_unit`](Self::quota_unit).
    pub fn cost(mut self, cost: impl Fn(&RequestInfo<'_>) -> u64 + Send + Sync + 'static) -> Self {
        self.config_mut().cost = Some(Arc::new(cost));
        self
    }

    /// The unit the quotas count when it is not requests (the draft's `qu`, for example
    /// `"content-bytes"`), sent on every `RateLimit-Policy` item.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidName`] for an empty or non-ASCII unit.
    pub fn quota_unit(mut self, unit: &str) -> Result<Self, ConfigError> {
        validate_name(unit)?;
        let config = self.config_mut();
        config.unit = Some(unit.into());
        config.refresh_fields();
        Ok(self)
    }

    /// The status of refused requests (default 429).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.config_mut().status = status;
        self
    }

    /// The status of requests that can never pass, their cost being above a limit's capacity
    /// (default `413 Content Too Large`). They get no `Retry-After`, and a body that says so.
    pub fn never_status(mut self, status: StatusCode) -> Self {
        self.config_mut().never_status = status;
        self
    }

    /// The body of refused responses (default `"Too Many Requests\n"`; unused with
    /// [`problem_details`](Self::problem_details)).
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.config_mut().body = body.into();
        self
    }

    /// Answer refusals with RFC 9457 problem details (`application/problem+json`): the
    /// draft's `quota-exceeded` type for 429, `temporary-reduced-capacity` for a fail-closed
    /// 503, and `violated-policies` naming the limit; `about:blank` for a request that can
    /// never pass.
    pub fn problem_details(mut self, on: bool) -> Self {
        self.config_mut().problem_details = on;
        self
    }
}

impl<S> tower_layer::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            config: self.config.clone(),
        }
    }
}
