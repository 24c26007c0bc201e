//! GCRA conformance (A1–A4 and A8 in TESTS.md) (token bucket, reservations, leaky-bucket shaper).

use crate::common::{bucket, cases, check_arrival_curve, Cslb, RefDecision, ShaperRef, Vsa};
use fluxrate_core::{
    GcraState, LeakyBucket, ManualClock, Quota, RateAlgorithm, RateLimiter, Refusal, TokenBucket,
};
use proptest::prelude::*;
use std::time::Duration;

proptest! {
    #![proptest_config(cases(2000))]

    /// A1: decisions and NotUntil equal both I.371 references, including backward clock jumps;
    /// the admitted cells satisfy the arrival curve P1.
    #[test]
    fn matches_i371_references_and_arrival_curve(
        t in 1u64..5_000,
        b in 1u64..20,
        ops in prop::collection::vec((0u64..20_000, 1u64..25, any::<bool>()), 1..300),
    ) {
        let tb = bucket(t, b);
        let state = GcraState::new();
        let (mut cslb, mut vsa) = (Cslb::new(t, b), Vsa::new(t, b));
        let mut now = 0u64;
        let mut admitted = Vec::new();
        for (dt, n, back) in ops {
            now = if back { now.saturating_sub(dt / 4) } else { now + dt };
            let got = tb.check(&state, now, n);
            let c = cslb.step(now, n);
            let v = vsa.step(now, n);
            prop_assert_eq!(c, v == RefDecision::Ok, "references disagree");
            match (got, v) {
                (Ok(a), RefDecision::Ok) => {
                    prop_assert_eq!(a.admitted_at(), now);
                    prop_assert_eq!(u128::from(state.tat()), vsa.tat);
                    admitted.push((now, n));
                }
                (Err(Refusal::Limited { retry_after, .. }), RefDecision::NotUntil(at)) => {
                    prop_assert_eq!(u128::from(retry_after), at - u128::from(now));
                }
                (Err(Refusal::Never), RefDecision::Never) => {}
                (got, want) => prop_assert!(false, "at {now} n={n}: got {got:?}, want {want:?}"),
            }
        }
        check_arrival_curve(&admitted, t, b);
    }

    /// A2: after exhausting the bucket, every instant before the retry-after is denied and the
    /// retry-after instant itself is admitted (governor `accurate_not_until`).
    #[test]
    fn retry_after_is_exact(t in 1u64..100_000, b in 1u64..20, n in 0u64..20, steps in 1u64..10, start in 0u64..1_000_000) {
        let n = 1 + n % b;
        let tb = bucket(t, b);
        let s = GcraState::new();
        while tb.check(&s, start, n).is_ok() {}
        let Err(Refusal::Limited { retry_after, .. }) = tb.check(&s, start, n) else {
            return Err(TestCaseError::fail("expected a denial"));
        };
        let at = start + retry_after;
        for i in 0..steps {
            let probe = start + retry_after * i / steps;
            prop_assert!(tb.check(&s, probe, n).is_err(), "admitted early at {probe} < {at}");
        }
        prop_assert!(tb.check(&s, at - 1, n).is_err());
        prop_assert!(tb.check(&s, at, n).is_ok());
    }

    /// A3: a greedy client retrying exactly at NotUntil gets ⌊(H+τ)/T⌋+1 cells in [0, H].
    #[test]
    fn greedy_client_gets_exactly_the_bound(t in 1u64..10_000, b in 1u64..50, horizon in 0u64..1_000_000) {
        let tb = bucket(t, b);
        let s = GcraState::new();
        let mut now = 0;
        let mut count = 0u64;
        while now <= horizon {
            match tb.check(&s, now, 1) {
                Ok(_) => count += 1,
                Err(Refusal::Limited { retry_after, .. }) => now += retry_after,
                Err(Refusal::Never) => unreachable!(),
            }
        }
        let tau = (b - 1) * t;
        prop_assert_eq!(count, (horizon + tau) / t + 1);
    }

    /// A4: a denial (too early, or n > b) leaves the TAT bit-identical, and NEVER is told
    /// apart from NotUntil.
    #[test]
    fn denials_have_no_side_effects(t in 1u64..10_000, b in 1u64..20, fill in 0u64..40, at in 0u64..100_000, n in 1u64..40) {
        let tb = bucket(t, b);
        let s = GcraState::new();
        for _ in 0..fill {
            let _ = tb.check(&s, 0, 1);
        }
        let before = s.tat();
        match tb.check(&s, at, n) {
            Ok(_) => prop_assert!(n <= b),
            Err(Refusal::Never) => {
                prop_assert!(n > b);
                prop_assert_eq!(s.tat(), before);
            }
            Err(Refusal::Limited { .. }) => {
                prop_assert!(n <= b);
                prop_assert_eq!(s.tat(), before);
            }
        }
    }

    /// A8 (token bucket): reservations with max_wait W depart at the earliest conforming time,
    /// FIFO, within W; a refusal beyond W changes nothing; departures satisfy P1 and the
    /// outstanding reservations never exceed ⌊(W+τ)/T⌋ + 1.
    #[test]
    fn reservations_are_greedy_fifo_and_bounded(
        t in 1u64..5_000,
        b in 1u64..10,
        w in 0u64..50_000,
        ops in prop::collection::vec(0u64..3_000, 1..200),
    ) {
        let tb = bucket(t, b);
        let s = GcraState::new();
        let mut vsa = Vsa::new(t, b);
        let mut now = 0;
        let mut departures: Vec<(u64, u64)> = Vec::new();
        let tau = (b - 1) * t;
        for dt in ops {
            now += dt;
            let before = s.tat();
            // Reference: the earliest time d ≥ now at which one cell conforms.
            let mut probe = vsa.clone();
            let d = match probe.step(now, 1) {
                RefDecision::Ok => u128::from(now),
                RefDecision::NotUntil(at) => at,
                RefDecision::Never => unreachable!(),
            };
            match tb.reserve(&s, now, 1, w) {
                Ok(a) => {
                    prop_assert_eq!(u128::from(a.admitted_at()), d, "not the earliest slot");
                    prop_assert!(a.delay() <= Duration::from_nanos(w));
                    if let Some(&(last, _)) = departures.last() {
                        prop_assert!(a.admitted_at() >= last, "not FIFO");
                    }
                    prop_assert_eq!(vsa.step(a.admitted_at(), 1), RefDecision::Ok);
                    departures.push((a.admitted_at(), 1));
                    let outstanding = departures.iter().filter(|(dep, _)| *dep >= now).count() as u64;
                    prop_assert!(outstanding <= (w + tau) / t + 1);
                }
                Err(Refusal::Limited { retry_after, .. }) => {
                    prop_assert!(d - u128::from(now) > u128::from(w));
                    prop_assert_eq!(u128::from(retry_after), d - u128::from(now));
                    prop_assert_eq!(s.tat(), before);
                }
                Err(Refusal::Never) => unreachable!(),
            }
        }
        check_arrival_curve(&departures, t, b);
    }

    /// A8 (leaky bucket): queue delays equal the shaper reference, departures are spaced by
    /// at least T, the queue never holds more than `capacity`, and a full queue changes nothing.
    #[test]
    fn leaky_bucket_shapes_like_the_reference(
        t in 1u64..5_000,
        cap in 1u64..10,
        ops in prop::collection::vec((0u64..3_000, 1u64..4), 1..200),
    ) {
        let lb = LeakyBucket::new(&Quota::new(1, Duration::from_nanos(t)).with_burst(cap)).unwrap();
        let s = GcraState::new();
        let mut reference = ShaperRef::new(t, cap);
        let mut now = 0u64;
        let mut last_departure_end: Option<u64> = None;
        let mut queue: Vec<u64> = Vec::new(); // departure ends of admitted requests
        for (dt, n) in ops {
            now += dt;
            let before = s.tat();
            let want = reference.step(now, n);
            match lb.check(&s, now, n) {
                Ok(a) => {
                    prop_assert_eq!(Some(u128::from(a.delay().as_nanos() as u64)), want);
                    let dep = a.admitted_at();
                    if let Some(end) = last_departure_end {
                        prop_assert!(dep >= end, "departure {dep} before previous slot end {end}");
                    }
                    last_departure_end = Some(dep + n * t);
                    queue.push(dep + n * t);
                    let queued: u64 = queue.iter().filter(|&&end| end > now).count() as u64;
                    prop_assert!(queued <= cap);
                }
                Err(Refusal::Limited { retry_after, .. }) => {
                    prop_assert_eq!(want, None);
                    prop_assert_eq!(s.tat(), before);
                    // After retry_after there is room (if nothing else arrives).
                    let mut probe = reference.clone();
                    prop_assert!(probe.step(now + retry_after, n).is_some());
                    if retry_after > 1 {
                        let mut early = reference.clone();
                        prop_assert!(early.step(now + retry_after - 1, n).is_none());
                    }
                }
                Err(Refusal::Never) => prop_assert!(n > cap && want.is_none()),
            }
        }
    }
}

#[test]
fn leaky_bucket_acquire_outputs_one_per_interval() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(Quota::per_second(10))
        .algorithm(fluxrate_core::Algorithm::LeakyBucket)
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut departures = Vec::new();
    for _ in 0..25 {
        // acquire sleeps (on the manual clock: advances) exactly until the departure slot.
        limiter.blocking_acquire(Duration::from_secs(60)).unwrap();
        departures.push(clock.now_ns());
    }
    for pair in departures.windows(2) {
        assert_eq!(pair[1] - pair[0], 100_000_000, "{departures:?}");
    }
}

#[test]
fn token_bucket_acquire_reserves_the_earliest_slot() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(Quota::per_second(2))
        .clock(clock.clone())
        .build()
        .unwrap();
    limiter.blocking_acquire(Duration::ZERO).unwrap();
    limiter.blocking_acquire(Duration::ZERO).unwrap();
    assert_eq!(clock.now_ns(), 0);
    // The next slot is at 500 ms: a 499 ms timeout is refused at once, consuming nothing.
    let err = limiter
        .blocking_acquire(Duration::from_millis(499))
        .unwrap_err();
    assert_eq!(err.retry_after(), Duration::from_millis(500));
    assert_eq!(clock.now_ns(), 0);
    let a = limiter
        .blocking_acquire(Duration::from_millis(500))
        .unwrap();
    assert_eq!(a.delay(), Duration::from_millis(500));
    assert_eq!(clock.now_ns(), 500_000_000);
}

/// Extension for readability in these tests.
trait NowNs {
    fn now_ns(&self) -> u64;
}

impl NowNs for ManualClock {
    fn now_ns(&self) -> u64 {
        fluxrate_core::Clock::now(self)
    }
}

/// T = ⌈period / calls⌉: rounded up, so that the long-run rate never exceeds the configured one
/// (a rounded-down T would let 3/s become 3.000000009/s).
#[test]
fn emission_interval_is_rounded_up() {
    for (calls, period_ns, t) in [
        (3u64, 1_000_000_000u64, 333_333_334u64),
        (7, 1_000, 143),
        (1_000_000_000, 1_000_000_000, 1),
        (999_999_937, 1_000_000_000, 2),
        (10, 100, 10),
    ] {
        let q = Quota::new(calls, Duration::from_nanos(period_ns));
        assert_eq!(TokenBucket::new(&q).unwrap().emission_interval_ns(), t);
        assert_eq!(LeakyBucket::new(&q).unwrap().emission_interval_ns(), t);
        assert!(u128::from(t) * u128::from(calls) >= u128::from(period_ns));
    }
}
