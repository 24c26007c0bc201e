//! What decides when Redis cannot: [`FailurePolicy`], and the local fallback it may hold.

use super::decision::{DecidedBy, RedisDecision};
use super::error::{RedisConfigError, RedisDenied, Unavailable};
use super::stats::{bump, Counters};
use crate::{Admitted, Algorithm, Denied, OverflowPolicy, Quota, RateLimiter};

/// What a limiter does when Redis cannot decide (down, too slow, breaker open).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Refuse ([`RedisDenied::Unavailable`]). Never admits more than the limit.
    FailClosed,
    /// Admit. Over-admission is bounded by the number of requests decided during the outage;
    /// the circuit breaker keeps each of them from waiting for the full time budget.
    FailOpen,
    /// Decide with an in-process limiter of the same algorithm holding `share` of the quota
    /// (e.g. `1.0 / number_of_processes`). The local limiter also counts every request Redis
    /// admits, so it is warm when an outage begins.
    FailLocal {
        /// The fraction of the quota (calls and burst) each process may admit on its own.
        share: f64,
    },
}

/// A built [`FailurePolicy`].
pub(crate) enum Policy {
    Closed,
    Open,
    Local(Box<RateLimiter<Vec<u8>>>),
}

impl Policy {
    /// Build `policy` for `quota` decided as `algorithm` (a `FailLocal` share is checked here).
    pub(crate) fn new(
        policy: FailurePolicy,
        quota: Quota,
        algorithm: Algorithm,
    ) -> Result<Self, RedisConfigError> {
        Ok(match policy {
            FailurePolicy::FailClosed => Policy::Closed,
            FailurePolicy::FailOpen => Policy::Open,
            FailurePolicy::FailLocal { share } => {
                Policy::Local(Box::new(local(quota, algorithm, share)?))
            }
        })
    }

    /// The local fallback, under `FailLocal`.
    pub(crate) fn local(&self) -> Option<&RateLimiter<Vec<u8>>> {
        match self {
            Policy::Local(local) => Some(local),
            Policy::Closed | Policy::Open => None,
        }
    }

    /// Keep the local fallback warm: it counts what Redis admitted (its own refusals are
    /// ignored: Redis decided). Returns the local admission, to give back with a refund.
    pub(crate) fn warm(&self, raw: &[u8], n: u64) -> Option<Admitted> {
        self.local()?.check_key_n(raw, n).ok()
    }

    /// Decide `n` for subject `raw` of a limit of capacity `cap` after Redis failed with `u`,
    /// counting both in `c`.
    pub(crate) fn decide(
        &self,
        raw: &[u8],
        n: u64,
        cap: u64,
        u: &Unavailable,
        c: &Counters,
    ) -> RedisDecision {
        bump(c.failed(u.class));
        match self {
            Policy::Closed => {
                bump(&c.fail_closed);
                RedisDecision::new(
                    Err(RedisDenied::Unavailable(u.clone())),
                    DecidedBy::FailClosed,
                )
            }
            Policy::Open => {
                bump(&c.fail_open);
                RedisDecision::new(
                    Ok(Admitted::from_remote(0, 0, 0, cap, 0, n, 0)),
                    DecidedBy::FailOpen,
                )
            }
            Policy::Local(local) => {
                let result = match local.check_key_n(raw, n) {
                    Ok(a) => {
                        bump(&c.local_admitted);
                        Ok(a)
                    }
                    Err(Denied::Limited(l)) => {
                        bump(&c.local_limited);
                        Err(RedisDenied::Limited(l))
                    }
                    Err(Denied::Never(e)) => {
                        bump(&c.local_limited);
                        Err(RedisDenied::Never(e))
                    }
                };
                RedisDecision::new(result, DecidedBy::LocalFallback)
            }
        }
    }
}

/// The in-process fallback: `share` of the calls and of the burst, at least one of each.
fn local(
    quota: Quota,
    algorithm: Algorithm,
    share: f64,
) -> Result<RateLimiter<Vec<u8>>, RedisConfigError> {
    let scale = |x: u64| (x as f64 * share).floor() as u64;
    if !(share > 0.0 && share <= 1.0) || scale(quota.calls()) == 0 {
        return Err(RedisConfigError::InvalidShare { share });
    }
    let q =
        Quota::new(scale(quota.calls()), quota.period()).with_burst(scale(quota.burst()).max(1));
    Ok(RateLimiter::builder(q)
        .algorithm(algorithm)
        .keyed::<Vec<u8>>()
        .max_keys(100_000)
        .overflow(OverflowPolicy::Shared)
        .build()?)
}
