//! The core's pure-logic tests, one binary: conformance against reference models, the
//! bounded-exhaustive small domain, the window bounds, clock faults, configuration edges, the
//! effective window and the keyed store's lifecycle against its model. The tests that need a
//! process of their own are apart: `tests/keyed.rs` (a counting global allocator) and
//! `tests/concurrency.rs` (real threads). `tests/README.md` maps each tested property to its
//! tests.

mod common;

mod allow;
mod clock_faults;
mod config;
mod effective_window;
mod exhaustive;
mod gcra;
mod lagging_clock;
mod store;
mod windows;
