//! Auto traits: the limiters are `Send + Sync` (shared across threads behind an `Arc` or in a
//! `static`), their errors are `Send + Sync + 'static` (boxed into `anyhow`-style errors), and
//! the futures of their async methods are `Send` (spawned on a multi-threaded runtime). These
//! are compile-time checks: a type or future that loses an auto trait fails to compile here,
//! before a user's `tokio::spawn` does.

use fluxrate::{
    AcquireError, Admitted, CachedClock, ConfigError, Denied, InsufficientCapacity, KeyHasher,
    ManualClock, MonotonicClock, NotKeyed, RateLimited, RateLimiter, Snapshot, Stats,
    TimeoutExceeded,
};

fn send_sync<T: Send + Sync>() {}
#[allow(dead_code)]
fn send_type<T: Send>() {}
fn error<T: std::error::Error + Send + Sync + 'static>() {}
#[allow(dead_code)]
fn send<T: Send>(_: &T) {}

#[test]
fn limiters_and_their_values_are_send_and_sync() {
    send_sync::<RateLimiter>();
    send_sync::<RateLimiter<NotKeyed, ManualClock>>();
    send_sync::<RateLimiter<NotKeyed, CachedClock>>();
    send_sync::<RateLimiter<String, MonotonicClock, KeyHasher>>();
    send_sync::<RateLimiter<Vec<u8>, ManualClock>>();
    send_sync::<RateLimiter<(u64, u64)>>();
    send_sync::<fluxrate::Builder<NotKeyed, ManualClock>>();
    send_sync::<Admitted>();
    send_sync::<Snapshot>();
    send_sync::<Stats>();
    error::<RateLimited>();
    error::<Denied>();
    error::<InsufficientCapacity>();
    error::<TimeoutExceeded>();
    error::<AcquireError>();
    error::<ConfigError>();
    error::<fluxrate::UnknownAlgorithm>();
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn async_waits_are_send() {
    use fluxrate::{AcquireAsync, AcquireKeyAsync, Quota, TokioClock};
    use std::time::Duration;
    send_sync::<TokioClock>();
    let direct = RateLimiter::builder(Quota::per_second(10))
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let keyed = RateLimiter::builder(Quota::per_second(10))
        .clock(TokioClock::new())
        .keyed::<String>()
        .build()
        .unwrap();
    let t = Duration::from_secs(1);
    // Built, checked for `Send`, then awaited: each is admitted at once.
    let futures = (
        direct.acquire(t),
        direct.acquire_n(2, t),
        direct.wait(),
        keyed.acquire_key("k", t),
        keyed.acquire_key_n("k", 2, t),
        keyed.wait_key("k"),
    );
    send(&futures);
    let (a, b, c, d, e, f) = futures;
    assert!(a.await.is_ok() && b.await.is_ok());
    let _ = c.await;
    assert!(d.await.is_ok() && e.await.is_ok());
    let _ = f.await;
}

#[cfg(feature = "tower")]
#[test]
fn the_http_layer_and_its_service_are_send_and_sync() {
    use fluxrate::http::{Decision, RateLimit, RateLimitLayer, RequestKey};
    send_sync::<RateLimitLayer>();
    send_sync::<RateLimit<tower::util::BoxCloneSyncService<http::Request<()>, (), ()>>>();
    send_sync::<Decision>();
    send_sync::<RequestKey>();
    // A response future is `Send` (not `Sync`: it is polled by one task at a time).
    send_type::<fluxrate::http::ResponseFuture<http::Response<String>, ()>>();
}

/// The Redis limiter's futures, checked without a server: the function is only compiled.
#[cfg(feature = "redis")]
#[allow(dead_code)]
fn redis_futures_are_send(l: &fluxrate::redis::RedisRateLimiter) {
    use std::time::Duration;
    send(&l.check_key("k"));
    send(&l.check_key_n("k", 2));
    send(&l.allow_key("k"));
    send(&l.decide_key_n("k", 1));
    send(&l.reserve_key_n("k", 1, Duration::ZERO));
    send(&l.acquire_key("k", Duration::ZERO));
    send(&l.peek_key("k"));
    send(&l.reset_key("k"));
    send(&fluxrate::redis::RedisRateLimiter::check_all(
        "k",
        &[(l, 1)],
    ));
    send(&fluxrate::redis::RedisBackend::connect(
        "redis://127.0.0.1/",
    ));
}

#[cfg(feature = "redis")]
#[test]
fn the_redis_limiter_is_send_and_sync() {
    use fluxrate::redis::{RedisBackend, RedisDecision, RedisDenied, RedisRateLimiter};
    send_sync::<RedisRateLimiter>();
    send_sync::<RedisBackend>();
    send_sync::<RedisDecision>();
    error::<RedisDenied>();
    // Named so that the compile-time checks above are part of this test's build.
    let _ = redis_futures_are_send as fn(&RedisRateLimiter);
}
