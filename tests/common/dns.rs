//! A small DNS client: builds queries with hickory-proto, sends them over UDP
//! or TCP with per-call timeouts, and keeps the raw response bytes next to the
//! decoded `Message` so tests can check the wire format exactly.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// Default time a client waits for an answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

static NEXT_ID: AtomicU16 = AtomicU16::new(0x1000);

fn next_id() -> u16 {
    // distinct IDs per process make stray answers easy to spot
    NEXT_ID.fetch_add(7, Ordering::Relaxed)
}

/// A query under construction. Defaults: RD=1, no EDNS, class IN, fresh ID.
#[derive(Clone, Debug)]
pub struct Q {
    pub name: String,
    pub qtype: RecordType,
    pub id: u16,
    pub rd: bool,
    pub cd: bool,
    pub ad: bool,
    pub opcode: OpCode,
    /// EDNS payload size, DO bit, version
    pub edns: Option<(u16, bool, u8)>,
}

impl Q {
    pub fn new(name: &str, qtype: RecordType) -> Self {
        Q {
            name: name.to_string(),
            qtype,
            id: next_id(),
            rd: true,
            cd: false,
            ad: false,
            opcode: OpCode::Query,
            edns: None,
        }
    }
    pub fn a(name: &str) -> Self {
        Self::new(name, RecordType::A)
    }
    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }
    pub fn opcode(mut self, opcode: OpCode) -> Self {
        self.opcode = opcode;
        self
    }
    pub fn rd(mut self, rd: bool) -> Self {
        self.rd = rd;
        self
    }
    pub fn cd(mut self, cd: bool) -> Self {
        self.cd = cd;
        self
    }
    pub fn ad(mut self, ad: bool) -> Self {
        self.ad = ad;
        self
    }
    /// Adds EDNS(0) with this UDP payload size.
    pub fn edns(mut self, payload: u16) -> Self {
        let (_, d, v) = self.edns.unwrap_or((payload, false, 0));
        self.edns = Some((payload, d, v));
        self
    }
    /// Adds EDNS (1232 unless set before) with DO=1.
    pub fn dnssec_ok(mut self) -> Self {
        let (p, _, v) = self.edns.unwrap_or((1232, false, 0));
        self.edns = Some((p, true, v));
        self
    }
    pub fn edns_version(mut self, version: u8) -> Self {
        let (p, d, _) = self.edns.unwrap_or((1232, false, 0));
        self.edns = Some((p, d, version));
        self
    }

    pub fn message(&self) -> Message {
        let mut m = Message::new(self.id, MessageType::Query, self.opcode);
        m.metadata.recursion_desired = self.rd;
        m.metadata.checking_disabled = self.cd;
        m.metadata.authentic_data = self.ad;
        let name = Name::from_ascii(&self.name).expect("valid query name");
        let mut q = Query::query(name, self.qtype);
        q.set_query_class(DNSClass::IN);
        m.add_query(q);
        if let Some((payload, dnssec_ok, version)) = self.edns {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            e.set_dnssec_ok(dnssec_ok);
            e.set_version(version);
            m.set_edns(e);
        }
        m
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.message().to_vec().expect("encode query")
    }

    pub fn udp(&self, server: SocketAddr) -> Reply {
        udp(server, &self.bytes())
    }
    pub fn tcp(&self, server: SocketAddr) -> Reply {
        tcp(server, &self.bytes())
    }
}

/// A decoded response with its raw bytes.
#[derive(Clone, Debug)]
pub struct Reply {
    pub raw: Vec<u8>,
    pub msg: Message,
}

impl Reply {
    pub fn from_bytes(raw: Vec<u8>) -> Self {
        let msg = Message::from_vec(&raw).unwrap_or_else(|e| {
            panic!("response does not decode: {e}; bytes: {raw:02x?}");
        });
        Reply { raw, msg }
    }
    pub fn rcode(&self) -> ResponseCode {
        self.msg.metadata.response_code
    }
    /// The low 4 bits of RCODE as sent in the header.
    pub fn header_rcode(&self) -> u8 {
        self.raw[3] & 0x0f
    }
    pub fn id(&self) -> u16 {
        self.msg.metadata.id
    }
    pub fn tc(&self) -> bool {
        self.msg.metadata.truncation
    }
    pub fn aa(&self) -> bool {
        self.msg.metadata.authoritative
    }
    pub fn ad(&self) -> bool {
        self.msg.metadata.authentic_data
    }
    pub fn ra(&self) -> bool {
        self.msg.metadata.recursion_available
    }
    pub fn rd(&self) -> bool {
        self.msg.metadata.recursion_desired
    }
    pub fn cd(&self) -> bool {
        self.msg.metadata.checking_disabled
    }
    pub fn qr(&self) -> bool {
        self.msg.metadata.message_type == MessageType::Response
    }
    pub fn answers(&self) -> &[Record] {
        &self.msg.answers
    }
    pub fn authorities(&self) -> &[Record] {
        &self.msg.authorities
    }
    pub fn additionals(&self) -> &[Record] {
        &self.msg.additionals
    }
    pub fn has_opt(&self) -> bool {
        self.msg.edns.is_some()
    }
    pub fn a_addrs(&self) -> Vec<Ipv4Addr> {
        self.answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }
    pub fn aaaa_addrs(&self) -> Vec<Ipv6Addr> {
        self.answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }
    /// The SOA records of the AUTHORITY section: (owner, ttl, minimum).
    pub fn soas(&self) -> Vec<(String, u32, u32)> {
        self.authorities()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SOA(soa) => Some((r.name.to_ascii().to_lowercase(), r.ttl, soa.minimum)),
                _ => None,
            })
            .collect()
    }
    /// Extended DNS Errors (RFC 8914, option 15): (INFO-CODE, EXTRA-TEXT).
    pub fn ede(&self) -> Vec<(u16, String)> {
        let Some(edns) = &self.msg.edns else {
            return vec![];
        };
        edns.options()
            .options
            .iter()
            .filter_map(|(code, opt)| match (code, opt) {
                (EdnsCode::Unknown(15), EdnsOption::Unknown(15, data)) if data.len() >= 2 => {
                    let info = u16::from_be_bytes([data[0], data[1]]);
                    Some((info, String::from_utf8_lossy(&data[2..]).into_owned()))
                }
                _ => None,
            })
            .collect()
    }
    /// The raw bytes of the first question (name + type + class).
    pub fn question_bytes(&self) -> Vec<u8> {
        question_bytes(&self.raw)
    }
    /// Human-readable dump for assertion messages.
    pub fn dump(&self) -> String {
        format!("{}", self.msg)
    }
}

/// The raw bytes of the first question of a message (no compression allowed there).
pub fn question_bytes(raw: &[u8]) -> Vec<u8> {
    let mut i = 12;
    loop {
        let len = raw[i] as usize;
        assert!(len & 0xc0 == 0, "compression pointer in question name");
        i += 1 + len;
        if len == 0 {
            break;
        }
    }
    raw[12..i + 4].to_vec()
}

/// Sends `query` over UDP and returns the first datagram back. Panics on timeout.
pub fn udp(server: SocketAddr, query: &[u8]) -> Reply {
    match udp_raw(server, query, TIMEOUT) {
        Some(raw) => Reply::from_bytes(raw),
        None => panic!("no UDP answer from {server}: timed out after {TIMEOUT:?} or refused"),
    }
}

/// Sends raw bytes over UDP; returns the first datagram back, or None on
/// timeout or error (an ICMP port-unreachable ends the wait at once).
pub fn udp_raw(server: SocketAddr, query: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let sock = udp_socket(server, timeout);
    sock.send(query).expect("send UDP");
    recv(&sock)
}

/// Receives one datagram (up to 64 KiB), None on timeout or error.
pub fn recv(sock: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65535];
    match sock.recv(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// A connected UDP client socket for multi-packet exchanges.
///
/// While nothing is bound to `server`'s port (a server still starting), the
/// kernel may hand that very port out as the client's ephemeral port; the
/// socket would then be connected to itself and "answer" its own query. A
/// readiness probe once took that echo for a live server, so such a socket
/// is never returned.
pub fn udp_socket(server: SocketAddr, timeout: Duration) -> UdpSocket {
    for _ in 0..100 {
        let local: SocketAddr = if server.is_ipv6() {
            (Ipv6Addr::LOCALHOST, 0).into()
        } else {
            (Ipv4Addr::LOCALHOST, 0).into()
        };
        let sock = UdpSocket::bind(local).expect("bind client socket");
        if sock.local_addr().expect("local_addr") == server {
            continue;
        }
        sock.connect(server).expect("connect UDP");
        sock.set_read_timeout(Some(timeout)).unwrap();
        return sock;
    }
    panic!("could not get a client port other than {server}");
}

/// Sends `query` over TCP (length-prefixed) and returns the answer. Panics on failure.
pub fn tcp(server: SocketAddr, query: &[u8]) -> Reply {
    let mut s = tcp_connect(server);
    tcp_send(&mut s, query);
    match tcp_recv(&mut s) {
        Some(raw) => Reply::from_bytes(raw),
        None => panic!("no TCP answer from {server} within {TIMEOUT:?}"),
    }
}

/// Waits (up to `wait`) for the server to close `s`, reading past
/// anything it sends first (an error response, then the close); true if
/// it closed.
pub fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

pub fn tcp_connect(server: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&server, TIMEOUT)
        .unwrap_or_else(|e| panic!("TCP connect to {server}: {e}"));
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

pub fn tcp_send(s: &mut TcpStream, msg: &[u8]) {
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    s.write_all(&framed).expect("TCP write");
}

/// Reads one length-prefixed message; None on EOF/timeout.
pub fn tcp_recv(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Lower-cased name without trailing dot.
pub fn norm(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_lowercase()
}
