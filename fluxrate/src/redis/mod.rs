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

// The limiter: its verbs, its builder, several limits at once, and what it returns.
mod batch;
mod builder;
mod decision;
mod limiter;
mod policy;
mod stats;
mod time;
mod wait;
// The protocol of `decide.lua` and the key names it is given.
mod key;
pub(crate) mod script;
// The backend: the call budget, the breaker, the connection.
mod backend;
mod breaker;
mod connection;
// Every error of the module.
mod error;

pub use backend::{BackendOptions, RedisBackend};
pub use builder::RedisBuilder;
pub use connection::MAX_REDIRECTS;
pub use decision::{DecidedBy, RedisDecision};
pub use error::{FailureClass, InvalidInput, RedisConfigError, RedisDenied, Unavailable};
pub use key::RedisKey;
pub use limiter::RedisRateLimiter;
pub use policy::FailurePolicy;
pub use script::MAX_MICROS;
pub use stats::RedisStats;
pub use time::{ManualTime, TimeSource};
