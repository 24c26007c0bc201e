//! [`Decision`]: what the layer decided for one request and who decided each limit
//! ([`DecidedBy`]), added to the response's extensions.

use std::sync::Arc;
use std::time::Duration;

pub use crate::DecidedBy;

/// One limit's part of a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitDecision {
    /// The limit's name.
    pub name: Arc<str>,
    /// Who decided it.
    pub decided_by: DecidedBy,
    /// Whether it admitted the request.
    pub admitted: bool,
}

/// The outcome for one request, added to the response's extensions (of the inner service's
/// response, or of the layer's own refusal).
///
/// Limits are checked in order and the check stops at the first refusal, so `limits` lists
/// the limits up to the one that refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether every limit admitted the request.
    pub admitted: bool,
    /// The name of the limit that refused it, if any.
    pub refused_by: Option<Arc<str>>,
    /// Whether the refusal is final: the request's cost is above the refusing limit's capacity,
    /// so it can never pass (answered with the layer's `never_status`, 413 by default).
    pub never: bool,
    /// Whether the layer is in dry-run mode (a refused request went through anyway).
    pub dry_run: bool,
    /// How long a shaping limit (a leaky bucket) held the request before the inner service saw
    /// it; in dry-run mode, how long it would have (dry runs do not wait).
    pub delay: Duration,
    /// Each limit checked, in order, and who decided it.
    pub limits: Vec<LimitDecision>,
}

impl Decision {
    /// Whether any limit was decided by a failure policy or a local fallback instead of its
    /// own limiter (Redis could not decide).
    pub fn degraded(&self) -> bool {
        self.limits.iter().any(|l| l.decided_by.degraded())
    }
}
