//! Shared helpers of the fluxrate benchmarks.

use fluxrate::Quota;
use std::time::Duration;

/// A quota that never refuses within a benchmark: one call per ns, a burst of 2³² − 1.
pub fn open_quota() -> Quota {
    Quota::new(1, Duration::from_nanos(1)).with_burst(u64::from(u32::MAX))
}

/// A quota for keyed benchmarks that never refuses and keeps every key live: one call per
/// second, a burst of 2³² − 1. With [`open_quota`] a key's state is idle 1 ns after a check,
/// so fluxrate's store (which drops idle keys on its own, unlike governor's) would measure
/// dropping and re-inserting keys instead of the lookup of a present key.
pub fn live_quota() -> Quota {
    Quota::new(1, Duration::from_secs(1)).with_burst(u64::from(u32::MAX))
}
