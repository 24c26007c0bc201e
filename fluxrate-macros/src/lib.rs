//! Procedural macros of `fluxrate`.
//!
//! The `#[rate_limit]` attribute lands here (tracked in its own issue); until then this crate
//! exports nothing, so that the workspace layout is final and the facade can depend on it.
