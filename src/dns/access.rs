//! Stage 2, access: may this client ask at all?
//!
//! Decided from the client's address alone, before the packet is parsed:
//! a client outside `access.allow` costs a prefix test and, with `refused:
//! refuse`, the parse needed to echo its question in the REFUSED (EDE 18)
//! answer; with `drop`, nothing more. It sits before the policy so a
//! refused client learns nothing about what is blocked (SPEC "Holding
//! up"). Unbound's `access-control` with its default-deny is the model.
//!
//! Why a list scanned in order: an allow list is a handful of networks
//! (the default has six), and a scan of six masked compares is cheaper
//! than any tree's first cache miss. The configuration caps it at
//! [`MAX_NETS`] so the scan stays bounded.

use std::fmt;
use std::net::IpAddr;

/// The most networks `access.allow` may hold.
pub const MAX_NETS: usize = 1024;

/// A network: an address and a prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("expected an address or ADDRESS/PREFIX, such as 10.0.0.0/8 or fc00::/7")]
    Syntax,
    #[error("prefix length {0} is longer than the address ({1} bits)")]
    TooLong(u32, u32),
    #[error("{0} has bits set past its /{1}; the network is {2}")]
    HostBits(IpAddr, u8, Net),
}

impl Net {
    /// `10.0.0.0/8`, `fc00::/7`, or a bare address (a /32 or /128). Host
    /// bits past the prefix are an error that names the network meant, as
    /// `10.1.2.3/8` is almost always a typo for something.
    pub fn parse(text: &str) -> Result<Net, NetError> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| NetError::Syntax)?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => bits,
            Some(l) => l.trim().parse::<u32>().map_err(|_| NetError::Syntax)?,
        };
        if len > bits {
            return Err(NetError::TooLong(len, bits));
        }
        let len = len as u8;
        let net = Net {
            addr: mask(addr, len),
            len,
        };
        if net.addr != addr {
            return Err(NetError::HostBits(addr, len, net));
        }
        Ok(net)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `ip` with the bits past its first `len` cleared (the access list's
/// networks, the rate limiter's client prefixes).
pub fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// The default `access.allow`: loopback and the private ranges (RFC 1918,
/// RFC 4193), as a trust's resolver serves its own network only.
pub const DEFAULT_ALLOW: [&str; 6] = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

/// What a refused client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refusal {
    /// REFUSED with EDE 18 (Prohibited).
    #[default]
    Refuse,
    /// Nothing.
    Drop,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Refuse => "refuse",
            Refusal::Drop => "drop",
        }
    }
}

/// What the access stage says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    Refuse,
    Drop,
}

impl Admission {
    pub fn as_str(self) -> &'static str {
        match self {
            Admission::Admit => "allow",
            Admission::Refuse => "refuse",
            Admission::Drop => "drop",
        }
    }
}

/// Who may query: masked compares per family, in configuration order.
#[derive(Debug, Clone)]
pub struct Access {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    refused: Admission,
}

impl Default for Access {
    /// The default allow list, refusing the rest.
    fn default() -> Self {
        let nets: Vec<Net> = DEFAULT_ALLOW
            .iter()
            .filter_map(|n| Net::parse(n).ok())
            .collect();
        Self::new(&nets, Refusal::Refuse)
    }
}

impl Access {
    pub fn new(allow: &[Net], refused: Refusal) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in allow {
            match n.addr {
                IpAddr::V4(a) => {
                    let m = u32::MAX.checked_shl(32 - u32::from(n.len)).unwrap_or(0);
                    v4.push((u32::from(a), m));
                }
                IpAddr::V6(a) => {
                    let m = u128::MAX.checked_shl(128 - u32::from(n.len)).unwrap_or(0);
                    v6.push((u128::from(a), m));
                }
            }
        }
        Self {
            v4,
            v6,
            refused: match refused {
                Refusal::Refuse => Admission::Refuse,
                Refusal::Drop => Admission::Drop,
            },
        }
    }

    #[inline]
    pub fn check(&self, client: IpAddr) -> Admission {
        let allowed = match client.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|(net, m)| a & m == *net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|(net, m)| a & m == *net)
            }
        };
        if allowed {
            Admission::Admit
        } else {
            self.refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_say_what_is_wrong() {
        assert_eq!(Net::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Net::parse("::1").unwrap().to_string(), "::1/128");
        assert_eq!(Net::parse("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(Net::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(Net::parse("10.0.0.0/33"), Err(NetError::TooLong(33, 32)));
        assert_eq!(Net::parse("ten/8"), Err(NetError::Syntax));
        assert_eq!(Net::parse("10.0.0.0/x"), Err(NetError::Syntax));
        assert_eq!(
            Net::parse("10.1.2.3/8").unwrap_err().to_string(),
            "10.1.2.3 has bits set past its /8; the network is 10.0.0.0/8"
        );
    }

    #[test]
    fn the_default_admits_loopback_and_private_ranges_only() {
        let a = Access::default();
        for ok in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "10.200.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "fd12::1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(a.check(ip(ok)), Admission::Admit, "{ok}");
        }
        for no in [
            "8.8.8.8",
            "172.32.0.1",
            "2001:db8::1",
            "::2",
            "fe80::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(a.check(ip(no)), Admission::Refuse, "{no}");
        }
    }

    #[test]
    fn drop_and_open_lists() {
        let nets = [Net::parse("192.0.2.0/24").unwrap()];
        let a = Access::new(&nets, Refusal::Drop);
        assert_eq!(a.check(ip("192.0.2.200")), Admission::Admit);
        assert_eq!(a.check(ip("192.0.3.1")), Admission::Drop);
        assert_eq!(a.check(ip("::1")), Admission::Drop);
        let open = Access::new(
            &[
                Net::parse("0.0.0.0/0").unwrap(),
                Net::parse("::/0").unwrap(),
            ],
            Refusal::Refuse,
        );
        assert_eq!(open.check(ip("203.0.113.9")), Admission::Admit);
        assert_eq!(open.check(ip("2001:db8::9")), Admission::Admit);
        let none = Access::new(&[], Refusal::Refuse);
        assert_eq!(none.check(ip("127.0.0.1")), Admission::Refuse);
    }
}
