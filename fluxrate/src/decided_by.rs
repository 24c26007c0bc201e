//! [`DecidedBy`]: who decided a limit, one meaning for the Redis limiter and the HTTP layer.

/// Who decided one limit's outcome: the limiter itself, or a failure policy because Redis could
/// not decide.
///
/// The HTTP layer (`http::DecidedBy`, in each limit of a response's `Decision`) and the Redis
/// limiter (`redis::DecidedBy`, in each `RedisDecision`) re-export this one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecidedBy {
    /// An in-process limiter (an HTTP limit built with `limit` or `limiter`). Named apart
    /// from [`LocalFallback`](Self::LocalFallback) so that neither reads as the other (the
    /// Redis limiter's `Local` of earlier releases is `LocalFallback`).
    InProcess,
    /// The script, in Redis.
    Redis,
    /// Redis could not decide and the failure policy `FailOpen` admitted without counting
    /// (the HTTP layer's `RateLimit` field leaves this limit's item out: it has no numbers to
    /// tell).
    FailOpen,
    /// Redis could not decide and the failure policy `FailClosed` refused (503 in the HTTP
    /// layer).
    FailClosed,
    /// Redis could not decide and the limit's local fallback (`FailLocal`) did: the numbers
    /// are the fallback's share of the quota.
    LocalFallback,
    /// Nobody: the input was invalid (a Redis key too long once escaped, a batch of limiters on
    /// different backends).
    Invalid,
}

impl DecidedBy {
    /// Whether the limit was decided by something other than its own limiter (a Redis
    /// outage): [`FailOpen`](Self::FailOpen), [`FailClosed`](Self::FailClosed) or
    /// [`LocalFallback`](Self::LocalFallback).
    ///
    /// ```
    /// # #[cfg(any(feature = "tower", feature = "redis"))] {
    /// use fluxrate::DecidedBy;
    ///
    /// assert!(!DecidedBy::Redis.degraded());
    /// assert!(DecidedBy::LocalFallback.degraded());
    /// # }
    /// ```
    pub fn degraded(self) -> bool {
        matches!(
            self,
            Self::FailOpen | Self::FailClosed | Self::LocalFallback
        )
    }
}
