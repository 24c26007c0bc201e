//! The interface every algorithm implements, and the values a decision returns.
//!
//! An algorithm is split in two: its parameters (the type implementing [`RateAlgorithm`], shared
//! by all keys) and its per-key state ([`RateAlgorithm::State`], a few atomics). Decisions take the
//! time as an argument, so a state can be used on its own, in a keyed store, or in a loom model.

use core::fmt;
use core::str::FromStr;
use std::time::Duration;

/// Which algorithm a [`RateLimiter`](crate::RateLimiter) runs.
///
/// Parses from `"token_bucket"`, `"leaky_bucket"`, `"fixed_window"`, `"sliding_window_counter"`
/// and `"sliding_log"`; `"sliding_window"` (the exact window) is the sliding log.
///
/// # Examples
///
/// ```
/// use fluxrate_core::Algorithm;
///
/// assert_eq!("sliding_window".parse::<Algorithm>().unwrap(), Algorithm::SlidingLog);
/// assert!("token-bucket".parse::<Algorithm>().is_ok());
/// assert!("tokenbucket".parse::<Algorithm>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// GCRA token bucket: `burst` at once, refilled at `calls / period`. The default.
    #[default]
    TokenBucket,
    /// GCRA used as a shaper: admitted requests get a delay so output is one per interval.
    LeakyBucket,
    /// A counter per aligned window of length `period`.
    FixedWindow,
    /// Two-window weighted estimate: O(1) memory, approximate.
    SlidingWindowCounter,
    /// Exact sliding window over the last `calls` admission times.
    SlidingLog,
}

impl Algorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::TokenBucket,
        Algorithm::LeakyBucket,
        Algorithm::FixedWindow,
        Algorithm::SlidingWindowCounter,
        Algorithm::SlidingLog,
    ];

    /// Every name [`from_str`](FromStr::from_str) accepts (after trimming, lower-casing and
    /// `-` → `_`), with the algorithm it names: each algorithm's [`name`](Self::name), then
    /// the aliases `sliding_window` (the exact window: the sliding log) and `gcra`. The one list
    /// of names: the parser, its error message and the `#[rate_limit]` attribute's checks all
    /// read it.
    ///
    /// ```
    /// use fluxrate_core::Algorithm;
    ///
    /// for (name, algorithm) in Algorithm::NAMES {
    ///     assert_eq!(name.parse::<Algorithm>(), Ok(algorithm));
    /// }
    /// // Every algorithm's own name is in the list.
    /// for a in Algorithm::ALL {
    ///     assert!(Algorithm::NAMES.contains(&(a.name(), a)));
    /// }
    /// ```
    pub const NAMES: [(&'static str, Algorithm); 7] = [
        ("token_bucket", Algorithm::TokenBucket),
        ("leaky_bucket", Algorithm::LeakyBucket),
        ("fixed_window", Algorithm::FixedWindow),
        ("sliding_window", Algorithm::SlidingLog),
        ("sliding_window_counter", Algorithm::SlidingWindowCounter),
        ("sliding_log", Algorithm::SlidingLog),
        ("gcra", Algorithm::TokenBucket),
    ];

    /// The canonical snake_case name (`"token_bucket"`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::TokenBucket => "token_bucket",
            Self::LeakyBucket => "leaky_bucket",
            Self::FixedWindow => "fixed_window",
            Self::SlidingWindowCounter => "sliding_window_counter",
            Self::SlidingLog => "sliding_log",
        }
    }

    /// Check `quota` as this algorithm's limiter would, without building one: the same
    /// [`ConfigError`](crate::ConfigError) as [`Builder::build`](crate::Builder::build), and no
    /// allocation (a 2^20-call sliding log is checked, not allocated).
    ///
    /// # Examples
    ///
    /// ```
    /// use fluxrate_core::{Algorithm, ConfigError, Quota};
    ///
    /// assert!(Algorithm::SlidingLog.validate(&Quota::per_second(1 << 20)).is_ok());
    /// assert_eq!(
    ///     Algorithm::TokenBucket.validate(&Quota::per_second(10).with_burst(0)),
    ///     Err(ConfigError::ZeroBurst)
    /// );
    /// ```
    pub fn validate(self, quota: &crate::Quota) -> Result<(), crate::ConfigError> {
        use crate::{FixedWindow, LeakyBucket, SlidingLog, SlidingWindowCounter, TokenBucket};
        // Each algorithm's parameters are a few integers: building them allocates nothing.
        match self {
            Self::TokenBucket => TokenBucket::new(quota).map(drop),
            Self::LeakyBucket => LeakyBucket::new(quota).map(drop),
            Self::FixedWindow => FixedWindow::new(quota).map(drop),
            Self::SlidingWindowCounter => SlidingWindowCounter::new(quota).map(drop),
            Self::SlidingLog => SlidingLog::new(quota).map(drop),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an [`Algorithm`] name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAlgorithm(String);

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown algorithm {:?}, expected one of ", self.0)?;
        for (i, (name, _)) in Algorithm::NAMES.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == norm)
            .map(|&(_, algorithm)| algorithm)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// Which cell of a keyed limiter decided a request: the key's own, the shared overflow cell,
/// or none because the store was full of live keys.
///
/// A direct (unkeyed) limiter's decisions are always [`Own`](Self::Own), and so are a remote
/// backend's own (fluxrate's Redis limiter); its local fallback is a keyed limiter, whose
/// answers may say [`Shared`](Self::Shared).
///
/// ```
/// use fluxrate_core::{KeyCell, ManualClock, OverflowPolicy, Quota, RateLimiter};
///
/// let limiter = RateLimiter::builder(Quota::per_minute(5))
///     .clock(ManualClock::new())
///     .keyed::<u64>()
///     .max_keys(1)
///     .overflow(OverflowPolicy::Shared)
///     .build()?;
/// assert_eq!(limiter.check_key(&1).unwrap().key_cell(), KeyCell::Own);
/// // The store holds one live key: key 2 is decided by the shared cell.
/// let shared = limiter.check_key(&2).unwrap();
/// assert_eq!(shared.key_cell(), KeyCell::Shared);
/// assert!(limiter.cancel_key(&2, &shared)); // given back to the shared cell
/// # Ok::<(), fluxrate_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KeyCell {
    /// The key's own cell.
    #[default]
    Own,
    /// The shared overflow cell ([`OverflowPolicy::Shared`](crate::OverflowPolicy::Shared)):
    /// the store was full of live keys and the key had no cell of its own. Its numbers are
    /// the shared cell's, for every key that overflowed.
    Shared,
    /// No cell: the store was full of live keys and refused the new key
    /// ([`OverflowPolicy::Reject`](crate::OverflowPolicy::Reject)). Only refusals say this;
    /// their `retry_after` is when a held key can go idle, not the key's own limit.
    StoreFull,
}

/// An admitted request: what was granted and the state it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub(crate) at: u64,
    pub(crate) delay: u64,
    pub(crate) remaining: u64,
    pub(crate) limit: u64,
    pub(crate) reset_after: u64,
    /// The weight granted.
    pub(crate) weight: u64,
    /// GCRA: the TAT this admission left (what a cancellation compares against); 0 otherwise.
    pub(crate) tat_after: u64,
    /// Which cell decided (a keyed limiter's own or shared cell).
    pub(crate) cell: KeyCell,
}

impl Admitted {
    /// An admission decided by a remote backend (fluxrate's Redis limiter); times are
    /// nanoseconds on that backend's clock. Not for general use.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn from_remote(
        at: u64,
        delay: u64,
        remaining: u64,
        limit: u64,
        reset_after: u64,
        weight: u64,
        tat_after: u64,
    ) -> Self {
        Self {
            at,
            delay,
            remaining,
            limit,
            reset_after,
            weight,
            tat_after,
            cell: KeyCell::Own,
        }
    }

    /// The state this admission left (the TAT of the token and leaky buckets, 0 otherwise),
    /// as a remote backend needs it to give the admission back. Not for general use.
    #[doc(hidden)]
    pub fn tat_after(&self) -> u64 {
        self.tat_after
    }

    /// Which cell admitted the request: the key's own, or the shared overflow cell of a full
    /// keyed store. [`cancel_key`](crate::RateLimiter::cancel_key) gives it back to that cell.
    pub fn key_cell(&self) -> KeyCell {
        self.cell
    }

    /// How long the caller must wait before acting: zero for immediate admission; the queue
    /// delay for the leaky bucket and for reservations made by a blocking acquire. A blocking
    /// acquire has already waited it when it returns.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay)
    }

    /// How many more unit requests would be admitted right now.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The limit: burst (token bucket), queue capacity (leaky bucket), or calls per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// How long until the key is back to a fresh, fully available state.
    pub fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset_after)
    }

    /// The limiter time (ns since its clock's epoch) the admission counts at: the decision time,
    /// or the departure slot for delayed admissions.
    pub fn admitted_at(&self) -> u64 {
        self.at
    }

    /// The weight granted.
    pub fn weight(&self) -> u64 {
        self.weight
    }
}

/// A side-effect-free view of one key's state.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{ManualClock, Quota, RateLimiter};
/// use std::time::Duration;
///
/// let limiter = RateLimiter::builder(Quota::per_second(10))
///     .clock(ManualClock::new())
///     .build()
///     .unwrap();
/// limiter.check_n(4).unwrap();
/// let s = limiter.peek();
/// assert_eq!((s.remaining(), s.limit()), (6, 10));
/// assert_eq!(s.retry_after(), Duration::ZERO);
/// assert_eq!(s.reset_after(), Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub(crate) at: u64,
    pub(crate) remaining: u64,
    pub(crate) limit: u64,
    pub(crate) retry_after: u64,
    pub(crate) reset_after: u64,
    /// The effective window in ns; `None` from a backend that does not report it.
    pub(crate) window: Option<u64>,
}

impl Snapshot {
    /// A snapshot taken by a remote backend (fluxrate's Redis limiter); times are nanoseconds
    /// on that backend's clock. Not for general use.
    #[doc(hidden)]
    pub fn from_remote(
        at: u64,
        remaining: u64,
        limit: u64,
        retry_after: u64,
        reset_after: u64,
    ) -> Self {
        Self {
            at,
            remaining,
            limit,
            retry_after,
            reset_after,
            window: None,
        }
    }

    /// How many unit requests would be admitted right now.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// How much of the limit is in use (`limit − remaining`).
    pub fn used(&self) -> u64 {
        self.limit.saturating_sub(self.remaining)
    }

    /// The limit: burst, queue capacity, or calls per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// How long until a unit request would be admitted (zero if it would be now).
    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after)
    }

    /// How long until the key is back to a fresh, fully available state.
    pub fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset_after)
    }

    /// The effective window of [`remaining`](Self::remaining): how long from the snapshot the
    /// key admits no more than `remaining` unit requests, however they are spread. It is the
    /// time at which one unit beyond `remaining` would be admitted if all of `remaining` were
    /// used at once now (exact, in ns); the `t` of draft-ietf-httpapi-ratelimit-headers-11.
    /// With `remaining() == 0` it equals [`retry_after`](Self::retry_after), except for a
    /// sliding-window-counter reader whose clock is more than two windows behind the key's
    /// state: it may be admitted once it is two windows behind, depending on the counts, so the
    /// window is that time (a lower bound) while `retry_after` is the latest window's start.
    ///
    /// Per algorithm: the token and leaky buckets, the time until the next emission (one
    /// interval `T` when the bucket is full or empty, since using everything makes it empty);
    /// the fixed window, the end of the current window; the sliding log, when the oldest entry
    /// in the window leaves (one period if the log is empty); the sliding window counter, when
    /// the previous window's weight has decayed by one unit after `remaining` more are counted.
    ///
    /// `None` only for snapshots taken by a remote backend that does not report it.
    ///
    /// # Examples
    ///
    /// ```
    /// use fluxrate_core::{ManualClock, Quota, RateLimiter};
    /// use std::time::Duration;
    ///
    /// // 3 per minute: one token every 20 s.
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::builder(Quota::per_minute(3)).clock(clock.clone()).build().unwrap();
    /// limiter.check().unwrap();
    /// clock.advance(Duration::from_secs(5));
    /// let s = limiter.peek();
    /// // 2 left; using both now, the next token comes 15 s from now.
    /// assert_eq!((s.remaining(), s.effective_window()), (2, Some(Duration::from_secs(15))));
    /// ```
    pub fn effective_window(&self) -> Option<Duration> {
        self.window.map(Duration::from_nanos)
    }

    /// The limiter time (ns since its clock's epoch) of the snapshot.
    pub fn taken_at(&self) -> u64 {
        self.at
    }
}

/// Why an algorithm refused a request, before the limiter adds its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not now: the request would be admitted after `retry_after` ns if nothing else came.
    Limited {
        /// Nanoseconds until the same request can succeed.
        retry_after: u64,
        /// Nanoseconds until the state is fresh again.
        reset_after: u64,
    },
    /// Never: `n` exceeds the capacity.
    Never,
}

impl Refusal {
    /// The same refusal seen `d` ns earlier: its waits longer by `d` (saturating).
    pub(crate) fn later_by(self, d: u64) -> Self {
        match self {
            Refusal::Limited {
                retry_after,
                reset_after,
            } => Refusal::Limited {
                retry_after: retry_after.saturating_add(d),
                reset_after: reset_after.saturating_add(d),
            },
            Refusal::Never => Refusal::Never,
        }
    }
}

/// A rate-limiting algorithm: its parameters, operating on a per-key [`State`](Self::State).
///
/// All operations take the current time `now` in nanoseconds. A refused request never changes
/// the state. Implementations are lock-free: each decision is one CAS loop on the state's atomics.
pub trait RateAlgorithm: Send + Sync + 'static {
    /// The per-key state: a handful of atomics.
    type State: Send + Sync;

    /// A fresh state: fully available.
    fn new_state(&self) -> Self::State;

    /// The largest weight a single request can be granted.
    fn capacity(&self) -> u64;

    /// Decide a request of weight `n` at `now`, and record it if admitted.
    fn check(&self, state: &Self::State, now: u64, n: u64) -> Result<Admitted, Refusal>;

    /// Like [`check`](Self::check), but may admit with a delay of at most `max_wait` ns by
    /// reserving a future slot (FIFO). Algorithms that cannot reserve just check.
    fn reserve(
        &self,
        state: &Self::State,
        now: u64,
        n: u64,
        max_wait: u64,
    ) -> Result<Admitted, Refusal> {
        let _ = max_wait;
        self.check(state, now, n)
    }

    /// Decide like [`check`](Self::check), answering only yes or no: the same decision and the
    /// same state change, without computing the metadata (remaining, reset, retry-after).
    #[inline]
    fn allow(&self, state: &Self::State, now: u64, n: u64) -> bool {
        self.check(state, now, n).is_ok()
    }

    /// Give back an admission that will not be used (a reservation whose waiter went away).
    ///
    /// Only the GCRA algorithms can, and only if nothing was admitted after it (its TAT is still
    /// the one it left): later admissions were placed after it and cannot move. Returns whether
    /// the capacity was given back. The default (window algorithms) gives nothing back.
    fn cancel(&self, state: &Self::State, admitted: &Admitted) -> bool {
        let _ = (state, admitted);
        false
    }

    /// Observe the state at `now` without changing it.
    fn peek(&self, state: &Self::State, now: u64) -> Snapshot;

    /// Return the state to fresh.
    fn reset(&self, state: &Self::State);

    /// The time from which the state is indistinguishable from a fresh one (≤ `now` means it
    /// may be dropped without changing any future decision).
    fn idle_at(&self, state: &Self::State, now: u64) -> u64;
}
