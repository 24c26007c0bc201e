//! [`RedisDecision`]: what a decision returns beyond its outcome: who made it ([`DecidedBy`]),
//! and what it charged the local fallback (for
//! [`cancel_decision`](super::RedisRateLimiter::cancel_decision)).

use super::error::RedisDenied;
use crate::Admitted;

pub use crate::DecidedBy;

/// A decision and who made it.
///
/// Give an admission back with [`RedisRateLimiter::cancel_decision`], which goes to whoever
/// decided it (and also gives back what a Redis admission charged the local fallback).
///
/// [`RedisRateLimiter::cancel_decision`]: super::RedisRateLimiter::cancel_decision
#[derive(Debug, Clone, PartialEq)]
pub struct RedisDecision {
    /// The outcome.
    pub result: Result<Admitted, RedisDenied>,
    /// Who decided.
    pub decided_by: DecidedBy,
    /// What a Redis admission charged the local fallback to keep it warm.
    pub(crate) warmed: Option<Admitted>,
}

impl RedisDecision {
    pub(crate) fn new(result: Result<Admitted, RedisDenied>, decided_by: DecidedBy) -> Self {
        Self {
            result,
            decided_by,
            warmed: None,
        }
    }
}
