//! The axum hello-world apps the HTTP benchmarks compare (`benches/http.rs` over sockets with
//! `wrk`, `examples/http_calls.rs` in process): no limiter, tower_governor with and without its
//! headers, fluxrate's layer with the draft-11 fields and with the legacy ones too. Every
//! limiter has one per-IP limit whose quota never refuses during a run, so the admitted path is
//! what is measured.

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use fluxrate::http::{PeerIp, RateLimitLayer};
use fluxrate::Quota;
use std::net::SocketAddr;
use std::time::Duration;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::GovernorLayer;

/// One app of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// The hello-world alone.
    None,
    /// tower_governor 0.8, per peer IP, no headers.
    Governor,
    /// tower_governor 0.8, per peer IP, with its `x-ratelimit-*` headers (`use_headers`).
    GovernorHeaders,
    /// fluxrate's layer, one per-IP limit, the draft-11 `RateLimit-Policy` and `RateLimit`.
    Fluxrate,
    /// fluxrate's layer as above, with the legacy `X-RateLimit-*` fields too.
    FluxrateLegacy,
    /// A layer that does nothing (`MapResponseLayer` with the identity): what axum's routing
    /// costs for any layer, the floor under every limiter (in process only, not in `ALL`).
    NoopLayer,
}

impl Variant {
    /// Every variant, in the order the tables list them (the first is the baseline).
    pub(crate) const ALL: [Variant; 5] = [
        Variant::None,
        Variant::Governor,
        Variant::GovernorHeaders,
        Variant::Fluxrate,
        Variant::FluxrateLegacy,
    ];

    /// The name on the command line and in the tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Governor => "governor",
            Variant::GovernorHeaders => "governor_headers",
            Variant::Fluxrate => "fluxrate",
            Variant::FluxrateLegacy => "fluxrate_legacy",
            Variant::NoopLayer => "noop_layer",
        }
    }

    /// The variant called `name`.
    pub(crate) fn named(name: &str) -> Option<Variant> {
        Variant::ALL
            .into_iter()
            .chain([Variant::NoopLayer])
            .find(|v| v.name() == name)
    }
}

/// The hello-world route with `v`'s limiter; serve it with `ConnectInfo<SocketAddr>` (or put
/// one in each request's extensions), which both limiters key by.
pub(crate) fn app(v: Variant) -> Router {
    let router = Router::new().route("/", get(|| async { "hello\n" }));
    // Per IP, one call per second, a burst of 2³² − 1 (governor: 2³² − 1, its maximum): never
    // refused during a run, and every key stays live.
    let quota = Quota::new(1, Duration::from_secs(1)).with_burst(u64::from(u32::MAX));
    let fluxrate = || {
        let peer = PeerIp::from_extension(|c: &ConnectInfo<SocketAddr>| c.0.ip());
        RateLimitLayer::new()
            .limit("per-ip", quota, peer)
            .expect("a valid limit")
    };
    match v {
        Variant::None => router,
        Variant::Governor => {
            let config = GovernorConfigBuilder::default()
                .per_second(1)
                .burst_size(u32::MAX)
                .finish()
                .expect("a valid governor config");
            router.layer(GovernorLayer::new(config))
        }
        Variant::GovernorHeaders => {
            let config = GovernorConfigBuilder::default()
                .per_second(1)
                .burst_size(u32::MAX)
                .use_headers()
                .finish()
                .expect("a valid governor config");
            router.layer(GovernorLayer::new(config))
        }
        Variant::Fluxrate => router.layer(fluxrate()),
        Variant::FluxrateLegacy => router.layer(fluxrate().legacy_headers(true)),
        Variant::NoopLayer => router.layer(tower::util::MapResponseLayer::new(
            |r: axum::response::Response| r,
        )),
    }
}
