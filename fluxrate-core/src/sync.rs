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

/// A cell written once without locks: every thread that finds it empty builds a value, the first
/// to publish wins, and the others drop theirs and use the winner's. The sliding log publishes
/// the segments of its ring through it (`once_cell::race::OnceBox`: std's `OnceLock` would make
/// the second of two threads growing the same ring wait for the first's allocation).
#[cfg(not(fluxrate_loom))]
pub(crate) use once_cell::race::OnceBox;

#[cfg(fluxrate_loom)]
pub(crate) use loom_once::OnceBox;

/// `OnceBox` as loom sees it. Publication is a loom atomic (so that loom explores every
/// interleaving around it) and the value is kept in a std `OnceLock` written only by the thread
/// that won the publication, before the `Release` store that makes it visible. As with the
/// real `OnceBox`, a value appears at one instant, fully built, and is the same for every
/// thread; a loser of the race (which in the real cell proceeds at once with the winner's
/// value) yields until that instant.
#[cfg(fluxrate_loom)]
mod loom_once {
    use loom::sync::atomic::{AtomicUsize, Ordering};

    const EMPTY: usize = 0;
    const PUBLISHING: usize = 1;
    const READY: usize = 2;

    pub(crate) struct OnceBox<T> {
        state: AtomicUsize,
        value: std::sync::OnceLock<Box<T>>,
    }

    impl<T> core::fmt::Debug for OnceBox<T> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("OnceBox")
        }
    }

    impl<T> OnceBox<T> {
        pub(crate) fn new() -> Self {
            Self {
                state: AtomicUsize::new(EMPTY),
                value: std::sync::OnceLock::new(),
            }
        }

        pub(crate) fn get(&self) -> Option<&T> {
            if self.state.load(Ordering::Acquire) == READY {
                self.value.get().map(|b| &**b)
            } else {
                None
            }
        }

        pub(crate) fn get_or_init(&self, f: impl FnOnce() -> Box<T>) -> &T {
            if let Some(v) = self.get() {
                return v;
            }
            let mine = f();
            if self
                .state
                .compare_exchange(EMPTY, PUBLISHING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let _ = self.value.set(mine);
                self.state.store(READY, Ordering::Release);
            }
            loop {
                if let Some(v) = self.get() {
                    return v;
                }
                loom::thread::yield_now();
            }
        }
    }
}
