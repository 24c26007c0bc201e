//! E27–E30: the keyed store. Memory under a key flood (with a counting allocator), eviction
//! invisibility, the `max_keys` cap, per-key independence, borrowed lookups, hashing.

#[path = "it/common/mod.rs"]
mod common;

use common::cases;
use fluxrate_core::{
    Algorithm, Clock, Denied, KeyCell, KeyHasher, ManualClock, OverflowPolicy, Quota, RateLimiter,
};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

/// Counts live heap bytes and allocations.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

std::thread_local! {
    /// Allocations made by the current thread (other tests run in parallel).
    static MY_ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count_alloc() {
    let _ = MY_ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        count_alloc();
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
        count_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocator is shared by tests running in parallel: every test here takes this lock, so
/// that one test's allocations never show up in another's measurement.
static MEASURE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    MEASURE.lock().unwrap_or_else(|e| e.into_inner())
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn flood_keys() -> u64 {
    std::env::var("FLUXRATE_FLOOD_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// E27: 1M distinct u128 keys from two threads; bytes per key; then, once they are idle, a
/// sweep drops them all and gives the memory back.
#[test]
fn key_flood_memory_is_returned_after_sweep() {
    let _guard = serial();
    let keys = flood_keys();
    let clock = ManualClock::new();
    let base = live();
    let limiter = RateLimiter::builder(Quota::per_second(10))
        .clock(clock.clone())
        .keyed::<u128>()
        .build()
        .unwrap();
    let start = Instant::now();
    let mut lat = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u64)
            .map(|id| {
                let limiter = &limiter;
                s.spawn(move || {
                    let mut lat = Vec::with_capacity((keys / 2) as usize);
                    for i in 0..keys / 2 {
                        // IPv6-like: a /64 prefix rotating through host parts.
                        let key = (0x2001_0db8_u128 << 96) | u128::from(i * 2 + id);
                        let t = Instant::now();
                        assert!(limiter.allow_key(&key));
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<u64>>()
    });
    let elapsed = start.elapsed();
    // Latency vectors are allocated by the test itself; measure the limiter alone.
    let lat_bytes = (lat.capacity() * 8) as isize;
    let during = live() - base - lat_bytes;
    assert_eq!(limiter.len() as u64, keys);
    lat.sort_unstable();
    let p50 = lat[lat.len() / 2];
    let p99 = lat[lat.len() * 99 / 100];
    drop(lat);
    // Idle: every TAT is at most 100 ms ahead; pass τ + T.
    clock.advance(Duration::from_secs(2));
    let removed = limiter.sweep();
    let after = live() - base;
    println!(
        "E27 flood: {keys} u128 keys in {elapsed:?}: {:.1} B/key live, p50 {p50} ns, p99 {p99} ns per check; \
         after sweep+shrink: {removed} removed, {after} B above baseline",
        during as f64 / keys as f64
    );
    assert_eq!(removed as u64, keys);
    assert!(limiter.is_empty());
    assert!(after < 1 << 20, "{after} bytes still held after sweep");
}

/// Automatic clean-up: with no explicit sweep, a stream of short-lived keys stays bounded.
#[test]
fn idle_keys_are_dropped_automatically() {
    let _guard = serial();
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(Quota::per_second(1000))
        .clock(clock.clone())
        .keyed::<u64>()
        .build()
        .unwrap();
    let mut peak = 0;
    for i in 0..200_000u64 {
        let _ = limiter.allow_key(&i);
        clock.advance(Duration::from_micros(100)); // each key idle after 1 ms
        peak = peak.max(limiter.len());
    }
    assert!(peak < 20_000, "store grew to {peak} keys");
}

proptest! {
    #![proptest_config(cases(300))]

    /// E28 (K1): safe evictions (sweeps at random points) never change a decision.
    #[test]
    fn eviction_is_invisible(
        alg in prop::sample::select(Algorithm::ALL.to_vec()),
        ops in prop::collection::vec((0u64..400_000_000, 0u8..6, any::<bool>()), 1..200),
    ) {
        let _guard = serial();
        let q = Quota::per_second(3);
        let c1 = ManualClock::new();
        let c2 = ManualClock::new();
        let plain = RateLimiter::builder(q).algorithm(alg).clock(c1.clone()).keyed::<u8>().build().unwrap();
        let swept = RateLimiter::builder(q).algorithm(alg).clock(c2.clone()).keyed::<u8>().build().unwrap();
        for (dt, key, sweep) in ops {
            c1.advance_ns(dt);
            c2.advance_ns(dt);
            if sweep {
                swept.sweep();
            }
            let (a, b) = (plain.check_key(&key), swept.check_key(&key));
            prop_assert_eq!(a.is_ok(), b.is_ok());
            if let (Err(a), Err(b)) = (a, b) {
                prop_assert_eq!(a.retry_after(), b.retry_after());
            }
        }
    }

    /// K2: operations on one key never change decisions for another.
    #[test]
    fn keys_are_independent(
        alg in prop::sample::select(Algorithm::ALL.to_vec()),
        ops in prop::collection::vec((0u64..200_000_000, any::<bool>()), 1..200),
    ) {
        let _guard = serial();
        let q = Quota::per_second(3);
        let (c1, c2) = (ManualClock::new(), ManualClock::new());
        let alone = RateLimiter::builder(q).algorithm(alg).clock(c1.clone()).keyed::<u8>().build().unwrap();
        let shared = RateLimiter::builder(q).algorithm(alg).clock(c2.clone()).keyed::<u8>().build().unwrap();
        for (dt, noise) in ops {
            c1.advance_ns(dt);
            c2.advance_ns(dt);
            if noise {
                let _ = shared.check_key_n(&1, 2);
                shared.reset_key(&2);
            }
            prop_assert_eq!(alone.allow_key(&0), shared.allow_key(&0));
        }
    }
}

/// The unsafe-eviction mutant (dropping a live key) is visible: it re-opens a burst. This is
/// why the store only drops idle cells, and why the test above can tell.
#[test]
fn unsafe_eviction_would_reopen_a_burst() {
    let _guard = serial();
    let clock = ManualClock::new();
    let l = RateLimiter::builder(Quota::per_second(2))
        .clock(clock)
        .keyed::<u8>()
        .build()
        .unwrap();
    assert!(l.allow_key(&1) && l.allow_key(&1) && !l.allow_key(&1));
    assert_eq!(l.sweep(), 0, "a live key was swept");
    assert!(!l.allow_key(&1));
    l.reset_key(&1); // what an unsafe eviction would do
    assert!(l.allow_key(&1), "dropping a live key gives it a new burst");
}

/// E29 (K3): with max_keys = 10k and a flood of new keys, 100 hot keys are never evicted and
/// never over-admitted; new keys are refused with a retry-after, memory stays bounded.
#[test]
fn capacity_cap_never_evicts_live_keys() {
    let _guard = serial();
    let clock = ManualClock::new();
    let base = live();
    let limiter = RateLimiter::builder(Quota::per_second(10))
        .clock(clock.clone())
        .keyed::<u64>()
        .max_keys(10_000)
        .build()
        .unwrap();
    let flood = flood_keys();
    let mut hot_admitted = vec![0u64; 100];
    let mut refused_new = 0u64;
    let mut peak = 0isize;
    for i in 0..flood {
        if i % 1_000 == 0 {
            clock.advance(Duration::from_millis(10));
            for (h, count) in hot_admitted.iter_mut().enumerate() {
                if limiter.allow_key(&(h as u64)) {
                    *count += 1;
                }
            }
        }
        if let Err(e) = limiter.check_key(&(1_000_000 + i)) {
            refused_new += 1;
            assert!(e.retry_after() > Duration::ZERO);
        }
        if i % 10_000 == 0 {
            peak = peak.max(live() - base);
        }
        assert!(limiter.len() <= 10_000);
    }
    let elapsed = Duration::from_nanos(clock.now());
    // Each hot key: at most burst + elapsed / T admissions (T = 100 ms).
    let bound = 10 + elapsed.as_millis() as u64 / 100;
    for (h, &count) in hot_admitted.iter().enumerate() {
        assert!(count <= bound, "hot key {h}: {count} > {bound}");
        assert!(
            count >= bound / 2,
            "hot key {h} was starved or evicted: {count}"
        );
    }
    println!(
        "E29 cap: {flood} new keys, {refused_new} refused, peak {peak} B above baseline, hot keys within bound {bound}"
    );
    assert!(refused_new > 0);
    assert!(peak < 8 << 20, "peak {peak} bytes with a 10k-key cap");
}

#[test]
fn overflow_shared_cell_limits_all_new_keys_together() {
    let _guard = serial();
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(Quota::per_minute(3))
        .clock(clock)
        .keyed::<u64>()
        .max_keys(2)
        .overflow(OverflowPolicy::Shared)
        .build()
        .unwrap();
    assert!(limiter.allow_key(&1) && limiter.allow_key(&2));
    // Keys 3.. share one cell of 3.
    let shared: usize = (3..100u64).filter(|k| limiter.allow_key(k)).count();
    assert_eq!(shared, 3);
    assert_eq!(limiter.len(), 2);
}

/// An admission by the shared overflow cell is given back to that cell: `cancel_key` used to
/// look for the key in the store, find nothing and refund nothing (a later limit's refusal in
/// an all-or-nothing check then left the shared cell charged).
#[test]
fn a_shared_cell_admission_is_given_back_to_the_shared_cell() {
    let _guard = serial();
    let limiter = RateLimiter::builder(Quota::per_minute(2))
        .clock(ManualClock::new())
        .keyed::<u64>()
        .max_keys(1)
        .overflow(OverflowPolicy::Shared)
        .build()
        .unwrap();
    assert!(limiter.allow_key(&1));
    let a = limiter.check_key(&2).unwrap();
    assert!(
        limiter.cancel_key(&2, &a),
        "the shared cell's admission came back"
    );
    // Both units of the shared cell are there again, for any new key.
    assert!(limiter.check_key_n(&3, 2).is_ok());
    assert!(limiter.check_key(&4).is_err());
    assert_eq!(limiter.len(), 1);
}

/// Every keyed answer says which cell decided it: the key's own, the shared cell, or none
/// (a full store under `Reject`), so that a caller can tell a store-full refusal from the
/// key's own limit.
#[test]
fn keyed_answers_say_which_cell_decided() {
    let _guard = serial();
    let build = |overflow| {
        RateLimiter::builder(Quota::per_minute(1))
            .clock(ManualClock::new())
            .keyed::<u64>()
            .max_keys(1)
            .overflow(overflow)
            .build()
            .unwrap()
    };
    let reject = build(OverflowPolicy::Reject);
    assert_eq!(reject.check_key(&1).unwrap().key_cell(), KeyCell::Own);
    assert_eq!(reject.check_key(&1).unwrap_err().key_cell(), KeyCell::Own);
    let full = reject.check_key(&2).unwrap_err();
    assert_eq!(full.key_cell(), KeyCell::StoreFull);
    assert!(matches!(
        reject.check_key_n(&2, 1),
        Err(Denied::Limited(e)) if e.key_cell() == KeyCell::StoreFull
    ));
    let shared = build(OverflowPolicy::Shared);
    assert!(shared.allow_key(&1));
    assert_eq!(shared.check_key(&2).unwrap().key_cell(), KeyCell::Shared);
    assert_eq!(
        shared.check_key(&3).unwrap_err().key_cell(),
        KeyCell::Shared
    );
    let r = shared.reserve_key(&4, Duration::from_secs(120)).unwrap();
    assert_eq!(r.key_cell(), KeyCell::Shared);
    // A direct limiter's answers are its own.
    let direct = RateLimiter::builder(Quota::per_minute(1))
        .clock(ManualClock::new())
        .build()
        .unwrap();
    assert_eq!(direct.check().unwrap().key_cell(), KeyCell::Own);
    assert_eq!(direct.check().unwrap_err().key_cell(), KeyCell::Own);
}

/// String keys are checked with &str and allocate nothing once the key is known.
#[test]
fn borrowed_str_lookups_do_not_allocate() {
    let _guard = serial();
    let limiter = RateLimiter::builder(Quota::per_second(1_000_000))
        .clock(ManualClock::new())
        .keyed::<String>()
        .build()
        .unwrap();
    assert!(limiter.allow_key("user_123"));
    let before = MY_ALLOCS.with(Cell::get);
    for _ in 0..1_000 {
        assert!(limiter.allow_key("user_123"));
    }
    assert_eq!(MY_ALLOCS.with(Cell::get), before, "a known key allocated");
}

/// Per-key stats count decisions; limiter stats count all.
#[test]
fn per_key_and_limiter_stats() {
    let _guard = serial();
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(Quota::per_minute(2))
        .clock(clock.clone())
        .keyed::<&'static str>()
        .per_key_stats(true)
        .build()
        .unwrap();
    for _ in 0..3 {
        let _ = limiter.allow_key(&"a");
    }
    let _ = limiter.allow_key(&"b");
    let a = limiter.key_stats(&"a");
    assert_eq!((a.allowed(), a.rejected()), (Some(2), Some(1)));
    assert_eq!(a.current().remaining(), 0);
    assert_eq!(a.current().retry_after(), Duration::from_secs(30));
    let s = limiter.stats();
    assert_eq!((s.allowed(), s.rejected(), s.keys()), (3, 1, 2));
    // Counters go with the key once it is idle and swept.
    clock.advance(Duration::from_secs(61));
    assert_eq!(limiter.sweep(), 2);
    assert_eq!(limiter.key_stats(&"a").allowed(), Some(0));
    let without = RateLimiter::<u8>::keyed(Quota::per_second(1)).unwrap();
    let _ = without.allow_key(&1);
    assert_eq!(without.key_stats(&1).allowed(), None);
}

/// E30 (a): two limiters seed their hashers differently, so an attacker cannot precompute
/// colliding keys for all instances.
#[test]
fn hasher_is_randomly_seeded_per_limiter() {
    let _guard = serial();
    let (h1, h2) = (KeyHasher::new(), KeyHasher::new());
    let differing = (0u64..1_000)
        .filter(|k| h1.hash_one(k) != h2.hash_one(k))
        .count();
    assert!(differing > 990, "{differing}");
}

/// A decision whose clock reading predates a sweep is made at the sweep's time: the dropped
/// cell was idle only from then on. (Deterministic form of what the real-thread test found:
/// a thread reads the clock, is descheduled, a sweep drops the key, the thread decides.)
#[test]
fn decisions_never_predate_a_sweep() {
    let _guard = serial();
    for alg in Algorithm::ALL {
        let clock = ManualClock::new();
        let l = RateLimiter::builder(Quota::per_second(1))
            .algorithm(alg)
            .clock(clock.clone())
            .keyed::<u8>()
            .build()
            .unwrap();
        let first = l.check_key(&1).unwrap().admitted_at();
        assert_eq!(first, 0);
        clock.set(2_000_000_000);
        assert_eq!(l.sweep(), 1, "{alg}: the idle key was not swept");
        clock.set(500_000_000); // a stale reading, older than the sweep
        match l.check_key(&1) {
            Ok(a) => assert!(
                a.admitted_at() >= 2_000_000_000,
                "{alg}: admitted at {} after a sweep at 2 s: a second burst",
                a.admitted_at()
            ),
            Err(e) => panic!("{alg}: {e}"),
        }
    }
}

/// Issue 11, defect 5: the memory of a sliding-log key follows its admissions, not its quota.
/// On `per_hour(100_000)`, a key holds at most `2·max(a, 8)` slots of 8 bytes for `a` live
/// stamps (the ring grows in doubling segments, only when every slot holds a live stamp), plus
/// its header (48 bytes inline, 8 per possible segment, 24 per allocated one) and the store's
/// entry: at most [`LOG_KEY_OVERHEAD`] bytes. It used to hold all 100,000 slots (800 kB) from
/// its first request on.
const LOG_KEY_OVERHEAD: isize = 1024;

/// The bound on live heap bytes per sliding-log key with `live` stamps in the window.
fn log_key_bound(live: u64) -> isize {
    LOG_KEY_OVERHEAD + 8 * (2 * live.max(8)).min(100_000) as isize
}

/// `keys` keys of a fresh keyed sliding log on `per_hour(100_000)`, `admissions` each at one
/// instant (all stay in the window): live heap bytes per key above the empty limiter. Checked
/// against [`log_key_bound`] after every key, so that a regression fails at the first keys
/// instead of allocating 800 kB for each of them.
fn log_bytes_per_key(keys: u32, admissions: u64) -> isize {
    let limiter = RateLimiter::builder(Quota::per_hour(100_000))
        .algorithm(Algorithm::SlidingLog)
        .clock(ManualClock::new())
        .keyed::<u32>()
        .build()
        .unwrap();
    let empty = live();
    for k in 0..keys {
        for _ in 0..admissions {
            assert!(limiter.allow_key(&k));
        }
        // Plus 16 KiB in all: the map's first tables, and what the test harness allocates
        // when another test ends (it prints) while this one measures.
        let bytes = live() - empty;
        assert!(
            bytes <= (k as isize + 1) * log_key_bound(admissions) + (16 << 10),
            "{} keys with {admissions} admissions each: {bytes} B (bound {} B per key)",
            k + 1,
            log_key_bound(admissions)
        );
    }
    (live() - empty) / keys as isize
}

#[test]
fn sliding_log_key_memory_follows_admissions() {
    let _guard = serial();
    // 1,000 keys with one request each: 800 MB before the ring grew with use.
    for (keys, admissions) in [
        (1_000, 1),
        (1_000, 10),
        (1_000, 100),
        (100, 1_000),
        (2, 100_000),
    ] {
        let per_key = log_bytes_per_key(keys, admissions);
        println!(
            "sliding log per_hour(100_000): {admissions} admissions per key: {per_key} B per key \
             ({keys} keys; bound {} B)",
            log_key_bound(admissions)
        );
    }
}

/// Steady traffic under the limit: 24 admissions per window, for ten windows. The ring stops
/// growing at the 32 slots that 24 live stamps need: it reuses expired slots, in whichever
/// segment they are, before it allocates another segment. So a key costs what a key with 24
/// admissions at one instant costs.
#[test]
fn sliding_log_ring_reuses_expired_slots_before_growing() {
    let _guard = serial();
    let keys = 100u32;
    let burst = log_bytes_per_key(keys, 24);
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(Quota::per_hour(100_000))
        .algorithm(Algorithm::SlidingLog)
        .clock(clock.clone())
        .keyed::<u32>()
        .build()
        .unwrap();
    let empty = live();
    for _ in 0..240 {
        clock.advance(Duration::from_secs(150));
        for k in 0..keys {
            assert!(limiter.allow_key(&k));
        }
    }
    let per_key = (live() - empty) / keys as isize;
    println!(
        "sliding log, 24 live stamps per key for 10 windows: {per_key} B per key \
         ({burst} B with 24 admissions at once)"
    );
    // The same rings (8 + 8 + 16 slots) and the same store: equal, but for what the test
    // harness may allocate meanwhile (the next segment would add 280 B per key).
    assert!(
        per_key <= burst + 128,
        "{per_key} B per key for 24 live stamps, {burst} B for 24 admissions at once"
    );
}

/// A request that leaves a new key fresh (a look, a weight that can never pass) stores no cell,
/// and with per-key stats no counters either: they would escape `max_keys` and the sweeps.
#[test]
fn per_key_counters_of_unstored_keys_are_not_kept() {
    let _guard = serial();
    let base = live();
    let limiter = RateLimiter::builder(Quota::per_second(10))
        .keyed::<u64>()
        .max_keys(10)
        .per_key_stats(true)
        .build()
        .unwrap();
    for k in 0..20_000u64 {
        assert!(limiter.check_key_n(&k, 0).is_ok());
        assert!(limiter.check_key_n(&k, 11).is_err());
    }
    let grown = live() - base;
    assert_eq!(limiter.len(), 0);
    assert!(
        grown < 64 << 10,
        "{grown} bytes for 20,000 keys that hold no cell"
    );
    assert!(limiter.allow_key(&1));
    assert_eq!(limiter.key_stats(&1).allowed(), Some(1));
}
