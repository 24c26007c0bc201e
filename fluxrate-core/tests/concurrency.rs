//! D24–D25: real threads hammering one limiter, and panics in user code.
//!
//! `FLUXRATE_STRESS_OPS` sets the operations per thread (default 50,000; the plan asks for
//! 10⁶ in release: `FLUXRATE_STRESS_OPS=1000000 cargo test --release --test concurrency`).

#[path = "it/common/mod.rs"]
mod common;

use common::{check_unit_arrival_curve, max_in_half_open_window, max_per_aligned_window, units};
use fluxrate_core::{
    cas_retries_on_this_thread, Algorithm, Clock, ManualClock, Quota, RateLimiter,
};
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

const THREADS: usize = 8;

fn ops_per_thread() -> usize {
    std::env::var("FLUXRATE_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

struct Run {
    admitted: Vec<u64>,
    retries: u64,
    ops_per_sec: f64,
}

/// The stress tests are CPU-bound: run them one at a time even when the harness is parallel.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// THREADS workers check one direct limiter while a ticker thread advances the manual clock.
fn hammer(alg: Algorithm, q: Quota, tick_ns: u64) -> Run {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(q)
        .algorithm(alg)
        .clock(clock.clone())
        .build()
        .unwrap();
    let ops = ops_per_thread();
    let done = AtomicBool::new(false);
    let barrier = Barrier::new(THREADS + 1);
    let retries = AtomicU64::new(0);
    let start = Instant::now();
    let admitted = std::thread::scope(|s| {
        let ticker = s.spawn(|| {
            barrier.wait();
            while !done.load(Ordering::Relaxed) {
                clock.advance_ns(tick_ns);
                std::thread::yield_now();
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let before = cas_retries_on_this_thread();
                    let mut mine = Vec::new();
                    for i in 0..ops {
                        // Workers move time too, so that progress does not depend on the
                        // ticker being scheduled (tests share 2 cores).
                        if i % 4 == 0 {
                            clock.advance_ns(1);
                        }
                        if let Ok(a) = limiter.check() {
                            mine.push(a.admitted_at());
                        }
                    }
                    retries.fetch_add(cas_retries_on_this_thread() - before, Ordering::Relaxed);
                    mine
                })
            })
            .collect();
        let all: Vec<u64> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        done.store(true, Ordering::Relaxed);
        ticker.join().unwrap();
        all
    });
    let secs = start.elapsed().as_secs_f64();
    let stats = limiter.stats();
    assert_eq!(stats.allowed() as usize, admitted.len());
    assert_eq!(stats.allowed() + stats.rejected(), (THREADS * ops) as u64);
    Run {
        admitted,
        retries: retries.into_inner(),
        ops_per_sec: (THREADS * ops) as f64 / secs,
    }
}

/// Run `hammer` and check the bounds. Whether CAS retries happen depends on two workers
/// being scheduled at once, which a loaded 2-core machine does not guarantee: the retries are
/// reported here, and `contention_is_observed` is the test that requires them.
fn hammer_contended(alg: Algorithm, q: Quota, tick_ns: u64, check: impl Fn(&Run)) -> Run {
    let r = hammer(alg, q, tick_ns);
    check(&r);
    r
}

fn report(name: &str, r: &Run) {
    println!(
        "{name}: {} threads x {} ops, {} admitted, {} CAS retries, {:.1} M ops/s",
        THREADS,
        ops_per_thread(),
        r.admitted.len(),
        r.retries,
        r.ops_per_sec / 1e6
    );
}

/// Contention really happens: a token bucket that admits almost everything, so every check is
/// a CAS; retried a few times in case the scheduler serialised a run.
#[test]
fn contention_is_observed() {
    let q = Quota::new(1, Duration::from_nanos(1)).with_burst(1 << 20);
    let mut retries = 0;
    for _ in 0..5 {
        let r = hammer(Algorithm::TokenBucket, q, 100_000);
        check_unit_arrival_curve(r.admitted.clone(), 1, 1 << 20);
        report("token bucket, admitting", &r);
        retries += r.retries;
        if retries > 0 {
            break;
        }
    }
    assert!(
        retries > 0,
        "no CAS retry in five runs: the stress tests proved nothing"
    );
}

#[test]
fn token_bucket_stress() {
    let (t, b) = (1u64, 1_000u64);
    let q = Quota::new(1, Duration::from_nanos(t)).with_burst(b);
    let r = hammer_contended(Algorithm::TokenBucket, q, 997, |r| {
        assert!(r.admitted.len() > 10);
        check_unit_arrival_curve(r.admitted.clone(), t, b);
    });
    report("token bucket", &r);
}

#[test]
fn leaky_bucket_stress_departures_one_per_interval() {
    let (t, cap) = (1u64, 1_000u64);
    let q = Quota::new(1, Duration::from_nanos(t)).with_burst(cap);
    // Departures are spaced by at least T: P1 with b = 1 over departure times.
    let r = hammer_contended(Algorithm::LeakyBucket, q, 997, |r| {
        check_unit_arrival_curve(r.admitted.clone(), t, 1)
    });
    report("leaky bucket", &r);
}

#[test]
fn fixed_window_stress() {
    let (l, w) = (1_000u64, 2_000u64);
    let r = hammer(
        Algorithm::FixedWindow,
        Quota::new(l, Duration::from_nanos(w)),
        997,
    );
    report("fixed window", &r);
    assert!(max_per_aligned_window(&units(&r.admitted), w) <= l);
}

#[test]
fn sliding_window_counter_stress() {
    let (l, w) = (1_000u64, 2_000u64);
    let q = Quota::new(l, Duration::from_nanos(w));
    let r = hammer_contended(Algorithm::SlidingWindowCounter, q, 997, |r| {
        assert!(max_per_aligned_window(&units(&r.admitted), w) <= l);
        assert!(max_in_half_open_window(&units(&r.admitted), w) < 2 * l);
    });
    report("sliding window counter", &r);
}

#[test]
fn sliding_log_stress() {
    let (l, w) = (1_000u64, 2_000u64);
    let r = hammer(
        Algorithm::SlidingLog,
        Quota::new(l, Duration::from_nanos(w)),
        997,
    );
    report("sliding log", &r);
    assert!(max_in_half_open_window(&units(&r.admitted), w) <= l);
}

/// Eviction racing decisions on real threads: a sweeper drops idle keys in a loop while workers
/// check the same few keys; P1 must hold per key (a live key is never dropped).
#[test]
fn keyed_store_with_concurrent_sweeps() {
    let (t, b) = (2_000u64, 5u64);
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(Quota::new(1, Duration::from_nanos(t)).with_burst(b))
        .clock(clock.clone())
        .keyed::<u32>()
        .build()
        .unwrap();
    let done = AtomicBool::new(false);
    let ops = ops_per_thread() / 2;
    let per_key = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                clock.advance_ns(331);
                limiter.sweep();
            }
        });
        let workers: Vec<_> = (0..4u32)
            .map(|id| {
                let limiter = &limiter;
                s.spawn(move || {
                    let mut mine: Vec<(u32, u64)> = Vec::new();
                    for i in 0..ops {
                        let key = (i as u32 + id) % 3;
                        if let Ok(a) = limiter.check_key(&key) {
                            mine.push((key, a.admitted_at()));
                        }
                    }
                    mine
                })
            })
            .collect();
        let all: Vec<(u32, u64)> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        done.store(true, Ordering::Relaxed);
        all
    });
    for key in 0..3 {
        let times: Vec<u64> = per_key
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|p| p.1)
            .collect();
        assert!(!times.is_empty());
        check_unit_arrival_curve(times, t, b);
    }
}

/// A key whose `Hash` panics on one value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Touchy(u32);

impl Hash for Touchy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        assert_ne!(self.0, 13, "unlucky key");
        self.0.hash(state);
    }
}

/// A clock that panics on its second reading.
struct FlakyClock {
    inner: ManualClock,
    reads: AtomicU64,
}

impl Clock for FlakyClock {
    fn now(&self) -> u64 {
        if self.reads.fetch_add(1, Ordering::SeqCst) == 1 {
            panic!("clock fault");
        }
        self.inner.now()
    }
}

/// D25: panics in a key's Hash or in the clock leave the limiter usable: no deadlock, no lost
/// state for other keys, no consumption by the panicking call.
#[test]
fn panics_in_user_code_leave_the_limiter_usable() {
    let limiter = RateLimiter::builder(Quota::per_minute(2))
        .clock(ManualClock::new())
        .keyed::<Touchy>()
        .build()
        .unwrap();
    assert!(limiter.allow_key(&Touchy(1)));
    for _ in 0..3 {
        let r = catch_unwind(AssertUnwindSafe(|| limiter.allow_key(&Touchy(13))));
        assert!(r.is_err());
    }
    // Other keys, including ones in the same shard, keep working and keep their state.
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(limiter.allow_key(&Touchy(1)));
            assert!(!limiter.allow_key(&Touchy(1)));
            for k in 100..1_000 {
                assert!(limiter.allow_key(&Touchy(k)));
            }
            done.store(true, Ordering::SeqCst);
        });
    });
    assert!(done.load(Ordering::SeqCst), "a lock was left held");
    assert_eq!(limiter.len(), 901);

    let flaky = RateLimiter::builder(Quota::per_minute(2))
        .clock(FlakyClock {
            inner: ManualClock::new(),
            reads: AtomicU64::new(0),
        })
        .build()
        .unwrap();
    assert!(flaky.allow());
    assert!(catch_unwind(AssertUnwindSafe(|| flaky.allow())).is_err());
    // The panicking call consumed nothing: exactly one more fits.
    assert!(flaky.allow());
    assert!(!flaky.allow());
}

/// Two real threads grow the same sliding-log ring at the same instant, over and over: a ring
/// of 16 (segments of 8 and 8) whose first segment is full at 0, and both threads released
/// together to ask 8 times each at 50. Exactly 8 pass in every round, and all 8 stamps are in
/// the ring: when both build the second segment, the one published is used by both (a thread
/// that kept its own would admit into slots nobody else sees). Races are what this test is
/// for, but it cannot tell whether one happened: the loom models are the proof.
#[test]
fn sliding_log_threads_grow_one_ring_at_once() {
    use fluxrate_core::{RateAlgorithm, SlidingLog};
    use std::sync::atomic::AtomicUsize;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rounds = (ops_per_thread() / 5).max(1_000);
    let log = SlidingLog::new(&Quota::new(16, Duration::from_nanos(100))).unwrap();
    let states: Vec<_> = (0..rounds)
        .map(|_| {
            let s = log.new_state();
            for _ in 0..8 {
                assert!(log.check(&s, 0, 1).is_ok());
            }
            s
        })
        .collect();
    let arrived = AtomicUsize::new(0);
    let counts: Vec<Vec<u64>> = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                sc.spawn(|| {
                    let mut mine = Vec::with_capacity(rounds);
                    for (r, s) in states.iter().enumerate() {
                        // Spin barrier: both threads start round r together.
                        arrived.fetch_add(1, Ordering::AcqRel);
                        let mut spins = 0u32;
                        while arrived.load(Ordering::Acquire) < 2 * (r + 1) {
                            spins += 1;
                            if spins % 64 == 0 {
                                std::thread::yield_now();
                            }
                            std::hint::spin_loop();
                        }
                        mine.push((0..8).filter(|_| log.allow(s, 50, 1)).count() as u64);
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (r, s) in states.iter().enumerate() {
        let (raw, _) = s.raw();
        assert_eq!(counts[0][r] + counts[1][r], 8, "round {r}: {raw:?}");
        assert_eq!(raw.iter().filter(|&&v| v == 51).count(), 8, "round {r}");
        assert_eq!(raw.len(), 16);
    }
    println!("sliding log growth races: {rounds} rounds, 8 of 16 requests admitted in each");
}

/// The limiter-wide counters count every decision exactly with many more threads than stripes
/// a thread can own (16), threads exiting and others taking over their stripes while the
/// counting goes on, and a reset in the middle: each owned stripe is counted with a plain
/// load and store, so two writers on one stripe would lose counts.
#[test]
fn stats_count_every_decision_across_thread_churn() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let l = RateLimiter::builder(Quota::per_hour(1_000))
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let per_thread = 100_000u64;
    let count_wave = |threads: usize| {
        let start = Barrier::new(threads);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    start.wait();
                    for _ in 0..per_thread {
                        let _ = l.allow();
                    }
                });
            }
        });
    };
    // 40 threads at once: 16 own a stripe, 24 share. Then two waves of 12 that reuse the
    // stripes the first wave gave back.
    count_wave(40);
    let s = l.stats();
    assert_eq!(s.allowed(), 1_000);
    assert_eq!(s.allowed() + s.rejected(), 40 * per_thread);
    l.reset_stats();
    assert_eq!((l.stats().allowed(), l.stats().rejected()), (0, 0));
    count_wave(12);
    count_wave(12);
    let s = l.stats();
    assert_eq!((s.allowed(), s.rejected()), (0, 24 * per_thread));
}
