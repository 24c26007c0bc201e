//! Async waiting on tokio's timer (feature `tokio`).

use crate::{
    AcquireError, Admitted, Clock, Denied, InsufficientCapacity, NotKeyed, RateLimiter,
    TimeoutExceeded,
};
use core::borrow::Borrow;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A [`Clock`] that follows tokio's time, including paused time in tests
/// (`#[tokio::test(start_paused = true)]`), so that async waits are exact and instant there.
///
/// # Blocking waits
///
/// The blocking waits ([`RateLimiter::blocking_acquire`], [`RateLimiter::blocking_wait`] and
/// their keyed and weighted forms) sleep the thread until tokio's time reaches the deadline. While tokio's
/// time is paused that would never happen: paused time moves only when the runtime, idle,
/// jumps to its next timer, or when the test calls `tokio::time::advance`, and neither
/// happens while the runtime's own thread is the one blocked (tokio does not auto-advance
/// while a `spawn_blocking` task runs either). So a blocking wait that sees tokio's time stand
/// still over 100 µs of real time (looked at again at least every 50 ms of a longer wait)
/// ends at once, as on a
/// [`ManualClock`](crate::ManualClock): this clock (and its clones) moves to the end of the
/// wait, and from then on reads that much ahead of `tokio::time::Instant`. The wait is as
/// exact as an async one; only tokio's own timers do not see it. Outside paused time a
/// blocking wait sleeps in real time and the clock reads tokio's time. In async code prefer
/// [`AcquireAsync`] and [`AcquireKeyAsync`]: a blocking wait blocks the executor.
///
/// # Memory ordering
///
/// The time skipped by blocking waits is one atomic, raised with `fetch_max` (`AcqRel`) and read
/// with `Acquire` by every reading: a reading that follows the end of a wait on another thread
/// is at least the wait's deadline.
///
/// # Examples
///
/// ```
/// use fluxrate::{AcquireAsync, Quota, RateLimiter, TokioClock};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = RateLimiter::builder(Quota::per_second(2)).clock(TokioClock::new()).build().unwrap();
/// let start = tokio::time::Instant::now();
/// for _ in 0..4 {
///     limiter.wait().await;
/// }
/// assert_eq!(start.elapsed(), Duration::from_millis(1000)); // 2 at once, then one per 500 ms
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TokioClock {
    epoch: tokio::time::Instant,
    /// Nanoseconds this clock reads ahead of tokio's time: what blocking waits skipped while
    /// tokio's time was paused. Shared by clones.
    ahead: Arc<AtomicU64>,
}

/// How long a blocking wait sleeps in real time before it checks whether tokio's time moves.
const PAUSE_PROBE_NS: u64 = 100_000;

/// The longest real sleep of a blocking wait between two looks at whether tokio's time moves.
const PAUSE_RECHECK_NS: u64 = 50_000_000;

impl TokioClock {
    /// A clock whose epoch is tokio's now (call it inside a runtime when time is paused).
    pub fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            ahead: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Tokio's time since the epoch, in nanoseconds.
    fn tokio_elapsed(&self) -> u64 {
        nanos(tokio::time::Instant::now().saturating_duration_since(self.epoch))
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> u64 {
        self.tokio_elapsed()
            .saturating_add(self.ahead.load(Ordering::Acquire))
    }

    /// Sleep in real time until tokio's time reaches `deadline`; if tokio's time stands still
    /// while real time passes (it is paused), move this clock to `deadline` instead (see
    /// [Blocking waits](TokioClock#blocking-waits)).
    fn sleep_until(&self, deadline: u64) {
        let mut slice = PAUSE_PROBE_NS;
        loop {
            let now = self.now();
            if now >= deadline {
                return;
            }
            // tokio's own time, without what clones skipped: another waiter moving the shared
            // offset must not look like running time.
            let before = self.tokio_elapsed();
            std::thread::sleep(Duration::from_nanos((deadline - now).min(slice)));
            if self.tokio_elapsed() == before {
                // Paused: nothing will move tokio's time while this thread blocks.
                self.ahead.fetch_max(
                    deadline.saturating_sub(self.tokio_elapsed()),
                    Ordering::AcqRel,
                );
                return;
            }
            // Running (or paused time auto-advanced meanwhile): sleep on in real time, looking
            // again at least every PAUSE_RECHECK_NS so that a pause is noticed.
            slice = (slice * 2).min(PAUSE_RECHECK_NS);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Gives a reservation back if the future waiting on it is dropped (cancelled).
struct CancelOnDrop<'a> {
    admitted: Admitted,
    cancel: Option<&'a (dyn Fn(&Admitted) -> bool + Sync)>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel(&self.admitted);
        }
    }
}

/// The wait loop shared by every async acquire: reserve within the time left, then sleep the
/// reservation's delay; or sleep until the request could pass, if that is within the time left.
/// Refused at once, consuming nothing, when the wait would exceed `timeout`.
///
/// Cancellation: if the future is dropped while it sleeps on a reservation, the reservation is
/// given back when nothing was reserved after it; otherwise it stays consumed, since later
/// reservations were placed after it. Dropped while it sleeps on a refusal, it holds nothing.
async fn acquire_loop<C: Clock>(
    clock: &C,
    timeout: Duration,
    mut reserve: impl FnMut(Duration) -> Result<Admitted, Denied>,
    cancel: &(dyn Fn(&Admitted) -> bool + Sync),
) -> Result<Admitted, AcquireError> {
    let deadline = clock.now().saturating_add(nanos(timeout));
    loop {
        let budget = Duration::from_nanos(deadline.saturating_sub(clock.now()));
        match reserve(budget) {
            Ok(a) => {
                if !a.delay().is_zero() {
                    let mut guard = CancelOnDrop {
                        admitted: a,
                        cancel: Some(cancel),
                    };
                    tokio::time::sleep(a.delay()).await;
                    guard.cancel = None;
                }
                return Ok(a);
            }
            Err(Denied::Never(e)) => return Err(AcquireError::Never(e)),
            Err(Denied::Limited(e)) => {
                if e.retry_after() > budget {
                    return Err(AcquireError::Timeout(TimeoutExceeded::new(
                        timeout,
                        e.retry_after(),
                    )));
                }
                tokio::time::sleep(e.retry_after()).await;
            }
        }
    }
}

/// Async waiting for direct limiters (feature `tokio`): the async counterparts of
/// [`RateLimiter::blocking_acquire`], [`RateLimiter::blocking_acquire_n`],
/// [`RateLimiter::blocking_wait`] and [`RateLimiter::blocking_wait_n`], under the plain names.
/// They never block the executor: they await tokio's timer for exactly the time the limiter
/// says. Any clock works; with [`TokioClock`] the waits follow tokio's (possibly paused) time.
///
/// ```
/// use fluxrate::{AcquireAsync, Quota, RateLimiter};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RateLimiter::direct(Quota::per_second(100))?;
/// let admitted = limiter.acquire(Duration::from_millis(50)).await?;
/// assert!(admitted.delay() <= Duration::from_millis(50));
/// # Ok(())
/// # }
/// ```
pub trait AcquireAsync {
    /// Wait until one request is admitted, or fail at once (consuming nothing) if that would
    /// take longer than `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future consumes nothing, except in one case: a token or leaky bucket
    /// reservation whose slot was followed by a later reservation stays consumed (the later
    /// one was placed after it). Otherwise the slot is given back when the future is dropped
    /// (a window algorithm reserves nothing while it waits).
    fn acquire(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Admitted, TimeoutExceeded>> + Send;

    /// [`acquire`](Self::acquire) for a weight `n`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future consumes nothing, except in one case: a token or leaky bucket
    /// reservation whose slot was followed by a later reservation stays consumed (the later
    /// one was placed after it). Otherwise the slot is given back when the future is dropped
    /// (a window algorithm reserves nothing while it waits).
    fn acquire_n(
        &self,
        n: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<Admitted, AcquireError>> + Send;

    /// Wait until one request is admitted, however long it takes.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future consumes nothing, except in one case: a token or leaky bucket
    /// reservation whose slot was followed by a later reservation stays consumed (the later
    /// one was placed after it). Otherwise the slot is given back when the future is dropped
    /// (a window algorithm reserves nothing while it waits).
    fn wait(&self) -> impl Future<Output = Admitted> + Send;

    /// Wait until a request of weight `n` is admitted; fails at once only if `n` exceeds the
    /// capacity.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future consumes nothing, except in one case: a token or leaky bucket
    /// reservation whose slot was followed by a later reservation stays consumed (the later
    /// one was placed after it). Otherwise the slot is given back when the future is dropped
    /// (a window algorithm reserves nothing while it waits).
    fn wait_n(&self, n: u64)
        -> impl Future<Output = Result<Admitted, InsufficientCapacity>> + Send;
}

impl<C, H> AcquireAsync for RateLimiter<NotKeyed, C, H>
where
    C: Clock,
    H: BuildHasher + Clone + Send + Sync,
{
    async fn acquire(&self, timeout: Duration) -> Result<Admitted, TimeoutExceeded> {
        self.acquire_n(1, timeout).await.map_err(AcquireError::unit)
    }

    async fn acquire_n(&self, n: u64, timeout: Duration) -> Result<Admitted, AcquireError> {
        acquire_loop(
            self.clock(),
            timeout,
            |budget| self.reserve_n(n, budget),
            &|a| self.cancel(a),
        )
        .await
    }

    async fn wait(&self) -> Admitted {
        self.wait_n(1).await.unwrap_or_else(|e| e.unit())
    }

    async fn wait_n(&self, n: u64) -> Result<Admitted, InsufficientCapacity> {
        self.acquire_n(n, Duration::MAX)
            .await
            .map_err(AcquireError::unbounded)
    }
}

/// Async waiting for keyed limiters (feature `tokio`): the async counterparts of
/// [`RateLimiter::blocking_acquire_key`], [`RateLimiter::blocking_acquire_key_n`],
/// [`RateLimiter::blocking_wait_key`] and [`RateLimiter::blocking_wait_key_n`], under the plain
/// names.
///
/// ```
/// use fluxrate::{AcquireKeyAsync, Quota, RateLimiter};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let per_user = RateLimiter::<String>::keyed(Quota::per_second(100))?;
/// per_user.acquire_key("alice", Duration::from_millis(50)).await?;
/// per_user.wait_key_n("bob", 3).await?;
/// # Ok(())
/// # }
/// ```
pub trait AcquireKeyAsync<K> {
    /// Wait until one request for `key` is admitted, or fail at once (consuming nothing) if
    /// that would take longer than `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future consumes nothing, except in one case: a token or leaky bucket
    /// reservation whose slot was followed by a later reservation stays consumed (the later
    /// one was placed after it). Otherwise the slot is given back when the future is dropped
    /// (a window algorithm reserves nothing while it waits).
    fn acquire_key<Q>(
        &self,
        key: &Q,
        timeout: Duration,
    ) -> impl Future<Output = Result<Admitted, TimeoutExceeded>> + Send
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + Sync + ?Sized;

    /// [`acquire_key`](Self::acquire_key) for a weight `n`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future consumes nothing, except in one case: a token or leaky bucket
    /// reservation whose slot was followed by a later reservation stays consumed (the later
    /// one was placed after it). Otherwise the slot is given back when the future is dropped
    /// (a window algorithm reserves nothing while it waits).
    fn acquire_key_n<Q>(
        &self,
        key: &Q,
        n: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<Admitted, AcquireError>> + Send
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + Sync + ?Sized;

    /// Wait until one request for `key` is admitted, however long it takes.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future consumes nothing, except in one case: a token or leaky bucket
    /// reservation whose slot was followed by a later reservation stays consumed (the later
    /// one was placed after it). Otherwise the slot is given back when the future is dropped
    /// (a window algorithm reserves nothing while it waits).
    fn wait_key<Q>(&self, key: &Q) -> impl Future<Output = Admitted> + Send
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + Sync + ?Sized;

    /// Wait until a request of weight `n` for `key` is admitted; fails at once only if `n`
    /// exceeds the capacity.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future consumes nothing, except in one case: a token or leaky bucket
    /// reservation whose slot was followed by a later reservation stays consumed (the later
    /// one was placed after it). Otherwise the slot is given back when the future is dropped
    /// (a window algorithm reserves nothing while it waits).
    fn wait_key_n<Q>(
        &self,
        key: &Q,
        n: u64,
    ) -> impl Future<Output = Result<Admitted, InsufficientCapacity>> + Send
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + Sync + ?Sized;
}

impl<K, C, H> AcquireKeyAsync<K> for RateLimiter<K, C, H>
where
    K: Hash + Eq + Send + Sync,
    C: Clock,
    H: BuildHasher + Clone + Send + Sync,
{
    async fn acquire_key<Q>(&self, key: &Q, timeout: Duration) -> Result<Admitted, TimeoutExceeded>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + Sync + ?Sized,
    {
        self.acquire_key_n(key, 1, timeout)
            .await
            .map_err(AcquireError::unit)
    }

    async fn acquire_key_n<Q>(
        &self,
        key: &Q,
        n: u64,
        timeout: Duration,
    ) -> Result<Admitted, AcquireError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + Sync + ?Sized,
    {
        acquire_loop(
            self.clock(),
            timeout,
            |budget| self.reserve_key_n(key, n, budget),
            &|a| self.cancel_key(key, a),
        )
        .await
    }

    async fn wait_key<Q>(&self, key: &Q) -> Admitted
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + Sync + ?Sized,
    {
        self.wait_key_n(key, 1).await.unwrap_or_else(|e| e.unit())
    }

    async fn wait_key_n<Q>(&self, key: &Q, n: u64) -> Result<Admitted, InsufficientCapacity>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + Sync + ?Sized,
    {
        self.acquire_key_n(key, n, Duration::MAX)
            .await
            .map_err(AcquireError::unbounded)
    }
}
