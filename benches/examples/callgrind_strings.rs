//! The `keyed: 1,000 String keys` group of `compare` with fake clocks, for instruction counts
//! under callgrind (see `callgrind.rs`):
//!
//! ```text
//! cargo build --release -p fluxrate-benches --example callgrind_strings
//! valgrind --tool=callgrind target/release/examples/callgrind_strings flux_keyed_string
//!     # or: flux_keyed_string_nostats, floor_keyed_string, gov_keyed_string, empty_string
//! ```
//!
//! Each runs 1,000,000 checks round-robin over `user-00000` … `user-00999` (fluxrate by `&str`,
//! governor by `&String`), after one check per key; subtract `empty_string` (the same names and
//! loop, no check) and divide by 10⁶. A binary of its own: in `callgrind` these workloads moved
//! governor's code between codegen units and changed its `gov` count (31 → 71 instructions).

use fluxrate::{ManualClock, RateLimiter};
use fluxrate_benches::live_quota;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const N: u64 = 1_000_000;

/// 10⁶ `check(name)` round-robin over 1,000 `String` names, as in `compare` (no `%`).
fn strings(check: impl Fn(&String) -> bool) {
    let names: Vec<String> = (0..1_000).map(|i| format!("user-{i:05}")).collect();
    for k in &names {
        check(k); // every key exists before the count
    }
    let mut i = 0;
    for _ in 0..N {
        i += 1;
        if i == names.len() {
            i = 0;
        }
        black_box(check(black_box(&names[i])));
    }
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    match which.as_str() {
        // `compare`'s String-key limiter (stats on, the default) with a fake clock.
        "flux_keyed_string" => {
            let l = RateLimiter::builder(live_quota())
                .clock(ManualClock::new())
                .keyed::<String>()
                .build()
                .unwrap();
            strings(|k| l.allow_key(k.as_str()));
        }
        "flux_keyed_string_nostats" => {
            let l = RateLimiter::builder(live_quota())
                .clock(ManualClock::new())
                .stats(false)
                .keyed::<String>()
                .build()
                .unwrap();
            strings(|k| l.allow_key(k.as_str()));
        }
        // The store alone by `&str`: a DashMap lookup and one atomic add.
        "floor_keyed_string" => {
            let m = dashmap::DashMap::with_hasher(fluxrate::KeyHasher::new());
            for i in 0..1_000 {
                m.insert(format!("user-{i:05}"), AtomicU64::new(0));
            }
            strings(|k| {
                m.get(k.as_str())
                    .map(|c| c.fetch_add(1, Ordering::Relaxed))
                    .is_some()
            });
        }
        "gov_keyed_string" => {
            let q = governor::Quota::with_period(Duration::from_secs(1))
                .unwrap()
                .allow_burst(NonZeroU32::MAX);
            let g = governor::RateLimiter::<String, _, _, _>::dashmap_with_clock(
                q,
                governor::clock::FakeRelativeClock::default(),
            );
            strings(|k| g.check_key(k).is_ok());
        }
        "empty_string" => strings(|k| !k.is_empty()),
        other => {
            eprintln!("unknown workload {other:?}: flux_keyed_string, flux_keyed_string_nostats, floor_keyed_string, gov_keyed_string, empty_string");
            std::process::exit(2);
        }
    }
}
