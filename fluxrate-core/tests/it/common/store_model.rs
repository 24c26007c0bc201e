//! A sequential reference model of the keyed store, and a driver that runs one history of
//! operations on the real keyed limiter and on the model and compares every answer.
//!
//! The model knows nothing of sweeps, shards or idle-time bookkeeping. It holds one I.371
//! virtual-scheduling cell (`Vsa`) per key it has seen, and decides a new key's fate from the
//! one rule the store promises: *a key that is not live is refused room (or sent to the shared
//! cell) only when `max_keys` other keys are live*, where live means "its state differs from a
//! fresh one" (TAT in the future). A live key is never forgotten, so a real store that evicted
//! one would disagree with the model on that key's next decision or its retry-after.
//!
//! No dependencies besides `fluxrate_core` and the reference file, so that the fuzz target
//! includes it too.
#![allow(dead_code, unreachable_pub)]

use super::refs::{RefDecision, Vsa};
use fluxrate_core::{Clock, Denied, ManualClock, OverflowPolicy, Quota, RateLimiter};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

/// One step of a history.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// Decide a request of weight `n` for `key`.
    Check { key: u32, n: u64 },
    /// Decide a request of weight `n` for `key` and, if its own cell admitted it, give it back
    /// at once (`cancel_key`: the state returns to what it was, so the key may be idle again).
    Refund { key: u32, n: u64 },
    /// `count` requests of weight 1 for the keys `first..first + count` (a flood of new keys).
    Flood { first: u32, count: u32 },
    /// Move the clock forward.
    Advance { ns: u64 },
    /// An explicit `sweep()`.
    Sweep,
    /// `reset_key(key)`.
    ResetKey { key: u32 },
    /// `reset_all()`.
    ResetAll,
}

/// The model's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Admit,
    /// Refused by the key's (or the shared cell's) own limit: admissible from this time.
    Limited(u128),
    /// The weight can never pass.
    Never,
    /// Refused for lack of room (`OverflowPolicy::Reject`): no key can go idle before this time.
    Full(u128),
}

pub struct StoreModel {
    max_keys: usize,
    overflow: OverflowPolicy,
    t: u64,
    burst: u64,
    cells: HashMap<u32, Vsa>,
    shared: Vsa,
    /// `(tat, key)` of every cell that became live, soonest first; stale entries (the key's TAT
    /// moved on, or the key was reset) are skipped when popped.
    expiry: BinaryHeap<Reverse<(u128, u32)>>,
    live: usize,
}

impl StoreModel {
    pub fn new(max_keys: usize, overflow: OverflowPolicy, t: u64, burst: u64) -> Self {
        Self {
            max_keys,
            overflow,
            t,
            burst,
            cells: HashMap::new(),
            shared: Vsa::new(t, burst),
            expiry: BinaryHeap::new(),
            live: 0,
        }
    }

    fn is_live(&self, key: u32, now: u64) -> bool {
        self.cells
            .get(&key)
            .is_some_and(|c| c.tat > u128::from(now))
    }

    /// Forget the cells that went idle by `now`.
    fn expire(&mut self, now: u64) {
        while let Some(&Reverse((tat, key))) = self.expiry.peek() {
            if tat > u128::from(now) {
                break;
            }
            self.expiry.pop();
            if self.cells.get(&key).is_some_and(|c| c.tat == tat) {
                self.cells.remove(&key);
                self.live -= 1;
            }
        }
    }

    /// How many keys are live at `now`.
    pub fn live(&mut self, now: u64) -> usize {
        self.expire(now);
        self.live
    }

    /// The earliest time a live key goes idle.
    fn next_idle(&mut self, now: u64) -> u128 {
        self.expire(now);
        loop {
            let Some(&Reverse((tat, key))) = self.expiry.peek() else {
                return u128::MAX;
            };
            if self.cells.get(&key).is_some_and(|c| c.tat == tat) {
                return tat;
            }
            self.expiry.pop();
        }
    }

    pub fn check(&mut self, key: u32, n: u64, now: u64) -> Expect {
        self.check_on(key, n, now).0
    }

    /// [`check`](Self::check), then give the admission back if the key's own cell made it;
    /// also says whether it did.
    pub fn check_and_refund(&mut self, key: u32, n: u64, now: u64) -> (Expect, bool) {
        self.expire(now);
        let was_live = self.is_live(key, now);
        let before = self.cells.get(&key).cloned();
        let (e, on_key) = self.check_on(key, n, now);
        if !(on_key && n > 0 && e == Expect::Admit) {
            return (e, false);
        }
        match before {
            Some(cell) if was_live => {
                // Its TAT is back to a time already in the expiry heap.
                self.cells.insert(key, cell);
            }
            _ => {
                self.cells.remove(&key);
                self.live -= 1;
            }
        }
        (e, true)
    }

    /// The decision, and whether the key's own cell made it (not the shared cell, not a
    /// refusal for room).
    fn check_on(&mut self, key: u32, n: u64, now: u64) -> (Expect, bool) {
        self.expire(now);
        if !self.is_live(key, now) {
            self.cells.remove(&key);
            if self.live >= self.max_keys {
                return match self.overflow {
                    OverflowPolicy::Reject => (Expect::Full(self.next_idle(now)), false),
                    OverflowPolicy::Shared => (step(&mut self.shared, now, n), false),
                    other => panic!("the model does not know {other:?}"),
                };
            }
        }
        let was_live = self.is_live(key, now);
        let cell = self
            .cells
            .entry(key)
            .or_insert_with(|| Vsa::new(self.t, self.burst));
        let e = step(cell, now, n);
        let tat = cell.tat;
        if tat > u128::from(now) {
            self.expiry.push(Reverse((tat, key)));
            if !was_live {
                self.live += 1;
            }
        } else {
            self.cells.remove(&key);
        }
        (e, true)
    }

    /// The wait before one unit for `key` would pass, without changing anything.
    pub fn retry_after(&mut self, key: u32, now: u64) -> u128 {
        self.expire(now);
        match self.cells.get(&key) {
            Some(c) => match c.clone().step(now, 1) {
                RefDecision::NotUntil(at) => at - u128::from(now),
                _ => 0,
            },
            None => 0,
        }
    }

    pub fn reset_key(&mut self, key: u32, now: u64) {
        if self.is_live(key, now) {
            self.live -= 1;
        }
        self.cells.remove(&key);
    }

    pub fn reset_all(&mut self) {
        self.cells.clear();
        self.expiry.clear();
        self.live = 0;
        self.shared = Vsa::new(self.t, self.burst);
    }
}

fn step(cell: &mut Vsa, now: u64, n: u64) -> Expect {
    if n == 0 {
        return Expect::Admit;
    }
    match cell.step(now, n) {
        RefDecision::Ok => Expect::Admit,
        RefDecision::NotUntil(at) => Expect::Limited(at),
        RefDecision::Never => Expect::Never,
    }
}

/// Run `ops` on a keyed token-bucket limiter (`calls` per `period_ns`, `burst`) and on the model;
/// `Err` describes the first disagreement.
pub fn run_history(
    max_keys: usize,
    overflow: OverflowPolicy,
    per_key_stats: bool,
    calls: u64,
    period_ns: u64,
    burst: u64,
    ops: &[Op],
) -> Result<(), String> {
    let clock = ManualClock::new();
    let quota = Quota::new(calls, Duration::from_nanos(period_ns)).with_burst(burst);
    let limiter = RateLimiter::builder(quota)
        .clock(clock.clone())
        .stats(false)
        .keyed::<u32>()
        .max_keys(max_keys)
        .overflow(overflow)
        .per_key_stats(per_key_stats)
        .build()
        .map_err(|e| format!("build: {e}"))?;
    let t = period_ns.div_ceil(calls);
    let mut model = StoreModel::new(max_keys, overflow, t, burst);
    for (i, op) in ops.iter().enumerate() {
        let now = clock.now();
        let fail = |what: String| Err(format!("op {i} {op:?} at {now} ns: {what}"));
        match *op {
            Op::Check { key, n } => {
                let want = model.check(key, n, now);
                let got = limiter.check_key_n(&key, n);
                if let Err(e) = compare(want, &got, now) {
                    return fail(e);
                }
                let (got, want) = (limiter.retry_after_key(&key), model.retry_after(key, now));
                if got.as_nanos() != want {
                    return fail(format!("retry_after_key {got:?}, model {want} ns"));
                }
            }
            Op::Refund { key, n } => {
                let (want, refund) = model.check_and_refund(key, n, now);
                let got = limiter.check_key_n(&key, n);
                if let Err(e) = compare(want, &got, now) {
                    return fail(e);
                }
                if let (true, Ok(a)) = (refund, &got) {
                    if !limiter.cancel_key(&key, a) {
                        return fail("cancel_key refused to give the admission back".into());
                    }
                }
                let (got, want) = (limiter.retry_after_key(&key), model.retry_after(key, now));
                if got.as_nanos() != want {
                    return fail(format!(
                        "after the refund: retry_after_key {got:?}, model {want} ns"
                    ));
                }
            }
            Op::Flood { first, count } => {
                for key in first..first.saturating_add(count) {
                    let want = model.check(key, 1, now);
                    let got = limiter.check_key_n(&key, 1);
                    if let Err(e) = compare(want, &got, now) {
                        return fail(format!("flood key {key}: {e}"));
                    }
                }
            }
            Op::Advance { ns } => clock.advance(Duration::from_nanos(ns)),
            Op::Sweep => {
                limiter.sweep();
            }
            Op::ResetKey { key } => {
                limiter.reset_key(&key);
                model.reset_key(key, now);
            }
            Op::ResetAll => {
                limiter.reset_all();
                model.reset_all();
            }
        }
        let (held, live) = (limiter.len(), model.live(clock.now()));
        if held > max_keys || held < live.min(max_keys) {
            return fail(format!(
                "{held} keys held, {live} live, max_keys {max_keys}"
            ));
        }
    }
    Ok(())
}

fn compare(
    want: Expect,
    got: &Result<fluxrate_core::Admitted, Denied>,
    now: u64,
) -> Result<(), String> {
    let now = u128::from(now);
    match (want, got) {
        (Expect::Admit, Ok(_)) | (Expect::Never, Err(Denied::Never(_))) => Ok(()),
        (Expect::Limited(at), Err(Denied::Limited(l)))
            if l.retry_after().as_nanos() == at - now =>
        {
            Ok(())
        }
        // Room: the store may only know a lower bound of when a key goes idle, never a later
        // time (a retry at the time it gives must not be refused for room for no reason).
        (Expect::Full(at), Err(Denied::Limited(l)))
            if l.retry_after().as_nanos() >= 1
                && l.retry_after().as_nanos() <= at.saturating_sub(now).max(1) =>
        {
            Ok(())
        }
        (want, got) => Err(format!("model {want:?}, limiter {got:?}")),
    }
}
