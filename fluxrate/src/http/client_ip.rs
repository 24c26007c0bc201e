//! The client's IP address and its key: the peer ([`PeerIp`]) or the client behind trusted
//! proxies ([`ForwardedIp`], read from the one header chosen by [`ForwardedHeader`]).

use super::forwarded::{forwarded_element, forwarded_elements, single, xff_entries, xff_entry};
use super::key::{KeyExtractor, RequestInfo, RequestKey};
use super::net::{IpNet, Prefixes};
use crate::ConfigError;
use ::http::header::HeaderName;
use ::http::{Extensions, HeaderMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A function from the request's extensions to the peer address.
type PeerFn = dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync;

/// The peer's IP address, as the server recorded it in the request's extensions, keyed by its
/// prefix.
///
/// By default it reads a `SocketAddr` extension. For axum, give it `ConnectInfo`:
/// `PeerIp::from_extension(|c: &ConnectInfo<SocketAddr>| c.0.ip())` (and serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`).
///
/// # Keys: canonical address, then prefix
///
/// The key is [`RequestKey::Ip`] of the peer address, first canonicalized (an IPv4-mapped
/// IPv6 address such as `::ffff:203.0.113.7`, which a dual-stack `[::]` listener reports for
/// an IPv4 client, is the IPv4 address `203.0.113.7`), then masked to a prefix of its family:
///
/// - **IPv6: /64 by default** ([`ipv6_prefix`](Self::ipv6_prefix), 16 to 128). A /64 is what
///   one subscriber line or one VM usually gets, and its owner can pick any of its 2⁶⁴
///   addresses per request: keyed by the full address, a per-IP limit would not limit an
///   IPv6 host at all (and every address would cost a store cell or a Redis key). Three
///   addresses of one /64 therefore share one key. Peers do the same: express-rate-limit
///   (`ipv6Subnet`), GitLab (`ipv6_rate_limit_prefix_length`, /64) and Cloudflare (which
///   counts IPv6 per /64). Use a shorter prefix (/56, /48) when clients get whole delegated
///   prefixes, or /128 to count every address on its own.
/// - **IPv4: /32 by default** ([`ipv4_prefix`](Self::ipv4_prefix), 8 to 32): one address.
///
/// Masking happens after canonicalization, so an IPv4 client is never masked with the IPv6
/// prefix (express-rate-limit's CVE-2026-30827 masked `::ffff:a.b.c.d` to its /56 and put every
/// IPv4 client in one bucket). The key names the masked address (`2001:db8::` for
/// `2001:db8::1`), and so does the Redis key built from it.
///
/// # Examples
///
/// ```
/// use fluxrate::http::{KeyExtractor, PeerIp, RequestInfo, RequestKey};
/// use std::net::SocketAddr;
///
/// let peer = PeerIp::new().ipv4_prefix(24)?;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert("[2001:db8::7]:4000".parse::<SocketAddr>()?);
/// assert_eq!(peer.key(&RequestInfo::of(&req)), Some(RequestKey::Ip("2001:db8::".parse()?)));
/// req.extensions_mut().insert("[::ffff:203.0.113.7]:4000".parse::<SocketAddr>()?);
/// assert_eq!(peer.key(&RequestInfo::of(&req)), Some(RequestKey::Ip("203.0.113.0".parse()?)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PeerIp {
    read: Arc<PeerFn>,
    prefixes: Prefixes,
}

impl fmt::Debug for PeerIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIp")
            .field("prefixes", &self.prefixes)
            .finish_non_exhaustive()
    }
}

impl Default for PeerIp {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerIp {
    /// Read a `SocketAddr` from the extensions.
    pub fn new() -> Self {
        Self {
            read: Arc::new(|e: &Extensions| e.get::<SocketAddr>().map(SocketAddr::ip)),
            prefixes: Prefixes::default(),
        }
    }

    /// Read the address from an extension of type `T` (for example axum's `ConnectInfo`).
    pub fn from_extension<T, F>(read: F) -> Self
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> IpAddr + Send + Sync + 'static,
    {
        Self {
            read: Arc::new(move |e: &Extensions| e.get::<T>().map(&read)),
            prefixes: Prefixes::default(),
        }
    }

    /// Key IPv6 clients by their first `bits` bits: 16 to 128, default 64 (see
    /// [the type's documentation](Self) for why), else [`ConfigError::InvalidPrefix`].
    pub fn ipv6_prefix(self, bits: u8) -> Result<Self, ConfigError> {
        Ok(Self {
            prefixes: self.prefixes.with_v6(bits)?,
            ..self
        })
    }

    /// Key IPv4 clients by their first `bits` bits: 8 to 32, default 32, else
    /// [`ConfigError::InvalidPrefix`].
    pub fn ipv4_prefix(self, bits: u8) -> Result<Self, ConfigError> {
        Ok(Self {
            prefixes: self.prefixes.with_v4(bits)?,
            ..self
        })
    }

    fn ip(&self, e: &Extensions) -> Option<IpAddr> {
        (self.read)(e)
    }
}

impl KeyExtractor for PeerIp {
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey> {
        let ip = self.ip(req.extensions)?;
        Some(RequestKey::Ip(self.prefixes.key(ip)))
    }
}

/// Which header the trusted proxies write the client address into.
///
/// An explicit choice: [`ForwardedIp`] reads this header and no other, and never falls back
/// from one to another. Whatever the proxy does not write, the client can: the proxy in
/// front must **overwrite or strip** every forwarding header it does not use, or at least the
/// application must not read it. Most proxies append to `X-Forwarded-For` and pass a client's
/// `Forwarded` and `X-Real-IP` through untouched: nginx
/// (`proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`), HAProxy
/// (`option forwardfor`), AWS ALB, Caddy (`reverse_proxy`) and Envoy
/// (`use_remote_address`) all append X-Forwarded-For. Behind them, choose
/// [`XForwardedFor`](Self::XForwardedFor); reading `Forwarded` there would let every client
/// pick its own key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For`: a comma-separated list of addresses, each proxy appending the
    /// address it received the request from. An entry is an address, `v4:port` or
    /// `[v6]:port`.
    XForwardedFor,
    /// `Forwarded` (RFC 7239): the `for=` parameter of each element (`for=192.0.2.60`,
    /// `for="[2001:db8::1]:4711"`, `for=192.0.2.60:80`). `for=unknown` and obfuscated
    /// identifiers (`for=_hidden`) are not addresses.
    Forwarded,
    /// A header that the proxy sets to a single address, replacing any value the client sent
    /// (nginx `proxy_set_header X-Real-IP $remote_addr;`). Its last field line must be one
    /// address (`v4:port` and `[v6]:port` accepted); a list or anything else is unusable.
    Single(HeaderName),
}

/// The client IP behind trusted reverse proxies, read from one chosen header and keyed by its
/// prefix.
///
/// # Which address is the client
///
/// 1. **One header, chosen explicitly** ([`ForwardedHeader`]): never a fallback from one to
///    another. The proxy must overwrite or strip the headers it does not write.
/// 2. **Only from trusted peers.** The header is read only when the direct peer
///    (canonicalized: `::ffff:10.0.0.9` is `10.0.0.9`) is in one of the `trusted` ranges
///    ([`IpNet`]: single hosts or CIDR ranges). From any other peer the client is the peer.
/// 3. **From the right, one entry at a time.** Each proxy appends the address it received the
///    request from, so the rightmost entries are the trusted ones and everything to their left
///    was written by the client. Field lines are read last first and split on `,` from the
///    right (for `Forwarded`, not inside quoted strings, so a proxy's quoted `host="…"` stays
///    one element), over the raw bytes (no allocation); each entry is decoded on its own, and no
///    entry further left than needed is looked at. Whatever the client wrote to the left
///    (non-ASCII bytes, `Forwarded` elements without `for=`, garbage, forged addresses) cannot
///    change the result.
/// 4. **The walk.** Entries in `trusted` are skipped (a proxy that forwarded the request); the
///    first untrusted one is the client. At most [`hops`](Self::hops) entries are walked
///    (default 1: one proxy): if all of them are trusted, the deepest walked one is the
///    client. An unusable entry (not an address, `for=unknown`) ends the walk: the client is
///    then the last usable entry walked, or the peer when there is none. The peer is the
///    client only when the chain has no usable entry (no header, or an unusable rightmost
///    entry).
/// 5. **Canonical.** IPv4-mapped addresses are taken as IPv4 everywhere (peer, trusted
///    ranges, entries), so a dual-stack listener matches an IPv4 trusted proxy and a client
///    never gets two keys.
///
/// Set `hops` to the number of proxies that append an entry (CDN → load balancer → app: 2),
/// and list all of them in `trusted`: a request that reaches the inner proxy directly
/// (a leaked origin address) then gets the address that proxy saw, not a forged entry to its
/// left.
///
/// # Keys
///
/// As for [`PeerIp`]: the canonical client address masked to a prefix, IPv6 /64 by default
/// ([`ipv6_prefix`](Self::ipv6_prefix)), IPv4 /32 ([`ipv4_prefix`](Self::ipv4_prefix)).
/// [`client`](Self::client) returns the address unmasked. The prefixes start as those of the
/// `peer` given to the constructor.
///
/// # Examples
///
/// Behind nginx on 10.0.0.9 with `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`:
///
/// ```
/// use fluxrate::http::{ForwardedIp, IpNet, PeerIp};
/// use http::HeaderMap;
///
/// let client = ForwardedIp::x_forwarded_for(PeerIp::new(), ["10.0.0.9".parse::<IpNet>()?]);
/// let mut h = HeaderMap::new();
/// h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse()?); // the client wrote 6.6.6.6
/// h.insert("forwarded", "for=198.51.100.1".parse()?);           // ignored: not the chosen header
/// assert_eq!(client.client("10.0.0.9".parse()?, &h), "203.0.113.7".parse::<std::net::IpAddr>()?);
/// // From an untrusted peer the header is not read.
/// assert_eq!(client.client("192.0.2.1".parse()?, &h), "192.0.2.1".parse::<std::net::IpAddr>()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Behind a CDN and a load balancer (two entries appended), keyed by /56 for IPv6:
///
/// ```
/// use fluxrate::http::{ForwardedIp, IpNet, PeerIp};
///
/// let trusted: Vec<IpNet> = ["10.0.0.0/8", "2001:db8:ff::/48"]
///     .iter()
///     .map(|s| s.parse())
///     .collect::<Result<_, _>>()?;
/// let client = ForwardedIp::x_forwarded_for(PeerIp::new(), trusted)
///     .hops(2)
///     .ipv6_prefix(56)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ForwardedIp {
    peer: PeerIp,
    header: ForwardedHeader,
    trusted: Vec<IpNet>,
    hops: usize,
}

impl ForwardedIp {
    /// The client behind the proxies in `trusted`, read from `header`, the peer read with
    /// `peer` (whose prefixes the keys start with). One hop until [`hops`](Self::hops).
    pub fn new(
        peer: PeerIp,
        header: ForwardedHeader,
        trusted: impl IntoIterator<Item = IpNet>,
    ) -> Self {
        Self {
            peer,
            header,
            trusted: trusted.into_iter().collect(),
            hops: 1,
        }
    }

    /// [`new`](Self::new) with [`ForwardedHeader::XForwardedFor`].
    pub fn x_forwarded_for(peer: PeerIp, trusted: impl IntoIterator<Item = IpNet>) -> Self {
        Self::new(peer, ForwardedHeader::XForwardedFor, trusted)
    }

    /// [`new`](Self::new) with [`ForwardedHeader::Forwarded`].
    pub fn forwarded(peer: PeerIp, trusted: impl IntoIterator<Item = IpNet>) -> Self {
        Self::new(peer, ForwardedHeader::Forwarded, trusted)
    }

    /// [`new`](Self::new) with [`ForwardedHeader::Single`]`(header)`, such as `X-Real-IP`.
    pub fn single(
        peer: PeerIp,
        header: HeaderName,
        trusted: impl IntoIterator<Item = IpNet>,
    ) -> Self {
        Self::new(peer, ForwardedHeader::Single(header), trusted)
    }

    /// Walk at most `hops` entries from the right: the number of proxies that append an
    /// entry. Default 1; 0 is taken as 1.
    pub fn hops(self, hops: usize) -> Self {
        Self {
            hops: hops.max(1),
            ..self
        }
    }

    /// Key IPv6 clients by their first `bits` bits: 16 to 128, default 64 (see [`PeerIp`]),
    /// else [`ConfigError::InvalidPrefix`].
    pub fn ipv6_prefix(self, bits: u8) -> Result<Self, ConfigError> {
        Ok(Self {
            peer: self.peer.clone().ipv6_prefix(bits)?,
            ..self
        })
    }

    /// Key IPv4 clients by their first `bits` bits: 8 to 32, default 32, else
    /// [`ConfigError::InvalidPrefix`].
    pub fn ipv4_prefix(self, bits: u8) -> Result<Self, ConfigError> {
        Ok(Self {
            peer: self.peer.clone().ipv4_prefix(bits)?,
            ..self
        })
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The client address for a request from `peer` with `headers`: canonical (IPv4-mapped
    /// addresses as IPv4), not masked to the key's prefix.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let walked = match &self.header {
            ForwardedHeader::XForwardedFor => self.walk(xff_entries(headers).map(xff_entry)),
            ForwardedHeader::Forwarded => {
                self.walk(forwarded_elements(headers).map(forwarded_element))
            }
            ForwardedHeader::Single(name) => self.walk(std::iter::once(single(headers, name))),
        };
        walked.unwrap_or(peer)
    }

    /// The right-to-left walk over decoded entries (`None`: unusable): skip trusted entries,
    /// stop at the first untrusted one, at most `hops` deep; an unusable entry stops the walk
    /// at the last usable one.
    fn walk(&self, entries: impl Iterator<Item = Option<IpAddr>>) -> Option<IpAddr> {
        let mut last = None;
        for entry in entries.take(self.hops) {
            let Some(ip) = entry else { break };
            let ip = ip.to_canonical();
            last = Some(ip);
            if !self.is_trusted(ip) {
                break;
            }
        }
        last
    }
}

impl KeyExtractor for ForwardedIp {
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey> {
        let peer = self.peer.ip(req.extensions)?;
        let client = self.client(peer, req.headers);
        Some(RequestKey::Ip(self.peer.prefixes.key(client)))
    }
}
