//! How a subject becomes part of a Redis key: [`RedisKey`], its escaping, and the names of a
//! limit's keys (`prefix:{subject}:id:alg`).

use super::error::InvalidInput;
use super::script::ScriptAlgorithm;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A value that can name a rate-limited subject in Redis: its bytes go (escaped) inside the
/// key's hash tag.
///
/// Two subjects are the same limit exactly when they write the same bytes: `"42"` and `42u64`
/// share one limit. Implement it for your own key types by writing a stable, unambiguous text.
///
/// ```
/// use fluxrate::redis::RedisKey;
///
/// struct Tenant { id: u32 }
///
/// impl RedisKey for Tenant {
///     fn write_redis_key(&self, out: &mut Vec<u8>) {
///         out.extend_from_slice(b"tenant/");
///         self.id.write_redis_key(out);
///     }
/// }
/// let mut out = Vec::new();
/// Tenant { id: 7 }.write_redis_key(&mut out);
/// assert_eq!(out, b"tenant/7");
/// ```
pub trait RedisKey {
    /// Append this subject's bytes to `out`.
    fn write_redis_key(&self, out: &mut Vec<u8>);
}

impl<T: RedisKey + ?Sized> RedisKey for &T {
    fn write_redis_key(&self, out: &mut Vec<u8>) {
        (**self).write_redis_key(out);
    }
}

impl RedisKey for [u8] {
    fn write_redis_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl RedisKey for str {
    fn write_redis_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

macro_rules! by_deref {
    ($($t:ty),*) => {$(
        impl RedisKey for $t {
            fn write_redis_key(&self, out: &mut Vec<u8>) {
                (**self).write_redis_key(out);
            }
        }
    )*};
}
by_deref!(String, Vec<u8>, Box<str>, Box<[u8]>);

macro_rules! by_display {
    ($($t:ty),*) => {$(
        impl RedisKey for $t {
            fn write_redis_key(&self, out: &mut Vec<u8>) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
by_display!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, IpAddr, Ipv4Addr, Ipv6Addr
);

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
impl RedisKey for crate::http::RequestKey {
    /// `g` (global), `i` + the address, `t` + the text, `u` (unknown): distinct variants never
    /// share a limit.
    fn write_redis_key(&self, out: &mut Vec<u8>) {
        use crate::http::RequestKey;
        match self {
            RequestKey::Global => out.push(b'g'),
            RequestKey::Ip(ip) => {
                out.push(b'i');
                ip.write_redis_key(out);
            }
            RequestKey::Text(t) => {
                out.push(b't');
                t.write_redis_key(out);
            }
            _ => out.push(b'u'),
        }
    }
}

/// Append `raw` to `out` so that it can sit inside a hash tag: `{`, `}` and `%` become `%7B`,
/// `%7D` and `%25`, and an empty subject becomes a lone `%` (an empty tag `{}` would not be a
/// hash tag at all). The mapping is injective: every `%` it writes is followed by two hex
/// digits, except the lone one.
fn escape_into(raw: &[u8], out: &mut Vec<u8>) {
    if raw.is_empty() {
        out.push(b'%');
        return;
    }
    for &b in raw {
        match b {
            b'{' => out.extend_from_slice(b"%7B"),
            b'}' => out.extend_from_slice(b"%7D"),
            b'%' => out.extend_from_slice(b"%25"),
            _ => out.push(b),
        }
    }
}

/// The names of one limit's keys: `prefix:{escaped subject}:id:alg`, and its auxiliary key.
#[derive(Debug)]
pub(crate) struct KeyNames {
    /// `prefix:{`
    head: Vec<u8>,
    /// `}:id:alg`
    tail: Vec<u8>,
    /// The longest escaped subject accepted.
    max_len: usize,
    /// Whether the auxiliary key is a key of its own (`…:seq`) or the state key again.
    aux: bool,
}

impl KeyNames {
    /// The names for limit `id` of `algorithm` under `prefix` (both checked by [`valid_name`]).
    pub(crate) fn new(prefix: &str, id: &str, algorithm: ScriptAlgorithm, max_len: usize) -> Self {
        Self {
            head: format!("{prefix}:{{").into_bytes(),
            tail: format!("}}:{id}:{}", algorithm.key_suffix()).into_bytes(),
            max_len,
            aux: algorithm.has_aux_key(),
        }
    }

    /// The state and auxiliary key names for subject `raw`.
    pub(crate) fn names(&self, raw: &[u8]) -> Result<(Vec<u8>, Vec<u8>), InvalidInput> {
        let mut state = Vec::with_capacity(self.head.len() + raw.len() + self.tail.len() + 8);
        state.extend_from_slice(&self.head);
        escape_into(raw, &mut state);
        let len = state.len() - self.head.len();
        if len > self.max_len {
            return Err(InvalidInput::KeyTooLong {
                len,
                max: self.max_len,
            });
        }
        state.extend_from_slice(&self.tail);
        let mut aux = state.clone();
        // See `ScriptAlgorithm::has_aux_key`: every key a script declares exists together.
        if self.aux {
            aux.extend_from_slice(b":seq");
        }
        Ok((state, aux))
    }
}

/// Whether `name` may be a key prefix or a limit id: 1 to 64 of `A-Z a-z 0-9 _ - . /`.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        escape_into(raw, &mut out);
        out
    }

    #[test]
    fn escaping_keeps_the_tag_whole_and_is_injective() {
        assert_eq!(esc(b"user:1"), b"user:1");
        assert_eq!(esc(b"a}b{c%"), b"a%7Db%7Bc%25");
        assert_eq!(esc(b""), b"%");
        assert_ne!(esc(b"%"), esc(b""));
        assert_ne!(esc(b"%7D"), esc(b"}"));
        for raw in [&b"}"[..], b"{", b"{}", b"x}y"] {
            assert!(!esc(raw).contains(&b'}') && !esc(raw).contains(&b'{'));
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("api.v1/login-2"));
        assert!(!valid_name(""));
        assert!(!valid_name("a:b"));
        assert!(!valid_name("a{b"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
