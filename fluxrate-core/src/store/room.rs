//! The room of a full store: lower bounds of every held cell's idle time (the soonest
//! remembered by hash), kept up to date on insert and refund, and the making of room for a new
//! key by dropping remembered idle cells one lookup at a time.

use crate::algorithm::RateAlgorithm;
use crate::sync::Ordering;
use core::borrow::Borrow;
use core::cmp::Reverse;
use core::hash::{BuildHasher, Hash};
use std::collections::BinaryHeap;
use std::sync::MutexGuard;

use super::{try_lock, KeyedStore};

/// What the store knows about when its cells go idle, for making room when it is full.
///
/// Every held cell is covered by one of: an entry `(idle, hash)` in `soonest`, `rest` (a lower
/// bound for the cells a sweep kept but did not remember), or the store's `unfiled_idle` (a
/// lower bound for cells inserted or refunded while the room was busy). A time read once stays
/// a lower bound while the cell is held, because decisions only push idle times later; the one
/// thing that moves one earlier, a refund (`cancel`), files the cell again
/// ([`KeyedStore::refiled`]).
pub(super) struct Room {
    /// Remembered cells, soonest idle first.
    pub(super) soonest: BinaryHeap<Reverse<(u64, u64)>>,
    /// Every held cell not remembered in `soonest` (nor covered by `unfiled_idle`) goes idle no
    /// earlier than this.
    pub(super) rest: u64,
    /// How many cells a trim keeps in `soonest` (`soonest` holds at most twice this).
    pub(super) batch: usize,
}

impl Room {
    pub(super) fn new(batch: usize) -> Self {
        Self {
            soonest: BinaryHeap::new(),
            rest: u64::MAX,
            batch,
        }
    }

    /// The earliest time a cell covered here can be idle.
    pub(super) fn floor(&self) -> u64 {
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

impl<K, V, S> KeyedStore<K, V, S>
where
    K: Hash + Eq,
    S: BuildHasher + Clone,
{
    /// Remember a cell in the room, and publish the room's new floor.
    pub(super) fn file(&self, room: &mut Room, idle: u64, hash: u64) {
        room.keep(idle, hash);
        self.room_floor.fetch_min(room.floor(), Ordering::AcqRel);
    }

    pub(super) fn unfiled(&self, idle: u64) {
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
    pub(super) fn reserve_slot(&self) -> bool {
        let prev = self.len.fetch_add(1, Ordering::Relaxed);
        if prev >= self.max_keys {
            self.len.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
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
    pub(super) fn make_room<A: RateAlgorithm<State = V>>(
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
}
