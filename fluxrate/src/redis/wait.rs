//! The waits of [`RedisRateLimiter`]: [`acquire_key`](RedisRateLimiter::acquire_key) and
//! [`acquire_key_n`](RedisRateLimiter::acquire_key_n), built on its reservations.

use super::error::RedisDenied;
use super::key::RedisKey;
use super::limiter::RedisRateLimiter;
use crate::{Admitted, TimeoutExceeded};
use std::time::Duration;

impl RedisRateLimiter {
    /// Wait (asynchronously) until one request is admitted for `key`, or fail at once with
    /// [`RedisDenied::Timeout`], consuming nothing, if that would take longer than `timeout`.
    /// The token and leaky bucket reserve a place and sleep once; the window algorithms sleep
    /// until their retry time and try again.
    ///
    /// # Cancel safety
    ///
    /// A future dropped while it sleeps on a reservation keeps it (giving it back would take a
    /// round trip from a destructor); where that matters, use
    /// [`reserve_key_n`](Self::reserve_key_n), sleep for its [`delay`](Admitted::delay), and
    /// [`cancel_key`](Self::cancel_key) if the wait is abandoned. Dropped during a call, the
    /// request may have been counted ([Cancel safety](Self#cancel-safety)); dropped while it
    /// sleeps on a refusal, it holds nothing.
    pub async fn acquire_key<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        timeout: Duration,
    ) -> Result<Admitted, RedisDenied> {
        self.acquire_key_n(key, 1, timeout).await
    }

    /// [`acquire_key`](Self::acquire_key) for a weight `n`.
    ///
    /// # Cancel safety
    ///
    /// As [`acquire_key`](Self::acquire_key)'s.
    pub async fn acquire_key_n<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        n: u64,
        timeout: Duration,
    ) -> Result<Admitted, RedisDenied> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.reserve_key_n(key, n, left).await {
                Ok(a) => {
                    if !a.delay().is_zero() {
                        tokio::time::sleep(a.delay()).await;
                    }
                    return Ok(a);
                }
                Err(RedisDenied::Limited(l)) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if l.retry_after() > left {
                        return Err(RedisDenied::Timeout(TimeoutExceeded::new(
                            timeout,
                            l.retry_after(),
                        )));
                    }
                    tokio::time::sleep(l.retry_after().max(Duration::from_micros(1))).await;
                }
                Err(other) => return Err(other),
            }
        }
    }
}
