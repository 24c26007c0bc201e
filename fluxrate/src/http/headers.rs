//! The response fields: `RateLimit-Policy`, `RateLimit`, the legacy `X-RateLimit-*`.

use crate::Quota;
use ::http::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// One limit's numbers for the headers.
pub(super) struct Numbers {
    pub(super) name: String,
    pub(super) limit: u64,
    pub(super) window: u64,
    pub(super) remaining: u64,
    pub(super) reset: u64,
}

pub(super) fn window_secs(quota: Quota) -> u64 {
    quota.period().as_secs_f64().ceil().max(1.0) as u64
}

pub(super) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub(super) fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A structured-field string (names are quoted; `"` and `\` escaped).
pub(super) fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

pub(super) fn write_headers(headers: &mut HeaderMap, numbers: &[Numbers], legacy: bool) {
    if numbers.is_empty() {
        return;
    }
    let policy = numbers
        .iter()
        .map(|n| format!("{};q={};w={}", sf_string(&n.name), n.limit, n.window))
        .collect::<Vec<_>>()
        .join(", ");
    let current = numbers
        .iter()
        .map(|n| format!("{};r={};t={}", sf_string(&n.name), n.remaining, n.reset))
        .collect::<Vec<_>>()
        .join(", ");
    headers.insert(
        HeaderName::from_static("ratelimit-policy"),
        header_value(policy),
    );
    headers.insert(HeaderName::from_static("ratelimit"), header_value(current));
    if legacy {
        // The most restrictive limit: fewest remaining, then the longest reset.
        let n = numbers
            .iter()
            .min_by_key(|n| (n.remaining, u64::MAX - n.reset))
            .expect("not empty");
        headers.insert(
            HeaderName::from_static("x-ratelimit-limit"),
            header_value(n.limit.to_string()),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            header_value(n.remaining.to_string()),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-reset"),
            header_value(n.reset.to_string()),
        );
    }
}
