//! Compile-time behaviour of `#[rate_limit]` (G40 in TESTS.md): what compiles, and the error
//! every misuse gets, spanned on the offending token. Snapshots in `ui/fail/*.stderr`; after a
//! deliberate change of a message, regenerate them with `TRYBUILD=overwrite`.
//! Run on one toolchain (the one `rust-version` and CI use): rustc's own wording changes.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
    #[cfg(not(feature = "tokio"))]
    t.compile_fail("tests/ui/fail-no-tokio/*.rs");
}
