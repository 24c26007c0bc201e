//! Where a limiter's "now" comes from: the server's `TIME`, this host's clock, or a time set by
//! hand.

use super::error::InvalidInput;
use super::script::{Now, MAX_MICROS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a limiter's "now" comes from.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum TimeSource {
    /// The Redis server's `TIME` (default): the hosts need not agree on time.
    #[default]
    Server,
    /// This host's wall clock (for deployments that forbid `TIME` in scripts). Hosts whose
    /// clocks differ by δ can over-admit by up to ⌈2δ/T⌉ calls.
    Client,
    /// A time you set: for tests, so that the scripts can be checked exactly. Keys then live an
    /// hour longer than their state needs, since this time does not follow the server's clock.
    Manual(ManualTime),
}

impl TimeSource {
    /// The script's `now` for a call made at this moment.
    pub(crate) fn now(&self) -> Result<Now, InvalidInput> {
        let us = match self {
            TimeSource::Server => return Ok(Now::Server),
            TimeSource::Client => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            TimeSource::Manual(m) => m.micros(),
        };
        if us >= MAX_MICROS {
            return Err(InvalidInput::TimeOutOfRange { micros: us });
        }
        Ok(Now::Micros(us))
    }

    /// Milliseconds added to every TTL the script sets: manual time does not follow the
    /// server's clock, so its keys live an hour longer.
    pub(crate) fn ttl_extra_ms(&self) -> u64 {
        if matches!(self, TimeSource::Manual(_)) {
            3_600_000
        } else {
            0
        }
    }
}

/// A settable time in microseconds for [`TimeSource::Manual`]; clones share it.
#[derive(Debug, Clone, Default)]
pub struct ManualTime(Arc<AtomicU64>);

impl ManualTime {
    /// A time starting at `micros`.
    pub fn new(micros: u64) -> Self {
        Self(Arc::new(AtomicU64::new(micros)))
    }

    /// Set it.
    pub fn set(&self, micros: u64) {
        self.0.store(micros, Ordering::Release);
    }

    /// Move it forward by `d` (whole microseconds).
    pub fn advance(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(us))
            });
    }

    /// The current value.
    pub fn micros(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}
