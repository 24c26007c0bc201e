//! [`RedisRateLimiter::check_all`]: several limits of one subject decided in one round trip,
//! all or nothing.

use super::error::{InvalidInput, RedisDenied};
use super::key::RedisKey;
use super::limiter::{Call, RedisRateLimiter};
use super::script::Mode;
use super::stats::bump;
use crate::all_or_nothing::{all_or_nothing, AllOrNothing};
use crate::Admitted;

impl RedisRateLimiter {
    /// Decide several limits for one subject in one round trip, all or nothing: either every
    /// limit admits its weight and all are counted, or none is counted and the error names the
    /// first limit that refused (its index in `limits`). The limiters must share one backend;
    /// the first one's time source and time budget are used. On Redis Cluster this works
    /// because every limit of one subject hashes to the same slot.
    ///
    /// # Refunds
    ///
    /// The admissions come back without who decided them, so there is no
    /// [`cancel_decision`](Self::cancel_decision) for them: [`cancel_key`](Self::cancel_key)
    /// always refunds in Redis, which is wrong for an admission a `FailLocal` fallback made
    /// (it stays charged locally), and a warm charge of the fallback is not given back. Decide
    /// limits one by one with [`decide_key_n`](Self::decide_key_n) where admissions may be
    /// refunded.
    ///
    /// # Cancel safety
    ///
    /// One script call decides every limit. Dropped after the call was sent, before the reply,
    /// the limits may all have been counted (all or nothing holds in Redis: never some of
    /// them), as for [`check_key_n`](Self::check_key_n); see
    /// [Cancel safety](Self#cancel-safety). The local fallback, when Redis is unavailable,
    /// has no await point: it runs to the end once the failed call returns.
    pub async fn check_all<K: RedisKey + ?Sized>(
        key: &K,
        limits: &[(&RedisRateLimiter, u64)],
    ) -> Result<Vec<Admitted>, (usize, RedisDenied)> {
        let Some((first, _)) = limits.first() else {
            return Err((0, RedisDenied::Invalid(InvalidInput::Batch("no limits"))));
        };
        if limits
            .iter()
            .any(|(l, _)| !l.inner.backend.same(&first.inner.backend))
        {
            return Err((
                0,
                RedisDenied::Invalid(InvalidInput::Batch("limiters on different backends")),
            ));
        }
        let mut raw = Vec::new();
        key.write_redis_key(&mut raw);
        let calls: Vec<Call<'_>> = limits
            .iter()
            .map(|(l, n)| Call {
                limit: &l.inner,
                n: *n,
                max_wait: l.inner.params.algorithm.check_wait(),
                refund_tat: 0,
            })
            .collect();
        match first.inner.send(&raw, &calls, Mode::Decide).await {
            Ok(reply) => {
                let mut admitted = Vec::with_capacity(calls.len());
                for (i, (c, row)) in calls.iter().zip(&reply.rows).enumerate() {
                    match row.decision(reply.now, c.n, c.limit.params.cap) {
                        Ok(a) => admitted.push(a),
                        Err(d) => {
                            bump(&c.limit.counters.limited);
                            return Err((i, d));
                        }
                    }
                }
                for c in &calls {
                    bump(&c.limit.counters.admitted);
                    let _ = c.limit.policy.warm(&raw, c.n);
                }
                Ok(admitted)
            }
            Err(RedisDenied::Unavailable(u)) => {
                // Each limit's own policy decides; all or nothing across the local fallbacks.
                let (calls, raw, u) = (&calls, &raw, &u);
                // The fallbacks decide without an await point: nothing is left taken.
                let outcome = all_or_nothing(
                    &mut Vec::new(),
                    calls.len(),
                    move |i| {
                        let c = &calls[i];
                        std::future::ready(c.limit.fallback(raw, c.n, u).result)
                    },
                    move |i, a: Admitted| {
                        let back = calls[i]
                            .limit
                            .policy
                            .local()
                            .is_some_and(|local| local.cancel_key(&raw[..], &a));
                        std::future::ready((a, back))
                    },
                )
                .await;
                match outcome {
                    AllOrNothing::Admitted(admitted) => Ok(admitted),
                    AllOrNothing::Refused { index, refusal, .. } => Err((index, refusal)),
                }
            }
            Err(other) => Err((0, other)),
        }
    }
}
