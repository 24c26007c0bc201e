//! The HTTP layer's answers (feature `tower`): draft-ietf-httpapi-ratelimit-headers-11 fields
//! and their honesty for every algorithm, requests that can never pass, problem details, names,
//! the default bound on keys, and leaky-bucket limits as real shapers.
#![cfg(feature = "tower")]

use fluxrate::http::{
    DecidedBy, Decision, Global, Header, PeerIp, RateLimitLayer, RequestKey, DEFAULT_MAX_KEYS,
};
use fluxrate::{Algorithm, ConfigError, ManualClock, Quota, RateLimiter, TokioClock};
use http::{HeaderName, Request, Response, StatusCode};
use proptest::prelude::*;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

fn ok(
) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future = impl Send>
       + Clone
       + Send
       + 'static {
    tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new("ok".to_owned()))
    })
}

fn header<'a>(r: &'a Response<String>, name: &str) -> &'a str {
    r.headers().get(name).map_or("", |v| v.to_str().unwrap())
}

fn decision(r: &Response<String>) -> &Decision {
    r.extensions().get::<Decision>().unwrap()
}

fn from_peer(ip: [u8; 4]) -> Request<()> {
    let mut r = Request::new(());
    r.extensions_mut().insert(SocketAddr::from((ip, 4000)));
    r
}

fn manual_limiter(
    quota: Quota,
    alg: Algorithm,
    clock: &ManualClock,
) -> Arc<RateLimiter<RequestKey, ManualClock>> {
    Arc::new(
        RateLimiter::builder(quota)
            .algorithm(alg)
            .clock(clock.clone())
            .keyed::<RequestKey>()
            .build()
            .unwrap(),
    )
}

/// Issue 12: `RateLimit: "per-ip";r=0;t=60` with `Retry-After: 20` on 3/minute. Under
/// draft-11, `t` is the window in which no more than `r` can be used: a unit comes after 20 s.
#[tokio::test]
async fn t_is_the_effective_window_and_retry_after_is_not_earlier() {
    let clock = ManualClock::new();
    let layer = RateLimitLayer::new()
        .limiter(
            "per-ip",
            manual_limiter(Quota::per_minute(3), Algorithm::TokenBucket, &clock),
            PeerIp::new(),
        )
        .unwrap();
    let svc = layer.layer(ok());
    for _ in 0..3 {
        svc.clone().oneshot(from_peer([10, 0, 0, 1])).await.unwrap();
    }
    let r = svc.clone().oneshot(from_peer([10, 0, 0, 1])).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "ratelimit"), "\"per-ip\";r=0;t=20");
    assert_eq!(header(&r, "retry-after"), "20");
    assert_eq!(header(&r, "ratelimit-policy"), "\"per-ip\";q=3;w=60");
    // 5 s later: still nothing, the token 15 s away.
    clock.advance(Duration::from_secs(5));
    let r = svc.clone().oneshot(from_peer([10, 0, 0, 1])).await.unwrap();
    assert_eq!(header(&r, "ratelimit"), "\"per-ip\";r=0;t=15");
    assert_eq!(header(&r, "retry-after"), "15");
    let d = decision(&r);
    assert_eq!(d.limits.len(), 1);
    assert_eq!(d.limits[0].decided_by, DecidedBy::InProcess);
    assert!(!d.degraded());
}

/// Issue 12: a cost above the capacity got 429 with `Retry-After: 3600`, so clients retried
/// forever. It can never pass: a distinct status, no `Retry-After`, a body that says so.
#[tokio::test]
async fn a_cost_above_capacity_is_never_admitted_and_says_so() {
    let layer = RateLimitLayer::new()
        .limit("g", Quota::per_hour(10), Global)
        .unwrap()
        .cost(|r| {
            r.headers
                .get("x-cost")
                .map_or(1, |v| v.to_str().unwrap().parse().unwrap())
        });
    let svc = layer.clone().layer(ok());
    let mut req = Request::new(());
    req.headers_mut().insert("x-cost", "11".parse().unwrap());
    let r = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.headers().get("retry-after").is_none(),
        "a retry can never succeed"
    );
    assert!(r.body().contains("can never pass"), "{}", r.body());
    assert!(decision(&r).never);
    // Nothing was charged, and the status is configurable.
    let r = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(header(&r, "ratelimit"), "\"g\";r=9;t=360");
    let svc = layer
        .never_status(StatusCode::UNPROCESSABLE_ENTITY)
        .layer(ok());
    let mut req = Request::new(());
    req.headers_mut().insert("x-cost", "11".parse().unwrap());
    assert_eq!(
        svc.oneshot(req).await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn problem_details() {
    let layer = RateLimitLayer::new()
        .limit("per-ip", Quota::per_hour(1), PeerIp::new())
        .unwrap()
        .problem_details(true);
    let svc = layer.layer(ok());
    svc.clone().oneshot(from_peer([10, 0, 0, 1])).await.unwrap();
    let r = svc.clone().oneshot(from_peer([10, 0, 0, 1])).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    let body = r.body();
    assert!(
        body.starts_with(
            "{\"type\":\"https://iana.org/assignments/http-problem-types#quota-exceeded\","
        ),
        "{body}"
    );
    assert!(body.contains("\"status\":429"), "{body}");
    assert!(
        body.ends_with("\"violated-policies\":[\"per-ip\"]}\n"),
        "{body}"
    );
}

/// Names are validated when a limit is added: clients must be able to tell limits apart.
#[test]
fn names_are_validated_and_integers_clamped() {
    let add = |name: &str| RateLimitLayer::new().limit(name, Quota::per_hour(1), Global);
    assert!(matches!(
        add("límite"),
        Err(ConfigError::InvalidName { .. })
    ));
    assert!(matches!(add(""), Err(ConfigError::InvalidName { .. })));
    assert!(matches!(
        add("tab\there"),
        Err(ConfigError::InvalidName { .. })
    ));
    let twice = add("a").unwrap().limit("a", Quota::per_hour(2), Global);
    assert_eq!(
        twice.unwrap_err(),
        ConfigError::DuplicateName { name: "a".into() }
    );
    assert!(matches!(
        RateLimitLayer::new().quota_unit("bytes\u{e9}"),
        Err(ConfigError::InvalidName { .. })
    ));
}

#[tokio::test]
async fn quota_units_and_structured_field_integers() {
    // 10^16 calls per 10^16 ns: q would be 10^16, above the 15 digits a structured field holds.
    let huge = Quota::new(10_000_000_000_000_000, Duration::from_secs(10_000_000));
    let layer = RateLimitLayer::new()
        .limit("huge", huge, Global)
        .unwrap()
        .quota_unit("content-bytes")
        .unwrap();
    let r = layer.layer(ok()).oneshot(Request::new(())).await.unwrap();
    assert_eq!(
        header(&r, "ratelimit-policy"),
        "\"huge\";q=999999999999999;qu=\"content-bytes\";w=10000000"
    );
    assert!(header(&r, "ratelimit").starts_with("\"huge\";r=999999999999999;t="));
}

/// Issue 12 / review finding 7: `limit()` built an unbounded store for attacker-chosen keys.
#[tokio::test]
async fn limit_holds_a_bounded_number_of_keys() {
    let key = HeaderName::from_static("x-k");
    let with_key = |k: &str| {
        let mut r = Request::new(());
        r.headers_mut().insert("x-k", k.parse().unwrap());
        r
    };
    let layer = RateLimitLayer::new()
        .max_keys(3)
        .limit("k", Quota::per_hour(1), Header(key.clone()))
        .unwrap();
    let svc = layer.layer(ok());
    for k in ["a", "b", "c"] {
        assert_eq!(
            svc.clone().oneshot(with_key(k)).await.unwrap().status(),
            StatusCode::OK
        );
    }
    let r = svc.clone().oneshot(with_key("d")).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a fourth live key"
    );
    // The default: DEFAULT_MAX_KEYS distinct keys fit, the next does not.
    let svc = RateLimitLayer::new()
        .limit("k", Quota::per_hour(1), Header(key))
        .unwrap()
        .layer(ok());
    for i in 0..DEFAULT_MAX_KEYS {
        let r = svc
            .clone()
            .oneshot(with_key(&format!("k{i}")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = svc.clone().oneshot(with_key("one-more")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// An inner service that records when (tokio time) it is called.
fn recording(
    calls: Arc<Mutex<Vec<Duration>>>,
    start: tokio::time::Instant,
) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future = impl Send>
       + Clone
       + Send
       + 'static {
    tower::service_fn(move |_: Request<()>| {
        calls.lock().unwrap().push(start.elapsed());
        async { Ok::<_, Infallible>(Response::new("ok".to_owned())) }
    })
}

fn shaper(rate: Quota) -> Arc<RateLimiter<RequestKey, TokioClock>> {
    Arc::new(
        RateLimiter::builder(rate)
            .algorithm(Algorithm::LeakyBucket)
            .clock(TokioClock::new())
            .keyed::<RequestKey>()
            .build()
            .unwrap(),
    )
}

/// Issue 12: 5 of 5 concurrent requests were admitted at once through a 1/s shaper with
/// queue 5. The inner service must see them one second apart.
#[tokio::test(start_paused = true)]
async fn a_leaky_bucket_limit_shapes_requests() {
    let layer = RateLimitLayer::new()
        .limiter("shaper", shaper(Quota::per_second(1).with_burst(5)), Global)
        .unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let svc = layer.layer(recording(calls.clone(), tokio::time::Instant::now()));
    let all: Vec<_> = (0..5)
        .map(|_| tokio::spawn(svc.clone().oneshot(Request::new(()))))
        .collect();
    let mut delays = Vec::new();
    for h in all {
        let r = h.await.unwrap().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        delays.push(decision(&r).delay);
    }
    let secs: Vec<u64> = calls.lock().unwrap().iter().map(|d| d.as_secs()).collect();
    assert_eq!(
        secs,
        [0, 1, 2, 3, 4],
        "one request per second reaches the service"
    );
    delays.sort();
    assert_eq!(delays, (0..5).map(Duration::from_secs).collect::<Vec<_>>());
}

/// A request dropped while it waits gives its place back when it is the last in the queue, and
/// a maximum delay refuses what would wait longer.
#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_gives_its_place_back_and_max_delay_refuses() {
    let layer = RateLimitLayer::new()
        .limiter("shaper", shaper(Quota::per_second(1).with_burst(5)), Global)
        .unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let start = tokio::time::Instant::now();
    let svc = layer.clone().layer(recording(calls.clone(), start));
    let first = tokio::spawn(svc.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    // The second waits 1 s; drop it after 0.5 s.
    let second = tokio::time::timeout(
        Duration::from_millis(500),
        svc.clone().oneshot(Request::new(())),
    );
    assert!(second.await.is_err(), "still waiting when dropped");
    first.await.unwrap().unwrap();
    // Its place is free again: the next request (at 0.5 s) goes at 1 s, not 2 s.
    let r = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(decision(&r).delay, Duration::from_millis(500));
    assert_eq!(
        calls
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_millis())
            .collect::<Vec<_>>(),
        [0, 1_000]
    );

    // With max_delay 1.5 s: delays 0 and 1 s pass, 2 s is refused, with the Retry-After at
    // which its place would be within the cap.
    let svc = RateLimitLayer::new()
        .limiter("shaper", shaper(Quota::per_second(1).with_burst(5)), Global)
        .unwrap()
        .max_delay(Duration::from_millis(1_500))
        .layer(ok());
    let a = tokio::spawn(svc.clone().oneshot(Request::new(())));
    let b = tokio::spawn(svc.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    let c = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(c.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&c, "retry-after"), "1");
    // r: none can be queued within 1.5 s now; t: after 0.5 s one can.
    assert_eq!(header(&c, "ratelimit"), "\"shaper\";r=0;t=0");
    assert_eq!(a.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(b.await.unwrap().unwrap().status(), StatusCode::OK);
}

fn with_key(k: &str) -> Request<()> {
    let mut r = Request::new(());
    r.headers_mut().insert("x-k", k.parse().unwrap());
    r
}

fn keyed_by_header(lim: Arc<RateLimiter<RequestKey, ManualClock>>) -> RateLimitLayer {
    RateLimitLayer::new()
        .limiter("k", lim, Header(HeaderName::from_static("x-k")))
        .unwrap()
}

/// Review of issue 12: a store full of live keys refused a new key with the numbers of a fresh
/// key (`r=9;t=360`, `r=10;t=3600`): the refusal is the store's, so nothing is available to
/// that key until a slot frees, which is also when `Retry-After` points.
#[tokio::test]
async fn a_full_store_refusal_tells_no_quota_until_a_slot_frees() {
    for alg in ALGORITHMS {
        let clock = ManualClock::new();
        let lim = Arc::new(
            RateLimiter::builder(Quota::per_hour(10))
                .algorithm(alg)
                .clock(clock.clone())
                .keyed::<RequestKey>()
                .max_keys(1)
                .build()
                .unwrap(),
        );
        let svc = keyed_by_header(lim).layer(ok());
        assert_eq!(
            svc.clone().oneshot(with_key("a")).await.unwrap().status(),
            StatusCode::OK
        );
        let r = svc.clone().oneshot(with_key("b")).await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{alg}");
        let retry: u64 = header(&r, "retry-after").parse().unwrap();
        assert_eq!(
            header(&r, "ratelimit"),
            format!("\"k\";r=0;t={retry}"),
            "{alg}"
        );
        // Nothing for "b" until then, then "a"'s slot is free.
        clock.advance(Duration::from_secs(retry) - Duration::from_nanos(1));
        let before = svc.clone().oneshot(with_key("b")).await.unwrap().status();
        clock.advance(Duration::from_nanos(1));
        let after = svc.clone().oneshot(with_key("b")).await.unwrap().status();
        assert_eq!(
            (before, after),
            (StatusCode::TOO_MANY_REQUESTS, StatusCode::OK),
            "{alg}"
        );
    }
    // A log keyed "a" at 0: at 3,599 s its slot frees in 1 s, and Retry-After says 1.
    let clock = ManualClock::new();
    let lim = Arc::new(
        RateLimiter::builder(Quota::per_hour(10))
            .algorithm(Algorithm::SlidingLog)
            .clock(clock.clone())
            .keyed::<RequestKey>()
            .max_keys(1)
            .build()
            .unwrap(),
    );
    let svc = keyed_by_header(lim).layer(ok());
    svc.clone().oneshot(with_key("a")).await.unwrap();
    clock.advance(Duration::from_secs(3_599));
    let r = svc.clone().oneshot(with_key("b")).await.unwrap();
    assert_eq!(
        (header(&r, "ratelimit"), header(&r, "retry-after")),
        ("\"k\";r=0;t=1", "1")
    );
}

/// With `OverflowPolicy::Shared`, new keys of a full store are decided by one shared cell: its
/// numbers, not a fresh key's (the window algorithms cannot tell its window: no `t`).
#[tokio::test]
async fn shared_overflow_numbers_are_the_shared_cells() {
    let lim = Arc::new(
        RateLimiter::builder(Quota::per_hour(10))
            .algorithm(Algorithm::SlidingLog)
            .clock(ManualClock::new())
            .keyed::<RequestKey>()
            .max_keys(1)
            .overflow(fluxrate::OverflowPolicy::Shared)
            .build()
            .unwrap(),
    );
    let svc = keyed_by_header(lim).layer(ok());
    svc.clone().oneshot(with_key("a")).await.unwrap();
    for i in 0..10 {
        let r = svc
            .clone()
            .oneshot(with_key(&format!("n{i}")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "ratelimit"), format!("\"k\";r={}", 9 - i));
    }
    let r = svc.clone().oneshot(with_key("n10")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "ratelimit"), "\"k\";r=0;t=3600");
}

/// Review of issue 12: a shaped request's numbers were those of its decision, stale by its
/// own delay when the client got them (the fifth of five said `r=0;t=1` while four were free).
#[tokio::test(start_paused = true)]
async fn a_shaped_response_tells_the_state_when_it_is_sent() {
    let layer = RateLimitLayer::new()
        .limiter("shaper", shaper(Quota::per_second(1).with_burst(5)), Global)
        .unwrap();
    let svc = layer.layer(ok());
    let all: Vec<_> = (0..5)
        .map(|_| tokio::spawn(svc.clone().oneshot(Request::new(()))))
        .collect();
    let mut last = None;
    for h in all {
        last = Some(h.await.unwrap().unwrap());
    }
    let r = last.unwrap();
    assert_eq!(decision(&r).delay, Duration::from_secs(4));
    // Sent at 4 s: the queue holds 1 s (the fifth's own slot), so 4 places are free, and the
    // next frees in 1 s.
    assert_eq!(header(&r, "ratelimit"), "\"shaper\";r=4;t=1");
}

/// Review of issue 12: in a refusal, a limit that admitted and gave its admission back showed
/// the numbers after the admission (`"a";r=2`, while 3 were then admitted at once).
#[tokio::test]
async fn a_given_back_admission_is_not_counted_in_the_numbers() {
    let clock = ManualClock::new();
    let a = manual_limiter(Quota::per_minute(3), Algorithm::TokenBucket, &clock);
    let b = manual_limiter(Quota::per_hour(1), Algorithm::TokenBucket, &clock);
    b.check_key(&RequestKey::Text("used".into())).unwrap();
    let svc = RateLimitLayer::new()
        .limiter("a", a, Global)
        .unwrap()
        .limiter("b", b, Header(HeaderName::from_static("x-k")))
        .unwrap()
        .layer(ok());
    let r = svc.clone().oneshot(with_key("used")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "ratelimit"), "\"a\";r=3;t=20, \"b\";r=0;t=3600");
}

/// Review of issue 12: the policy of a valid extreme quota overflowed (a panic in debug).
#[test]
fn extreme_quotas_are_described_without_overflow() {
    let q = Quota::new(u64::MAX, Duration::from_nanos(u64::MAX));
    let lim = Arc::new(RateLimiter::<RequestKey>::keyed(q).unwrap());
    assert!(RateLimitLayer::new().limiter("x", lim, Global).is_ok());
    assert!(RateLimitLayer::new().limit("x", q, Global).is_ok());
}

const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::TokenBucket,
    Algorithm::LeakyBucket,
    Algorithm::FixedWindow,
    Algorithm::SlidingWindowCounter,
    Algorithm::SlidingLog,
];

/// `(r, t)` of the item named `name` of a `RateLimit` field.
fn parse_current(v: &str, name: &str) -> (u64, u64) {
    let item = v
        .split(", ")
        .find(|i| i.starts_with(&format!("\"{name}\";")))
        .unwrap_or_else(|| panic!("no item {name} in {v}"));
    let mut r = None;
    let mut t = None;
    for p in item.split(';').skip(1) {
        let (k, x) = p.split_once('=').unwrap();
        match k {
            "r" => r = x.parse().ok(),
            "t" => t = x.parse().ok(),
            _ => {}
        }
    }
    (
        r.expect("r"),
        t.expect("t: in-process limits always know it"),
    )
}

/// One honesty case: `alg` on `quota` as limit "l" (Global), optionally a leaky bucket's
/// `max_delay`, optionally a second limit "b" keyed by a header (per hour 1), which refuses
/// some requests after "l" admitted them (so "l" gives them back); a random history, then a
/// probe request.
struct Case {
    alg: Algorithm,
    quota: Quota,
    max_delay: Option<Duration>,
    second: bool,
    /// `(advance ns, cost, value of the second limit's header)`.
    history: Vec<(u64, u64, u8)>,
    probe_b: u8,
    /// `None`: `r` at once, then one more at `t` − 1 ns; `Some`: unit requests at these
    /// instants of `[0, t)`.
    spread: Option<Vec<u64>>,
}

/// The honesty property of issue 12, for every algorithm: after any response carrying `r`/`t`
/// for a key (no other traffic on it), `r` requests sent at once are all admitted, and no more
/// than `r` are admitted within `t` seconds of the decision. Rounding: `t` is the effective
/// window rounded down to whole seconds, so "within `t`" holds up to `t` seconds exactly;
/// probes run at random instants of `[0, t)` and at `t − 1 ns`, counted from when the client
/// gets the response (after a shaped request's delay). `Retry-After` is never earlier than `t`.
/// The probes go to the limiter itself (as the layer decides: a shaper with
/// its `max_delay`), so that the second limit's refusals do not hide the first's numbers.
fn honest(case: Case) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let clock = ManualClock::starting_at(1_000_000_000_000);
        let lim = manual_limiter(case.quota, case.alg, &clock);
        let mut layer = RateLimitLayer::new()
            .limiter("l", lim.clone(), Global)
            .unwrap()
            .cost(|r| {
                r.headers
                    .get("x-cost")
                    .map_or(1, |v| v.to_str().unwrap().parse().unwrap())
            });
        if case.second {
            layer = layer
                .limiter(
                    "b",
                    manual_limiter(Quota::per_hour(1), Algorithm::TokenBucket, &clock),
                    Header(HeaderName::from_static("x-b")),
                )
                .unwrap();
        }
        if let Some(d) = case.max_delay {
            layer = layer.max_delay(d);
        }
        let svc = layer.layer(ok());
        let send = |cost: u64, b: u8| {
            let mut req = Request::new(());
            req.headers_mut()
                .insert("x-cost", cost.to_string().parse().unwrap());
            req.headers_mut()
                .insert("x-b", b.to_string().parse().unwrap());
            svc.clone().oneshot(req)
        };
        // A shaped request reaches the service (and its client gets the numbers) after its
        // delay: the limiter's clock moves by as much, as a real one would meanwhile.
        let waited = |resp: &Response<String>| clock.advance(decision(resp).delay);
        for (dt, cost, b) in case.history {
            clock.advance_ns(dt);
            waited(&send(cost, b).await.unwrap());
        }
        let resp = send(1, case.probe_b).await.unwrap();
        waited(&resp);
        let (r, t) = parse_current(header(&resp, "ratelimit"), "l");
        if decision(&resp).refused_by.as_deref() == Some("l") {
            let retry: u64 = header(&resp, "retry-after").parse().unwrap();
            prop_assert!(retry >= t, "Retry-After {} earlier than t {}", retry, t);
        }
        let shaper_cap = case
            .max_delay
            .filter(|_| case.alg == Algorithm::LeakyBucket);
        let admit = || match shaper_cap {
            Some(m) => lim.reserve_key_n(&RequestKey::Global, 1, m).is_ok(),
            None => lim.check_key(&RequestKey::Global).is_ok(),
        };
        let at_decision = fluxrate::Clock::now(&clock);
        let window_end = at_decision + t * 1_000_000_000;
        match case.spread {
            None => {
                for i in 0..r {
                    prop_assert!(admit(), "unit {} of r = {} refused", i, r);
                }
                if t > 0 {
                    clock.set(window_end - 1);
                    prop_assert!(!admit(), "r = {} and one more within t = {}", r, t);
                }
            }
            Some(mut at) => {
                at.sort_unstable();
                let mut admitted = 0;
                for x in at {
                    if t == 0 {
                        break;
                    }
                    clock.set(at_decision + x % (t * 1_000_000_000));
                    admitted += u64::from(admit());
                }
                prop_assert!(
                    admitted <= r,
                    "{} admitted within t = {}, r = {}",
                    admitted,
                    t,
                    r
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("FLUXRATE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4096),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn rate_limit_fields_are_honest(
        alg in prop::sample::select(ALGORITHMS.to_vec()),
        calls in 1u64..6,
        period_ms in 1_000u64..90_000,
        burst in 1u64..6,
        max_delay_ms in prop::option::of(0u64..20_000),
        second in any::<bool>(),
        history in prop::collection::vec((0u64..60_000_000_000, 1u64..4, 0u8..3), 0..12),
        probe_b in 0u8..3,
        spread in prop::option::of(prop::collection::vec(any::<u64>(), 1..12)),
    ) {
        let mut quota = Quota::new(calls, Duration::from_millis(period_ms));
        if matches!(alg, Algorithm::TokenBucket | Algorithm::LeakyBucket) {
            quota = quota.with_burst(burst);
        }
        honest(Case {
            alg,
            quota,
            max_delay: max_delay_ms.map(Duration::from_millis),
            second,
            history,
            probe_b,
            spread,
        })?;
    }
}

/// A layer with one limit "k" keyed by `x-k`, cost from `x-cost`.
fn keyed_with_cost(lim: Arc<RateLimiter<RequestKey, ManualClock>>) -> RateLimitLayer {
    keyed_by_header(lim).cost(|r| {
        r.headers
            .get("x-cost")
            .map_or(1, |v| v.to_str().unwrap().parse().unwrap())
    })
}

fn key_cost(k: &str, cost: u64) -> Request<()> {
    let mut r = with_key(k);
    r.headers_mut()
        .insert("x-cost", cost.to_string().parse().unwrap());
    r
}

fn stored(
    quota: Quota,
    alg: Algorithm,
    clock: &ManualClock,
    max_keys: usize,
    overflow: fluxrate::OverflowPolicy,
) -> Arc<RateLimiter<RequestKey, ManualClock>> {
    Arc::new(
        RateLimiter::builder(quota)
            .algorithm(alg)
            .clock(clock.clone())
            .keyed::<RequestKey>()
            .max_keys(max_keys)
            .overflow(overflow)
            .build()
            .unwrap(),
    )
}

/// Second review of issue 12: a cost above capacity met a full store first and got 429 with
/// a fresh key's numbers; it can never pass, store or not.
#[tokio::test]
async fn a_cost_above_capacity_is_never_admitted_even_by_a_full_store() {
    for alg in ALGORITHMS {
        let clock = ManualClock::new();
        let lim = stored(
            Quota::per_hour(10),
            alg,
            &clock,
            1,
            fluxrate::OverflowPolicy::Reject,
        );
        let svc = keyed_with_cost(lim).layer(ok());
        svc.clone().oneshot(key_cost("a", 1)).await.unwrap();
        let r = svc.clone().oneshot(key_cost("b", 11)).await.unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{alg}");
        assert!(r.headers().get("retry-after").is_none(), "{alg}");
    }
}

/// Second review: a full store refusing a batch through a capped shaper was read as the key's
/// own queue (`r=1` and a `Retry-After` before the slot frees).
#[tokio::test]
async fn a_full_store_refusing_a_shaped_batch_tells_no_quota() {
    let clock = ManualClock::new();
    let quota = Quota::new(1, Duration::from_secs(10)).with_burst(5);
    let lim = stored(
        quota,
        Algorithm::LeakyBucket,
        &clock,
        1,
        fluxrate::OverflowPolicy::Reject,
    );
    let svc = keyed_with_cost(lim)
        .max_delay(Duration::from_secs(5))
        .layer(ok());
    svc.clone().oneshot(key_cost("a", 1)).await.unwrap();
    let r = svc.clone().oneshot(key_cost("b", 2)).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "ratelimit"), "\"k\";r=0");
    // "a" holds the only slot until its queue drains at 10 s.
    assert_eq!(header(&r, "retry-after"), "10");
    clock.advance(Duration::from_secs(10));
    let r = svc.clone().oneshot(key_cost("b", 2)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Second review: the shared overflow cell of a capped shaper, refusing, claimed its whole
/// delay as the window (`t=2` where one fits after 1 s), and a batch refused by it was read as
/// the key's own queue.
#[tokio::test]
async fn a_shared_shaper_cell_claims_no_window() {
    let clock = ManualClock::new();
    let quota = Quota::per_second(1).with_burst(5);
    let lim = stored(
        quota,
        Algorithm::LeakyBucket,
        &clock,
        1,
        fluxrate::OverflowPolicy::Shared,
    );
    // Decide without waiting: the dry run reports what a refusal would say.
    let svc = keyed_with_cost(lim)
        .max_delay(Duration::from_secs(1))
        .dry_run(true)
        .layer(ok());
    for k in ["a", "s1", "s2"] {
        assert!(decision(&svc.clone().oneshot(key_cost(k, 1)).await.unwrap()).admitted);
    }
    for (k, cost) in [("s3", 1), ("s4", 2)] {
        let r = svc.clone().oneshot(key_cost(k, cost)).await.unwrap();
        assert!(!decision(&r).admitted);
        assert_eq!(header(&r, "ratelimit"), "\"k\";r=0", "{k}");
    }
}

/// Second review: a look (cost 0) at a fixed window whose state is in a later window than
/// the reader's clock claimed that window's end; the next unit fits at its start.
#[tokio::test]
async fn a_look_behind_a_later_fixed_window_claims_its_start() {
    let minute = 60_000_000_000;
    let clock = ManualClock::starting_at(10 * minute + minute / 2);
    let lim = stored(
        Quota::per_minute(3),
        Algorithm::FixedWindow,
        &clock,
        100,
        fluxrate::OverflowPolicy::Reject,
    );
    let svc = keyed_with_cost(lim).layer(ok());
    svc.clone().oneshot(key_cost("a", 2)).await.unwrap();
    clock.set(9 * minute + minute / 2);
    let r = svc.clone().oneshot(key_cost("a", 0)).await.unwrap();
    assert_eq!(header(&r, "ratelimit"), "\"k\";r=0;t=30");
    clock.set(10 * minute);
    assert_eq!(
        svc.clone()
            .oneshot(key_cost("a", 1))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// Second review: a sliding window counter refusing a stale reader (more than two windows
/// behind) claimed the latest window as `t`; the reader may go two windows earlier.
#[tokio::test]
async fn a_stale_counter_reader_is_told_when_it_stops_being_stale() {
    let minute = 60_000_000_000;
    let clock = ManualClock::starting_at(10 * minute);
    let lim = stored(
        Quota::per_minute(3),
        Algorithm::SlidingWindowCounter,
        &clock,
        100,
        fluxrate::OverflowPolicy::Reject,
    );
    let svc = keyed_with_cost(lim).layer(ok());
    svc.clone().oneshot(key_cost("a", 1)).await.unwrap();
    clock.set(6 * minute);
    let r = svc.clone().oneshot(key_cost("a", 1)).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // Nothing for 120 s (t); Retry-After stays where a retry cannot fail for staleness.
    assert_eq!(header(&r, "ratelimit"), "\"k\";r=0;t=120");
    assert_eq!(header(&r, "retry-after"), "240");
    clock.set(8 * minute);
    assert_eq!(
        svc.clone()
            .oneshot(key_cost("a", 1))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// `RateLimit-Policy` lists the limits checked, in order: all of them for an admitted request,
/// those up to the refusing one for a refusal (the layer builds one value per such prefix).
#[tokio::test]
async fn the_policy_field_lists_the_limits_checked() {
    let q = Quota::per_hour;
    let svc = RateLimitLayer::new()
        .limit("a", q(1), Global)
        .unwrap()
        .limit("b", q(9), Global)
        .unwrap()
        .layer(ok());
    let r = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "ratelimit-policy"),
        "\"a\";q=1;w=3600, \"b\";q=9;w=3600"
    );
    let r = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "ratelimit-policy"), "\"a\";q=1;w=3600");

    let svc = RateLimitLayer::new()
        .limit("a", q(9), Global)
        .unwrap()
        .limit("b", q(1), Global)
        .unwrap()
        .limit("c", q(9), Global)
        .unwrap()
        .layer(ok());
    let r = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "ratelimit-policy"),
        "\"a\";q=9;w=3600, \"b\";q=1;w=3600, \"c\";q=9;w=3600"
    );
    let r = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&r, "ratelimit-policy"),
        "\"a\";q=9;w=3600, \"b\";q=1;w=3600"
    );
}
