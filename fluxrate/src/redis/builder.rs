//! [`RedisBuilder`]: the options of a [`RedisRateLimiter`], checked once, when it is built.

use super::backend::RedisBackend;
use super::error::RedisConfigError;
use super::key::{valid_name, KeyNames};
use super::limiter::{Inner, RedisRateLimiter};
use super::policy::{FailurePolicy, Policy};
use super::script::Params;
use super::stats::Counters;
use super::time::TimeSource;
use crate::{Algorithm, Quota};
use std::sync::Arc;
use std::time::Duration;

/// Builds a [`RedisRateLimiter`]; see [`RedisRateLimiter::builder`].
#[derive(Debug, Clone)]
pub struct RedisBuilder {
    backend: RedisBackend,
    id: String,
    quota: Quota,
    algorithm: Algorithm,
    prefix: String,
    time: TimeSource,
    timeout: Duration,
    policy: FailurePolicy,
    max_key_len: usize,
}

impl RedisBuilder {
    /// The algorithm (default: token bucket).
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The burst of the token bucket / the queue of the leaky bucket (default: calls).
    pub fn burst(mut self, burst: u64) -> Self {
        self.quota = self.quota.with_burst(burst);
        self
    }

    /// The first part of every key (default `"fluxrate"`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Where "now" comes from (default: the server's `TIME`).
    pub fn time(mut self, time: TimeSource) -> Self {
        self.time = time;
        self
    }

    /// The longest one decision may take, reconnecting included (default 50 ms). Past it the
    /// call fails as [`FailureClass::Indeterminate`](super::FailureClass::Indeterminate) and the
    /// failure policy decides.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when Redis cannot decide (default: [`FailurePolicy::FailClosed`]).
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The longest escaped subject accepted, in bytes (default 512).
    pub fn max_key_len(mut self, max: usize) -> Self {
        self.max_key_len = max;
        self
    }

    /// Check everything and build.
    pub fn build(self) -> Result<RedisRateLimiter, RedisConfigError> {
        for (what, name) in [("id", &self.id), ("prefix", &self.prefix)] {
            if !valid_name(name) {
                return Err(RedisConfigError::InvalidName {
                    what,
                    name: name.clone(),
                });
            }
        }
        if self.timeout.is_zero() {
            return Err(RedisConfigError::ZeroTimeout);
        }
        let params = Params::new(&self.quota, self.algorithm)?;
        let policy = Policy::new(self.policy, self.quota, self.algorithm)?;
        Ok(RedisRateLimiter {
            inner: Arc::new(Inner {
                backend: self.backend,
                keys: KeyNames::new(&self.prefix, &self.id, params.algorithm, self.max_key_len),
                id: self.id,
                quota: self.quota,
                algorithm: self.algorithm,
                params,
                time: self.time,
                timeout: self.timeout,
                policy,
                counters: Counters::default(),
            }),
        })
    }
}

impl RedisBuilder {
    /// The defaults; see [`RedisRateLimiter::builder`].
    pub(crate) fn new(backend: &RedisBackend, id: &str, quota: Quota) -> Self {
        Self {
            backend: backend.clone(),
            id: id.to_owned(),
            quota,
            algorithm: Algorithm::TokenBucket,
            prefix: "fluxrate".to_owned(),
            time: TimeSource::Server,
            timeout: Duration::from_millis(50),
            policy: FailurePolicy::FailClosed,
            max_key_len: 512,
        }
    }
}
