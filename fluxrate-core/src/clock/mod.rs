//! Time sources: a [`Clock`] gives `u64` nanoseconds since its own epoch.
//!
//! Cells never read a clock themselves: the limiter reads its clock once per decision and hands
//! the reading to the cell, outside any lock. Every algorithm stays safe when readings go
//! backwards (a stale reading can only cause a denial, never an extra admission), so a clock
//! need not be strictly monotonic across threads.
//!
//! [`CoarseClock`] (the default) reads the kernel's coarse clock and says how far it may lag,
//! so that limiters can read the precise clock where the lag would matter; [`MonotonicClock`]
//! reads `Instant`; [`CachedClock`] reads an atomic kept fresh by a thread; [`ManualClock`]
//! moves only when told to.

mod cached;
mod coarse;
mod manual;

pub use cached::CachedClock;
pub use coarse::CoarseClock;
pub use manual::ManualClock;

use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of time for a limiter, in nanoseconds since the clock's epoch.
///
/// `sleep_until` is how blocking waits ([`RateLimiter::blocking_acquire`](crate::RateLimiter::blocking_acquire))
/// pass time: real clocks sleep the thread, [`ManualClock`] simply advances, so that waits are
/// exact and instant in tests.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// clock.sleep_until(1_500);
/// assert_eq!(clock.now(), 1_500);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time in nanoseconds since this clock's epoch.
    fn now(&self) -> u64;

    /// How far behind [`now_precise`](Self::now_precise) a reading of [`now`](Self::now) may
    /// be, in nanoseconds: 0 (the default) for a clock whose readings are precise.
    ///
    /// A limiter on a clock with a lag reads `now_precise` on every decision if the lag would
    /// loosen its limit by more than one request and 1 % of its capacity (always for the
    /// window algorithms), and otherwise decides again at `now_precise` a refusal whose wait
    /// is within the lag (see [`CoarseClock`]). The limiter reads the lag once when it is
    /// built to choose between the two: it must not change.
    #[inline]
    fn lag(&self) -> u64 {
        0
    }

    /// A precise reading on the timeline of [`now`](Self::now): never behind a reading of
    /// `now` taken before it, and at most [`lag`](Self::lag) ahead of one taken at the same
    /// time. The default is `now`. Like `now`, a limiter calls it outside any lock.
    #[inline]
    fn now_precise(&self) -> u64 {
        self.now()
    }

    /// Block until the clock is at least `deadline`. The default sleeps on
    /// [`now_precise`](Self::now_precise) (which is `now` for a clock without a lag), so that
    /// a lagging clock neither oversleeps nor wakes before its deadline is reached.
    fn sleep_until(&self, deadline: u64) {
        loop {
            let now = self.now_precise();
            if now >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_nanos(deadline - now));
        }
    }
}

impl<C: Clock> Clock for Arc<C> {
    #[inline]
    fn now(&self) -> u64 {
        (**self).now()
    }

    #[inline]
    fn lag(&self) -> u64 {
        (**self).lag()
    }

    #[inline]
    fn now_precise(&self) -> u64 {
        (**self).now_precise()
    }

    fn sleep_until(&self, deadline: u64) {
        (**self).sleep_until(deadline)
    }
}

/// Nanoseconds in `d`, or `None` if they do not fit in a `u64`.
pub(crate) fn nanos(d: Duration) -> Option<u64> {
    u64::try_from(d.as_nanos()).ok()
}

/// Nanoseconds in `d`, saturated at `u64::MAX`.
pub(crate) fn nanos_saturating(d: Duration) -> u64 {
    nanos(d).unwrap_or(u64::MAX)
}

/// A precise clock: [`Instant`], measured from the moment the clock was created.
///
/// `Instant` is monotonic on every platform Rust supports; a reading earlier than the epoch
/// saturates to 0 rather than panicking. A read costs one `clock_gettime(CLOCK_MONOTONIC)`
/// through the vDSO on Linux (about 30–40 ns on the machines the README was measured on): use
/// it where every decision must be stamped to the nanosecond; the default [`CoarseClock`] is
/// as exact wherever a tick is shorter than the limit's emission interval, and reads the same
/// timeline. Cloning shares the epoch.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Clock, MonotonicClock};
///
/// let clock = MonotonicClock::new();
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    epoch: Instant,
}

impl MonotonicClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> u64 {
        nanos_saturating(Instant::now().saturating_duration_since(self.epoch))
    }
}

#[cfg(all(test, not(fluxrate_loom)))]
mod tests {
    use super::*;

    /// B12: a reading older than the clock's epoch is treated as the epoch, without panicking,
    /// and a limiter on such a clock still keeps its bound.
    #[test]
    fn readings_before_the_epoch_saturate_to_zero() {
        let clock = MonotonicClock {
            epoch: Instant::now() + Duration::from_secs(3600),
        };
        assert_eq!(clock.now(), 0);
        let limiter = crate::RateLimiter::builder(crate::Quota::per_hour(3))
            .clock(clock)
            .build()
            .unwrap();
        assert_eq!((0..10).filter(|_| limiter.allow()).count(), 3);
    }

    #[test]
    fn manual_clock_moves_both_ways_and_saturates() {
        let c = ManualClock::starting_at(u64::MAX - 5);
        c.advance(Duration::MAX);
        assert_eq!(c.now(), u64::MAX);
        c.set(10);
        assert_eq!(c.now(), 10);
        c.sleep_until(5);
        assert_eq!(c.now(), 10, "sleep_until never moves time back");
    }
}
