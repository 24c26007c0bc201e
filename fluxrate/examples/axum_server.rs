//! An axum server with a per-IP and a global limit.
//!
//! ```text
//! cargo run --example axum_server --features tower
//! curl -i http://127.0.0.1:3000/          # repeat: the fourth within a minute gets a 429
//! ```
//!
//! Behind a reverse proxy every request comes from the proxy's address, so a per-IP limit
//! would count all clients together. Name the proxies in `TRUST_PROXY` (comma-separated
//! addresses or CIDR ranges) and clients are keyed by the address the proxy appends to
//! `X-Forwarded-For` (nginx: `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`),
//! read only on requests from those proxies, and from the right, so a client cannot choose its
//! key by sending the header itself. `examples/behind_nginx.sh` runs it behind a real nginx:
//!
//! ```text
//! TRUST_PROXY=127.0.0.1 cargo run --example axum_server --features tower
//! ```

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use fluxrate::http::{ForwardedIp, Global, IpNet, PeerIp, RateLimitLayer};
use fluxrate::Quota;
use std::net::SocketAddr;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let peer = PeerIp::from_extension(|c: &ConnectInfo<SocketAddr>| c.0.ip());
    // Three requests per minute per client IP...
    let per_ip = Quota::per_minute(3);
    let limits = match std::env::var("TRUST_PROXY") {
        Ok(list) => {
            let trusted = list
                .split(',')
                .map(|s| s.trim().parse::<IpNet>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("TRUST_PROXY: {e}"))?;
            let names: Vec<String> = trusted.iter().map(IpNet::to_string).collect();
            println!("clients keyed by X-Forwarded-For from {}", names.join(", "));
            RateLimitLayer::new().limit(
                "per-ip",
                per_ip,
                ForwardedIp::x_forwarded_for(peer, trusted),
            )?
        }
        Err(_) => RateLimitLayer::new().limit("per-ip", per_ip, peer)?,
    }
    // ...and 1,000 per second for everyone together.
    .limit("global", Quota::per_second(1_000), Global)?
    .legacy_headers(true);
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .layer(limits);
    let addr: SocketAddr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
