//! loom models of fluxrate's atomic state machines live in `tests/`; build them with
//! `RUSTFLAGS="--cfg fluxrate_loom"` (see `README.md` in this folder).
