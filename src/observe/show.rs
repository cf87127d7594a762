//! How a client's address appears in the audit log, the block page's log
//! line and `/stats` (`log.client`): as it is, as its subnet, as a keyed
//! hash, or not at all.
//!
//! `hashed` is HMAC-SHA256 of the address's bytes under `client_hash_key`,
//! cut to 64 bits of hex: the same client and key always give the same
//! string, so the IG team can follow one device through the log, and
//! without the key nobody can walk the address space back to it (a plain
//! hash of an IPv4 address is reversed by trying all 2^32).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, Mac};
use rustc_hash::FxHashMap;
use sha2::Sha256;

use crate::config::ClientShow;

/// Clients remembered as shown, so a busy client is formatted (or hashed)
/// once; forgotten all at once when full (a bound, not a cache policy).
const REMEMBERED: usize = 4096;

/// Shows client addresses per `log.client`. Used off the query path.
pub struct Shower {
    mode: ClientShow,
    remembered: FxHashMap<IpAddr, String>,
}

impl Shower {
    pub fn new(mode: ClientShow) -> Self {
        Self {
            mode,
            remembered: FxHashMap::default(),
        }
    }

    /// Whether clients are shown at all.
    pub fn shows(&self) -> bool {
        self.mode != ClientShow::None
    }

    /// The client as configured; `None` with `log.client: none`.
    pub fn show(&mut self, ip: IpAddr) -> Option<&str> {
        let ip = canonical(ip);
        if self.mode == ClientShow::None {
            return None;
        }
        if !self.remembered.contains_key(&ip) {
            let shown = match &self.mode {
                ClientShow::None => return None,
                ClientShow::Full => ip.to_string(),
                ClientShow::Subnet => subnet(ip),
                ClientShow::Hashed { key } => hashed(key.as_bytes(), ip),
            };
            if self.remembered.len() >= REMEMBERED {
                self.remembered.clear();
            }
            self.remembered.insert(ip, shown);
        }
        self.remembered.get(&ip).map(String::as_str)
    }
}

/// An IPv4 client seen through an IPv6 socket is the IPv4 client.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client's /24 (IPv4) or /56 (IPv6), as `192.0.2.0/24`.
fn subnet(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}/24", Ipv4Addr::new(o[0], o[1], o[2], 0))
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[7..].fill(0);
            format!("{}/56", Ipv6Addr::from(o))
        }
    }
}

fn hashed(key: &[u8], ip: IpAddr) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    match ip {
        IpAddr::V4(v4) => mac.update(&v4.octets()),
        IpAddr::V6(v6) => mac.update(&v6.octets()),
    }
    let digest = mac.finalize().into_bytes();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        assert_eq!(subnet("192.0.2.77".parse().unwrap()), "192.0.2.0/24");
        assert_eq!(
            subnet("2001:db8:1200:34::1".parse().unwrap()),
            "2001:db8:1200::/56"
        );
        assert_eq!(
            subnet("2001:db8:1234:5678::1".parse().unwrap()),
            "2001:db8:1234:5600::/56"
        );
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut a = Shower::new(ClientShow::Hashed { key: "k1".into() });
        let mut b = Shower::new(ClientShow::Hashed { key: "k2".into() });
        let first = a.show(ip).unwrap().to_owned();
        assert_eq!(first.len(), 16);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.show(ip).unwrap(), first, "same client, same key");
        assert_ne!(b.show(ip).unwrap(), first, "another key");
        assert_ne!(a.show("192.0.2.2".parse().unwrap()).unwrap(), first);
        // RFC 4231 test case 1, to pin the construction down.
        let mac = Hmac::<Sha256>::new_from_slice(&[0x0b; 20])
            .unwrap()
            .chain_update(b"Hi There")
            .finalize()
            .into_bytes();
        assert_eq!(mac[..8], [0xb0, 0x34, 0x4c, 0x61, 0xd8, 0xdb, 0x38, 0x53]);
    }

    #[test]
    fn none_shows_nothing_and_mapped_v4_is_v4() {
        assert_eq!(
            Shower::new(ClientShow::None).show("::1".parse().unwrap()),
            None
        );
        assert_eq!(
            Shower::new(ClientShow::Full).show("::ffff:192.0.2.9".parse().unwrap()),
            Some("192.0.2.9")
        );
    }
}
