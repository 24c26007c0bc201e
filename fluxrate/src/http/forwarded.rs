//! Forwarding headers as raw bytes, read from the right: `X-Forwarded-For` entries,
//! `Forwarded` elements (split outside quoted strings) and single-address headers, each
//! entry decoded on its own into an address (or found unusable), nothing allocated.

use ::http::header::{HeaderName, FORWARDED};
use ::http::{HeaderMap, HeaderValue};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The raw bytes of every `name` field line, the last line first.
pub(super) fn lines<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .rev()
        .map(HeaderValue::as_bytes)
}

/// The `X-Forwarded-For` entries, right to left: the last line first, each split on `,` from
/// its end. Borrowed slices of the raw bytes, nothing allocated, nothing decoded.
pub(super) fn xff_entries(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    lines(headers, &X_FORWARDED_FOR).flat_map(|line| line.rsplit(|&b| b == b','))
}

/// The `Forwarded` elements, right to left: the last line first, each split on the commas
/// outside quoted strings, from its end. A proxy that quotes a value it copied from the
/// request (HAProxy's `option forwarded host`: `host="x, for=6.6.6.6;a="`) keeps its element
/// whole, so no comma or semicolon the client put in that value can start a `for=` of its own.
pub(super) fn forwarded_elements(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    lines(headers, &FORWARDED).flat_map(|line| Unquoted::split(line, b','))
}

/// The pieces of a byte string between `sep` bytes outside quoted strings (RFC 9110
/// `quoted-string`, with `\`-escapes), right to left, borrowed. Scanning stops at the first
/// separator found, so a piece costs only its own bytes: an unbalanced quote further left
/// (written by the client) is never reached while the pieces to its right are well formed.
pub(super) struct Unquoted<'a> {
    rest: Option<&'a [u8]>,
    sep: u8,
}

impl<'a> Unquoted<'a> {
    fn split(bytes: &'a [u8], sep: u8) -> Self {
        Self {
            rest: Some(bytes),
            sep,
        }
    }
}

impl<'a> Iterator for Unquoted<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let bytes = self.rest?;
        let mut quoted = false;
        for (i, &b) in bytes.iter().enumerate().rev() {
            if b == b'"' && !escaped(&bytes[..i]) {
                quoted = !quoted;
            } else if b == self.sep && !quoted {
                self.rest = Some(&bytes[..i]);
                return Some(&bytes[i + 1..]);
            }
        }
        self.rest = None;
        Some(bytes)
    }
}

/// Whether the byte after `before` is escaped: preceded by an odd number of backslashes.
pub(super) fn escaped(before: &[u8]) -> bool {
    before.iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// `bytes` without leading and trailing spaces and tabs.
pub(super) fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Whether `port` is a port: 1 to 5 decimal digits (or, for RFC 7239, an obfuscated
/// `_`-identifier; a port does not change the address).
pub(super) fn is_port(port: &[u8]) -> bool {
    match port.first() {
        Some(b'_') => port[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
        Some(_) => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
        None => false,
    }
}

/// `[v6]` or `[v6]:port`.
pub(super) fn bracketed_v6(node: &str) -> Option<IpAddr> {
    let (v6, rest) = node.strip_prefix('[')?.split_once(']')?;
    if !rest.is_empty() && !is_port(rest.strip_prefix(':')?.as_bytes()) {
        return None;
    }
    v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// `v4` or `v4:port`.
pub(super) fn v4_with_port(node: &str) -> Option<IpAddr> {
    let (v4, port) = match node.split_once(':') {
        Some((v4, port)) => (v4, Some(port)),
        None => (node, None),
    };
    if port.is_some_and(|p| !is_port(p.as_bytes())) {
        return None;
    }
    v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// One `X-Forwarded-For` entry (or a single-address header): an address, `v4:port`,
/// `[v6]` or `[v6]:port`, with optional spaces around it.
pub(super) fn xff_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(trim(entry)).ok()?;
    if s.starts_with('[') {
        return bracketed_v6(s);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    v4_with_port(s)
}

/// The address in the `for=` parameter of one `Forwarded` element (pairs separated by `;`
/// outside quoted strings, the parameter name in any case, the value optionally quoted):
/// `v4`, `v4:port`, `[v6]` or `[v6]:port`. No `for=`, two of them, `unknown`, an obfuscated
/// `_identifier` or anything else: unusable.
pub(super) fn forwarded_element(element: &[u8]) -> Option<IpAddr> {
    let mut found = None;
    for pair in Unquoted::split(element, b';') {
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            continue;
        };
        if !trim(&pair[..eq]).eq_ignore_ascii_case(b"for") {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(trim(&pair[eq + 1..]));
    }
    let value = found?;
    let node = match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    };
    let node = std::str::from_utf8(node).ok()?;
    if node.starts_with('[') {
        bracketed_v6(node)
    } else {
        v4_with_port(node)
    }
}

/// The address in the last `name` field line, which must hold exactly one.
pub(super) fn single(headers: &HeaderMap, name: &HeaderName) -> Option<IpAddr> {
    let line = headers.get_all(name).iter().next_back()?.as_bytes();
    if line.contains(&b',') {
        return None;
    }
    xff_entry(line)
}
