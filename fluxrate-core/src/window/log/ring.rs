//! The sliding log's ring: segments of atomic slots, each an admission time, allocated on
//! demand (8, 8, 16, 32, … slots up to `calls`), and the per-key state that chains them.

use crate::sync::{AtomicU64, AtomicUsize, OnceBox, Ordering};

/// Slots in the first segment of a ring. Segment `k ≥ 1` has `FIRST << (k − 1)` slots (the last
/// one cut at `calls`), so the slots before segment `k` number `FIRST << (k − 1)` too: each new
/// segment at most doubles the ring.
pub(super) const FIRST: usize = 8;

/// The index of the first slot of segment `k` in the ring.
#[inline]
pub(super) const fn seg_start(k: usize) -> usize {
    if k == 0 {
        0
    } else {
        FIRST << (k - 1)
    }
}

/// The number of segments of a ring of `calls` slots.
pub(super) fn segments_for(calls: usize) -> usize {
    let mut m = 1;
    while seg_start(m) < calls {
        m += 1;
    }
    m
}

/// The number of slots of segment `k` of a ring of `calls` slots.
pub(super) fn seg_len(calls: usize, k: usize) -> usize {
    seg_start(k + 1).min(calls) - seg_start(k)
}

/// One segment of the ring: its slots and a hint to its oldest one.
#[derive(Debug)]
pub(super) struct Segment {
    /// The slot after the last one this segment admitted into (always `< slots.len()`).
    pub(super) hint: AtomicUsize,
    /// Admission time + 1, or 0 for an empty slot.
    pub(super) slots: Box<[AtomicU64]>,
}

impl Segment {
    pub(super) fn new(len: usize) -> Self {
        Self {
            hint: AtomicUsize::new(0),
            slots: (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A segment holding `values`, its hint where they are in ring order if they are.
    pub(super) fn from_values(values: &[u64]) -> Self {
        let len = values.len();
        let start = (0..len)
            .find(|&i| values[i] > values[(i + 1) % len])
            .map_or(0, |i| (i + 1) % len);
        Self {
            hint: AtomicUsize::new(start),
            slots: values.iter().map(|&v| AtomicU64::new(v)).collect(),
        }
    }

    /// The hint (any value is correct; an out-of-range one reads as 0).
    #[inline]
    pub(super) fn hint(&self) -> usize {
        let h = self.hint.load(Ordering::Relaxed);
        if h < self.slots.len() {
            h
        } else {
            0
        }
    }

    /// The slot after `idx`, round the segment.
    #[inline]
    pub(super) fn after(&self, idx: usize) -> usize {
        if idx + 1 == self.slots.len() {
            0
        } else {
            idx + 1
        }
    }
}

/// The per-key state of [`SlidingLog`](super::SlidingLog): a ring of slots, each the time of one admission (+1; 0
/// is an empty slot), that grows with use up to `calls` slots.
///
/// An admission at `t` claims a slot by one CAS from a value that has *expired* (`≤ t − W`) to
/// `t`. So along the history of any single slot, successive stamps are at least `W` apart, and a
/// half-open window of length `W` can hold at most one stamp per slot: at most `calls`
/// admissions in any window, under any interleaving and any clock behaviour.
///
/// # Growth
///
/// The ring is a chain of segments: the first of `min(calls, 8)` slots, allocated with the
/// state, then segments of 8, 16, 32, … slots (the last cut at `calls`), each allocated by the
/// first admission that finds every slot of the segments before it holding a live stamp. So a
/// ring of `c > 8` slots has held `c/2` live stamps at once: memory is at most twice the peak
/// number of live stamps (at least 8 slots), never more than `calls` slots, plus a header: 48
/// bytes inline, 8 bytes per possible segment (at most 17) and 24 per allocated one. A segment
/// is published through a lock-free once-cell: two threads growing the same ring at the same
/// instant both build a segment, one is kept for both and the other dropped. Segments stay until the state is
/// dropped (the keyed store drops a state once it is idle).
///
/// Each segment has its own hint, the slot after the last one it admitted into. When time is
/// monotone, each segment's stamps are in ring order from its hint (an admission replaces the
/// segment's oldest stamp with the newest of all), so its hinted slot holds its oldest stamp:
/// an admission tries the hinted slot of the segment it used last, then the other segments'
/// hinted slots, and only then scans every slot (an exact refusal, or growth).
///
/// # Memory ordering
///
/// Each slot is its own location updated by CAS (`AcqRel`/`Acquire`); the invariant above is
/// per slot, so no ordering between slots is needed. A segment is published with `Release` and
/// read with `Acquire` (its slots are seen as built). Hints are `Relaxed`: any value is correct.
#[derive(Debug)]
pub struct SlidingLogState {
    /// The segment the last admission that left its own segment went to: the one tried first.
    pub(super) cur: AtomicUsize,
    /// Segment 0.
    pub(super) first: Segment,
    /// Segments 1, 2, …: allocated in order, on demand.
    pub(super) more: Box<[OnceBox<Segment>]>,
}

impl SlidingLogState {
    /// A fresh state for `calls` timestamps: the first segment only.
    pub(super) fn new(calls: usize) -> Self {
        let calls = calls.max(1);
        Self {
            cur: AtomicUsize::new(0),
            first: Segment::new(seg_len(calls, 0)),
            more: (1..segments_for(calls)).map(|_| OnceBox::new()).collect(),
        }
    }

    /// A state holding `slots` (as [`raw`](Self::raw) returns them) for a ring of `calls`
    /// slots, with its hint at `hint`; `None` if `slots` is not an allocated prefix of the ring.
    pub(super) fn from_raw(calls: usize, slots: &[u64], hint: usize) -> Option<Self> {
        let segments = segments_for(calls);
        let used = (1..=segments).find(|&m| seg_start(m).min(calls) == slots.len())?;
        let make = |k: usize| Segment::from_values(&slots[seg_start(k)..][..seg_len(calls, k)]);
        let state = Self {
            cur: AtomicUsize::new(0),
            first: make(0),
            more: (1..segments)
                .map(|k| {
                    let cell = OnceBox::new();
                    if k < used {
                        cell.get_or_init(|| Box::new(make(k)));
                    }
                    cell
                })
                .collect(),
        };
        if hint < slots.len() {
            let c = (0..used).rfind(|&k| seg_start(k) <= hint).unwrap_or(0);
            state.cur.store(c, Ordering::Relaxed);
            if let Some(seg) = state.seg(c) {
                seg.hint.store(hint - seg_start(c), Ordering::Relaxed);
            }
        }
        Some(state)
    }

    /// Segment `k`, if it is allocated.
    #[inline]
    pub(super) fn seg(&self, k: usize) -> Option<&Segment> {
        if k == 0 {
            Some(&self.first)
        } else {
            self.more.get(k - 1)?.get()
        }
    }

    /// Segment `k ≥ 1`, allocated if it is not yet: every thread that finds it missing builds
    /// one, the first to publish its own wins, and the others drop theirs and use that one.
    #[cold]
    pub(super) fn grow(&self, k: usize, len: usize) -> &Segment {
        let cell = &self.more[k - 1];
        cell.get_or_init(|| Box::new(Segment::new(len)))
    }

    /// The allocated segments, in ring order (they are allocated in that order).
    pub(super) fn segs(&self) -> impl Iterator<Item = &Segment> {
        (0..=self.more.len()).map_while(|k| self.seg(k))
    }

    /// Every allocated slot.
    pub(super) fn slots(&self) -> impl Iterator<Item = &AtomicU64> {
        self.segs().flat_map(|s| s.slots.iter())
    }

    /// The raw slots (admission time + 1, or 0 when empty) of the ring as allocated so far (its
    /// first `min(calls, 8)`, 16, 32, … slots), and the position of the hint, for persistence,
    /// diagnostics and tests.
    pub fn raw(&self) -> (Vec<u64>, usize) {
        let c = self.cur.load(Ordering::Relaxed);
        (
            self.slots().map(|s| s.load(Ordering::Acquire)).collect(),
            self.seg(c).map_or(0, |s| seg_start(c) + s.hint()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_double_the_ring_up_to_calls() {
        for calls in [
            1usize,
            7,
            8,
            9,
            16,
            17,
            100,
            100_000,
            crate::MAX_LOG_CALLS as usize,
        ] {
            let m = segments_for(calls);
            let lens: Vec<usize> = (0..m).map(|k| seg_len(calls, k)).collect();
            assert_eq!(lens.iter().sum::<usize>(), calls, "{calls}: {lens:?}");
            assert_eq!(lens[0], calls.min(FIRST));
            for k in 1..m {
                assert!(lens[k] >= 1 && lens[k] <= seg_start(k), "{calls}: {lens:?}");
            }
        }
        assert_eq!(segments_for(crate::MAX_LOG_CALLS as usize), 18);
        assert_eq!(segments_for(100_000), 15);
    }
}
