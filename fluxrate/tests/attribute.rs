//! `#[rate_limit]` behaviour, mirroring the Python decorator's tests, plus G41–G42 (TESTS.md).

use fluxrate::{
    rate_limit, Clock, ManualClock, NotKeyed, Quota, RateLimited, RateLimiter, TimeoutExceeded,
};
use std::panic::catch_unwind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, LazyLock};
use std::time::Duration;

#[rate_limit(calls = 3, period = 60)]
fn three_per_minute() -> Result<u32, RateLimited> {
    Ok(7)
}

#[test]
fn n_calls_pass_then_the_next_is_limited_with_its_retry_after() {
    for _ in 0..3 {
        assert_eq!(three_per_minute(), Ok(7));
    }
    let e = three_per_minute().unwrap_err();
    // T = 20 s; the first token comes back 20 s after the burst (minus the µs this took).
    assert!(
        e.retry_after() > Duration::from_secs(19) && e.retry_after() <= Duration::from_secs(20)
    );
    assert_eq!(e.retry_after_secs(), 20);
    assert_eq!(e.limit(), 3);
}

/// An error type of the application, converted from the limiter's.
#[derive(Debug, PartialEq)]
enum ApiError {
    Limited(Duration),
    Timeout,
}

impl From<RateLimited> for ApiError {
    fn from(e: RateLimited) -> Self {
        ApiError::Limited(e.retry_after())
    }
}

impl From<TimeoutExceeded> for ApiError {
    fn from(_: TimeoutExceeded) -> Self {
        ApiError::Timeout
    }
}

#[rate_limit("2/minute", algorithm = "sliding_window", key = user)]
fn per_user(user: &str) -> Result<String, ApiError> {
    Ok(user.to_uppercase())
}

#[test]
fn keys_are_isolated_and_errors_convert() {
    assert_eq!(per_user("ann").unwrap(), "ANN");
    assert_eq!(per_user("ann").unwrap(), "ANN");
    assert!(matches!(per_user("ann"), Err(ApiError::Limited(d)) if d > Duration::from_secs(59)));
    assert_eq!(per_user("bob").unwrap(), "BOB");
    let owned = String::from("cy");
    assert!(per_user(&owned).is_ok());
}

#[rate_limit(calls = 1, period = "1h", on_limit = "none")]
fn maybe() -> Option<&'static str> {
    Some("done")
}

#[test]
fn on_limit_none_returns_none() {
    assert_eq!(maybe(), Some("done"));
    assert_eq!(maybe(), None);
}

/// Limiters with a manual clock, so that waits are exact and instant.
static CLOCK: LazyLock<ManualClock> = LazyLock::new(ManualClock::new);
static TICKS: LazyLock<RateLimiter<NotKeyed, ManualClock>> = LazyLock::new(|| {
    RateLimiter::builder(Quota::per_second(10))
        .burst(1)
        .clock(CLOCK.clone())
        .build()
        .unwrap()
});

#[rate_limit(limiter = TICKS, on_limit = "wait")]
fn tick() -> u64 {
    CLOCK.now()
}

#[test]
fn on_limit_wait_waits_exactly_the_right_time() {
    let times: Vec<u64> = (0..5).map(|_| tick()).collect();
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [100_000_000; 4], "{times:?}");
}

static SLOW_CLOCK: LazyLock<ManualClock> = LazyLock::new(ManualClock::new);
static SLOW: LazyLock<RateLimiter<String, ManualClock>> = LazyLock::new(|| {
    RateLimiter::builder(Quota::per_minute(1))
        .clock(SLOW_CLOCK.clone())
        .keyed::<String>()
        .build()
        .unwrap()
});

#[rate_limit(limiter = SLOW, key = name, on_limit = "wait", timeout = "30s")]
fn slow(name: &str) -> Result<(), ApiError> {
    Ok(())
}

#[test]
fn wait_with_a_timeout_refuses_at_once_without_consuming() {
    assert_eq!(slow("k"), Ok(()));
    let before = SLOW_CLOCK.now();
    // The next slot is 60 s away: more than the 30 s timeout. Refused at once.
    assert_eq!(slow("k"), Err(ApiError::Timeout));
    assert_eq!(SLOW_CLOCK.now(), before, "a refused wait slept");
    SLOW_CLOCK.advance(Duration::from_secs(40));
    // Now 20 s away: within the timeout, so it waits (the manual clock moves) and passes.
    assert_eq!(slow("k"), Ok(()));
    assert_eq!(SLOW_CLOCK.now(), before + 60_000_000_000);
    assert_eq!(slow("other"), Ok(()));
}

struct Counter {
    hits: u32,
}

impl Counter {
    #[rate_limit(calls = 2, period = 3600)]
    fn by_ref(&self) -> Result<u32, RateLimited> {
        Ok(self.hits)
    }

    /// Doc comments and other attributes are kept.
    #[inline]
    #[must_use]
    #[rate_limit(calls = 1, period = 3600, on_limit = "none")]
    fn by_mut(&mut self) -> Option<u32> {
        self.hits += 1;
        Some(self.hits)
    }

    #[rate_limit(calls = 1, period = 3600)]
    fn by_value(self) -> Result<u32, RateLimited> {
        Ok(self.hits)
    }
}

#[test]
fn methods_take_self_in_every_form() {
    let mut c = Counter { hits: 0 };
    assert!(c.by_ref().is_ok() && c.by_ref().is_ok() && c.by_ref().is_err());
    assert_eq!(c.by_mut(), Some(1));
    assert_eq!(c.by_mut(), None);
    assert_eq!(c.hits, 1, "the body did not run when limited");
    assert_eq!(Counter { hits: 5 }.by_value(), Ok(5));
    assert!(Counter { hits: 5 }.by_value().is_err());
}

#[rate_limit(calls = 2, period = 3600)]
fn generic<T: std::fmt::Debug>(t: T) -> Result<String, RateLimited> {
    Ok(format!("{t:?}"))
}

#[rate_limit(calls = 1, period = 3600, key = k)]
fn generic_key<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static>(
    k: K,
) -> Result<(), RateLimited> {
    Ok(())
}

/// G42: a `static` in a generic fn is one static: every monomorphization shares the limit;
/// keyed limiters are one per key type.
#[test]
fn generic_functions_share_one_limiter() {
    assert!(generic(1u8).is_ok());
    assert!(generic("two").is_ok());
    assert!(generic(3.0f64).is_err(), "the limit is shared across types");
    assert!(generic_key(1u8).is_ok());
    assert!(generic_key(1u8).is_err());
    assert!(
        generic_key(1u16).is_ok(),
        "another key type, another limiter"
    );
    assert!(generic_key(String::from("x")).is_ok());
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

#[rate_limit(calls = 2, period = 3600)]
fn panicky(fail: bool) -> Result<(), RateLimited> {
    if fail {
        PANICS.fetch_add(1, Ordering::SeqCst);
        panic!("body failed");
    }
    Ok(())
}

/// D25 / G42: a panic in the body leaves the limiter usable; the panicking call was counted.
#[test]
fn a_panicking_body_leaves_the_limiter_usable() {
    assert!(catch_unwind(|| panicky(true)).is_err());
    assert_eq!(PANICS.load(Ordering::SeqCst), 1);
    assert!(panicky(false).is_ok());
    assert!(
        panicky(false).is_err(),
        "the panicking call used one of the two"
    );
}

#[rate_limit(calls = 5, period = 3600)]
fn raced() -> Result<(), RateLimited> {
    Ok(())
}

/// G41: 16 threads released together make the first calls: one limiter, exactly 5 admitted.
#[test]
fn first_calls_racing_build_one_limiter() {
    let barrier = Barrier::new(16);
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                barrier.wait();
                if raced().is_ok() {
                    admitted.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(admitted.into_inner(), 5);
}

static REC_CLOCK: LazyLock<ManualClock> = LazyLock::new(ManualClock::new);
static REC: LazyLock<RateLimiter<NotKeyed, ManualClock>> = LazyLock::new(|| {
    RateLimiter::builder(Quota::per_second(1))
        .clock(REC_CLOCK.clone())
        .build()
        .unwrap()
});

#[rate_limit(limiter = REC, on_limit = "wait")]
fn recurse(depth: u32) -> u32 {
    if depth == 0 {
        0
    } else {
        1 + recurse(depth - 1)
    }
}

/// G42: recursion under a blocking wait does not deadlock (no lock is held while waiting).
#[test]
fn recursion_under_a_blocking_wait_does_not_deadlock() {
    assert_eq!(recurse(4), 4);
    assert_eq!(REC_CLOCK.now(), 4_000_000_000, "five calls, one per second");
}

static SHARED: LazyLock<RateLimiter<u32>> =
    LazyLock::new(|| RateLimiter::<u32>::keyed(Quota::per_hour(1)).unwrap());

#[rate_limit(limiter = SHARED, key = id)]
fn read(id: u32) -> Result<u32, RateLimited> {
    Ok(id)
}

#[rate_limit(limiter = SHARED, key = id, on_limit = "none")]
fn write(id: u32) -> Option<u32> {
    Some(id)
}

/// The Python `wrapper._rate_limiter`: a declared limiter is shared and reachable.
#[test]
fn shared_limiter_is_reachable_for_stats_and_reset() {
    assert_eq!(read(1), Ok(1));
    assert_eq!(write(1), None, "one limit for both functions");
    assert_eq!(write(2), Some(2));
    let stats = SHARED.stats();
    assert_eq!((stats.allowed(), stats.rejected(), stats.keys()), (2, 1, 2));
    SHARED.reset_key(&1);
    assert_eq!(write(1), Some(1));
}

/// A crate that reaches fluxrate through a re-export (or under another name) says where with
/// `crate = path`; the generated code then names nothing at `::fluxrate`.
mod through_a_reexport {
    pub(crate) mod deps {
        pub(crate) use fluxrate as limits;
    }

    #[fluxrate::rate_limit(calls = 1, period = 60, crate = self::deps::limits)]
    pub(crate) fn once() -> Result<(), fluxrate::RateLimited> {
        Ok(())
    }

    #[fluxrate::rate_limit(
        calls = 1,
        period = 60,
        on_limit = "none",
        crate = "crate::through_a_reexport::deps::limits"
    )]
    pub(crate) fn once_by_string() -> Option<u8> {
        Some(1)
    }
}

#[test]
fn the_crate_option_finds_fluxrate_through_a_reexport() {
    assert!(through_a_reexport::once().is_ok());
    assert!(through_a_reexport::once().is_err());
    assert_eq!(through_a_reexport::once_by_string(), Some(1));
    assert_eq!(through_a_reexport::once_by_string(), None);
}
