//! Async waiting (feature `tokio`) and `#[rate_limit]` on async functions. Time is tokio's
//! paused clock: waits are exact and take no wall time.
#![cfg(feature = "tokio")]

use fluxrate::{
    rate_limit, AcquireAsync, AcquireError, AcquireKeyAsync, Algorithm, NotKeyed, Quota,
    RateLimited, RateLimiter, TimeoutExceeded, TokioClock,
};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::time::Instant;

fn paused_limiter(q: Quota, alg: Algorithm) -> RateLimiter<NotKeyed, TokioClock> {
    RateLimiter::builder(q)
        .algorithm(alg)
        .clock(TokioClock::new())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn waits_are_exact_for_every_algorithm() {
    for alg in Algorithm::ALL {
        let l = paused_limiter(Quota::per_second(4), alg);
        let start = Instant::now();
        for _ in 0..8 {
            l.wait_async().await;
        }
        let took = start.elapsed();
        // Token bucket: 4 at once, then one per 250 ms. Leaky bucket: one per 250 ms from the
        // start. Fixed window and log: 4 at once, 4 more when the first second is over. The
        // counter: the previous window's 4 weigh 4·(1 − e/W), so window 1 admits at 1.25,
        // 1.5 and 1.75 s and the eighth in window 2.
        let expected = match alg {
            Algorithm::LeakyBucket => 1750,
            Algorithm::SlidingWindowCounter => 2000,
            _ => 1000,
        };
        assert_eq!(took, Duration::from_millis(expected), "{alg}");
    }
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_refused_at_once_and_consume_nothing() {
    let l = paused_limiter(Quota::per_second(1), Algorithm::TokenBucket);
    l.acquire_async(Duration::ZERO).await.unwrap();
    let start = Instant::now();
    let e: TimeoutExceeded = l
        .acquire_async(Duration::from_millis(999))
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Duration::from_secs(1));
    assert_eq!(start.elapsed(), Duration::ZERO, "a refused acquire slept");
    assert!(matches!(
        l.acquire_n_async(2, Duration::MAX).await,
        Err(AcquireError::Never(_))
    ));
    // Nothing was consumed: the next slot is still 1 s after the first.
    l.acquire_async(Duration::from_secs(1)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn keyed_async_waits_per_key() {
    let l = RateLimiter::builder(Quota::per_second(1))
        .clock(TokioClock::new())
        .keyed::<String>()
        .build()
        .unwrap();
    let start = Instant::now();
    l.wait_key_async("a").await;
    l.wait_key_async("b").await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    l.wait_key_async("a").await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let e = l
        .acquire_key_async("a", Duration::from_millis(10))
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Duration::from_secs(1));
}

#[rate_limit(calls = 2, period = 3600)]
async fn fetch(id: u32) -> Result<u32, RateLimited> {
    tokio::task::yield_now().await;
    Ok(id)
}

#[tokio::test]
async fn async_fn_with_on_limit_error() {
    assert_eq!(fetch(1).await, Ok(1));
    // A future dropped before its first poll consumes nothing.
    drop(fetch(99));
    assert_eq!(fetch(2).await, Ok(2));
    assert!(fetch(3).await.is_err());
}

static PACED: LazyLock<RateLimiter<NotKeyed, TokioClock>> = LazyLock::new(|| {
    RateLimiter::builder(Quota::per_second(10))
        .burst(1)
        .clock(TokioClock::new())
        .build()
        .unwrap()
});

#[rate_limit(limiter = PACED, on_limit = "wait")]
async fn paced() -> Instant {
    Instant::now()
}

#[derive(Debug)]
struct Busy;

impl From<TimeoutExceeded> for Busy {
    fn from(_: TimeoutExceeded) -> Self {
        Busy
    }
}

static KEYED: LazyLock<RateLimiter<u64, TokioClock>> = LazyLock::new(|| {
    RateLimiter::builder(Quota::per_minute(1))
        .clock(TokioClock::new())
        .keyed::<u64>()
        .build()
        .unwrap()
});

#[rate_limit(limiter = KEYED, key = user, on_limit = "wait", timeout = 30)]
async fn per_user(user: u64) -> Result<u64, Busy> {
    Ok(user)
}

#[tokio::test(start_paused = true)]
async fn async_fn_with_on_limit_wait_awaits_exactly() {
    let _ = PACED.clock();
    let times = [paced().await, paced().await, paced().await];
    assert_eq!(times[1] - times[0], Duration::from_millis(100));
    assert_eq!(times[2] - times[1], Duration::from_millis(100));

    let start = Instant::now();
    assert_eq!(per_user(1).await.unwrap(), 1);
    assert!(per_user(1).await.is_err(), "60 s away, timeout 30 s");
    assert_eq!(start.elapsed(), Duration::ZERO);
    tokio::time::advance(Duration::from_secs(40)).await;
    assert_eq!(per_user(1).await.unwrap(), 1);
    assert_eq!(start.elapsed(), Duration::from_secs(60));
}

/// D26 / S5: a waiter dropped while it sleeps on a reservation gives it back when nothing was
/// reserved after it; otherwise the later reservations keep their times.
#[tokio::test(start_paused = true)]
async fn dropped_waiters_give_back_what_they_can() {
    use std::sync::Arc;
    let l = Arc::new(paused_limiter(
        Quota::per_second(1).with_burst(1),
        Algorithm::TokenBucket,
    ));
    let start = Instant::now();
    l.acquire_async(Duration::ZERO).await.unwrap();

    // The last reservation, dropped: its slot (1 s) goes to the next caller.
    let l2 = l.clone();
    let waiter = tokio::spawn(async move { l2.acquire_async(Duration::from_secs(10)).await });
    tokio::task::yield_now().await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    l.acquire_async(Duration::from_secs(10)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));

    // Two reservations (2 s and 3 s); dropping the first gives nothing back (the second is
    // placed after it), and the second still leaves at 3 s.
    let (la, lb) = (l.clone(), l.clone());
    let a = tokio::spawn(async move { la.acquire_async(Duration::from_secs(10)).await });
    tokio::task::yield_now().await;
    let b = tokio::spawn(async move {
        lb.acquire_async(Duration::from_secs(10)).await.unwrap();
        Instant::now()
    });
    tokio::task::yield_now().await;
    a.abort();
    assert!(a.await.unwrap_err().is_cancelled());
    assert_eq!(b.await.unwrap() - start, Duration::from_secs(3));
    l.acquire_async(Duration::from_secs(10)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(4));
}
