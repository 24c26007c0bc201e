//! fluxrate: lock-free rate limiting with every classic algorithm, per key, with exact
//! retry-after values.
//!
//! This is the crate applications depend on. It re-exports [`fluxrate_core`] (start with
//! [`RateLimiter`]), adds the [`rate_limit`] attribute, and, with the `tokio` feature, async
//! waiting (`AcquireAsync`, `AcquireKeyAsync`, `TokioClock`); with the `tower` feature, HTTP
//! middleware (`fluxrate::http::RateLimitLayer`); with the `redis` feature, limits shared
//! across processes and hosts (`fluxrate::redis::RedisRateLimiter`).
//!
//! # Example
//!
//! ```
//! use fluxrate::{Algorithm, Quota, RateLimiter};
//! use std::time::Duration;
//!
//! // Manual check.
//! let limiter = RateLimiter::builder(Quota::per_minute(100)).keyed::<String>().build()?;
//! if limiter.allow_key("user_123") {
//!     // process the request
//! }
//!
//! // Block the thread until admitted, with a timeout (in async code: `acquire(..).await`).
//! let api = RateLimiter::builder("5/s".parse()?).algorithm(Algorithm::LeakyBucket).build()?;
//! api.blocking_acquire(Duration::from_secs(5))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use fluxrate_core::*;

/// The core crate, for code that names its paths explicitly.
pub use fluxrate_core as core;

#[cfg(feature = "tokio")]
mod asynch;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use asynch::{AcquireAsync, AcquireKeyAsync, TokioClock};

#[cfg(any(feature = "tower", feature = "redis"))]
mod all_or_nothing;
#[cfg(any(feature = "tower", feature = "redis"))]
mod decided_by;
#[cfg(any(feature = "tower", feature = "redis"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tower", feature = "redis"))))]
pub use decided_by::DecidedBy;

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod http;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

/// What `#[rate_limit]` generates calls into. Named by the version, which the macro crate
/// shares: a macro and a facade of different releases fail to compile at once, naming this
/// module (see `private::tests`).
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private_0_1_0;

/// Rate-limit a function: `#[rate_limit(calls = 10, period = 60)]` puts a limit in front of its
/// body.
///
/// ```
/// use fluxrate::{rate_limit, RateLimited};
///
/// #[rate_limit(calls = 2, period = 60)]
/// fn fetch(id: u32) -> Result<String, RateLimited> {
///     Ok(format!("item {id}"))
/// }
///
/// assert!(fetch(1).is_ok());
/// assert!(fetch(2).is_ok());
/// let limited = fetch(3).unwrap_err();
/// assert!(limited.retry_after().as_secs() <= 30);
/// ```
///
/// # Arguments
///
/// | argument | meaning |
/// |---|---|
/// | `"100/minute"` | the limit as a rate string (first, instead of `calls` and `period`) |
/// | `calls = N` | calls per period (integer ≥ 1) |
/// | `period = 60`, `0.5`, `"500ms"` | the period: seconds (integer or float) or a duration string |
/// | `algorithm = "…"` | `token_bucket` (default), `leaky_bucket`, `fixed_window`, `sliding_window` (exact log), `sliding_window_counter`, `sliding_log`, `gcra` (the token bucket): the names of [`Algorithm::NAMES`] |
/// | `burst = N` | token bucket burst / leaky bucket queue (defaults to `calls`) |
/// | `key = <expr>` | a per-key limit; any expression over the arguments (or `self`), evaluated before the body |
/// | `on_limit = "error"` | (default) return `Err(From::from(RateLimited))`: the function must return `Result<T, E>` with `E: From<RateLimited>` |
/// | `on_limit = "none"` | return `None`: the function must return `Option<T>` (instead of an error) |
/// | `on_limit = "wait"` | block (or, in an `async fn` with the `tokio` feature, await) until admitted |
/// | `timeout = 5`, `"250ms"` | with `"wait"`: give up at once, consuming nothing, if the wait would be longer; the function then returns `Err(From::from(TimeoutExceeded))` |
/// | `limiter = PATH` | use a limiter you declared (a `static` [`std::sync::LazyLock`] of a [`RateLimiter`]): share one limit across functions, and reach it for [`stats`](RateLimiter::stats) and [`reset`](RateLimiter::reset) |
/// | `crate = path` | where the generated code finds this crate (default `::fluxrate`): for a crate that renames the dependency or reaches it through a re-export (`crate = my_deps::fluxrate`; a string holding the path works too) |
///
/// Every misuse is a compile error on the offending token: an unknown or duplicate option (with
/// a suggestion), a missing `calls` or `period`, zero or negative values, a bad rate or duration
/// string, an unknown algorithm, a return type that cannot carry the outcome, a `const fn`, an
/// item that is not a function, or `limiter` combined with `calls` / `period`. The limit is
/// checked while compiling with the check its builder runs at run time
/// ([`Algorithm::validate`], which allocates nothing), so a limit the attribute accepts always
/// builds. The generated code calls this crate only through a hidden module named by its
/// version: a `fluxrate-macros` of another release fails to compile at once. On error, the function is still emitted unchanged, so the
/// rest of the crate keeps type-checking.
///
/// # The limiter behind the attribute
///
/// Each function gets one limiter, a `static` built on the first call (exactly once, even when
/// first calls race on several threads). A `static` inside a generic function is one static:
/// all its monomorphizations share the limit (a key whose type depends on the generic
/// parameters gets one limiter per key type). To read statistics or reset it, declare the
/// limiter yourself and pass it with `limiter = …`:
///
/// ```
/// use fluxrate::{rate_limit, Quota, RateLimited, RateLimiter};
/// use std::sync::LazyLock;
///
/// static API: LazyLock<RateLimiter> =
///     LazyLock::new(|| RateLimiter::direct(Quota::per_second(1)).unwrap());
///
/// #[rate_limit(limiter = API)]
/// fn list() -> Result<(), RateLimited> { Ok(()) }
///
/// #[rate_limit(limiter = API)]
/// fn get() -> Result<(), RateLimited> { Ok(()) }
///
/// assert!(list().is_ok());
/// assert!(get().is_err()); // one limit for both functions
/// assert_eq!(API.stats().allowed(), 1);
/// API.reset();
/// assert!(get().is_ok());
/// ```
///
/// # Per key, on methods
///
/// ```
/// use fluxrate::{rate_limit, RateLimited};
///
/// struct User { id: u64, name: String }
/// struct Api;
///
/// impl Api {
///     #[rate_limit(calls = 1, period = 60, key = user.id)]
///     fn by_id(&self, user: &User) -> Result<u64, RateLimited> { Ok(user.id) }
///
///     // A `&str` key looks up `String` keys without allocating once the key is known.
///     #[rate_limit("1/minute", key = user.name.as_str(), on_limit = "none")]
///     fn by_name(&self, user: &User) -> Option<u64> { Some(user.id) }
/// }
///
/// let (a, b) = (User { id: 1, name: "a".into() }, User { id: 2, name: "b".into() });
/// assert!(Api.by_id(&a).is_ok() && Api.by_id(&b).is_ok() && Api.by_id(&a).is_err());
/// assert_eq!((Api.by_name(&a), Api.by_name(&a)), (Some(1), None));
/// ```
///
/// A panic in the body leaves the limiter usable; the call that panicked was already counted.
/// An `async fn` checks its limit on its first poll: a future dropped before it is polled
/// consumes nothing.
pub use fluxrate_macros::rate_limit;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
