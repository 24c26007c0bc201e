//! Criterion: keyed checks on u64 and String keys, fluxrate against governor.

use criterion::{criterion_group, criterion_main, Criterion};
use fluxrate::RateLimiter;
use fluxrate_benches::open_quota;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

fn g_open_quota() -> governor::Quota {
    governor::Quota::with_period(Duration::from_nanos(1))
        .expect("non-zero period")
        .allow_burst(NonZeroU32::MAX)
}

fn keyed(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyed");
    for keys in [1u64, 10_000, 1_000_000] {
        let l = RateLimiter::builder(open_quota())
            .keyed::<u64>()
            .build()
            .unwrap();
        let gov = governor::RateLimiter::keyed(g_open_quota());
        for k in 0..keys {
            l.allow_key(&k);
            let _ = gov.check_key(&k);
        }
        let mut i = 0u64;
        g.bench_function(format!("fluxrate/u64/{keys}_keys"), |b| {
            b.iter(|| {
                i = (i + 1) % keys;
                black_box(l.allow_key(&i))
            })
        });
        let mut i = 0u64;
        g.bench_function(format!("governor/u64/{keys}_keys"), |b| {
            b.iter(|| {
                i = (i + 1) % keys;
                black_box(gov.check_key(&i).is_ok())
            })
        });
    }
    let names: Vec<String> = (0..1_000).map(|i| format!("user-{i:05}")).collect();
    let l = RateLimiter::builder(open_quota())
        .keyed::<String>()
        .build()
        .unwrap();
    let gov = governor::RateLimiter::<String, _, _>::keyed(g_open_quota());
    for n in &names {
        l.allow_key(n.as_str());
        let _ = gov.check_key(n);
    }
    let mut i = 0;
    g.bench_function("fluxrate/string_by_str/1000_keys", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            black_box(l.allow_key(names[i].as_str()))
        })
    });
    let mut i = 0;
    g.bench_function("governor/string/1000_keys", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            black_box(gov.check_key(&names[i]).is_ok())
        })
    });
    g.finish();
}

criterion_group!(benches, keyed);
criterion_main!(benches);
