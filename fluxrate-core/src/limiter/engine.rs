//! The engine: each algorithm's parameters beside its cells (the direct cell, padded to cache
//! lines of its own, and the keyed store), the `dispatch!` over them, and one attempt on a cell.

use crate::algorithm::{Admitted, Algorithm, KeyCell, RateAlgorithm, Refusal};
use crate::error::ConfigError;
use crate::gcra::{GcraState, LeakyBucket, TokenBucket};
use crate::quota::Quota;
use crate::store::KeyedStore;
use crate::window::counter::{SlidingWindowCounter, SlidingWindowCounterState};
use crate::window::fixed::{FixedWindow, FixedWindowState};
use crate::window::log::{SlidingLog, SlidingLogState};
use core::hash::{BuildHasher, Hash};

use super::NotKeyed;

/// The cells of one algorithm: the direct cell, and the keyed store if keyed (always `Some` for
/// a key type other than [`NotKeyed`], always `None` for `NotKeyed`: `build` decides by type).
///
/// A keyed limiter uses its direct cell as the shared cell of
/// [`OverflowPolicy::Shared`](crate::OverflowPolicy::Shared).
pub(super) struct Cells<K, V, S> {
    pub(super) direct: Padded<V>,
    pub(super) keyed: Option<KeyedStore<K, V, S>>,
}

/// The direct cell on cache lines of its own (two, against adjacent-line prefetch): threads
/// contending on it then do not also evict the limiter's read-only parameters, which sit next
/// to it, from each other's caches.
#[repr(align(128))]
pub(super) struct Padded<V>(V);

impl<V> core::ops::Deref for Padded<V> {
    type Target = V;

    #[inline(always)]
    fn deref(&self) -> &V {
        &self.0
    }
}

/// Enum dispatch over the algorithms: parameters and cells side by side.
pub(super) enum Engine<K, S> {
    TokenBucket(TokenBucket, Cells<K, GcraState, S>),
    LeakyBucket(LeakyBucket, Cells<K, GcraState, S>),
    FixedWindow(FixedWindow, Cells<K, FixedWindowState, S>),
    SlidingWindowCounter(SlidingWindowCounter, Cells<K, SlidingWindowCounterState, S>),
    SlidingLog(SlidingLog, Cells<K, SlidingLogState, S>),
}

/// Run `$body` with `$alg` bound to the algorithm and `$cells` to its cells.
macro_rules! dispatch {
    ($engine:expr, |$alg:ident, $cells:ident| $body:expr) => {
        match $engine {
            $crate::limiter::engine::Engine::TokenBucket($alg, $cells) => $body,
            $crate::limiter::engine::Engine::LeakyBucket($alg, $cells) => $body,
            $crate::limiter::engine::Engine::FixedWindow($alg, $cells) => $body,
            $crate::limiter::engine::Engine::SlidingWindowCounter($alg, $cells) => $body,
            $crate::limiter::engine::Engine::SlidingLog($alg, $cells) => $body,
        }
    };
}
pub(super) use dispatch;

impl<K, S> Engine<K, S> {
    /// Check `quota` for `algorithm` and build its cells, the keyed store (or none) made by
    /// `stores`.
    pub(super) fn new(
        algorithm: Algorithm,
        quota: &Quota,
        stores: &impl MakeStore<K, S>,
    ) -> Result<Self, ConfigError> {
        Ok(match algorithm {
            Algorithm::TokenBucket => {
                let a = TokenBucket::new(quota)?;
                Engine::TokenBucket(a, Cells::new(a.new_state(), stores))
            }
            Algorithm::LeakyBucket => {
                let a = LeakyBucket::new(quota)?;
                Engine::LeakyBucket(a, Cells::new(a.new_state(), stores))
            }
            Algorithm::FixedWindow => {
                let a = FixedWindow::new(quota)?;
                Engine::FixedWindow(a, Cells::new(a.new_state(), stores))
            }
            Algorithm::SlidingWindowCounter => {
                let a = SlidingWindowCounter::new(quota)?;
                let direct = a.new_state();
                Engine::SlidingWindowCounter(a, Cells::new(direct, stores))
            }
            Algorithm::SlidingLog => {
                let a = SlidingLog::new(quota)?;
                Engine::SlidingLog(a, Cells::new(a.new_state(), stores))
            }
        })
    }
}

/// Makes the keyed store (or none) of each algorithm's cells.
pub(super) trait MakeStore<K, S> {
    fn store<V>(&self) -> Option<KeyedStore<K, V, S>>;
}

/// A direct limiter's: none.
pub(super) struct NoStore;

impl<S> MakeStore<NotKeyed, S> for NoStore {
    fn store<V>(&self) -> Option<KeyedStore<NotKeyed, V, S>> {
        None
    }
}

/// A keyed limiter's: one store per limiter with the builder's options.
pub(super) struct Stores<S> {
    pub(super) hasher: S,
    pub(super) max_keys: Option<usize>,
    pub(super) per_key_stats: bool,
}

impl<K: Hash + Eq, S: BuildHasher + Clone> MakeStore<K, S> for Stores<S> {
    fn store<V>(&self) -> Option<KeyedStore<K, V, S>> {
        Some(KeyedStore::new(
            self.hasher.clone(),
            self.max_keys,
            self.per_key_stats,
        ))
    }
}

impl<K, V, S> Cells<K, V, S> {
    fn new(direct: V, stores: &impl MakeStore<K, S>) -> Self {
        Self {
            direct: Padded(direct),
            keyed: stores.store(),
        }
    }
}

/// Outcome of one attempt on a cell.
pub(super) type Attempt = Result<Admitted, Refusal>;

/// Decide `n` on `state`, treating `n = 0` as a look that changes nothing.
#[inline]
pub(super) fn decide<A: RateAlgorithm>(alg: &A, state: &A::State, now: u64, n: u64) -> Attempt {
    if n == 0 {
        let s = alg.peek(state, now);
        return Ok(Admitted {
            at: now,
            delay: 0,
            remaining: s.remaining,
            limit: s.limit,
            reset_after: s.reset_after,
            weight: 0,
            tat_after: 0,
            cell: KeyCell::Own,
        });
    }
    alg.check(state, now, n)
}
