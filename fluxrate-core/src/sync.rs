//! The one place atomics come from.
//!
//! Under `--cfg fluxrate_loom` these are loom's model-checked atomics, otherwise `core`'s. The
//! cfg is prefixed because `RUSTFLAGS` reach every crate in the build: a plain `--cfg loom`
//! would also switch loom code on in dependencies that know that name.

#[cfg(fluxrate_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[cfg(not(fluxrate_loom))]
pub(crate) use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use core::cell::Cell;

std::thread_local! {
    static CAS_RETRIES: Cell<u64> = const { Cell::new(0) };
}

/// Count a failed compare-and-swap on this thread (only on the contended path).
#[inline]
pub(crate) fn note_cas_retry() {
    CAS_RETRIES.with(|c| c.set(c.get() + 1));
}

/// Failed compare-and-swaps on the calling thread since it started: stress tests use it to prove
/// that contention actually happened.
#[doc(hidden)]
pub fn cas_retries_on_this_thread() -> u64 {
    CAS_RETRIES.with(Cell::get)
}
