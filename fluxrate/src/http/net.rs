//! Address ranges ([`IpNet`], CIDR) and prefix masking of client addresses.

use crate::ConfigError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A range of IP addresses in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), IPv4 or IPv6.
///
/// Used to list trusted proxies ([`ForwardedIp`](super::ForwardedIp)): a CDN's egress ranges, a
/// load balancer's subnet, or single hosts (a bare address is a `/32` or a `/128`).
///
/// The range is stored canonically: host bits below the prefix are cleared, and an
/// IPv4-mapped IPv6 range of at least 96 bits (`::ffff:10.0.0.0/104`) is stored as the IPv4
/// range it denotes (`10.0.0.0/8`). [`contains`](Self::contains) canonicalizes the address it
/// is given too, so `10.0.0.9` and `::ffff:10.0.0.9` (how a dual-stack socket reports an IPv4
/// peer) are in exactly the same ranges. An IPv6 range shorter than 96 bits that covers
/// `::ffff:0:0/96` (`::/0`, for example) therefore contains IPv4 addresses as well.
///
/// # Examples
///
/// ```
/// use fluxrate::http::IpNet;
/// use std::net::IpAddr;
///
/// let lan: IpNet = "10.0.0.0/8".parse()?;
/// assert!(lan.contains("10.1.2.3".parse()?));
/// assert!(lan.contains("::ffff:10.1.2.3".parse()?)); // a dual-stack listener's view
/// assert!(!lan.contains("11.0.0.1".parse()?));
///
/// // Host bits are cleared; a bare address is a single host.
/// assert_eq!("10.1.2.3/8".parse::<IpNet>()?.to_string(), "10.0.0.0/8");
/// assert_eq!("2001:db8::1".parse::<IpNet>()?.to_string(), "2001:db8::1/128");
/// assert_eq!(IpNet::new("2001:db8:ff::1".parse()?, 48)?.to_string(), "2001:db8:ff::/48");
/// assert_eq!(IpNet::from("192.0.2.1".parse::<IpAddr>()?), "192.0.2.1/32".parse()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The first address of the range (canonical, host bits cleared).
    addr: IpAddr,
    /// The prefix length: ≤ 32 for IPv4, ≤ 128 for IPv6.
    bits: u8,
}

impl IpNet {
    /// The range of the addresses whose first `bits` bits are those of `addr`.
    ///
    /// `bits` is at most 32 for IPv4 and 128 for IPv6, else
    /// [`ConfigError::InvalidPrefix`]. The host bits of `addr` are cleared.
    ///
    /// # Examples
    ///
    /// ```
    /// use fluxrate::http::IpNet;
    /// use fluxrate::ConfigError;
    ///
    /// let net = IpNet::new("203.0.113.77".parse()?, 24)?;
    /// assert_eq!(net.to_string(), "203.0.113.0/24");
    /// assert!(matches!(
    ///     IpNet::new("203.0.113.77".parse()?, 33),
    ///     Err(ConfigError::InvalidPrefix { bits: 33, max: 32, .. })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(addr: IpAddr, bits: u8) -> Result<IpNet, ConfigError> {
        let (family, max) = match addr {
            IpAddr::V4(_) => ("IPv4", 32),
            IpAddr::V6(_) => ("IPv6", 128),
        };
        if bits > max {
            return Err(ConfigError::InvalidPrefix {
                family,
                bits,
                min: 0,
                max,
            });
        }
        Ok(Self::canonical(addr, bits))
    }

    /// `addr/bits` with `bits` already checked: IPv4-mapped ranges of ≥ 96 bits become IPv4,
    /// host bits are cleared.
    fn canonical(addr: IpAddr, bits: u8) -> IpNet {
        let (addr, bits) = match addr {
            IpAddr::V6(v6) if bits >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), bits - 96),
                None => (addr, bits),
            },
            _ => (addr, bits),
        };
        IpNet {
            addr: mask(addr, bits),
            bits,
        }
    }

    /// Whether `ip` is in this range. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are taken
    /// as the IPv4 address they carry, on both sides.
    ///
    /// # Examples
    ///
    /// ```
    /// use fluxrate::http::IpNet;
    ///
    /// let v6: IpNet = "2001:db8:ff::/48".parse()?;
    /// assert!(v6.contains("2001:db8:ff:1::9".parse()?));
    /// assert!(!v6.contains("2001:db8:fe::9".parse()?));
    /// let mapped: IpNet = "::ffff:10.0.0.9".parse()?;
    /// assert!(mapped.contains("10.0.0.9".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(_), ip @ IpAddr::V4(_)) => mask(ip, self.bits) == self.addr,
            (IpAddr::V6(_), IpAddr::V4(v4)) => {
                mask(IpAddr::V6(v4.to_ipv6_mapped()), self.bits) == self.addr
            }
            (IpAddr::V6(_), ip @ IpAddr::V6(_)) => mask(ip, self.bits) == self.addr,
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

impl From<IpAddr> for IpNet {
    /// The single host `ip` (`/32` or `/128`; an IPv4-mapped address is its IPv4 host).
    fn from(ip: IpAddr) -> Self {
        let bits = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        Self::canonical(ip, bits)
    }
}

impl fmt::Display for IpNet {
    /// `address/bits`, such as `10.0.0.0/8` or `2001:db8::/32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

impl FromStr for IpNet {
    type Err = ConfigError;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a single host). Host bits are
    /// cleared. Anything else is [`ConfigError::InvalidNetwork`].
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let invalid = |reason| ConfigError::InvalidNetwork {
            input: s.to_owned(),
            reason,
        };
        let (addr, bits) = match s.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| invalid("expected an IPv4 or IPv6 address before the '/'"))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let bits = match bits {
            None => max,
            Some(b) => {
                if b.is_empty() || b.len() > 3 || !b.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(invalid("expected a prefix length in decimal after the '/'"));
                }
                match b.parse::<u8>() {
                    Ok(bits) if bits <= max => bits,
                    _ if max == 32 => return Err(invalid("an IPv4 prefix is at most 32 bits")),
                    _ => return Err(invalid("an IPv6 prefix is at most 128 bits")),
                }
            }
        };
        Ok(Self::canonical(addr, bits))
    }
}

/// `ip` with every bit after the first `bits` cleared (all of them kept when `bits` is at
/// least the address's length).
pub(crate) fn mask(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX
                .checked_shl(32u32.saturating_sub(u32::from(bits)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX
                .checked_shl(128u32.saturating_sub(u32::from(bits)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

/// How many leading bits of a client address name its key, per family.
///
/// IPv6 defaults to /64, IPv4 to /32: see [`PeerIp`](super::PeerIp) for why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefixes {
    v4: u8,
    v6: u8,
}

impl Default for Prefixes {
    fn default() -> Self {
        Self {
            v4: Self::V4.2,
            v6: Self::V6_DEFAULT,
        }
    }
}

impl Prefixes {
    /// IPv4: family, shortest and longest accepted prefix.
    const V4: (&'static str, u8, u8) = ("IPv4", 8, 32);
    /// IPv6: family, shortest and longest accepted prefix.
    const V6: (&'static str, u8, u8) = ("IPv6", 16, 128);
    /// The IPv6 default: what one subscriber or VM usually gets.
    const V6_DEFAULT: u8 = 64;

    fn check((family, min, max): (&'static str, u8, u8), bits: u8) -> Result<u8, ConfigError> {
        if (min..=max).contains(&bits) {
            Ok(bits)
        } else {
            Err(ConfigError::InvalidPrefix {
                family,
                bits,
                min,
                max,
            })
        }
    }

    /// With IPv4 addresses keyed by their first `bits` bits (8 to 32).
    pub(crate) fn with_v4(self, bits: u8) -> Result<Self, ConfigError> {
        Ok(Self {
            v4: Self::check(Self::V4, bits)?,
            ..self
        })
    }

    /// With IPv6 addresses keyed by their first `bits` bits (16 to 128).
    pub(crate) fn with_v6(self, bits: u8) -> Result<Self, ConfigError> {
        Ok(Self {
            v6: Self::check(Self::V6, bits)?,
            ..self
        })
    }

    /// The key of the client `ip`: canonicalized first (an IPv4-mapped address is keyed as
    /// the IPv4 address it carries, with the IPv4 prefix, never masked as IPv6), then masked
    /// to its family's prefix.
    pub(crate) fn key(self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            ip @ IpAddr::V4(_) => mask(ip, self.v4),
            ip @ IpAddr::V6(_) => mask(ip, self.v6),
        }
    }
}
