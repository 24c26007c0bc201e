//! HTTP middleware for tower (axum, tonic, hyper): feature `tower`.
//!
//! [`RateLimitLayer`] holds one or more named limits, each a keyed [`RateLimiter`] and a
//! [`KeyExtractor`] that says which key a request counts against (the peer IP, the client IP
//! behind trusted proxies, a header, the whole service, or a closure). A request passes only if
//! every limit admits it; a request refused by one limit is not charged by the others, as far
//! as the limits can give capacity back (see [`RateLimitLayer::limit`]). Refused requests get
//! `429 Too Many Requests` with `Retry-After` in whole seconds (rounded up, never 0); every
//! response carries the IETF draft `RateLimit-Policy` and `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers-09/10 syntax) and, optionally, the legacy
//! `X-RateLimit-*` fields.

mod client_ip;
mod decide;
mod headers;
mod key;
mod layer;
mod net;
mod service;

pub use client_ip::{ForwardedHeader, ForwardedIp, PeerIp};
pub use decide::Decision;
pub use key::{Global, Header, KeyExtractor, RequestInfo, RequestKey, MAX_KEY_LEN};
pub use layer::RateLimitLayer;
pub use net::IpNet;
pub use service::{RateLimit, ResponseFuture};
