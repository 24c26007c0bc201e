//! C14–C17: clocks that jump backwards, jump forwards, disagree between threads, and the same
//! trace through different clock implementations.

use crate::common::{bucket, cases, check_arrival_curve, xorshift};
use fluxrate_core::{
    Algorithm, CachedClock, Clock, GcraState, ManualClock, MonotonicClock, Quota, RateAlgorithm,
    RateLimiter, Refusal, TokenBucket,
};
use proptest::prelude::*;
use std::time::Duration;

proptest! {
    #![proptest_config(cases(500))]

    /// C14: random backward jumps of up to 10·T. P1 holds over the timestamps used, and after a
    /// jump of J a greedy client is denied for at most J + T of new clock time.
    #[test]
    fn backward_jumps_never_over_admit_and_recover(
        t in 1u64..1_000,
        b in 1u64..10,
        jumps in prop::collection::vec((1u64..10, 0u64..50), 1..20),
    ) {
        let tb = bucket(t, b);
        let s = GcraState::new();
        let mut now = 1_000_000u64;
        let mut admitted = Vec::new();
        let mut worst_ratio = 0f64;
        for (jump_in_t, run) in jumps {
            // Greedy for a while.
            for _ in 0..run {
                match tb.check(&s, now, 1) {
                    Ok(_) => admitted.push((now, 1)),
                    Err(Refusal::Limited { retry_after, .. }) => now += retry_after,
                    Err(Refusal::Never) => unreachable!(),
                }
            }
            // Jump back, then measure how long (on the new clock) until the next admission.
            let j = jump_in_t * t;
            now -= j.min(now);
            let jumped_at = now;
            loop {
                match tb.check(&s, now, 1) {
                    Ok(_) => {
                        admitted.push((now, 1));
                        break;
                    }
                    Err(Refusal::Limited { retry_after, .. }) => now += retry_after,
                    Err(Refusal::Never) => unreachable!(),
                }
            }
            let denied_for = now - jumped_at;
            prop_assert!(denied_for <= j + t, "denied for {denied_for} after a jump of {j} (T={t})");
            worst_ratio = worst_ratio.max(denied_for as f64 / (j + t) as f64);
        }
        check_arrival_curve(&admitted, t, b);
    }
}

/// C15: after an idle time of 10⁶·T, exactly b are admitted at the jump instant (no catch-up).
#[test]
fn forward_jump_admits_exactly_burst() {
    for alg in [Algorithm::TokenBucket, Algorithm::LeakyBucket] {
        for (t, b) in [(1u64, 1u64), (1_000, 5), (1_000_000, 50)] {
            let clock = ManualClock::new();
            let l = RateLimiter::builder(Quota::new(1, Duration::from_nanos(t)).with_burst(b))
                .algorithm(alg)
                .clock(clock.clone())
                .build()
                .unwrap();
            clock.advance_ns(1_000_000 * t);
            let admitted = (0..10 * b).filter(|_| l.allow()).count() as u64;
            assert_eq!(admitted, b, "{alg} T={t} b={b}");
        }
    }
    for alg in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindowCounter,
        Algorithm::SlidingLog,
    ] {
        let clock = ManualClock::new();
        let l = RateLimiter::builder(Quota::per_second(5))
            .algorithm(alg)
            .clock(clock.clone())
            .build()
            .unwrap();
        clock.advance(Duration::from_secs(1_000_000));
        assert_eq!((0..50).filter(|_| l.allow()).count(), 5, "{alg}");
    }
}

/// C16: per-thread clock skew (each "thread" reads global time + its own offset, |offset| ≤ δ).
/// In true time, any window of length len holds at most b + ⌊(len + 2δ)/T⌋ cells.
#[test]
fn per_thread_skew_excess_is_bounded_by_two_delta() {
    let (t, b) = (1_000u64, 4u64);
    let mut report = Vec::new();
    for delta in [0u64, 500, 1_000, 5_000, 20_000] {
        let tb = bucket(t, b);
        let s = GcraState::new();
        // Deterministic pseudo-random schedule of 4 threads with offsets in [-δ, δ].
        let offsets: Vec<i64> = [-1i64, 1, 0, -1]
            .iter()
            .zip([1u64, 1, 0, 2])
            .map(|(sign, k)| sign * (delta / 2 * k) as i64)
            .collect();
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        let mut true_times = Vec::new();
        let base = 10 * delta + 1_000_000;
        for step in 0..20_000u64 {
            let thread = (next() % 4) as usize;
            let true_now = base + step * (t / 4);
            let seen = (true_now as i64 + offsets[thread]) as u64;
            if tb.check(&s, seen, 1).is_ok() {
                true_times.push((true_now, 1));
            }
        }
        // Check the bound with the window widened by 2δ: equivalently, P1 with b' = b + ⌈2δ/T⌉.
        let extra = (2 * delta).div_ceil(t);
        check_arrival_curve(&true_times, t, b + extra);
        // Measure the actual excess over b + ⌊len/T⌋.
        let mut excess = 0u64;
        let mut v = true_times.clone();
        v.sort_unstable();
        for i in 0..v.len() {
            for j in i..v.len() {
                let len = v[j].0 - v[i].0;
                let count = (j - i + 1) as u64;
                excess = excess.max(count.saturating_sub(b + len / t));
            }
        }
        report.push((delta, excess));
        assert!(excess <= extra, "δ={delta}: excess {excess} > {extra}");
    }
    println!("skew δ (ns) → max excess over b + len/T (T = {t} ns): {report:?}");
}

/// C17: the same trace through the limiter with a manual clock and through the raw algorithm
/// with the same timestamps gives identical decisions; real clocks are monotone and wait right.
#[test]
fn clock_implementations_agree() {
    let q = Quota::per_second(3);
    let tb = TokenBucket::new(&q).unwrap();
    let raw = GcraState::new();
    let clock = ManualClock::new();
    let l = RateLimiter::builder(q)
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut next = xorshift(7);
    for _ in 0..10_000 {
        clock.advance_ns(next() % 200_000_000);
        let now = clock.now();
        assert_eq!(l.check().is_ok(), tb.check(&raw, now, 1).is_ok());
    }

    let mono = MonotonicClock::new();
    let cached = CachedClock::new(Duration::from_millis(1));
    let mut last = (0, 0);
    for _ in 0..1_000 {
        let now = (mono.now(), cached.now());
        assert!(now.0 >= last.0 && now.1 >= last.1, "a clock went backwards");
        last = now;
    }
    for c in [&mono as &dyn Clock, &cached] {
        let deadline = c.now() + 2_000_000;
        c.sleep_until(deadline);
        assert!(c.now() >= deadline);
    }
    // The same limiter logic on the cached clock.
    let l = RateLimiter::builder(Quota::new(2, Duration::from_secs(3600)))
        .clock(cached)
        .build()
        .unwrap();
    assert!(l.allow() && l.allow() && !l.allow());
}
