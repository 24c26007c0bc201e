//! [`RateLimiter`]: one type for every algorithm, direct or keyed. Here: the type itself,
//! [`NotKeyed`], and what every limiter shares (accessors, stats, the public form of an
//! algorithm's answer).
//!
//! The rest, one concept per file: `engine` (parameters beside cells, `dispatch!`), `builder`,
//! `direct` and `keyed` (the two APIs), `acquire` (the blocking wait loop).

mod acquire;
mod builder;
mod direct;
mod engine;
mod keyed;

pub use builder::Builder;

use crate::algorithm::{Admitted, Algorithm, KeyCell, RateAlgorithm, Refusal};
use crate::clock::{Clock, CoarseClock};
use crate::error::{Denied, InsufficientCapacity, RateLimited};
use crate::quota::Quota;
use crate::stats::{Counters, Stats};
use crate::store::{KeyHasher, OverflowPolicy};
use core::fmt;

use engine::{dispatch, Attempt, Engine};

/// The key type of a direct (un-keyed) limiter: one state for all callers.
///
/// The direct methods (`check`, …) exist only on `RateLimiter<NotKeyed, …>`, the keyed ones
/// (`check_key`, `sweep`, `reset_all`, …) and the keyed builder options (`max_keys`,
/// `overflow`, `per_key_stats`, `hasher`) only for key types that hash, which `NotKeyed` does
/// not: a direct limiter cannot call them at all.
///
/// ```compile_fail
/// let direct = fluxrate_core::RateLimiter::direct("10/s".parse().unwrap()).unwrap();
/// direct.sweep(); // no keyed store to sweep
/// ```
///
/// ```compile_fail
/// let direct = fluxrate_core::RateLimiter::direct("10/s".parse().unwrap()).unwrap();
/// direct.reset_all();
/// ```
///
/// ```compile_fail
/// use fluxrate_core::{Quota, RateLimiter};
/// let _ = RateLimiter::builder(Quota::per_second(1)).max_keys(10).build();
/// ```
///
/// ```compile_fail
/// use fluxrate_core::{OverflowPolicy, Quota, RateLimiter};
/// let _ = RateLimiter::builder(Quota::per_second(1)).overflow(OverflowPolicy::Shared).build();
/// ```
///
/// ```compile_fail
/// use fluxrate_core::{Quota, RateLimiter};
/// let _ = RateLimiter::builder(Quota::per_second(1)).per_key_stats(true).build();
/// ```
///
/// ```compile_fail
/// use fluxrate_core::{KeyHasher, Quota, RateLimiter};
/// let _ = RateLimiter::builder(Quota::per_second(1)).hasher(KeyHasher::new()).build();
/// ```
///
/// ```compile_fail
/// use fluxrate_core::{NotKeyed, Quota, RateLimiter};
/// let _ = RateLimiter::builder(Quota::per_second(1)).keyed::<NotKeyed>().build();
/// ```
///
/// The same options after [`keyed`](crate::Builder::keyed) build a keyed limiter:
///
/// ```
/// use fluxrate_core::{KeyHasher, OverflowPolicy, Quota, RateLimiter};
/// let keyed = RateLimiter::builder(Quota::per_second(1))
///     .keyed::<u64>()
///     .max_keys(10)
///     .overflow(OverflowPolicy::Shared)
///     .per_key_stats(true)
///     .hasher(KeyHasher::new())
///     .build()
///     .unwrap();
/// assert_eq!(keyed.sweep(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotKeyed(());

/// A rate limiter: any algorithm, direct or keyed, with a pluggable clock.
///
/// * `K` is the key type, or [`NotKeyed`] for one limit shared by all callers.
/// * `C` is the [`Clock`]: [`CoarseClock`] by default (fast, and precise where a tick would
///   matter), [`MonotonicClock`](crate::MonotonicClock) for `Instant` on every decision,
///   [`ManualClock`](crate::ManualClock) in tests, [`CachedClock`](crate::CachedClock) when
///   every nanosecond counts.
/// * `H` is the hasher of the keyed store.
///
/// Every check reads the clock once (outside any lock; a refusal near its retry time on a
/// lagging clock reads the precise clock once more) and runs one CAS loop on the key's
/// atomic state; a keyed check also takes the shard read guard of its key. A refused request
/// changes nothing. The limiter is `Send + Sync`; share it by reference or in an `Arc`.
///
/// Three ways to use it: [`allow`](Self::allow) / [`check`](Self::check) (manual guard),
/// [`blocking_acquire`](Self::blocking_acquire) (block the thread until admitted, with a
/// timeout; the `fluxrate` crate adds `acquire(..).await` for tokio), and the `#[rate_limit]`
/// attribute of the `fluxrate` crate.
///
/// # Naming
///
/// `verb[_key][_n]`: `_key` takes a key (keyed limiters only), `_n` a weight. `allow*` answers
/// yes or no, `check*` admits or says when to retry, `reserve*` admits now or at a later slot
/// without waiting, `peek*` looks, `cancel*` gives back. A method that sleeps the thread says so
/// with `blocking_` (`blocking_acquire*` with a timeout, `blocking_wait*` without); the plain
/// `acquire*` / `wait*` are the async ones (`fluxrate::AcquireAsync`).
///
/// # Memory ordering
///
/// What you may rely on: decisions on one key (or on a direct limiter) are linearizable. Each
/// takes effect at one instant between its call and its return, every thread sees them in that
/// one order, and no interleaving admits more than a single thread calling one at a time would
/// (with the same clock readings). A refusal writes nothing.
///
/// Precisely: a key's state is one atomic word (the sliding log: one per slot) that an
/// admission changes only by a successful compare-and-swap with `AcqRel` ordering (`reset` is a
/// `Release` store), and that every decision reads with `Acquire`, so an admission
/// happens-before every decision that sees its effect; a refusal is an `Acquire` load. Two keys are independent: nothing orders decisions on different keys. The two
/// protocols that span more than one location (the sliding window counter's `latest` window
/// and the keyed store's sweep floor) are documented on
/// [`SlidingWindowCounter`](crate::SlidingWindowCounter) and in `ARCHITECTURE.md`.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Algorithm, ManualClock, Quota, RateLimiter};
/// use std::time::Duration;
///
/// // Direct: one limit.
/// let limiter = RateLimiter::builder(Quota::per_second(2)).build().unwrap();
/// assert!(limiter.allow());
///
/// // Keyed: one limit per user, an exact sliding window, a manual clock.
/// let clock = ManualClock::new();
/// let per_user = RateLimiter::builder(Quota::per_minute(2))
///     .algorithm(Algorithm::SlidingLog)
///     .clock(clock.clone())
///     .keyed::<String>()
///     .build()
///     .unwrap();
/// assert!(per_user.allow_key("alice")); // &str lookups, no allocation for known keys
/// assert!(per_user.allow_key("alice"));
/// let denied = per_user.check_key("alice").unwrap_err();
/// assert_eq!(denied.retry_after(), Duration::from_secs(60));
/// assert!(per_user.allow_key("bob"));
/// clock.advance(Duration::from_secs(60));
/// assert!(per_user.allow_key("alice"));
/// ```
pub struct RateLimiter<K = NotKeyed, C = CoarseClock, H = KeyHasher> {
    engine: Engine<K, H>,
    clock: C,
    /// Limiter-wide counters; `None` when built with `.stats(false)`.
    counters: Option<Counters>,
    /// Whether every decision reads [`Clock::now_precise`]: the clock lags, and the lag would
    /// loosen the limit by more than one request and 1 % of its capacity (always for the
    /// window algorithms; `builder::loosened_by_lag`).
    precise: bool,
    quota: Quota,
    algorithm: Algorithm,
    overflow: OverflowPolicy,
}

impl<K, C, H> fmt::Debug for RateLimiter<K, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("quota", &self.quota)
            .field("algorithm", &self.algorithm)
            .field("precise_clock", &self.precise)
            .finish_non_exhaustive()
    }
}

impl<K, C: Clock, H> RateLimiter<K, C, H> {
    /// The quota the limiter was built with.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// The algorithm the limiter runs.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The limiter's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The largest weight one request can be granted (burst, queue capacity, or calls).
    pub fn capacity(&self) -> u64 {
        dispatch!(&self.engine, |alg, _cells| alg.capacity())
    }

    /// Limiter-wide statistics.
    pub fn stats(&self) -> Stats {
        let (allowed, rejected) = self.counters.as_ref().map_or((0, 0), Counters::totals);
        let store = dispatch!(&self.engine, |_alg, cells| cells
            .keyed
            .as_ref()
            .map(|k| k.summary()));
        let (keys, sweeps, evicted) = store.map_or((0, 0, 0), |s| (s.keys, s.sweeps, s.evicted));
        Stats {
            allowed,
            rejected,
            keys,
            sweeps,
            evicted,
            counted: self.counters.is_some(),
        }
    }

    /// Zero the limiter-wide counters (not the limits).
    pub fn reset_stats(&self) {
        if let Some(c) = &self.counters {
            c.clear();
        }
    }

    /// The reading a decision is taken at: the clock's [`now`](Clock::now), or its precise
    /// reading when the lag would loosen the limit too much (`precise`).
    #[inline(always)]
    fn now(&self) -> u64 {
        if self.clock.lag() > 0 && self.precise {
            self.clock.now_precise()
        } else {
            self.clock.now()
        }
    }

    /// The lag within which a refusal is decided again on the precise clock: the clock's, or 0
    /// when it has none or every reading is precise.
    #[inline(always)]
    fn refine_lag(&self) -> u64 {
        let lag = self.clock.lag();
        if lag > 0 && !self.precise {
            lag
        } else {
            0
        }
    }

    /// Whether a precise reading could turn a refusal that said `wait` into an admission:
    /// `wait` is within the lag. (A reservation decided again keeps its deadline, the reading
    /// plus `max_wait`, and a later reading never moves a departure earlier: only a refusal
    /// whose own wait the lag could cover can turn.)
    #[inline(always)]
    fn refines(&self, wait: u64) -> bool {
        let lag = self.refine_lag();
        lag > 0 && wait <= lag
    }

    /// `attempt` at `now`; a refusal that a precise reading could turn is decided again at the
    /// precise reading ([`refined`](Self::refined)).
    #[inline(always)]
    fn attempt_at(&self, now: u64, attempt: impl Fn(u64) -> Attempt) -> Attempt {
        match attempt(now) {
            Err(Refusal::Limited { retry_after, .. }) if self.refines(retry_after) => {
                self.refined(now, attempt)
            }
            r => r,
        }
    }

    /// `attempt` at the precise reading, its refusal's waits made relative to `now` (the reading
    /// the answer reports it was taken at), so that the instant they name stays exact.
    #[cold]
    #[inline(never)]
    fn refined(&self, now: u64, attempt: impl Fn(u64) -> Attempt) -> Attempt {
        let precise = self.clock.now_precise().max(now);
        attempt(precise).map_err(|refusal| refusal.later_by(precise - now))
    }

    /// [`attempt_at`](Self::attempt_at) for a yes-or-no decision: `allow` at `now`, and on a
    /// refusal near its retry time (which `check` finds, changing nothing unless it admits),
    /// `allow` again at the precise reading.
    #[inline(always)]
    fn allow_at(
        &self,
        now: u64,
        allow: impl Fn(u64) -> bool,
        check: impl Fn(u64) -> Attempt,
    ) -> bool {
        allow(now) || (self.refine_lag() > 0 && self.allow_refined(now, allow, check))
    }

    #[cold]
    #[inline(never)]
    fn allow_refined(
        &self,
        now: u64,
        allow: impl Fn(u64) -> bool,
        check: impl Fn(u64) -> Attempt,
    ) -> bool {
        match check(now) {
            Ok(_) => true,
            Err(Refusal::Limited { retry_after, .. }) if self.refines(retry_after) => {
                allow(self.clock.now_precise().max(now))
            }
            Err(_) => false,
        }
    }

    #[inline]
    fn record(&self, allowed: bool) {
        if let Some(c) = &self.counters {
            c.record(allowed);
        }
    }

    fn limited(&self, now: u64, retry_after: u64, reset_after: u64) -> RateLimited {
        RateLimited {
            at: now,
            retry_after: retry_after.max(1),
            limit: self.capacity(),
            reset_after,
            cell: KeyCell::Own,
        }
    }

    fn never(&self, n: u64) -> InsufficientCapacity {
        InsufficientCapacity {
            requested: n,
            capacity: self.capacity(),
        }
    }

    /// [`finish`](Self::finish) for a keyed attempt: the answer says which cell decided.
    #[inline]
    fn finish_key(
        &self,
        now: u64,
        n: u64,
        (r, cell): (Attempt, KeyCell),
    ) -> Result<Admitted, Denied> {
        self.finish(now, n, r.map(|a| Admitted { cell, ..a }))
            .map_err(|e| e.in_cell(cell))
    }

    /// Turn an algorithm's answer into the public one, and count it.
    #[inline]
    fn finish(&self, now: u64, n: u64, r: Attempt) -> Result<Admitted, Denied> {
        self.record(r.is_ok());
        r.map_err(|refusal| match refusal {
            Refusal::Limited {
                retry_after,
                reset_after,
            } => Denied::Limited(self.limited(now, retry_after, reset_after)),
            Refusal::Never => Denied::Never(self.never(n)),
        })
    }
}
