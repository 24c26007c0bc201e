//! A clock cached in an atomic by a background thread.

use super::{nanos_saturating, Clock};
use crate::sync::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

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
