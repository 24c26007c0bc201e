//! Window-based algorithms: fixed window, sliding window counter, exact sliding log.

pub(crate) mod counter;
pub(crate) mod fixed;
pub(crate) mod log;

use crate::error::ConfigError;
use crate::quota::Quota;

/// Validated `(limit, window_ns)` of a window algorithm.
pub(crate) fn limit_and_window(quota: &Quota) -> Result<(u64, u64), ConfigError> {
    quota.validated()
}

/// `k·w` as u128 (window start of window `k`).
#[inline]
pub(crate) fn start_of(k: u64, w: u64) -> u128 {
    u128::from(k) * u128::from(w)
}

/// `x` saturated into a u64.
#[inline]
pub(crate) fn sat(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}
