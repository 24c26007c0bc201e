//! Client identity (feature `tower`): which address a request counts against behind trusted
//! proxies ([`ForwardedIp`]) and directly ([`PeerIp`]), its prefix key, and [`IpNet`]. The
//! issue-12 reproductions run through the tower layer; `client()` and `IpNet` are also tested
//! directly, and a property test shows that bytes left of the proxies' entries change nothing.
#![cfg(feature = "tower")]

use fluxrate::http::{
    ForwardedHeader, ForwardedIp, IpNet, KeyExtractor, PeerIp, RateLimit, RateLimitLayer,
    RequestInfo, RequestKey,
};
use fluxrate::{ConfigError, Quota};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use proptest::prelude::*;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use tower::{Layer, Service, ServiceExt};

/// The inner service's future.
type OkFuture = std::future::Ready<Result<Response<String>, Infallible>>;

/// The inner service: always 200 "ok" (a named type, for the functions that return a layer).
type OkService = tower::util::ServiceFn<fn(Request<()>) -> OkFuture>;

fn ok_service() -> OkService {
    fn ok(_: Request<()>) -> OkFuture {
        std::future::ready(Ok(Response::new("ok".to_owned())))
    }
    tower::service_fn(ok as fn(Request<()>) -> OkFuture)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A request from `peer` (port 4000) with `headers`, in order (a repeated name adds a line).
fn req(peer: &str, headers: &[(&'static str, &[u8])]) -> Request<()> {
    let mut r = Request::new(());
    r.extensions_mut().insert(SocketAddr::new(ip(peer), 4000));
    for (name, value) in headers {
        r.headers_mut()
            .append(*name, HeaderValue::from_bytes(value).unwrap());
    }
    r
}

fn headers(list: &[(&'static str, &[u8])]) -> HeaderMap {
    req("192.0.2.1", list).headers().clone()
}

/// A `Quota::per_hour(1)` layer keyed by `key` around [`ok_service`].
fn one_per_hour(key: impl KeyExtractor) -> RateLimit<OkService> {
    RateLimitLayer::new()
        .limit("client", Quota::per_hour(1), key)
        .unwrap()
        .layer(ok_service())
}

/// The status codes `svc` answers `reqs` with, in order.
async fn statuses<S>(svc: &S, reqs: impl IntoIterator<Item = Request<()>>) -> Vec<u16>
where
    S: Service<Request<()>, Response = Response<String>, Error = Infallible> + Clone,
{
    let mut out = Vec::new();
    for r in reqs {
        out.push(svc.clone().oneshot(r).await.unwrap().status().as_u16());
    }
    out
}

fn key_of(key: &impl KeyExtractor, r: &Request<()>) -> Option<RequestKey> {
    key.key(&RequestInfo::of(r))
}

fn xff_behind(trusted: &[&str]) -> ForwardedIp {
    ForwardedIp::x_forwarded_for(PeerIp::new(), trusted.iter().map(|s| net(s)))
}

// (a) Finding 1: behind an X-Forwarded-For proxy, a client-sent `Forwarded` is not read.

#[tokio::test]
async fn forwarded_cannot_override_the_chosen_x_forwarded_for() {
    let svc = one_per_hour(xff_behind(&["10.0.0.9"]));
    let reqs = (1..=3).map(|i| {
        let forged = format!("for=198.51.100.{i}");
        req(
            "10.0.0.9",
            &[
                ("x-forwarded-for", b"203.0.113.7"),
                ("forwarded", forged.as_bytes()),
            ],
        )
    });
    assert_eq!(statuses(&svc, reqs).await, [200, 429, 429]);
}

#[tokio::test]
async fn x_forwarded_for_cannot_override_the_chosen_forwarded() {
    let svc = one_per_hour(ForwardedIp::forwarded(PeerIp::new(), [net("10.0.0.9")]));
    let reqs = (1..=3).map(|i| {
        let forged = format!("198.51.100.{i}");
        req(
            "10.0.0.9",
            &[
                ("forwarded", b"for=203.0.113.7;proto=https"),
                ("x-forwarded-for", forged.as_bytes()),
                ("x-real-ip", forged.as_bytes()),
            ],
        )
    });
    assert_eq!(statuses(&svc, reqs).await, [200, 429, 429]);
}

// (b) Finding 4: one IPv6 /64 is one client by default.

#[tokio::test]
async fn one_ipv6_64_is_one_client() {
    let svc = one_per_hour(PeerIp::new());
    let one_64 = ["2001:db8::1", "2001:db8::2", "2001:db8::3"].map(|p| req(p, &[]));
    assert_eq!(statuses(&svc, one_64).await, [200, 429, 429]);
    // Another /64 is another client.
    assert_eq!(statuses(&svc, [req("2001:db8:0:1::1", &[])]).await, [200]);
    // The key names the /64.
    assert_eq!(
        key_of(&PeerIp::new(), &req("2001:db8::1:2:3:4", &[])),
        Some(RequestKey::Ip(ip("2001:db8::")))
    );

    let per_address = one_per_hour(PeerIp::new().ipv6_prefix(128).unwrap());
    let one_64 = ["2001:db8::1", "2001:db8::2", "2001:db8::3"].map(|p| req(p, &[]));
    assert_eq!(statuses(&per_address, one_64).await, [200, 200, 200]);
}

#[tokio::test]
async fn forwarded_ipv6_clients_are_keyed_by_prefix_too() {
    let svc = one_per_hour(
        xff_behind(&["10.0.0.9"])
            .ipv6_prefix(48)
            .unwrap()
            .ipv4_prefix(24)
            .unwrap(),
    );
    let reqs = [
        b"2001:db8:1:2::1".as_slice(),
        b"2001:db8:1:3::1",
        b"2001:db8:2::1",
        b"203.0.113.1",
        b"203.0.113.200",
        b"203.0.114.1",
    ]
    .map(|c| req("10.0.0.9", &[("x-forwarded-for", c)]));
    assert_eq!(statuses(&svc, reqs).await, [200, 429, 200, 200, 429, 200]);
    // The prefixes of the peer given to the constructor are kept.
    let from_peer = ForwardedIp::x_forwarded_for(PeerIp::new().ipv6_prefix(56).unwrap(), []);
    assert_eq!(
        key_of(&from_peer, &req("2001:db8:0:ff12::1", &[])),
        Some(RequestKey::Ip(ip("2001:db8:0:ff00::")))
    );
}

// (c) Finding 5: IPv4-mapped addresses are IPv4 everywhere.

#[test]
fn a_mapped_peer_matches_an_ipv4_trusted_proxy() {
    let h = headers(&[("x-forwarded-for", b"203.0.113.5")]);
    let fwd = xff_behind(&["10.0.0.9"]);
    assert_eq!(fwd.client(ip("::ffff:10.0.0.9"), &h), ip("203.0.113.5"));
    // A trusted range written in mapped form matches the plain IPv4 peer too.
    let mapped = xff_behind(&["::ffff:10.0.0.0/104"]);
    assert_eq!(mapped.client(ip("10.0.0.9"), &h), ip("203.0.113.5"));
    assert_eq!(mapped.client(ip("::ffff:10.0.0.9"), &h), ip("203.0.113.5"));
}

#[test]
fn mapped_entries_and_peers_are_returned_as_ipv4() {
    let fwd = xff_behind(&["10.0.0.9"]);
    let h = headers(&[("x-forwarded-for", b"::ffff:203.0.113.5")]);
    assert_eq!(fwd.client(ip("10.0.0.9"), &h), ip("203.0.113.5"));
    // A mapped trusted entry is skipped like the IPv4 one.
    let h = headers(&[("x-forwarded-for", b"203.0.113.5, ::ffff:10.0.0.9")]);
    assert_eq!(
        fwd.clone().hops(2).client(ip("10.0.0.9"), &h),
        ip("203.0.113.5")
    );
    // An untrusted mapped peer is returned canonical.
    assert_eq!(fwd.client(ip("::ffff:192.0.2.1"), &h), ip("192.0.2.1"));
}

#[tokio::test]
async fn mapped_clients_are_keyed_as_ipv4_not_masked_as_ipv6() {
    // CVE-2026-30827 (express-rate-limit): ::ffff:a.b.c.d masked by the IPv6 prefix put every
    // IPv4 client in one bucket.
    let svc = one_per_hour(PeerIp::new());
    let reqs = ["::ffff:203.0.113.1", "::ffff:203.0.113.2", "203.0.113.1"].map(|p| req(p, &[]));
    assert_eq!(statuses(&svc, reqs).await, [200, 200, 429]);
    assert_eq!(
        key_of(&PeerIp::new(), &req("::ffff:203.0.113.1", &[])),
        Some(RequestKey::Ip(ip("203.0.113.1")))
    );

    let svc = one_per_hour(xff_behind(&["10.0.0.9"]));
    let reqs = [
        ("::ffff:10.0.0.9", b"::ffff:198.51.100.1".as_slice()),
        ("10.0.0.9", b"::ffff:198.51.100.2"),
        ("::ffff:10.0.0.9", b"198.51.100.1"),
        ("10.0.0.9", b"198.51.100.2"),
    ]
    .map(|(peer, xff)| req(peer, &[("x-forwarded-for", xff)]));
    assert_eq!(statuses(&svc, reqs).await, [200, 200, 429, 429]);
}

// (d) Finding 6: the walk skips trusted entries only; trusted proxies as CIDR ranges.

#[test]
fn hops_skip_only_trusted_entries() {
    let fwd = xff_behind(&["10.0.0.9"]).hops(2);
    let peer = ip("10.0.0.9");
    let h = headers(&[("x-forwarded-for", b"6.6.6.6, 198.51.100.7")]);
    assert_eq!(fwd.client(peer, &h), ip("198.51.100.7"));
    // A trusted entry is skipped.
    let h = headers(&[("x-forwarded-for", b"6.6.6.6, 198.51.100.7, 10.0.0.9")]);
    assert_eq!(fwd.client(peer, &h), ip("198.51.100.7"));
    // All walked entries trusted: the deepest walked one.
    let h = headers(&[("x-forwarded-for", b"6.6.6.6, 10.0.0.9, 10.0.0.9")]);
    assert_eq!(fwd.client(peer, &h), ip("10.0.0.9"));
    // Fewer entries than hops, all trusted: the deepest there is.
    let h = headers(&[("x-forwarded-for", b"10.0.0.9")]);
    assert_eq!(fwd.client(peer, &h), ip("10.0.0.9"));
    // hops(0) is one hop.
    let h = headers(&[("x-forwarded-for", b"6.6.6.6, 198.51.100.7")]);
    assert_eq!(
        xff_behind(&["10.0.0.9"]).hops(0).client(peer, &h),
        ip("198.51.100.7")
    );
}

#[test]
fn trusted_proxies_as_cidr_ranges() {
    let fwd = xff_behind(&["10.0.0.0/8", "2001:db8:ff::/48"]).hops(3);
    let h = headers(&[(
        "x-forwarded-for",
        b"6.6.6.6, 203.0.113.9, [2001:db8:ff:1::7]:443, 10.200.0.1",
    )]);
    assert_eq!(fwd.client(ip("10.1.2.3"), &h), ip("203.0.113.9"));
    assert_eq!(fwd.client(ip("2001:db8:ff::1"), &h), ip("203.0.113.9"));
    assert_eq!(fwd.client(ip("::ffff:10.9.9.9"), &h), ip("203.0.113.9"));
    // Outside the ranges the peer is the client.
    assert_eq!(fwd.client(ip("11.0.0.1"), &h), ip("11.0.0.1"));
    assert_eq!(fwd.client(ip("2001:db8:fe::1"), &h), ip("2001:db8:fe::1"));
}

#[test]
fn an_unusable_entry_ends_the_walk_at_the_last_usable_one() {
    let fwd = xff_behind(&["10.0.0.0/8"]).hops(3);
    let peer = ip("10.0.0.9");
    let h = headers(&[("x-forwarded-for", b"203.0.113.9, garbage, 10.0.0.5")]);
    assert_eq!(fwd.client(peer, &h), ip("10.0.0.5"));
    // No usable entry: the peer.
    for chain in [
        b"203.0.113.9, unknown".as_slice(),
        b"",
        b"203.0.113.9,",
        b"1.2.3.4:port",
        b"1.2.3.4:1:2",
        b"[2001:db8::1",
        b"2001:db8::1]",
        b"\"203.0.113.9\"",
        b"01.2.3.4",
        b"fe80::1%eth0",
    ] {
        let h = headers(&[("x-forwarded-for", chain)]);
        assert_eq!(
            fwd.client(peer, &h),
            peer,
            "{:?}",
            String::from_utf8_lossy(chain)
        );
    }
    // No header at all: the peer.
    assert_eq!(fwd.client(peer, &HeaderMap::new()), peer);
}

// (e) Finding 11: whatever lies left of the entries walked is never looked at.

#[test]
fn what_the_client_wrote_on_the_left_is_ignored() {
    let peer = ip("10.0.0.9");
    let fwd = ForwardedIp::forwarded(PeerIp::new(), [net("10.0.0.9")]);
    let h = headers(&[("forwarded", b"proto=https, for=203.0.113.5")]);
    assert_eq!(fwd.client(peer, &h), ip("203.0.113.5"));
    let xff = xff_behind(&["10.0.0.9"]);
    let h = headers(&[("x-forwarded-for", b"\x80x, 203.0.113.5")]);
    assert_eq!(xff.client(peer, &h), ip("203.0.113.5"));
    // An unterminated quote on the left, and an earlier field line of garbage.
    let h = headers(&[
        ("forwarded", b"for=\"\xff\xfe"),
        ("forwarded", b"for=\"[2001:db8::1, for=203.0.113.5"),
    ]);
    assert_eq!(fwd.client(peer, &h), ip("203.0.113.5"));
}

#[test]
fn forwarded_elements() {
    let peer = ip("10.0.0.9");
    let fwd = ForwardedIp::forwarded(PeerIp::new(), [net("10.0.0.9")]);
    let client = |value: &[u8]| fwd.client(peer, &headers(&[("forwarded", value)]));
    assert_eq!(client(b"for=192.0.2.60"), ip("192.0.2.60"));
    assert_eq!(
        client(b"For=\"[2001:db8:cafe::17]:4711\""),
        ip("2001:db8:cafe::17")
    );
    assert_eq!(client(b"for=\"[2001:db8::1]\""), ip("2001:db8::1"));
    assert_eq!(
        client(b"proto=http;FOR=192.0.2.60:80;by=203.0.113.43"),
        ip("192.0.2.60")
    );
    assert_eq!(client(b"for=\"192.0.2.60:_port\""), ip("192.0.2.60"));
    assert_eq!(
        client(b"for=192.0.2.43, for=198.51.100.17"),
        ip("198.51.100.17")
    );
    // Not addresses: the peer.
    for unusable in [
        b"for=unknown".as_slice(),
        b"for=_hidden",
        b"for=\"_SEVKISEK\"",
        b"proto=https",
        b"for=192.0.2.60;for=192.0.2.61",
        b"for=2001:db8::1",
        b"for=\"192.0.2.60",
        b"for=",
        b"for=\"\"",
    ] {
        assert_eq!(
            client(unusable),
            peer,
            "{:?}",
            String::from_utf8_lossy(unusable)
        );
    }
    // The last field line comes last.
    let h = headers(&[
        ("forwarded", b"for=192.0.2.1"),
        ("forwarded", b"for=192.0.2.2"),
    ]);
    assert_eq!(fwd.client(peer, &h), ip("192.0.2.2"));
}

#[test]
fn a_quoted_value_the_proxy_copied_from_the_request_cannot_add_a_for() {
    // HAProxy `option forwarded host` quotes the request's Host into the proxy's own element;
    // a Host of `x, for=6.6.6.6;a=` is a valid reg-name.
    let peer = ip("10.0.0.9");
    let fwd = ForwardedIp::forwarded(PeerIp::new(), [net("10.0.0.9")]);
    let client = |value: &[u8]| fwd.client(peer, &headers(&[("forwarded", value)]));
    for (element, want) in [
        (
            b"for=203.0.113.5;host=\"x, for=6.6.6.6;a=\"".as_slice(),
            "203.0.113.5",
        ),
        (b"host=\"x, for=6.6.6.6;a=\";for=203.0.113.5", "203.0.113.5"),
        (b"for=203.0.113.5;host=\"a;for=6.6.6.6\"", "203.0.113.5"),
        // Escaped quotes stay inside the string.
        (
            b"host=\"a\\\", for=6.6.6.6;b=\\\"\";for=203.0.113.5",
            "203.0.113.5",
        ),
        // An escaped backslash does not escape the closing quote.
        (
            b"for=6.6.6.6, for=203.0.113.5;host=\"a\\\\\"",
            "203.0.113.5",
        ),
    ] {
        assert_eq!(
            client(element),
            ip(want),
            "{:?}",
            String::from_utf8_lossy(element)
        );
    }
}

#[test]
fn a_single_address_header() {
    let peer = ip("10.0.0.9");
    let real_ip = ForwardedIp::single(
        PeerIp::new(),
        HeaderName::from_static("x-real-ip"),
        [net("10.0.0.9")],
    );
    let client = |lines: &[&[u8]]| {
        let list: Vec<_> = lines.iter().map(|v| ("x-real-ip", *v)).collect();
        real_ip.client(peer, &headers(&list))
    };
    assert_eq!(client(&[b"203.0.113.5"]), ip("203.0.113.5"));
    assert_eq!(client(&[b" 2001:db8::5 "]), ip("2001:db8::5"));
    assert_eq!(client(&[b"[2001:db8::5]:80"]), ip("2001:db8::5"));
    assert_eq!(client(&[b"6.6.6.6", b"203.0.113.5"]), ip("203.0.113.5"));
    assert_eq!(client(&[b"6.6.6.6, 203.0.113.5"]), peer);
    assert_eq!(client(&[b"203.0.113.5", b"garbage"]), peer);
    assert_eq!(client(&[]), peer);
    // Same through `new`, and other headers are not read.
    let new = ForwardedIp::new(
        PeerIp::new(),
        ForwardedHeader::Single(HeaderName::from_static("x-real-ip")),
        [net("10.0.0.9")],
    );
    let h = headers(&[
        ("x-forwarded-for", b"203.0.113.5"),
        ("forwarded", b"for=203.0.113.5"),
    ]);
    assert_eq!(new.client(peer, &h), peer);
}

// (f) Prefixes and typed configuration errors.

#[tokio::test]
async fn ipv4_is_keyed_per_address_by_default_and_per_24_when_asked() {
    let two = || ["203.0.113.1", "203.0.113.2"].map(|p| req(p, &[]));
    assert_eq!(
        statuses(&one_per_hour(PeerIp::new()), two()).await,
        [200, 200]
    );
    let per_24 = one_per_hour(PeerIp::new().ipv4_prefix(24).unwrap());
    assert_eq!(statuses(&per_24, two()).await, [200, 429]);
    assert_eq!(statuses(&per_24, [req("203.0.114.1", &[])]).await, [200]);
}

#[test]
fn prefix_lengths_out_of_range_are_typed_errors() {
    let v6 = |bits, min, max| ConfigError::InvalidPrefix {
        family: "IPv6",
        bits,
        min,
        max,
    };
    let v4 = |bits, min, max| ConfigError::InvalidPrefix {
        family: "IPv4",
        bits,
        min,
        max,
    };
    assert_eq!(PeerIp::new().ipv6_prefix(15).unwrap_err(), v6(15, 16, 128));
    assert_eq!(
        PeerIp::new().ipv6_prefix(129).unwrap_err(),
        v6(129, 16, 128)
    );
    assert_eq!(PeerIp::new().ipv4_prefix(7).unwrap_err(), v4(7, 8, 32));
    assert_eq!(PeerIp::new().ipv4_prefix(33).unwrap_err(), v4(33, 8, 32));
    let fwd = || xff_behind(&[]);
    assert_eq!(fwd().ipv6_prefix(0).unwrap_err(), v6(0, 16, 128));
    assert_eq!(fwd().ipv4_prefix(255).unwrap_err(), v4(255, 8, 32));
    assert_eq!(
        fwd().ipv6_prefix(15).unwrap_err().to_string(),
        "IPv6 prefix length must be 16 to 128 bits, got 15"
    );
    for ok in [16, 48, 64, 128] {
        assert!(PeerIp::new().ipv6_prefix(ok).is_ok());
        assert!(fwd().ipv6_prefix(ok).is_ok());
    }
    for ok in [8, 24, 32] {
        assert!(PeerIp::new().ipv4_prefix(ok).is_ok());
        assert!(fwd().ipv4_prefix(ok).is_ok());
    }
}

#[test]
fn ip_net_parses_masks_and_displays() {
    for (input, shown) in [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("10.1.2.3", "10.1.2.3/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("2001:db8:ff:1::1/48", "2001:db8:ff::/48"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("::/0", "::/0"),
        ("::ffff:10.1.2.3/104", "10.0.0.0/8"),
        ("::ffff:10.1.2.3", "10.1.2.3/32"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
    ] {
        assert_eq!(net(input).to_string(), shown, "{input}");
    }
    assert_eq!(net("10.1.2.3/8"), net("10.0.0.0/8"));
    assert_eq!(IpNet::from(ip("::ffff:192.0.2.1")), net("192.0.2.1/32"));
    assert_eq!(IpNet::new(ip("10.1.2.3"), 8).unwrap(), net("10.0.0.0/8"));
    assert_eq!(
        IpNet::new(ip("10.0.0.0"), 33).unwrap_err(),
        ConfigError::InvalidPrefix {
            family: "IPv4",
            bits: 33,
            min: 0,
            max: 32
        }
    );
    assert_eq!(
        IpNet::new(ip("::"), 129).unwrap_err(),
        ConfigError::InvalidPrefix {
            family: "IPv6",
            bits: 129,
            min: 0,
            max: 128
        }
    );
}

#[test]
fn ip_net_parse_errors_are_typed() {
    for input in [
        "",
        "/8",
        "10.0.0/8",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "10.0.0.0/ 8",
        "10.0.0.0/8/8",
        "10.0.0.0/33",
        "10.0.0.0/0008",
        "2001:db8::/129",
        "2001:db8::/-1",
        "fe80::1%eth0",
        "[2001:db8::]/32",
        " 10.0.0.0/8",
        "localhost",
    ] {
        match input.parse::<IpNet>() {
            Err(ConfigError::InvalidNetwork { input: got, reason }) => {
                assert_eq!(got, input);
                assert!(!reason.is_empty());
            }
            other => panic!("{input:?} gave {other:?}"),
        }
    }
    assert_eq!(
        "10.0.0.0/33".parse::<IpNet>().unwrap_err().to_string(),
        "invalid address range \"10.0.0.0/33\": an IPv4 prefix is at most 32 bits"
    );
}

#[test]
fn ip_net_contains_canonicalizes_both_sides() {
    let v4 = net("10.0.0.0/8");
    assert!(v4.contains(ip("10.255.0.1")));
    assert!(v4.contains(ip("::ffff:10.255.0.1")));
    assert!(!v4.contains(ip("11.0.0.1")));
    assert!(!v4.contains(ip("::ffff:11.0.0.1")));
    assert!(!v4.contains(ip("::a00:1"))); // IPv4-compatible, not mapped: an IPv6 address
    let v6 = net("2001:db8:ff::/48");
    assert!(v6.contains(ip("2001:db8:ff:ffff::1")));
    assert!(!v6.contains(ip("2001:db8:100::1")));
    assert!(!v6.contains(ip("10.0.0.1")));
    assert!(net("::/0").contains(ip("10.0.0.1")));
    assert!(net("::ffff:0:0/96").contains(ip("192.0.2.1")));
    assert!(!net("0.0.0.0/0").contains(ip("2001:db8::1")));
    assert!(net("0.0.0.0/0").contains(ip("::ffff:192.0.2.1")));
    assert!(net("192.0.2.1").contains(ip("192.0.2.1")));
    assert!(!net("192.0.2.1").contains(ip("192.0.2.2")));
}

// The property: bytes left of what the proxies appended cannot change `client()`.

/// One entry a proxy appends, with whether the proxy is trusted: the header text for
/// X-Forwarded-For and for Forwarded.
fn proxy_entry() -> impl Strategy<Value = (String, String)> {
    let addr = prop_oneof![
        (0u8..4).prop_map(|i| format!("10.0.0.{i}")),
        (0u8..4).prop_map(|i| format!("203.0.113.{i}")),
        (0u8..4).prop_map(|i| format!("::ffff:10.0.0.{i}")),
        (0u16..4).prop_map(|i| format!("2001:db8:ff::{i}")),
        (0u16..4).prop_map(|i| format!("2001:db8:1::{i}")),
    ];
    // A Host the client chose, which the proxy quotes into its own element (with escapes).
    let host = proptest::collection::vec(
        prop_oneof![
            Just('a'),
            Just(','),
            Just(';'),
            Just('='),
            Just('"'),
            Just('\\'),
            Just(' '),
            Just('6'),
            Just('.'),
        ],
        0..16,
    )
    .prop_map(|chars| {
        let mut quoted = String::from("\"");
        for c in chars {
            if matches!(c, '"' | '\\') {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        quoted
    });
    (addr, any::<bool>(), 0u8..4, host).prop_map(|(a, port, params, host)| {
        let v6 = a.contains(':');
        let (xff, node) = match (v6, port) {
            (false, false) => (a.clone(), a),
            (false, true) => (format!("{a}:4711"), format!("{a}:4711")),
            (true, false) => (a.clone(), format!("\"[{a}]\"")),
            (true, true) => (format!("[{a}]:4711"), format!("\"[{a}]:4711\"")),
        };
        let fwd = match params {
            0 => format!("for={node}"),
            1 => format!("for={node};proto=https"),
            2 => format!("by=10.0.0.1;FOR={node}"),
            _ => format!("for={node};host={host}"),
        };
        (xff, fwd)
    })
}

/// Bytes a client may put in a header value: visible ASCII, SP, HTAB, obs-text.
fn client_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just(b','),
            Just(b'"'),
            Just(b';'),
            Just(b'='),
            Just(b'['),
            Just(b':'),
            Just(b' '),
            Just(b'\t'),
            0x20u8..0x7f,
            0x80u8..=0xff,
        ],
        0..40,
    )
}

proptest! {
    #[test]
    fn bytes_left_of_the_proxies_cannot_change_the_client(
        hops in 1usize..5,
        appended in proptest::collection::vec(proxy_entry(), 4),
        left in client_bytes(),
        own_line in any::<bool>(),
        which in 0u8..3,
        peer_mapped in any::<bool>(),
    ) {
        // `hops` proxies each appended one entry; the client wrote `left` before them.
        let appended = &appended[..hops];
        let trusted = [net("10.0.0.0/8"), net("2001:db8:ff::/48")];
        let (name, fwd, proxies): (&'static str, ForwardedIp, String) = match which {
            0 => (
                "x-forwarded-for",
                ForwardedIp::x_forwarded_for(PeerIp::new(), trusted),
                appended.iter().map(|e| e.0.as_str()).collect::<Vec<_>>().join(", "),
            ),
            1 => (
                "forwarded",
                ForwardedIp::forwarded(PeerIp::new(), trusted),
                appended.iter().map(|e| e.1.as_str()).collect::<Vec<_>>().join(", "),
            ),
            _ => (
                "x-real-ip",
                ForwardedIp::single(PeerIp::new(), HeaderName::from_static("x-real-ip"), trusted),
                appended[0].0.clone(),
            ),
        };
        let fwd = fwd.hops(hops);
        let peer = ip(if peer_mapped { "::ffff:10.0.0.9" } else { "10.0.0.9" });
        let clean = fwd.client(peer, &headers(&[(name, proxies.as_bytes())]));
        let dirty = if own_line || which == 2 {
            headers(&[(name, &left), (name, proxies.as_bytes())])
        } else {
            let mut line = left.clone();
            line.extend_from_slice(b", ");
            line.extend_from_slice(proxies.as_bytes());
            headers(&[(name, &line)])
        };
        prop_assert_eq!(fwd.client(peer, &dirty), clean);
        // Every appended entry is usable, so the client is one of them, never the peer.
        prop_assert_ne!(clean, ip("10.0.0.9"));
    }
}
