//! Window-based algorithms: fixed window, sliding window counter, exact sliding log.

pub(crate) mod counter;
pub(crate) mod fixed;
pub(crate) mod log;

use crate::error::ConfigError;
use crate::quota::Quota;

/// Validated `(limit, window_ns)` of a window algorithm.
pub(crate) fn limit_and_window(quota: &Quota) -> Result<(u64, u64), ConfigError> {
    quota.validated()
}

/// `k·w` as u128 (window start of window `k`).
#[inline]
pub(crate) fn start_of(k: u64, w: u64) -> u128 {
    u128::from(k) * u128::from(w)
}

/// `x` saturated into a u64.
#[inline]
pub(crate) fn sat(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// Division by a window length fixed at construction, as two multiplications (Lemire, Kaser and
/// Kurz, "Faster remainder by direct computation", 2019): with `c = ⌈2^128 / d⌉`,
/// `⌊n / d⌋ = ⌊c·n / 2^128⌋` for every 64-bit `n`. A 64-bit `div` costs tens of cycles on the
/// hot path of the window algorithms; this costs two multiplications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Divisor {
    d: u64,
    c_lo: u64,
    c_hi: u64,
}

impl Divisor {
    /// `d ≥ 1`.
    pub(crate) fn new(d: u64) -> Self {
        // For d = 1, c = 2^128 does not fit: `div` special-cases it (c is unused).
        let c = if d <= 1 {
            0
        } else {
            u128::MAX / u128::from(d) + 1
        };
        Self {
            d,
            c_lo: c as u64,
            c_hi: (c >> 64) as u64,
        }
    }

    #[inline]
    pub(crate) fn div(&self, n: u64) -> u64 {
        if self.d <= 1 {
            return n;
        }
        let n = u128::from(n);
        let lo = (u128::from(self.c_lo) * n) >> 64;
        ((u128::from(self.c_hi) * n + lo) >> 64) as u64
    }
}

/// A xorshift generator for the unit tests of this module.
#[cfg(test)]
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

#[cfg(test)]
mod tests {
    use super::{xorshift, Divisor};

    #[test]
    fn divisor_matches_division() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        let mut ds = vec![
            1,
            2,
            3,
            5,
            7,
            10,
            1000,
            1_000_000_000,
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
        ];
        for k in 1..64 {
            ds.extend([(1u64 << k) - 1, 1 << k, (1u64 << k) + 1]);
        }
        for _ in 0..2000 {
            ds.push(next() >> (next() % 64));
        }
        for d in ds.into_iter().filter(|&d| d > 0) {
            let div = Divisor::new(d);
            let mut ns = vec![0, 1, d - 1, d, d.wrapping_add(1), u64::MAX, u64::MAX - 1];
            ns.extend((1..=3).map(|m: u64| d.wrapping_mul(m)));
            ns.extend((1..=3).map(|m: u64| d.wrapping_mul(m).wrapping_sub(1)));
            ns.extend((0..200).map(|_| next() >> (next() % 64)));
            for n in ns {
                assert_eq!(div.div(n), n / d, "{n} / {d}");
            }
        }
    }
}
