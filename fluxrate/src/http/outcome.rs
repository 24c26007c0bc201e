//! One limit's outcome for one request: its decision (in-process or in Redis, a shaper with its
//! delay cap), and the header numbers it can honestly tell (the key's own cell, a full store's
//! refusal, the shared overflow cell, a local fallback).

use super::decide::{Limit, LocalLimiter, Outcome, Taken};
use super::decision::DecidedBy;
use super::headers::{bucket_current, Current};
use super::key::RequestKey;
use crate::{Admitted, Algorithm, Denied, KeyCell, RateLimited, Snapshot};
use std::time::Duration;

pub(super) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Limit {
    /// The longest queue delay of a shaping limit (a leaky bucket): `Some(None)` for no cap
    /// beyond the queue's own, `None` for limits that do not shape.
    pub(super) fn shaper(&self, max_delay: Option<Duration>) -> Option<Option<u64>> {
        (self.algorithm == Algorithm::LeakyBucket).then(|| max_delay.map(ns))
    }

    /// Whether the limit is decided in Redis (a round trip: the decision may wait).
    #[cfg(feature = "redis")]
    pub(super) fn is_redis(&self) -> bool {
        matches!(self.backend, super::decide::Backend::Redis(_))
    }

    pub(super) fn is_bucket(&self) -> bool {
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
    pub(super) fn admitted(
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
            // The shared overflow cell decided (the store is full): its window is not the key's.
            _ if a.key_cell() != KeyCell::Own => unknown_window,
            (_, Some(peek)) => from_snapshot(&peek()),
            (_, None) => unknown_window,
        }
    }

    /// The numbers after a refusal of `n` units; `peek` as for [`admitted`](Self::admitted).
    pub(super) fn refused(
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
        if e.key_cell() != KeyCell::Own {
            // Not the key's own cell: the store refused (full of live keys,
            // `OverflowPolicy::Reject`: nothing for this key before `retry_after`, when a slot
            // may free), or the shared overflow cell did.
            return unit;
        }
        match peek {
            // The key's own queue, with the shaper's cap.
            Some(peek) if self.is_bucket() => self.bucket(ns(peek().reset_after()), max_delay),
            Some(peek) => from_snapshot(&peek()),
            None if self.is_bucket() => self.bucket(ns(e.reset_after()), max_delay),
            None => unit,
        }
    }

    /// When `n` units could go through a shaper refused for its delay cap or its queue:
    /// `max(R + n·T − b·T, R − max_wait)`.
    pub(super) fn shaper_retry(&self, e: &RateLimited, n: u64, max_wait: u64) -> Duration {
        let ahead = u128::from(ns(e.reset_after()));
        let (t, b) = (u128::from(self.interval), u128::from(self.capacity));
        let by_queue = (ahead + u128::from(n) * t).saturating_sub(b * t);
        let by_delay = ahead.saturating_sub(u128::from(max_wait));
        Duration::from_nanos(u64::try_from(by_queue.max(by_delay)).unwrap_or(u64::MAX))
    }

    /// The outcome of an in-process decision.
    pub(super) fn local(
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
                by: DecidedBy::InProcess,
            },
            Err(Denied::Limited(e)) => {
                let current = self.refused(&e, n, max_delay, Some(&peek));
                Outcome::Limited {
                    retry: match shaper {
                        // The key's own queue refused (not the store): when it would fit.
                        Some(Some(m)) if e.key_cell() == KeyCell::Own => {
                            self.shaper_retry(&e, n, m)
                        }
                        _ => e.retry_after(),
                    },
                    current: Some(current),
                    by: DecidedBy::InProcess,
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
    pub(super) fn remote(
        &self,
        d: crate::redis::RedisDecision,
        n: u64,
        max_delay: Option<Duration>,
    ) -> Outcome {
        use crate::redis::RedisDenied;
        let by = d.decided_by;
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
