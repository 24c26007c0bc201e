//! A quick, reproducible comparison of fluxrate with governor and a mutex baseline: every
//! contender runs in short interleaved slices and the median over many rounds is reported as a
//! markdown table of ns per operation, with ratios taken within the same run.
//!
//! ```text
//! cargo bench -p fluxrate-benches --bench compare              # about a minute
//! cargo bench -p fluxrate-benches --bench compare -- --quick   # seconds (CI smoke)
//! cargo bench -p fluxrate-benches --bench compare -- --only "admit path"   # some groups
//! ```
//!
//! Interleaving matters on a shared machine: a slow period hits every contender alike, and the
//! median discards outliers.

use fluxrate::{Algorithm, CachedClock, Clock, CoarseClock, MonotonicClock, Quota, RateLimiter};
use governor::clock::{QuantaClock, QuantaUpkeepClock};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts live heap bytes, for the memory section.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

#[path = "common/governor.rs"]
mod governor_quota;
use fluxrate_benches::{live_quota, open_quota};
use governor_quota::{g_live, g_open as g_open_quota};

/// Always refuses after the first call.
fn closed_quota() -> Quota {
    Quota::per_hour(1)
}

fn g_closed_quota() -> governor::Quota {
    governor::Quota::per_hour(NonZeroU32::MIN)
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

/// quanta's upkeep thread is global: start it once and share clones.
fn upkeep() -> QuantaUpkeepClock {
    static CLOCK: std::sync::OnceLock<QuantaUpkeepClock> = std::sync::OnceLock::new();
    CLOCK
        .get_or_init(|| {
            QuantaUpkeepClock::from_interval(Duration::from_millis(1)).expect("upkeep thread")
        })
        .clone()
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

macro_rules! looped {
    ($body:expr) => {
        move |n| {
            for _ in 0..n {
                black_box($body);
            }
        }
    };
}

thread_local! {
    static LAST_TSC: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The TSC through quanta, never behind the same thread's previous reading: the candidate
/// default clock measured beside `CoarseClock` (issue 14).
struct ClampedTsc {
    clock: quanta::Clock,
    base: quanta::Instant,
}

impl ClampedTsc {
    fn new() -> Self {
        let clock = quanta::Clock::new();
        let base = clock.now();
        Self { clock, base }
    }

    #[inline]
    fn now(&self) -> u64 {
        let t = self
            .clock
            .now()
            .saturating_duration_since(self.base)
            .as_nanos() as u64;
        LAST_TSC.with(|last| {
            let t = t.max(last.get());
            last.set(t);
            t
        })
    }
}

fn clock_cases(v: &mut Vec<Case>, cached: &CachedClock) {
    let mono = MonotonicClock::new();
    v.push(case(
        "clock read",
        "fluxrate MonotonicClock (Instant)",
        looped!(mono.now()),
    ));
    let gm = governor::clock::MonotonicClock;
    v.push(case(
        "clock read",
        "governor MonotonicClock",
        looped!(governor::clock::Clock::now(&gm)),
    ));
    let c = cached.clone();
    v.push(case("clock read", "fluxrate CachedClock", looped!(c.now())));
    let coarse = CoarseClock::new();
    v.push(case(
        "clock read",
        "fluxrate CoarseClock::now (CLOCK_MONOTONIC_COARSE)",
        looped!(coarse.now()),
    ));
    v.push(case(
        "clock read",
        "fluxrate CoarseClock::now_precise (CLOCK_MONOTONIC)",
        looped!(coarse.now_precise()),
    ));
    let tsc = ClampedTsc::new();
    v.push(case(
        "clock read",
        "TSC (quanta) with a per-thread monotonic clamp",
        looped!(tsc.now()),
    ));
    let q = QuantaClock::default();
    v.push(case(
        "clock read",
        "governor QuantaClock (default)",
        looped!(governor::clock::Clock::now(&q)),
    ));
    let u = upkeep();
    v.push(case(
        "clock read",
        "governor QuantaUpkeepClock",
        looped!(governor::clock::Clock::now(&u)),
    ));
}

fn direct_cases(v: &mut Vec<Case>, cached: &CachedClock) {
    // Default clocks of each, as shipped: `RateLimiter::builder(q).build()` and
    // `governor::RateLimiter::direct(q)`.
    let l = RateLimiter::builder(open_quota()).build().unwrap();
    v.push(case(
        "direct check, default clocks",
        "fluxrate token bucket allow() (CoarseClock, its default)",
        looped!(l.allow()),
    ));
    let l = RateLimiter::builder(open_quota()).build().unwrap();
    v.push(case(
        "direct check, default clocks",
        "fluxrate token bucket check() (CoarseClock, with metadata)",
        looped!(l.check().is_ok()),
    ));
    let l = direct(Algorithm::TokenBucket, open_quota(), MonotonicClock::new());
    v.push(case(
        "direct check, default clocks",
        "fluxrate token bucket allow() (MonotonicClock: Instant)",
        looped!(l.allow()),
    ));
    let g =
        governor::RateLimiter::direct_with_clock(g_open_quota(), governor::clock::MonotonicClock);
    v.push(case(
        "direct check, default clocks",
        "governor check() (MonotonicClock: Instant, the safe clock)",
        looped!(g.check().is_ok()),
    ));
    let g = governor::RateLimiter::direct(g_open_quota());
    v.push(case(
        "direct check, default clocks",
        "governor check() (QuantaClock: TSC, its default)",
        looped!(g.check().is_ok()),
    ));
    let m = MutexBucket {
        state: Mutex::new((1e18, Instant::now())),
        rate_per_ns: 1.0,
        burst: 1e18,
    };
    v.push(case(
        "direct check, default clocks",
        "baseline Mutex<token bucket> (Instant)",
        looped!(m.check()),
    ));

    // Fastest clocks of each.
    let l = direct(Algorithm::TokenBucket, open_quota(), cached.clone());
    v.push(case(
        "direct check, fastest clocks",
        "fluxrate token bucket allow() (CachedClock)",
        looped!(l.allow()),
    ));
    let l = RateLimiter::builder(open_quota())
        .clock(cached.clone())
        .stats(false)
        .build()
        .unwrap();
    v.push(case(
        "direct check, fastest clocks",
        "fluxrate token bucket allow() (CachedClock, stats off)",
        looped!(l.allow()),
    ));
    let l = direct(Algorithm::TokenBucket, open_quota(), cached.clone());
    v.push(case(
        "direct check, fastest clocks",
        "fluxrate token bucket check() (CachedClock)",
        looped!(l.check().is_ok()),
    ));
    let g = governor::RateLimiter::direct_with_clock(g_open_quota(), upkeep());
    v.push(case(
        "direct check, fastest clocks",
        "governor check() (QuantaUpkeepClock)",
        looped!(g.check().is_ok()),
    ));

    // The bare cell: no clock, no limiter (what the algorithm itself costs).
    let tb = fluxrate::TokenBucket::new(&open_quota()).unwrap();
    let st = fluxrate::GcraState::new();
    let mut t = 0u64;
    v.push(case(
        "direct check, fastest clocks",
        "fluxrate TokenBucket::allow on a bare GcraState",
        move |n| {
            for _ in 0..n {
                t += 1;
                black_box(fluxrate::RateAlgorithm::allow(&tb, &st, t, 1));
            }
        },
    ));
    let l = direct(
        Algorithm::TokenBucket,
        open_quota(),
        fluxrate::ManualClock::new(),
    );
    v.push(case(
        "direct check, fastest clocks",
        "fluxrate allow() (ManualClock, stats on)",
        looped!(l.allow()),
    ));
    let l = RateLimiter::builder(open_quota())
        .clock(fluxrate::ManualClock::new())
        .stats(false)
        .build()
        .unwrap();
    v.push(case(
        "direct check, fastest clocks",
        "fluxrate allow() (ManualClock, stats off)",
        looped!(l.allow()),
    ));
    let g = governor::RateLimiter::direct_with_clock(
        g_open_quota(),
        governor::clock::FakeRelativeClock::default(),
    );
    v.push(case(
        "direct check, fastest clocks",
        "governor check() (FakeRelativeClock)",
        looped!(g.check().is_ok()),
    ));

    // Every algorithm, admit and reject paths (default clock, allow()).
    for alg in Algorithm::ALL {
        let q = match alg {
            Algorithm::TokenBucket | Algorithm::LeakyBucket => open_quota(),
            _ => open_window_quota(),
        };
        let l = direct(alg, q, MonotonicClock::new());
        v.push(case(
            "algorithms, admit path (MonotonicClock)",
            format!("{alg}"),
            looped!(l.allow()),
        ));
        if alg != Algorithm::SlidingLog {
            // The cached clock stands still within its precision (1 ms): a window quota must
            // not fill up within it, or this would measure refusals. 2^24 − 1 per 100 ms (the
            // counter's largest limit) leaves room for ~100,000 calls per millisecond.
            let q = match alg {
                Algorithm::TokenBucket | Algorithm::LeakyBucket => q,
                _ => Quota::new((1 << 24) - 1, Duration::from_millis(100)),
            };
            let l = direct(alg, q, cached.clone());
            v.push(case(
                "algorithms, admit path (CachedClock)",
                format!("{alg}"),
                looped!(l.allow()),
            ));
        }
        let l = direct(alg, closed_quota(), MonotonicClock::new());
        let _ = l.allow();
        v.push(case(
            "algorithms, reject path (MonotonicClock)",
            format!("{alg} allow()"),
            looped!(l.allow()),
        ));
        let l = direct(alg, closed_quota(), MonotonicClock::new());
        let _ = l.allow();
        v.push(case(
            "algorithms, reject path (MonotonicClock)",
            format!("{alg} check() (with retry-after)"),
            looped!(l.check().is_err()),
        ));
    }
    let g = governor::RateLimiter::direct(g_closed_quota());
    let _ = g.check();
    v.push(case(
        "algorithms, reject path (MonotonicClock)",
        "governor check() (default clock)",
        looped!(g.check().is_err()),
    ));
    let l = direct(Algorithm::TokenBucket, open_quota(), MonotonicClock::new());
    v.push(case(
        "algorithms, admit path (MonotonicClock)",
        "token_bucket check_n(3)",
        looped!(l.check_n(3).is_ok()),
    ));
}

static MACRO_LIMITER: std::sync::LazyLock<RateLimiter<fluxrate::NotKeyed, CachedClock>> =
    std::sync::LazyLock::new(|| {
        RateLimiter::builder(open_quota())
            .clock(CachedClock::new(Duration::from_millis(1)))
            .build()
            .unwrap()
    });

#[fluxrate::rate_limit(limiter = MACRO_LIMITER)]
fn limited_fn(x: u64) -> Result<u64, fluxrate::RateLimited> {
    Ok(x)
}

#[fluxrate::rate_limit(calls = 1_000_000_000, period = 1, burst = 4_000_000_000)]
fn limited_fn_own() -> Result<(), fluxrate::RateLimited> {
    Ok(())
}

fn macro_cases(v: &mut Vec<Case>) {
    let l = &*MACRO_LIMITER;
    let mut x = 0u64;
    v.push(case(
        "#[rate_limit] overhead (CachedClock)",
        "direct check() and the same work",
        move |n| {
            for _ in 0..n {
                x += 1;
                black_box(l.check().map(|_| x).is_ok());
            }
        },
    ));
    let mut x = 0u64;
    v.push(case(
        "#[rate_limit] overhead (CachedClock)",
        "#[rate_limit(limiter = …)] fn",
        move |n| {
            for _ in 0..n {
                x += 1;
                black_box(limited_fn(x).is_ok());
            }
        },
    ));
    let own = direct(
        Algorithm::TokenBucket,
        Quota::new(1_000_000_000, Duration::from_secs(1)).with_burst(4_000_000_000),
        MonotonicClock::new(),
    );
    v.push(case(
        "#[rate_limit] overhead (MonotonicClock)",
        "direct check()",
        looped!(own.check().is_ok()),
    ));
    v.push(case(
        "#[rate_limit] overhead (MonotonicClock)",
        "#[rate_limit(calls, period)] fn (its own static)",
        looped!(limited_fn_own().is_ok()),
    ));
}

/// The next of `keys` keys, round-robin (no `%`: a division per call would add the same
/// ~10 ns to every contender).
fn rr(i: &mut u64, keys: u64) -> u64 {
    *i += 1;
    if *i >= keys {
        *i = 0;
    }
    *i
}

/// `keys` u64 keys round-robin through `check`, after one check of each (every key present).
fn round_robin(
    group: &'static str,
    name: &str,
    keys: u64,
    check: impl Fn(&u64) -> bool + 'static,
) -> Case {
    for k in 0..keys {
        check(&k);
    }
    let mut i = 0u64;
    case(group, name, move |n| {
        for _ in 0..n {
            black_box(check(&rr(&mut i, keys)));
        }
    })
}

/// A keyed fluxrate limiter on `live_quota` with the given clock, hasher and stats setting.
fn flux_keyed<C: Clock, S>(clock: C, hasher: S, stats: bool) -> RateLimiter<u64, C, S>
where
    S: BuildHasher + Clone,
{
    RateLimiter::builder(live_quota())
        .clock(clock)
        .stats(stats)
        .keyed::<u64>()
        .hasher(hasher)
        .build()
        .unwrap()
}

/// The floor under any keyed limiter built on `DashMap` (fluxrate's and governor's both are):
/// the lookup (hash, shard read lock and unlock, probe) and one atomic read-modify-write on
/// the value, with no clock and no rate logic.
fn store_floor<S>(group: &'static str, name: &str, hasher: S, keys: u64) -> Case
where
    S: BuildHasher + Clone + Send + Sync + 'static,
{
    let m = dashmap::DashMap::with_hasher(hasher);
    for k in 0..keys {
        m.insert(k, AtomicU64::new(0));
    }
    round_robin(group, name, keys, move |k| {
        m.get(k)
            .map(|c| c.fetch_add(1, Ordering::Relaxed))
            .is_some()
    })
}

fn keyed_cases(v: &mut Vec<Case>, cached: &CachedClock) {
    for keys in [1u64, 10_000, 1_000_000] {
        let group = match keys {
            1 => "keyed: one hot u64 key",
            10_000 => "keyed: 10,000 u64 keys",
            _ => "keyed: 1,000,000 u64 keys",
        };
        let l = flux_keyed(CoarseClock::new(), fluxrate::KeyHasher::new(), true);
        v.push(round_robin(
            group,
            "fluxrate allow_key (CoarseClock, its default)",
            keys,
            move |k| l.allow_key(k),
        ));
        let l = flux_keyed(MonotonicClock::new(), fluxrate::KeyHasher::new(), true);
        v.push(round_robin(
            group,
            "fluxrate allow_key (MonotonicClock, foldhash)",
            keys,
            move |k| l.allow_key(k),
        ));
        let l = flux_keyed(cached.clone(), fluxrate::KeyHasher::new(), true);
        v.push(round_robin(
            group,
            "fluxrate allow_key (CachedClock)",
            keys,
            move |k| l.allow_key(k),
        ));
        if keys < 1_000_000 {
            let l = flux_keyed(cached.clone(), fluxrate::KeyHasher::new(), false);
            v.push(round_robin(
                group,
                "fluxrate allow_key (CachedClock, stats off)",
                keys,
                move |k| l.allow_key(k),
            ));
        }
        let g =
            governor::RateLimiter::dashmap_with_clock(g_live(), governor::clock::MonotonicClock);
        v.push(round_robin(
            group,
            "governor check_key (MonotonicClock, DashMap)",
            keys,
            move |k| g.check_key(k).is_ok(),
        ));
        let g = governor::RateLimiter::keyed(g_live());
        v.push(round_robin(
            group,
            "governor check_key (default clock, DashMap)",
            keys,
            move |k| g.check_key(k).is_ok(),
        ));
        let g = governor::RateLimiter::dashmap_with_clock(g_live(), upkeep());
        v.push(round_robin(
            group,
            "governor check_key (QuantaUpkeepClock, DashMap)",
            keys,
            move |k| g.check_key(k).is_ok(),
        ));
        if keys < 1_000_000 {
            v.push(store_floor(
                group,
                "DashMap::get + one atomic RMW alone (foldhash): the store's floor",
                fluxrate::KeyHasher::new(),
                keys,
            ));
            v.push(store_floor(
                group,
                "DashMap::get + one atomic RMW alone (SipHash, governor's hasher)",
                RandomState::new(),
                keys,
            ));
        }
        if keys == 10_000 {
            let l = flux_keyed(MonotonicClock::new(), RandomState::new(), true);
            v.push(round_robin(
                group,
                "fluxrate allow_key, SipHash instead of foldhash",
                keys,
                move |k| l.allow_key(k),
            ));
            let l = flux_keyed(MonotonicClock::new(), ConstantHasher, true);
            v.push(round_robin(
                group,
                "fluxrate allow_key, constant hash (a flooded table)",
                keys,
                move |k| l.allow_key(k),
            ));
        }
    }
    // The same clock on both sides: Instant (safe), then each one's fastest.
    let names: Vec<String> = (0..1_000).map(|i| format!("user-{i:05}")).collect();
    let group = "keyed: 1,000 String keys";
    let l = RateLimiter::builder(live_quota())
        .keyed::<String>()
        .build()
        .unwrap();
    v.push(string_case(
        group,
        "fluxrate allow_key(&str) (CoarseClock, its default)",
        &names,
        move |k| l.allow_key(k.as_str()),
    ));
    let l = RateLimiter::builder(live_quota())
        .clock(MonotonicClock::new())
        .keyed::<String>()
        .build()
        .unwrap();
    v.push(string_case(
        group,
        "fluxrate allow_key(&str) (MonotonicClock)",
        &names,
        move |k| l.allow_key(k.as_str()),
    ));
    let g = governor::RateLimiter::<String, _, _, _>::dashmap_with_clock(
        g_live(),
        governor::clock::MonotonicClock,
    );
    v.push(string_case(
        group,
        "governor check_key(&String) (MonotonicClock)",
        &names,
        move |k| g.check_key(k).is_ok(),
    ));
    let g = governor::RateLimiter::<String, _, _, _>::dashmap(g_live());
    v.push(string_case(
        group,
        "governor check_key(&String) (default clock)",
        &names,
        move |k| g.check_key(k).is_ok(),
    ));
    let l = RateLimiter::builder(live_quota())
        .clock(cached.clone())
        .keyed::<String>()
        .build()
        .unwrap();
    v.push(string_case(
        group,
        "fluxrate allow_key(&str) (CachedClock)",
        &names,
        move |k| l.allow_key(k.as_str()),
    ));
    let g = governor::RateLimiter::<String, _, _, _>::dashmap_with_clock(g_live(), upkeep());
    v.push(string_case(
        group,
        "governor check_key(&String) (QuantaUpkeepClock)",
        &names,
        move |k| g.check_key(k).is_ok(),
    ));
}

/// A round-robin over `names`, warmed up first (every key exists).
fn string_case(
    group: &'static str,
    name: &str,
    names: &[String],
    check: impl Fn(&String) -> bool + 'static,
) -> Case {
    for k in names {
        check(k);
    }
    let names = names.to_vec();
    let mut i = 0;
    case(group, name, move |n| {
        for _ in 0..n {
            // No `%`: a division per call would add the same ~10 ns to both sides.
            i += 1;
            if i == names.len() {
                i = 0;
            }
            black_box(check(&names[i]));
        }
    })
}

/// Two threads hammering one limiter; `f(thread index)`; ns per operation of wall time.
/// Wall ns per operation of `ops` calls `f(thread, i)` on each of two threads.
fn two_threads<F: Fn(u64, u64) -> bool + Sync>(ops: u64, f: F) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let f = &f;
            s.spawn(move || {
                for i in 0..ops {
                    black_box(f(t, i));
                }
            });
        }
    });
    start.elapsed().as_nanos() as f64 / (2 * ops) as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn print_group(group: &str, rows: &[(String, f64)]) {
    println!("\n| {group} | ns/op | ratio to first row |\n|---|---:|---:|");
    let first = rows.first().map_or(1.0, |r| r.1);
    for (name, m) in rows {
        println!("| {name} | {m:.1} | {:.2} |", m / first);
    }
}

/// Thread `t`'s keys: 1,024 of its own, round-robin. (One key per thread would put both keys
/// on one `DashMap` shard in one run out of eight, with random seeds, and then measure both
/// threads taking that shard's lock on every call.)
fn own_key(t: u64, i: u64) -> u64 {
    t + 2 * (i & 1023)
}

fn threads_section(quick: bool, cached: &CachedClock) {
    let ops = if quick { 20_000 } else { 2_000_000 };
    let rounds = if quick { 3 } else { 15 };
    let l = direct(Algorithm::TokenBucket, open_quota(), MonotonicClock::new());
    let g = governor::RateLimiter::direct(g_open_quota());
    let gm =
        governor::RateLimiter::direct_with_clock(g_open_quota(), governor::clock::MonotonicClock);
    let lc = direct(Algorithm::TokenBucket, open_quota(), cached.clone());
    let gc = governor::RateLimiter::direct_with_clock(g_open_quota(), upkeep());
    let lk = RateLimiter::builder(live_quota())
        .keyed::<u64>()
        .build()
        .unwrap();
    let gk = governor::RateLimiter::keyed(g_live());
    let gkm = governor::RateLimiter::dashmap_with_clock(g_live(), governor::clock::MonotonicClock);
    let lkc = RateLimiter::builder(live_quota())
        .clock(cached.clone())
        .keyed::<u64>()
        .build()
        .unwrap();
    let gkc = governor::RateLimiter::dashmap_with_clock(g_live(), upkeep());
    let mut samples: Vec<(String, Vec<f64>)> = [
        "fluxrate, one direct limiter (MonotonicClock)",
        "governor, one direct limiter (MonotonicClock)",
        "governor, one direct limiter (default clock)",
        "fluxrate, one direct limiter (CachedClock)",
        "governor, one direct limiter (QuantaUpkeepClock)",
        "fluxrate, keyed, 1,024 keys of its own per thread (MonotonicClock)",
        "governor, keyed, 1,024 keys of its own per thread (MonotonicClock)",
        "governor, keyed, 1,024 keys of its own per thread (default clock)",
        "fluxrate, keyed, 1,024 keys of its own per thread (CachedClock)",
        "governor, keyed, 1,024 keys of its own per thread (QuantaUpkeepClock)",
    ]
    .iter()
    .map(|s| (s.to_string(), Vec::new()))
    .collect();
    for _ in 0..rounds {
        samples[0].1.push(two_threads(ops, |_, _| l.allow()));
        samples[1]
            .1
            .push(two_threads(ops, |_, _| gm.check().is_ok()));
        samples[2]
            .1
            .push(two_threads(ops, |_, _| g.check().is_ok()));
        samples[3].1.push(two_threads(ops, |_, _| lc.allow()));
        samples[4]
            .1
            .push(two_threads(ops, |_, _| gc.check().is_ok()));
        samples[5]
            .1
            .push(two_threads(ops, |t, i| lk.allow_key(&own_key(t, i))));
        samples[6].1.push(two_threads(ops, |t, i| {
            gkm.check_key(&own_key(t, i)).is_ok()
        }));
        samples[7].1.push(two_threads(ops, |t, i| {
            gk.check_key(&own_key(t, i)).is_ok()
        }));
        samples[8]
            .1
            .push(two_threads(ops, |t, i| lkc.allow_key(&own_key(t, i))));
        samples[9].1.push(two_threads(ops, |t, i| {
            gkc.check_key(&own_key(t, i)).is_ok()
        }));
    }
    let rows: Vec<(String, f64)> = samples
        .into_iter()
        .map(|(n, mut s)| (n, median(&mut s)))
        .collect();
    print_group("two threads (wall ns per op, 2 cores)", &rows);
}

fn memory_section(quick: bool) {
    let keys: u64 = if quick { 100_000 } else { 1_000_000 };
    println!("\n| memory: {keys} keys | heap bytes per key | after idle + sweep/shrink (bytes above baseline) |\n|---|---:|---:|");
    let clock = fluxrate::ManualClock::new();
    let base = LIVE.load(Ordering::Relaxed);
    let l = RateLimiter::builder(Quota::per_second(10))
        .clock(clock.clone())
        .keyed::<u64>()
        .build()
        .unwrap();
    for k in 0..keys {
        let _ = l.allow_key(&k);
    }
    let per = (LIVE.load(Ordering::Relaxed) - base) as f64 / keys as f64;
    clock.advance(Duration::from_secs(2));
    l.sweep();
    let after = LIVE.load(Ordering::Relaxed) - base;
    println!("| fluxrate, u64 keys | {per:.1} | {after} |");
    drop(l);

    let base = LIVE.load(Ordering::Relaxed);
    let g = governor::RateLimiter::keyed(governor::Quota::per_second(NonZeroU32::new(10).unwrap()));
    for k in 0..keys {
        let _ = g.check_key(&k);
    }
    let per = (LIVE.load(Ordering::Relaxed) - base) as f64 / keys as f64;
    std::thread::sleep(Duration::from_millis(1_100));
    g.retain_recent();
    g.shrink_to_fit();
    let after = LIVE.load(Ordering::Relaxed) - base;
    println!("| governor, u64 keys | {per:.1} | {after} |");
    drop(g);

    let names: Vec<String> = (0..keys).map(|i| format!("user-{i:07}")).collect();
    let base = LIVE.load(Ordering::Relaxed);
    let clock = fluxrate::ManualClock::new();
    let l = RateLimiter::builder(Quota::per_second(10))
        .clock(clock.clone())
        .keyed::<String>()
        .build()
        .unwrap();
    for k in &names {
        let _ = l.allow_key(k.as_str());
    }
    let per = (LIVE.load(Ordering::Relaxed) - base) as f64 / keys as f64;
    clock.advance(Duration::from_secs(2));
    l.sweep();
    let after = LIVE.load(Ordering::Relaxed) - base;
    println!("| fluxrate, 12-byte String keys | {per:.1} | {after} |");
    drop(l);
    let base = LIVE.load(Ordering::Relaxed);
    let g = governor::RateLimiter::<String, _, _>::keyed(governor::Quota::per_second(
        NonZeroU32::new(10).unwrap(),
    ));
    for k in &names {
        let _ = g.check_key(k);
    }
    let per = (LIVE.load(Ordering::Relaxed) - base) as f64 / keys as f64;
    println!("| governor, 12-byte String keys | {per:.1} | (not measured) |");
}

fn flood_section(quick: bool) {
    let keys: u64 = if quick { 50_000 } else { 1_000_000 };
    let mut out = Vec::new();
    for who in ["fluxrate", "governor"] {
        let mut lat = Vec::with_capacity(keys as usize);
        if who == "fluxrate" {
            let l = RateLimiter::builder(Quota::per_second(10))
                .keyed::<u64>()
                .build()
                .unwrap();
            for k in 0..keys {
                let t = Instant::now();
                black_box(l.allow_key(&k));
                lat.push(t.elapsed().as_nanos() as u64);
            }
        } else {
            let g = governor::RateLimiter::keyed(governor::Quota::per_second(
                NonZeroU32::new(10).unwrap(),
            ));
            for k in 0..keys {
                let t = Instant::now();
                black_box(g.check_key(&k).is_ok());
                lat.push(t.elapsed().as_nanos() as u64);
            }
        }
        lat.sort_unstable();
        out.push((
            who,
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100],
            lat[lat.len() - 1],
        ));
    }
    println!("\n| key flood: {keys} new u64 keys, one check each | p50 ns | p99 ns | max ns |\n|---|---:|---:|---:|");
    for (who, p50, p99, max) in out {
        println!("| {who} | {p50} | {p99} | {max} |");
    }
}

/// A flood of new keys against a store full of live keys (issue 11): every new key finds room
/// only because the key inserted `T` earlier has just gone idle. Latency per new-key check,
/// against the same flood into a store with no `max_keys`, and full-map sweeps per 1,000 new
/// keys (`Stats::sweeps`).
fn full_store_section(quick: bool) {
    const MAX: u64 = 100_000;
    let flood: u64 = if quick { 50_000 } else { 500_000 };
    // T = 100 ms and one new key per µs: exactly MAX keys are live at any time.
    let step = Duration::from_micros(1);
    let run = |max_keys: Option<usize>| {
        let clock = fluxrate::ManualClock::new();
        let b = RateLimiter::builder(Quota::per_second(10))
            .clock(clock.clone())
            .keyed::<u64>();
        let l = match max_keys {
            Some(m) => b.max_keys(m).build().unwrap(),
            None => b.build().unwrap(),
        };
        for k in 0..MAX {
            let _ = l.allow_key(&k);
            clock.advance(step);
        }
        let sweeps = l.stats().sweeps();
        let mut lat = Vec::with_capacity(flood as usize);
        let mut refused = 0u64;
        for k in MAX..MAX + flood {
            let t = Instant::now();
            let ok = black_box(l.allow_key(&k));
            lat.push(t.elapsed().as_nanos() as u64);
            refused += u64::from(!ok);
            clock.advance(step);
        }
        lat.sort_unstable();
        let per_1000 = (l.stats().sweeps() - sweeps) as f64 * 1000.0 / flood as f64;
        (
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100],
            lat[lat.len() - 1],
            per_1000,
            refused,
        )
    };
    println!(
        "\n| full store: {flood} new u64 keys against {MAX} live ones | p50 ns | p99 ns | max ns | full sweeps per 1,000 new keys | refused |\n|---|---:|---:|---:|---:|---:|"
    );
    // Alternate the two cases; the last round of each is printed (the first warms the
    // allocator and caches).
    let mut rows = [None, None];
    for _ in 0..2 {
        rows[0] = Some(run(Some(MAX as usize)));
        rows[1] = Some(run(None));
    }
    for (name, r) in ["max_keys = 100,000 (full)", "no max_keys (never full)"]
        .into_iter()
        .zip(rows)
    {
        let (p50, p99, max, per_1000, refused) = r.unwrap();
        println!("| {name} | {p50} | {p99} | {max} | {per_1000:.2} | {refused} |");
    }
}

/// Heap bytes per sliding-log key against the admissions it holds (issue 11: a key used to
/// cost `8·calls` bytes from its first request).
fn log_memory_section(quick: bool) {
    let keys: u32 = if quick { 100 } else { 1_000 };
    println!(
        "\n| memory: sliding log, per_hour(100000), {keys} keys | heap bytes per key | 8·calls (the ring up front) |\n|---|---:|---:|"
    );
    for admissions in [1u32, 10, 100, 1_000, 10_000] {
        if quick && admissions > 1_000 {
            continue;
        }
        let clock = fluxrate::ManualClock::new();
        let base = LIVE.load(Ordering::Relaxed);
        let l = RateLimiter::builder(Quota::per_hour(100_000))
            .algorithm(Algorithm::SlidingLog)
            .clock(clock.clone())
            .keyed::<u32>()
            .build()
            .unwrap();
        for k in 0..keys {
            for _ in 0..admissions {
                assert!(l.allow_key(&k));
            }
        }
        let per = (LIVE.load(Ordering::Relaxed) - base) as f64 / f64::from(keys);
        println!("| {admissions} admissions per key | {per:.0} | 800000 |");
        drop(l);
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, slice) = if quick {
        (5, Duration::from_millis(2))
    } else {
        (40, Duration::from_millis(15))
    };
    let cached = CachedClock::new(Duration::from_millis(1));
    let mut cases = Vec::new();
    clock_cases(&mut cases, &cached);
    direct_cases(&mut cases, &cached);
    keyed_cases(&mut cases, &cached);
    macro_cases(&mut cases);
    // `--only TEXT`: just the groups and sections whose title contains TEXT, for iterating on
    // one case.
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    if let Some(only) = &only {
        cases.retain(|c| c.group.contains(only.as_str()));
    }
    // Calibrate iterations per slice.
    let iters: Vec<u64> = cases
        .iter_mut()
        .map(|c| {
            let mut n = 64;
            loop {
                let t = Instant::now();
                (c.run)(n);
                let e = t.elapsed();
                if e >= slice / 4 || n >= 1 << 26 {
                    return (n as f64 * slice.as_secs_f64() / e.as_secs_f64().max(1e-9))
                        .clamp(64.0, 1e8) as u64;
                }
                n *= 4;
            }
        })
        .collect();
    for _ in 0..rounds {
        for (c, &n) in cases.iter_mut().zip(&iters) {
            let t = Instant::now();
            (c.run)(n);
            c.samples.push(t.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    println!(
        "fluxrate compare{}: {rounds} interleaved rounds of ~{slice:?} per contender, median \
         ns/op, {} cores",
        if quick { " (quick)" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut groups: Vec<&'static str> = Vec::new();
    for c in &cases {
        if !groups.contains(&c.group) {
            groups.push(c.group);
        }
    }
    for group in groups {
        let rows: Vec<(String, f64)> = cases
            .iter_mut()
            .filter(|c| c.group == group)
            .map(|c| (c.name.clone(), median(&mut c.samples)))
            .collect();
        print_group(group, &rows);
    }
    let want = |title: &str| only.as_ref().map_or(true, |o| title.contains(o.as_str()));
    if want("two threads") {
        threads_section(quick, &cached);
    }
    if want("key flood") {
        flood_section(quick);
    }
    if want("full store") {
        full_store_section(quick);
    }
    if want("memory") {
        memory_section(quick);
        log_memory_section(quick);
    }
}
