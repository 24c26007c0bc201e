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
