//! `Snapshot::effective_window` is exact for every algorithm: after any history, with
//! `(r, w)` read by `peek` at `now`, `r` unit requests sent at `now` are all admitted, one more
//! is refused at every instant before `now + w` (checked at `now + w − 1 ns`, the latest), and
//! admitted at `now + w`. This is what makes the HTTP layer's draft-11 `RateLimit` `r`/`t`
//! honest (the layer rounds `w` down to whole seconds).

use crate::common::cases;
use fluxrate_core::{Algorithm, ManualClock, Quota, RateLimiter};
use proptest::prelude::*;
use std::time::Duration;

const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::TokenBucket,
    Algorithm::LeakyBucket,
    Algorithm::FixedWindow,
    Algorithm::SlidingWindowCounter,
    Algorithm::SlidingLog,
];

fn limiter(
    alg: Algorithm,
    calls: u64,
    period_ns: u64,
    burst: u64,
) -> RateLimiter<fluxrate_core::NotKeyed, ManualClock> {
    let mut quota = Quota::new(calls, Duration::from_nanos(period_ns));
    if matches!(alg, Algorithm::TokenBucket | Algorithm::LeakyBucket) {
        quota = quota.with_burst(burst);
    }
    RateLimiter::builder(quota)
        .algorithm(alg)
        .clock(ManualClock::starting_at(1_000_000_000_000))
        .build()
        .unwrap()
}

/// The property at the limiter's current time; `Err` names what failed.
fn check_exact(l: &RateLimiter<fluxrate_core::NotKeyed, ManualClock>) -> Result<(), String> {
    let s = l.peek();
    let (r, w) = (
        s.remaining(),
        s.effective_window().expect("in-process snapshots know it"),
    );
    let w = u64::try_from(w.as_nanos()).unwrap();
    if r == 0 && w != u64::try_from(s.retry_after().as_nanos()).unwrap() {
        return Err(format!(
            "r = 0 but window {w} ≠ retry_after {:?}",
            s.retry_after()
        ));
    }
    for i in 0..r {
        if l.check().is_err() {
            return Err(format!("unit {i} of r = {r} refused at once"));
        }
    }
    // The leaky bucket queues: "admitted" is "accepted into the queue", with a delay.
    let clock = l.clock().clone();
    let start = clock.now_ns();
    if w > 1 {
        clock.set(start + w - 1);
        if l.check().is_ok() {
            return Err(format!(
                "r = {r}, window {w} ns: one more admitted at window − 1 ns"
            ));
        }
    }
    clock.set(start + w);
    if l.check().is_err() {
        return Err(format!(
            "r = {r}, window {w} ns: none admitted at the window's end"
        ));
    }
    Ok(())
}

trait Now {
    fn now_ns(&self) -> u64;
}

impl Now for ManualClock {
    fn now_ns(&self) -> u64 {
        fluxrate_core::Clock::now(self)
    }
}

proptest! {
    #![proptest_config(cases(600))]

    #[test]
    fn effective_window_is_exact(
        alg in prop::sample::select(ALGORITHMS.to_vec()),
        calls in 1u64..8,
        period_ns in 1_000u64..5_000_000,
        burst in 1u64..8,
        ops in prop::collection::vec((0u64..3, 0u64..6_000_000, 1u64..4), 0..40),
    ) {
        let l = limiter(alg, calls, period_ns, burst);
        for (kind, dt, n) in ops {
            match kind {
                0 => l.clock().advance_ns(dt),
                1 => { let _ = l.check_n(n); }
                _ => { let _ = l.check(); }
            }
        }
        if let Err(e) = check_exact(&l) {
            prop_assert!(false, "{:?}, {} per {} ns, burst {}: {}", alg, calls, period_ns, burst, e);
        }
    }
}

/// The windows of a fresh key: one interval for the buckets (using the whole burst empties
/// them), the rest of the aligned window for the fixed window, one period for the log.
#[test]
fn fresh_keys() {
    let w = |alg| {
        let l = limiter(alg, 4, 4_000, 4);
        l.clock().advance_ns(1_000);
        (
            l.peek().remaining(),
            l.peek().effective_window().unwrap().as_nanos(),
        )
    };
    assert_eq!(w(Algorithm::TokenBucket), (4, 1_000));
    assert_eq!(w(Algorithm::LeakyBucket), (4, 1_000));
    // The clock starts at 10^12 ns, a multiple of 4,000: 1,000 ns into the window.
    assert_eq!(w(Algorithm::FixedWindow), (4, 3_000));
    assert_eq!(w(Algorithm::SlidingLog), (4, 4_000));
}
