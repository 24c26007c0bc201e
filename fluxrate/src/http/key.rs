//! What a request counts against: [`RequestKey`], the [`KeyExtractor`] trait and the simple
//! extractors ([`Global`], [`Header`]).

use ::http::header::HeaderName;
use ::http::{Extensions, HeaderMap, Method, Request, Uri};
use std::net::IpAddr;

/// What a request counts against, within one limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestKey {
    /// One key for every request: a global limit.
    Global,
    /// A client IP address.
    Ip(IpAddr),
    /// Text: a header value, an API key, a user id.
    Text(Box<str>),
    /// The key could not be extracted (no peer address, no header): all such requests share
    /// this one key, so a misconfiguration limits them together instead of not at all.
    Unknown,
}

/// The parts of a request an extractor may look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (where servers put the peer address).
    pub extensions: &'a Extensions,
}

impl<'a> RequestInfo<'a> {
    /// The parts of `req`.
    pub fn of<B>(req: &'a Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }
}

/// Says which key a request counts against.
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key, or `None` if it cannot be determined (then [`RequestKey::Unknown`] is used).
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey>;
}

impl<F> KeyExtractor for F
where
    F: Fn(&RequestInfo<'_>) -> Option<RequestKey> + Send + Sync + 'static,
{
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey> {
        self(req)
    }
}

/// Every request counts against one shared key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyExtractor for Global {
    fn key(&self, _: &RequestInfo<'_>) -> Option<RequestKey> {
        Some(RequestKey::Global)
    }
}

/// Longest header value used as a key; longer values count as [`RequestKey::Unknown`].
pub const MAX_KEY_LEN: usize = 256;

/// The value of a request header (for example an API key).
#[derive(Debug, Clone)]
pub struct Header(pub HeaderName);

impl KeyExtractor for Header {
    fn key(&self, req: &RequestInfo<'_>) -> Option<RequestKey> {
        let v = req.headers.get(&self.0)?.to_str().ok()?;
        (v.len() <= MAX_KEY_LEN).then(|| RequestKey::Text(v.into()))
    }
}
