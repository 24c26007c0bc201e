//! Shared test support: the reference models and the proptest configuration.
#![allow(dead_code, unreachable_pub)]

mod refs;
mod store_model;

#[allow(unused_imports)]
pub use refs::*;
#[allow(unused_imports)]
pub use store_model::*;

/// Proptest configuration: `FLUXRATE_PROPTEST_CASES` overrides the number of cases.
pub fn cases(default: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("FLUXRATE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::test_runner::Config {
        failure_persistence: None,
        ..proptest::test_runner::Config::with_cases(cases)
    }
}

/// A token bucket with emission interval exactly `t` ns and burst `b`.
pub fn bucket(t: u64, b: u64) -> fluxrate_core::TokenBucket {
    let q = quota(1, t).with_burst(b);
    let tb = fluxrate_core::TokenBucket::new(&q).unwrap();
    assert_eq!(tb.emission_interval_ns(), t);
    tb
}

/// `calls` per `period_ns` nanoseconds.
pub fn quota(calls: u64, period_ns: u64) -> fluxrate_core::Quota {
    fluxrate_core::Quota::new(calls, std::time::Duration::from_nanos(period_ns))
}

/// Marsaglia's xorshift64 from a non-zero `seed`: the tests' one deterministic generator.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    assert_ne!(seed, 0, "xorshift needs a non-zero seed");
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
