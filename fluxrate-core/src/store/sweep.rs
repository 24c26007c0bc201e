//! The sweep: one pass over the map that drops every idle cell and refills the room with the
//! kept cells that go idle soonest; run on its own, amortized over insertions, or on demand.

use crate::algorithm::RateAlgorithm;
use crate::sync::Ordering;
use core::cmp::Reverse;
use core::hash::{BuildHasher, Hash};
use std::collections::BinaryHeap;

use super::room::Room;
use super::{lock, try_lock, KeyedStore, MIN_AUTO_SWEEP};

impl<K, V, S> KeyedStore<K, V, S>
where
    K: Hash + Eq,
    S: BuildHasher + Clone,
{
    /// Amortized clean-up: sweep once the store has doubled since the last sweep.
    pub(super) fn maybe_auto_sweep<A: RateAlgorithm<State = V>>(&self, alg: &A, now: u64) {
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

    /// Drop every idle cell; returns how many.
    pub(crate) fn sweep<A: RateAlgorithm<State = V>>(&self, alg: &A, now: u64) -> usize {
        self.sweep_locked(&mut lock(&self.room), alg, now)
    }

    /// Drop every idle cell, and remember the cells kept that go idle soonest.
    pub(super) fn sweep_locked<A: RateAlgorithm<State = V>>(
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
}
