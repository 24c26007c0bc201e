//! The HTTP benchmarks' apps (`benches/common/http_apps.rs`) called in process, without
//! sockets: `N` requests through the axum `Router` as a tower `Service`, for instruction counts
//! under callgrind (reproducible where `wrk`'s timings are noisy), and allocations per request
//! from a counting allocator.
//!
//! ```text
//! cargo build --release -p fluxrate-benches --example http_calls
//! target/release/examples/http_calls fluxrate                  # allocations per request
//! valgrind --tool=callgrind target/release/examples/http_calls fluxrate   # or: none, governor,
//!                                     # governor_headers, fluxrate_legacy, noop_layer (a layer
//!                                     # that does nothing: axum's cost of any layer); an
//!                                     # optional count
//! ```
//!
//! Each request carries the peer address as axum's `ConnectInfo` (four addresses in turn, every
//! key present after the first four requests); the response is dropped unread. Subtract
//! `none`'s instructions and divide by `N` (default 100,000) for the layer's own cost.

#[path = "../benches/common/http_apps.rs"]
mod http_apps;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{Request, StatusCode};
use http_apps::{app, Variant};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::Service;

/// Counts calls to `alloc` and `realloc`.
struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn request(i: u64) -> Request<Body> {
    let mut r = Request::new(Body::empty());
    let peer = SocketAddr::from(([10, 0, (i % 4) as u8, 1], 4000));
    r.extensions_mut().insert(ConnectInfo(peer));
    r
}

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_default();
    let Some(v) = Variant::named(&name) else {
        let names: Vec<_> = Variant::ALL
            .iter()
            .chain(&[Variant::NoopLayer])
            .map(|v| v.name())
            .collect();
        eprintln!("unknown variant {name:?}: {}", names.join(", "));
        std::process::exit(2);
    };
    let n: u64 = args.next().map_or(100_000, |s| s.parse().expect("a count"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut svc = app(v);
    rt.block_on(async {
        for i in 0..4 {
            let resp = svc.call(request(i)).await.expect("infallible");
            assert_eq!(resp.status(), StatusCode::OK);
        }
        let before = ALLOCS.load(Ordering::Relaxed);
        for i in 0..n {
            let resp = svc.call(request(i)).await.expect("infallible");
            debug_assert_eq!(resp.status(), StatusCode::OK);
            drop(resp);
        }
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        println!(
            "{}: {n} requests, {:.2} allocations per request",
            v.name(),
            allocs as f64 / n.max(1) as f64
        );
    });
}
