//! loom models of fluxrate's atomic state machines live in `tests/models.rs`; build them with
//! `RUSTFLAGS="--cfg fluxrate_loom"` (see `README.md` in this folder).
//!
//! This library holds the deliberately broken implementations ("mutants") that the models
//! must catch, proving that the models can fail.

#[cfg(fluxrate_loom)]
pub mod mutants;
