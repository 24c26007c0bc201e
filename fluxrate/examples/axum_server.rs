//! An axum server with a per-IP and a global limit.
//!
//! ```text
//! cargo run --example axum_server --features tower
//! curl -i http://127.0.0.1:3000/          # repeat: the fourth within a minute gets a 429
//! ```

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use fluxrate::http::{Global, PeerIp, RateLimitLayer};
use fluxrate::Quota;
use std::net::SocketAddr;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limits = RateLimitLayer::new()
        // Three requests per minute per client IP...
        .limit(
            "per-ip",
            Quota::per_minute(3),
            PeerIp::from_extension(|c: &ConnectInfo<SocketAddr>| c.0.ip()),
        )?
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
