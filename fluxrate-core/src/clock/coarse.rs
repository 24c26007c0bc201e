//! The default clock: the kernel's coarse monotonic clock, with precise readings where a tick
//! matters.

use super::Clock;
use std::time::Duration;

/// A coarse tick longer than this is not used: [`CoarseClock`] then reads the precise clock
/// only (a kernel with a tick this long, or a coarse clock that reports no resolution, is not
/// one the numbers in the docs were measured on).
const MAX_TICK_NS: u64 = 20_000_000;

/// How many ticks a coarse reading is taken to lag at most. The kernel updates the coarse time
/// from its timer tick, and the update of one tick can land a tick late: on the 4 ms-tick VM the
/// README was measured on, `CLOCK_MONOTONIC` − `CLOCK_MONOTONIC_COARSE` ranged over 3.7–7.7 ms
/// (`benches/tests/clock_sources.rs` measures it; `the_default_clocks_lag_is_within_what_it_reports` checks it). Three ticks leave a margin.
const LAG_TICKS: u64 = 3;

/// The default clock: fast readings that lag real time by a few milliseconds at most, and
/// precise ones where that lag would matter.
///
/// [`now`](Clock::now) reads the kernel's `CLOCK_MONOTONIC_COARSE` through the vDSO (about
/// 6 ns here, against about 30 ns for `Instant::now()`; the README's table has the numbers):
/// the monotonic time of a recent timer tick, one timeline for every thread and core, never
/// going backwards. It is taken to lag [`now_precise`](Clock::now_precise), which reads
/// `CLOCK_MONOTONIC` (the timeline of `Instant`), by at most three ticks, its
/// [`lag`](Clock::lag) (ticks are 1–10 ms by kernel configuration; 4 ms on the machines the
/// README was measured on, where the lag seen was at most 7.7 ms).
///
/// A limiter uses the lag in two ways, so that the coarse readings loosen no limit by more than
/// one request or 1 % of its capacity, and refuse no request that waited its retry-after:
///
/// * **A limit that a lag would loosen reads the precise clock.** A coarse reading stamps a
///   decision at most `lag` early, so over any real-time interval of length `L` a limiter
///   admits at most what its limit allows over `L + lag` on a precise clock. For the token and
///   leaky buckets that is at most `⌈lag / T⌉` requests more (`T` the emission interval,
///   period ÷ calls: the effect of a thread pre-empted for `lag` between reading a clock and
///   deciding, the cross-thread skew bound `⌈2δ/T⌉` with `2δ = lag`). For the window
///   algorithms it can be a whole window's quota (a burst filed on the wrong side of a fixed
///   window's boundary, or leaving the log `lag` early). When that is more than one request
///   and more than 1 % of the capacity, the limiter reads
///   [`now_precise`](Clock::now_precise) on every decision instead, and costs what
///   [`MonotonicClock`](crate::MonotonicClock) costs: always for the window algorithms, and
///   for buckets whose emission interval is short next to the lag (with a 4 ms tick, a 12 ms
///   lag: a token bucket of `N` per second keeps the coarse readings for `N` ≤ 83, or when its
///   burst is at least `100 × ⌈0.012 N⌉`; a per-minute or per-hour quota keeps them).
/// * **A refusal near its retry time is decided again on the precise clock.** A refusal whose
///   wait is within the lag is decided again at [`now_precise`](Clock::now_precise) (read
///   outside any lock), so a request that waited its exact retry-after is not refused because
///   the reading lagged. (A reservation decided again keeps its deadline, so only its own
///   wait can turn.)
///   Retry-after values are relative to the reading the decision was taken at
///   ([`RateLimited::decided_at`](crate::RateLimited::decided_at)), so the instant they name is
///   exact.
///
/// Blocking waits ([`sleep_until`](Clock::sleep_until)) sleep on the precise clock. On targets
/// other than Linux and Android, and where the kernel reports a tick longer than 20 ms, both
/// readings are precise and the lag is 0. Cloning shares the epoch.
///
/// # Examples
///
/// ```
/// use fluxrate_core::{Clock, CoarseClock};
///
/// let clock = CoarseClock::new();
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// let precise = clock.now_precise();
/// assert!(clock.now() + clock.lag() >= precise); // coarse, behind by at most the lag
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CoarseClock {
    /// The coarse reading when the clock was made: readings are measured from it.
    epoch: u64,
    /// How far a coarse reading may be behind a precise one (`LAG_TICKS` ticks); 0 when coarse
    /// readings are off.
    lag: u64,
}

impl CoarseClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        let tick = source::resolution();
        let lag = if (1..=MAX_TICK_NS).contains(&tick) {
            tick * LAG_TICKS
        } else {
            0
        };
        Self {
            epoch: source::coarse(),
            lag,
        }
    }

    /// The kernel tick that coarse readings move by (a third of the [`lag`](Clock::lag); zero
    /// where coarse readings are not used).
    pub fn resolution(&self) -> Duration {
        Duration::from_nanos(self.lag / LAG_TICKS)
    }
}

impl Default for CoarseClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for CoarseClock {
    #[inline]
    fn now(&self) -> u64 {
        let t = if self.lag == 0 {
            source::precise()
        } else {
            source::coarse()
        };
        t.saturating_sub(self.epoch)
    }

    #[inline]
    fn lag(&self) -> u64 {
        self.lag
    }

    #[inline]
    fn now_precise(&self) -> u64 {
        source::precise().saturating_sub(self.epoch)
    }
}

/// The kernel's clocks, in nanoseconds on the `CLOCK_MONOTONIC` timeline.
#[cfg(any(target_os = "linux", target_os = "android"))]
mod source {
    use rustix::time::{clock_getres, clock_gettime, ClockId, Timespec};

    #[inline]
    fn ns(t: Timespec) -> u64 {
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(nanos)
    }

    /// The monotonic time of the last tick: a read of the vDSO's data page, no TSC.
    #[inline]
    pub(super) fn coarse() -> u64 {
        ns(clock_gettime(ClockId::MonotonicCoarse))
    }

    /// The monotonic time now (what `Instant::now` reads).
    #[inline]
    pub(super) fn precise() -> u64 {
        ns(clock_gettime(ClockId::Monotonic))
    }

    /// How far apart successive coarse readings are: the kernel tick.
    pub(super) fn resolution() -> u64 {
        ns(clock_getres(ClockId::MonotonicCoarse))
    }
}

/// Elsewhere: `Instant` for both readings, and no lag.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod source {
    use std::sync::OnceLock;
    use std::time::Instant;

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    #[inline]
    pub(super) fn coarse() -> u64 {
        precise()
    }

    #[inline]
    pub(super) fn precise() -> u64 {
        super::super::nanos_saturating(epoch().elapsed())
    }

    pub(super) fn resolution() -> u64 {
        0
    }
}
