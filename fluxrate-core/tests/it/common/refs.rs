//! Independent sequential reference models (u128 arithmetic) and the window checkers.
//!
//! None of this shares code with the implementation: each model is written from the
//! definitions of the test plan (TESTS.md). No dependencies, so that the fuzz target can
//! include this file too.
#![allow(dead_code, unreachable_pub)]

/// ITU-T I.371 continuous-state leaky bucket (X, LCT): the GCRA reference.
#[derive(Debug, Clone)]
pub struct Cslb {
    x: u128,
    lct: u128,
    i: u128,
    l: u128,
}

impl Cslb {
    pub fn new(t: u64, burst: u64) -> Self {
        Self {
            x: 0,
            lct: 0,
            i: t.into(),
            l: (u128::from(burst) - 1) * u128::from(t),
        }
    }

    /// Decide n cells at ta; true if conforming (and then recorded).
    pub fn step(&mut self, ta: u64, n: u64) -> bool {
        let (ta, n) = (u128::from(ta), u128::from(n));
        let xp = (self.x + self.lct).saturating_sub(ta);
        if n == 0 || (n - 1) * self.i > self.l || xp + (n - 1) * self.i > self.l {
            return false;
        }
        self.x = xp + n * self.i;
        self.lct = ta;
        true
    }
}

/// ITU-T I.371 virtual scheduling: the second GCRA reference, with the exact NotUntil.
#[derive(Debug, Clone)]
pub struct Vsa {
    pub tat: u128,
    t: u128,
    tau: u128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefDecision {
    Ok,
    /// Denied; conforming from this absolute time.
    NotUntil(u128),
    Never,
}

impl Vsa {
    pub fn new(t: u64, burst: u64) -> Self {
        Self {
            tat: 0,
            t: t.into(),
            tau: (u128::from(burst) - 1) * u128::from(t),
        }
    }

    pub fn step(&mut self, ta: u64, n: u64) -> RefDecision {
        let (ta, n) = (u128::from(ta), u128::from(n));
        if (n - 1) * self.t > self.tau {
            return RefDecision::Never;
        }
        // Conforming iff ta ≥ TAT + (n−1)T − τ.
        let earliest = (self.tat + (n - 1) * self.t).saturating_sub(self.tau);
        if ta < earliest {
            return RefDecision::NotUntil(earliest);
        }
        self.tat = self.tat.max(ta) + n * self.t;
        RefDecision::Ok
    }
}

/// Fixed window reference: counts per aligned window, stale readers refused (F4).
#[derive(Debug, Clone, Default)]
pub struct FixedRef {
    pub w: u64,
    pub l: u64,
    /// (window index, count) of the newest window seen.
    pub cur: Option<(u64, u64)>,
}

impl FixedRef {
    pub fn new(l: u64, w: u64) -> Self {
        Self { w, l, cur: None }
    }

    pub fn step(&mut self, t: u64, n: u64) -> bool {
        if n > self.l {
            return false;
        }
        let k = t / self.w;
        let (ck, c) = self.cur.unwrap_or((k, 0));
        let c = match k.cmp(&ck) {
            std::cmp::Ordering::Greater => 0,
            std::cmp::Ordering::Equal => c,
            // A reader in an older window is judged against the newer one: since the newer
            // window's range starts where its own ends, it is always refused.
            std::cmp::Ordering::Less => return false,
        };
        let k = k.max(ck);
        if c + n > self.l {
            return false;
        }
        self.cur = Some((k, c + n));
        true
    }
}

/// Exact sliding log reference: every admitted timestamp, with weights.
#[derive(Debug, Clone, Default)]
pub struct LogRef {
    pub w: u64,
    pub l: u64,
    pub admitted: Vec<u64>,
}

impl LogRef {
    pub fn new(l: u64, w: u64) -> Self {
        Self {
            w,
            l,
            admitted: Vec::new(),
        }
    }

    /// L2 for monotone time: admit iff |log ∩ (t−W, t]| + n ≤ L.
    pub fn step(&mut self, t: u64, n: u64) -> bool {
        if n > self.l {
            return false;
        }
        let lo = u128::from(t) + 1;
        let in_window = self
            .admitted
            .iter()
            .filter(|&&a| u128::from(a) + u128::from(self.w) >= lo && a <= t)
            .count() as u64;
        if in_window + n > self.l {
            return false;
        }
        self.admitted.extend(std::iter::repeat(t).take(n as usize));
        true
    }
}

/// Sliding window counter reference: admit iff prev·(W−e) + (curr+n)·W ≤ L·W (monotone time).
#[derive(Debug, Clone, Default)]
pub struct SwcRef {
    pub w: u64,
    pub l: u64,
    pub counts: std::collections::BTreeMap<u64, u64>,
}

impl SwcRef {
    pub fn new(l: u64, w: u64) -> Self {
        Self {
            w,
            l,
            counts: Default::default(),
        }
    }

    pub fn step(&mut self, t: u64, n: u64) -> bool {
        if n > self.l {
            return false;
        }
        let k = t / self.w;
        let e = u128::from(t - k * self.w);
        let w = u128::from(self.w);
        let curr = u128::from(*self.counts.get(&k).unwrap_or(&0));
        let prev = if k == 0 {
            0
        } else {
            u128::from(*self.counts.get(&(k - 1)).unwrap_or(&0))
        };
        if prev * (w - e) + (curr + u128::from(n)) * w > u128::from(self.l) * w {
            return false;
        }
        *self.counts.entry(k).or_default() += n;
        true
    }
}

/// Leaky bucket shaper reference: departure = max(TAT, t); queue bound `capacity`.
#[derive(Debug, Clone)]
pub struct ShaperRef {
    pub tat: u128,
    t: u128,
    cap: u128,
}

impl ShaperRef {
    pub fn new(t: u64, cap: u64) -> Self {
        Self {
            tat: 0,
            t: t.into(),
            cap: cap.into(),
        }
    }

    /// Some(delay) if queued.
    pub fn step(&mut self, ta: u64, n: u64) -> Option<u128> {
        let (ta, n) = (u128::from(ta), u128::from(n));
        if n > self.cap {
            return None;
        }
        let base = self.tat.max(ta);
        if base + n * self.t - ta > self.cap * self.t {
            return None;
        }
        self.tat = base + n * self.t;
        Some(base - ta)
    }
}

/// Largest number of admissions (with weights) in any window `[s, s + len]` (closed), over
/// timestamps that may come in any order.
pub fn max_in_closed_window(admitted: &[(u64, u64)], len: u64) -> u64 {
    let mut v: Vec<(u64, u64)> = admitted.to_vec();
    v.sort_unstable();
    let mut best = 0;
    let mut sum = 0;
    let mut lo = 0;
    for hi in 0..v.len() {
        sum += v[hi].1;
        while u128::from(v[hi].0) > u128::from(v[lo].0) + u128::from(len) {
            sum -= v[lo].1;
            lo += 1;
        }
        best = best.max(sum);
    }
    best
}

/// Largest number of admissions in any half-open window `(s − len, s]` of length `len`.
pub fn max_in_half_open_window(admitted: &[(u64, u64)], len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    max_in_closed_window(admitted, len - 1)
}

/// P1: in every closed window of length `len`, at most `b + ⌊len / T⌋` unit cells.
pub fn check_arrival_curve(admitted: &[(u64, u64)], t: u64, b: u64) {
    let mut v: Vec<(u64, u64)> = admitted.to_vec();
    v.sort_unstable();
    // Check every window that starts at an admission (the worst windows do).
    for i in 0..v.len() {
        let mut sum = 0u128;
        for j in i..v.len() {
            sum += u128::from(v[j].1);
            let len = u128::from(v[j].0 - v[i].0);
            let bound = u128::from(b) + len / u128::from(t);
            assert!(
                sum <= bound,
                "P1 violated: {sum} cells in [{}, {}] but bound is {bound} (T={t}, b={b})",
                v[i].0,
                v[j].0
            );
        }
    }
}

/// The most admissions (with weights) in one aligned window `[k·w, (k + 1)·w)`.
pub fn max_per_aligned_window(admitted: &[(u64, u64)], w: u64) -> u64 {
    let mut per = std::collections::BTreeMap::<u64, u64>::new();
    for &(t, n) in admitted {
        *per.entry(t / w).or_default() += n;
    }
    per.values().copied().max().unwrap_or(0)
}

/// P1 for unit admissions in O(n log n), for long stress histories ([`check_arrival_curve`] is
/// quadratic): for sorted a_0 ≤ … ≤ a_m, every i ≤ j must satisfy
/// `j − i + 1 ≤ b + ⌊(a_j − a_i)/T⌋`, i.e. `a_i − iT ≤ a_j − jT + (b − 1)T`.
pub fn check_unit_arrival_curve(mut a: Vec<u64>, t: u64, b: u64) {
    a.sort_unstable();
    let t = i128::from(t);
    let mut best = i128::MIN;
    for (j, &aj) in a.iter().enumerate() {
        let c = i128::from(aj) - j as i128 * t;
        best = best.max(c);
        assert!(
            best <= c + (i128::from(b) - 1) * t,
            "P1 violated ending at admission {j} (t = {aj})"
        );
    }
}

/// Unit admissions at `times`, as the window checkers take them.
pub fn units(times: &[u64]) -> Vec<(u64, u64)> {
    times.iter().map(|&t| (t, 1)).collect()
}
