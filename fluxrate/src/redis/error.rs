//! The module's errors: a limiter not built, a request not sent, a request not admitted, a
//! call to Redis that failed.

use crate::{ConfigError, InsufficientCapacity, RateLimited, TimeoutExceeded};
use core::fmt;
use std::error::Error;
use std::time::Duration;

/// Why a [`RedisRateLimiter`](super::RedisRateLimiter) was not built.
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

/// Transparent for [`Quota`](Self::Quota), like `Display`: the quota error's own source, never
/// the quota error itself (an error-chain printer would show its message twice).
impl Error for RedisConfigError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Quota(e) => e.source(),
            _ => None,
        }
    }
}

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

impl Error for InvalidInput {}

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
    /// Redis could not decide and the policy is
    /// [`FailurePolicy::FailClosed`](super::FailurePolicy::FailClosed) (for decisions), or any
    /// failure (for `peek`, `reset`, `cancel`).
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

/// Transparent, like `Display`: the inner error's own source, never the inner error itself (an
/// error-chain printer would show its message twice).
impl Error for RedisDenied {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Limited(e) => e.source(),
            Self::Never(e) => e.source(),
            Self::Timeout(e) => e.source(),
            Self::Unavailable(e) => e.source(),
            Self::Invalid(e) => e.source(),
        }
    }
}

/// How a call to Redis failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureClass {
    /// The script certainly did not run: the connection was refused, or the server answered
    /// with an error (`NOSCRIPT` twice, `OOM`, `READONLY`, `LOADING`, `BUSY`, a redirection after
    /// [`MAX_REDIRECTS`](super::MAX_REDIRECTS) followed, `TRYAGAIN` when the budget leaves no
    /// room to wait, …).
    NotExecuted,
    /// It may or may not have run: the time budget ran out, or the connection broke, after the
    /// request could have been sent. Never retried automatically: a retry could count the
    /// request twice.
    Indeterminate,
    /// Nothing was sent: the circuit breaker is open after repeated failures.
    CircuitOpen,
}

/// A failed call to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub(crate) class: FailureClass,
    pub(crate) retry_after: Duration,
    pub(crate) cause: String,
}

impl Unavailable {
    /// How it failed.
    pub fn class(&self) -> FailureClass {
        self.class
    }

    /// When trying again is worthwhile (the breaker's open time, or its remainder).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The underlying error, as text.
    pub fn cause(&self) -> &str {
        &self.cause
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = match self.class {
            FailureClass::NotExecuted => "not executed",
            FailureClass::Indeterminate => "indeterminate",
            FailureClass::CircuitOpen => "circuit open",
        };
        write!(f, "redis unavailable ({class}): {}", self.cause)
    }
}

impl Error for Unavailable {}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error and its `source()` chain, each `Display` once, as an error-chain printer shows
    /// it; asserts that no message repeats one printed before it.
    fn chain_once(e: &dyn Error) -> Vec<String> {
        let mut chain = vec![e.to_string()];
        let mut next = e.source();
        while let Some(s) = next {
            chain.push(s.to_string());
            next = s.source();
        }
        for (i, m) in chain.iter().enumerate() {
            for earlier in &chain[..i] {
                assert!(
                    !earlier.contains(m.as_str()),
                    "{m:?} printed twice in {chain:?}"
                );
            }
        }
        chain
    }

    /// `RedisDenied` and `RedisConfigError::Quota` are transparent, as the core's wrappers are:
    /// the inner error's `Display`, and its source (none), so each message shows once.
    #[test]
    fn error_chains_show_each_message_once() {
        let unavailable = Unavailable {
            class: FailureClass::Indeterminate,
            retry_after: Duration::from_millis(5),
            cause: "connection reset".into(),
        };
        let invalid = InvalidInput::KeyTooLong { len: 300, max: 256 };
        let inner: [(RedisDenied, &dyn Error); 5] = [
            (
                RedisDenied::Limited(RateLimited::from_remote(1, 2, 3, 4)),
                &RateLimited::from_remote(1, 2, 3, 4),
            ),
            (
                RedisDenied::Never(InsufficientCapacity::new(6, 5)),
                &InsufficientCapacity::new(6, 5),
            ),
            (
                RedisDenied::Timeout(TimeoutExceeded::new(Duration::ZERO, Duration::from_secs(1))),
                &TimeoutExceeded::new(Duration::ZERO, Duration::from_secs(1)),
            ),
            (RedisDenied::Unavailable(unavailable.clone()), &unavailable),
            (RedisDenied::Invalid(invalid.clone()), &invalid),
        ];
        for (e, inner) in &inner {
            assert_eq!(chain_once(e), [inner.to_string()], "{e:?}");
            chain_once(*inner);
        }
        let quota = RedisConfigError::Quota(ConfigError::ZeroCalls);
        assert_eq!(chain_once(&quota), [ConfigError::ZeroCalls.to_string()]);
        chain_once(&RedisConfigError::ZeroTimeout);
    }
}
