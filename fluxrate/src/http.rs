//! HTTP middleware for tower (axum, tonic, hyper): feature `tower`.
//!
//! [`RateLimitLayer`] holds one or more named limits, each a keyed [`RateLimiter`] and a
//! [`KeyExtractor`] that says which key a request counts against (the peer IP, the client IP
//! behind trusted proxies, a header, the whole service, or a closure). A request passes only if
//! every limit admits it; a request refused by one limit is not charged by the others, as far
//! as the limits can give capacity back (see [`RateLimitLayer::limit`]). Refused requests get
//! `429 Too Many Requests` with `Retry-After` in whole seconds (rounded up, never 0); every
//! response carries the IETF draft `RateLimit-Policy` and `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers-09/10 syntax) and, optionally, the legacy
//! `X-RateLimit-*` fields.

use crate::{Admitted, ConfigError, Denied, Quota, RateLimiter};
use ::http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use ::http::{Extensions, Method, Request, Response, StatusCode, Uri};
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// What a request counts against, within one limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestKey {
    /// One key for every request: a global limit.
    Global,
    /// A client IP address.
    Ip(IpAddr),
    /// Text: a header value, an API key, a user id.
    Text(Box<str>),
    /// The key could not be extracted (no peer address, no header): all such requests share
    /// this one key, so a misconfiguration limits them together instead of not at all.
    Unknown,
}

/// The parts of a request an extractor may look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (where servers put the peer address).
    pub extensions: &'a Extensions,
}

impl<'a> RequestInfo<'a> {
    /// The parts of `req`.
    pub fn of<B>(req: &'a Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }
}

/// Says which key a request counts against.
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key, or `None` if it cannot be determined (then [`RequestKey::Unknown`] is used).
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey>;
}

impl<F> KeyExtractor for F
where
    F: Fn(&RequestInfo<'_>) -> Option<RequestKey> + Send + Sync + 'static,
{
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey> {
        self(req)
    }
}

/// Every request counts against one shared key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyExtractor for Global {
    fn key(&self, _: &RequestInfo<'_>) -> Option<RequestKey> {
        Some(RequestKey::Global)
    }
}

/// A function from the request's extensions to the peer address.
type PeerFn = dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync;

/// The peer's IP address, as the server recorded it in the request's extensions.
///
/// By default it reads a `SocketAddr` extension. For axum, give it `ConnectInfo`:
/// `PeerIp::from_extension(|c: &ConnectInfo<SocketAddr>| c.0.ip())` (and serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`).
#[derive(Clone)]
pub struct PeerIp {
    read: Arc<PeerFn>,
}

impl fmt::Debug for PeerIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIp").finish_non_exhaustive()
    }
}

impl Default for PeerIp {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerIp {
    /// Read a `SocketAddr` from the extensions.
    pub fn new() -> Self {
        Self {
            read: Arc::new(|e: &Extensions| e.get::<SocketAddr>().map(SocketAddr::ip)),
        }
    }

    /// Read the address from an extension of type `T` (for example axum's `ConnectInfo`).
    pub fn from_extension<T, F>(read: F) -> Self
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> IpAddr + Send + Sync + 'static,
    {
        Self {
            read: Arc::new(move |e: &Extensions| e.get::<T>().map(&read)),
        }
    }

    fn ip(&self, e: &Extensions) -> Option<IpAddr> {
        (self.read)(e)
    }
}

impl KeyExtractor for PeerIp {
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey> {
        self.ip(req.extensions).map(RequestKey::Ip)
    }
}

/// The client IP behind trusted reverse proxies, from `Forwarded` (RFC 7239) or
/// `X-Forwarded-For`.
///
/// The headers are read only when the direct peer is one of the trusted proxies; the client is
/// then the address `hops` entries from the right (each trusted proxy appends the address it
/// received the request from). Anything else (an untrusted peer, too few entries, an
/// unparsable entry) falls back to the peer's own address: a client cannot choose its key by
/// sending a header.
#[derive(Debug, Clone)]
pub struct ForwardedIp {
    peer: PeerIp,
    trusted: Vec<IpAddr>,
    hops: usize,
}

impl ForwardedIp {
    /// Behind `hops` trusted proxies (≥ 1), whose addresses are `trusted`, reading the peer
    /// with `peer`.
    pub fn new(peer: PeerIp, trusted: impl IntoIterator<Item = IpAddr>, hops: usize) -> Self {
        Self {
            peer,
            trusted: trusted.into_iter().collect(),
            hops: hops.max(1),
        }
    }

    fn forwarded_for(headers: &HeaderMap) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut any = false;
        for v in headers.get_all(::http::header::FORWARDED) {
            any = true;
            let v = v.to_str().ok()?;
            for element in v.split(',') {
                let for_ = element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| v.trim().to_owned())
                })?;
                out.push(for_);
            }
        }
        if any {
            return Some(out);
        }
        let mut xff = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            xff.extend(v.to_str().ok()?.split(',').map(|s| s.trim().to_owned()));
        }
        (!xff.is_empty()).then_some(xff)
    }

    fn parse_ip(s: &str) -> Option<IpAddr> {
        let s = s.trim_matches('"');
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(ip);
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Some(sa.ip());
        }
        // "[2001:db8::1]" without a port.
        s.strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|r| r.parse().ok())
    }

    /// The client address for a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted.contains(&peer) {
            return peer;
        }
        let Some(list) = Self::forwarded_for(headers) else {
            return peer;
        };
        if list.len() < self.hops {
            return peer;
        }
        Self::parse_ip(&list[list.len() - self.hops]).unwrap_or(peer)
    }
}

impl KeyExtractor for ForwardedIp {
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey> {
        let peer = self.peer.ip(req.extensions)?;
        Some(RequestKey::Ip(self.client(peer, req.headers)))
    }
}

/// Longest header value used as a key; longer values count as [`RequestKey::Unknown`].
pub const MAX_KEY_LEN: usize = 256;

/// The value of a request header (for example an API key).
#[derive(Debug, Clone)]
pub struct Header(pub HeaderName);

impl KeyExtractor for Header {
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey> {
        let v = req.headers.get(&self.0)?.to_str().ok()?;
        (v.len() <= MAX_KEY_LEN).then(|| RequestKey::Text(v.into()))
    }
}

/// Where a limit is decided.
#[derive(Clone)]
enum Backend {
    Local(Arc<RateLimiter<RequestKey>>),
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisRateLimiter),
}

/// One named limit of a layer.
#[derive(Clone)]
struct Limit {
    name: String,
    backend: Backend,
    capacity: u64,
    extractor: Arc<dyn KeyExtractor>,
    window_secs: u64,
}

/// One limit's answer for one request.
enum Outcome {
    Admitted(Taken),
    Limited {
        retry: Duration,
        reset: u64,
    },
    /// Redis could not decide and the limit fails closed: 503.
    #[cfg(feature = "redis")]
    Unavailable {
        retry: Duration,
    },
}

impl Outcome {
    fn local(limit: &Limit, r: Result<Admitted, Denied>) -> Self {
        match r {
            Ok(a) => Self::Admitted(Taken::Local(a)),
            Err(Denied::Limited(e)) => Self::Limited {
                retry: e.retry_after(),
                reset: ceil_secs(e.reset_after()),
            },
            // A weight above the capacity never passes: say so with a long wait.
            Err(Denied::Never(_)) => Self::Limited {
                retry: Duration::from_secs(limit.window_secs),
                reset: limit.window_secs,
            },
        }
    }

    #[cfg(feature = "redis")]
    fn remote(limit: &Limit, d: crate::redis::Decision) -> Self {
        use crate::redis::RedisDenied;
        match d.result {
            Ok(a) => Self::Admitted(Taken::Redis(a, d)),
            Err(RedisDenied::Limited(e)) => Self::local(limit, Err(Denied::Limited(e))),
            Err(RedisDenied::Never(e)) => Self::local(limit, Err(Denied::Never(e))),
            Err(other) => Self::Unavailable {
                retry: other.retry_after().unwrap_or(Duration::from_secs(1)),
            },
        }
    }
}

/// What one limit took for a request, to give back if a later limit refuses it.
enum Taken {
    Local(Admitted),
    /// The admission and the whole decision: who decided is who gives it back.
    #[cfg(feature = "redis")]
    Redis(Admitted, crate::redis::Decision),
}

impl Taken {
    fn admitted(&self) -> &Admitted {
        match self {
            Self::Local(a) => a,
            #[cfg(feature = "redis")]
            Self::Redis(a, _) => a,
        }
    }
}

/// The decision for one request so far: the numbers for the headers, what was taken and for
/// which key it was decided (to give back on a refusal), and the refusal.
#[derive(Default)]
struct Verdict {
    numbers: Vec<Numbers>,
    taken: Vec<(usize, RequestKey, Taken)>,
    refused: Option<Refused>,
}

struct Refused {
    name: String,
    retry: Duration,
    status: Option<StatusCode>,
}

impl Verdict {
    /// Record limit `i`'s outcome, decided for `key`; false once the request is refused.
    fn record(&mut self, i: usize, limit: &Limit, key: RequestKey, outcome: Outcome) -> bool {
        let numbers = |remaining, reset| Numbers {
            name: limit.name.clone(),
            limit: limit.capacity,
            window: limit.window_secs,
            remaining,
            reset,
        };
        let (retry, reset, status) = match outcome {
            Outcome::Admitted(t) => {
                let a = t.admitted();
                self.numbers
                    .push(numbers(a.remaining(), ceil_secs(a.reset_after())));
                self.taken.push((i, key, t));
                return true;
            }
            Outcome::Limited { retry, reset } => (retry, reset, None),
            #[cfg(feature = "redis")]
            Outcome::Unavailable { retry } => (
                retry,
                ceil_secs(retry),
                Some(StatusCode::SERVICE_UNAVAILABLE),
            ),
        };
        self.numbers.push(numbers(0, reset));
        self.refused = Some(Refused {
            name: limit.name.clone(),
            retry,
            status,
        });
        false
    }
}

type Predicate = dyn Fn(&RequestInfo<'_>) -> bool + Send + Sync;
type Cost = dyn Fn(&RequestInfo<'_>) -> u64 + Send + Sync;

#[derive(Clone)]
struct Config {
    limits: Vec<Limit>,
    /// Whether a limit is decided remotely (then every request is decided asynchronously).
    #[cfg(feature = "redis")]
    remote: bool,
    dry_run: bool,
    legacy_headers: bool,
    exempt: Option<Arc<Predicate>>,
    cost: Option<Arc<Cost>>,
    status: StatusCode,
    body: String,
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
    config: Arc<Config>,
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

/// The outcome for one request, added to the response's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether every limit admitted the request.
    pub admitted: bool,
    /// The name of the limit that refused it, if any.
    pub refused_by: Option<String>,
    /// Whether the layer is in dry-run mode (a refused request went through anyway).
    pub dry_run: bool,
}

/// One limit's numbers for the headers.
struct Numbers {
    name: String,
    limit: u64,
    window: u64,
    remaining: u64,
    reset: u64,
}

fn window_secs(quota: Quota) -> u64 {
    quota.period().as_secs_f64().ceil().max(1.0) as u64
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A structured-field string (names are quoted; `"` and `\` escaped).
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn write_headers(headers: &mut HeaderMap, numbers: &[Numbers], legacy: bool) {
    if numbers.is_empty() {
        return;
    }
    let policy = numbers
        .iter()
        .map(|n| format!("{};q={};w={}", sf_string(&n.name), n.limit, n.window))
        .collect::<Vec<_>>()
        .join(", ");
    let current = numbers
        .iter()
        .map(|n| format!("{};r={};t={}", sf_string(&n.name), n.remaining, n.reset))
        .collect::<Vec<_>>()
        .join(", ");
    headers.insert(
        HeaderName::from_static("ratelimit-policy"),
        header_value(policy),
    );
    headers.insert(HeaderName::from_static("ratelimit"), header_value(current));
    if legacy {
        // The most restrictive limit: fewest remaining, then the longest reset.
        let n = numbers
            .iter()
            .min_by_key(|n| (n.remaining, u64::MAX - n.reset))
            .expect("not empty");
        headers.insert(
            HeaderName::from_static("x-ratelimit-limit"),
            header_value(n.limit.to_string()),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            header_value(n.remaining.to_string()),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-reset"),
            header_value(n.reset.to_string()),
        );
    }
}

/// The middleware service; built by [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The response future of [`RateLimit`].
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl Config {
    fn cost(&self, info: &RequestInfo<'_>) -> u64 {
        self.cost.as_ref().map_or(1, |f| f(info))
    }

    fn keys(&self, info: &RequestInfo<'_>) -> Vec<RequestKey> {
        self.limits
            .iter()
            .map(|l| l.extractor.key(info).unwrap_or(RequestKey::Unknown))
            .collect()
    }

    /// Decide a request against every (in-process) limit.
    #[cfg_attr(not(feature = "redis"), allow(irrefutable_let_patterns))]
    fn decide(&self, keys: Vec<RequestKey>, n: u64) -> Verdict {
        let mut v = Verdict::default();
        for (i, (l, key)) in self.limits.iter().zip(keys).enumerate() {
            let outcome = match &l.backend {
                Backend::Local(lim) => Outcome::local(l, lim.check_key_n(&key, n)),
                #[cfg(feature = "redis")]
                Backend::Redis(_) => unreachable!("remote limits are decided by decide_async"),
            };
            if !v.record(i, l, key, outcome) {
                break;
            }
        }
        if v.refused.is_some() {
            // All or nothing: give back what the earlier limits took.
            for (i, key, t) in &v.taken {
                if let (Backend::Local(lim), Taken::Local(a)) = (&self.limits[*i].backend, t) {
                    lim.cancel_key(key, a);
                }
            }
        }
        v
    }

    /// Decide a request against every limit, some of them in Redis.
    #[cfg(feature = "redis")]
    async fn decide_async(&self, keys: Vec<RequestKey>, n: u64) -> Verdict {
        use crate::redis::RedisDenied;
        let mut v = Verdict::default();
        for (i, (l, mut key)) in self.limits.iter().zip(keys).enumerate() {
            let outcome = match &l.backend {
                Backend::Local(lim) => Outcome::local(l, lim.check_key_n(&key, n)),
                Backend::Redis(r) => {
                    let mut d = r.decide_key_n(&key, n).await;
                    if let Err(RedisDenied::Invalid(_)) = d.result {
                        // A key Redis will not take (too long once escaped) counts as unknown,
                        // and so does what it took.
                        key = RequestKey::Unknown;
                        d = r.decide_key_n(&key, n).await;
                    }
                    Outcome::remote(l, d)
                }
            };
            if !v.record(i, l, key, outcome) {
                break;
            }
        }
        if v.refused.is_some() {
            // Given back to whoever decided: the in-process limit, Redis, or Redis's local
            // fallback (which a Redis admission also charged).
            for (i, key, t) in &v.taken {
                match (&self.limits[*i].backend, t) {
                    (Backend::Local(lim), Taken::Local(a)) => {
                        lim.cancel_key(key, a);
                    }
                    (Backend::Redis(r), Taken::Redis(_, d)) => {
                        let _ = r.cancel_decision(key, d).await;
                    }
                    _ => {}
                }
            }
        }
        v
    }

    /// The response for a refused request, or `None` to call the inner service.
    fn refusal<ResBody: From<String>>(&self, v: &Verdict) -> Option<Response<ResBody>> {
        let refused = v.refused.as_ref()?;
        if self.dry_run {
            return None;
        }
        let mut resp = Response::new(ResBody::from(self.body.clone()));
        *resp.status_mut() = refused.status.unwrap_or(self.status);
        let h = resp.headers_mut();
        write_headers(h, &v.numbers, self.legacy_headers);
        h.insert(
            RETRY_AFTER,
            header_value(ceil_secs(refused.retry).max(1).to_string()),
        );
        resp.extensions_mut().insert(self.decision(v));
        Some(resp)
    }

    fn decision(&self, v: &Verdict) -> Decision {
        Decision {
            admitted: v.refused.is_none(),
            refused_by: v.refused.as_ref().map(|r| r.name.clone()),
            dry_run: self.dry_run,
        }
    }

    /// Add the headers and the [`Decision`] to the inner service's response.
    fn finish<ResBody>(&self, v: &Verdict, resp: &mut Response<ResBody>) {
        write_headers(resp.headers_mut(), &v.numbers, self.legacy_headers);
        resp.extensions_mut().insert(self.decision(v));
    }
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for RateLimit<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let info = RequestInfo::of(&req);
        let config = self.config.clone();
        if config.exempt.as_ref().is_some_and(|f| f(&info)) {
            return Box::pin(self.inner.call(req));
        }
        let (keys, n) = (config.keys(&info), config.cost(&info));
        #[cfg(feature = "redis")]
        if config.remote {
            // Decide asynchronously, then call the service that was made ready, leaving a
            // clone in its place (the usual tower pattern).
            let clone = self.inner.clone();
            let mut inner = core::mem::replace(&mut self.inner, clone);
            return Box::pin(async move {
                let v = config.decide_async(keys, n).await;
                if let Some(resp) = config.refusal(&v) {
                    return Ok(resp);
                }
                let mut resp = inner.call(req).await?;
                config.finish(&v, &mut resp);
                Ok(resp)
            });
        }
        let v = config.decide(keys, n);
        if let Some(resp) = config.refusal(&v) {
            return Box::pin(async move { Ok(resp) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            config.finish(&v, &mut resp);
            Ok(resp)
        })
    }
}
