//! Limits shared across processes and hosts, decided inside Redis: feature `redis`.
//!
//! Every algorithm of the in-process limiter runs as one Lua script (loaded by SHA with
//! `EVALSHA`, sent again once with `EVAL` after a `NOSCRIPT`), atomic per subject, with the
//! server's `TIME` in integer microseconds as the clock by default. The state of subject `k`
//! under limit `id` lives in `prefix:{k}:id:alg`, with a TTL of exactly what it needs (rounded
//! up to the millisecond), so idle subjects cost nothing. Works with Redis ≥ 6, Valkey, and
//! Redis Cluster (the hash tag `{k}` keeps all limits of one subject on one slot).
//!
//! When Redis cannot decide within the time budget, the limiter's [`FailurePolicy`] does:
//! fail closed, fail open, or decide locally with a share of the quota; a circuit breaker on
//! the [`RedisBackend`] makes an outage cost each request nothing instead of a full timeout.
//! A call that may have run (timeout or broken connection after sending) is never retried.

mod backend;
mod key;
mod limiter;

pub use backend::{BackendOptions, FailureClass, RedisBackend, Unavailable, MAX_REDIRECTS};
pub use key::RedisKey;
pub use limiter::{
    DecidedBy, Decision, FailurePolicy, InvalidInput, ManualTime, RedisBuilder, RedisConfigError,
    RedisDenied, RedisRateLimiter, RedisStats, TimeSource, MAX_MICROS,
};
