//! Time sources: a [`Clock`] gives `u64` nanoseconds since its own epoch.
//!
//! Cells never read a clock themselves: the limiter reads its clock once per decision and hands
//! the reading to the cell, outside any lock. Every algorithm stays safe when readings go
//! backwards (a stale reading can only cause a denial, never an extra admission), so a clock
//! need not be strictly monotonic across threads.

use crate::sync::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
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

    /// Block until [`now`](Self::now) is at least `deadline`.
    fn sleep_until(&self, deadline: u64) {
        loop {
            let now = self.now();
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

/// The default clock: [`Instant`], measured from the moment the clock was created.
///
/// `Instant` is monotonic on every platform Rust supports; a reading earlier than the epoch
/// saturates to 0 rather than panicking. A read costs one `clock_gettime` through the vDSO on
/// Linux (about 20 ns). Cloning shares the epoch.
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

/// A clock that only moves when told to: for tests, simulations and demos.
///
/// Clones share the same time. [`sleep_until`](Clock::sleep_until) advances the clock to the
/// deadline instead of sleeping, so a blocking wait returns at once having "waited" exactly.
/// [`set`](Self::set) may move time backwards, to test how limiters cope with clock faults.
///
/// # Memory ordering
///
/// Readings and updates are `SeqCst`: a test that advances the clock in one thread and checks
/// in another sees the new time once `advance` has returned.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let shared = clock.clone();
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(shared.now(), 5_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    ns: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock at time 0.
    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// A manual clock at `ns` nanoseconds.
    pub fn starting_at(ns: u64) -> Self {
        Self {
            ns: Arc::new(AtomicU64::new(ns)),
        }
    }

    /// Move time forward by `d` (saturating at `u64::MAX` nanoseconds).
    pub fn advance(&self, d: Duration) {
        self.advance_ns(nanos_saturating(d));
    }

    /// Move time forward by `ns` nanoseconds (saturating).
    pub fn advance_ns(&self, ns: u64) {
        let _ = self
            .ns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ns))
            });
    }

    /// Set the time to `ns`, forwards or backwards.
    pub fn set(&self, ns: u64) {
        self.ns.store(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> u64 {
        self.ns.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, deadline: u64) {
        self.ns.fetch_max(deadline, Ordering::SeqCst);
    }
}

/// The fastest clock: one relaxed atomic load, refreshed by a background thread.
///
/// A thread started by [`CachedClock::new`] stores the [`Instant`] time every `precision`; a
/// reading is at most `precision` plus the thread's scheduling delay behind real time. The
/// thread stops on its own once every clone of the clock is dropped.
///
/// Because readings lag, an admission is stamped up to that lag early; in real time a window of
/// length `len` can then see the limit for `len + lag`. Choose `precision` well below the
/// emission interval (1 ms is a good default for limits up to a few hundred per second).
///
/// # Memory ordering
///
/// The cached value only matters as a number: readings are `Relaxed`, the refresher uses
/// `fetch_max` so the cached time never goes backwards.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{CachedClock, Clock};
/// use std::time::Duration;
///
/// let clock = CachedClock::new(Duration::from_millis(1));
/// let t0 = clock.now();
/// clock.sleep_until(t0 + 3_000_000);
/// assert!(clock.now() >= t0 + 3_000_000);
/// ```
#[derive(Debug, Clone)]
pub struct CachedClock {
    inner: Arc<CachedInner>,
    // Set when the refresher thread could not be spawned: every read then refreshes.
    self_refresh: bool,
}

#[derive(Debug)]
struct CachedInner {
    now: AtomicU64,
    epoch: Instant,
    precision: Duration,
}

impl CachedInner {
    fn refresh(&self) -> u64 {
        let t = nanos_saturating(self.epoch.elapsed());
        self.now.fetch_max(t, Ordering::Relaxed).max(t)
    }
}

impl CachedClock {
    /// Start a cached clock refreshed every `precision` (at least 1 µs).
    pub fn new(precision: Duration) -> Self {
        let precision = precision.max(Duration::from_micros(1));
        let inner = Arc::new(CachedInner {
            now: AtomicU64::new(0),
            epoch: Instant::now(),
            precision,
        });
        let weak: Weak<CachedInner> = Arc::downgrade(&inner);
        let spawned = std::thread::Builder::new()
            .name("fluxrate-clock".into())
            .spawn(move || loop {
                std::thread::sleep(precision);
                match weak.upgrade() {
                    Some(inner) => {
                        inner.refresh();
                    }
                    None => return,
                }
            })
            .is_ok();
        Self {
            inner,
            self_refresh: !spawned,
        }
    }

    /// How often the cached time is refreshed.
    pub fn precision(&self) -> Duration {
        self.inner.precision
    }
}

impl Clock for CachedClock {
    #[inline]
    fn now(&self) -> u64 {
        if self.self_refresh {
            return self.inner.refresh();
        }
        self.inner.now.load(Ordering::Relaxed)
    }

    fn sleep_until(&self, deadline: u64) {
        loop {
            // Read the precise time here: a sleeping thread is off the hot path, and waking on
            // the stale cached value would oversleep by up to `precision`.
            let now = self.inner.refresh();
            if now >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_nanos(deadline - now));
        }
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
