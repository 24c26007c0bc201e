//! A fixed workload per contender, for instruction counts under callgrind (reproducible on a
//! noisy machine, unlike timings):
//!
//! ```text
//! cargo build --release -p fluxrate-benches --example callgrind
//! valgrind --tool=callgrind target/release/examples/callgrind flux_tb   # or: flux_fixed, flux_swc,
//!                                                                        # flux_keyed, floor_keyed, gov,
//!                                                                        # gov_keyed, empty,
//!                                                                        # flux_log, flux_log_check,
//!                                                                        # flux_log_reject, empty_advance,
//!                                                                        # flux_keyed_string, flux_keyed_string_nostats,
//!                                                                        # floor_keyed_string, gov_keyed_string,
//!                                                                        # empty_string
//! ```
//!
//! Each runs 1,000,000 checks with a fake clock (so the clock read does not dominate); subtract
//! `empty` and divide by 10⁶ for instructions per check. The `*_string` workloads are the
//! `keyed: 1,000 String keys` group of `compare` (fluxrate by `&str`, governor by `&String`,
//! round-robin over `user-00000` … `user-00999`) with fake clocks: subtract `empty_string`
//! (the same names and loop, no check).

use fluxrate::{Algorithm, ManualClock, Quota, RateLimiter};
use fluxrate_benches::live_quota;
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
    let open = Quota::new(1, Duration::from_nanos(1)).with_burst(u64::from(u32::MAX));
    match which.as_str() {
        "flux_tb" => direct(open, Algorithm::TokenBucket),
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
        "empty" => {}
        other => {
            eprintln!("unknown workload {other:?}: flux_tb, flux_swc, flux_fixed, flux_keyed, floor_keyed, flux_log, flux_log_check, flux_log_reject, gov, gov_keyed, flux_keyed_string, flux_keyed_string_nostats, floor_keyed_string, gov_keyed_string, empty, empty_string, empty_advance");
            std::process::exit(2);
        }
    }
}
