//! [`RedisRateLimiter`]: one named limit decided inside Redis, its verbs, and the one call to
//! the script that each of them makes.

use super::backend::RedisBackend;
use super::builder::RedisBuilder;
use super::decision::{DecidedBy, RedisDecision};
use super::error::{FailureClass, InvalidInput, RedisDenied, Unavailable};
use super::key::{KeyNames, RedisKey};
use super::policy::Policy;
use super::script::{Args, MaxWait, Mode, Params, Reply};
use super::stats::{bump, Counters, RedisStats};
use super::time::TimeSource;
use crate::{Admitted, Algorithm, Quota, Snapshot};
use core::fmt;
use std::sync::Arc;
use std::time::Duration;

pub(super) struct Inner {
    pub(super) backend: RedisBackend,
    pub(super) id: String,
    pub(super) quota: Quota,
    pub(super) algorithm: Algorithm,
    /// The limit in the script's terms.
    pub(super) params: Params,
    pub(super) keys: KeyNames,
    pub(super) time: TimeSource,
    pub(super) timeout: Duration,
    pub(super) policy: Policy,
    pub(super) counters: Counters,
}

/// A rate limit shared by every process that uses the same Redis, id and key prefix.
///
/// Each decision is one atomic Lua script (by `EVALSHA`) that reads the state, decides with the
/// same arithmetic as the in-process limiter (in integer microseconds), and writes the new
/// state with a TTL of exactly what it needs. The state of subject `k` under limit `id` lives in
/// `prefix:{k}:id:alg` (the hash tag `{k}` keeps every limit of one subject on one Redis
/// Cluster slot, so [`check_all`](Self::check_all) can decide them together).
///
/// Clones share everything. Every verb is async (each is one round trip); the naming follows
/// the in-process [`RateLimiter`](crate::RateLimiter)'s (`verb_key[_n]`), and there is no
/// blocking form.
///
/// # Cancel safety
///
/// A decision is one script call. Dropping its future before the call is sent changes
/// nothing; dropping it after the call was sent, before the reply, leaves it unknown whether
/// Redis counted the request (as a timeout does: the call is never sent again). So an admission
/// may be counted that the caller never saw, never the reverse: dropping errs towards refusing
/// later requests, never towards admitting more than the limit. The waits
/// ([`acquire_key`](Self::acquire_key), [`acquire_key_n`](Self::acquire_key_n)) keep a
/// reservation they are sleeping on when dropped (see there).
///
/// ```no_run
/// use fluxrate::redis::{FailurePolicy, RedisBackend, RedisRateLimiter};
/// use fluxrate::{Algorithm, Quota};
/// use std::time::Duration;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::connect("redis://127.0.0.1:6379").await?;
/// let per_user = RedisRateLimiter::builder(&redis, "login", Quota::per_minute(10))
///     .algorithm(Algorithm::SlidingWindowCounter)
///     .timeout(Duration::from_millis(20))
///     .on_failure(FailurePolicy::FailLocal { share: 0.25 })
///     .build()?;
/// match per_user.check_key("alice").await {
///     Ok(admitted) => println!("{} left", admitted.remaining()),
///     Err(denied) => println!("no: {denied}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("id", &self.inner.id)
            .field("quota", &self.inner.quota)
            .field("algorithm", &self.inner.algorithm)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// A limit named `id` (part of every key: two limiters with the same prefix and id share
    /// their state) on `backend`.
    pub fn builder(backend: &RedisBackend, id: &str, quota: Quota) -> RedisBuilder {
        RedisBuilder::new(backend, id, quota)
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.inner.quota
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// The largest weight a request can have (burst, queue, or calls per window).
    pub fn capacity(&self) -> u64 {
        self.inner.params.cap
    }

    /// The backend.
    pub fn backend(&self) -> &RedisBackend {
        &self.inner.backend
    }

    /// The Redis key holding `key`'s state (the sliding log also uses this name + `:seq`).
    pub fn state_key<K: RedisKey + ?Sized>(&self, key: &K) -> Result<Vec<u8>, InvalidInput> {
        let mut raw = Vec::new();
        key.write_redis_key(&mut raw);
        self.inner.keys.names(&raw).map(|(state, _)| state)
    }

    /// The counters.
    pub fn stats(&self) -> RedisStats {
        self.inner.counters.snapshot()
    }

    /// Admit one request for `key` if the limit allows it now (or the failure policy does).
    ///
    /// # Cancel safety
    ///
    /// Dropped after its call was sent, the request may have been counted: see
    /// [Cancel safety](Self#cancel-safety).
    #[must_use]
    pub async fn allow_key<K: RedisKey + ?Sized>(&self, key: &K) -> bool {
        self.check_key(key).await.is_ok()
    }

    /// How long until one more request for `key` would be admitted (zero if now).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn retry_after_key<K: RedisKey + ?Sized>(
        &self,
        key: &K,
    ) -> Result<Duration, RedisDenied> {
        self.peek_key(key).await.map(|s| s.retry_after())
    }

    /// Admit one request for `key` if the limit allows it now.
    ///
    /// # Cancel safety
    ///
    /// Dropped after its call was sent, the request may have been counted: see
    /// [Cancel safety](Self#cancel-safety).
    pub async fn check_key<K: RedisKey + ?Sized>(&self, key: &K) -> Result<Admitted, RedisDenied> {
        self.decide_key_n(key, 1).await.result
    }

    /// Admit a request of weight `n` (all or nothing); `n = 0` only looks.
    ///
    /// # Cancel safety
    ///
    /// Dropped after its call was sent, the request may have been counted: see
    /// [Cancel safety](Self#cancel-safety).
    pub async fn check_key_n<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        n: u64,
    ) -> Result<Admitted, RedisDenied> {
        self.decide_key_n(key, n).await.result
    }

    /// [`check_key_n`](Self::check_key_n), saying who decided (Redis, or the failure policy).
    ///
    /// # Cancel safety
    ///
    /// Dropped after its call was sent, the request may have been counted: see
    /// [Cancel safety](Self#cancel-safety).
    pub async fn decide_key_n<K: RedisKey + ?Sized>(&self, key: &K, n: u64) -> RedisDecision {
        let max_wait = self.inner.params.algorithm.check_wait();
        self.decide(key, n, max_wait, Mode::Decide).await
    }

    /// Decide as [`check_key_n`](Self::check_key_n) would, without counting anything.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn dry_run_key_n<K: RedisKey + ?Sized>(&self, key: &K, n: u64) -> RedisDecision {
        let max_wait = self.inner.params.algorithm.check_wait();
        self.decide(key, n, max_wait, Mode::DryRun).await
    }

    /// Reserve one request for `key` if that means waiting at most `max_wait`:
    /// [`reserve_key_n`](Self::reserve_key_n) for a unit request.
    ///
    /// # Cancel safety
    ///
    /// Dropped after its call was sent, the request may have been counted: see
    /// [Cancel safety](Self#cancel-safety).
    pub async fn reserve_key<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        max_wait: Duration,
    ) -> Result<Admitted, RedisDenied> {
        self.reserve_key_n(key, 1, max_wait).await
    }

    /// Reserve `n` for `key` if that means waiting at most `max_wait` (token and leaky bucket:
    /// the admission says how long to wait in [`Admitted::delay`]; the others admit only now).
    ///
    /// # Cancel safety
    ///
    /// Dropped after its call was sent, the request may have been counted: see
    /// [Cancel safety](Self#cancel-safety).
    pub async fn reserve_key_n<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        n: u64,
        max_wait: Duration,
    ) -> Result<Admitted, RedisDenied> {
        self.decide(key, n, MaxWait::up_to(max_wait), Mode::Decide)
            .await
            .result
    }

    /// [`reserve_key_n`](Self::reserve_key_n), saying who decided (Redis, or the failure
    /// policy; a `FailLocal` fallback queues without the `max_wait` cap).
    ///
    /// # Cancel safety
    ///
    /// Dropped after its call was sent, the request may have been counted: see
    /// [Cancel safety](Self#cancel-safety).
    pub async fn decide_reserve_key_n<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        n: u64,
        max_wait: Duration,
    ) -> RedisDecision {
        self.decide(key, n, MaxWait::up_to(max_wait), Mode::Decide)
            .await
    }

    /// The state of `key` now: remaining calls, and when one more would be admitted.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn peek_key<K: RedisKey + ?Sized>(&self, key: &K) -> Result<Snapshot, RedisDenied> {
        let reply = self.plain(key, Mode::Snapshot, 0, 0).await?;
        Ok(reply.only().snapshot(reply.now, self.inner.params.cap))
    }

    /// Forget `key`'s state (a fresh limit).
    ///
    /// # Cancel safety
    ///
    /// Dropped after its call was sent, the change may or may not have been made.
    pub async fn reset_key<K: RedisKey + ?Sized>(&self, key: &K) -> Result<(), RedisDenied> {
        self.plain(key, Mode::Reset, 0, 0).await.map(|_| ())
    }

    /// Give back an admission Redis decided (token and leaky bucket), as the in-process
    /// [`cancel_key`](crate::RateLimiter::cancel_key): only if nothing was admitted for `key`
    /// since. Returns whether it was given back.
    ///
    /// This always asks Redis. An admission the failure policy made (the local fallback, fail
    /// open) is not in Redis, and under [`FailurePolicy::FailLocal`] a Redis admission also
    /// charged the local fallback: give back a [`RedisDecision`] with
    /// [`cancel_decision`](Self::cancel_decision) instead, which handles both.
    ///
    /// [`FailurePolicy::FailLocal`]: super::FailurePolicy::FailLocal
    ///
    /// # Cancel safety
    ///
    /// Dropped after its call was sent, the change may or may not have been made.
    pub async fn cancel_key<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        admitted: &Admitted,
    ) -> Result<bool, RedisDenied> {
        self.refund(key, admitted).await
    }

    /// Give back what `decision` (from [`decide_key_n`](Self::decide_key_n) for `key`) took,
    /// through whoever decided it (token and leaky bucket; only if nothing was admitted for
    /// `key` since, there). A Redis admission is refunded in Redis and, once Redis has given it
    /// back, so is its charge on the local fallback; an admission by the local fallback is given
    /// back to the local fallback, without a round trip; a fail-open admission and a refusal
    /// took nothing. Returns whether something was given back.
    ///
    /// ```no_run
    /// # use fluxrate::redis::RedisRateLimiter;
    /// # async fn demo(limit: &RedisRateLimiter, other_step_failed: bool) -> Result<(), fluxrate::redis::RedisDenied> {
    /// let decision = limit.decide_key_n("alice", 1).await;
    /// if decision.result.is_ok() && other_step_failed {
    ///     limit.cancel_decision("alice", &decision).await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropped after its call was sent, the change may or may not have been made.
    pub async fn cancel_decision<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        decision: &RedisDecision,
    ) -> Result<bool, RedisDenied> {
        let Ok(admitted) = &decision.result else {
            return Ok(false);
        };
        let local = self.inner.policy.local();
        let mut raw = Vec::new();
        key.write_redis_key(&mut raw);
        match decision.decided_by {
            DecidedBy::Redis => {
                let back = self.refund(&raw[..], admitted).await?;
                if let (true, Some(local), Some(warmed)) = (back, local, &decision.warmed) {
                    local.cancel_key(&raw[..], warmed);
                }
                Ok(back)
            }
            DecidedBy::LocalFallback => Ok(match local {
                Some(local) => local.cancel_key(&raw[..], admitted),
                None => false,
            }),
            // Nothing was counted (`InProcess` names an in-process HTTP limit, never a Redis
            // decision).
            DecidedBy::FailOpen
            | DecidedBy::FailClosed
            | DecidedBy::Invalid
            | DecidedBy::InProcess => Ok(false),
        }
    }

    /// The script's REFUND of a Redis admission.
    async fn refund<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        admitted: &Admitted,
    ) -> Result<bool, RedisDenied> {
        let tat = admitted.tat_after() / 1000;
        if tat == 0 || admitted.weight() == 0 {
            return Ok(false);
        }
        let reply = self
            .plain(key, Mode::Refund, admitted.weight(), tat)
            .await?;
        Ok(reply.only().given_back())
    }

    async fn decide<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        n: u64,
        max_wait: MaxWait,
        mode: Mode,
    ) -> RedisDecision {
        let inner = &*self.inner;
        let mut raw = Vec::new();
        key.write_redis_key(&mut raw);
        if n == 0 {
            // A look that changes nothing, as in-process.
            return match self.peek_key(&raw[..]).await {
                Ok(s) => RedisDecision::new(
                    Ok(Admitted::from_remote(
                        s.taken_at(),
                        0,
                        s.remaining(),
                        s.limit(),
                        s.reset_after().as_nanos() as u64,
                        0,
                        0,
                    )),
                    DecidedBy::Redis,
                ),
                Err(RedisDenied::Unavailable(u)) => inner.fallback(&raw, 0, &u),
                Err(e) => RedisDecision::new(Err(e), DecidedBy::Invalid),
            };
        }
        let call = [Call {
            limit: inner,
            n,
            max_wait,
            refund_tat: 0,
        }];
        match inner.send(&raw, &call, mode).await {
            Ok(reply) => {
                let result = reply.only().decision(reply.now, n, inner.params.cap);
                let mut warmed = None;
                if mode == Mode::Decide {
                    if result.is_ok() {
                        bump(&inner.counters.admitted);
                        warmed = inner.policy.warm(&raw, n);
                    } else {
                        bump(&inner.counters.limited);
                    }
                }
                RedisDecision {
                    warmed,
                    ..RedisDecision::new(result, DecidedBy::Redis)
                }
            }
            Err(RedisDenied::Unavailable(u)) => inner.fallback(&raw, n, &u),
            Err(e) => RedisDecision::new(Err(e), DecidedBy::Invalid),
        }
    }

    /// A call whose failures are returned as they are (no policy).
    async fn plain<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        mode: Mode,
        n: u64,
        refund_tat: u64,
    ) -> Result<Reply, RedisDenied> {
        let mut raw = Vec::new();
        key.write_redis_key(&mut raw);
        let call = [Call {
            limit: &self.inner,
            n,
            max_wait: MaxWait::Micros(0),
            refund_tat,
        }];
        self.inner.send(&raw, &call, mode).await
    }
}

/// One limit in a call to the script.
pub(super) struct Call<'a> {
    pub(super) limit: &'a Inner,
    pub(super) n: u64,
    pub(super) max_wait: MaxWait,
    /// REFUND: the TAT the admission left, µs; 0 otherwise.
    pub(super) refund_tat: u64,
}

impl Inner {
    /// Run the script once for `calls` (limits sharing this one's backend) on subject `raw`,
    /// with this limit's time source and time budget.
    pub(super) async fn send(
        &self,
        raw: &[u8],
        calls: &[Call<'_>],
        mode: Mode,
    ) -> Result<Reply, RedisDenied> {
        let now = self.time.now().map_err(RedisDenied::Invalid)?;
        let mut keys = Vec::with_capacity(calls.len() * 2);
        let mut args = Args::new(now, mode, self.time.ttl_extra_ms());
        for c in calls {
            let (state, aux) = c.limit.keys.names(raw).map_err(RedisDenied::Invalid)?;
            keys.push(state);
            keys.push(aux);
            args.push(&c.limit.params, c.n, c.max_wait, c.refund_tat);
        }
        let out = self
            .backend
            .eval(&keys, args.as_slice(), self.timeout)
            .await
            .map_err(RedisDenied::Unavailable)?;
        Reply::decode(out, args.limits()).map_err(|e| {
            RedisDenied::Unavailable(Unavailable {
                class: FailureClass::Indeterminate,
                retry_after: self.backend.breaker_open_for(),
                cause: e.to_string(),
            })
        })
    }

    /// What the failure policy decides for `n` after Redis failed with `u`.
    pub(super) fn fallback(&self, raw: &[u8], n: u64, u: &Unavailable) -> RedisDecision {
        self.policy
            .decide(raw, n, self.params.cap, u, &self.counters)
    }
}
