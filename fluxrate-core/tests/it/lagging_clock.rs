//! A clock whose readings lag (like the default `CoarseClock`): a refusal near its retry time
//! is decided again on the precise reading, so a request that waited its retry-after is
//! admitted; the lag loosens a limit by at most `⌈lag / T⌉`; a limit the lag would loosen more
//! reads the precise clock on every decision.

use crate::common::{
    check_arrival_curve, max_in_half_open_window, max_per_aligned_window, quota, xorshift,
};
use fluxrate_core::{Algorithm, Clock, Denied, Quota, RateLimiter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TICK: u64 = 4_000_000;

/// True time in an atomic; `now` is the last tick but one (lagging by one to two ticks, as the
/// kernel's coarse clock was seen to), `now_precise` the true time, the lag two ticks.
/// `sleep_until` moves true time to the deadline, and panics if a wait spins.
#[derive(Clone, Default)]
struct LaggingClock {
    t: Arc<AtomicU64>,
    sleeps: Arc<AtomicU64>,
}

impl LaggingClock {
    fn at(t: u64) -> Self {
        let c = Self::default();
        c.set(t);
        c
    }

    fn set(&self, t: u64) {
        self.t.store(t, Ordering::SeqCst);
    }

    fn true_now(&self) -> u64 {
        self.t.load(Ordering::SeqCst)
    }
}

impl Clock for LaggingClock {
    fn now(&self) -> u64 {
        (self.true_now().saturating_sub(TICK) / TICK) * TICK
    }

    fn lag(&self) -> u64 {
        2 * TICK
    }

    fn now_precise(&self) -> u64 {
        self.true_now()
    }

    fn sleep_until(&self, deadline: u64) {
        assert!(
            self.sleeps.fetch_add(1, Ordering::SeqCst) < 1_000,
            "a blocking wait spun on a lagging clock"
        );
        self.t.fetch_max(deadline, Ordering::SeqCst);
    }
}

fn limiter(
    alg: Algorithm,
    q: Quota,
    clock: &LaggingClock,
) -> RateLimiter<fluxrate_core::NotKeyed, LaggingClock> {
    RateLimiter::builder(q)
        .algorithm(alg)
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// One client at random true times, every weight up to the capacity: each refusal names an
/// instant (`taken_at + retry_after`); the same request sent at that instant is admitted, by
/// `check_n`, `check_key_n` and `allow` alike (without the precise decision, the reading there
/// lags and it was refused).
#[test]
fn a_request_that_waited_its_retry_after_is_admitted() {
    // 3 per 100 ms: T = 33.3 ms, not a multiple of the tick, longer than the lag.
    let q = quota(3, 100_000_000);
    for alg in Algorithm::ALL {
        let mut next = xorshift(0x9E37_79B9 ^ alg as u64);
        for via in ["check", "key", "allow"] {
            let clock = LaggingClock::at(1_000_000_000);
            let direct = limiter(alg, q, &clock);
            let keyed = RateLimiter::builder(q)
                .algorithm(alg)
                .clock(clock.clone())
                .keyed::<u8>()
                .build()
                .unwrap();
            // The buckets keep the coarse readings (T is longer than the lag); a window's
            // count depends on which side of a boundary a request falls, so the windows
            // read the precise clock.
            let coarse = matches!(alg, Algorithm::TokenBucket | Algorithm::LeakyBucket);
            assert_eq!(
                format!("{direct:?}").contains("precise_clock: false"),
                coarse,
                "{direct:?}"
            );
            let check = |n: u64| match via {
                "key" => keyed.check_key_n(&7, n),
                _ => direct.check_n(n),
            };
            let mut refusals = 0;
            for _ in 0..300 {
                clock.set(clock.true_now() + next() % 20_000_000);
                let n = 1 + next() % 3;
                let Err(Denied::Limited(refused)) = check(n) else {
                    continue;
                };
                refusals += 1;
                let instant = refused.decided_at() + refused.retry_after().as_nanos() as u64;
                assert!(instant > clock.now(), "{alg} {via}: the instant is ahead");
                clock.set(instant);
                let admitted = match (via, n) {
                    ("allow", 1) => direct.allow(),
                    ("key", 1) => keyed.allow_key(&7),
                    _ => check(n).is_ok(),
                };
                assert!(
                    admitted,
                    "{alg} via {via}: n = {n} refused at the instant its retry-after named"
                );
            }
            assert!(refusals > 50, "{alg} {via}: only {refusals} refusals");
        }
    }
}

/// A blocking acquire on a lagging clock sleeps until the instant and is admitted there,
/// without spinning on readings that lag behind it (the clock panics after 1,000 sleeps).
#[test]
fn a_blocking_acquire_on_a_lagging_clock_wakes_admitted() {
    for alg in Algorithm::ALL {
        let clock = LaggingClock::at(1_000_000_000);
        let l = limiter(alg, quota(3, 100_000_000), &clock);
        for _ in 0..20 {
            let before = clock.true_now();
            let a = l.blocking_acquire(Duration::from_secs(1)).unwrap();
            assert!(a.admitted_at() <= clock.true_now(), "{alg}");
            assert!(
                // The sliding window counter may wait a window and a third.
                clock.true_now() - before <= 200_000_000,
                "{alg}: waited too long"
            );
        }
        assert!(
            clock.sleeps.load(Ordering::SeqCst) <= 40,
            "{alg}: too many sleeps"
        );
    }
}

/// With readings lagging by up to 2 ticks, a token bucket (T longer than the lag) admits at
/// most `⌈lag / T⌉` = 1 more than `b + ⌊len / T⌋` in any window of true time.
#[test]
fn a_lagging_clock_loosens_a_bucket_by_at_most_its_lag() {
    let (t, b) = (10_000_000u64, 4u64);
    let clock = LaggingClock::at(1_000_000_000);
    let l = limiter(Algorithm::TokenBucket, quota(1, t).with_burst(b), &clock);
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    let mut admitted = Vec::new();
    for _ in 0..20_000 {
        clock.set(clock.true_now() + next() % 3_000_000);
        if l.allow() {
            admitted.push((clock.true_now(), 1));
        }
    }
    let extra = (2 * TICK).div_ceil(t);
    assert_eq!(extra, 1);
    check_arrival_curve(&admitted, t, b + extra);
    assert!(admitted.len() > 2_500, "{}", admitted.len());
}

/// A limit that the lag would loosen by more than one request and 1 % of its capacity (1,000
/// per second, a burst of 1: `⌈8 ms / 1 ms⌉` = 8) reads the precise clock: requests 1 ms
/// apart are all admitted (on the lagging readings all but one in a tick would be refused),
/// and no two within 1 ms are.
#[test]
fn a_limit_faster_than_the_lag_reads_the_precise_clock() {
    let clock = LaggingClock::at(1_000_000_000);
    let strict = quota(1_000, 1_000_000_000).with_burst(1);
    for alg in [Algorithm::TokenBucket, Algorithm::LeakyBucket] {
        let l = limiter(alg, strict, &clock);
        assert!(format!("{l:?}").contains("precise_clock: true"), "{l:?}");
        for _ in 0..50 {
            clock.set(clock.true_now() + 1_000_000);
            assert!(l.allow(), "{alg}");
            clock.set(clock.true_now() + 999_999);
            assert!(!l.allow(), "{alg}");
            clock.set(clock.true_now() + 1);
            assert!(l.check().is_ok(), "{alg}");
        }
    }
    // A burst of 1,000 absorbs 8 extra (< 1 %): the coarse readings are kept.
    let roomy = limiter(Algorithm::TokenBucket, quota(1_000, 1_000_000_000), &clock);
    assert!(
        format!("{roomy:?}").contains("precise_clock: false"),
        "{roomy:?}"
    );
}

/// A lagging reading can put a window's whole quota on the wrong side of a boundary (the fixed
/// window) or of an entry's expiry (the sliding log): 3 per 100 ms admitted 5 within 100 ms
/// of true time, and a capacity of 1 with a window shorter than the lag, which it spans, 3 in
/// one window. So the window algorithms read the precise clock, whatever their quota, and hold
/// their exact bounds in true time on a lagging clock.
#[test]
fn window_algorithms_hold_their_bounds_in_true_time() {
    // 3 per 100 ms, and 1 per 5 ms (a window shorter than the lag, which it spans).
    let cases = [(3u64, 100_000_000u64, 2_000_000), (1, 5_000_000, 300_000)];
    let algorithms = [
        Algorithm::FixedWindow,
        Algorithm::SlidingLog,
        Algorithm::SlidingWindowCounter,
    ];
    for ((calls, period, step), alg) in cases.into_iter().flat_map(|c| algorithms.map(|a| (c, a))) {
        let clock = LaggingClock::at(1_000_000_000);
        let l = limiter(alg, quota(calls, period), &clock);
        let mut next = xorshift(0x5DEE_CE66 ^ alg as u64);
        let mut admitted = Vec::new();
        for _ in 0..20_000 {
            clock.set(clock.true_now() + next() % step);
            if l.allow() {
                admitted.push((clock.true_now(), 1));
            }
        }
        assert!(admitted.len() > 100, "{alg}: {}", admitted.len());
        assert!(format!("{l:?}").contains("precise_clock: true"), "{l:?}");
        let (seen, bound) = match alg {
            Algorithm::FixedWindow => (max_per_aligned_window(&admitted, period), calls),
            Algorithm::SlidingLog => (max_in_half_open_window(&admitted, period), calls),
            // The counter's worst case in any window of one period is 2L − 1.
            _ => (max_in_half_open_window(&admitted, period), 2 * calls - 1),
        };
        assert!(
            seen <= bound,
            "{alg} {calls}/{period}: {seen} admitted within one period (bound {bound})"
        );
    }
}

/// A refusal decided again at the precise reading keeps its waits relative to the reading it
/// reports (`decided_at`, the lagging one), so the instant it names is the true one: a token
/// bucket of 1 per 100 ms admits at the reading 996 ms (true time 1,000 ms, the TAT becomes
/// 1,096 ms); a request at true time 1,095 ms reads 1,088 ms, is refused, is decided again at
/// 1,095 ms and refused again, and must name 1,096 ms, not 1,089 ms.
#[test]
fn a_refined_refusal_names_the_true_instant() {
    let ms = 1_000_000u64;
    for keyed in [false, true] {
        let clock = LaggingClock::at(1_000 * ms);
        let direct = limiter(Algorithm::TokenBucket, quota(1, 100 * ms), &clock);
        let by_key = RateLimiter::builder(quota(1, 100 * ms))
            .clock(clock.clone())
            .keyed::<u8>()
            .build()
            .unwrap();
        let check = || match keyed {
            true => by_key.check_key(&1),
            false => direct.check(),
        };
        let first = check().unwrap();
        assert_eq!(first.admitted_at(), 996 * ms);
        clock.set(1_095 * ms);
        let refused = check().unwrap_err();
        assert_eq!(refused.decided_at(), 1_088 * ms, "keyed: {keyed}");
        assert_eq!(
            refused.decided_at() + refused.retry_after().as_nanos() as u64,
            1_096 * ms,
            "keyed: {keyed}"
        );
    }
}

/// The precise clock is read between two lookups of the key, never while its shard guard is
/// held (DashMap deadlocks on re-entry): a lagging clock whose `now_precise` resets the key
/// (a write on its shard) does not deadlock `allow_key`, `check_key` or `reserve_key`.
#[test]
fn the_precise_reading_is_taken_outside_the_shard_guard() {
    type Keyed = RateLimiter<u8, ReentrantClock>;
    #[derive(Clone, Default)]
    struct ReentrantClock {
        lagging: LaggingClock,
        limiter: Arc<std::sync::OnceLock<Arc<Keyed>>>,
    }
    impl Clock for ReentrantClock {
        fn now(&self) -> u64 {
            self.lagging.now()
        }
        fn lag(&self) -> u64 {
            self.lagging.lag()
        }
        fn now_precise(&self) -> u64 {
            if let Some(l) = self.limiter.get() {
                l.reset_key(&9);
            }
            self.lagging.now_precise()
        }
    }
    let clock = ReentrantClock::default();
    clock.lagging.set(1_000_000_000);
    let l = Arc::new(
        RateLimiter::builder(quota(1, 100_000_000))
            .clock(clock.clone())
            .keyed::<u8>()
            .build()
            .unwrap(),
    );
    assert!(clock.limiter.set(l.clone()).is_ok());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for via in 0..3 {
            assert!(l.allow_key(&9));
            // True time 1 ns before the next emission: the lagging reading refuses within
            // the lag, so the precise clock is read (and resets the key).
            clock
                .lagging
                .set(clock.lagging.true_now() + 100_000_000 - 1);
            let _ = match via {
                0 => l.allow_key(&9),
                1 => l.check_key(&9).is_ok(),
                _ => l.reserve_key(&9, Duration::ZERO).is_ok(),
            };
            clock.lagging.set(clock.lagging.true_now() + 1_000_000_000);
            l.reset_key(&9);
        }
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(20)).is_ok(),
        "deadlock: the precise clock was read under the key's shard guard"
    );
}
