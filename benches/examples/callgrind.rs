//! A fixed workload per contender, for instruction counts under callgrind (reproducible on a
//! noisy machine, unlike timings):
//!
//! ```text
//! cargo build --release -p fluxrate-benches --example callgrind
//! valgrind --tool=callgrind target/release/examples/callgrind flux_tb   # or: flux_tb_stats, flux_fixed, flux_swc,
//!                                                                        # flux_keyed, floor_keyed, gov,
//!                                                                        # gov_keyed, empty,
//!                                                                        # flux_log, flux_log_check,
//!                                                                        # flux_log_reject, empty_advance
//! ```
//!
//! Each runs 1,000,000 checks with a fake clock (so the clock read does not dominate); subtract
//! `empty` and divide by 10⁶ for instructions per check.
//!
//! The `String`-key workloads are in `callgrind_strings` (here they would move governor's code
//! between codegen units and change the counts above).

use fluxrate::{Algorithm, ManualClock, Quota, RateLimiter};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const N: u64 = 1_000_000;

/// 10⁶ `allow()` on a direct limiter with a fake clock and no stats.
fn direct(quota: Quota, algorithm: Algorithm) {
    let l = RateLimiter::builder(quota)
        .algorithm(algorithm)
        .clock(ManualClock::new())
        .stats(false)
        .build()
        .unwrap();
    for _ in 0..N {
        black_box(l.allow());
    }
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let open = Quota::new(1, Duration::from_nanos(1)).with_burst(u64::from(u32::MAX));
    match which.as_str() {
        "flux_tb" => direct(open, Algorithm::TokenBucket),
        "flux_tb_stats" => {
            // The same with the limiter-wide counters on (the default).
            let l = RateLimiter::builder(open)
                .clock(ManualClock::new())
                .build()
                .unwrap();
            for _ in 0..N {
                black_box(l.allow());
            }
        }
        "flux_swc" => direct(
            Quota::new(1_000_000, Duration::from_secs(1)),
            Algorithm::SlidingWindowCounter,
        ),
        "flux_fixed" => direct(
            Quota::new(1_000_000, Duration::from_secs(1)),
            Algorithm::FixedWindow,
        ),
        "flux_keyed" => {
            let l = RateLimiter::builder(open)
                .clock(ManualClock::new())
                .stats(false)
                .keyed::<u64>()
                .build()
                .unwrap();
            for i in 0..N {
                black_box(l.allow_key(&(i % 1000)));
            }
        }
        "floor_keyed" => {
            // The store alone: a DashMap lookup and one atomic add, as in `compare`.
            let m = dashmap::DashMap::with_hasher(fluxrate::KeyHasher::new());
            for k in 0..1000u64 {
                m.insert(k, AtomicU64::new(0));
            }
            for i in 0..N {
                black_box(
                    m.get(&(i % 1000))
                        .map(|c| c.fetch_add(1, Ordering::Relaxed)),
                );
            }
        }
        "gov" => {
            let q = governor::Quota::with_period(Duration::from_nanos(1))
                .unwrap()
                .allow_burst(NonZeroU32::MAX);
            let g = governor::RateLimiter::direct_with_clock(
                q,
                governor::clock::FakeRelativeClock::default(),
            );
            for _ in 0..N {
                black_box(g.check().is_ok());
            }
        }
        "gov_keyed" => {
            let q = governor::Quota::with_period(Duration::from_nanos(1))
                .unwrap()
                .allow_burst(NonZeroU32::MAX);
            let g = governor::RateLimiter::dashmap_with_clock(
                q,
                governor::clock::FakeRelativeClock::default(),
            );
            for i in 0..N {
                black_box(g.check_key(&(i % 1000)).is_ok());
            }
        }
        // The sliding log on 1,000 per µs with the clock 30 ns further at each call: ~34
        // stamps live, in a ring grown to 64 slots (4 segments). Subtract `empty_advance`.
        "flux_log" | "flux_log_check" => {
            let clock = ManualClock::new();
            let l = RateLimiter::builder(Quota::new(1_000, Duration::from_micros(1)))
                .algorithm(Algorithm::SlidingLog)
                .clock(clock.clone())
                .stats(false)
                .build()
                .unwrap();
            for _ in 0..N {
                clock.advance_ns(30);
                if which == "flux_log" {
                    black_box(l.allow());
                } else {
                    black_box(l.check().is_ok());
                }
            }
        }
        // A full sliding log (per_hour(1)) refusing with its retry-after.
        "flux_log_reject" => {
            let l = RateLimiter::builder(Quota::per_hour(1))
                .algorithm(Algorithm::SlidingLog)
                .clock(ManualClock::new())
                .stats(false)
                .build()
                .unwrap();
            assert!(l.allow());
            for _ in 0..N {
                black_box(l.check().is_err());
            }
        }
        "empty_advance" => {
            let clock = ManualClock::new();
            for _ in 0..N {
                clock.advance_ns(30);
                black_box(&clock);
            }
        }
        "empty" => {}
        other => {
            eprintln!("unknown workload {other:?}: flux_tb, flux_tb_stats, flux_swc, flux_fixed, flux_keyed, floor_keyed, flux_log, flux_log_check, flux_log_reject, gov, gov_keyed, empty, empty_advance");
            std::process::exit(2);
        }
    }
}
