//! A scripted fake upstream resolver, in the test process, answering UDP and
//! TCP on one loopback port. Each name (optionally name+qtype) gets a
//! [`Script`]; names without one get `A 192.0.2.1` (TTL 300) for qtype A and
//! an empty NOERROR otherwise. It counts queries per transport and keeps
//! every query it saw, so tests can assert cache hits ("nothing was sent
//! upstream") and DO/CD pass-through.

use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::{A, NS, NULL, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the fake upstream answers for a name.
#[derive(Clone, Debug, Default)]
pub struct Script {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    pub aa: bool,
    pub ad: bool,
    /// Over UDP answer with TC=1 and no records; over TCP answer in full.
    pub tc_over_udp: bool,
    /// Never answer (for timeouts).
    pub silent: bool,
    /// An Extended DNS Error (code, text) in the reply's OPT.
    pub ede: Option<(u16, String)>,
    /// No OPT in the reply, even when the query had one.
    pub no_edns: bool,
    /// Answer only after this long (the UDP loop waits: one slow answer).
    pub delay: Option<Duration>,
    /// Rewrites the encoded reply (UDP and TCP) before it is sent: for
    /// replies no encoder would write (compression loops, lies about
    /// lengths, records out of place).
    pub mangle: Option<fn(&mut Vec<u8>)>,
}

pub fn name(s: &str) -> Name {
    Name::from_ascii(if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    })
    .expect("valid name")
}

pub fn rec(owner: &str, ttl: u32, data: RData) -> Record {
    Record::from_rdata(name(owner), ttl, data)
}
pub fn rec_a(owner: &str, ttl: u32, ip: Ipv4Addr) -> Record {
    rec(owner, ttl, RData::A(A(ip)))
}
pub fn rec_ns(owner: &str, ttl: u32, ns: &str) -> Record {
    rec(owner, ttl, RData::NS(NS(name(ns))))
}
pub fn rec_soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    let soa = SOA::new(
        name(&format!("ns1.{zone}")),
        name(&format!("hostmaster.{zone}")),
        2024010101,
        3600,
        600,
        86400,
        minimum,
    );
    rec(zone, ttl, RData::SOA(soa))
}
pub fn rec_txt(owner: &str, ttl: u32, strings: Vec<String>) -> Record {
    rec(owner, ttl, RData::TXT(TXT::new(strings)))
}
/// A syntactically valid RRSIG (RFC 4034 §3.1) covering `covered`, with a fake signature.
pub fn rec_rrsig(owner: &str, ttl: u32, covered: RecordType, signer: &str) -> Record {
    let mut rdata = Vec::new();
    rdata.extend_from_slice(&u16::from(covered).to_be_bytes());
    rdata.push(13); // algorithm: ECDSAP256SHA256
    rdata.push(name(owner).num_labels());
    rdata.extend_from_slice(&ttl.to_be_bytes()); // original TTL
    rdata.extend_from_slice(&2_000_000_000u32.to_be_bytes()); // expiration
    rdata.extend_from_slice(&1_700_000_000u32.to_be_bytes()); // inception
    rdata.extend_from_slice(&12345u16.to_be_bytes()); // key tag
    for label in signer.trim_end_matches('.').split('.') {
        rdata.push(label.len() as u8);
        rdata.extend_from_slice(label.as_bytes());
    }
    rdata.push(0);
    rdata.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    rec(
        owner,
        ttl,
        RData::Unknown {
            code: RecordType::RRSIG,
            rdata: NULL::with(rdata),
        },
    )
}

impl Script {
    /// NOERROR with these A records (owner `owner`).
    pub fn a(owner: &str, ttl: u32, ips: &[Ipv4Addr]) -> Self {
        Script {
            answers: ips.iter().map(|ip| rec_a(owner, ttl, *ip)).collect(),
            ..Default::default()
        }
    }
    /// NOERROR with `n` A records 198.18.x.y.
    pub fn many_a(owner: &str, ttl: u32, n: usize) -> Self {
        let ips: Vec<_> = (0..n)
            .map(|i| Ipv4Addr::new(198, 18, (i / 256) as u8, (i % 256) as u8))
            .collect();
        Self::a(owner, ttl, &ips)
    }
    /// NOERROR with one TXT record holding about `bytes` bytes of text.
    pub fn big_txt(owner: &str, ttl: u32, bytes: usize) -> Self {
        let strings = (0..bytes.div_ceil(200))
            .map(|i| format!("{:0>200}", i))
            .collect();
        Script {
            answers: vec![rec_txt(owner, ttl, strings)],
            ..Default::default()
        }
    }
    pub fn nxdomain(zone: &str, soa_ttl: u32, minimum: u32) -> Self {
        Script {
            rcode: ResponseCode::NXDomain,
            authorities: vec![rec_soa(zone, soa_ttl, minimum)],
            ..Default::default()
        }
    }
    pub fn nodata(zone: &str, soa_ttl: u32, minimum: u32) -> Self {
        Script {
            authorities: vec![rec_soa(zone, soa_ttl, minimum)],
            ..Default::default()
        }
    }
    pub fn rcode(rcode: ResponseCode) -> Self {
        Script {
            rcode,
            ..Default::default()
        }
    }
    pub fn servfail() -> Self {
        Self::rcode(ResponseCode::ServFail)
    }
    pub fn silent() -> Self {
        Script {
            silent: true,
            ..Default::default()
        }
    }
    pub fn with_answer(mut self, r: Record) -> Self {
        self.answers.push(r);
        self
    }
    pub fn with_authority(mut self, r: Record) -> Self {
        self.authorities.push(r);
        self
    }
    pub fn with_additional(mut self, r: Record) -> Self {
        self.additionals.push(r);
        self
    }
    pub fn with_ad(mut self) -> Self {
        self.ad = true;
        self
    }
    pub fn with_aa(mut self) -> Self {
        self.aa = true;
        self
    }
    pub fn tc_over_udp(mut self) -> Self {
        self.tc_over_udp = true;
        self
    }
    pub fn with_ede(mut self, code: u16, text: &str) -> Self {
        self.ede = Some((code, text.into()));
        self
    }
    pub fn delayed(mut self, by: Duration) -> Self {
        self.delay = Some(by);
        self
    }
    pub fn without_edns(mut self) -> Self {
        self.no_edns = true;
        self
    }
    pub fn mangled(mut self, f: fn(&mut Vec<u8>)) -> Self {
        self.mangle = Some(f);
        self
    }
}

/// One query the fake upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub tcp: bool,
    pub msg: Message,
}

impl Seen {
    pub fn qname(&self) -> String {
        self.msg
            .queries
            .first()
            .map(|q| crate::common::dns::norm(&q.name))
            .unwrap_or_default()
    }
    pub fn dnssec_ok(&self) -> bool {
        self.msg.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok)
    }
    pub fn cd(&self) -> bool {
        self.msg.metadata.checking_disabled
    }
}

#[derive(Default)]
struct State {
    scripts: Mutex<HashMap<(String, Option<RecordType>), Script>>,
    default: Mutex<Option<Script>>,
    udp: AtomicUsize,
    tcp: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

/// The fake upstream; its threads stop when it is dropped.
pub struct FakeUpstream {
    addr: SocketAddr,
    state: Arc<State>,
}

fn key(n: &str) -> String {
    n.trim_end_matches('.').to_lowercase()
}

impl FakeUpstream {
    /// Starts a fake upstream on a fresh loopback port (UDP and TCP).
    pub fn start() -> Self {
        let (udp, tcp) = bind_pair();
        crate::common::ports::claim(udp.local_addr().unwrap().port());
        Self::with_sockets(udp, tcp)
    }

    /// Starts a fake upstream on `addr` (a port the test holds for it).
    pub fn start_on(addr: SocketAddr) -> Self {
        let udp = UdpSocket::bind(addr).expect("bind UDP");
        let tcp = TcpListener::bind(addr).expect("bind TCP");
        Self::with_sockets(udp, tcp)
    }

    fn with_sockets(udp: UdpSocket, tcp: TcpListener) -> Self {
        let addr = udp.local_addr().unwrap();
        let state = Arc::new(State::default());
        {
            let state = state.clone();
            thread::spawn(move || udp_loop(udp, state));
        }
        {
            let state = state.clone();
            thread::spawn(move || tcp_loop(tcp, state));
        }
        FakeUpstream { addr, state }
    }

    /// A fake upstream that never answers anything (a dead server).
    pub fn silent() -> Self {
        let up = Self::start();
        up.set_default(Script::silent());
        up
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Scripts the answer for `name` (any qtype).
    pub fn on(&self, name: &str, script: Script) -> &Self {
        self.state
            .scripts
            .lock()
            .unwrap()
            .insert((key(name), None), script);
        self
    }
    /// Scripts the answer for `name` and one qtype (wins over `on`).
    pub fn on_type(&self, name: &str, qtype: RecordType, script: Script) -> &Self {
        self.state
            .scripts
            .lock()
            .unwrap()
            .insert((key(name), Some(qtype)), script);
        self
    }
    /// The answer for names without a script.
    pub fn set_default(&self, script: Script) {
        *self.state.default.lock().unwrap() = Some(script);
    }

    pub fn udp_count(&self) -> usize {
        self.state.udp.load(Ordering::SeqCst)
    }
    pub fn tcp_count(&self) -> usize {
        self.state.tcp.load(Ordering::SeqCst)
    }
    /// Queries received over UDP and TCP together.
    pub fn count(&self) -> usize {
        self.udp_count() + self.tcp_count()
    }
    /// Queries received for `name` (case-insensitive), both transports.
    pub fn count_for(&self, name: &str) -> usize {
        let k = key(name);
        self.seen().iter().filter(|s| s.qname() == k).count()
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
    pub fn last_for(&self, name: &str) -> Option<Seen> {
        let k = key(name);
        self.seen().into_iter().rev().find(|s| s.qname() == k)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // wake both loops so the threads see the flag and exit
        if let Ok(s) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) {
            let _ = s.send_to(&[0], self.addr);
        }
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Binds UDP and TCP on the same fresh loopback port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..200 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP");
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return (udp, tcp);
        }
    }
    panic!("fake upstream: no port free for both UDP and TCP");
}

fn udp_loop(sock: UdpSocket, state: Arc<State>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            if state.stop.load(Ordering::SeqCst) {
                return;
            }
            continue;
        };
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        if let Some(resp) = handle(&buf[..n], false, &state) {
            let _ = sock.send_to(&resp, peer);
        }
    }
}

fn tcp_loop(listener: TcpListener, state: Arc<State>) {
    for conn in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut conn) = conn else { continue };
        let state = state.clone();
        thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            loop {
                let mut len = [0u8; 2];
                if conn.read_exact(&mut len).is_err() {
                    return;
                }
                let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                if conn.read_exact(&mut buf).is_err() {
                    return;
                }
                if let Some(resp) = handle(&buf, true, &state) {
                    let mut framed = (resp.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&resp);
                    if conn.write_all(&framed).is_err() {
                        return;
                    }
                }
            }
        });
    }
}

fn handle(packet: &[u8], tcp: bool, state: &State) -> Option<Vec<u8>> {
    let query = Message::from_vec(packet).ok()?;
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let q = query.queries.first()?.clone();
    // sinkhole's health and loop probe (at start, then while a server is
    // down) is seen but not counted: counts are of client queries.
    let probe = key(&q.name.to_ascii()).ends_with(".sinkhole-loop-check");
    if !probe {
        let counter = if tcp { &state.tcp } else { &state.udp };
        counter.fetch_add(1, Ordering::SeqCst);
    }
    state.seen.lock().unwrap().push(Seen {
        tcp,
        msg: query.clone(),
    });

    let k = key(&q.name.to_ascii());
    let script = {
        let scripts = state.scripts.lock().unwrap();
        scripts
            .get(&(k.clone(), Some(q.query_type)))
            .or_else(|| scripts.get(&(k, None)))
            .cloned()
    };
    let script = script
        .or_else(|| state.default.lock().unwrap().clone())
        .unwrap_or_else(|| {
            if q.query_type == RecordType::A {
                // built from the Name itself: fuzzed names need not survive to_ascii/from_ascii
                let a = RData::A(A(Ipv4Addr::new(192, 0, 2, 1)));
                Script {
                    answers: vec![Record::from_rdata(q.name.clone(), 300, a)],
                    ..Default::default()
                }
            } else {
                Script::default()
            }
        });
    if script.silent {
        return None;
    }
    if let Some(by) = script.delay {
        thread::sleep(by);
    }

    let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.checking_disabled = query.metadata.checking_disabled;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = script.aa;
    resp.metadata.authentic_data = script.ad;
    resp.metadata.response_code = script.rcode;
    resp.add_query(q);
    if let Some(qe) = query.edns.as_ref().filter(|_| !script.no_edns) {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_dnssec_ok(qe.flags().dnssec_ok);
        if let Some((code, text)) = &script.ede {
            let mut data = code.to_be_bytes().to_vec();
            data.extend_from_slice(text.as_bytes());
            e.options_mut().insert(EdnsOption::Unknown(15, data));
        }
        resp.set_edns(e);
    }
    let mut full = {
        let mut m = resp.clone();
        m.add_answers(script.answers.iter().cloned());
        m.add_authorities(script.authorities.iter().cloned());
        m.add_additionals(script.additionals.iter().cloned());
        m.to_vec().ok()?
    };
    if let Some(mangle) = script.mangle {
        mangle(&mut full);
    }
    if tcp {
        return Some(full);
    }
    let limit = query
        .edns
        .as_ref()
        .map(|e| e.max_payload().max(512) as usize)
        .unwrap_or(512);
    if script.tc_over_udp || full.len() > limit {
        resp.metadata.truncation = true;
        return resp.to_vec().ok();
    }
    Some(full)
}
