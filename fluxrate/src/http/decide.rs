//! Deciding one request against every limit of a layer, all or nothing: each limit's outcome,
//! its header numbers, what it took (given back when a later limit refuses, or when a shaped
//! request is dropped while it waits).

use super::decision::{DecidedBy, LimitDecision};
use super::headers::{Current, Policy};
use super::key::{KeyExtractor, RequestInfo, RequestKey};
use super::layer::Config;
use super::outcome::ns;
use crate::{Admitted, Algorithm, Clock, Denied, RateLimiter, Snapshot};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

/// What the layer needs of an in-process limiter, whatever its clock and hasher.
pub(super) trait LocalLimiter: Send + Sync {
    fn check(&self, key: &RequestKey, n: u64) -> Result<Admitted, Denied>;
    fn reserve(&self, key: &RequestKey, n: u64, max_wait: Duration) -> Result<Admitted, Denied>;
    fn peek(&self, key: &RequestKey) -> Snapshot;
    fn cancel(&self, key: &RequestKey, admitted: &Admitted) -> bool;
}

impl<C, S> LocalLimiter for RateLimiter<RequestKey, C, S>
where
    C: Clock,
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    fn check(&self, key: &RequestKey, n: u64) -> Result<Admitted, Denied> {
        self.check_key_n(key, n)
    }

    fn reserve(&self, key: &RequestKey, n: u64, max_wait: Duration) -> Result<Admitted, Denied> {
        self.reserve_key_n(key, n, max_wait)
    }

    fn peek(&self, key: &RequestKey) -> Snapshot {
        self.peek_key(key)
    }

    fn cancel(&self, key: &RequestKey, admitted: &Admitted) -> bool {
        self.cancel_key(key, admitted)
    }
}

/// Where a limit is decided.
#[derive(Clone)]
pub(super) enum Backend {
    Local(Arc<dyn LocalLimiter>),
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisRateLimiter),
}

/// One named limit of a layer.
#[derive(Clone)]
pub(super) struct Limit {
    pub(super) name: Arc<str>,
    pub(super) backend: Backend,
    pub(super) extractor: Arc<dyn KeyExtractor>,
    pub(super) policy: Policy,
    pub(super) algorithm: Algorithm,
    /// Burst, queue capacity, or calls per window.
    pub(super) capacity: u64,
    /// The token and leaky buckets' emission interval in ns, as the backend computes it.
    pub(super) interval: u64,
}

/// One limit's answer for one request.
pub(super) enum Outcome {
    Admitted {
        taken: Taken,
        current: Option<Current>,
        by: DecidedBy,
    },
    Limited {
        retry: Duration,
        current: Option<Current>,
        by: DecidedBy,
    },
    /// The cost is above the capacity: it can never pass.
    Never { requested: u64, capacity: u64 },
    /// Redis could not decide and the limit fails closed: 503.
    #[cfg(feature = "redis")]
    Unavailable { retry: Duration },
}

/// What one limit took for a request, to give back if the request does not go through.
pub(super) enum Taken {
    Local(Admitted),
    /// The admission and the whole decision: who decided is who gives it back.
    #[cfg(feature = "redis")]
    Redis(Admitted, crate::redis::Decision),
}

impl Taken {
    fn admitted(&self) -> &Admitted {
        match self {
            Self::Local(a) => a,
            #[cfg(feature = "redis")]
            Self::Redis(a, _) => a,
        }
    }
}

/// Why a request was refused.
pub(super) enum Refusal {
    Limited {
        retry: Duration,
    },
    Never {
        requested: u64,
        capacity: u64,
    },
    #[cfg(feature = "redis")]
    Unavailable {
        retry: Duration,
    },
}

/// The refusing limit and why.
pub(super) struct Refused {
    pub(super) index: usize,
    pub(super) why: Refusal,
}

/// The decision for one request so far: the numbers for the headers, what was taken and for
/// which key it was decided (to give back), who decided each limit, the refusal, and the
/// longest shaping delay.
#[derive(Default)]
pub(super) struct Verdict {
    pub(super) items: Vec<(usize, Option<Current>)>,
    pub(super) taken: Vec<(usize, RequestKey, Taken)>,
    pub(super) limits: Vec<LimitDecision>,
    pub(super) refused: Option<Refused>,
    pub(super) delay: Duration,
}

impl Verdict {
    /// The admissions of `limits` were given back: their items describe the state before them
    /// (a bucket's TAT moves back by `n·T`; the windows give nothing back).
    pub(super) fn given_back(&mut self, config: &Config, limits: &[usize], n: u64) {
        // A refused request waits for nothing.
        self.delay = Duration::ZERO;
        for (i, current) in &mut self.items {
            let l = &config.limits[*i];
            if let (true, Some(Current { ahead: Some(a), .. })) = (limits.contains(i), *current) {
                let before = a.saturating_sub(n.saturating_mul(l.interval));
                *current = Some(l.bucket(before, config.max_delay));
            }
        }
    }

    /// The request waited `by` before the inner service saw it: the numbers as of then (with
    /// no other traffic, a bucket's TAT is that much nearer; a window's end too, and what was
    /// available still is).
    pub(super) fn aged(&mut self, config: &Config, by: Duration) {
        for (i, current) in &mut self.items {
            let Some(c) = current else { continue };
            *c = match c.ahead {
                Some(a) => config.limits[*i].bucket(a.saturating_sub(ns(by)), config.max_delay),
                None => Current {
                    t: c.t.map(|t| t.saturating_sub(by)),
                    reset: c.reset.saturating_sub(by),
                    ..*c
                },
            };
        }
    }

    /// Record limit `i`'s outcome, decided for `key`; false once the request is refused.
    fn record(&mut self, i: usize, limit: &Limit, key: RequestKey, outcome: Outcome) -> bool {
        let decided = |decided_by, admitted| LimitDecision {
            name: limit.name.clone(),
            decided_by,
            admitted,
        };
        let (why, current, by) = match outcome {
            Outcome::Admitted { taken, current, by } => {
                self.delay = self.delay.max(taken.admitted().delay());
                self.items.push((i, current));
                self.limits.push(decided(by, true));
                self.taken.push((i, key, taken));
                return true;
            }
            Outcome::Limited { retry, current, by } => (Refusal::Limited { retry }, current, by),
            Outcome::Never {
                requested,
                capacity,
            } => {
                let by = match limit.backend {
                    Backend::Local(_) => DecidedBy::Local,
                    #[cfg(feature = "redis")]
                    Backend::Redis(_) => DecidedBy::Redis,
                };
                (
                    Refusal::Never {
                        requested,
                        capacity,
                    },
                    None,
                    by,
                )
            }
            #[cfg(feature = "redis")]
            Outcome::Unavailable { retry } => {
                (Refusal::Unavailable { retry }, None, DecidedBy::FailClosed)
            }
        };
        self.items.push((i, current));
        self.limits.push(decided(by, false));
        self.refused = Some(Refused { index: i, why });
        false
    }
}

impl Config {
    pub(super) fn cost(&self, info: &RequestInfo<'_>) -> u64 {
        self.cost.as_ref().map_or(1, |f| f(info))
    }

    pub(super) fn keys(&self, info: &RequestInfo<'_>) -> Vec<RequestKey> {
        self.limits
            .iter()
            .map(|l| l.extractor.key(info).unwrap_or(RequestKey::Unknown))
            .collect()
    }

    /// Decide a request against every (in-process) limit.
    #[cfg_attr(not(feature = "redis"), allow(irrefutable_let_patterns))]
    pub(super) fn decide(&self, keys: Vec<RequestKey>, n: u64) -> Verdict {
        let mut v = Verdict::default();
        for (i, (l, key)) in self.limits.iter().zip(keys).enumerate() {
            let outcome = match &l.backend {
                Backend::Local(lim) => l.local(&**lim, &key, n, self.max_delay),
                #[cfg(feature = "redis")]
                Backend::Redis(_) => unreachable!("remote limits are decided by decide_async"),
            };
            if !v.record(i, l, key, outcome) {
                break;
            }
        }
        if v.refused.is_some() {
            // All or nothing: give back what the earlier limits took.
            let back = self.give_back_local(&v.taken);
            v.given_back(self, &back, n);
        }
        v
    }

    /// Give back what in-process limits took (Redis admissions are left to the caller); the
    /// limits whose admission came back.
    pub(super) fn give_back_local(&self, taken: &[(usize, RequestKey, Taken)]) -> Vec<usize> {
        let mut back = Vec::new();
        for (i, key, t) in taken {
            #[allow(irrefutable_let_patterns)]
            if let (Backend::Local(lim), Taken::Local(a)) = (&self.limits[*i].backend, t) {
                if lim.cancel(key, a) {
                    back.push(*i);
                }
            }
        }
        back
    }

    /// Give back everything taken: in-process limits, Redis, or Redis's local fallback (which
    /// a Redis admission also charged).
    #[cfg(feature = "redis")]
    pub(super) async fn give_back(&self, taken: &[(usize, RequestKey, Taken)]) -> Vec<usize> {
        let mut back = self.give_back_local(taken);
        back.extend(self.give_back_remote(taken).await);
        back
    }

    /// Give back what Redis limits took; the limits whose admission came back.
    #[cfg(feature = "redis")]
    pub(super) async fn give_back_remote(
        &self,
        taken: &[(usize, RequestKey, Taken)],
    ) -> Vec<usize> {
        let mut back = Vec::new();
        for (i, key, t) in taken {
            if let (Backend::Redis(r), Taken::Redis(_, d)) = (&self.limits[*i].backend, t) {
                if let Ok(true) = r.cancel_decision(key, d).await {
                    back.push(*i);
                }
            }
        }
        back
    }

    /// Decide a request against every limit, some of them in Redis.
    #[cfg(feature = "redis")]
    pub(super) async fn decide_async(&self, keys: Vec<RequestKey>, n: u64) -> Verdict {
        use crate::redis::RedisDenied;
        let mut v = Verdict::default();
        for (i, (l, mut key)) in self.limits.iter().zip(keys).enumerate() {
            let outcome = match &l.backend {
                Backend::Local(lim) => l.local(&**lim, &key, n, self.max_delay),
                Backend::Redis(_) if n > l.capacity => Outcome::Never {
                    requested: n,
                    capacity: l.capacity,
                },
                Backend::Redis(r) => {
                    // A shaper's delay cap goes into the script (`max_wait`).
                    let cap = l.shaper(self.max_delay).flatten();
                    let decide = |key: &RequestKey| {
                        let (r, key) = (r.clone(), key.clone());
                        async move {
                            match cap {
                                Some(m) => {
                                    r.decide_reserve_key_n(&key, n, Duration::from_nanos(m))
                                        .await
                                }
                                None => r.decide_key_n(&key, n).await,
                            }
                        }
                    };
                    let mut d = decide(&key).await;
                    if let Err(RedisDenied::Invalid(_)) = d.result {
                        // A key Redis will not take (too long once escaped) counts as unknown,
                        // and so does what it took.
                        key = RequestKey::Unknown;
                        d = decide(&key).await;
                    }
                    match (&d.result, cap, d.decided_by) {
                        // The local fallback queues without the cap: past it, give its place
                        // back (a local CAS) and refuse.
                        (Ok(a), Some(m), crate::redis::DecidedBy::Local) if ns(a.delay()) > m => {
                            let _ = r.cancel_decision(&key, &d).await;
                            Outcome::Limited {
                                retry: Duration::from_nanos(ns(a.delay()) - m),
                                current: Some(Current {
                                    r: 0,
                                    t: None,
                                    reset: a.reset_after(),
                                    ahead: None,
                                }),
                                by: DecidedBy::LocalFallback,
                            }
                        }
                        _ => l.remote(d, n, self.max_delay),
                    }
                }
            };
            if !v.record(i, l, key, outcome) {
                break;
            }
        }
        if v.refused.is_some() {
            let back = self.give_back(&v.taken).await;
            v.given_back(self, &back, n);
        }
        v
    }
}
