//! [`RateLimitLayer`]: the limits of a layer and its options.

use super::decide::{Backend, Limit};
use super::headers::window_secs;
use super::key::{KeyExtractor, RequestInfo, RequestKey};
use super::service::RateLimit;
use crate::{ConfigError, Quota, RateLimiter};
use ::http::StatusCode;
use std::fmt;
use std::sync::Arc;

pub(super) type Predicate = dyn Fn(&RequestInfo<'_>) -> bool + Send + Sync;
pub(super) type Cost = dyn Fn(&RequestInfo<'_>) -> u64 + Send + Sync;

#[derive(Clone)]
pub(super) struct Config {
    pub(super) limits: Vec<Limit>,
    /// Whether a limit is decided remotely (then every request is decided asynchronously).
    #[cfg(feature = "redis")]
    pub(super) remote: bool,
    pub(super) dry_run: bool,
    pub(super) legacy_headers: bool,
    pub(super) exempt: Option<Arc<Predicate>>,
    pub(super) cost: Option<Arc<Cost>>,
    pub(super) status: StatusCode,
    pub(super) body: String,
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
                #[cfg(feature = "redis")]
                remote: false,
                dry_run: false,
                legacy_headers: false,
                exempt: None,
                cost: None,
                status: StatusCode::TOO_MANY_REQUESTS,
                body: "Too Many Requests\n".to_owned(),
            }),
        }
    }

    /// The configuration, copied first if a clone shares it (limiters stay shared).
    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Add a limit named `name` (the name appears in the headers): a token bucket for `quota`,
    /// keyed by `extractor`.
    ///
    /// Limits are checked in the order they were added. If a later one refuses, the earlier
    /// admissions are cancelled ([`RateLimiter::cancel_key`]): they are given back unless
    /// another request was admitted by that limit in between, in which case the refused
    /// request stays counted there (it never lets more through; it may count a refused request).
    pub fn limit(
        self,
        name: &str,
        quota: Quota,
        extractor: impl KeyExtractor,
    ) -> Result<Self, ConfigError> {
        let limiter = RateLimiter::builder(quota).keyed::<RequestKey>().build()?;
        Ok(self.limiter(name, Arc::new(limiter), extractor))
    }

    /// Add a limit with a limiter you built (any algorithm, clock or `max_keys`).
    pub fn limiter(
        mut self,
        name: &str,
        limiter: Arc<RateLimiter<RequestKey>>,
        extractor: impl KeyExtractor,
    ) -> Self {
        let window_secs = window_secs(limiter.quota());
        self.config_mut().limits.push(Limit {
            name: name.to_owned(),
            capacity: limiter.capacity(),
            backend: Backend::Local(limiter),
            extractor: Arc::new(extractor),
            window_secs,
        });
        self
    }

    /// Add a limit decided in Redis (feature `redis`): shared by every instance of the service.
    ///
    /// A layer with a Redis limit decides each request asynchronously before calling the inner
    /// service. When Redis cannot decide and the limiter fails closed, the request gets `503
    /// Service Unavailable` with a `Retry-After`; fail-open and local-fallback limiters decide
    /// as their policy says. On a refusal by a later limit, earlier Redis admissions of the
    /// token and leaky bucket are given back as with the in-process ones, to whoever decided
    /// them ([`RedisRateLimiter::cancel_decision`](crate::redis::RedisRateLimiter::cancel_decision)):
    /// Redis (and the charge its admission put on a `FailLocal` fallback), or the local
    /// fallback. A key Redis does not take (too long once escaped) is decided, and given back,
    /// as [`RequestKey::Unknown`].
    #[cfg(feature = "redis")]
    pub fn redis_limit(
        mut self,
        name: &str,
        limiter: crate::redis::RedisRateLimiter,
        extractor: impl KeyExtractor,
    ) -> Self {
        let config = self.config_mut();
        config.remote = true;
        config.limits.push(Limit {
            name: name.to_owned(),
            capacity: limiter.capacity(),
            window_secs: window_secs(limiter.quota()),
            backend: Backend::Redis(limiter),
            extractor: Arc::new(extractor),
        });
        self
    }

    /// Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (from the
    /// most restrictive limit).
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.config_mut().legacy_headers = on;
        self
    }

    /// Decide and send headers, but never refuse: refused requests go through, marked by a
    /// [`Decision`] extension on the response.
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

    /// The weight of a request (default 1).
    pub fn cost(mut self, cost: impl Fn(&RequestInfo<'_>) -> u64 + Send + Sync + 'static) -> Self {
        self.config_mut().cost = Some(Arc::new(cost));
        self
    }

    /// The status of refused requests (default 429).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.config_mut().status = status;
        self
    }

    /// The body of refused responses (default `"Too Many Requests\n"`).
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.config_mut().body = body.into();
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
