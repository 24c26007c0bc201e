//! `allow` (the yes/no fast path that skips metadata) decides exactly like `check`, and leaves
//! the same state, for every algorithm, direct and keyed, in any time order.

use crate::common::cases;
use fluxrate_core::{Algorithm, ManualClock, Quota, RateLimiter};
use proptest::prelude::*;

proptest! {
    #![proptest_config(cases(500))]

    #[test]
    fn allow_decides_like_check(
        alg in prop::sample::select(Algorithm::ALL.to_vec()),
        calls in 1u64..8,
        period in 8u64..64,
        ops in prop::collection::vec((0u64..100, any::<bool>(), 0u8..3, 0u64..4), 1..200),
    ) {
        // A short period, so that traces land right at the edges where decisions flip.
        let q = Quota::new(calls, std::time::Duration::from_nanos(period));
        let (c1, c2) = (ManualClock::new(), ManualClock::new());
        let a = RateLimiter::builder(q).algorithm(alg).clock(c1.clone()).build().unwrap();
        let b = RateLimiter::builder(q).algorithm(alg).clock(c2.clone()).build().unwrap();
        let ka = RateLimiter::builder(q).algorithm(alg).clock(c1.clone()).keyed::<u8>().build().unwrap();
        let kb = RateLimiter::builder(q).algorithm(alg).clock(c2.clone()).keyed::<u8>().build().unwrap();
        let mut now = 1_000u64;
        for (dt, back, key, n) in ops {
            now = if back { now.saturating_sub(dt / 8) } else { now + dt };
            c1.set(now);
            c2.set(now);
            if n == 1 {
                prop_assert_eq!(a.allow(), b.check().is_ok(), "{} at {}", alg, now);
                prop_assert_eq!(ka.allow_key(&key), kb.check_key(&key).is_ok());
            } else {
                // Weighted requests go through check_n on both, keeping the states in step.
                prop_assert_eq!(a.check_n(n).is_ok(), b.check_n(n).is_ok());
                prop_assert_eq!(ka.check_key_n(&key, n).is_ok(), kb.check_key_n(&key, n).is_ok());
            }
            prop_assert_eq!(a.peek(), b.peek());
            prop_assert_eq!(ka.peek_key(&key), kb.peek_key(&key));
        }
        prop_assert_eq!(a.stats(), b.stats());
    }
}
