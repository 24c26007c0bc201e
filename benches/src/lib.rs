//! Shared helpers of the fluxrate benchmarks.

use fluxrate::Quota;
use std::time::Duration;

/// A quota that never refuses within a benchmark: one call per ns, a burst of 2³² − 1.
pub fn open_quota() -> Quota {
    Quota::new(1, Duration::from_nanos(1)).with_burst(u64::from(u32::MAX))
}
