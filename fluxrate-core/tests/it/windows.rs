//! A7: window algorithms against their references, with their documented bounds shown tight.
//! F1/F2 (fixed window), L1/L2 (sliding log), C1/C2 (sliding window counter).

use crate::common::{
    cases, max_in_half_open_window, max_per_aligned_window, quota, FixedRef, LogRef, SwcRef,
};
use fluxrate_core::{
    FixedWindow, FixedWindowState, RateAlgorithm, Refusal, SlidingLog, SlidingWindowCounter,
    SlidingWindowCounterState,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(cases(1000))]

    /// Fixed window equals its reference for any time order (stale readers included); F1.
    #[test]
    fn fixed_window_matches_reference(
        l in 1u64..50,
        w in 50u64..5_000,
        ops in prop::collection::vec((0u64..2_000, 1u64..8, any::<bool>()), 1..300),
    ) {
        let fw = FixedWindow::new(&quota(l, w)).unwrap();
        let s = FixedWindowState::new();
        let mut r = FixedRef::new(l, w);
        let mut now = 0u64;
        let mut admitted = Vec::new();
        for (dt, n, back) in ops {
            now = if back { now.saturating_sub(dt / 3) } else { now + dt };
            let got = fw.check(&s, now, n);
            prop_assert_eq!(got.is_ok(), r.step(now, n), "at {} n={}", now, n);
            match got {
                Ok(_) => admitted.push((now, n)),
                Err(Refusal::Limited { retry_after, .. }) => {
                    // Exact: the next instant at which this request fits is a window start.
                    let at = now + retry_after;
                    prop_assert_eq!(at % w, 0);
                    let mut probe = r.clone();
                    prop_assert!(probe.step(at, n));
                }
                Err(Refusal::Never) => prop_assert!(n > l),
            }
        }
        prop_assert!(max_per_aligned_window(&admitted, w) <= l);
        prop_assert!(max_in_half_open_window(&admitted, w) <= 2 * l);
    }

    /// Sliding log equals the exact reference (monotone time); L1: ≤ L in every window.
    #[test]
    fn sliding_log_matches_reference(
        l in 1u64..30,
        w in 30u64..5_000,
        ops in prop::collection::vec((0u64..1_000, 1u64..5), 1..300),
    ) {
        let log = SlidingLog::new(&quota(l, w)).unwrap();
        let s = log.new_state();
        let mut r = LogRef::new(l, w);
        let mut now = 0u64;
        let mut admitted = Vec::new();
        for (dt, n) in ops {
            now += dt;
            let got = log.check(&s, now, n);
            prop_assert_eq!(got.is_ok(), r.step(now, n), "at {} n={}", now, n);
            match got {
                Ok(a) => {
                    admitted.push((now, n));
                    prop_assert_eq!(a.remaining(), log.peek(&s, now).remaining());
                }
                Err(Refusal::Limited { retry_after, .. }) => {
                    let mut probe = r.clone();
                    prop_assert!(probe.step(now + retry_after, n), "retry_after too early");
                    let mut early = r.clone();
                    prop_assert!(!early.step(now + retry_after - 1, n), "retry_after too late");
                }
                Err(Refusal::Never) => prop_assert!(n > l),
            }
        }
        prop_assert!(max_in_half_open_window(&admitted, w) <= l);
    }

    /// Sliding log with backward clock jumps: still never more than L in any window (L1 over
    /// the reported timestamps, whatever their order).
    #[test]
    fn sliding_log_never_over_admits_with_clock_faults(
        l in 1u64..20,
        w in 20u64..2_000,
        ops in prop::collection::vec((0u64..1_000, 1u64..4, any::<bool>()), 1..300),
    ) {
        let log = SlidingLog::new(&quota(l, w)).unwrap();
        let s = log.new_state();
        let mut now = 5_000u64;
        let mut admitted = Vec::new();
        for (dt, n, back) in ops {
            now = if back { now.saturating_sub(dt) } else { now + dt };
            if log.check(&s, now, n).is_ok() {
                admitted.push((now, n));
            }
        }
        prop_assert!(max_in_half_open_window(&admitted, w) <= l);
    }

    /// Sliding window counter equals its reference (monotone time); C1 (≤ L per aligned window)
    /// and C2 (< 2L in any window); the retry-after is exact.
    #[test]
    fn sliding_window_counter_matches_reference(
        l in 1u64..50,
        w in 50u64..5_000,
        ops in prop::collection::vec((0u64..1_000, 1u64..5), 1..300),
    ) {
        let swc = SlidingWindowCounter::new(&quota(l, w)).unwrap();
        let s = SlidingWindowCounterState::new();
        let mut r = SwcRef::new(l, w);
        let mut now = 0u64;
        let mut admitted = Vec::new();
        for (dt, n) in ops {
            now += dt;
            let got = swc.check(&s, now, n);
            prop_assert_eq!(got.is_ok(), r.step(now, n), "at {} n={}", now, n);
            match got {
                Ok(_) => admitted.push((now, n)),
                Err(Refusal::Limited { retry_after, .. }) => {
                    let mut probe = r.clone();
                    prop_assert!(probe.step(now + retry_after, n), "retry_after too early");
                    let mut early = r.clone();
                    prop_assert!(!early.step(now + retry_after - 1, n), "retry_after too late");
                }
                Err(Refusal::Never) => prop_assert!(n > l),
            }
        }
        prop_assert!(max_per_aligned_window(&admitted, w) <= l);
        prop_assert!(max_in_half_open_window(&admitted, w) < 2 * l);
    }

    /// The counter's `allow` (an inline path for the common case, the full loop otherwise)
    /// decides like `check` and leaves the same state word, for weights from 0 to above the
    /// limit, in any time order (stale readers included), with limits whose estimate fits in
    /// 64 bits and limits that need 128 (`wide`: `5·L·W` overflows).
    #[test]
    fn sliding_window_counter_allow_decides_like_check(
        wide in any::<bool>(),
        l in 1u64..50,
        w in 50u64..5_000,
        ops in prop::collection::vec((0u64..2_500, any::<bool>(), 0u64..=110), 1..300),
    ) {
        // Wide: L in 4,000..200,000 and W = 10^15 ns, time in steps of W / 1,000.
        let (l, w, unit) = if wide {
            (l * 4_000, 1_000_000_000_000_000, 1_000_000_000_000)
        } else {
            (l, w, 1)
        };
        let swc = SlidingWindowCounter::new(&quota(l, w)).unwrap();
        let (a, b) = (SlidingWindowCounterState::new(), SlidingWindowCounterState::new());
        let mut now = 0u64;
        for (dt, back, pct) in ops {
            let dt = dt * unit;
            now = if back { now.saturating_sub(dt / 4) } else { now + dt };
            let n = (l * pct).div_ceil(100);
            prop_assert_eq!(
                swc.allow(&a, now, n),
                swc.check(&b, now, n).is_ok(),
                "at {} n={} (L={} W={})", now, n, l, w
            );
            prop_assert_eq!(a.raw(), b.raw(), "state at {} n={}", now, n);
        }
    }
}

/// F2 is tight: L at the very end of one window and L at the start of the next.
#[test]
fn fixed_window_boundary_burst_reaches_2l() {
    for (l, w) in [(1, 10), (10, 1_000), (100, 1_000_000_000)] {
        let fw = FixedWindow::new(&quota(l, w)).unwrap();
        let s = FixedWindowState::new();
        let mut admitted = Vec::new();
        for t in [w - 1, w] {
            while fw.check(&s, t, 1).is_ok() {
                admitted.push((t, 1));
            }
        }
        assert_eq!(max_in_half_open_window(&admitted, w), 2 * l);
        assert_eq!(max_per_aligned_window(&admitted, w), l);
    }
}

/// C2 is tight: the adversary who puts all `L` at the very end of one window gets exactly 2L − 1 into one window.
#[test]
fn sliding_window_counter_adversary_gets_2l_minus_1() {
    for (l, w) in [(10u64, 1_000u64), (100, 10_000), (1_000, 100_000)] {
        let swc = SlidingWindowCounter::new(&quota(l, w)).unwrap();
        let s = SlidingWindowCounterState::new();
        let mut admitted = Vec::new();
        // All L of window 0 at its last instant, then request at every instant of window 1.
        for _ in 0..l {
            swc.check(&s, w - 1, 1).unwrap();
            admitted.push((w - 1, 1));
        }
        for t in w..2 * w {
            while swc.check(&s, t, 1).is_ok() {
                admitted.push((t, 1));
            }
        }
        assert_eq!(max_in_half_open_window(&admitted, w), 2 * l - 1, "L={l}");
        assert_eq!(max_per_aligned_window(&admitted, w), l);
    }
}

/// L1 is exact and tight: a greedy client gets exactly L in every window, never L + 1.
#[test]
fn sliding_log_is_exact_under_greedy_load() {
    let (l, w) = (7u64, 1_000u64);
    let log = SlidingLog::new(&quota(l, w)).unwrap();
    let s = log.new_state();
    let mut admitted = Vec::new();
    let mut t = 0;
    while t < 20 * w {
        match log.check(&s, t, 1) {
            Ok(_) => admitted.push((t, 1)),
            Err(Refusal::Limited { retry_after, .. }) => t += retry_after,
            Err(Refusal::Never) => unreachable!(),
        }
    }
    assert_eq!(max_in_half_open_window(&admitted, w), l);
    assert!(admitted.len() as u64 >= 20 * l);
}

/// A reader whose clock is many windows behind (a descheduled thread) is refused and leaves a
/// newer state alone; with a modular window index alone it would have read the state as
/// expired and reset it (found by the real-thread stress test under load).
#[test]
fn sliding_window_counter_reader_far_behind_never_resets_newer_state() {
    let swc = SlidingWindowCounter::new(&quota(2, 100)).unwrap();
    let s = SlidingWindowCounterState::new();
    assert!(swc.check(&s, 1_000, 1).is_ok());
    assert!(swc.check(&s, 1_001, 1).is_ok());
    let before = s.raw();
    for stale in [0, 500, 700, 799] {
        let e = swc.check(&s, stale, 1).unwrap_err();
        assert!(matches!(e, Refusal::Limited { retry_after, .. } if stale + retry_after >= 1_000));
        assert_eq!(
            s.raw(),
            before,
            "a stale reader at {stale} changed the state"
        );
    }
    assert!(swc.check(&s, 1_002, 1).is_err(), "window 10 is still full");
}

/// Defect 7 of issue 11: the stale-reader guard lives in the state, so copies of the parameters
/// (or parameters built twice from one quota) deciding on one state all keep it.
#[test]
fn sliding_window_counter_copies_of_the_parameters_keep_the_stale_reader_guard() {
    let swc = SlidingWindowCounter::new(&quota(2, 100)).unwrap();
    let copies = [swc, SlidingWindowCounter::new(&quota(2, 100)).unwrap()];
    let s = SlidingWindowCounterState::new();
    assert!(swc.check(&s, 1_000, 1).is_ok());
    assert!(swc.allow(&s, 1_001, 1));
    let before = s.raw();
    for other in &copies {
        for stale in [0, 500, 700, 799] {
            assert!(other.check(&s, stale, 1).is_err());
            assert!(!other.allow(&s, stale, 1));
            assert_eq!(other.peek(&s, stale).remaining(), 0);
            assert_eq!(
                s.raw(),
                before,
                "a stale reader at {stale} changed the state"
            );
        }
        assert!(
            other.check(&s, 1_002, 1).is_err(),
            "window 10 is still full"
        );
    }
    // Parameters that are `Copy` hold no atomics: nothing mutable is left in them to lose.
    fn copy<T: Copy>() {}
    copy::<SlidingWindowCounter>();
}

/// Found by fuzzing: at the very end of time (u64::MAX ns) a stamp cannot be stored, and with a
/// 1 ns window it would have expired at once; the log refuses instead of over-admitting.
#[test]
fn sliding_log_refuses_at_the_end_of_time() {
    let log = SlidingLog::new(&quota(1, 1)).unwrap();
    let s = log.new_state();
    let admitted = (0..10)
        .filter(|_| log.check(&s, u64::MAX, 1).is_ok())
        .count();
    assert!(admitted <= 1);
    assert!(log.check(&s, u64::MAX - 1, 1).is_ok());
    assert!(log.check(&s, u64::MAX - 1, 1).is_err());
}

/// The time step of a growth history: mostly bursts (the ring grows), some steps of up to a
/// window, and gaps longer than the window (every stamp expires: the ring drains, and refills
/// its allocated slots before it grows again).
fn growth_step(kind: u8, x: u64, w: u64) -> u64 {
    match kind % 10 {
        0..=5 => x % (w / 64 + 1),
        6..=8 => x % w,
        _ => w + x % (2 * w),
    }
}

/// The stamps of `r` in the window at `now` (monotone time).
fn in_window(r: &LogRef, now: u64) -> u64 {
    r.admitted.iter().filter(|&&a| a + r.w > now).count() as u64
}

proptest! {
    #![proptest_config(cases(400))]

    /// The ring that grows with use equals the exact reference on histories that take it
    /// through several segments (up to 400 calls: 8, 8, 16, 32, … slots), let it drain and grow
    /// again, with weighted requests and resets: the same decisions, `remaining` and `peek` equal
    /// to the reference's free count, an exact `retry_after`, `idle_at` when the newest stamp
    /// leaves. Its size never passes twice the peak number of stamps in the window (at least
    /// the first segment), nor `calls`.
    #[test]
    fn sliding_log_grows_with_use_and_matches_reference(
        l in 9u64..400,
        w in 400u64..20_000,
        ops in prop::collection::vec((any::<u8>(), any::<u64>(), 1u64..6, 0u8..50), 1..600),
    ) {
        let log = SlidingLog::new(&quota(l, w)).unwrap();
        let s = log.new_state();
        let mut r = LogRef::new(l, w);
        let mut now = 0u64;
        let mut peak = 0u64;
        for (kind, x, n, reset) in ops {
            now += growth_step(kind, x, w);
            if reset == 0 {
                log.reset(&s);
                r = LogRef::new(l, w);
            }
            let got = log.check(&s, now, n);
            prop_assert_eq!(got.is_ok(), r.step(now, n), "at {} n={}", now, n);
            let free = l - in_window(&r, now);
            match got {
                Ok(a) => prop_assert_eq!(a.remaining(), free, "remaining at {}", now),
                Err(Refusal::Limited { retry_after, .. }) => {
                    let mut probe = r.clone();
                    prop_assert!(probe.step(now + retry_after, n), "retry_after too early");
                    let mut early = r.clone();
                    prop_assert!(!early.step(now + retry_after - 1, n), "retry_after too late");
                }
                Err(Refusal::Never) => prop_assert!(n > l),
            }
            prop_assert_eq!(log.peek(&s, now).remaining(), free);
            prop_assert_eq!(log.idle_at(&s, now), r.admitted.last().map_or(0, |&t| t + w));
            peak = peak.max(in_window(&r, now));
            let size = s.raw().0.len() as u64;
            prop_assert!(size <= l && size <= (2 * peak).max(l.min(8)),
                "{} slots for a peak of {} stamps (calls {})", size, peak, l);
        }
    }

    /// The same histories with backward clock jumps: never more than `calls` in any window
    /// (L1 over the reported timestamps), and the ring never larger than `calls`.
    #[test]
    fn sliding_log_grows_without_over_admitting_under_clock_faults(
        l in 9u64..200,
        w in 200u64..5_000,
        ops in prop::collection::vec((any::<u8>(), any::<u64>(), 1u64..5, any::<bool>()), 1..500),
    ) {
        let log = SlidingLog::new(&quota(l, w)).unwrap();
        let s = log.new_state();
        let mut now = 100_000u64;
        let mut admitted = Vec::new();
        for (kind, x, n, back) in ops {
            let dt = growth_step(kind, x, w);
            now = if back { now.saturating_sub(dt) } else { now + dt };
            if log.check(&s, now, n).is_ok() {
                admitted.push((now, n));
            }
        }
        prop_assert!(max_in_half_open_window(&admitted, w) <= l);
        prop_assert!(s.raw().0.len() as u64 <= l);
    }
}
