//! A5: bounded-exhaustive small domain (A5 in TESTS.md). Every sequence of operations in a
//! small domain is run against the algorithm and its independent reference; zero mismatches.
//!
//! The search is a depth-first walk over prefixes: the implementation's state is saved and
//! restored through its raw value, so each sequence costs one step beyond its prefix.

use crate::common::{quota, FixedRef, LogRef, RefDecision, ShaperRef, SwcRef, Vsa};
use fluxrate_core::{
    FixedWindow, FixedWindowState, GcraState, LeakyBucket, RateAlgorithm, Refusal, SlidingLog,
    SlidingWindowCounter, SlidingWindowCounterState, TokenBucket,
};
use std::fmt::Debug;

struct Domain {
    /// Times are drawn from 0..=t_max.
    t_max: u64,
    /// Sequence length limit.
    depth: usize,
    /// Weights are drawn from 1..=n_max.
    n_max: u64,
    /// Only non-decreasing times (the window references define monotone time).
    monotone: bool,
}

#[allow(clippy::too_many_arguments)]
/// Walk every sequence; `step_impl` maps (saved state, t, n) to (outcome, new saved state).
fn walk<I: Clone, R: Clone, O: PartialEq + Debug>(
    d: &Domain,
    imp: I,
    reference: R,
    step_impl: &dyn Fn(&I, u64, u64) -> (O, I),
    step_ref: &dyn Fn(&mut R, u64, u64) -> O,
    trace: &mut Vec<(u64, u64)>,
    t_prev: u64,
    count: &mut u64,
) {
    if trace.len() == d.depth {
        return;
    }
    let t_lo = if d.monotone { t_prev } else { 0 };
    for t in t_lo..=d.t_max {
        for n in 1..=d.n_max {
            let (got, next) = step_impl(&imp, t, n);
            let mut r = reference.clone();
            let want = step_ref(&mut r, t, n);
            trace.push((t, n));
            *count += 1;
            assert_eq!(got, want, "mismatch after {trace:?}");
            walk(d, next, r, step_impl, step_ref, trace, t, count);
            trace.pop();
        }
    }
}

#[test]
fn token_bucket_any_time_order() {
    let mut count = 0;
    for t in 1..=6 {
        for b in 1..=4 {
            let tb = TokenBucket::new(&quota(1, t).with_burst(b)).unwrap();
            let d = Domain {
                t_max: 8,
                depth: 4,
                n_max: b + 1,
                monotone: false,
            };
            let step_impl = |tat: &u64, now: u64, n: u64| {
                let s = GcraState::from_tat(*tat);
                let out = match tb.check(&s, now, n) {
                    Ok(_) => RefDecision::Ok,
                    Err(Refusal::Limited { retry_after, .. }) => {
                        RefDecision::NotUntil(u128::from(now) + u128::from(retry_after))
                    }
                    Err(Refusal::Never) => RefDecision::Never,
                };
                (out, s.tat())
            };
            let step_ref = |v: &mut Vsa, now: u64, n: u64| v.step(now, n);
            walk(
                &d,
                0u64,
                Vsa::new(t, b),
                &step_impl,
                &step_ref,
                &mut Vec::new(),
                0,
                &mut count,
            );
        }
    }
    println!("token bucket: {count} sequences, 0 mismatches");
    assert!(count > 1_000_000);
}

#[test]
fn leaky_bucket_any_time_order() {
    let mut count = 0;
    for t in 1..=6 {
        for cap in 1..=4 {
            let lb = LeakyBucket::new(&quota(1, t).with_burst(cap)).unwrap();
            let d = Domain {
                t_max: 8,
                depth: 4,
                n_max: cap + 1,
                monotone: false,
            };
            let step_impl = |tat: &u64, now: u64, n: u64| {
                let s = GcraState::from_tat(*tat);
                let out = lb.check(&s, now, n).ok().map(|a| a.delay().as_nanos());
                (out, s.tat())
            };
            let step_ref = |r: &mut ShaperRef, now: u64, n: u64| r.step(now, n);
            walk(
                &d,
                0u64,
                ShaperRef::new(t, cap),
                &step_impl,
                &step_ref,
                &mut Vec::new(),
                0,
                &mut count,
            );
        }
    }
    println!("leaky bucket: {count} sequences, 0 mismatches");
    assert!(count > 1_000_000);
}

#[test]
fn fixed_window_any_time_order() {
    let mut count = 0;
    for w in 1..=6 {
        for l in 1..=w.min(4) {
            let fw = FixedWindow::new(&quota(l, w).with_burst(l)).unwrap();
            let d = Domain {
                t_max: 8,
                depth: 4,
                n_max: l + 1,
                monotone: false,
            };
            let step_impl = |v: &u64, now: u64, n: u64| {
                let s = FixedWindowState::from_raw(*v);
                (fw.check(&s, now, n).is_ok(), s.raw())
            };
            let step_ref = |r: &mut FixedRef, now: u64, n: u64| r.step(now, n);
            walk(
                &d,
                0u64,
                FixedRef::new(l, w),
                &step_impl,
                &step_ref,
                &mut Vec::new(),
                0,
                &mut count,
            );
        }
    }
    println!("fixed window: {count} sequences, 0 mismatches");
    assert!(count > 500_000);
}

#[test]
fn sliding_log_monotone() {
    let mut count = 0;
    for w in 1..=6 {
        for l in 1..=w.min(4) {
            let log = SlidingLog::new(&quota(l, w).with_burst(l)).unwrap();
            let d = Domain {
                t_max: 12,
                depth: 5,
                n_max: l + 1,
                monotone: true,
            };
            let fresh = log.new_state().raw();
            let step_impl = |raw: &(Vec<u64>, usize), now: u64, n: u64| {
                let s = log.state_from_raw(&raw.0, raw.1).unwrap();
                (log.check(&s, now, n).is_ok(), s.raw())
            };
            let step_ref = |r: &mut LogRef, now: u64, n: u64| r.step(now, n);
            walk(
                &d,
                fresh,
                LogRef::new(l, w),
                &step_impl,
                &step_ref,
                &mut Vec::new(),
                0,
                &mut count,
            );
        }
    }
    println!("sliding log: {count} sequences, 0 mismatches");
    assert!(count > 1_000_000);
}

#[test]
fn sliding_window_counter_monotone() {
    let mut count = 0;
    for w in 1..=6 {
        for l in 1..=w.min(4) {
            let q = quota(l, w).with_burst(l);
            let d = Domain {
                t_max: 12,
                depth: 5,
                n_max: l + 1,
                monotone: true,
            };
            // The counter also remembers the latest window any reader saw; the walk goes back
            // in time between sequences, so each step gets fresh parameters. Within a
            // (monotone) sequence that memory never refuses anything, so this changes nothing.
            let step_impl = |v: &u64, now: u64, n: u64| {
                let swc = SlidingWindowCounter::new(&q).unwrap();
                let s = SlidingWindowCounterState::from_raw(*v);
                (swc.check(&s, now, n).is_ok(), s.raw())
            };
            let step_ref = |r: &mut SwcRef, now: u64, n: u64| r.step(now, n);
            walk(
                &d,
                0u64,
                SwcRef::new(l, w),
                &step_impl,
                &step_ref,
                &mut Vec::new(),
                0,
                &mut count,
            );
        }
    }
    println!("sliding window counter: {count} sequences, 0 mismatches");
    assert!(count > 1_000_000);
}
