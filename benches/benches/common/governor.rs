//! governor's equivalents of `fluxrate_benches::open_quota` and `live_quota` (governor is a dev-dependency, so it
//! cannot appear in the bench crate's library).

use std::num::NonZeroU32;
use std::time::Duration;

/// One call per ns, a burst of 2³² − 1: never refuses within a benchmark.
pub(crate) fn g_open() -> governor::Quota {
    governor::Quota::with_period(Duration::from_nanos(1))
        .expect("non-zero period")
        .allow_burst(NonZeroU32::MAX)
}

/// One call per second, a burst of 2³² − 1: never refuses and keeps every key live.
pub(crate) fn g_live() -> governor::Quota {
    governor::Quota::with_period(Duration::from_secs(1))
        .expect("non-zero period")
        .allow_burst(NonZeroU32::MAX)
}
