//! A quick, reproducible comparison: every contender runs in short interleaved slices, and the
//! median over many rounds is reported as a markdown table of ns per operation.
//!
//! ```text
//! cargo run --release -p fluxrate-benches --bin compare            # about a minute
//! cargo run --release -p fluxrate-benches --bin compare -- --quick # seconds (CI smoke)
//! ```
//!
//! Interleaving matters on a shared machine: a slow period hits every contender alike, and the
//! median discards outliers. Ratios are taken within one run.

use fluxrate::{Algorithm, CachedClock, Clock, MonotonicClock, Quota, RateLimiter};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A named operation; `run(iters)` performs it `iters` times.
struct Case {
    group: &'static str,
    name: String,
    run: Box<dyn FnMut(u64)>,
    samples: Vec<f64>,
}

fn case(group: &'static str, name: impl Into<String>, run: impl FnMut(u64) + 'static) -> Case {
    Case {
        group,
        name: name.into(),
        run: Box::new(run),
        samples: Vec::new(),
    }
}

/// Never refuses: far more capacity than any benchmark can use.
fn open_quota() -> Quota {
    Quota::new(1, Duration::from_nanos(1)).with_burst(u64::from(u32::MAX))
}

/// Always refuses after the first call.
fn closed_quota() -> Quota {
    Quota::per_hour(1)
}

/// The windows need a limit they cannot reach: 1,000 per microsecond.
fn open_window_quota() -> Quota {
    Quota::new(1_000, Duration::from_micros(1))
}

fn direct<C: Clock>(alg: Algorithm, q: Quota, clock: C) -> RateLimiter<fluxrate::NotKeyed, C> {
    RateLimiter::builder(q)
        .algorithm(alg)
        .clock(clock)
        .build()
        .unwrap()
}

fn direct_no_stats<C: Clock>(
    alg: Algorithm,
    q: Quota,
    clock: C,
) -> RateLimiter<fluxrate::NotKeyed, C> {
    RateLimiter::builder(q)
        .algorithm(alg)
        .clock(clock)
        .stats(false)
        .build()
        .unwrap()
}

/// A hasher that maps every key to the same value: the worst case of a flooded hash table.
#[derive(Clone, Default)]
struct ConstantHasher;

impl BuildHasher for ConstantHasher {
    type Hasher = Constant;
    fn build_hasher(&self) -> Constant {
        Constant
    }
}

struct Constant;

impl Hasher for Constant {
    fn finish(&self) -> u64 {
        42
    }
    fn write(&mut self, _: &[u8]) {}
}

/// The classic mutex-protected token bucket, as a baseline.
struct MutexBucket {
    state: Mutex<(f64, Instant)>,
    rate_per_ns: f64,
    burst: f64,
}

impl MutexBucket {
    fn check(&self) -> bool {
        let mut s = self.state.lock().unwrap();
        let now = Instant::now();
        let elapsed = now.duration_since(s.1).as_nanos() as f64;
        s.0 = (s.0 + elapsed * self.rate_per_ns).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();

    // Clocks.
    let mono = MonotonicClock::new();
    v.push(case("clock", "MonotonicClock::now", move |n| {
        for _ in 0..n {
            black_box(mono.now());
        }
    }));
    let cached = CachedClock::new(Duration::from_millis(1));
    let c2 = cached.clone();
    v.push(case("clock", "CachedClock::now", move |n| {
        for _ in 0..n {
            black_box(c2.now());
        }
    }));

    // Direct checks, admit and reject paths, every algorithm, both clocks.
    for alg in Algorithm::ALL {
        let q = match alg {
            Algorithm::TokenBucket | Algorithm::LeakyBucket => open_quota(),
            _ => open_window_quota(),
        };
        let l = direct(alg, q, MonotonicClock::new());
        v.push(case(
            "direct admit",
            format!("{alg} (monotonic clock)"),
            move |n| {
                for _ in 0..n {
                    black_box(l.check().is_ok());
                }
            },
        ));
        // The cached clock stands still within its precision (1 ms): the sliding log would
        // fill up and measure refusals, so it is measured with the monotonic clock only.
        if alg != Algorithm::SlidingLog {
            let l = direct(alg, q, cached.clone());
            v.push(case(
                "direct admit",
                format!("{alg} (cached clock)"),
                move |n| {
                    for _ in 0..n {
                        black_box(l.check().is_ok());
                    }
                },
            ));
            let l = direct_no_stats(alg, q, cached.clone());
            v.push(case(
                "direct admit",
                format!("{alg} (cached clock, stats off)"),
                move |n| {
                    for _ in 0..n {
                        black_box(l.check().is_ok());
                    }
                },
            ));
        }
        let l = direct(alg, closed_quota(), MonotonicClock::new());
        l.allow();
        v.push(case(
            "direct reject",
            format!("{alg} (monotonic clock)"),
            move |n| {
                for _ in 0..n {
                    black_box(l.check().is_err());
                }
            },
        ));
    }
    let l = direct(Algorithm::TokenBucket, open_quota(), MonotonicClock::new());
    v.push(case("direct admit", "token_bucket check_n(3)", move |n| {
        for _ in 0..n {
            black_box(l.check_n(3).is_ok());
        }
    }));
    let m = MutexBucket {
        state: Mutex::new((1e18, Instant::now())),
        rate_per_ns: 1.0,
        burst: 1e18,
    };
    v.push(case(
        "direct admit",
        "baseline: Mutex<token bucket>",
        move |n| {
            for _ in 0..n {
                black_box(m.check());
            }
        },
    ));

    // Keyed checks.
    let keyed = |hasher_name: &'static str, keys: u64, rr: bool| -> Case {
        let name = format!(
            "u64, {} ({hasher_name})",
            if rr {
                format!("{keys} keys round-robin")
            } else {
                "one hot key".to_owned()
            }
        );
        macro_rules! build {
            ($h:expr) => {{
                let l = RateLimiter::builder(open_quota())
                    .keyed::<u64>()
                    .hasher($h)
                    .build()
                    .unwrap();
                for k in 0..keys {
                    l.allow_key(&k);
                }
                let mut i = 0u64;
                case("keyed", name, move |n| {
                    for _ in 0..n {
                        let k = if rr {
                            i += 1;
                            if i == keys {
                                i = 0;
                            }
                            i
                        } else {
                            7
                        };
                        black_box(l.check_key(&k).is_ok());
                    }
                })
            }};
        }
        match hasher_name {
            "foldhash, default" => build!(fluxrate::KeyHasher::new()),
            "SipHash" => build!(RandomState::new()),
            _ => build!(ConstantHasher),
        }
    };
    v.push(keyed("foldhash, default", 1, false));
    v.push(keyed("foldhash, default", 10_000, true));
    v.push(keyed("SipHash", 10_000, true));
    v.push(keyed("foldhash, default", 1_000_000, true));
    v.push(keyed("constant hash: flooded", 10_000, true));
    let l = RateLimiter::builder(open_quota())
        .keyed::<String>()
        .build()
        .unwrap();
    let names: Vec<String> = (0..1_000).map(|i| format!("user-{i:05}")).collect();
    for k in &names {
        l.allow_key(k.as_str());
    }
    let mut i = 0;
    v.push(case(
        "keyed",
        "String keys via &str, 1,000 keys",
        move |n| {
            for _ in 0..n {
                i = (i + 1) % names.len();
                black_box(l.check_key(names[i].as_str()).is_ok());
            }
        },
    ));
    v
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, slice) = if quick {
        (5, Duration::from_millis(2))
    } else {
        (60, Duration::from_millis(15))
    };
    let mut cases = cases();
    // Calibrate iterations per slice.
    let mut iters: Vec<u64> = cases
        .iter_mut()
        .map(|c| {
            let mut n = 64;
            loop {
                let t = Instant::now();
                (c.run)(n);
                if t.elapsed() >= slice / 4 || n >= 1 << 26 {
                    return (n as f64 * slice.as_secs_f64() / t.elapsed().as_secs_f64().max(1e-9))
                        .clamp(64.0, 1e8) as u64;
                }
                n *= 4;
            }
        })
        .collect();
    for _ in 0..rounds {
        for (c, n) in cases.iter_mut().zip(iters.iter_mut()) {
            let t = Instant::now();
            (c.run)(*n);
            c.samples.push(t.elapsed().as_nanos() as f64 / *n as f64);
        }
    }
    println!(
        "fluxrate compare: {rounds} interleaved rounds of ~{slice:?} per contender, median ns/op \
         ({} cores)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut groups: Vec<&'static str> = Vec::new();
    for c in &cases {
        if !groups.contains(&c.group) {
            groups.push(c.group);
        }
    }
    for group in groups {
        println!("\n| {group} | ns/op | ratio to first row |\n|---|---:|---:|");
        let mut first = None;
        for c in cases.iter_mut().filter(|c| c.group == group) {
            let m = median(&mut c.samples);
            let f = *first.get_or_insert(m);
            println!("| {} | {:.1} | {:.2} |", c.name, m, m / f);
        }
    }
}
