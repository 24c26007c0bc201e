//! Criterion: keyed checks on u64 and String keys, fluxrate against governor.

use criterion::{criterion_group, criterion_main, Criterion};
use fluxrate::RateLimiter;
use fluxrate_benches::live_quota;
use std::hint::black_box;

#[path = "common/governor.rs"]
#[allow(dead_code)]
mod governor_quota;
use governor_quota::g_live;

/// The next of `n` indices, round-robin (no `%`: a division per call would add the same
/// ~10 ns to both contenders).
fn next(i: &mut usize, n: usize) -> usize {
    *i += 1;
    if *i == n {
        *i = 0;
    }
    *i
}

fn keyed(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyed");
    for keys in [1u64, 10_000, 1_000_000] {
        let l = RateLimiter::builder(live_quota())
            .keyed::<u64>()
            .build()
            .unwrap();
        let gov = governor::RateLimiter::keyed(g_live());
        for k in 0..keys {
            let _ = l.allow_key(&k);
            let _ = gov.check_key(&k);
        }
        let mut i = 0usize;
        g.bench_function(format!("fluxrate/u64/{keys}_keys"), |b| {
            b.iter(|| black_box(l.allow_key(&(next(&mut i, keys as usize) as u64))))
        });
        let mut i = 0usize;
        g.bench_function(format!("governor/u64/{keys}_keys"), |b| {
            b.iter(|| black_box(gov.check_key(&(next(&mut i, keys as usize) as u64)).is_ok()))
        });
    }
    let names: Vec<String> = (0..1_000).map(|i| format!("user-{i:05}")).collect();
    let l = RateLimiter::builder(live_quota())
        .keyed::<String>()
        .build()
        .unwrap();
    let gov = governor::RateLimiter::<String, _, _>::keyed(g_live());
    for n in &names {
        let _ = l.allow_key(n.as_str());
        let _ = gov.check_key(n);
    }
    let mut i = 0;
    g.bench_function("fluxrate/string_by_str/1000_keys", |b| {
        b.iter(|| black_box(l.allow_key(names[next(&mut i, names.len())].as_str())))
    });
    let mut i = 0;
    g.bench_function("governor/string/1000_keys", |b| {
        b.iter(|| black_box(gov.check_key(&names[next(&mut i, names.len())]).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, keyed);
criterion_main!(benches);
