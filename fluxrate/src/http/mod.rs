//! HTTP middleware for tower (axum, tonic, hyper): feature `tower`.
//!
//! [`RateLimitLayer`] holds one or more named limits, each a keyed
//! [`RateLimiter`](crate::RateLimiter) (in-process, any algorithm and clock) or a Redis
//! limiter, and a [`KeyExtractor`] that says which key a request counts against: the peer IP
//! ([`PeerIp`]), the client IP behind trusted proxies ([`ForwardedIp`], one explicit
//! forwarding header, trusted ranges as [`IpNet`]), a header ([`Header`]), the whole service
//! ([`Global`]), or a closure. IP keys group IPv6 clients by their /64 by default. A request
//! passes only if every limit admits it; a request refused by one limit is not charged by the
//! others, as far as the limits can give capacity back (see [`RateLimitLayer::limit`]).
//!
//! # Answers
//!
//! * Refused: `429 Too Many Requests` (configurable) with `Retry-After` in whole seconds,
//!   rounded up, never 0 and never earlier than the refusing limit's effective window; a
//!   fail-closed Redis outage: `503` with `Retry-After`.
//! * A cost above a limit's capacity can never pass: `413 Content Too Large` (configurable),
//!   no `Retry-After`, a body that says so.
//! * Optionally RFC 9457 problem details (`application/problem+json`, the draft's
//!   `quota-exceeded` and `temporary-reduced-capacity` types, `violated-policies`).
//! * A leaky-bucket limit shapes: the request waits for its place in the queue before the inner
//!   service sees it ([`RateLimitLayer::max_delay`]).
//! * Every response of a limited route carries a [`Decision`] extension: who decided each
//!   limit ([`DecidedBy`]: in-process, Redis, fail-open, fail-closed, local fallback).
//!
//! # Fields (draft-ietf-httpapi-ratelimit-headers-11)
//!
//! `RateLimit-Policy` has one item per limit checked: its name (validated printable ASCII,
//! unique in the layer), `q` calls per `w` seconds (the quota's rate with the period rounded
//! up to whole seconds), `qu` when [`RateLimitLayer::quota_unit`] names a unit other than
//! requests, and `fluxrate-burst` when a bucket's capacity differs from `q`. `RateLimit` has,
//! per limit, `r`, the quota available now, and `t`, the effective window: the number of
//! seconds within which the client can use no more than `r` (draft-11's meaning; draft-10's
//! `t` was a reset time). It is exact per algorithm
//! ([`Snapshot::effective_window`](crate::Snapshot::effective_window)) and rounded *down* to
//! whole seconds, so that the pair is honest: with no other traffic on the key, `r` requests
//! sent at once are all admitted, and no more than `r` are admitted within `t` seconds of the
//! decision (a property test in `tests/http_headers.rs`, every algorithm). A limit that cannot
//! tell its window (a Redis sliding window counter or log) leaves `t` out; a fail-open limit,
//! which counted nothing, leaves its whole item out. Integers are clamped to the 15 digits a
//! structured field holds. The legacy `X-RateLimit-Limit` / `-Remaining` / `-Reset` (seconds
//! until the key is full again), from the most restrictive limit, are optional.

mod client_ip;
mod decide;
mod decision;
mod forwarded;
mod headers;
mod key;
mod layer;
mod net;
mod outcome;
mod service;

pub use client_ip::{ForwardedHeader, ForwardedIp, PeerIp};
pub use decision::{DecidedBy, Decision, LimitDecision};
pub use key::{Global, Header, KeyExtractor, RequestInfo, RequestKey, MAX_KEY_LEN};
pub use layer::{RateLimitLayer, DEFAULT_MAX_KEYS};
pub use net::IpNet;
pub use service::{RateLimit, ResponseFuture};
