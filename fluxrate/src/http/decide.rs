//! Deciding one request against every limit of a layer, all or nothing, and the
//! [`Decision`] it leaves on the response.

use super::headers::{ceil_secs, Numbers};
use super::key::{KeyExtractor, RequestInfo, RequestKey};
use super::layer::Config;
use crate::{Admitted, Denied, RateLimiter};
use ::http::StatusCode;
use std::sync::Arc;
use std::time::Duration;

/// Where a limit is decided.
#[derive(Clone)]
pub(super) enum Backend {
    Local(Arc<RateLimiter<RequestKey>>),
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisRateLimiter),
}

/// One named limit of a layer.
#[derive(Clone)]
pub(super) struct Limit {
    pub(super) name: String,
    pub(super) backend: Backend,
    pub(super) capacity: u64,
    pub(super) extractor: Arc<dyn KeyExtractor>,
    pub(super) window_secs: u64,
}

/// One limit's answer for one request.
pub(super) enum Outcome {
    Admitted(Taken),
    Limited {
        retry: Duration,
        reset: u64,
    },
    /// Redis could not decide and the limit fails closed: 503.
    #[cfg(feature = "redis")]
    Unavailable {
        retry: Duration,
    },
}

impl Outcome {
    fn local(limit: &Limit, r: Result<Admitted, Denied>) -> Self {
        match r {
            Ok(a) => Self::Admitted(Taken::Local(a)),
            Err(Denied::Limited(e)) => Self::Limited {
                retry: e.retry_after(),
                reset: ceil_secs(e.reset_after()),
            },
            // A weight above the capacity never passes: say so with a long wait.
            Err(Denied::Never(_)) => Self::Limited {
                retry: Duration::from_secs(limit.window_secs),
                reset: limit.window_secs,
            },
        }
    }

    #[cfg(feature = "redis")]
    fn remote(limit: &Limit, d: crate::redis::Decision) -> Self {
        use crate::redis::RedisDenied;
        match d.result {
            Ok(a) => Self::Admitted(Taken::Redis(a, d)),
            Err(RedisDenied::Limited(e)) => Self::local(limit, Err(Denied::Limited(e))),
            Err(RedisDenied::Never(e)) => Self::local(limit, Err(Denied::Never(e))),
            Err(other) => Self::Unavailable {
                retry: other.retry_after().unwrap_or(Duration::from_secs(1)),
            },
        }
    }
}

/// What one limit took for a request, to give back if a later limit refuses it.
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

/// The decision for one request so far: the numbers for the headers, what was taken and for
/// which key it was decided (to give back on a refusal), and the refusal.
#[derive(Default)]
pub(super) struct Verdict {
    pub(super) numbers: Vec<Numbers>,
    pub(super) taken: Vec<(usize, RequestKey, Taken)>,
    pub(super) refused: Option<Refused>,
}

pub(super) struct Refused {
    pub(super) name: String,
    pub(super) retry: Duration,
    pub(super) status: Option<StatusCode>,
}

impl Verdict {
    /// Record limit `i`'s outcome, decided for `key`; false once the request is refused.
    fn record(&mut self, i: usize, limit: &Limit, key: RequestKey, outcome: Outcome) -> bool {
        let numbers = |remaining, reset| Numbers {
            name: limit.name.clone(),
            limit: limit.capacity,
            window: limit.window_secs,
            remaining,
            reset,
        };
        let (retry, reset, status) = match outcome {
            Outcome::Admitted(t) => {
                let a = t.admitted();
                self.numbers
                    .push(numbers(a.remaining(), ceil_secs(a.reset_after())));
                self.taken.push((i, key, t));
                return true;
            }
            Outcome::Limited { retry, reset } => (retry, reset, None),
            #[cfg(feature = "redis")]
            Outcome::Unavailable { retry } => (
                retry,
                ceil_secs(retry),
                Some(StatusCode::SERVICE_UNAVAILABLE),
            ),
        };
        self.numbers.push(numbers(0, reset));
        self.refused = Some(Refused {
            name: limit.name.clone(),
            retry,
            status,
        });
        false
    }
}

/// The outcome for one request, added to the response's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether every limit admitted the request.
    pub admitted: bool,
    /// The name of the limit that refused it, if any.
    pub refused_by: Option<String>,
    /// Whether the layer is in dry-run mode (a refused request went through anyway).
    pub dry_run: bool,
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
                Backend::Local(lim) => Outcome::local(l, lim.check_key_n(&key, n)),
                #[cfg(feature = "redis")]
                Backend::Redis(_) => unreachable!("remote limits are decided by decide_async"),
            };
            if !v.record(i, l, key, outcome) {
                break;
            }
        }
        if v.refused.is_some() {
            // All or nothing: give back what the earlier limits took.
            for (i, key, t) in &v.taken {
                if let (Backend::Local(lim), Taken::Local(a)) = (&self.limits[*i].backend, t) {
                    lim.cancel_key(key, a);
                }
            }
        }
        v
    }

    /// Decide a request against every limit, some of them in Redis.
    #[cfg(feature = "redis")]
    pub(super) async fn decide_async(&self, keys: Vec<RequestKey>, n: u64) -> Verdict {
        use crate::redis::RedisDenied;
        let mut v = Verdict::default();
        for (i, (l, mut key)) in self.limits.iter().zip(keys).enumerate() {
            let outcome = match &l.backend {
                Backend::Local(lim) => Outcome::local(l, lim.check_key_n(&key, n)),
                Backend::Redis(r) => {
                    let mut d = r.decide_key_n(&key, n).await;
                    if let Err(RedisDenied::Invalid(_)) = d.result {
                        // A key Redis will not take (too long once escaped) counts as unknown,
                        // and so does what it took.
                        key = RequestKey::Unknown;
                        d = r.decide_key_n(&key, n).await;
                    }
                    Outcome::remote(l, d)
                }
            };
            if !v.record(i, l, key, outcome) {
                break;
            }
        }
        if v.refused.is_some() {
            // Given back to whoever decided: the in-process limit, Redis, or Redis's local
            // fallback (which a Redis admission also charged).
            for (i, key, t) in &v.taken {
                match (&self.limits[*i].backend, t) {
                    (Backend::Local(lim), Taken::Local(a)) => {
                        lim.cancel_key(key, a);
                    }
                    (Backend::Redis(r), Taken::Redis(_, d)) => {
                        let _ = r.cancel_decision(key, d).await;
                    }
                    _ => {}
                }
            }
        }
        v
    }
}
