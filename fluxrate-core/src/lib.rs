//! Lock-free rate limiting: every classic algorithm, per key, with exact retry-after values.
//!
//! `fluxrate-core` holds the algorithms and the keyed store; applications normally depend on
//! the `fluxrate` crate, which re-exports all of this together with the `#[rate_limit]`
//! attribute and the optional integrations.
//!
//! # Key types
//!
//! * [`RateLimiter`]: one type for every algorithm, direct or keyed, built by a [`Builder`]
//!   from a [`Quota`] (`"100/minute"`, [`Quota::per_second`], …).
//! * [`Algorithm`]: [`TokenBucket`] and [`LeakyBucket`] (GCRA, one `AtomicU64` per key),
//!   [`FixedWindow`], [`SlidingWindowCounter`] (one `AtomicU64` each) and the exact
//!   [`SlidingLog`]. Each is also usable on its own through [`RateAlgorithm`].
//! * [`Clock`]: [`CoarseClock`] (default: fast, precise where a tick matters),
//!   [`MonotonicClock`] (`Instant`), [`ManualClock`] (tests), [`CachedClock`] (fastest).
//! * Outcomes: [`Admitted`], [`Snapshot`]; errors: [`RateLimited`] (with `retry_after`),
//!   [`InsufficientCapacity`], [`Denied`], [`TimeoutExceeded`], [`AcquireError`],
//!   [`ConfigError`].
//!
//! # Example
//!
//! ```
//! use fluxrate_core::{Quota, RateLimiter};
//!
//! let limiter = RateLimiter::builder(Quota::per_second(10)).keyed::<String>().build()?;
//! match limiter.check_key("user_123") {
//!     Ok(ok) => println!("served, {} left", ok.remaining()),
//!     Err(limited) => println!("429, Retry-After: {}", limited.retry_after_secs()),
//! }
//! # Ok::<(), fluxrate_core::ConfigError>(())
//! ```
#![forbid(unsafe_code)]

mod algorithm;
mod clock;
mod error;
mod gcra;
mod limiter;
mod quota;
mod stats;
mod store;
pub(crate) mod sync;
mod window;

pub use algorithm::{
    Admitted, Algorithm, KeyCell, RateAlgorithm, Refusal, Snapshot, UnknownAlgorithm,
};
pub use clock::{CachedClock, Clock, CoarseClock, ManualClock, MonotonicClock};
pub use error::{
    AcquireError, ConfigError, Denied, InsufficientCapacity, RateLimited, TimeoutExceeded,
};
pub use gcra::{GcraState, LeakyBucket, TokenBucket};
pub use limiter::{Builder, NotKeyed, RateLimiter};
pub use quota::Quota;
pub use stats::{KeyStats, Stats};
pub use store::{KeyHasher, OverflowPolicy};
pub use window::counter::{SlidingWindowCounter, SlidingWindowCounterState, MAX_COUNTER_CALLS};
pub use window::fixed::{FixedWindow, FixedWindowState};
pub use window::log::{SlidingLog, SlidingLogState, MAX_LOG_CALLS};

#[doc(hidden)]
pub use sync::cas_retries_on_this_thread;
