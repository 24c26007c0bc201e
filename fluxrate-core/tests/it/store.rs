//! The keyed store's lifecycle: room after sweeps that empty the store, a flood of new keys
//! against a full store, and the store against its sequential reference model
//! (`common/store_model.rs`) on random histories.

use crate::common::{cases, run_history, Op};
use fluxrate_core::{Clock, ManualClock, OverflowPolicy, Quota, RateLimiter};
use proptest::prelude::*;
use std::time::Duration;

fn limiter(
    max_keys: usize,
    overflow: OverflowPolicy,
    clock: &ManualClock,
) -> RateLimiter<u32, ManualClock> {
    RateLimiter::builder(Quota::per_second(1))
        .clock(clock.clone())
        .keyed::<u32>()
        .max_keys(max_keys)
        .overflow(overflow)
        .build()
        .unwrap()
}

/// Defect 1 of issue 11, as reproduced: a sweep that keeps no cell must not leave the store
/// "full" for good.
#[test]
fn a_store_emptied_by_a_sweep_takes_new_keys_again() {
    let clock = ManualClock::new();
    let l = limiter(10, OverflowPolicy::Reject, &clock);
    for round in 0..4u32 {
        let admitted = (round * 10..round * 10 + 10)
            .filter(|k| l.allow_key(k))
            .count();
        assert_eq!(admitted, 10, "round {round}: new keys refused room");
        clock.advance(Duration::from_secs(5));
    }
    // The review's two-key version.
    let clock = ManualClock::new();
    let l = limiter(2, OverflowPolicy::Reject, &clock);
    assert!(l.allow_key(&1) && l.allow_key(&2));
    clock.advance(Duration::from_secs(2));
    assert!(l.allow_key(&3), "the sweep empties the store");
    assert!(l.allow_key(&4));
    clock.advance(Duration::from_secs(2));
    assert!(l.allow_key(&5), "keys 3 and 4 are idle again");
}

#[test]
fn shared_overflow_is_used_only_while_the_store_is_full_of_live_keys() {
    let clock = ManualClock::new();
    let l = limiter(10, OverflowPolicy::Shared, &clock);
    for round in 0..4u32 {
        let admitted = (round * 10..round * 10 + 10)
            .filter(|k| l.allow_key(k))
            .count();
        assert_eq!(
            admitted, 10,
            "round {round}: new keys pooled on the shared cell"
        );
        clock.advance(Duration::from_secs(5));
    }
    clock.advance(Duration::from_secs(3600));
    assert_eq!((100..110u32).filter(|k| l.allow_key(k)).count(), 10);
    // Full of live keys now: the next new keys share one cell of one call per second.
    assert_eq!((200..300u32).filter(|k| l.allow_key(k)).count(), 1);
}

/// Defect 4 of issue 11: a steady flood of new keys against a full store, where one cell goes
/// idle just as each new key arrives, must not sweep the whole map for every new key.
#[test]
fn a_flood_against_a_full_store_sweeps_once_per_batch() {
    const MAX: u32 = 10_000;
    let clock = ManualClock::new();
    // T = 100 ms; one new key every 10 µs: exactly MAX keys are live at any time.
    let l = RateLimiter::builder(Quota::per_second(10))
        .clock(clock.clone())
        .keyed::<u32>()
        .max_keys(MAX as usize)
        .build()
        .unwrap();
    let step = Duration::from_micros(10);
    for k in 0..MAX {
        assert!(l.allow_key(&k));
        clock.advance(step);
    }
    let before = l.stats();
    let flood = 20_000;
    for k in MAX..MAX + flood {
        // The key inserted 100 ms ago goes idle right now: there is always room.
        assert!(
            l.allow_key(&k),
            "new key {k} refused although a key is idle"
        );
        clock.advance(step);
    }
    let after = l.stats();
    let sweeps = after.sweeps() - before.sweeps();
    assert_eq!(after.evicted() - before.evicted(), u64::from(flood));
    eprintln!("flood: {sweeps} full sweeps for {flood} new keys against a full store of {MAX}");
    assert!(
        sweeps * 1000 <= u64::from(flood) * 2,
        "{sweeps} full sweeps for {flood} new keys"
    );
    assert_eq!(l.len(), MAX as usize);
}

/// The review of issue 11's first fix: keys of different lifetimes. 999 keys stay live for a
/// minute while one slot churns (a new single-request key every 100 ms, idle 100 ms later):
/// the churning cell, inserted after the last sweep, must be remembered too, or every new key
/// sweeps the whole map again.
#[test]
fn a_churning_slot_among_long_lived_keys_does_not_sweep_per_new_key() {
    let clock = ManualClock::new();
    let l = RateLimiter::builder(Quota::per_minute(600))
        .clock(clock.clone())
        .keyed::<u32>()
        .max_keys(1000)
        .build()
        .unwrap();
    for k in 0..999u32 {
        assert!(l.check_key_n(&k, 600).is_ok());
    }
    let before = l.stats().sweeps();
    for k in 1_000..1_500u32 {
        assert!(
            l.allow_key(&k),
            "new key {k} refused although the last one is idle"
        );
        clock.advance(Duration::from_millis(100));
    }
    let sweeps = l.stats().sweeps() - before;
    eprintln!("churning slot: {sweeps} full sweeps for 500 new keys");
    // One sweep to learn the long-lived keys' times, then none: 1000 / 16 = 62 remembered.
    assert!(sweeps <= 2, "{sweeps} full sweeps for 500 new keys");
}

/// A refund (`cancel_key`) moves a key's idle time earlier: a full store must see the room.
#[test]
fn a_refund_that_makes_a_key_idle_frees_its_room() {
    let clock = ManualClock::new();
    let l = limiter(1, OverflowPolicy::Reject, &clock);
    let a = l.check_key(&1).unwrap();
    assert!(!l.allow_key(&2), "the store is full");
    assert!(l.cancel_key(&1, &a));
    assert_eq!(l.retry_after_key(&1), Duration::ZERO);
    assert!(l.allow_key(&2), "key 1 is fresh again: its room is free");
}

/// `max_keys` near `usize::MAX` (in effect unbounded) must not make a sweep reserve memory for
/// it: this panicked with a capacity overflow at the first automatic sweep.
#[test]
fn a_huge_max_keys_is_an_unbounded_store() {
    let clock = ManualClock::new();
    let l = RateLimiter::builder(Quota::per_second(1))
        .clock(clock.clone())
        .keyed::<u32>()
        .max_keys(usize::MAX)
        .build()
        .unwrap();
    for k in 0..10_000u32 {
        assert!(l.allow_key(&k));
    }
    clock.advance(Duration::from_secs(2));
    assert_eq!(l.sweep(), 10_000);
}

/// A decision whose clock reading predates a single eviction (a full store making room) is made
/// at the eviction's time, as after a sweep: the dropped cell was idle only from then on.
#[test]
fn decisions_never_predate_a_single_eviction() {
    for alg in fluxrate_core::Algorithm::ALL {
        let clock = ManualClock::new();
        let l = RateLimiter::builder(Quota::per_second(1))
            .algorithm(alg)
            .clock(clock.clone())
            .keyed::<u32>()
            .max_keys(1)
            .build()
            .unwrap();
        assert_eq!(l.check_key(&1).unwrap().admitted_at(), 0);
        clock.set(2_000_000_000);
        let before = l.stats();
        assert!(l.allow_key(&2), "{alg}: key 1 is idle, its room is free");
        assert_eq!(
            l.stats().sweeps(),
            before.sweeps(),
            "{alg}: a single eviction, no sweep"
        );
        l.reset_key(&2); // room for key 1 again
        clock.set(500_000_000); // a stale reading, older than the eviction of key 1
        match l.check_key(&1) {
            Ok(a) => assert!(
                a.admitted_at() >= 2_000_000_000,
                "{alg}: admitted at {} after an eviction at 2 s: a second burst",
                a.admitted_at()
            ),
            Err(e) => panic!("{alg}: {e}"),
        }
    }
}

/// A look (weight 0) or a weight that can never pass leaves a new key fresh: nothing is stored.
#[test]
fn a_request_that_leaves_a_new_key_fresh_stores_nothing() {
    let clock = ManualClock::new();
    let l = limiter(2, OverflowPolicy::Reject, &clock);
    assert!(l.check_key_n(&1, 0).is_ok());
    assert!(l.check_key_n(&2, 5).is_err());
    assert_eq!(l.len(), 0);
    assert!(l.allow_key(&3) && l.allow_key(&4));
    assert!(!l.allow_key(&5), "two live keys fill the store");
}

fn op(max_key: u32, flood: u32, burst: u64, period: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..max_key, 0..=burst + 1).prop_map(|(key, n)| Op::Check { key, n }),
        2 => (0..max_key, 0..=burst).prop_map(|(key, n)| Op::Refund { key, n }),
        1 => (0..max_key, 1..=flood).prop_map(|(first, count)| Op::Flood { first, count }),
        4 => prop_oneof![Just(1), Just(period / 4), Just(period), Just(3 * period), 0..2 * period]
            .prop_map(|ns| Op::Advance { ns }),
        1 => Just(Op::Sweep),
        1 => (0..max_key).prop_map(|key| Op::ResetKey { key }),
        1 => Just(Op::ResetAll),
    ]
}

/// Overflow policy, per-key stats, calls, period, burst, operations.
type History = (OverflowPolicy, bool, u64, u64, u64, Vec<Op>);

fn history(max_keys: usize, len: usize) -> impl Strategy<Value = History> {
    let overflow = prop_oneof![Just(OverflowPolicy::Reject), Just(OverflowPolicy::Shared)];
    (overflow, any::<bool>(), 1u64..4, 1u64..4).prop_flat_map(
        move |(overflow, stats, calls, burst)| {
            let period = 1_000_000u64;
            let max_key = (max_keys as u32).saturating_mul(2).max(4);
            let flood = (max_keys as u32 + 8).min(max_key);
            (
                Just(overflow),
                Just(stats),
                Just(calls),
                Just(period),
                Just(burst),
                prop::collection::vec(op(max_key, flood, burst, period), 1..len),
            )
        },
    )
}

fn check(max_keys: usize, h: History) -> Result<(), TestCaseError> {
    let (overflow, stats, calls, period, burst, ops) = h;
    run_history(max_keys, overflow, stats, calls, period, burst, &ops).map_err(TestCaseError::fail)
}

fn sized(
    max_keys: impl Strategy<Value = usize>,
    len: usize,
) -> impl Strategy<Value = (usize, History)> {
    max_keys.prop_flat_map(move |m| (Just(m), history(m, len)))
}

/// At most 10 s of shrinking: a failing history is printed small enough to read, and a mutant
/// run does not spend minutes minimizing it.
fn config(n: u32) -> ProptestConfig {
    ProptestConfig {
        max_shrink_time: 10_000,
        ..cases(n)
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Small stores, where every history fills and empties them many times.
    #[test]
    fn small_stores_agree_with_the_model(
        (max_keys, h) in sized(prop_oneof![Just(1usize), Just(2), Just(3), 4usize..20], 120),
    ) {
        check(max_keys, h)?;
    }
}

proptest! {
    #![proptest_config(config(12))]

    /// Around the automatic sweep threshold (4096) and above it: floods of new keys fill the
    /// store, sweeps run on their own.
    #[test]
    fn large_stores_agree_with_the_model(
        (max_keys, h) in sized(prop_oneof![Just(4095usize), Just(4096), Just(4097), Just(9000)], 24),
    ) {
        check(max_keys, h)?;
    }
}

/// Real threads: two flood a full store with new keys (each making room by single evictions and
/// sweeps) while a third checks 50 hot keys and moves the clock; no hot key is ever evicted
/// (which would hand it a fresh burst), so none exceeds `burst + elapsed / T`.
#[test]
fn concurrent_floods_never_evict_a_live_key() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let clock = ManualClock::new();
    let l = Arc::new(
        RateLimiter::builder(Quota::per_second(10))
            .clock(clock.clone())
            .keyed::<u32>()
            .max_keys(500)
            .build()
            .unwrap(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = (0..2u32)
        .map(|t| {
            let (l, done, attempts) = (l.clone(), done.clone(), attempts.clone());
            std::thread::spawn(move || {
                let mut k = 1_000 + t * 100_000_000;
                let mut admitted = 0u64;
                while !done.load(Ordering::Relaxed) {
                    admitted += u64::from(l.allow_key(&k));
                    attempts.fetch_add(1, Ordering::Relaxed);
                    k += 1;
                }
                admitted
            })
        })
        .collect();
    let mut hot = [0u64; 50];
    for _ in 0..600 {
        for (h, n) in hot.iter_mut().enumerate() {
            *n += u64::from(l.allow_key(&(h as u32)));
        }
        // Let the flooders run between two clock steps (the machine may be loaded).
        let seen = attempts.load(Ordering::Relaxed);
        while attempts.load(Ordering::Relaxed) < seen + 20 {
            std::thread::yield_now();
        }
        clock.advance(Duration::from_millis(10));
    }
    done.store(true, Ordering::Relaxed);
    let new_admitted: u64 = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    let bound = 10 + clock.now() / 100_000_000;
    for (h, &n) in hot.iter().enumerate() {
        assert!(n <= bound, "hot key {h}: {n} admissions > {bound}");
        assert!(n >= bound / 2, "hot key {h} starved: {n}");
    }
    assert!(new_admitted > 0);
    let s = l.stats();
    assert!(s.keys() <= 500);
    eprintln!(
        "concurrent floods: {new_admitted} new keys admitted, {} evicted, {} sweeps; hot keys within {bound}",
        s.evicted(),
        s.sweeps()
    );
}
