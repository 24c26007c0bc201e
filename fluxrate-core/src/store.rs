//! The keyed store: one cell per key in a `DashMap`, with bounded memory.
//!
//! Protocol (modelled in `loom-tests`): a decision runs the cell's CAS while holding the shard
//! guard of its key; eviction removes a cell only under the shard's write guard and only if the
//! cell is idle (equal to a fresh one). So an eviction can never race a decision on the same
//! cell, and dropping an idle cell changes no future decision. Nothing is called back into the
//! map, and no clock runs, while a guard is held; the only user code run under a guard is the
//! key type's own `Hash` and `Eq` (as in any `DashMap` operation). Lock order: the store's
//! `room` mutex before any shard; a shard guard is never held while waiting for `room`.

use crate::algorithm::RateAlgorithm;
use crate::stats::KeyCounters;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use core::borrow::Borrow;
use core::cmp::Reverse;
use core::hash::{BuildHasher, Hash};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::collections::BinaryHeap;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

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

/// What the store knows about when its cells go idle, for making room when it is full.
///
/// Every held cell is covered by one of: an entry `(idle, hash)` in `soonest`, `rest` (a lower
/// bound for the cells a sweep kept but did not remember), or the store's `unfiled_idle` (a
/// lower bound for cells inserted or refunded while the room was busy). A time read once stays
/// a lower bound while the cell is held, because decisions only push idle times later; the one
/// thing that moves one earlier, a refund (`cancel`), files the cell again
/// ([`KeyedStore::refiled`]).
struct Room {
    /// Remembered cells, soonest idle first.
    soonest: BinaryHeap<Reverse<(u64, u64)>>,
    /// Every held cell not remembered in `soonest` (nor covered by `unfiled_idle`) goes idle no
    /// earlier than this.
    rest: u64,
    /// How many cells a trim keeps in `soonest` (`soonest` holds at most twice this).
    batch: usize,
}

impl Room {
    fn new(batch: usize) -> Self {
        Self {
            soonest: BinaryHeap::new(),
            rest: u64::MAX,
            batch,
        }
    }

    /// The earliest time a cell covered here can be idle.
    fn floor(&self) -> u64 {
        self.soonest
            .peek()
            .map_or(self.rest, |s| s.0 .0.min(self.rest))
    }

    /// Remember a cell that goes idle no earlier than `idle`. O(log batch) amortized.
    fn keep(&mut self, idle: u64, hash: u64) {
        if idle >= self.rest {
            return; // already covered by `rest`
        }
        self.soonest.push(Reverse((idle, hash)));
        if self.soonest.len() > 2 * self.batch.max(1) {
            // Keep the `batch` soonest; the others are covered by `rest` from now on.
            let mut all = core::mem::take(&mut self.soonest).into_vec();
            let keep = self.batch.max(1);
            all.select_nth_unstable(keep - 1);
            for Reverse((dropped, _)) in all.drain(keep..) {
                self.rest = self.rest.min(dropped);
            }
            self.soonest = BinaryHeap::from(all);
        }
    }

    /// The soonest remembered cell if it may be idle at `now`.
    fn pop_due(&mut self, now: u64) -> Option<(u64, u64)> {
        match self.soonest.peek() {
            Some(Reverse((idle, _))) if *idle <= now => self.soonest.pop().map(|r| r.0),
            _ => None,
        }
    }
}

/// The outcome of trying to drop one remembered cell.
enum Evict {
    /// An idle cell was dropped.
    Dropped,
    /// The cell is live: it goes idle no earlier than this.
    Live(u64),
    /// No cell with that hash is held any more.
    Gone,
}

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

    /// Remember a cell in the room, and publish the room's new floor.
    fn file(&self, room: &mut Room, idle: u64, hash: u64) {
        room.keep(idle, hash);
        self.room_floor.fetch_min(room.floor(), Ordering::AcqRel);
    }

    fn unfiled(&self, idle: u64) {
        self.unfiled_idle.fetch_min(idle, Ordering::AcqRel);
    }

    /// The cell of `key` may now go idle as early as `idle` (a refund moved its state back):
    /// file it again. Call without holding any guard of the store.
    pub(crate) fn refiled<Q>(&self, key: &Q, idle: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match try_lock(&self.room) {
            Some(mut room) => self.file(&mut room, idle, self.map.hasher().hash_one(key)),
            None => self.unfiled(idle),
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
        if self.len.load(Ordering::Relaxed) < self.sweep_at.load(Ordering::Relaxed) {
            return;
        }
        // One sweeper at a time: others carry on while it works.
        let Some(mut room) = try_lock(&self.room) else {
            return;
        };
        if self.len.load(Ordering::Relaxed) < self.sweep_at.load(Ordering::Relaxed) {
            return; // another thread swept meanwhile
        }
        self.sweep_locked(&mut room, alg, now);
        let left = self.len.load(Ordering::Relaxed);
        self.sweep_at.store(
            left.saturating_mul(2).max(MIN_AUTO_SWEEP),
            Ordering::Relaxed,
        );
    }

    /// The store is full: drop one idle cell, if any is, and reserve its room; the room's lock
    /// is returned, to file the new cell under it. `Err(until)` when every held cell is live
    /// (none can go idle before `until`), or when another thread is making room right now
    /// (`until = now + 1`: try again very soon).
    ///
    /// Exact when no other thread is making room at the same time: it fails only if no held
    /// cell is idle at `now`. Cheap: it drops the remembered cells one at a time (one hash
    /// lookup each), and sweeps the whole map only when no remembered cell is due and some
    /// other cell may be idle. A sweep remembers `max_keys / 16` cells, and every cell inserted
    /// or refunded afterwards while the room is free is remembered too (the room keeps the
    /// `max_keys / 16` soonest, the others fold into its bound), so a full sweep runs once at
    /// least that many remembered cells have been used up, not per new key.
    fn make_room<A: RateAlgorithm<State = V>>(
        &self,
        alg: &A,
        now: u64,
    ) -> Result<MutexGuard<'_, Room>, u64> {
        let floor = self
            .room_floor
            .load(Ordering::Acquire)
            .min(self.unfiled_idle.load(Ordering::Acquire));
        if now < floor {
            return Err(floor);
        }
        let busy = now.saturating_add(1);
        let Some(mut room) = try_lock(&self.room) else {
            return Err(busy);
        };
        let mut swept = false;
        loop {
            if self.reserve_slot() {
                return Ok(room); // room was made meanwhile
            }
            while let Some((_, hash)) = room.pop_due(now) {
                match self.evict_one(alg, hash, now) {
                    Evict::Dropped if self.reserve_slot() => {
                        self.room_floor.store(room.floor(), Ordering::Release);
                        return Ok(room);
                    }
                    Evict::Dropped | Evict::Gone => {}
                    Evict::Live(later) => room.keep(later, hash),
                }
            }
            let floor = room.floor().min(self.unfiled_idle.load(Ordering::Acquire));
            self.room_floor.store(room.floor(), Ordering::Release);
            if now < floor {
                return Err(floor);
            }
            if swept {
                // Room freed by this sweep was taken by other threads.
                return Err(busy);
            }
            self.sweep_locked(&mut room, alg, now);
            swept = true;
        }
    }

    /// Drop an idle cell whose key hashes to `hash`, if there is one.
    fn evict_one<A: RateAlgorithm<State = V>>(&self, alg: &A, hash: u64, now: u64) -> Evict {
        // Published before the cell is dropped, as in `sweep_locked`.
        self.swept_at.fetch_max(now, Ordering::AcqRel);
        let shard = &self.map.shards()[self.map.determine_shard(hash as usize)];
        let hasher = self.map.hasher();
        let mut live = None::<u64>;
        // The probe also offers entries that share only some bits of the hash: only the cell
        // whose key has this hash is the one remembered.
        let removed = shard.write().remove_entry(hash, |(k, v)| {
            if hasher.hash_one(k) != hash {
                return false;
            }
            let idle = alg.idle_at(v.get(), now);
            if idle <= now {
                return true;
            }
            live = Some(live.map_or(idle, |l| l.min(idle)));
            false
        });
        match (removed, live) {
            (Some((k, _cell)), _) => {
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                if let Some(counters) = &self.counters {
                    counters.remove(&k);
                }
                Evict::Dropped
            }
            (None, Some(idle)) => Evict::Live(idle),
            (None, None) => Evict::Gone,
        }
    }

    /// Drop every idle cell; returns how many.
    pub(crate) fn sweep<A: RateAlgorithm<State = V>>(&self, alg: &A, now: u64) -> usize {
        self.sweep_locked(&mut lock(&self.room), alg, now)
    }

    /// Drop every idle cell, and remember the cells kept that go idle soonest.
    fn sweep_locked<A: RateAlgorithm<State = V>>(
        &self,
        room: &mut Room,
        alg: &A,
        now: u64,
    ) -> usize {
        let mut removed = 0usize;
        let mut rest = u64::MAX;
        let batch = self.batch.min(self.len.load(Ordering::Relaxed));
        // A max-heap of the `batch` soonest idle times seen.
        let mut soonest: BinaryHeap<(u64, u64)> = BinaryHeap::with_capacity(batch);
        // The cells covered by `unfiled_idle` so far are covered by the room from here on (so
        // that the room stays a valid set of bounds even if this pass is cut short), and cells
        // inserted or refunded from here on by `unfiled_idle` again; the pass below files every
        // cell it keeps (a cell inserted meanwhile may be counted twice: harmless).
        let unfiled = self.unfiled_idle.swap(u64::MAX, Ordering::AcqRel);
        room.rest = room.rest.min(unfiled);
        self.room_floor.fetch_min(unfiled, Ordering::AcqRel);
        // Published before any cell is dropped; a decision that takes a shard guard after the
        // sweep released it sees this time and decides no earlier.
        self.swept_at.fetch_max(now, Ordering::AcqRel);
        let hasher = self.map.hasher();
        self.map.retain(|k, cell| {
            let idle_at = alg.idle_at(cell, now);
            if idle_at <= now {
                removed += 1;
                return false;
            }
            if soonest.len() < batch {
                soonest.push((idle_at, hasher.hash_one(k)));
            } else if soonest.peek().is_some_and(|top| idle_at < top.0) {
                soonest.push((idle_at, hasher.hash_one(k)));
                if let Some((out, _)) = soonest.pop() {
                    rest = rest.min(out);
                }
            } else {
                rest = rest.min(idle_at);
            }
            true
        });
        self.len.fetch_sub(removed, Ordering::Relaxed);
        self.sweeps.fetch_add(1, Ordering::Relaxed);
        self.evicted.fetch_add(removed as u64, Ordering::Relaxed);
        room.soonest = soonest.into_iter().map(Reverse).collect();
        room.rest = rest;
        self.room_floor.store(room.floor(), Ordering::Release);
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
