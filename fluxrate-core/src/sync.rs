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
fn note_cas_retry() {
    CAS_RETRIES.with(|c| c.set(c.get() + 1));
}

/// The one compare-and-swap of every cell: weak, `AcqRel` on success, `Acquire` on failure.
///
/// On failure it counts a retry and returns the current value. Under
/// `--cfg fluxrate_spurious_cas` (a test build) one call in four fails spuriously without
/// trying, as a weak CAS may on LL/SC machines, so that every retry path runs
/// deterministically.
#[inline]
pub(crate) fn cas(atomic: &AtomicU64, current: u64, new: u64) -> Result<u64, u64> {
    #[cfg(fluxrate_spurious_cas)]
    {
        std::thread_local! {
            static CALLS: Cell<u64> = const { Cell::new(0) };
        }
        if CALLS.with(|c| {
            c.set(c.get() + 1);
            c.get() % 4 == 0
        }) {
            note_cas_retry();
            return Err(atomic.load(Ordering::Acquire));
        }
    }
    let r = atomic.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire);
    if r.is_err() {
        note_cas_retry();
    }
    r
}

/// Failed compare-and-swaps on the calling thread since it started: stress tests use it to prove
/// that contention actually happened.
#[doc(hidden)]
pub fn cas_retries_on_this_thread() -> u64 {
    CAS_RETRIES.with(Cell::get)
}
