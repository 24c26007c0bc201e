//! What an attacker rotating keys costs a `RateLimitLayer::limit` (feature `tower`): live heap
//! bytes per key held, measured with a counting allocator, and the bound `max_keys` puts on it.
#![cfg(feature = "tower")]

use fluxrate::http::{Header, PeerIp, RateLimitLayer};
use fluxrate::Quota;
use http::{HeaderName, Request, Response};
use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use tower::{Layer, ServiceExt};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const KEYS: usize = 20_000;

/// Send `KEYS` requests with distinct keys through a fresh `limit()`; live bytes per key held
/// (the store's table grows in powers of two, so this includes its slack at this size).
async fn bytes_per_key(layer: RateLimitLayer, req: impl Fn(usize) -> Request<()>) -> isize {
    let svc = layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..KEYS {
        let r = svc.clone().oneshot(req(i)).await.unwrap();
        assert!(r.status().is_success());
    }
    let per_key = (LIVE.load(Ordering::Relaxed) - before) / KEYS as isize;
    drop(svc);
    per_key
}

/// One test, so that nothing else allocates meanwhile. Prints the numbers the README quotes.
#[tokio::test(flavor = "current_thread")]
async fn bytes_per_key_held() {
    let ip = bytes_per_key(
        RateLimitLayer::new()
            .limit(
                "ip",
                Quota::per_hour(10),
                PeerIp::new().ipv6_prefix(128).unwrap(),
            )
            .unwrap(),
        |i| {
            let mut r = Request::new(());
            let addr: IpAddr = format!("2001:db8::{:x}", i + 1).parse().unwrap();
            r.extensions_mut().insert(SocketAddr::new(addr, 4000));
            r
        },
    )
    .await;
    let name = HeaderName::from_static("x-api-key");
    let text = bytes_per_key(
        RateLimitLayer::new()
            .limit("key", Quota::per_hour(10), Header(name))
            .unwrap(),
        |i| {
            let mut r = Request::new(());
            let v = format!("{i:0>256}");
            r.headers_mut().insert("x-api-key", v.parse().unwrap());
            r
        },
    )
    .await;
    println!("token bucket, bytes per key held: IP {ip}, 256-byte header value {text}");
    // An IP key is inline (no allocation of its own); a text key adds its bytes.
    assert!(ip <= 80, "{ip} bytes per IP key");
    assert!((256..=352).contains(&text), "{text} bytes per 256-byte key");
}
