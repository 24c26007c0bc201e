//! The circuit breaker in front of every call to Redis, and the [`Ticket`] by which a call
//! reports its outcome (or, dropped, its abandonment).

use crate::{Clock, MonotonicClock};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The circuit breaker: opens after `threshold` consecutive failures; `open_for` later it lets
/// one probe through (half-open): the probe's success closes it, its failure opens it again.
///
/// States, as the model test in this module spells them out:
/// * **closed** (`open_until == 0`): every call is admitted; a success resets the failure
///   count, the `threshold`-th consecutive failure opens the breaker (a trip).
/// * **open** (`now < open_until`): calls are refused at once, told to wait the remainder.
/// * **half-open** (`open_until <= now`): the first caller to take the probe slot (`probing`)
///   is the probe; every other caller is refused (told to wait `open_for`) while it is in flight.
///
/// Whatever the state, any success closes the breaker (Redis answered) and any failure while
/// open re-arms `open_until = now + open_for`. A probe's failure opens the breaker even if a
/// late success of another call closed it meanwhile.
///
/// # Invariant: the probe slot is never lost
///
/// `probing` is set only by [`admit`](Self::admit), for the [`Ticket`] it returns, and cleared
/// only through that ticket: by its success, by its failure, or by its `Drop` when the call's
/// future is abandoned (a client disconnect, an outer timeout, `select!`), which counts as a
/// failure of the probe: the breaker re-opens for `open_for`, and the next caller after that
/// probes. No other call touches the slot, so at most one probe is ever in flight.
///
/// `RedisBackend::eval` takes the ticket before its first await and holds it until the outcome
/// is known, and it wraps every await in between (the script commands, redirections,
/// `TRYAGAIN` sleeps) in the time budget (`tokio::time::timeout`). A probe therefore ends
/// within one budget of being polled, or when its future is dropped; a probe cannot hang past
/// its budget. Hence the liveness property the model test checks: after any history, once
/// calls succeed (and keep arriving), the breaker is closed within `open_for` + one budget.
/// The one thing it cannot cover: a future that is kept alive but never polled again holds the
/// probe slot until it is polled (and times out) or dropped.
///
/// Time comes from `C`: the monotonic clock in production (read only when the breaker is
/// open, so a closed breaker costs one atomic load per call), a `ManualClock` in the tests.
pub(super) struct Breaker<C: Clock = MonotonicClock> {
    threshold: u32,
    open_for: Duration,
    open_for_ns: u64,
    clock: C,
    failures: AtomicU32,
    /// Nanoseconds of `clock` until which calls are refused; 0 when closed.
    open_until: AtomicU64,
    /// The probe slot: taken by the half-open probe's [`Ticket`], and only released by it.
    probing: AtomicBool,
    trips: AtomicU64,
}

impl Breaker {
    pub(super) fn new(threshold: u32, open_for: Duration) -> Self {
        Self::with_clock(threshold, open_for, MonotonicClock::new())
    }
}

impl<C: Clock> Breaker<C> {
    fn with_clock(threshold: u32, open_for: Duration, clock: C) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            open_for_ns: u64::try_from(open_for.as_nanos()).unwrap_or(u64::MAX),
            clock,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            trips: AtomicU64::new(0),
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    pub(super) fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// How long it stays open before a probe.
    pub(super) fn open_for(&self) -> Duration {
        self.open_for
    }

    /// Whether the probe slot is taken.
    #[cfg(test)]
    pub(super) fn probing(&self) -> bool {
        self.probing.load(Ordering::Acquire)
    }

    /// A ticket for a call that may be made now (the half-open probe's ticket holds the probe
    /// slot), or how long to wait.
    #[inline]
    pub(super) fn admit(&self) -> Result<Ticket<'_, C>, Duration> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(Ticket {
                breaker: self,
                probe: false,
            });
        }
        self.admit_open(until)
    }

    #[cold]
    fn admit_open(&self, until: u64) -> Result<Ticket<'_, C>, Duration> {
        let now = self.clock.now();
        if now < until {
            return Err(Duration::from_nanos(until - now));
        }
        // Half-open: exactly one caller probes; the others keep failing fast.
        if self.probing.swap(true, Ordering::AcqRel) {
            return Err(self.open_for);
        }
        // The slot is ours. A probe that ended between the load above and the swap re-armed
        // or closed the breaker before it released the slot: look again.
        match self.open_until.load(Ordering::Acquire) {
            0 => {
                self.probing.store(false, Ordering::Release);
                Ok(Ticket {
                    breaker: self,
                    probe: false,
                })
            }
            until if now < until => {
                self.probing.store(false, Ordering::Release);
                Err(Duration::from_nanos(until - now))
            }
            _ => Ok(Ticket {
                breaker: self,
                probe: true,
            }),
        }
    }

    fn success(&self, probe: bool) {
        self.failures.store(0, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
        if probe {
            self.probing.store(false, Ordering::Release);
        }
    }

    fn failure(&self, probe: bool) {
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if probe || n >= self.threshold || self.open_until.load(Ordering::Acquire) != 0 {
            let until = self.clock.now().saturating_add(self.open_for_ns).max(1);
            if self.open_until.swap(until, Ordering::AcqRel) == 0 {
                self.trips.fetch_add(1, Ordering::Relaxed);
            }
        }
        // After `open_until`: whoever takes the slot next sees the re-armed time.
        if probe {
            self.probing.store(false, Ordering::Release);
        }
    }
}

/// A call the [`Breaker`] let through. Report its outcome with [`success`](Self::success) or
/// [`failure`](Self::failure); a probe's ticket dropped without either (its future was
/// abandoned at an await) counts as a failure of the probe and releases the probe slot.
#[must_use = "a call's outcome must be reported to the breaker"]
pub(super) struct Ticket<'a, C: Clock = MonotonicClock> {
    breaker: &'a Breaker<C>,
    /// Whether this call holds the probe slot (and has not reported yet).
    probe: bool,
}

impl<C: Clock> Ticket<'_, C> {
    pub(super) fn success(mut self) {
        self.breaker.success(std::mem::take(&mut self.probe));
    }

    pub(super) fn failure(mut self) {
        self.breaker.failure(std::mem::take(&mut self.probe));
    }
}

impl<C: Clock> Drop for Ticket<'_, C> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.failure(true);
        }
    }
}

#[cfg(test)]
mod tests;
