//! Error types: configuration errors at build time, denials at check time.

use crate::algorithm::{Algorithm, KeyCell};
use core::fmt;
use std::error::Error;
use std::time::Duration;

/// A limiter configuration that fluxrate refuses to build.
///
/// Every bad parameter is reported here, at construction, instead of panicking later or silently
/// enforcing a different limit than the one asked for.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{ConfigError, Quota, RateLimiter};
/// use std::time::Duration;
///
/// let err = RateLimiter::builder(Quota::new(0, Duration::from_secs(1))).build().unwrap_err();
/// assert_eq!(err, ConfigError::ZeroCalls);
/// assert_eq!(err.to_string(), "calls per period must be at least 1");
/// assert_eq!("ten per second".parse::<Quota>().unwrap_err().to_string(),
///            "invalid rate \"ten per second\": expected a positive integer call count");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The number of calls per period is zero.
    ZeroCalls,
    /// The period is zero.
    ZeroPeriod,
    /// The burst (token bucket) is zero.
    ZeroBurst,
    /// The queue capacity (leaky bucket) is zero.
    ZeroCapacity,
    /// `max_keys` is zero.
    ZeroMaxKeys,
    /// The period does not fit in 64-bit nanoseconds (about 584 years).
    PeriodTooLong,
    /// More than one call per nanosecond: the emission interval would round to zero.
    IntervalTooSmall {
        /// The requested number of calls.
        calls: u64,
        /// The period in nanoseconds.
        period_ns: u64,
    },
    /// `burst` (or `capacity`) times the emission interval overflows 64-bit nanoseconds.
    BurstTooLarge {
        /// The requested burst.
        burst: u64,
    },
    /// The algorithm cannot represent this many calls per window.
    TooManyCalls {
        /// The algorithm that refused.
        algorithm: Algorithm,
        /// The requested number of calls.
        calls: u64,
        /// The largest number it accepts.
        max: u64,
    },
    /// A floating-point input was NaN, infinite, negative or zero.
    InvalidFloat {
        /// Which parameter it was.
        what: &'static str,
    },
    /// A rate string such as `"10/s"` could not be parsed.
    Parse {
        /// The input.
        input: String,
        /// What was expected.
        reason: &'static str,
    },
    /// A name (of an HTTP limit, a unit) that cannot be sent as a structured-field string:
    /// empty, or holding a character outside printable ASCII.
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two limits of one HTTP layer share a name, so that clients could not tell them apart.
    DuplicateName {
        /// The name.
        name: String,
    },
    /// An IP prefix length outside the range accepted for its address family.
    InvalidPrefix {
        /// `"IPv4"` or `"IPv6"`.
        family: &'static str,
        /// The requested length in bits.
        bits: u8,
        /// The shortest accepted.
        min: u8,
        /// The longest accepted.
        max: u8,
    },
    /// An address range (CIDR, such as `10.0.0.0/8`) that could not be parsed.
    InvalidNetwork {
        /// The input.
        input: String,
        /// What was expected.
        reason: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroCalls => f.write_str("calls per period must be at least 1"),
            Self::ZeroPeriod => f.write_str("period must be longer than zero"),
            Self::ZeroBurst => f.write_str("burst must be at least 1"),
            Self::ZeroCapacity => f.write_str("capacity must be at least 1"),
            Self::ZeroMaxKeys => f.write_str("max_keys must be at least 1"),
            Self::PeriodTooLong => {
                f.write_str("period does not fit in 64-bit nanoseconds (about 584 years)")
            }
            Self::IntervalTooSmall { calls, period_ns } => write!(
                f,
                "{calls} calls per {period_ns} ns is more than one call per nanosecond"
            ),
            Self::BurstTooLarge { burst } => write!(
                f,
                "burst {burst} times the emission interval overflows 64-bit nanoseconds"
            ),
            Self::TooManyCalls {
                algorithm,
                calls,
                max,
            } => {
                // In words ("sliding log"), not as the algorithm's name ("sliding_log").
                for (i, word) in algorithm.name().split('_').enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    f.write_str(word)?;
                }
                write!(f, " supports at most {max} calls per window, got {calls}")
            }
            Self::InvalidFloat { what } => {
                write!(f, "{what} must be a finite number greater than zero")
            }
            Self::Parse { input, reason } => write!(f, "invalid rate {input:?}: {reason}"),
            Self::InvalidName { name, reason } => write!(f, "invalid name {name:?}: {reason}"),
            Self::DuplicateName { name } => write!(f, "two limits are named {name:?}"),
            Self::InvalidPrefix {
                family,
                bits,
                min,
                max,
            } => write!(
                f,
                "{family} prefix length must be {min} to {max} bits, got {bits}"
            ),
            Self::InvalidNetwork { input, reason } => {
                write!(f, "invalid address range {input:?}: {reason}")
            }
        }
    }
}

impl Error for ConfigError {}

/// A request was denied for now; it may succeed after [`retry_after`](Self::retry_after).
///
/// Carries what an HTTP `429 Too Many Requests` response needs: the wait before a retry can
/// succeed (for `Retry-After`), the limit, and when the key is fully replenished.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{ManualClock, Quota, RateLimiter};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::builder(Quota::per_second(1)).clock(clock.clone()).build().unwrap();
/// assert!(limiter.check().is_ok());
/// let denied = limiter.check().unwrap_err();
/// assert_eq!(denied.retry_after(), Duration::from_secs(1));
/// assert_eq!(denied.retry_after_secs(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub(crate) at: u64,
    pub(crate) retry_after: u64,
    pub(crate) limit: u64,
    pub(crate) reset_after: u64,
    /// Which cell refused (a keyed limiter's own or shared cell, or a full store).
    pub(crate) cell: KeyCell,
}

impl RateLimited {
    /// A refusal decided by a remote backend (fluxrate's Redis limiter); times are nanoseconds
    /// on that backend's clock. Not for general use.
    #[doc(hidden)]
    pub fn from_remote(at: u64, retry_after: u64, limit: u64, reset_after: u64) -> Self {
        Self {
            at,
            retry_after,
            limit,
            reset_after,
            cell: KeyCell::Own,
        }
    }

    /// Which cell refused: the key's own, the shared overflow cell of a full keyed store, or
    /// [`KeyCell::StoreFull`] when a full store had no cell to give the key. Only an
    /// [`Own`](KeyCell::Own) refusal's numbers are the key's own limit.
    pub fn key_cell(&self) -> KeyCell {
        self.cell
    }

    /// How long to wait before the same request can succeed (if nothing else consumes first).
    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after)
    }

    /// [`retry_after`](Self::retry_after) in whole seconds, rounded up and never zero: the
    /// value for an HTTP `Retry-After` header.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.div_ceil(1_000_000_000).max(1)
    }

    /// The limit: the burst or number of calls per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// How long until the key is back to a fresh, fully available state.
    pub fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset_after)
    }

    /// The limiter time (nanoseconds since its clock's epoch) at which the decision was made.
    pub fn decided_at(&self) -> u64 {
        self.at
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited, retry after {:?}", self.retry_after())
    }
}

impl Error for RateLimited {}

/// A weighted request asked for more than the limit can ever grant at once.
///
/// Returned at once: waiting would never help.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Denied, Quota, RateLimiter};
///
/// let limiter = RateLimiter::builder(Quota::per_second(5)).build().unwrap();
/// match limiter.check_n(6) {
///     Err(Denied::Never(e)) => assert_eq!((e.requested(), e.capacity()), (6, 5)),
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsufficientCapacity {
    pub(crate) requested: u64,
    pub(crate) capacity: u64,
}

impl InsufficientCapacity {
    /// A request of `requested` against a limit of `capacity` (`requested > capacity`).
    pub fn new(requested: u64, capacity: u64) -> Self {
        Self {
            requested,
            capacity,
        }
    }

    /// The weight that was requested.
    pub fn requested(&self) -> u64 {
        self.requested
    }

    /// The largest weight a single request can ever be granted.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// A unit request refused as over capacity, which cannot happen (every capacity is at
    /// least 1): panics. For the unit forms of the API (`blocking_wait`, `blocking_wait_key`,
    /// their async counterparts), here and in `fluxrate`.
    #[doc(hidden)]
    pub fn unit(self) -> ! {
        ruled_out("unit request refused as over capacity", &self)
    }
}

/// The one panic for a refusal that the request itself rules out: a unit request over capacity,
/// or an unbounded wait timed out.
#[cold]
#[inline(never)]
fn ruled_out(what: &str, e: &dyn fmt::Display) -> ! {
    unreachable!("{what}: {e}")
}

impl fmt::Display for InsufficientCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request of {} exceeds the capacity of {} and can never succeed",
            self.requested, self.capacity
        )
    }
}

impl Error for InsufficientCapacity {}

/// Why a weighted check ([`check_n`](crate::RateLimiter::check_n)) was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Not now; retry later.
    Limited(RateLimited),
    /// Never: the weight is larger than the capacity.
    Never(InsufficientCapacity),
}

impl Denied {
    /// The wait before a retry can succeed, or `None` if it never can.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Limited(l) => Some(l.retry_after()),
            Self::Never(_) => None,
        }
    }

    /// The refusal of a unit request, which can only be [`Limited`](Self::Limited): for the
    /// unit forms of the API (`check`, `check_key`).
    #[doc(hidden)]
    #[inline]
    pub fn unit(self) -> RateLimited {
        match self {
            Self::Limited(l) => l,
            Self::Never(e) => e.unit(),
        }
    }
}

impl Denied {
    /// The refusal, marked as decided in `cell`.
    #[inline]
    pub(crate) fn in_cell(self, cell: KeyCell) -> Self {
        match self {
            Self::Limited(l) => Self::Limited(RateLimited { cell, ..l }),
            never => never,
        }
    }
}

impl From<RateLimited> for Denied {
    fn from(e: RateLimited) -> Self {
        Self::Limited(e)
    }
}

impl From<InsufficientCapacity> for Denied {
    fn from(e: InsufficientCapacity) -> Self {
        Self::Never(e)
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Limited(e) => e.fmt(f),
            Self::Never(e) => e.fmt(f),
        }
    }
}

/// Transparent, like `Display`: the inner error's own source, never the inner error itself
/// (an error-chain printer would show its message twice).
impl Error for Denied {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Limited(e) => e.source(),
            Self::Never(e) => e.source(),
        }
    }
}

/// A blocking acquire could not be granted within its timeout.
///
/// Returned at once, without consuming anything, when the limiter can tell that the wait would
/// exceed the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutExceeded {
    pub(crate) timeout: Duration,
    pub(crate) retry_after: u64,
}

impl TimeoutExceeded {
    /// A timeout of `timeout` that would have needed a wait of `retry_after` (for waiting
    /// front-ends built outside this crate, such as the async ones of `fluxrate`).
    pub fn new(timeout: Duration, retry_after: Duration) -> Self {
        Self {
            timeout,
            retry_after: crate::clock::nanos_saturating(retry_after),
        }
    }

    /// The timeout that could not be met.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long the request would have had to wait.
    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after)
    }
}

impl fmt::Display for TimeoutExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limit not available within {:?} (would wait {:?})",
            self.timeout,
            self.retry_after()
        )
    }
}

impl Error for TimeoutExceeded {}

/// Why a blocking [`acquire`](crate::RateLimiter::blocking_acquire) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcquireError {
    /// The wait would exceed the timeout; nothing was consumed.
    Timeout(TimeoutExceeded),
    /// The weight is larger than the capacity; no wait could help.
    Never(InsufficientCapacity),
}

impl AcquireError {
    /// The refusal of a unit request, which can only be a [`Timeout`](Self::Timeout): for the
    /// unit forms of the API (`blocking_acquire`, `blocking_acquire_key`, their async
    /// counterparts).
    #[doc(hidden)]
    #[inline]
    pub fn unit(self) -> TimeoutExceeded {
        match self {
            Self::Timeout(t) => t,
            Self::Never(e) => e.unit(),
        }
    }

    /// The refusal of a wait without a timeout, which can only be [`Never`](Self::Never): for
    /// the `*wait*` forms of the API.
    #[doc(hidden)]
    #[inline]
    pub fn unbounded(self) -> InsufficientCapacity {
        match self {
            Self::Never(e) => e,
            Self::Timeout(t) => ruled_out("an unbounded wait timed out", &t),
        }
    }
}

impl From<TimeoutExceeded> for AcquireError {
    fn from(e: TimeoutExceeded) -> Self {
        Self::Timeout(e)
    }
}

impl From<InsufficientCapacity> for AcquireError {
    fn from(e: InsufficientCapacity) -> Self {
        Self::Never(e)
    }
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(e) => e.fmt(f),
            Self::Never(e) => e.fmt(f),
        }
    }
}

/// Transparent, like `Display` (see [`Denied`]'s).
impl Error for AcquireError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Timeout(e) => e.source(),
            Self::Never(e) => e.source(),
        }
    }
}
