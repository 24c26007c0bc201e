//! B9–B13: bad inputs, arithmetic at the edges, long uptimes, waits with odd timeouts.
//! Run in both profiles: `cargo test --test it -- config::` and `cargo test --release --test it -- config::`.

use fluxrate_core::{
    AcquireError, Algorithm, Clock, ConfigError, Denied, FixedWindow, FixedWindowState, GcraState,
    LeakyBucket, ManualClock, Quota, RateAlgorithm, RateLimiter, Refusal, SlidingLog,
    SlidingWindowCounter, SlidingWindowCounterState, TokenBucket,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const YEAR: u64 = 365 * 86_400;

/// B9: the constructor matrix. Every combination is either a typed error or a limiter whose
/// greedy admissions over a long fake horizon stay within P1 and whose rate is ≤ configured.
#[test]
fn constructor_matrix_never_panics_nor_fails_open() {
    let rates = [
        0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        1e-12,
        1.0,
        2.5,
        1e9,
        1e9 + 1.0,
        u32::MAX as f64,
    ];
    let mut rate_quotas = Vec::new();
    for r in rates {
        match Quota::per_second_f64(r) {
            Ok(q) => rate_quotas.push(q),
            Err(e) => assert!(
                matches!(
                    e,
                    ConfigError::InvalidFloat { .. }
                        | ConfigError::PeriodTooLong
                        | ConfigError::IntervalTooSmall { .. }
                ),
                "rate {r}: {e:?}"
            ),
        }
    }
    // 1/s, 2.5/s and 1e9/s are valid; the rest are errors.
    assert_eq!(rate_quotas.len(), 3, "{rate_quotas:?}");

    let periods = [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_secs(585 * YEAR),
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(1),
    ];
    let calls = [0u64, 1, 3, 1_000_000_000, u64::from(u32::MAX)];
    let bursts = [None, Some(0u64), Some(1), Some(u64::from(u32::MAX))];
    let mut built = 0;
    let mut refused = 0;
    for &p in &periods {
        for &c in &calls {
            for &b in &bursts {
                for alg in Algorithm::ALL {
                    let mut q = Quota::new(c, p);
                    if let Some(b) = b {
                        q = q.with_burst(b);
                    }
                    let clock = ManualClock::new();
                    match RateLimiter::builder(q)
                        .algorithm(alg)
                        .clock(clock.clone())
                        .build()
                    {
                        Ok(l) => {
                            built += 1;
                            greedy_stays_within_bound(&l, &clock, q, alg);
                        }
                        Err(e) => {
                            refused += 1;
                            assert!(!e.to_string().is_empty());
                            assert_eq!(e.to_string(), e.to_string().to_lowercase(), "{e}");
                        }
                    }
                }
            }
        }
    }
    for q in rate_quotas {
        for alg in Algorithm::ALL {
            let clock = ManualClock::new();
            if let Ok(l) = RateLimiter::builder(q)
                .algorithm(alg)
                .clock(clock.clone())
                .build()
            {
                built += 1;
                greedy_stays_within_bound(&l, &clock, q, alg);
            }
        }
    }
    println!("constructor matrix: {built} built, {refused} refused, 0 panics, 0 fail-open");
    assert!(built > 0 && refused > 0);
}

/// Drive a greedy client (it asks for everything available, and retries exactly at
/// retry-after) over a horizon of many periods; the count must respect the algorithm's bound.
fn greedy_stays_within_bound(
    l: &RateLimiter<fluxrate_core::NotKeyed, ManualClock>,
    clock: &ManualClock,
    q: Quota,
    alg: Algorithm,
) {
    let period = u64::try_from(q.period().as_nanos()).unwrap();
    let t = period.div_ceil(q.calls());
    let horizon = period.saturating_mul(50).min(u64::MAX / 4);
    let mut admitted: u128 = 0;
    let mut steps = 0;
    while clock.now() <= horizon && steps < 2_000 {
        steps += 1;
        let avail = l.peek().remaining().max(1);
        match l.check_n(avail) {
            Ok(_) => admitted += u128::from(avail),
            Err(Denied::Limited(e)) => clock.advance(e.retry_after()),
            Err(Denied::Never(e)) => panic!("{alg}: {avail} available but never: {e}"),
        }
    }
    let elapsed = u128::from(clock.now());
    let windows = elapsed / u128::from(period) + 1;
    let bound = match alg {
        Algorithm::TokenBucket | Algorithm::LeakyBucket => {
            u128::from(q.burst()) + elapsed / u128::from(t)
        }
        // Window algorithms: at most `calls` per aligned window.
        _ => u128::from(q.calls()) * (windows + 1),
    };
    assert!(
        admitted <= bound,
        "{alg} {q}: admitted {admitted} > bound {bound} over {elapsed} ns"
    );
}

/// B10: runtime arithmetic at the edges never panics, never wraps, never lowers a TAT.
#[test]
fn runtime_overflow_is_refused_not_wrapped() {
    let quotas = [
        Quota::new(1, Duration::from_nanos(1)),
        Quota::new(1, Duration::from_nanos(u64::MAX / 4)).with_burst(3),
        Quota::new(1, Duration::from_nanos(u64::MAX)).with_burst(1),
        Quota::new(1_000, Duration::from_secs(1)).with_burst(u64::from(u32::MAX)),
    ];
    let tats = [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX];
    let nows = [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX];
    for q in quotas {
        let Ok(tb) = TokenBucket::new(&q) else {
            continue;
        };
        let lb = LeakyBucket::new(&q).unwrap();
        let b = tb.burst();
        for &tat in &tats {
            for &now in &nows {
                for n in [1, b, u64::from(u32::MAX), u64::MAX] {
                    for alg in [&tb as &dyn RateAlgorithm<State = GcraState>, &lb] {
                        let s = GcraState::from_tat(tat);
                        match alg.check(&s, now, n) {
                            Ok(_) => assert!(s.tat() > tat || (tat == 0 && s.tat() > 0)),
                            Err(_) => assert_eq!(s.tat(), tat),
                        }
                        let _ = alg.peek(&s, now);
                        let _ = alg.reserve(&s, now, n.min(b), u64::MAX);
                        assert!(s.tat() >= tat, "TAT went down");
                    }
                }
            }
        }
    }
    for q in [
        Quota::new(1, Duration::from_nanos(1)),
        Quota::new(7, Duration::from_nanos(u64::MAX)),
        Quota::new(1_000, Duration::from_secs(1)),
    ] {
        let fw = FixedWindow::new(&q).unwrap();
        let swc = SlidingWindowCounter::new(&q).unwrap();
        let log = SlidingLog::new(&q).unwrap();
        for &raw in &[0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            for &now in &nows {
                for n in [1, q.calls(), u64::MAX] {
                    let s = FixedWindowState::from_raw(raw);
                    if fw.check(&s, now, n).is_ok() {
                        assert!(s.raw() > raw || raw == 0, "fixed window went back");
                    }
                    let _ = fw.peek(&s, now);
                    let _ = fw.idle_at(&s, now);
                    let s = SlidingWindowCounterState::from_raw(raw);
                    let _ = swc.check(&s, now, n);
                    let _ = swc.peek(&s, now);
                    let _ = swc.idle_at(&s, now);
                    let s = log.new_state();
                    let _ = log.check(&s, now, n);
                    let _ = log.check(&s, now, n);
                    let _ = log.peek(&s, now);
                    let _ = log.idle_at(&s, now);
                }
            }
        }
    }
}

/// A clock that returns a fixed reading.
struct FixedReading(AtomicU64);

impl Clock for FixedReading {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// B11: readings at the end of time (2^64 − 1 ns) and after a 2^63 ns offset: no panic, and
/// never "admitted forever".
#[test]
fn readings_at_the_end_of_time_neither_panic_nor_admit_forever() {
    for alg in Algorithm::ALL {
        let l = RateLimiter::builder(Quota::per_second(5))
            .algorithm(alg)
            .clock(FixedReading(AtomicU64::new(1 << 63)))
            .build()
            .unwrap();
        let admitted = (0..100).filter(|_| l.allow()).count();
        assert_eq!(admitted, 5, "{alg} at 2^63 ns");

        let l = RateLimiter::builder(Quota::per_second(5))
            .algorithm(alg)
            .clock(FixedReading(AtomicU64::new(u64::MAX)))
            .build()
            .unwrap();
        let admitted = (0..100).filter(|_| l.allow()).count();
        assert!(
            admitted <= 5,
            "{alg} admitted {admitted} at the end of time"
        );
        let _ = l.peek();
        assert!(l.blocking_acquire(Duration::from_millis(1)).is_err() || admitted < 5);
    }
}

/// B13: odd timeouts. ZERO is a try; MAX does not overflow; a deadline shorter than the wait is
/// refused at once without consuming; n above capacity is refused at once.
#[test]
fn waits_with_odd_timeouts() {
    for alg in Algorithm::ALL {
        let clock = ManualClock::new();
        let l = RateLimiter::builder(Quota::per_second(2))
            .algorithm(alg)
            .clock(clock.clone())
            .build()
            .unwrap();
        // ZERO behaves as a try (the leaky bucket queues with no wait only while the slot is now).
        assert!(l.blocking_acquire(Duration::ZERO).is_ok(), "{alg}");
        let before = l.peek();
        let t0 = clock.now();
        // A 1 ns deadline cannot be met: refused at once, nothing consumed, no time passed.
        let mut refused = 0;
        for _ in 0..3 {
            match l.blocking_acquire(Duration::from_nanos(1)) {
                Ok(_) => {}
                Err(e) => {
                    refused += 1;
                    assert!(e.retry_after() > Duration::from_nanos(1));
                    assert_eq!(clock.now(), t0, "{alg}: a refused acquire waited");
                }
            }
        }
        assert!(refused > 0, "{alg}");
        let _ = before;
        // n above capacity: at once.
        assert!(matches!(
            l.blocking_acquire_n(3, Duration::MAX),
            Err(AcquireError::Never(_))
        ));
        assert_eq!(clock.now(), t0);
        // MAX: waits (on the manual clock, instantly) and succeeds.
        let a = l.blocking_acquire(Duration::MAX).unwrap();
        assert!(clock.now() >= t0, "{alg} {a:?}");
        // wait() never fails for a unit request.
        l.blocking_wait();
        assert!(matches!(l.blocking_wait_n(3), Err(e) if e.capacity() == 2));
    }
}

/// B13 with the real clock: immediate refusals really are immediate, and a short wait works.
#[test]
fn real_clock_refusals_do_not_sleep() {
    let l = RateLimiter::builder(Quota::per_second(1)).build().unwrap();
    assert!(l.blocking_acquire(Duration::ZERO).is_ok());
    let start = std::time::Instant::now();
    assert!(l.blocking_acquire(Duration::from_millis(10)).is_err());
    assert!(matches!(l.check_n(2), Err(Denied::Never(_))));
    // Generous bound: the point is that nothing slept for the 1 s wait.
    assert!(start.elapsed() < Duration::from_millis(500));

    let fast = RateLimiter::builder(Quota::new(1, Duration::from_millis(20)))
        .build()
        .unwrap();
    fast.blocking_acquire(Duration::ZERO).unwrap();
    let start = std::time::Instant::now();
    fast.blocking_acquire(Duration::from_secs(5)).unwrap();
    // The default clock stamps the first admission up to its lag early (a 20 ms interval is
    // longer than the lag, so the limit keeps the coarse readings).
    let lag = Duration::from_nanos(fluxrate_core::CoarseClock::new().lag());
    assert!(start.elapsed() + lag >= Duration::from_millis(15));
}

/// The refusal carries the context HTTP needs, and errors display in lowercase.
#[test]
fn refusals_carry_retry_after_and_display_lowercase() {
    let clock = ManualClock::new();
    let l = RateLimiter::builder(Quota::per_minute(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    l.check().unwrap();
    clock.advance(Duration::from_millis(1_500));
    let e = l.check().unwrap_err();
    assert_eq!(e.retry_after(), Duration::from_millis(58_500));
    assert_eq!(e.retry_after_secs(), 59);
    assert_eq!(e.limit(), 1);
    assert_eq!(e.decided_at(), 1_500_000_000);
    assert_eq!(e.to_string(), "rate limited, retry after 58.5s");
    let never = l.check_n(2).unwrap_err();
    assert_eq!(
        never.to_string(),
        "request of 2 exceeds the capacity of 1 and can never succeed"
    );
    assert_eq!(never.retry_after(), None);
    assert!(matches!(
        TokenBucket::new(&Quota::per_second(1))
            .unwrap()
            .check(&GcraState::new(), 0, 2),
        Err(Refusal::Never)
    ));
}

#[test]
fn zero_max_keys_is_a_config_error() {
    let err = RateLimiter::builder(Quota::per_second(1))
        .keyed::<u64>()
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::ZeroMaxKeys);
}

#[test]
fn algorithm_limits_are_typed_errors() {
    let max = fluxrate_core::MAX_COUNTER_CALLS;
    let e = SlidingWindowCounter::new(&Quota::per_second(max + 1)).unwrap_err();
    assert_eq!(
        e,
        ConfigError::TooManyCalls {
            algorithm: Algorithm::SlidingWindowCounter,
            calls: max + 1,
            max,
        }
    );
    assert_eq!(
        e.to_string(),
        format!(
            "sliding window counter supports at most {max} calls per window, got {}",
            max + 1
        )
    );
    let max = fluxrate_core::MAX_LOG_CALLS;
    let e = SlidingLog::new(&Quota::per_second(max + 1)).unwrap_err();
    assert_eq!(
        e,
        ConfigError::TooManyCalls {
            algorithm: Algorithm::SlidingLog,
            calls: max + 1,
            max,
        }
    );
    assert_eq!(
        e.to_string(),
        format!(
            "sliding log supports at most {max} calls per window, got {}",
            max + 1
        )
    );
    assert_eq!(
        TokenBucket::new(&Quota::per_second(1).with_burst(0)),
        Err(ConfigError::ZeroBurst)
    );
    assert_eq!(
        LeakyBucket::new(&Quota::per_second(1).with_burst(0)),
        Err(ConfigError::ZeroCapacity)
    );
    assert!(matches!(
        TokenBucket::new(&Quota::new(1, Duration::from_secs(YEAR * 500)).with_burst(100)),
        Err(ConfigError::BurstTooLarge { burst: 100 })
    ));
}

/// An error and its `source()` chain, each `Display` once: what an error-chain printer (anyhow's
/// `{:#}`, a tracing layer) shows.
fn chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        out.push(s.to_string());
        next = s.source();
    }
    out
}

/// Asserts that no message of `e`'s chain repeats one printed before it.
fn assert_each_message_once(e: &dyn std::error::Error) {
    let chain = chain(e);
    for (i, m) in chain.iter().enumerate() {
        for earlier in &chain[..i] {
            assert!(
                !earlier.contains(m.as_str()),
                "{m:?} printed twice in {chain:?}"
            );
        }
    }
}

/// The wrapper errors (`Denied`, `AcquireError`) are transparent: their `Display` is the inner
/// error's, and their `source()` the inner error's source, so a chain shows each message once.
#[test]
fn error_chains_show_each_message_once() {
    let clock = ManualClock::new();
    let l = RateLimiter::builder(Quota::per_second(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    l.check().unwrap();
    let limited = l.check_n(1).unwrap_err();
    let never = l.check_n(2).unwrap_err();
    let timeout = l.blocking_acquire_n(1, Duration::ZERO).unwrap_err();
    let acquire_never = l.blocking_acquire_n(2, Duration::MAX).unwrap_err();
    assert!(matches!(limited, Denied::Limited(_)));
    assert!(matches!(never, Denied::Never(_)));
    assert!(matches!(timeout, AcquireError::Timeout(_)));
    assert!(matches!(acquire_never, AcquireError::Never(_)));
    let inner: [(&dyn std::error::Error, String); 4] = [
        (&limited, l.check().unwrap_err().to_string()),
        (&never, l.blocking_wait_n(2).unwrap_err().to_string()),
        (
            &timeout,
            l.blocking_acquire(Duration::ZERO).unwrap_err().to_string(),
        ),
        (
            &acquire_never,
            l.blocking_wait_n(2).unwrap_err().to_string(),
        ),
    ];
    for (e, inner) in inner {
        assert_eq!(chain(e), [inner], "transparent: the inner message, once");
        assert_each_message_once(e);
    }
    let leaves: [&dyn std::error::Error; 4] = [
        &l.check().unwrap_err(),
        &l.blocking_wait_n(2).unwrap_err(),
        &l.blocking_acquire(Duration::ZERO).unwrap_err(),
        &RateLimiter::builder(Quota::per_second(0))
            .build()
            .unwrap_err(),
    ];
    for e in leaves {
        assert_each_message_once(e);
    }
}
