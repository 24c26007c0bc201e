//! loom models of every atomic state machine in fluxrate-core (D18–D22 in TESTS.md).
//!
//! Build and run with:
//!
//! ```text
//! RUSTFLAGS="--cfg fluxrate_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release -p fluxrate-loom-tests --target-dir target-loom
//! ```
//!
//! Each model uses 2–3 threads and explicit timestamps (the cells take `now` as an argument,
//! which is what a `ManualClock` would hand them). Each `mutant_*` test runs the same model
//! against a deliberately broken implementation kept in `src/mutants.rs` and asserts that loom
//! finds the bug.
#![cfg(fluxrate_loom)]

use fluxrate_core::{
    FixedWindow, FixedWindowState, GcraState, LeakyBucket, Quota, RateAlgorithm, SlidingLog,
    SlidingWindowCounter, SlidingWindowCounterState, TokenBucket,
};
use fluxrate_loom_tests::mutants;
use loom::sync::{Arc, Mutex};
use loom::thread;
use std::collections::HashMap;
use std::time::Duration;

fn quota(calls: u64, period_ns: u64, burst: u64) -> Quota {
    Quota::new(calls, Duration::from_nanos(period_ns)).with_burst(burst)
}

/// Run `f` in every thread of a model with `n` threads; collect the results.
fn spawn_all<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let f = f.clone();
            thread::spawn(move || f(i))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// `loom::model`, counting the interleavings explored and reporting them with the time taken.
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let iterations = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = iterations.clone();
    let start = std::time::Instant::now();
    loom::model(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    println!(
        "loom model {name}: {} interleavings in {:.2?} (LOOM_MAX_PREEMPTIONS={})",
        iterations.load(Ordering::Relaxed),
        start.elapsed(),
        std::env::var("LOOM_MAX_PREEMPTIONS").unwrap_or_else(|_| "unbounded".into())
    );
}

/// Whether `model` panics (loom found a failing interleaving).
fn loom_finds_bug(model: impl Fn() + Sync + Send + 'static) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loom::model(model))).is_err()
}

// ---- D18: GCRA counting --------------------------------------------------------------------

/// `threads` threads each ask for one call at the same time; with `mixed`, the odd ones use
/// the metadata-free `allow` path (its own CAS loop) and the even ones `check`.
fn gcra_counting(threads: usize, burst: u64, mixed: bool) {
    model(
        &format!("gcra_counting({:?})", (threads, burst, mixed)),
        move || {
            let tb = Arc::new(TokenBucket::new(&quota(1, 10, burst)).unwrap());
            let s = Arc::new(GcraState::new());
            let (tb2, s2) = (tb.clone(), s.clone());
            let admitted = spawn_all(threads, move |i| {
                if mixed && i % 2 == 1 {
                    tb2.allow(&s2, 100, 1)
                } else {
                    tb2.check(&s2, 100, 1).is_ok()
                }
            });
            let count = admitted.iter().filter(|&&a| a).count() as u64;
            assert_eq!(count, (threads as u64).min(burst));
            // Sequential result: TAT = max(TAT, now) + count·T.
            assert_eq!(s.tat(), 100 + count * 10);
        },
    );
}

#[test]
fn gcra_counting_2_threads_burst_1() {
    gcra_counting(2, 1, false);
}

#[test]
fn gcra_counting_2_threads_burst_2() {
    gcra_counting(2, 2, false);
}

#[test]
fn gcra_counting_3_threads_burst_2() {
    gcra_counting(3, 2, false);
}

#[test]
fn gcra_allow_racing_check_3_threads_burst_2() {
    gcra_counting(3, 2, true);
}

/// The load-then-store mutant admits both threads with burst 1.
#[test]
fn mutant_gcra_load_then_store_is_caught() {
    assert!(loom_finds_bug(|| {
        let s = Arc::new(mutants::RacyGcra::new(10, 1));
        let s2 = s.clone();
        let admitted = spawn_all(2, move |_| s2.check(100, 1));
        assert!(admitted.iter().filter(|&&a| a).count() <= 1);
    }));
}

// ---- D19: GCRA linearizability ---------------------------------------------------------------

/// Sequential GCRA (VSA) on u128, independent of the implementation.
fn vsa(ops: &[(u64, u64)], t: u64, b: u64) -> (Vec<bool>, u128) {
    let (t, tau) = (u128::from(t), u128::from(b - 1) * u128::from(t));
    let mut tat = 0u128;
    let out = ops
        .iter()
        .map(|&(at, n)| {
            let (at, n) = (u128::from(at), u128::from(n));
            if (n - 1) * t > tau || at + tau < tat + (n - 1) * t {
                return false;
            }
            tat = tat.max(at) + n * t;
            true
        })
        .collect();
    (out, tat)
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 1 {
        return vec![vec![0]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn gcra_outcomes_are_linearizable() {
    // Different timestamps and weights: different orders give different outcomes.
    let ops: Vec<(u64, u64)> = vec![(100, 2), (105, 1), (95, 1)];
    let (t, b) = (10u64, 2u64);
    model("gcra_outcomes_are_linearizable", move || {
        let tb = Arc::new(TokenBucket::new(&quota(1, t, b)).unwrap());
        let s = Arc::new(GcraState::new());
        let (tb2, s2, ops2) = (tb.clone(), s.clone(), ops.clone());
        let got = spawn_all(ops.len(), move |i| {
            tb2.check(&s2, ops2[i].0, ops2[i].1).is_ok()
        });
        let final_tat = u128::from(s.tat());
        let ok = permutations(ops.len()).into_iter().any(|order| {
            let seq: Vec<_> = order.iter().map(|&i| ops[i]).collect();
            let (out, tat) = vsa(&seq, t, b);
            tat == final_tat && order.iter().zip(&out).all(|(&i, &o)| got[i] == o)
        });
        assert!(
            ok,
            "outcome {got:?} with TAT {final_tat} matches no sequential order"
        );
    });
}

// ---- D20: leaky-bucket reservation and refund --------------------------------------------

#[test]
fn reservation_refund_conserves_capacity() {
    model("reservation_refund_conserves_capacity", || {
        let lb = Arc::new(LeakyBucket::new(&quota(1, 10, 3)).unwrap());
        let s = Arc::new(GcraState::new());
        // Thread 0 reserves and cancels; thread 1 reserves and keeps it.
        let (lb2, s2) = (lb.clone(), s.clone());
        let results = spawn_all(2, move |i| {
            let a = lb2.check(&s2, 0, 1).expect("queue has room");
            let tat_after = a.admitted_at() + 10;
            if i == 0 {
                (true, lb2.refund(&s2, tat_after, 1))
            } else {
                (false, false)
            }
        });
        let refunded = results[0].1;
        // Conservation: the final TAT is the sequential result of the kept reservations.
        let kept = if refunded { 1 } else { 2 };
        assert_eq!(s.tat(), kept * 10, "refunded = {refunded}");
        // A refund never takes back capacity that a later reservation depends on.
    });
}

// ---- D21: fixed window at a boundary -----------------------------------------------------------

#[test]
fn fixed_window_stale_reader_never_resets_a_newer_window() {
    model(
        "fixed_window_stale_reader_never_resets_a_newer_window",
        || {
            let fw = Arc::new(FixedWindow::new(&quota(1, 100, 1)).unwrap());
            let s = Arc::new(FixedWindowState::new());
            let (fw2, s2) = (fw.clone(), s.clone());
            // Window 0 is full before the race.
            assert!(fw.check(&s, 50, 1).is_ok());
            // A thread in window 1 and a stale thread still in window 0 race, twice each.
            let got = spawn_all(2, move |i| {
                let now = if i == 0 { 150 } else { 99 };
                (0..2)
                    .filter(|_| fw2.check(&s2, now, 1).is_ok())
                    .map(|_| now)
                    .collect::<Vec<_>>()
            });
            let admitted: Vec<u64> = got.into_iter().flatten().collect();
            // Window 0 had its one; window 1 gets at most one; the stored window never goes back.
            assert!(
                admitted.iter().filter(|&&t| t < 100).count() == 0,
                "{admitted:?}"
            );
            assert!(admitted.iter().filter(|&&t| t >= 100).count() <= 1);
            assert!(s.raw() >= 1);
        },
    );
}

#[test]
fn mutant_fixed_window_stale_reset_is_caught() {
    assert!(loom_finds_bug(|| {
        let s = Arc::new(mutants::ResettingWindow::new(100, 1));
        let s2 = s.clone();
        let got = spawn_all(2, move |i| {
            let now = if i == 0 { 150 } else { 99 };
            (0..2).filter(|_| s2.check(now)).count()
        });
        // One admission per window at most: window 1 must not see two.
        assert!(got[0] <= 1);
    }));
}

// ---- D21b: sliding window counter and sliding log --------------------------------------------

#[test]
fn swc_concurrent_roll_and_count() {
    model("swc_concurrent_roll_and_count", || {
        let swc = Arc::new(SlidingWindowCounter::new(&quota(2, 100, 2)).unwrap());
        let s = Arc::new(SlidingWindowCounterState::new());
        assert!(swc.check(&s, 90, 1).is_ok());
        assert!(swc.check(&s, 95, 1).is_ok());
        let (swc2, s2) = (swc.clone(), s.clone());
        // Both at 150 (half of window 1): prev = 2 weighs 1, so exactly one fits.
        let got = spawn_all(2, move |_| swc2.check(&s2, 150, 1).is_ok());
        assert_eq!(got.iter().filter(|&&a| a).count(), 1);
        assert_eq!(swc.peek(&s, 150).remaining(), 0);
    });
}

/// The same roll-over with the metadata-free `allow` path (its own CAS loop, and its own read
/// of `latest` to find the window) racing `check`, with a third thread whose clock is in the
/// next window: the outcomes and the final state are those of some sequential order
/// (linearizability, checked against all six orders run one after another).
#[test]
fn swc_allow_racing_check_across_a_roll() {
    fn op(swc: &SlidingWindowCounter, s: &SlidingWindowCounterState, i: usize) -> bool {
        match i {
            0 => swc.allow(s, 150, 1),
            1 => swc.check(s, 150, 1).is_ok(),
            _ => swc.allow(s, 250, 1),
        }
    }
    fn setup() -> (SlidingWindowCounter, SlidingWindowCounterState) {
        let swc = SlidingWindowCounter::new(&quota(2, 100, 2)).unwrap();
        let s = SlidingWindowCounterState::new();
        assert!(swc.check(&s, 90, 1).is_ok());
        assert!(swc.check(&s, 95, 1).is_ok());
        (swc, s)
    }
    model("swc_allow_racing_check_across_a_roll", || {
        let (swc, s) = setup();
        let (swc, s) = (Arc::new(swc), Arc::new(s));
        let (swc2, s2) = (swc.clone(), s.clone());
        let got = spawn_all(3, move |i| op(&swc2, &s2, i));
        let sequential: Vec<(Vec<bool>, u64)> = permutations(3)
            .into_iter()
            .map(|order| {
                let (swc, s) = setup();
                let mut r = vec![false; 3];
                for i in order {
                    r[i] = op(&swc, &s, i);
                }
                (r, s.raw())
            })
            .collect();
        assert!(
            sequential.contains(&(got.clone(), s.raw())),
            "{got:?} / {:#x} is no sequential outcome: {sequential:?}",
            s.raw()
        );
    });
}

#[test]
fn sliding_log_ring_never_over_admits() {
    model("sliding_log_ring_never_over_admits", || {
        let log = Arc::new(SlidingLog::new(&quota(2, 100, 2)).unwrap());
        let s = Arc::new(log.new_state());
        assert!(log.check(&s, 0, 1).is_ok());
        let (log2, s2) = (log.clone(), s.clone());
        // Two threads at 50 (one slot left) and one at 100 (the first stamp has left).
        let got = spawn_all(3, move |i| {
            let now = if i < 2 { 50 } else { 100 };
            log2.check(&s2, now, 1).ok().map(|_| now)
        });
        let mut stamps: Vec<u64> = got.into_iter().flatten().collect();
        stamps.push(0);
        stamps.sort_unstable();
        // At most 2 in any half-open window of length 100.
        for (i, &a) in stamps.iter().enumerate() {
            let in_window = stamps[i..].iter().filter(|&&b| b < a + 100).count();
            assert!(in_window <= 2, "{stamps:?}");
        }
    });
}

#[test]
fn sliding_log_weighted_claims_roll_back() {
    model("sliding_log_weighted_claims_roll_back", || {
        let log = Arc::new(SlidingLog::new(&quota(2, 100, 2)).unwrap());
        let s = Arc::new(log.new_state());
        let (log2, s2) = (log.clone(), s.clone());
        // A weight-2 request and a weight-1 request: never 3 slots used.
        let got = spawn_all(2, move |i| {
            let n = if i == 0 { 2 } else { 1 };
            if log2.check(&s2, 10, n).is_ok() {
                n
            } else {
                0
            }
        });
        assert!(got.iter().sum::<u64>() <= 2, "{got:?}");
        assert!(got.iter().sum::<u64>() >= 1, "both refused: {got:?}");
    });
}

/// A sliding log of 10 calls per 100 (segments of 8 and 2 slots) whose first segment holds
/// stamps at 0..8: `threads` threads each send one request at 50, thread `i` of weight
/// `weight(i)`. Checks that no stamp is lost and that no window of 100 holds more than 10.
fn sliding_log_growth_race(weight: fn(usize) -> u64, threads: usize, stale: bool, all_pass: bool) {
    let name = format!("sliding_log_growth_race({threads}, stale = {stale})");
    model(&name, move || {
        let log = Arc::new(SlidingLog::new(&quota(10, 100, 10)).unwrap());
        let s = Arc::new(log.new_state());
        for t in 0..8 {
            assert!(log.check(&s, t, 1).is_ok());
        }
        assert_eq!(s.raw().0.len(), 8);
        let (log2, s2) = (log.clone(), s.clone());
        // With `stale`, the last thread's clock is at 100, where the stamp of 0 has left.
        let got = spawn_all(threads, move |i| {
            let now = if stale && i == threads - 1 { 100 } else { 50 };
            log2.check(&s2, now, weight(i))
                .ok()
                .map(|_| (now, weight(i)))
        });
        let admitted: Vec<(u64, u64)> = got.into_iter().flatten().collect();
        assert!(
            !admitted.is_empty(),
            "every request refused with 2 slots free"
        );
        assert!(!all_pass || admitted.len() == threads, "{admitted:?}");
        let (raw, _) = s.raw();
        // No stamp lost: every admitted one is in the ring (a segment built by the thread that
        // lost the race to publish it held none), and nothing else is.
        for now in [50u64, 100] {
            let held = raw.iter().filter(|&&v| v == now + 1).count() as u64;
            let asked: u64 = admitted.iter().filter(|a| a.0 == now).map(|a| a.1).sum();
            assert_eq!(held, asked, "admitted {admitted:?}, ring {raw:?}");
        }
        let extra = raw.iter().filter(|&&v| v > 8).count() as u64;
        assert_eq!(extra, admitted.iter().map(|a| a.1).sum::<u64>(), "{raw:?}");
        // Never more than 10 in a window of 100 (stamps 0..8 plus those admitted).
        let mut stamps: Vec<u64> = (0..8).collect();
        for &(now, n) in &admitted {
            stamps.extend(std::iter::repeat(now).take(n as usize));
        }
        stamps.sort_unstable();
        for (i, &a) in stamps.iter().enumerate() {
            assert!(
                stamps[i..].iter().filter(|&&b| b < a + 100).count() <= 10,
                "{stamps:?}"
            );
        }
        assert!(raw.len() <= 10);
    });
}

/// Two threads find the first segment full and race to grow the ring (both build the second
/// segment, one is published): one asks for 2 slots, the other for 1, and the second segment
/// has 2. At most 2 slots are used, at least one request passes, and no stamp is lost.
#[test]
fn sliding_log_two_threads_grow_the_ring() {
    sliding_log_growth_race(|i| if i == 0 { 2 } else { 1 }, 2, false, false);
}

/// Two threads ask twice each for the second segment's 2 slots: exactly 2 requests pass (a
/// refusal only once every slot holds a live stamp), both stamps in the ring. (Three threads
/// would be the natural model, but each scans the 8 full slots first: too many interleavings.)
#[test]
fn sliding_log_growth_race_refuses_only_when_full() {
    model("sliding_log_growth_race_refuses_only_when_full", || {
        let log = Arc::new(SlidingLog::new(&quota(10, 100, 10)).unwrap());
        let s = Arc::new(log.new_state());
        for _ in 0..8 {
            assert!(log.check(&s, 0, 1).is_ok());
        }
        let (log2, s2) = (log.clone(), s.clone());
        let got = spawn_all(2, move |_| {
            (0..2).filter(|_| log2.check(&s2, 50, 1).is_ok()).count()
        });
        assert_eq!(got.iter().sum::<usize>(), 2, "{got:?}");
        let (raw, _) = s.raw();
        assert_eq!(raw.iter().filter(|&&v| v == 51).count(), 2, "{raw:?}");
        assert_eq!(log.peek(&s, 50).remaining(), 0);
    });
}

/// Growth racing the reuse of an expired slot: a thread at 50 grows the ring while one at 100
/// takes the first segment's expired slot (or the new segment's): both pass, L1 holds.
#[test]
fn sliding_log_growth_racing_reuse() {
    sliding_log_growth_race(|_| 1, 2, true, true);
}

// ---- reset racing a check -------------------------------------------------------------------

#[test]
fn reset_racing_check_leaves_a_sequential_state() {
    model("reset_racing_check_leaves_a_sequential_state", || {
        let tb = Arc::new(TokenBucket::new(&quota(1, 10, 1)).unwrap());
        let s = Arc::new(GcraState::new());
        let (tb2, s2) = (tb.clone(), s.clone());
        let got = spawn_all(2, move |i| {
            if i == 0 {
                tb2.reset(&s2);
                None
            } else {
                Some(tb2.check(&s2, 100, 1).is_ok())
            }
        });
        assert_eq!(got[1], Some(true));
        // Either order: check then reset (fresh, 0) or reset then check (110).
        assert!(s.tat() == 0 || s.tat() == 110, "TAT {}", s.tat());
    });
}

// ---- D22: keyed store eviction racing acquirers -----------------------------------------------

/// The store protocol with a stand-in map: decisions run their CAS while holding the map
/// lock (as fluxrate holds the DashMap shard guard), evictions remove only idle cells under
/// the lock, and no decision is made earlier than the latest sweep.
struct Store {
    map: Mutex<HashMap<u8, Arc<GcraState>>>,
    swept_at: loom::sync::atomic::AtomicU64,
    tb: TokenBucket,
    /// Mutant switches.
    cas_after_unlock: bool,
    no_sweep_floor: bool,
}

impl Store {
    fn new(cas_after_unlock: bool, no_sweep_floor: bool) -> Self {
        let tb = TokenBucket::new(&quota(1, 10, 1)).unwrap();
        let s = GcraState::new();
        assert!(tb.check(&s, 0, 1).is_ok()); // TAT = 10: one admission at 0
        let mut map = HashMap::new();
        map.insert(1u8, Arc::new(s));
        Self {
            map: Mutex::new(map),
            swept_at: loom::sync::atomic::AtomicU64::new(0),
            tb,
            cas_after_unlock,
            no_sweep_floor,
        }
    }

    fn check(&self, now: u64) -> Option<u64> {
        use loom::sync::atomic::Ordering::*;
        let guard = self.map.lock().unwrap();
        let mut guard = guard;
        let cell = guard
            .entry(1)
            .or_insert_with(|| Arc::new(GcraState::new()))
            .clone();
        let at = if self.no_sweep_floor {
            now
        } else {
            now.max(self.swept_at.load(Acquire))
        };
        if self.cas_after_unlock {
            drop(guard);
            self.tb.check(&cell, at, 1).ok().map(|_| at)
        } else {
            let r = self.tb.check(&cell, at, 1).ok().map(|_| at);
            drop(guard);
            r
        }
    }

    fn sweep(&self, now: u64) {
        use loom::sync::atomic::Ordering::*;
        self.swept_at.fetch_max(now, AcqRel);
        let mut guard = self.map.lock().unwrap();
        guard.retain(|_, cell| self.tb.idle_at(cell, now) > now);
    }
}

/// Admissions of one key (with the initial one at 0) respect P1 for T = 10, b = 1.
fn assert_p1(mut stamps: Vec<u64>) {
    stamps.push(0);
    stamps.sort_unstable();
    for w in stamps.windows(2) {
        assert!(
            w[1] - w[0] >= 10,
            "two admissions closer than T: {stamps:?}"
        );
    }
}

fn store_model(cas_after_unlock: bool, no_sweep_floor: bool, evict_at: u64, check_at: u64) {
    model(
        &format!(
            "store_model({:?})",
            (cas_after_unlock, no_sweep_floor, evict_at, check_at)
        ),
        move || {
            let store = Arc::new(Store::new(cas_after_unlock, no_sweep_floor));
            let st = store.clone();
            let got = spawn_all(3, move |i| {
                if i == 0 {
                    st.sweep(evict_at);
                    None
                } else {
                    st.check(check_at)
                }
            });
            assert_p1(got.into_iter().flatten().collect());
        },
    );
}

#[test]
fn eviction_racing_two_acquirers() {
    // Sweeper at 10 (the cell is idle), acquirers at 10 and with stale clocks at 5.
    store_model(false, false, 10, 10);
    store_model(false, false, 10, 5);
}

#[test]
fn mutant_store_cas_after_unlock_is_caught() {
    // Clone the cell out, CAS after releasing the lock: an orphaned cell and a fresh one.
    assert!(loom_finds_bug(|| {
        let store = Arc::new(Store::new(true, false));
        let st = store.clone();
        let got = spawn_all(3, move |i| {
            if i == 0 {
                st.sweep(10);
                None
            } else {
                st.check(10)
            }
        });
        assert_p1(got.into_iter().flatten().collect());
    }));
}

#[test]
fn mutant_store_without_sweep_floor_is_caught() {
    // A reader whose clock predates the sweep sees the dropped cell as fresh.
    assert!(loom_finds_bug(|| {
        let store = Arc::new(Store::new(false, true));
        let st = store.clone();
        let got = spawn_all(2, move |i| {
            if i == 0 {
                st.sweep(10);
                None
            } else {
                st.check(5)
            }
        });
        assert_p1(got.into_iter().flatten().collect());
    }));
}
