//! fluxrate: lock-free rate limiting with every classic algorithm, per key, with exact
//! retry-after values.
//!
//! This is the crate applications depend on. It re-exports [`fluxrate_core`]; see
//! [`RateLimiter`] to start.
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
//! // Blocking acquire with a timeout (the Python context manager).
//! let api = RateLimiter::builder("5/s".parse()?).algorithm(Algorithm::LeakyBucket).build()?;
//! api.acquire(Duration::from_secs(5))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub use fluxrate_core::*;

/// The core crate, for code that names its paths explicitly.
pub use fluxrate_core as core;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
