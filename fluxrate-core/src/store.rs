//! The keyed store: one cell per key in a `DashMap`, with bounded memory.
//!
//! Protocol (modelled in `loom-tests`): a decision runs the cell's CAS while holding the shard
//! guard of its key; eviction removes a cell only under the shard's write guard and only if the
//! cell is idle (equal to a fresh one). So an eviction can never race a decision on the same
//! cell, and dropping an idle cell changes no future decision. Nothing is called back into the
//! map, and no user code or clock runs, while a guard is held.

use crate::algorithm::RateAlgorithm;
use crate::stats::KeyCounters;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use core::borrow::Borrow;
use core::hash::{BuildHasher, Hash};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// The default hasher of keyed limiters: foldhash, seeded at random per limiter.
///
/// Chosen because it is several times faster than SipHash on short keys while keeping a random
/// per-instance seed, so that an attacker who picks keys cannot predict collisions (hash
/// flooding). An unkeyed fast hasher (FxHash, a fixed-seed hash) would not resist that.
///
/// # Examples
///
/// ```
/// use core::hash::BuildHasher;
/// use fluxrate_core::KeyHasher;
///
/// let (a, b) = (KeyHasher::new(), KeyHasher::new());
/// assert_eq!(a.hash_one(42u64), a.hash_one(42u64));
/// assert_ne!(a.hash_one(42u64), b.hash_one(42u64)); // different random seeds
/// ```
#[derive(Debug, Clone, Default)]
pub struct KeyHasher(foldhash::fast::RandomState);

impl KeyHasher {
    /// A hasher with a fresh random seed.
    pub fn new() -> Self {
        Self::default()
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// What a keyed limiter does with a new key when it already holds `max_keys` live keys.
///
/// In both cases no live key is ever evicted to make room: evicting a key whose state is not
/// fresh would hand it a new burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Refuse requests of new keys until some key goes idle; `retry_after` says when. The
    /// default.
    #[default]
    Reject,
    /// Let all new keys share one extra cell with the same quota.
    Shared,
}

/// Below this many keys the store does not bother sweeping on its own.
const MIN_AUTO_SWEEP: usize = 4096;

/// The result of looking a key up.
pub(crate) enum Lookup<R> {
    /// The key has (or now has) a cell, and `f` ran on it.
    Found(R),
    /// The store is full of live keys until the given time.
    Full { until: u64 },
}

pub(crate) struct KeyedStore<K, V, S> {
    map: DashMap<K, V, S>,
    counters: Option<DashMap<K, KeyCounters, S>>,
    /// Entries in `map`, counted on insert and removal (reserved before inserting).
    len: AtomicUsize,
    max_keys: usize,
    /// The next automatic sweep runs once `len` reaches this.
    sweep_at: AtomicUsize,
    /// When full: the earliest time a live cell goes idle (no sweep can free room before).
    full_until: AtomicU64,
    /// The latest time a sweep judged cells idle at. Decisions are made at no earlier time, so
    /// that a reader whose clock reading predates a sweep cannot see a dropped cell as fresh.
    swept_at: AtomicU64,
}

impl<K, V, S> KeyedStore<K, V, S>
where
    K: Hash + Eq,
    S: BuildHasher + Clone,
{
    pub(crate) fn new(hasher: S, max_keys: Option<usize>, per_key_stats: bool) -> Self {
        Self {
            map: DashMap::with_hasher(hasher.clone()),
            counters: per_key_stats.then(|| DashMap::with_hasher(hasher)),
            len: AtomicUsize::new(0),
            max_keys: max_keys.unwrap_or(usize::MAX),
            sweep_at: AtomicUsize::new(MIN_AUTO_SWEEP),
            full_until: AtomicU64::new(0),
            swept_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Run `f` on the cell of `key`, creating it on a miss (unless the store is full).
    ///
    /// `f` gets the time to decide at: `now`, or the time of the latest sweep if that is later
    /// (read under the shard guard, so any sweep that touched this shard before is seen).
    #[inline]
    pub(crate) fn with<Q, A, R>(
        &self,
        alg: &A,
        key: &Q,
        now: u64,
        f: impl FnOnce(&V, u64) -> R,
    ) -> Lookup<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        A: RateAlgorithm<State = V>,
    {
        if let Some(cell) = self.map.get(key) {
            return Lookup::Found(f(&cell, self.decision_time(now)));
        }
        self.insert_path(alg, key, now, f)
    }

    /// `now`, raised to the latest sweep time. Called with the key's shard guard held.
    #[inline]
    fn decision_time(&self, now: u64) -> u64 {
        now.max(self.swept_at.load(Ordering::Acquire))
    }

    #[cold]
    fn insert_path<Q, A, R>(
        &self,
        alg: &A,
        key: &Q,
        now: u64,
        f: impl FnOnce(&V, u64) -> R,
    ) -> Lookup<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        A: RateAlgorithm<State = V>,
    {
        self.maybe_auto_sweep(alg, now);
        if !self.reserve_slot() && (!self.sweep_when_full(alg, now) || !self.reserve_slot()) {
            return Lookup::Full {
                until: self.full_until.load(Ordering::Relaxed),
            };
        }
        match self.map.entry(key.to_owned()) {
            Entry::Occupied(e) => {
                self.len.fetch_sub(1, Ordering::Relaxed);
                Lookup::Found(f(e.get(), self.decision_time(now)))
            }
            Entry::Vacant(e) => {
                let cell = e.insert(alg.new_state());
                Lookup::Found(f(&cell, self.decision_time(now)))
            }
        }
    }

    /// Reserve room for one more key; false if `max_keys` are present.
    fn reserve_slot(&self) -> bool {
        let prev = self.len.fetch_add(1, Ordering::Relaxed);
        if prev >= self.max_keys {
            self.len.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Amortized clean-up: sweep once the store has doubled since the last sweep.
    fn maybe_auto_sweep<A: RateAlgorithm<State = V>>(&self, alg: &A, now: u64) {
        let at = self.sweep_at.load(Ordering::Relaxed);
        if self.len.load(Ordering::Relaxed) < at {
            return;
        }
        // One sweeper at a time: others carry on while it works.
        if self
            .sweep_at
            .compare_exchange(at, usize::MAX, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.sweep(alg, now);
        let left = self.len.load(Ordering::Relaxed);
        self.sweep_at.store(
            left.saturating_mul(2).max(MIN_AUTO_SWEEP),
            Ordering::Relaxed,
        );
    }

    /// When full, sweep unless nothing can have gone idle yet; true if room was made.
    fn sweep_when_full<A: RateAlgorithm<State = V>>(&self, alg: &A, now: u64) -> bool {
        let until = self.full_until.load(Ordering::Relaxed);
        if now < until {
            return false;
        }
        if self
            .full_until
            .compare_exchange(until, u64::MAX, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false; // another thread is sweeping
        }
        self.sweep(alg, now) > 0
    }

    /// Drop every idle cell; returns how many. Also records when the next cell goes idle.
    pub(crate) fn sweep<A: RateAlgorithm<State = V>>(&self, alg: &A, now: u64) -> usize {
        let mut removed = 0usize;
        let mut next_idle = u64::MAX;
        // Published before any cell is dropped; a decision that takes a shard guard after the
        // sweep released it sees this time and decides no earlier.
        self.swept_at.fetch_max(now, Ordering::AcqRel);
        self.map.retain(|_, cell| {
            let idle_at = alg.idle_at(cell, now);
            if idle_at <= now {
                removed += 1;
                false
            } else {
                next_idle = next_idle.min(idle_at);
                true
            }
        });
        self.len.fetch_sub(removed, Ordering::Relaxed);
        self.full_until.store(next_idle, Ordering::Relaxed);
        if let Some(counters) = &self.counters {
            counters.retain(|k, _| self.map.contains_key(k));
        }
        removed
    }

    /// Give memory freed by sweeps back to the allocator.
    pub(crate) fn shrink(&self) {
        self.map.shrink_to_fit();
        if let Some(counters) = &self.counters {
            counters.shrink_to_fit();
        }
    }

    /// Run `f` on the cell of `key` if it has one.
    pub(crate) fn get<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|c| f(&c))
    }

    /// Forget `key`: its next request starts fresh.
    pub(crate) fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.map.remove(key).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(counters) = &self.counters {
            counters.remove(key);
        }
    }

    /// Forget every key.
    pub(crate) fn clear(&self) {
        // Remove through retain so that `len` stays equal to the entries removed.
        let mut removed = 0usize;
        self.map.retain(|_, _| {
            removed += 1;
            false
        });
        self.len.fetch_sub(removed, Ordering::Relaxed);
        if let Some(counters) = &self.counters {
            counters.clear();
        }
        self.full_until.store(0, Ordering::Relaxed);
    }

    /// Count a decision for `key` (per-key stats only: otherwise one inlined branch).
    #[inline]
    pub(crate) fn record<Q>(&self, key: &Q, allowed: bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(counters) = &self.counters {
            Self::record_in(counters, key, allowed);
        }
    }

    #[inline(never)]
    fn record_in<Q>(counters: &DashMap<K, KeyCounters, S>, key: &Q, allowed: bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(c) = counters.get(key) {
            c.record(allowed);
            return;
        }
        counters.entry(key.to_owned()).or_default().record(allowed);
    }

    pub(crate) fn counts<Q>(&self, key: &Q) -> Option<(u64, u64)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let counters = self.counters.as_ref()?;
        Some(counters.get(key).map(|c| c.totals()).unwrap_or((0, 0)))
    }
}
