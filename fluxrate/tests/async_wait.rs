//! Async waiting (feature `tokio`) and `#[rate_limit]` on async functions. Time is tokio's
//! paused clock: waits are exact and take no wall time.
#![cfg(feature = "tokio")]

use fluxrate::{
    rate_limit, AcquireAsync, AcquireError, AcquireKeyAsync, Algorithm, Clock, NotKeyed, Quota,
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
            l.wait().await;
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
    l.acquire(Duration::ZERO).await.unwrap();
    let start = Instant::now();
    let e: TimeoutExceeded = l.acquire(Duration::from_millis(999)).await.unwrap_err();
    assert_eq!(e.retry_after(), Duration::from_secs(1));
    assert_eq!(start.elapsed(), Duration::ZERO, "a refused acquire slept");
    assert!(matches!(
        l.acquire_n(2, Duration::MAX).await,
        Err(AcquireError::Never(_))
    ));
    // Nothing was consumed: the next slot is still 1 s after the first.
    l.acquire(Duration::from_secs(1)).await.unwrap();
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
    l.wait_key("a").await;
    l.wait_key("b").await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    l.wait_key("a").await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let e = l
        .acquire_key("a", Duration::from_millis(10))
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
    l.acquire(Duration::ZERO).await.unwrap();

    // The last reservation, dropped: its slot (1 s) goes to the next caller.
    let l2 = l.clone();
    let waiter = tokio::spawn(async move { l2.acquire(Duration::from_secs(10)).await });
    tokio::task::yield_now().await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    l.acquire(Duration::from_secs(10)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));

    // Two reservations (2 s and 3 s); dropping the first gives nothing back (the second is
    // placed after it), and the second still leaves at 3 s.
    let (la, lb) = (l.clone(), l.clone());
    let a = tokio::spawn(async move { la.acquire(Duration::from_secs(10)).await });
    tokio::task::yield_now().await;
    let b = tokio::spawn(async move {
        lb.acquire(Duration::from_secs(10)).await.unwrap();
        Instant::now()
    });
    tokio::task::yield_now().await;
    a.abort();
    assert!(a.await.unwrap_err().is_cancelled());
    assert_eq!(b.await.unwrap() - start, Duration::from_secs(3));
    l.acquire(Duration::from_secs(10)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(4));
}

/// Runs `f` on a thread of its own and returns what it returns; fails, instead of hanging, if it
/// has not returned within 10 s of real time (a panic in `f` is passed on).
fn within_10s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still blocked after 10 s of real time")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker returned without sending"),
        },
    }
}

/// A current-thread runtime whose time starts paused, as in `#[tokio::test(start_paused)]`.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Issue 11, defect 8: a blocking wait on a `TokioClock` while tokio's time is paused. Nothing
/// advances paused time while the runtime's own thread blocks, so sleeping until tokio's time
/// reaches the deadline never ends. The wait must end, as exactly as the async one: the clock
/// reads, after the blocking waits, what tokio's time reads after the same async waits.
#[test]
fn blocking_waits_on_a_paused_tokio_clock_end_and_are_exact() {
    within_10s("blocking waits under paused time", || {
        paused_runtime().block_on(async {
            for alg in Algorithm::ALL {
                let q = Quota::per_second(2);
                let asynch = paused_limiter(q, alg);
                let start = Instant::now();
                for _ in 0..5 {
                    asynch.wait().await;
                }
                let exact = u64::try_from(start.elapsed().as_nanos()).unwrap();
                assert!(exact > 0, "{alg}: the sequence has to wait");

                let blocking = paused_limiter(q, alg);
                let (start, real) = (Instant::now(), std::time::Instant::now());
                let t0 = blocking.clock().now();
                blocking.blocking_acquire(Duration::from_secs(60)).unwrap();
                for _ in 0..4 {
                    blocking.blocking_wait();
                }
                assert_eq!(blocking.clock().now() - t0, exact, "{alg}");
                assert_eq!(
                    start.elapsed(),
                    Duration::ZERO,
                    "{alg}: tokio's own time does not move"
                );
                assert!(
                    real.elapsed() < Duration::from_secs(2),
                    "{alg}: {:?}",
                    real.elapsed()
                );
                // A wait beyond the timeout is still refused at once.
                while blocking.check().is_ok() {}
                let now = blocking.clock().now();
                assert!(blocking.blocking_acquire(Duration::ZERO).is_err(), "{alg}");
                assert_eq!(blocking.clock().now(), now, "{alg}");
            }
        })
    });
}

/// Defect 8 from `spawn_blocking`: tokio does not auto-advance paused time while a blocking
/// task runs, so this wait could not end either; and keyed limiters wait the same way.
#[test]
fn blocking_waits_on_a_paused_tokio_clock_end_in_spawn_blocking() {
    let at = within_10s(
        "a blocking wait in spawn_blocking under paused time",
        || {
            paused_runtime().block_on(async {
                let l = std::sync::Arc::new(
                    RateLimiter::builder(Quota::per_second(4))
                        .clock(TokioClock::new())
                        .keyed::<u64>()
                        .build()
                        .unwrap(),
                );
                let t0 = l.clock().now();
                tokio::task::spawn_blocking(move || {
                    for _ in 0..6 {
                        l.blocking_wait_key(&7);
                    }
                    l.clock().now() - t0
                })
                .await
                .unwrap()
            })
        },
    );
    assert_eq!(at, 500_000_000, "4 at once, then 2 more 250 ms apart");
}

/// Two blocking waiters (in `spawn_blocking`, where tokio's time is the runtime's) on one paused
/// clock: one waiter skipping ahead (moving the
/// clones' shared offset) must not make the other believe tokio's time runs, and sleep its
/// whole wait (a minute here) in real time.
#[test]
fn two_blocking_waiters_on_a_paused_tokio_clock_both_end() {
    let ends = within_10s("two blocking waiters under paused time", || {
        paused_runtime().block_on(async {
            let l = std::sync::Arc::new(
                RateLimiter::builder(Quota::per_minute(1))
                    .clock(TokioClock::new())
                    .build()
                    .unwrap(),
            );
            l.blocking_wait();
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let l = l.clone();
                    tokio::task::spawn_blocking(move || l.blocking_wait().admitted_at())
                })
                .collect();
            let mut ends = Vec::new();
            for w in waiters {
                ends.push(w.await.unwrap());
            }
            ends.sort_unstable();
            ends
        })
    });
    assert_eq!(ends, [60_000_000_000, 120_000_000_000]);
}

/// Outside paused time nothing changes: a blocking wait on a `TokioClock` sleeps in real time
/// and the clock keeps reading tokio's time.
#[test]
fn blocking_waits_on_a_running_tokio_clock_sleep_in_real_time() {
    within_10s("a blocking wait in real time", || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = RateLimiter::builder(Quota::per_second(20).with_burst(1))
                .clock(TokioClock::new())
                .build()
                .unwrap();
            let (t0, start) = (l.clock().now(), Instant::now());
            l.check().unwrap();
            l.blocking_acquire(Duration::from_secs(1)).unwrap();
            assert!(
                start.elapsed() >= Duration::from_millis(45),
                "{:?}",
                start.elapsed()
            );
            let drift = (l.clock().now() - t0).abs_diff(start.elapsed().as_nanos() as u64);
            assert!(
                drift < 5_000_000,
                "the clock follows tokio's time: {drift} ns apart"
            );
        })
    });
}
