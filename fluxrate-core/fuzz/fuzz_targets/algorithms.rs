//! Fuzz every algorithm with arbitrary configurations, operation sequences and clock readings
//! (B11 in TESTS.md). Oracles: no panic anywhere; GCRA equals the I.371 reference and satisfies
//! the arrival curve; the fixed window equals its reference in any time order; the sliding log
//! never holds more than `calls` in any window; the counter and the log equal their references
//! while time is monotone; the keyed store agrees with its sequential reference model
//! (`tests/it/common/store_model.rs`) on histories of checks, floods, sweeps and resets.
//!
//! ```text
//! cd fluxrate-core/fuzz && cargo +nightly fuzz run algorithms -- -max_total_time=60
//! ```
#![no_main]

#[path = "../../tests/it/common/refs.rs"]
mod refs;
#[path = "../../tests/it/common/store_model.rs"]
mod store_model;

use fluxrate_core::{
    OverflowPolicy,
    Algorithm, Clock, FixedWindow, FixedWindowState, GcraState, LeakyBucket, ManualClock, Quota,
    RateAlgorithm, RateLimiter, Refusal, SlidingLog, SlidingWindowCounter,
    SlidingWindowCounterState, TokenBucket,
};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

/// Reads fixed-size little-endian numbers from the input, zero once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mode = b.u8();
    // Mostly small configurations (where the references are fast), sometimes extreme ones.
    let (calls, period_ns, burst) = if mode & 0x80 == 0 {
        (
            u64::from(b.u8() % 16) + 1,
            u64::from(b.u16()) + 1,
            u64::from(b.u8() % 16),
        )
    } else {
        (b.u64(), b.u64(), b.u64())
    };
    let start = if mode & 0x40 == 0 { 0 } else { b.u64() };
    let quota = Quota::new(calls, Duration::from_nanos(period_ns)).with_burst(burst);
    let mut ops = Vec::new();
    while !b.is_empty() && ops.len() < 200 {
        let dt = b.u32();
        let n = u64::from(b.u8() % 20);
        ops.push((dt, n));
    }
    // Timestamps: forward by dt, or back by dt/4 when its top bit is set.
    let times: Vec<(u64, u64)> = ops
        .iter()
        .scan(start, |now, &(dt, n)| {
            let step = u64::from(dt & 0x7fff_ffff);
            *now = if dt & 0x8000_0000 != 0 {
                now.saturating_sub(step / 4)
            } else {
                now.saturating_add(step)
            };
            Some((*now, n))
        })
        .collect();
    let monotone = times.windows(2).all(|w| w[0].0 <= w[1].0);

    match mode % 5 {
        0 => {
            let Ok(tb) = TokenBucket::new(&quota) else {
                return;
            };
            let s = GcraState::new();
            let t = tb.emission_interval_ns();
            let mut vsa = refs::Vsa::new(t, tb.burst());
            let mut admitted = Vec::new();
            for &(now, n) in &times {
                let n = n.max(1);
                let got = tb.check(&s, now, n);
                let want = vsa.step(now, n);
                match (got, want) {
                    (Ok(_), refs::RefDecision::Ok) => admitted.push((now, n)),
                    (
                        Err(Refusal::Limited { retry_after, .. }),
                        refs::RefDecision::NotUntil(at),
                    ) => {
                        // Saturated only where the exact time does not fit in u64.
                        let exact = at - u128::from(now);
                        assert!(u128::from(retry_after) == exact || retry_after == u64::MAX);
                    }
                    (Err(Refusal::Never), refs::RefDecision::Never) => {}
                    // At the very end of time the implementation refuses rather than wrap.
                    (
                        Err(Refusal::Limited {
                            retry_after: u64::MAX,
                            ..
                        }),
                        refs::RefDecision::Ok,
                    ) => {
                        assert!(u128::from(vsa.tat) > u128::from(u64::MAX));
                        return;
                    }
                    (got, want) => panic!("at {now} n={n}: {got:?} vs {want:?}"),
                }
            }
            if admitted.len() < 120 {
                refs::check_arrival_curve(&admitted, t, tb.burst());
            }
        }
        1 => {
            let Ok(lb) = LeakyBucket::new(&quota) else {
                return;
            };
            let s = GcraState::new();
            let mut reference = refs::ShaperRef::new(lb.emission_interval_ns(), lb.capacity());
            for &(now, n) in &times {
                let n = n.max(1);
                let got = lb.check(&s, now, n).ok().map(|a| a.delay().as_nanos());
                let want = reference.step(now, n);
                if want.is_some_and(|d| {
                    reference.tat > u128::from(u64::MAX) || d > u128::from(u64::MAX)
                }) {
                    return;
                }
                assert_eq!(got, want, "at {now} n={n}");
            }
        }
        2 => {
            let Ok(fw) = FixedWindow::new(&quota) else {
                return;
            };
            let s = FixedWindowState::new();
            let mut r = refs::FixedRef::new(calls, period_ns);
            for &(now, n) in &times {
                let n = n.max(1);
                let got = fw.check(&s, now, n).is_ok();
                let want = r.step(now, n);
                if got != want {
                    // Only the last window before u64::MAX ns may differ (refused, never wrapped).
                    assert!(
                        !got && now > u64::MAX - period_ns.saturating_mul(2),
                        "at {now} n={n}"
                    );
                    return;
                }
            }
        }
        3 => {
            let Ok(swc) = SlidingWindowCounter::new(&quota) else {
                return;
            };
            let s = SlidingWindowCounterState::new();
            let mut r = refs::SwcRef::new(calls, period_ns);
            for &(now, n) in &times {
                let n = n.max(1);
                let got = swc.check(&s, now, n).is_ok();
                if monotone && now < u64::MAX / 2 {
                    assert_eq!(got, r.step(now, n), "at {now} n={n}");
                }
                let _ = swc.peek(&s, now);
            }
        }
        _ => {
            let Ok(log) = SlidingLog::new(&quota) else {
                return;
            };
            let s = log.new_state();
            let mut r = refs::LogRef::new(calls, period_ns);
            let mut admitted = Vec::new();
            for &(now, n) in &times {
                let n = n.max(1);
                let got = log.check(&s, now, n).is_ok();
                if got {
                    admitted.push((now, n));
                }
                if monotone && now < u64::MAX / 2 {
                    assert_eq!(got, r.step(now, n), "at {now} n={n}");
                }
            }
            if period_ns < u64::MAX / 2 {
                assert!(refs::max_in_half_open_window(&admitted, period_ns) <= calls);
            }
        }
    }

    // The limiter API on the same input: keyed, with a manual clock following the timestamps.
    for alg in Algorithm::ALL {
        let clock = ManualClock::new();
        let Ok(l) = RateLimiter::builder(quota)
            .algorithm(alg)
            .clock(clock.clone())
            .keyed::<u8>()
            .max_keys(4)
            .build()
        else {
            continue;
        };
        for (i, &(now, n)) in times.iter().enumerate().take(50) {
            clock.set(now);
            let key = (i % 7) as u8;
            let _ = l.check_key_n(&key, n);
            let _ = l.peek_key(&key);
            if i % 13 == 0 {
                l.sweep();
            }
            let _ = l.blocking_acquire_key_n(&key, n, Duration::from_nanos(u64::from(data.len() as u32)));
        }
        let _ = clock.now();
    }

    // The keyed store against its sequential model (tests/it/common/store_model.rs), on the same
    // bytes read as a history: a small max_keys, either overflow policy, checks, floods of new
    // keys, time steps, sweeps and resets. Any disagreement is a bug (a new key refused room
    // while a held key is idle, a live key forgotten, a wrong retry-after).
    let mut b = Bytes(data);
    let mode = b.u8();
    let max_keys = usize::from(mode & 0x0f) + 1;
    let overflow = if mode & 0x10 == 0 { OverflowPolicy::Reject } else { OverflowPolicy::Shared };
    let (calls, burst) = (u64::from(b.u8() % 4) + 1, u64::from(b.u8() % 4) + 1);
    let period = 1_000_000u64;
    let key_space = (max_keys as u32) * 2 + 2;
    let mut history = Vec::new();
    while !b.is_empty() && history.len() < 300 {
        let (kind, arg) = (b.u8(), b.u16());
        history.push(match kind % 16 {
            0..=4 => store_model::Op::Check {
                key: u32::from(arg) % key_space,
                n: u64::from(kind / 16) % (burst + 2),
            },
            5 | 6 => store_model::Op::Refund {
                key: u32::from(arg) % key_space,
                n: u64::from(kind / 16) % (burst + 2),
            },
            7 => store_model::Op::Flood {
                first: u32::from(arg) % key_space,
                count: u32::from(kind / 16) % (max_keys as u32 + 4) + 1,
            },
            8..=11 => store_model::Op::Advance {
                ns: match kind / 16 % 4 {
                    0 => 1,
                    1 => period / 4,
                    2 => period,
                    _ => u64::from(arg) * 64,
                },
            },
            12 => store_model::Op::Sweep,
            13 | 14 => store_model::Op::ResetKey {
                key: u32::from(arg) % key_space,
            },
            _ => store_model::Op::ResetAll,
        });
    }
    let per_key_stats = mode & 0x20 != 0;
    if let Err(e) =
        store_model::run_history(max_keys, overflow, per_key_stats, calls, period, burst, &history)
    {
        panic!("store model: {e} (max_keys {max_keys}, {overflow:?}, calls {calls}, burst {burst})");
    }
});
