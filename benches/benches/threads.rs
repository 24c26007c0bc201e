//! Criterion: two threads on one direct limiter, and on distinct keys of one keyed limiter.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fluxrate::RateLimiter;
use fluxrate_benches::open_quota;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

const THREADS: u64 = 2;

fn g_open_quota() -> governor::Quota {
    governor::Quota::with_period(Duration::from_nanos(1))
        .expect("non-zero period")
        .allow_burst(NonZeroU32::MAX)
}

/// Run `iters` operations on each of THREADS threads; the wall time of the whole.
fn on_threads(iters: u64, f: impl Fn(u64) -> bool + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let f = &f;
            s.spawn(move || {
                for _ in 0..iters {
                    black_box(f(t));
                }
            });
        }
    });
    start.elapsed()
}

fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_threads");
    g.throughput(Throughput::Elements(THREADS));
    let l = RateLimiter::builder(open_quota()).build().unwrap();
    g.bench_function("fluxrate/direct", |b| {
        b.iter_custom(|iters| on_threads(iters, |_| l.allow()))
    });
    let gov = governor::RateLimiter::direct(g_open_quota());
    g.bench_function("governor/direct", |b| {
        b.iter_custom(|iters| on_threads(iters, |_| gov.check().is_ok()))
    });
    let l = RateLimiter::builder(open_quota())
        .keyed::<u64>()
        .build()
        .unwrap();
    g.bench_function("fluxrate/keyed_distinct_keys", |b| {
        b.iter_custom(|iters| on_threads(iters, |t| l.allow_key(&t)))
    });
    let gov = governor::RateLimiter::keyed(g_open_quota());
    g.bench_function("governor/keyed_distinct_keys", |b| {
        b.iter_custom(|iters| on_threads(iters, |t| gov.check_key(&t).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, threads);
criterion_main!(benches);
