//! Deciding one request against every limit of a layer, all or nothing: each limit's outcome,
//! its header numbers, what it took (given back when a later limit refuses, or when a shaped
//! request is dropped while it waits).

use super::decision::{DecidedBy, LimitDecision};
use super::headers::{Current, Policy};
use super::key::{KeyExtractor, RequestInfo, RequestKey};
use super::layer::Config;
use super::outcome::ns;
use super::service::GiveBack;
use crate::all_or_nothing::{all_or_nothing, AllOrNothing};
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
    /// The name as a structured-field string, as the fields send it.
    pub(super) sf_name: Box<str>,
    /// The capacity as the legacy `X-RateLimit-Limit` sends it.
    pub(super) capacity_value: ::http::HeaderValue,
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
    Redis(Admitted, crate::redis::RedisDecision),
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
}

/// A limit that admitted: what it took (for `key`), its numbers and who decided.
pub(super) struct Step {
    key: RequestKey,
    taken: Taken,
    current: Option<Current>,
    by: DecidedBy,
}

/// What the limits decided so far took, while a request is being decided: given back if the
/// decision is dropped half-way (empty once it completes). It borrows the configuration and
/// clones it only to give something back.
struct Deciding<'a> {
    config: &'a Arc<Config>,
    taken: Vec<Step>,
}

impl Drop for Deciding<'_> {
    fn drop(&mut self) {
        if self.taken.is_empty() {
            return;
        }
        let taken: Vec<_> = core::mem::take(&mut self.taken)
            .into_iter()
            .enumerate()
            .map(|(i, step)| (i, step.key, step.taken))
            .collect();
        drop(GiveBack::new(self.config.clone(), taken));
    }
}

/// A limit that refused: why, its numbers and who decided.
pub(super) struct Stop {
    why: Refusal,
    current: Option<Current>,
    by: DecidedBy,
}

impl Outcome {
    /// The outcome as the all-or-nothing routine takes it: a step taken, or a stop.
    fn step(self, limit: &Limit, key: RequestKey) -> Result<Step, Stop> {
        match self {
            Outcome::Admitted { taken, current, by } => Ok(Step {
                key,
                taken,
                current,
                by,
            }),
            Outcome::Limited { retry, current, by } => Err(Stop {
                why: Refusal::Limited { retry },
                current,
                by,
            }),
            Outcome::Never {
                requested,
                capacity,
            } => Err(Stop {
                why: Refusal::Never {
                    requested,
                    capacity,
                },
                current: None,
                by: match limit.backend {
                    Backend::Local(_) => DecidedBy::InProcess,
                    #[cfg(feature = "redis")]
                    Backend::Redis(_) => DecidedBy::Redis,
                },
            }),
            #[cfg(feature = "redis")]
            Outcome::Unavailable { retry } => Err(Stop {
                why: Refusal::Unavailable { retry },
                current: None,
                by: DecidedBy::FailClosed,
            }),
        }
    }
}

impl Config {
    pub(super) fn cost(&self, info: &RequestInfo<'_>) -> u64 {
        self.cost.as_ref().map_or(1, |f| f(info))
    }

    /// The key of limit `i` for a request.
    pub(super) fn key(&self, i: usize, info: &RequestInfo<'_>) -> RequestKey {
        self.limits[i]
            .extractor
            .key(info)
            .unwrap_or(RequestKey::Unknown)
    }

    /// The key of every limit for a request.
    #[cfg(feature = "redis")]
    pub(super) fn keys(&self, info: &RequestInfo<'_>) -> Vec<RequestKey> {
        (0..self.limits.len()).map(|i| self.key(i, info)).collect()
    }

    /// Decide a request against every limit, in order and all or nothing (what the earlier
    /// limits took is given back when a later one refuses).
    ///
    /// In-process limits decide without an await point: when every limit is local the future
    /// completes on its first poll, and the service decides the request in `call`.
    ///
    /// # Cancel safety
    ///
    /// Dropped while a Redis limit is pending, it gives back what the earlier limits took (in
    /// process at once, in Redis from a task on the current runtime), as a shaped request
    /// dropped while it waits does.
    pub(super) async fn decide(
        self: &Arc<Self>,
        key: impl Fn(usize) -> RequestKey,
        n: u64,
    ) -> Verdict {
        let mut deciding = Deciding {
            config: self,
            taken: Vec::new(),
        };
        let (config, key) = (&**self, &key);
        let outcome = all_or_nothing(
            &mut deciding.taken,
            self.limits.len(),
            move |i| config.decide_one(i, key(i), n),
            move |i, step: Step| async move {
                let back = config.give_back(i, &step.key, &step.taken).await;
                (step, back)
            },
        )
        .await;
        self.verdict(outcome, n)
    }

    /// One limit's decision for `key` (a Redis limit may decide for another key: see
    /// [`decide_redis`](Self::decide_redis)).
    async fn decide_one(&self, i: usize, key: RequestKey, n: u64) -> Result<Step, Stop> {
        let l = &self.limits[i];
        let (key, outcome) = match &l.backend {
            Backend::Local(lim) => {
                let outcome = l.local(&**lim, &key, n, self.max_delay);
                (key, outcome)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(r) => self.decide_redis(l, r, key, n).await,
        };
        outcome.step(l, key)
    }

    /// The verdict of the all-or-nothing routine: each limit decided, in order, its numbers
    /// (after a refusal, as of before the admissions that came back) and what stays taken.
    fn verdict(&self, outcome: AllOrNothing<Step, Stop>, n: u64) -> Verdict {
        let count = self.limits.len();
        let mut v = Verdict {
            items: Vec::with_capacity(count),
            limits: Vec::with_capacity(count),
            ..Verdict::default()
        };
        let admitted = |v: &mut Verdict, i: usize, step: &Step| {
            v.delay = v.delay.max(step.taken.admitted().delay());
            v.items.push((i, step.current));
            v.limits.push(self.limit_decision(i, step.by, true));
        };
        match outcome {
            AllOrNothing::Admitted(steps) => {
                for (i, step) in steps.iter().enumerate() {
                    admitted(&mut v, i, step);
                }
                // What was taken is needed only to give it back: by a shaped request dropped
                // while it waits.
                if !v.delay.is_zero() {
                    v.taken = steps
                        .into_iter()
                        .enumerate()
                        .map(|(i, s)| (i, s.key, s.taken))
                        .collect();
                }
            }
            AllOrNothing::Refused {
                index,
                refusal: stop,
                given_back,
            } => {
                let mut back = Vec::new();
                for (i, (step, came_back)) in given_back.iter().enumerate() {
                    admitted(&mut v, i, step);
                    if *came_back {
                        back.push(i);
                    }
                }
                v.items.push((index, stop.current));
                v.limits.push(self.limit_decision(index, stop.by, false));
                v.refused = Some(Refused {
                    index,
                    why: stop.why,
                });
                v.given_back(self, &back, n);
            }
        }
        v
    }

    fn limit_decision(&self, i: usize, decided_by: DecidedBy, admitted: bool) -> LimitDecision {
        LimitDecision {
            name: self.limits[i].name.clone(),
            decided_by,
            admitted,
        }
    }

    /// Give back at once what in-process limit `i` took for `key`, and whether it came back;
    /// `None` for what a Redis limit took (a round trip: [`give_back`](Self::give_back)).
    pub(super) fn give_back_local(&self, i: usize, key: &RequestKey, t: &Taken) -> Option<bool> {
        match (&self.limits[i].backend, t) {
            (Backend::Local(lim), Taken::Local(a)) => Some(lim.cancel(key, a)),
            #[cfg(feature = "redis")]
            _ => None,
        }
    }

    /// Give back what limit `i` took for `key` (in process, in Redis, or by Redis's local
    /// fallback, which the decision names); whether it came back.
    pub(super) async fn give_back(&self, i: usize, key: &RequestKey, t: &Taken) -> bool {
        if let Some(back) = self.give_back_local(i, key, t) {
            return back;
        }
        #[cfg(feature = "redis")]
        if let (Backend::Redis(r), Taken::Redis(_, d)) = (&self.limits[i].backend, t) {
            return matches!(r.cancel_decision(key, d).await, Ok(true));
        }
        false
    }

    /// A Redis limit's decision, and the key it was decided for: a key Redis will not take
    /// (too long once escaped) is decided, and counted, as unknown.
    #[cfg(feature = "redis")]
    async fn decide_redis(
        &self,
        l: &Limit,
        r: &crate::redis::RedisRateLimiter,
        mut key: RequestKey,
        n: u64,
    ) -> (RequestKey, Outcome) {
        use crate::redis::RedisDenied;
        if n > l.capacity {
            let never = Outcome::Never {
                requested: n,
                capacity: l.capacity,
            };
            return (key, never);
        }
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
        let outcome = match (&d.result, cap, d.decided_by) {
            // The local fallback queues without the cap: past it, give its place
            // back (a local CAS) and refuse.
            (Ok(a), Some(m), DecidedBy::LocalFallback) if ns(a.delay()) > m => {
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
        };
        (key, outcome)
    }
}
