//! Criterion: two threads on one direct limiter, and on keys of their own in one keyed limiter.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fluxrate::RateLimiter;
use fluxrate_benches::{live_quota, open_quota};
use std::hint::black_box;
use std::time::{Duration, Instant};

const THREADS: u64 = 2;

#[path = "common/governor.rs"]
#[allow(dead_code)]
mod governor_quota;
use governor_quota::{g_live, g_open as g_open_quota};

/// Run `iters` operations `f(thread, i)` on each of THREADS threads; the wall time of the
/// whole.
fn on_threads(iters: u64, f: impl Fn(u64, u64) -> bool + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let f = &f;
            s.spawn(move || {
                for i in 0..iters {
                    black_box(f(t, i));
                }
            });
        }
    });
    start.elapsed()
}

/// Thread `t`'s keys: 1,024 of its own, round-robin (a single key per thread would share a
/// `DashMap` shard with the other thread's in one run out of eight).
fn own_key(t: u64, i: u64) -> u64 {
    t + THREADS * (i & 1023)
}

fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_threads");
    g.throughput(Throughput::Elements(THREADS));
    let l = RateLimiter::builder(open_quota()).build().unwrap();
    g.bench_function("fluxrate/direct", |b| {
        b.iter_custom(|iters| on_threads(iters, |_, _| l.allow()))
    });
    let gov = governor::RateLimiter::direct(g_open_quota());
    g.bench_function("governor/direct", |b| {
        b.iter_custom(|iters| on_threads(iters, |_, _| gov.check().is_ok()))
    });
    let l = RateLimiter::builder(live_quota())
        .keyed::<u64>()
        .build()
        .unwrap();
    g.bench_function("fluxrate/keyed_own_keys", |b| {
        b.iter_custom(|iters| on_threads(iters, |t, i| l.allow_key(&own_key(t, i))))
    });
    let gov = governor::RateLimiter::keyed(g_live());
    g.bench_function("governor/keyed_own_keys", |b| {
        b.iter_custom(|iters| on_threads(iters, |t, i| gov.check_key(&own_key(t, i)).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, threads);
criterion_main!(benches);
