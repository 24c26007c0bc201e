//! The tower middleware (feature `tower`): decisions and headers through a tower service, and a
//! real axum server on 127.0.0.1:0 queried by a real HTTP client.
#![cfg(feature = "tower")]

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use fluxrate::http::{Decision, ForwardedIp, Global, Header, PeerIp, RateLimitLayer, RequestKey};
use fluxrate::{ManualClock, Quota, RateLimiter};
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

/// The inner service's future.
type OkFuture = std::future::Ready<Result<Response<String>, Infallible>>;

/// The inner service: always 200 "ok" (a named type, for the functions that return a layer).
type OkService = tower::util::ServiceFn<fn(Request<()>) -> OkFuture>;

fn ok_service() -> OkService {
    fn ok(_: Request<()>) -> OkFuture {
        std::future::ready(Ok(Response::new("ok".to_owned())))
    }
    tower::service_fn(ok as fn(Request<()>) -> OkFuture)
}

fn req_from(ip: [u8; 4]) -> Request<()> {
    let mut r = Request::new(());
    r.extensions_mut().insert(SocketAddr::from((ip, 4000)));
    r
}

/// The status `svc` answers `req` with.
async fn status_of<S>(svc: &S, req: Request<()>) -> StatusCode
where
    S: Service<Request<()>, Response = Response<String>> + Clone,
    S::Error: std::fmt::Debug,
{
    svc.clone().oneshot(req).await.unwrap().status()
}

fn header<'a>(r: &'a Response<String>, name: &str) -> &'a str {
    r.headers().get(name).map_or("", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn n_pass_then_429_with_retry_after_and_ratelimit_fields() {
    // A manual clock: the numbers are exact (with a real one, `t` is 19 s and some fraction,
    // rounded down to 19).
    let limiter = RateLimiter::builder(Quota::per_minute(3))
        .clock(ManualClock::new())
        .keyed::<RequestKey>()
        .build()
        .unwrap();
    let layer = RateLimitLayer::new()
        .limiter("per-ip", Arc::new(limiter), PeerIp::new())
        .unwrap()
        .legacy_headers(true);
    let svc = layer.layer(ok_service());
    for remaining in [2, 1, 0] {
        let r = svc.clone().oneshot(req_from([10, 0, 0, 1])).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "ratelimit-policy"), "\"per-ip\";q=3;w=60");
        // Draft-11: within t = 20 s (the next token) no more than r can be used.
        assert_eq!(
            header(&r, "ratelimit"),
            format!("\"per-ip\";r={remaining};t=20")
        );
        assert_eq!(header(&r, "x-ratelimit-remaining"), remaining.to_string());
    }
    let r = svc.clone().oneshot(req_from([10, 0, 0, 1])).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // T = 20 s: the next request may go in 20 s (rounded up to whole seconds, never 0).
    assert_eq!(header(&r, "retry-after"), "20");
    // Nothing left, and the next token comes in 20 s (draft-10's reset said 60).
    assert_eq!(header(&r, "ratelimit"), "\"per-ip\";r=0;t=20");
    assert_eq!(r.body(), "Too Many Requests\n");
    assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(
        r.extensions()
            .get::<Decision>()
            .unwrap()
            .refused_by
            .as_deref(),
        Some("per-ip")
    );
    // Another IP is independent.
    let r = svc.clone().oneshot(req_from([10, 0, 0, 2])).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn retry_after_is_never_zero() {
    let layer = RateLimitLayer::new()
        .limit("fast", Quota::new(1, Duration::from_millis(100)), Global)
        .unwrap();
    let svc = layer.layer(ok_service());
    assert_eq!(
        svc.clone()
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after"), "1");
}

#[tokio::test]
async fn trusted_proxy_headers_are_used_and_spoofed_ones_ignored() {
    let proxy: IpAddr = [10, 0, 0, 9].into();
    let layer = RateLimitLayer::new()
        .limit(
            "client",
            Quota::per_hour(1),
            ForwardedIp::x_forwarded_for(PeerIp::new(), [proxy.into()]),
        )
        .unwrap();
    let svc = layer.layer(ok_service());
    let via_proxy = |client: &str| {
        let mut r = req_from([10, 0, 0, 9]);
        r.headers_mut().insert(
            "x-forwarded-for",
            format!("1.1.1.1, {client}").parse().unwrap(),
        );
        r
    };
    // Behind the trusted proxy, each client (the rightmost entry) has its own limit.
    assert_eq!(
        status_of(&svc, via_proxy("203.0.113.1")).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&svc, via_proxy("203.0.113.2")).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&svc, via_proxy("203.0.113.1")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // From an untrusted peer the header is ignored: it cannot pick a fresh key per request.
    for fake in ["198.51.100.1", "198.51.100.2"] {
        let mut r = req_from([192, 0, 2, 7]);
        r.headers_mut()
            .insert("x-forwarded-for", fake.parse().unwrap());
        let status = status_of(&svc, r).await;
        if fake.ends_with('1') {
            assert_eq!(status, StatusCode::OK);
        } else {
            assert_eq!(
                status,
                StatusCode::TOO_MANY_REQUESTS,
                "spoofed header was trusted"
            );
        }
    }
    // RFC 7239 Forwarded, when chosen, with IPv6 in brackets.
    let fwd = ForwardedIp::forwarded(PeerIp::new(), [proxy.into()]);
    let mut h = http::HeaderMap::new();
    h.insert(
        "forwarded",
        "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\""
            .parse()
            .unwrap(),
    );
    assert_eq!(
        fwd.client(proxy, &h),
        "2001:db8::1".parse::<IpAddr>().unwrap()
    );
    // More hops than trusted entries: the first untrusted entry from the right.
    let two_hops = ForwardedIp::forwarded(PeerIp::new(), [proxy.into()]).hops(3);
    assert_eq!(
        two_hops.client(proxy, &h),
        "2001:db8::1".parse::<IpAddr>().unwrap()
    );
}

#[tokio::test]
async fn dry_run_never_refuses_but_reports() {
    let layer = RateLimitLayer::new()
        .limit("g", Quota::per_hour(1), Global)
        .unwrap()
        .dry_run(true);
    let svc = layer.layer(ok_service());
    for i in 0..3 {
        let r = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let d = r.extensions().get::<Decision>().unwrap();
        assert_eq!(d.admitted, i == 0);
        assert!(d.dry_run);
        if i > 0 {
            assert!(header(&r, "ratelimit").contains(";r=0;"));
        }
    }
}

/// A request from user `u` (the `x-user` header).
fn as_user(u: &str) -> Request<()> {
    let mut r = Request::new(());
    r.headers_mut().insert("x-user", u.parse().unwrap());
    r
}

/// A "user" limit keyed by `x-user` in front of a "global" one.
fn user_then_global(
    per_user: Arc<RateLimiter<RequestKey>>,
    global: Quota,
) -> fluxrate::http::RateLimit<OkService> {
    RateLimitLayer::new()
        .limiter("user", per_user, Header(HeaderName::from_static("x-user")))
        .unwrap()
        .limit("global", global, Global)
        .unwrap()
        .layer(ok_service())
}

#[tokio::test]
async fn several_limits_are_all_or_nothing() {
    let per_user = Arc::new(RateLimiter::<RequestKey>::keyed(Quota::per_hour(10)).unwrap());
    let svc = user_then_global(per_user.clone(), Quota::per_hour(2));
    assert_eq!(status_of(&svc, as_user("a")).await, StatusCode::OK);
    assert_eq!(status_of(&svc, as_user("b")).await, StatusCode::OK);
    let r = svc.clone().oneshot(as_user("a")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.extensions()
            .get::<Decision>()
            .unwrap()
            .refused_by
            .as_deref(),
        Some("global")
    );
    // The refused request was not charged to user "a": still 9 of 10 left.
    let key = RequestKey::Text("a".into());
    assert_eq!(per_user.peek_key(&key).remaining(), 9);
    // Both fields list both limits.
    assert_eq!(
        header(&r, "ratelimit-policy"),
        "\"user\";q=10;w=3600, \"global\";q=2;w=3600"
    );
}

/// With `OverflowPolicy::Shared`, a new key decided by a full store's shared cell, then refused
/// by a later limit, is given back to the shared cell: all or nothing holds there too (refused
/// requests used to drain the shared cell).
#[tokio::test]
async fn a_shared_cell_admission_is_given_back_when_a_later_limit_refuses() {
    let per_user = Arc::new(
        RateLimiter::builder(Quota::per_hour(2))
            .keyed::<RequestKey>()
            .max_keys(1)
            .overflow(fluxrate::OverflowPolicy::Shared)
            .build()
            .unwrap(),
    );
    let svc = user_then_global(per_user.clone(), Quota::per_hour(1));
    // "a" holds the store's only key and the global quota's one request.
    assert_eq!(status_of(&svc, as_user("a")).await, StatusCode::OK);
    for u in ["b", "c", "d"] {
        // The shared cell admits, the global limit refuses: the shared unit comes back.
        let r = svc.clone().oneshot(as_user(u)).await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.extensions()
                .get::<Decision>()
                .unwrap()
                .refused_by
                .as_deref(),
            Some("global")
        );
    }
    // Both units of the shared cell are still there.
    let shared = per_user
        .check_key_n(&RequestKey::Text("e".into()), 2)
        .unwrap();
    assert_eq!(shared.key_cell(), fluxrate::KeyCell::Shared);
}

#[tokio::test]
async fn exemptions_and_costs() {
    let layer = RateLimitLayer::new()
        .limit("g", Quota::per_hour(10), Global)
        .unwrap()
        .exempt(|r| r.uri.path() == "/health")
        .cost(|r| if r.method == http::Method::POST { 4 } else { 1 });
    let svc = layer.layer(ok_service());
    for _ in 0..20 {
        let r = Request::get("/health").body(()).unwrap();
        let resp = svc.clone().oneshot(r).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers().get("ratelimit").is_none(),
            "exempt requests are not counted"
        );
    }
    let post = || Request::post("/x").body(()).unwrap();
    assert_eq!(status_of(&svc, post()).await, StatusCode::OK);
    assert_eq!(status_of(&svc, post()).await, StatusCode::OK);
    let r = svc.clone().oneshot(post()).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "2 of 10 left, a POST costs 4"
    );
    let r = svc
        .clone()
        .oneshot(Request::get("/x").body(()).unwrap())
        .await
        .unwrap();
    // 9 of 10 used, one back every 360 s: the next within 360 s (a real clock has moved a
    // little since the first request: 359 once rounded down).
    let rl = header(&r, "ratelimit");
    assert!(["\"g\";r=1;t=359", "\"g\";r=1;t=360"].contains(&rl), "{rl}");
}

/// Serve `layer` around a one-route axum app on a free loopback port.
async fn serve(layer: RateLimitLayer) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (addr, server)
}

/// A real HTTP/1.1 request with extra headers; the status, headers and body.
async fn get_with(
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let mut req = Request::get(format!("http://{addr}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn connect_info() -> PeerIp {
    PeerIp::from_extension(|c: &ConnectInfo<SocketAddr>| c.0.ip())
}

/// A real axum server on a free loopback port, per-IP and global limits, a real HTTP client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_server_end_to_end() {
    let layer = RateLimitLayer::new()
        .limit("per-ip", Quota::per_minute(2), connect_info())
        .unwrap()
        .limit("global", Quota::per_minute(100), Global)
        .unwrap();
    let (addr, server) = serve(layer).await;
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let (status, headers, body) = get_with(addr, &[]).await;
        statuses.push(status);
        last = Some((headers, body));
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let (headers, body) = last.unwrap();
    assert_eq!(headers["retry-after"], "30");
    assert_eq!(headers["ratelimit-policy"], "\"per-ip\";q=2;w=60");
    // The next token in just under 30 s: t = 29 (rounded down) or 30.
    let rl = headers["ratelimit"].to_str().unwrap();
    assert!(
        ["\"per-ip\";r=0;t=29", "\"per-ip\";r=0;t=30"].contains(&rl),
        "{rl}"
    );
    assert_eq!(&body[..], b"Too Many Requests\n");
    server.abort();
}

/// Through a real server: clients behind a trusted proxy (here the loopback peer) are told
/// apart by `X-Forwarded-For`; from an untrusted peer the same header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_trusted_proxy_and_spoofing() {
    let loopback: IpAddr = [127, 0, 0, 1].into();
    let trusting = RateLimitLayer::new()
        .limit(
            "client",
            Quota::per_hour(1),
            ForwardedIp::x_forwarded_for(connect_info(), [loopback.into()]),
        )
        .unwrap();
    let (addr, server) = serve(trusting).await;
    let xff = |ip| [("x-forwarded-for", ip)];
    assert_eq!(get_with(addr, &xff("203.0.113.1")).await.0, StatusCode::OK);
    assert_eq!(get_with(addr, &xff("203.0.113.2")).await.0, StatusCode::OK);
    assert_eq!(
        get_with(addr, &xff("203.0.113.1")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    server.abort();

    let other_proxy: IpAddr = [10, 9, 9, 9].into();
    let untrusting = RateLimitLayer::new()
        .limit(
            "client",
            Quota::per_hour(1),
            ForwardedIp::x_forwarded_for(connect_info(), [other_proxy.into()]),
        )
        .unwrap();
    let (addr, server) = serve(untrusting).await;
    assert_eq!(get_with(addr, &xff("198.51.100.1")).await.0, StatusCode::OK);
    assert_eq!(
        get_with(addr, &xff("198.51.100.2")).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "a spoofed header from an untrusted peer chose a fresh key"
    );
    server.abort();
}

/// Through a real server: dry-run never refuses; two limits are all-or-nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_dry_run_and_all_or_nothing() {
    let dry = RateLimitLayer::new()
        .limit("g", Quota::per_hour(1), Global)
        .unwrap()
        .dry_run(true);
    let (addr, server) = serve(dry).await;
    for _ in 0..3 {
        let (status, headers, _) = get_with(addr, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.contains_key("ratelimit"));
    }
    server.abort();

    let per_user = Arc::new(RateLimiter::<RequestKey>::keyed(Quota::per_hour(5)).unwrap());
    let both = RateLimitLayer::new()
        .limiter(
            "user",
            per_user.clone(),
            Header(HeaderName::from_static("x-user")),
        )
        .unwrap()
        .limit("global", Quota::per_hour(1), Global)
        .unwrap();
    let (addr, server) = serve(both).await;
    assert_eq!(get_with(addr, &[("x-user", "a")]).await.0, StatusCode::OK);
    assert_eq!(
        get_with(addr, &[("x-user", "a")]).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        per_user.peek_key(&RequestKey::Text("a".into())).remaining(),
        4
    );
    server.abort();
}

#[test]
fn the_service_gives_access_to_its_inner_service() {
    let mut svc = RateLimitLayer::new()
        .limit("all", Quota::per_second(1), Global)
        .unwrap()
        .layer(7_u32);
    assert_eq!(*svc.get_ref(), 7);
    *svc.get_mut() += 1;
    assert_eq!(svc.into_inner(), 8);
}
