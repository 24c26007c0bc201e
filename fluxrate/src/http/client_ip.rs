//! The client's IP address: the peer ([`PeerIp`]) or the client behind trusted proxies
//! ([`ForwardedIp`]).

use super::key::{KeyExtractor, RequestInfo, RequestKey};
use ::http::{Extensions, HeaderMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A function from the request's extensions to the peer address.
type PeerFn = dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync;

/// The peer's IP address, as the server recorded it in the request's extensions.
///
/// By default it reads a `SocketAddr` extension. For axum, give it `ConnectInfo`:
/// `PeerIp::from_extension(|c: &ConnectInfo<SocketAddr>| c.0.ip())` (and serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`).
#[derive(Clone)]
pub struct PeerIp {
    read: Arc<PeerFn>,
}

impl fmt::Debug for PeerIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIp").finish_non_exhaustive()
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
        }
    }

    fn ip(&self, e: &Extensions) -> Option<IpAddr> {
        (self.read)(e)
    }
}

impl KeyExtractor for PeerIp {
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey> {
        self.ip(req.extensions).map(RequestKey::Ip)
    }
}

/// The client IP behind trusted reverse proxies, from `Forwarded` (RFC 7239) or
/// `X-Forwarded-For`.
///
/// The headers are read only when the direct peer is one of the trusted proxies; the client is
/// then the address `hops` entries from the right (each trusted proxy appends the address it
/// received the request from). Anything else (an untrusted peer, too few entries, an
/// unparsable entry) falls back to the peer's own address: a client cannot choose its key by
/// sending a header.
#[derive(Debug, Clone)]
pub struct ForwardedIp {
    peer: PeerIp,
    trusted: Vec<IpAddr>,
    hops: usize,
}

impl ForwardedIp {
    /// Behind `hops` trusted proxies (≥ 1), whose addresses are `trusted`, reading the peer
    /// with `peer`.
    pub fn new(peer: PeerIp, trusted: impl IntoIterator<Item = IpAddr>, hops: usize) -> Self {
        Self {
            peer,
            trusted: trusted.into_iter().collect(),
            hops: hops.max(1),
        }
    }

    fn forwarded_for(headers: &HeaderMap) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut any = false;
        for v in headers.get_all(::http::header::FORWARDED) {
            any = true;
            let v = v.to_str().ok()?;
            for element in v.split(',') {
                let for_ = element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| v.trim().to_owned())
                })?;
                out.push(for_);
            }
        }
        if any {
            return Some(out);
        }
        let mut xff = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            xff.extend(v.to_str().ok()?.split(',').map(|s| s.trim().to_owned()));
        }
        (!xff.is_empty()).then_some(xff)
    }

    fn parse_ip(s: &str) -> Option<IpAddr> {
        let s = s.trim_matches('"');
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(ip);
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Some(sa.ip());
        }
        // "[2001:db8::1]" without a port.
        s.strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|r| r.parse().ok())
    }

    /// The client address for a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted.contains(&peer) {
            return peer;
        }
        let Some(list) = Self::forwarded_for(headers) else {
            return peer;
        };
        if list.len() < self.hops {
            return peer;
        }
        Self::parse_ip(&list[list.len() - self.hops]).unwrap_or(peer)
    }
}

impl KeyExtractor for ForwardedIp {
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey> {
        let peer = self.peer.ip(req.extensions)?;
        Some(RequestKey::Ip(self.client(peer, req.headers)))
    }
}
