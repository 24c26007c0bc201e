//! The response fields of draft-ietf-httpapi-ratelimit-headers-11 (`RateLimit-Policy`,
//! `RateLimit`), the legacy `X-RateLimit-*`, and what they say per algorithm: the available
//! quota `r` and the effective window `t`.

use crate::{Algorithm, ConfigError, Quota};
use ::http::header::{HeaderMap, HeaderName, HeaderValue};
use std::fmt::Write as _;
use std::time::Duration;

/// The largest integer a structured field may carry (RFC 9651 §3.3.1: 15 digits).
pub(super) const SF_INT_MAX: u64 = 999_999_999_999_999;

/// A structured-field integer: clamped to its legal range.
pub(super) fn sf_int(x: u64) -> u64 {
    x.min(SF_INT_MAX)
}

/// Check that `name` can be sent as a structured-field string as it is: not empty, printable
/// ASCII only (so that two names never render alike).
pub(super) fn validate_name(name: &str) -> Result<(), ConfigError> {
    let reason = if name.is_empty() {
        "empty"
    } else if !name.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        "only printable ASCII (space to `~`) can be sent in a structured-field string"
    } else {
        return Ok(());
    };
    Err(ConfigError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// What the `RateLimit-Policy` item of one limit says: `q` units per `w` seconds (the quota's
/// long-run rate in whole seconds), the capacity when it differs (`fluxrate-burst`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    q: u64,
    w: u64,
    burst: Option<u64>,
}

impl Policy {
    /// `w` is the period rounded up to whole seconds (≥ 1, as the draft forbids sub-second
    /// windows) and `q` the calls that quota allows in `w`, rounded down.
    pub(super) fn of(quota: Quota, algorithm: Algorithm, capacity: u64) -> Self {
        let period = quota.period().as_nanos().max(1);
        let w = period.div_ceil(1_000_000_000).max(1);
        let q = u128::from(quota.calls())
            .saturating_mul(w)
            .saturating_mul(1_000_000_000)
            / period;
        let bucket = matches!(algorithm, Algorithm::TokenBucket | Algorithm::LeakyBucket);
        Self {
            q: sf_int(u64::try_from(q).unwrap_or(u64::MAX)),
            w: sf_int(u64::try_from(w).unwrap_or(u64::MAX)),
            burst: (bucket && capacity != quota.calls()).then(|| sf_int(capacity)),
        }
    }
}

/// The `RateLimit` item of one limit after a decision: the available quota `r`, the effective
/// window `t` (whole seconds, rounded down; left out when the backend cannot tell it), and,
/// for the legacy fields, when the key is fully replenished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Current {
    pub(super) r: u64,
    pub(super) t: Option<Duration>,
    pub(super) reset: Duration,
    /// A bucket's TAT ahead of the decision (ns), from which the numbers are recomputed when
    /// the state moves without traffic (a shaped request's wait, a give-back); `None` for the
    /// windows and for numbers not the limit's own.
    pub(super) ahead: Option<u64>,
}

/// `r` and the effective window for a token or leaky bucket whose TAT is `ahead` ns past the
/// decision, with capacity `b`, interval `t` ns and, for a shaper, a longest queue delay
/// `max_wait` ns.
///
/// A unit is admitted at `s` when `max(TAT, s) + T − s ≤ b·T` (both buckets), and a shaper
/// also needs its delay `max(TAT, s) − s ≤ max_wait`. With `R = ahead`: `r_q = b − ⌈R/T⌉`
/// by capacity, `r_d = ⌊(max_wait − R)/T⌋ + 1` by delay (0 if `R > max_wait`), `r = min`.
/// Using `r` now moves the TAT to `now + R + r·T`; the next unit then fits by capacity after
/// `Δ_q = R + T − ⌈R/T⌉·T` (`R mod T` in `(0, T]`, `T` at `R = 0`) when `r = r_q` (else at
/// once), and by delay after `R + r·T − max_wait`: the window is the later of the two.
pub(super) fn bucket_current(b: u64, t: u64, ahead: u64, max_wait: Option<u64>) -> (u64, u64) {
    let t = t.max(1);
    let r_q = b.saturating_sub(ahead.div_ceil(t));
    // `R + (r_q + 1)·T − b·T`: `R mod T` in `(0, T]` normally; the retry time when the TAT is
    // more than `b·T` ahead (a clock behind the state).
    let delta_q = (u128::from(ahead) + (u128::from(r_q) + 1) * u128::from(t))
        .saturating_sub(u128::from(b) * u128::from(t));
    let delta_q = u64::try_from(delta_q).unwrap_or(u64::MAX);
    let Some(m) = max_wait else {
        return (r_q, delta_q);
    };
    let r_d = if ahead > m { 0 } else { (m - ahead) / t + 1 };
    let r = r_q.min(r_d);
    let by_delay =
        (u128::from(ahead) + u128::from(r) * u128::from(t)).saturating_sub(u128::from(m));
    let by_delay = u64::try_from(by_delay).unwrap_or(u64::MAX);
    let window = if r == r_q {
        delta_q.max(by_delay)
    } else {
        by_delay
    };
    (r, window)
}

/// Whole seconds, rounded up.
pub(super) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// A header value from text the layer built (ASCII only: never fails in practice).
pub(super) fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A structured-field string: quoted, `"` and `\` escaped (names are validated printable
/// ASCII; anything else is dropped, which validation makes unreachable).
pub(super) fn sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Field values with up to this many bytes are built on the stack.
const INLINE: usize = 192;

/// The bytes of one field value being built: on the stack, moved to the heap past [`INLINE`]
/// bytes (so a value costs one allocation, the `HeaderValue`'s own).
pub(super) struct FieldValue {
    inline: [u8; INLINE],
    len: usize,
    spilled: Vec<u8>,
}

impl FieldValue {
    pub(super) fn new() -> Self {
        Self {
            inline: [0; INLINE],
            len: 0,
            spilled: Vec::new(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0 && self.spilled.is_empty()
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        match self.inline.get_mut(self.len..self.len + bytes.len()) {
            Some(room) if self.spilled.is_empty() => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            _ => {
                if self.spilled.is_empty() {
                    self.spilled.extend_from_slice(&self.inline[..self.len]);
                }
                self.spilled.extend_from_slice(bytes);
            }
        }
    }

    /// `x` in decimal.
    pub(super) fn push_int(&mut self, mut x: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (x % 10) as u8;
            x /= 10;
            if x == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    fn as_bytes(&self) -> &[u8] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }

    /// The header value (the layer writes printable ASCII only: never fails in practice).
    pub(super) fn value(&self) -> HeaderValue {
        HeaderValue::from_bytes(self.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A structured-field string as [`sf_string`] writes it.
pub(super) fn sf_string_of(s: &str) -> Box<str> {
    let mut out = String::new();
    sf_string(&mut out, s);
    out.into()
}

/// The `RateLimit-Policy` values of a layer, built once with it: value `k` has the items of
/// limits `0..=k` (`name` is the limit's name, `unit` the layer's quota unit), the field of
/// a request decided up to limit `k`.
pub(super) fn policy_fields<'a>(
    limits: impl IntoIterator<Item = (&'a str, Policy)>,
    unit: Option<&str>,
) -> Vec<HeaderValue> {
    let mut policy = String::new();
    let mut fields = Vec::new();
    for (name, p) in limits {
        if !policy.is_empty() {
            policy.push_str(", ");
        }
        sf_string(&mut policy, name);
        let _ = write!(policy, ";q={}", p.q);
        if let Some(u) = unit {
            policy.push_str(";qu=");
            sf_string(&mut policy, u);
        }
        let _ = write!(policy, ";w={}", p.w);
        if let Some(b) = p.burst {
            let _ = write!(policy, ";fluxrate-burst={b}");
        }
        fields.push(header_value(policy.clone()));
    }
    fields
}

/// `RateLimit-Policy`.
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// One limit's share of the fields.
#[derive(Clone, Copy)]
pub(super) struct Item<'a> {
    /// The limit's name as a structured-field string (quoted).
    pub(super) sf_name: &'a str,
    /// Burst, queue capacity, or calls per window (the legacy `X-RateLimit-Limit`), as a
    /// header value.
    pub(super) capacity: &'a HeaderValue,
    pub(super) current: Option<Current>,
}

/// The fields of one response, computed when its request is decided and written onto the
/// response later ([`write`](Self::write)).
#[derive(Default)]
pub(super) struct Fields {
    policy: Option<HeaderValue>,
    current: Option<HeaderValue>,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`.
    legacy: Option<[HeaderValue; 3]>,
}

impl Fields {
    /// `RateLimit-Policy` (`policy`: the items of every limit checked, from
    /// [`policy_fields`]), `RateLimit` (those of `items` with numbers: a fail-open limit has
    /// none), and optionally `X-RateLimit-*` (the most restrictive limit: fewest remaining,
    /// then the longest reset).
    pub(super) fn new<'a>(
        policy: Option<&HeaderValue>,
        items: impl Iterator<Item = Item<'a>> + Clone,
        legacy: bool,
    ) -> Self {
        let Some(policy) = policy else {
            return Self::default();
        };
        let mut current = FieldValue::new();
        for it in items.clone() {
            if let Some(c) = it.current {
                if !current.is_empty() {
                    current.push(b", ");
                }
                current.push(it.sf_name.as_bytes());
                current.push(b";r=");
                current.push_int(sf_int(c.r));
                if let Some(t) = c.t {
                    current.push(b";t=");
                    current.push_int(sf_int(t.as_secs()));
                }
            }
        }
        let legacy = legacy
            .then(|| {
                items
                    .filter_map(|it| it.current.map(|c| (it, c)))
                    .min_by_key(|(_, c)| (c.r, core::cmp::Reverse(c.reset)))
            })
            .flatten()
            .map(|(it, c)| {
                let int = |v: u64| {
                    let mut f = FieldValue::new();
                    f.push_int(sf_int(v));
                    f.value()
                };
                [it.capacity.clone(), int(c.r), int(ceil_secs(c.reset))]
            });
        Self {
            policy: Some(policy.clone()),
            current: (!current.is_empty()).then(|| current.value()),
            legacy,
        }
    }

    /// Write the fields onto `headers`.
    pub(super) fn write(self, headers: &mut HeaderMap) {
        let Some(policy) = self.policy else { return };
        headers.reserve(
            1 + usize::from(self.current.is_some()) + 3 * usize::from(self.legacy.is_some()),
        );
        headers.insert(RATELIMIT_POLICY, policy);
        if let Some(current) = self.current {
            headers.insert(RATELIMIT, current);
        }
        if let Some([limit, remaining, reset]) = self.legacy {
            headers.insert(X_RATELIMIT_LIMIT, limit);
            headers.insert(X_RATELIMIT_REMAINING, remaining);
            headers.insert(X_RATELIMIT_RESET, reset);
        }
    }
}

/// A JSON string (names are printable ASCII; `"` and `\` escaped).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An RFC 9457 problem details body (`application/problem+json`) with the draft's
/// `violated-policies` member.
pub(super) fn problem_json(
    kind: &str,
    title: &str,
    status: u16,
    detail: &str,
    violated: &str,
) -> String {
    let mut out = String::from("{\"type\":");
    if kind == "about:blank" {
        json_string(&mut out, kind);
    } else {
        json_string(
            &mut out,
            &format!("https://iana.org/assignments/http-problem-types#{kind}"),
        );
    }
    out.push_str(",\"title\":");
    json_string(&mut out, title);
    let _ = write!(out, ",\"status\":{status},\"detail\":");
    json_string(&mut out, detail);
    out.push_str(",\"violated-policies\":[");
    json_string(&mut out, violated);
    out.push_str("]}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_numbers() {
        // 3 per minute (T = 20 s), burst 3, the TAT 25 s ahead: 1 left, the next after 5 s.
        let s = 1_000_000_000;
        assert_eq!(bucket_current(3, 20 * s, 25 * s, None), (1, 5 * s));
        assert_eq!(bucket_current(3, 20 * s, 0, None), (3, 20 * s));
        assert_eq!(bucket_current(3, 20 * s, 40 * s, None), (1, 20 * s));
        assert_eq!(bucket_current(3, 20 * s, 60 * s, None), (0, 20 * s));
        // A shaper with a 20 s cap: from a queue 25 s ahead no unit can go within the cap.
        assert_eq!(bucket_current(3, 20 * s, 25 * s, Some(20 * s)), (0, 5 * s));
        // Empty queue, cap 20 s: two fit (delays 0 and 20 s), the third when the first has
        // gone (40 s of queue − 20 s cap).
        assert_eq!(bucket_current(5, 20 * s, 0, Some(20 * s)), (2, 20 * s));
    }

    #[test]
    fn names_and_integers() {
        assert!(validate_name("per-ip").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("límite").is_err());
        assert!(validate_name("a\tb").is_err());
        assert_eq!(sf_int(u64::MAX), SF_INT_MAX);
        let mut s = String::new();
        sf_string(&mut s, r#"a"b\c"#);
        assert_eq!(s, r#""a\"b\\c""#);
    }

    #[test]
    fn field_values_inline_and_spilled() {
        for x in [0, 7, 10, 999_999_999_999_999, u64::MAX] {
            let mut f = FieldValue::new();
            f.push_int(x);
            assert_eq!(f.value(), x.to_string().as_str());
        }
        // Past the inline bytes, one push at a time and in one push that does not fit.
        let long: String = (0..100).map(|i| format!("{i},")).collect();
        let mut f = FieldValue::new();
        assert!(f.is_empty());
        for chunk in long.as_bytes().chunks(7) {
            f.push(chunk);
        }
        assert_eq!(f.value(), long.as_str());
        let mut f = FieldValue::new();
        f.push(b"ab");
        f.push(long.as_bytes());
        assert!(!f.is_empty());
        assert_eq!(f.value(), format!("ab{long}").as_str());
    }
}
