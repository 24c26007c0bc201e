//! Criterion: direct (un-keyed) checks, fluxrate against governor, admit and reject paths.

use criterion::{criterion_group, criterion_main, Criterion};
use fluxrate::{Algorithm, CachedClock, Quota, RateLimiter};
use fluxrate_benches::open_quota;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

#[path = "common/governor.rs"]
#[allow(dead_code)]
mod governor_quota;
use governor_quota::g_open as g_open_quota;

fn direct(c: &mut Criterion) {
    let mut g = c.benchmark_group("direct");
    for alg in Algorithm::ALL {
        let q = match alg {
            Algorithm::TokenBucket | Algorithm::LeakyBucket => open_quota(),
            _ => Quota::new(1_000, Duration::from_micros(1)),
        };
        let l = RateLimiter::builder(q).algorithm(alg).build().unwrap();
        g.bench_function(format!("fluxrate/{alg}/admit"), |b| {
            b.iter(|| black_box(l.allow()))
        });
        let l = RateLimiter::builder(Quota::per_hour(1))
            .algorithm(alg)
            .build()
            .unwrap();
        let _ = l.allow();
        g.bench_function(format!("fluxrate/{alg}/reject"), |b| {
            b.iter(|| black_box(l.check().is_err()))
        });
    }
    let cached = CachedClock::new(Duration::from_millis(1));
    let l = RateLimiter::builder(open_quota())
        .clock(cached)
        .build()
        .unwrap();
    g.bench_function("fluxrate/token_bucket/admit/cached_clock", |b| {
        b.iter(|| black_box(l.allow()))
    });
    let gov = governor::RateLimiter::direct(g_open_quota());
    g.bench_function("governor/admit", |b| {
        b.iter(|| black_box(gov.check().is_ok()))
    });
    let clock = governor::clock::QuantaUpkeepClock::from_interval(Duration::from_millis(1))
        .expect("upkeep thread");
    let gov = governor::RateLimiter::direct_with_clock(g_open_quota(), clock);
    g.bench_function("governor/admit/upkeep_clock", |b| {
        b.iter(|| black_box(gov.check().is_ok()))
    });
    let gov = governor::RateLimiter::direct(governor::Quota::per_hour(NonZeroU32::MIN));
    let _ = gov.check();
    g.bench_function("governor/reject", |b| {
        b.iter(|| black_box(gov.check().is_err()))
    });
    g.finish();
}

criterion_group!(benches, direct);
criterion_main!(benches);
