//! What enters the pipeline: one query as it arrived.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// How the query arrived: UDP answers are size-limited, TCP ones are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// The address a query was sent to (ours), as packet info reports it on
/// a socket bound to a wildcard address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub ip: IpAddr,
    /// The interface it came in on (needed to answer from a link-local
    /// IPv6 address; 0 otherwise).
    pub ifindex: u32,
}

/// One query as it arrived: the bytes, who sent them, where to, how, when.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub packet: &'a [u8],
    /// The client's address and port.
    pub client: SocketAddr,
    /// The address the query was sent to, when the socket is bound to a
    /// wildcard address: the answer must come from it.
    pub local: Option<Local>,
    pub transport: Transport,
    /// When the packet was read; also "now" for the cache's TTL countdown.
    pub received: Instant,
}
