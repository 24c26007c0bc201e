//! Deciding one request against every limit of a layer, all or nothing: each limit's outcome,
//! its header numbers, what it took (given back when a later limit refuses, or when a shaped
//! request is dropped while it waits).

use super::decision::{DecidedBy, LimitDecision};
use super::headers::{bucket_current, Current, Policy};
use super::key::{KeyExtractor, RequestInfo, RequestKey};
use super::layer::Config;
use crate::{Admitted, Algorithm, Clock, Denied, RateLimited, RateLimiter, Snapshot};
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

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Limit {
    /// The longest queue delay of a shaping limit (a leaky bucket): `Some(None)` for no cap
    /// beyond the queue's own, `None` for limits that do not shape.
    fn shaper(&self, max_delay: Option<Duration>) -> Option<Option<u64>> {
        (self.algorithm == Algorithm::LeakyBucket).then(|| max_delay.map(ns))
    }

    fn is_bucket(&self) -> bool {
        matches!(
            self.algorithm,
            Algorithm::TokenBucket | Algorithm::LeakyBucket
        )
    }

    /// The numbers of a bucket limit whose TAT is `ahead` ns past the decision.
    pub(super) fn bucket(&self, ahead: u64, max_delay: Option<Duration>) -> Current {
        let max_wait = self.shaper(max_delay).flatten();
        let (r, window) = bucket_current(self.capacity, self.interval, ahead, max_wait);
        Current {
            r,
            t: Some(Duration::from_nanos(window)),
            reset: Duration::from_nanos(ahead),
            ahead: Some(ahead),
        }
    }

    /// The numbers after an admission; `peek` reads the key's state where the admission alone
    /// does not tell them (in-process windows), `None` for a remote backend.
    fn admitted(
        &self,
        a: &Admitted,
        max_delay: Option<Duration>,
        peek: Option<&dyn Fn() -> Snapshot>,
    ) -> Current {
        if self.is_bucket() {
            // The admission's TAT: the key's own cell, or the shared overflow cell that
            // decided it.
            return self.bucket(ns(a.reset_after()), max_delay);
        }
        let unknown_window = Current {
            r: a.remaining(),
            t: None,
            reset: a.reset_after(),
            ahead: None,
        };
        match (self.algorithm, peek) {
            // After an admission `reset_after` is the end of the admission's window, and using
            // what remains leaves nothing until then.
            (Algorithm::FixedWindow, _) if a.weight() > 0 => Current {
                t: Some(a.reset_after()),
                ..unknown_window
            },
            (_, Some(peek)) => {
                let s = peek();
                // An admission leaves the key's own cell used: a fresh one means the shared
                // overflow cell decided (the store is full), whose window is not known here.
                if s.remaining() >= s.limit() {
                    unknown_window
                } else {
                    from_snapshot(&s)
                }
            }
            (_, None) => unknown_window,
        }
    }

    /// The numbers after a refusal of `n` units; `peek` as for [`admitted`](Self::admitted).
    fn refused(
        &self,
        e: &RateLimited,
        n: u64,
        max_delay: Option<Duration>,
        peek: Option<&dyn Fn() -> Snapshot>,
    ) -> Current {
        // A refused unit: nothing is available, and one unit comes after `retry_after` (not
        // for a capped shaper's cell other than the key's own, whose `retry_after` is its whole
        // delay, not when one fits within the cap).
        let capped = self.shaper(max_delay).flatten().is_some();
        let unit = Current {
            r: 0,
            t: (n == 1 && !(capped && peek.is_some())).then(|| e.retry_after()),
            reset: e.reset_after(),
            ahead: None,
        };
        let Some(peek) = peek else {
            return if self.is_bucket() {
                self.bucket(ns(e.reset_after()), max_delay)
            } else {
                unit
            };
        };
        let s = peek();
        let own = if self.is_bucket() {
            // The key's own queue, with the shaper's cap.
            self.bucket(ns(s.reset_after()), max_delay)
        } else {
            from_snapshot(&s)
        };
        if self.own_cell_admits(&s, n, max_delay) {
            // The key's own cell would have admitted it: the store refused (full of live keys,
            // `Overflow::Reject`: nothing for this key before `retry_after`, when a slot may
            // free), or the shared overflow cell did.
            return unit;
        }
        own
    }

    /// Whether the key's own cell, in the state `s`, admits `n` units at once now: a bucket
    /// when `R + n·T ≤ b·T` (and a shaper's delay `R` is within its cap: a batch departs at
    /// once); a window when `n` units remain.
    fn own_cell_admits(&self, s: &Snapshot, n: u64, max_delay: Option<Duration>) -> bool {
        if !self.is_bucket() {
            return s.remaining() >= n;
        }
        let ahead = ns(s.reset_after());
        let (t, b) = (u128::from(self.interval), u128::from(self.capacity));
        let fits = u128::from(ahead) + u128::from(n) * t <= b * t;
        let within_cap = self
            .shaper(max_delay)
            .flatten()
            .map_or(true, |m| ahead <= m);
        fits && within_cap
    }

    /// When `n` units could go through a shaper refused for its delay cap or its queue:
    /// `max(R + n·T − b·T, R − max_wait)`.
    fn shaper_retry(&self, e: &RateLimited, n: u64, max_wait: u64) -> Duration {
        let ahead = u128::from(ns(e.reset_after()));
        let (t, b) = (u128::from(self.interval), u128::from(self.capacity));
        let by_queue = (ahead + u128::from(n) * t).saturating_sub(b * t);
        let by_delay = ahead.saturating_sub(u128::from(max_wait));
        Duration::from_nanos(u64::try_from(by_queue.max(by_delay)).unwrap_or(u64::MAX))
    }

    /// The outcome of an in-process decision.
    fn local(
        &self,
        lim: &dyn LocalLimiter,
        key: &RequestKey,
        n: u64,
        max_delay: Option<Duration>,
    ) -> Outcome {
        if n > self.capacity {
            // Never, whatever the store holds (a full store would answer "later").
            return Outcome::Never {
                requested: n,
                capacity: self.capacity,
            };
        }
        let shaper = self.shaper(max_delay);
        let result = match shaper {
            Some(Some(m)) => lim.reserve(key, n, Duration::from_nanos(m)),
            _ => lim.check(key, n),
        };
        let peek = || lim.peek(key);
        match result {
            Ok(a) => Outcome::Admitted {
                current: Some(self.admitted(&a, max_delay, Some(&peek))),
                taken: Taken::Local(a),
                by: DecidedBy::Local,
            },
            Err(Denied::Limited(e)) => {
                let current = self.refused(&e, n, max_delay, Some(&peek));
                Outcome::Limited {
                    retry: match shaper {
                        // The key's own queue refused (not the store): when it would fit.
                        Some(Some(m)) if current.ahead.is_some() => self.shaper_retry(&e, n, m),
                        _ => e.retry_after(),
                    },
                    current: Some(current),
                    by: DecidedBy::Local,
                }
            }
            Err(Denied::Never(e)) => Outcome::Never {
                requested: e.requested(),
                capacity: e.capacity(),
            },
        }
    }

    /// The outcome of a Redis decision, made with the shaper's delay cap in the script.
    #[cfg(feature = "redis")]
    fn remote(&self, d: crate::redis::Decision, n: u64, max_delay: Option<Duration>) -> Outcome {
        use crate::redis::{DecidedBy as By, RedisDenied};
        let by = match d.decided_by {
            By::Redis => DecidedBy::Redis,
            By::FailOpen => DecidedBy::FailOpen,
            By::Local => DecidedBy::LocalFallback,
            _ => DecidedBy::FailClosed,
        };
        let cap = self.shaper(max_delay).flatten();
        match &d.result {
            Ok(a) => {
                let current = match by {
                    // Fail-open admitted without counting: no numbers to tell.
                    DecidedBy::FailOpen => None,
                    // The fallback's numbers are its own share of the quota, and it queues
                    // without the layer's cap: `r` as it says (none under a cap), no window.
                    DecidedBy::LocalFallback => Some(Current {
                        r: if cap.is_some() { 0 } else { a.remaining() },
                        t: None,
                        reset: a.reset_after(),
                        ahead: None,
                    }),
                    _ => Some(self.admitted(a, max_delay, None)),
                };
                Outcome::Admitted {
                    current,
                    taken: Taken::Redis(*a, d.clone()),
                    by,
                }
            }
            Err(RedisDenied::Limited(e)) if by == DecidedBy::LocalFallback => Outcome::Limited {
                retry: e.retry_after(),
                current: Some(Current {
                    r: 0,
                    t: None,
                    reset: e.reset_after(),
                    ahead: None,
                }),
                by,
            },
            Err(RedisDenied::Limited(e)) => Outcome::Limited {
                retry: match cap {
                    Some(m) => self.shaper_retry(e, n, m),
                    None => e.retry_after(),
                },
                current: Some(self.refused(e, n, max_delay, None)),
                by,
            },
            Err(RedisDenied::Never(e)) => Outcome::Never {
                requested: e.requested(),
                capacity: e.capacity(),
            },
            Err(other) => Outcome::Unavailable {
                retry: other.retry_after().unwrap_or(Duration::from_secs(1)),
            },
        }
    }
}

fn from_snapshot(s: &Snapshot) -> Current {
    Current {
        r: s.remaining(),
        t: s.effective_window(),
        reset: s.reset_after(),
        ahead: None,
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
