//! The one place atomics come from.
//!
//! Under `--cfg fluxrate_loom` these are loom's model-checked atomics, otherwise `core`'s. The
//! cfg is prefixed because `RUSTFLAGS` reach every crate in the build: a plain `--cfg loom`
//! would also switch loom code on in dependencies that know that name.

#[cfg(fluxrate_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[cfg(not(fluxrate_loom))]
pub(crate) use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
