//! The keyed store: one cell per key in a `DashMap`, with bounded memory.
//!
//! Protocol (modelled in `loom-tests`): a decision runs the cell's CAS while holding the shard
//! guard of its key; eviction removes a cell only under the shard's write guard and only if the
//! cell is idle (equal to a fresh one). So an eviction can never race a decision on the same
//! cell, and dropping an idle cell changes no future decision. Nothing is called back into the
//! map, and no clock runs, while a guard is held; the only user code run under a guard is the
//! key type's own `Hash` and `Eq` (as in any `DashMap` operation). Lock order: the store's
//! `room` mutex before any shard; a shard guard is never held while waiting for `room`.
//!
//! Here: the map and the decisions on it. `room`: what a full store knows about when its cells
//! go idle, and how it makes room for a new key; `sweep`: the pass that drops every idle cell.

mod room;
mod sweep;

use crate::algorithm::RateAlgorithm;
use crate::stats::KeyCounters;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use core::borrow::Borrow;
use core::hash::{BuildHasher, Hash};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use room::Room;

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
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Refuse requests of new keys until some key goes idle; `retry_after` says when. The
    /// default.
    #[default]
    Reject,
    /// Let all new keys share one extra cell with the same quota.
    Shared,
}

/// Below this many keys the store does not bother sweeping on its own.
const MIN_AUTO_SWEEP: usize = 4096;

/// A full store remembers the `max_keys / ROOM_BATCH` cells that go idle soonest (at least one),
/// so that one full sweep makes room for that many new keys, one cheap eviction each.
const ROOM_BATCH: usize = 16;

/// The result of looking a key up.
pub(crate) enum Lookup<R> {
    /// The key has (or now has) a cell, and `f` ran on it; or it needed none (its state after
    /// `f` is a fresh one, so none was stored).
    Found(R),
    /// The store holds `max_keys` live keys; none can go idle before `until`.
    Full { until: u64 },
}

/// The per-key cells of a keyed limiter, with a bound on live keys and the sweep that drops
/// idle cells.
///
/// # Memory ordering
///
/// Two locations must agree: a key's cell in `map` and the `swept_at` floor. A sweep (or an
/// eviction) at time `s` drops only cells idle at `s`, i.e. cells whose state is a fresh one
/// *from `s` on*. A reader whose clock read `t < s` (it was descheduled between reading the
/// clock and deciding) and that finds the key missing would create a fresh cell and decide at
/// `t`, where the dropped cell would not have been fresh: a new burst. So decisions are made at
/// `max(now, swept_at)`, and the protocol is:
///
/// * the sweeper raises `swept_at` to `s` (`fetch_max`, `AcqRel`) *before* it takes the write
///   lock of any shard it drops cells from;
/// * a reader loads `swept_at` (`Acquire`) *while it holds the key's shard guard* (read or
///   write), after its lookup.
///
/// The shard's lock orders the two: if the reader's guard comes after the sweeper released
/// the shard, the sweeper's `fetch_max` happens-before the reader's load, which therefore sees
/// at least `s` (and decides on the fresh cell at `s` or later, where fresh is right); if it
/// comes before, the reader still finds the old cell and deciding on it at `t` is right. The
/// floor only moves forward and only raises decision times, so it can refuse more, never
/// admit more. The counters (`len`, `sweeps`, `evicted`) and the room's bounds are `Relaxed`
/// or lock-protected bookkeeping: they bound memory and date a store-full refusal, and never
/// decide what a cell admits.
pub(crate) struct KeyedStore<K, V, S> {
    map: DashMap<K, V, S>,
    counters: Option<DashMap<K, KeyCounters, S>>,
    /// Entries in `map`, counted on insert and removal (reserved before inserting).
    len: AtomicUsize,
    max_keys: usize,
    /// How many soonest-idle cells a sweep remembers (0 for an unbounded store).
    batch: usize,
    /// The next automatic sweep runs once `len` reaches this.
    sweep_at: AtomicUsize,
    /// Held by the one thread sweeping or making room; others carry on without waiting.
    room: Mutex<Room>,
    /// A lower bound of `room.floor()`, readable without the lock.
    room_floor: AtomicU64,
    /// The earliest idle time of a cell inserted or refunded while `room` was busy (since the
    /// last sweep began).
    unfiled_idle: AtomicU64,
    /// The latest time a sweep or eviction judged cells idle at. Decisions are made at no
    /// earlier time, so that a reader whose clock reading predates it cannot see a dropped cell
    /// as fresh.
    swept_at: AtomicU64,
    /// Full passes over the map, and cells dropped in all.
    sweeps: AtomicU64,
    evicted: AtomicU64,
}

/// Counts of a keyed store, readable without knowing how keys hash.
pub(crate) struct StoreCounts {
    pub(crate) keys: usize,
    pub(crate) sweeps: u64,
    pub(crate) evicted: u64,
}

impl<K, V, S> KeyedStore<K, V, S> {
    pub(crate) fn summary(&self) -> StoreCounts {
        StoreCounts {
            keys: self.len.load(Ordering::Relaxed),
            sweeps: self.sweeps.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }
}

/// Lock `m` even if a thread panicked while holding it (the bookkeeping stays a valid set of
/// lower bounds whatever point the panic left it at).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
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
            batch: max_keys.map_or(0, |m| (m / ROOM_BATCH).max(1)),
            sweep_at: AtomicUsize::new(MIN_AUTO_SWEEP),
            // No cell yet: every cell inserted from now on is filed or unfiled.
            room: Mutex::new(Room::new(max_keys.map_or(0, |m| (m / ROOM_BATCH).max(1)))),
            room_floor: AtomicU64::new(u64::MAX),
            unfiled_idle: AtomicU64::new(u64::MAX),
            swept_at: AtomicU64::new(0),
            sweeps: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
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
        let mut room = None;
        if !self.reserve_slot() {
            match self.make_room(alg, now) {
                Ok(guard) => room = Some(guard),
                Err(until) => return Lookup::Full { until },
            }
        } else if self.batch > 0 {
            // File the new cell if the room is free; if not, `unfiled_idle` covers it.
            room = try_lock(&self.room);
        }
        match self.map.entry(key.to_owned()) {
            Entry::Occupied(e) => {
                self.len.fetch_sub(1, Ordering::Relaxed);
                Lookup::Found(f(e.get(), self.decision_time(now)))
            }
            Entry::Vacant(e) => {
                // The shard's write guard is held: deciding on a state not yet in the map is
                // the same as deciding on it in the map, and a state left fresh (a look, a
                // weight that can never pass) needs no cell.
                let at = self.decision_time(now);
                let state = alg.new_state();
                let r = f(&state, at);
                let idle = alg.idle_at(&state, at);
                if idle > at {
                    // Covered before the cell can be seen (the room, if held, is released only
                    // after the insert), so that a full store never believes no cell can go
                    // idle before a time this one passes.
                    match room.as_mut() {
                        Some(room) => self.file(room, idle, self.map.hasher().hash_one(key)),
                        None => self.unfiled(idle),
                    }
                    e.insert(state);
                } else {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
                Lookup::Found(r)
            }
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
        let mut room = lock(&self.room);
        // Remove through retain so that `len` stays equal to the entries removed.
        let mut removed = 0usize;
        self.unfiled_idle.store(u64::MAX, Ordering::Release);
        self.map.retain(|_, _| {
            removed += 1;
            false
        });
        self.len.fetch_sub(removed, Ordering::Relaxed);
        if let Some(counters) = &self.counters {
            counters.clear();
        }
        *room = Room::new(room.batch);
        self.room_floor.store(u64::MAX, Ordering::Release);
    }

    /// Count a decision for `key` (per-key stats only: otherwise one inlined branch).
    #[inline]
    pub(crate) fn record<Q>(&self, key: &Q, allowed: bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(counters) = &self.counters {
            self.record_in(counters, key, allowed);
        }
    }

    /// Counts are kept only for keys that hold a cell: a request that left a new key fresh
    /// stored nothing, and must not store counters either (they would escape `max_keys`).
    #[inline(never)]
    fn record_in<Q>(&self, counters: &DashMap<K, KeyCounters, S>, key: &Q, allowed: bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(c) = counters.get(key) {
            c.record(allowed);
            return;
        }
        if self.map.contains_key(key) {
            counters.entry(key.to_owned()).or_default().record(allowed);
        }
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
