//! The reference resolver for the differential test: SPEC's answer rules
//! written on hickory's full decode and encode, deciding with sinkhole's own
//! policy (`sinkhole::policy`, built from the same config file and lists).
//!
//! - [`RefServer`]: a `hickory_server::server::RequestHandler` served by
//!   hickory-server's own `Server` on a loopback UDP socket and TCP listener.
//!   It sees every packet hickory-server can decode (`MessageRequest`), and
//!   builds each answer as a hickory-proto `Message`, sent through
//!   `MessageResponseBuilder`. Non-blocked queries are forwarded to the
//!   configured upstream by a hickory-proto client of its own (decode, then
//!   re-encode the upstream's records).
//! - [`proto_answer`]: the packets hickory-server cannot decode, answered in
//!   process with hickory-proto alone (`Header::read` → `Message` →
//!   `to_vec`), because hickory-server's loop answers those itself with a
//!   FORMERR of its own making (RA clear, NOTIMP never given).
//! - [`expand`]: a message with every compression pointer expanded, the
//!   canonical form the two are compared in when compression may differ.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use sinkhole::config::Config;
use sinkhole::lists::ParsedList;
use sinkhole::policy::{self, Action, Decision, ListInput, Policy};
use sinkhole::reload::load_list;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Our advertised EDNS size and the UDP cap (SPEC: "at most 1232").
pub const EDNS_PAYLOAD: u16 = 1232;
/// RFC 8914 option code and the INFO-CODEs SPEC names.
const EDE_OPTION: u16 = 15;
const EDE_FORGED_ANSWER: u16 = 4;
const EDE_BLOCKED: u16 = 15;
const EDE_NOT_AUTHORITATIVE: u16 = 20;
const EDE_NO_REACHABLE_AUTHORITY: u16 = 22;
/// sinkhole's choices where SPEC names none: the EXTRA-TEXT cap, the SOA's
/// RNAME and timers, and the EXTRA-TEXT of a SERVFAIL (README "What clients receive").
const MAX_EDE_TEXT: usize = 200;
const SOA_RNAME: &str = "nobody.invalid.";
const SERVFAIL_TEXT: &str = "no upstream answered";
const NO_RECURSION_TEXT: &str = "recursion not desired; this server only recurses";
/// README: TTLs above a day are served as a day (the cache's ceiling).
const MAX_TTL: u32 = 86_400;

/// How blocked names are answered, from the config.
struct Style {
    ttl: u32,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

struct Handler {
    policy: Arc<Policy>,
    style: Style,
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

/// The reference running on hickory-server (UDP and TCP on one loopback port).
pub struct RefServer {
    pub addr: SocketAddr,
    pub policy: Arc<Policy>,
    /// Owns the server's tasks: dropping it stops them.
    _runtime: tokio::runtime::Runtime,
}

impl RefServer {
    /// Builds the policy from `config` (the very file the sinkhole under test
    /// runs with) and starts hickory-server. Ready when this returns: the
    /// sockets are bound before the server takes them.
    pub fn start(config: &Path) -> RefServer {
        let config = Config::load(config).unwrap_or_else(|e| panic!("reference config: {e}"));
        let loaded: Vec<ParsedList> = config
            .lists
            .iter()
            .map(|s| load_list(s).unwrap_or_else(|e| panic!("reference list: {e}")))
            .collect();
        let inputs: Vec<ListInput<'_, ParsedList>> = config
            .lists
            .iter()
            .zip(&loaded)
            .map(|(s, rules)| ListInput {
                name: &s.name,
                path: &s.path,
                category: s.category.as_deref(),
                rules,
            })
            .collect();
        let policy =
            Arc::new(policy::build(config.categories.clone(), &inputs).expect("reference policy"));
        let handler = Handler {
            policy: policy.clone(),
            style: Style {
                ttl: config.block.ttl,
                v4: config.block.redirect_v4,
                v6: config.block.redirect_v6,
            },
            upstreams: config.upstream.servers.clone(),
            timeout: config.upstream.timeout,
        };
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("local addr");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            let mut server = Server::new(handler);
            server.register_socket(tokio::net::UdpSocket::from_std(udp).expect("tokio udp"));
            server.register_listener(
                tokio::net::TcpListener::from_std(tcp).expect("tokio tcp"),
                Duration::from_secs(10),
                64,
            );
            tokio::spawn(async move {
                let _ = server.block_until_done().await;
            });
        });
        RefServer {
            addr,
            policy,
            _runtime: runtime,
        }
    }

    /// Does the policy block this name (labels as sent)?
    pub fn blocks(&self, name: &Name) -> bool {
        let labels: Vec<&[u8]> = name.iter().collect();
        matches!(
            self.policy.decide(labels.iter().rev().copied()),
            Decision::Block { .. }
        )
    }
}

fn bind_pair() -> (std::net::UdpSocket, std::net::TcpListener) {
    for _ in 0..200 {
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP");
        let port = udp.local_addr().expect("addr").port();
        if let Ok(tcp) = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            udp.set_nonblocking(true).expect("nonblocking");
            tcp.set_nonblocking(true).expect("nonblocking");
            crate::common::ports::claim(port);
            return (udp, tcp);
        }
    }
    panic!("reference: no port free for both UDP and TCP");
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let udp = request.protocol() == Protocol::Udp;
        let Some(resp) = self.answer(request, udp).await else {
            return ResponseInfo::from(Header {
                metadata: Metadata::response_from_request(&request.metadata),
                counts: Default::default(),
            });
        };
        let empty = Queries::read(&mut BinDecoder::new(&[]), 0).expect("empty question section");
        let queries = if resp.queries.is_empty() {
            &empty
        } else {
            &request.queries
        };
        let response = MessageResponseBuilder::new(queries, resp.edns.as_ref()).build(
            resp.metadata,
            resp.answers.iter(),
            resp.authorities.iter(),
            std::iter::empty(),
            resp.additionals.iter(),
        );
        response_handle
            .send_response(response)
            .await
            .expect("reference: send response")
    }
}

impl Handler {
    /// SPEC's answer to a request hickory could decode; `None` = no answer.
    async fn answer(&self, request: &Request, udp: bool) -> Option<Message> {
        let m = &request.metadata;
        if m.message_type == MessageType::Response {
            return None; // hickory-server drops these before us anyway
        }
        let raw = request.as_slice();
        let client_edns = request.edns.as_ref();
        // SPEC: error answers echo the question when it parses (exactly one,
        // written without compression) and carry our OPT when the query had
        // one (owned by the root); BADVERS is the only one with extra bits.
        let echo = (request.queries.len() == 1 && !question_is_compressed(raw))
            .then(|| Message::read_queries(&mut BinDecoder::new(request.queries.as_bytes()), 1))
            .and_then(Result::ok)
            .and_then(|mut q| q.pop());
        let error = |rcode: ResponseCode| {
            let mut r = header_only(m, rcode);
            if let Some(q) = &echo {
                r.add_query(q.clone());
            }
            if let Some(dnssec_ok) = query_opt(raw) {
                r.set_edns(our_edns(dnssec_ok, None));
            }
            r
        };
        if m.op_code != OpCode::Query {
            return Some(error(ResponseCode::NotImp));
        }
        if request.queries.len() != 1
            || !request.answers.is_empty()
            || !request.authorities.is_empty()
            || question_is_compressed(raw)
            || opt_owner_not_root(raw)
            || m.truncation
        {
            return Some(error(ResponseCode::FormErr));
        }
        if client_edns.is_some_and(|e| e.version() > 0) {
            return Some(error(ResponseCode::BADVERS));
        }
        // the question as sent (LowerQuery has lost its case)
        let query = echo?;
        let dnssec_ok = client_edns.is_some_and(|e| e.flags().dnssec_ok);

        let labels: Vec<&[u8]> = query.name().iter().collect();
        let mut resp = match self.policy.decide(labels.iter().rev().copied()) {
            Decision::Block {
                hit,
                category,
                action,
                ..
            } => self.blocked(
                m,
                &query,
                client_edns.is_some(),
                dnssec_ok,
                action,
                hit.depth,
                &format!(
                    "blocked: category {}, list {}",
                    category.name, hit.list.name
                ),
            ),
            // SPEC: RD=0 gets REFUSED with EDE 20 unless the policy blocks.
            Decision::Forward | Decision::Allow(_) if !m.recursion_desired => {
                let mut r = response_to(m, &query);
                r.metadata.response_code = ResponseCode::Refused;
                if client_edns.is_some() {
                    r.set_edns(our_edns(
                        dnssec_ok,
                        Some((EDE_NOT_AUTHORITATIVE, NO_RECURSION_TEXT.as_bytes())),
                    ));
                }
                r
            }
            Decision::Forward | Decision::Allow(_) => {
                self.forwarded(m, &query, client_edns.is_some(), dnssec_ok)
                    .await
            }
        };
        if udp {
            let limit = client_edns.map_or(512, |e| e.max_payload().clamp(512, EDNS_PAYLOAD));
            truncate_to(&mut resp, usize::from(limit));
        }
        Some(resp)
    }

    #[allow(clippy::too_many_arguments)]
    fn blocked(
        &self,
        m: &Metadata,
        query: &Query,
        edns: bool,
        dnssec_ok: bool,
        action: Action,
        depth: usize,
        text: &str,
    ) -> Message {
        let mut r = response_to(m, query);
        let qclass = query.query_class();
        let redirect = match (action, qclass, query.query_type()) {
            (Action::Redirect, DNSClass::IN, RecordType::A) => {
                self.style.v4.map(|a| RData::A(A(a)))
            }
            (Action::Redirect, DNSClass::IN, RecordType::AAAA) => {
                self.style.v6.map(|a| RData::AAAA(AAAA(a)))
            }
            _ => None,
        };
        r.metadata.response_code = match action {
            Action::Nxdomain => ResponseCode::NXDomain,
            Action::Refused => ResponseCode::Refused,
            // The reference models the four configurable blocking actions;
            // RPZ's own actions are covered by their end-to-end tests.
            _ => ResponseCode::NoError,
        };
        if let Some(data) = redirect {
            let mut rec = Record::from_rdata(query.name().clone(), self.style.ttl, data);
            rec.dns_class = qclass;
            r.add_answer(rec);
        } else if action != Action::Refused {
            // the SOA's owner is the rule's name, in the case the query spelt it
            let owner = query.name().trim_to(depth);
            let soa = SOA::new(
                owner.clone(),
                Name::from_ascii(SOA_RNAME).expect("rname"),
                1,
                3600,
                600,
                86400,
                self.style.ttl,
            );
            let mut rec = Record::from_rdata(owner, self.style.ttl, RData::SOA(soa));
            rec.dns_class = qclass;
            r.add_authority(rec);
        }
        if edns {
            let code = if action == Action::Redirect {
                EDE_FORGED_ANSWER
            } else {
                EDE_BLOCKED
            };
            r.set_edns(our_edns(dnssec_ok, Some((code, text.as_bytes()))));
        }
        r
    }

    async fn forwarded(&self, m: &Metadata, query: &Query, edns: bool, dnssec_ok: bool) -> Message {
        let mut r = response_to(m, query);
        let Some(reply) = self.forward(m, query, dnssec_ok).await else {
            r.metadata.response_code = ResponseCode::ServFail;
            if edns {
                r.set_edns(our_edns(
                    dnssec_ok,
                    Some((EDE_NO_REACHABLE_AUTHORITY, SERVFAIL_TEXT.as_bytes())),
                ));
            }
            return r;
        };
        // the upstream's RCODE and sections; AA and TC are ours (clear); AD
        // only for a client that asked for it (AD or DO, RFC 6840 §5.7)
        r.metadata.response_code = reply.metadata.response_code;
        r.metadata.authentic_data =
            reply.metadata.authentic_data && (m.authentic_data || dnssec_ok);
        r.answers = reply.answers;
        r.authorities = reply.authorities;
        r.additionals = reply.additionals;
        // RFC 2181 §8: a TTL with the top bit set means zero; none above a day.
        for rec in r
            .answers
            .iter_mut()
            .chain(&mut r.authorities)
            .chain(&mut r.additionals)
        {
            rec.ttl = if rec.ttl & 0x8000_0000 != 0 {
                0
            } else {
                rec.ttl.min(MAX_TTL)
            };
        }
        // RFC 2308 §5 (README: negative answers live min(SOA TTL, MINIMUM)):
        // a negative answer's SOA is served with the negative TTL.
        let negative = r.metadata.response_code == ResponseCode::NXDomain
            || (r.metadata.response_code == ResponseCode::NoError && r.answers.is_empty());
        if negative
            && let Some(rec) = r
                .authorities
                .iter_mut()
                .find(|rec| matches!(rec.data, RData::SOA(_)))
            && let RData::SOA(soa) = &rec.data
        {
            let minimum = if soa.minimum & 0x8000_0000 != 0 {
                0
            } else {
                soa.minimum.min(MAX_TTL)
            };
            rec.ttl = rec.ttl.min(minimum);
        }
        if edns {
            let mut e = our_edns(dnssec_ok, None);
            // the upstream's Extended DNS Errors reach the client
            if let Some(up) = &reply.edns {
                for (code, opt) in up.options().as_ref() {
                    if u16::from(*code) == EDE_OPTION
                        && let EdnsOption::Unknown(_, data) = opt
                    {
                        e.options_mut()
                            .insert(EdnsOption::Unknown(EDE_OPTION, data.clone()));
                    }
                }
            }
            r.set_edns(e);
        }
        r
    }

    /// Our own query upstream: RD, AD (to learn the upstream's verdict),
    /// the client's CD, EDNS with its DO. Failover in order; TC → TCP;
    /// timeouts, errors and any RCODE but NOERROR/NXDOMAIN → next, keeping
    /// the last such answer to relay when no server does better.
    async fn forward(&self, m: &Metadata, query: &Query, dnssec_ok: bool) -> Option<Message> {
        let mut q = Message::new(rand::random(), MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.metadata.checking_disabled = m.checking_disabled;
        q.metadata.authentic_data = true;
        q.add_query(query.clone());
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        e.set_dnssec_ok(dnssec_ok);
        q.set_edns(e);
        let bytes = q.to_vec().ok()?;
        let mut last = None;
        for server in &self.upstreams {
            let attempt = async {
                let reply = udp_exchange(*server, &bytes, q.metadata.id, query).await?;
                if reply.metadata.truncation {
                    tcp_exchange(*server, &bytes, q.metadata.id, query).await
                } else {
                    Some(reply)
                }
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Some(reply))
                    if matches!(
                        reply.metadata.response_code,
                        ResponseCode::NoError | ResponseCode::NXDomain
                    ) =>
                {
                    return Some(reply);
                }
                Ok(Some(reply)) => last = Some(reply),
                _ => continue,
            }
        }
        last
    }
}

fn is_reply_to(reply: &Message, id: u16, query: &Query) -> bool {
    reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && reply.queries.len() == 1
        && reply.queries[0].name() == query.name()
        && reply.queries[0].query_type() == query.query_type()
}

async fn udp_exchange(server: SocketAddr, bytes: &[u8], id: u16, query: &Query) -> Option<Message> {
    let sock = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .ok()?;
    sock.connect(server).await.ok()?;
    sock.send(bytes).await.ok()?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await.ok()?;
        if let Ok(reply) = Message::from_vec(&buf[..n])
            && is_reply_to(&reply, id, query)
        {
            return Some(reply);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, bytes: &[u8], id: u16, query: &Query) -> Option<Message> {
    let mut s = tokio::net::TcpStream::connect(server).await.ok()?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).await.ok()?;
    let len = s.read_u16().await.ok()?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await.ok()?;
    let reply = Message::from_vec(&buf).ok()?;
    is_reply_to(&reply, id, query).then_some(reply)
}

/// A response to `m` echoing `query`: ID, opcode, RD, CD echoed, RA set.
fn response_to(m: &Metadata, query: &Query) -> Message {
    let mut r = header_only(m, ResponseCode::NoError);
    r.add_query(query.clone());
    r
}

/// A header for an answer to `m`, no records yet.
fn header_only(m: &Metadata, rcode: ResponseCode) -> Message {
    let mut r = Message::new(m.id, MessageType::Response, m.op_code);
    r.metadata.recursion_desired = m.recursion_desired;
    r.metadata.checking_disabled = m.checking_disabled;
    r.metadata.recursion_available = true;
    r.metadata.response_code = rcode;
    r
}

/// Our OPT: 1232, version 0, the client's DO, and maybe one EDE.
fn our_edns(dnssec_ok: bool, ede: Option<(u16, &[u8])>) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(EDNS_PAYLOAD);
    e.set_version(0);
    e.set_dnssec_ok(dnssec_ok);
    if let Some((code, text)) = ede {
        let mut data = code.to_be_bytes().to_vec();
        data.extend_from_slice(&text[..text.len().min(MAX_EDE_TEXT)]);
        e.options_mut()
            .insert(EdnsOption::Unknown(EDE_OPTION, data));
    }
    e
}

/// SPEC: what does not fit the client's UDP size is sent with TC=1 (header,
/// question and OPT, no records). Sized as hickory-proto's standard
/// (compressing) encoding of the answer.
fn truncate_to(r: &mut Message, limit: usize) {
    let size = r.to_vec().map_or(usize::MAX, |b| b.len());
    if size > limit {
        r.answers.clear();
        r.authorities.clear();
        r.additionals.clear();
        if let Some(e) = &mut r.edns {
            e.options_mut().options.clear();
        }
        r.metadata.truncation = true;
    }
}

/// A question name written with a pointer (nothing precedes it to point at).
fn question_is_compressed(raw: &[u8]) -> bool {
    let mut p = 12;
    while let Some(&len) = raw.get(p) {
        if len == 0 {
            return false;
        }
        if len & 0xC0 != 0 {
            return true;
        }
        p += 1 + usize::from(len);
    }
    false
}

/// RFC 6891 §6.1.1: the OPT's owner must be the root.
fn opt_owner_not_root(raw: &[u8]) -> bool {
    let count = |at: usize| usize::from(u16::from_be_bytes([raw[at], raw[at + 1]]));
    let records = count(6) + count(8) + count(10);
    let Some(mut p) = skip_name(raw, 12).map(|p| p + 4) else {
        return false;
    };
    for _ in 0..records {
        let Some(after) = skip_name(raw, p) else {
            return false;
        };
        let Some(fixed) = raw.get(after..after + 10) else {
            return false;
        };
        if u16::from_be_bytes([fixed[0], fixed[1]]) == 41 && raw[p] != 0 {
            return true;
        }
        p = after + 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    }
    false
}

fn skip_name(raw: &[u8], mut p: usize) -> Option<usize> {
    loop {
        let len = *raw.get(p)?;
        match len {
            0 => return Some(p + 1),
            1..=63 => p += 1 + usize::from(len),
            0xC0..=0xFF => return Some(p + 2),
            _ => return None,
        }
    }
}

/// Does hickory-server's loop hand this packet to a handler? (It answers
/// undecodable packets itself, and drops what has no header.)
pub fn hickory_server_decodes(packet: &[u8]) -> bool {
    Request::from_bytes(
        packet.to_vec(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
        Protocol::Udp,
    )
    .is_ok()
}

/// `packet` without the records of its additional section that are not OPT
/// and have an empty RDATA, if it has any (ARCOUNT adjusted). hickory refuses
/// empty RDATA outside UPDATE messages (`DecodeError::InvalidEmptyRecord`),
/// which RFC 3597 allows for unknown types, and a query's additional records
/// other than OPT change nothing in its answer. Returns the types removed.
pub fn strip_empty_additionals(packet: &[u8]) -> Option<(Vec<u8>, Vec<u16>)> {
    if packet.len() < 12 {
        return None;
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([packet[at], packet[at + 1]]));
    let mut p = 12;
    for _ in 0..count(4) {
        p = skip_name(packet, p)? + 4;
    }
    for _ in 0..count(6) + count(8) {
        let after = skip_name(packet, p)?;
        let rdlen = u16::from_be_bytes([*packet.get(after + 8)?, *packet.get(after + 9)?]);
        p = after + 10 + usize::from(rdlen);
    }
    let mut out = packet.get(..p)?.to_vec();
    let mut removed = Vec::new();
    let mut kept = 0u16;
    for _ in 0..count(10) {
        let after = skip_name(packet, p)?;
        let fixed = packet.get(after..after + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let end = after + 10 + rdlen;
        if rtype != 41 && rdlen == 0 {
            removed.push(rtype);
        } else {
            out.extend_from_slice(packet.get(p..end)?);
            kept += 1;
        }
        p = end;
    }
    out.extend_from_slice(packet.get(p..)?);
    out[10..12].copy_from_slice(&kept.to_be_bytes());
    (!removed.is_empty()).then_some((out, removed))
}

/// Why hickory cannot decode `packet`, for failure reports.
pub fn decode_error(packet: &[u8]) -> String {
    match Message::from_vec(packet) {
        Ok(_) => "decodes".into(),
        Err(e) => e.to_string(),
    }
}

/// The in-process hickory-proto reference for packets hickory cannot decode:
/// no header (or QR set) → no answer; unknown opcode → NOTIMP; else FORMERR;
/// the question echoed when there is exactly one and it reads, our OPT when
/// the query had one.
pub fn proto_answer(packet: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(packet)).ok()?;
    let m = header.metadata;
    if m.message_type == MessageType::Response {
        return None;
    }
    let rcode = if m.op_code == OpCode::Query {
        ResponseCode::FormErr
    } else {
        ResponseCode::NotImp
    };
    let mut r = header_only(&m, rcode);
    let qd = u16::from_be_bytes([packet[4], packet[5]]);
    if qd == 1
        && !question_is_compressed(packet)
        && let Ok(q) = Query::read(&mut BinDecoder::new(&packet[12..]))
    {
        r.add_query(q);
    }
    if let Some(dnssec_ok) = query_opt(packet) {
        r.set_edns(our_edns(dnssec_ok, None));
    }
    Some(r.to_vec().expect("encode error answer"))
}

/// The query's OPT, read the lenient way SPEC's "carry an OPT record when
/// the query had EDNS" asks: the first root-owned OPT in the additional
/// section, found by walking names and RDLENGTHs only, up to the first
/// record that does not read (questions must be uncompressed). Its DO bit.
fn query_opt(raw: &[u8]) -> Option<bool> {
    let count = |at: usize| usize::from(u16::from_be_bytes([raw[at], raw[at + 1]]));
    let mut p = 12;
    for _ in 0..count(4) {
        let mut q = p;
        loop {
            let len = usize::from(*raw.get(q)?);
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            q += 1 + len;
        }
        if q + 1 - p > 255 || q + 5 > raw.len() {
            return None;
        }
        p = q + 5;
    }
    let (an, ns, ar) = (count(6), count(8), count(10));
    for i in 0..an + ns + ar {
        let after = skip_name(raw, p).filter(|a| a - p <= 256)?;
        let fixed = raw.get(after..after + 10)?;
        let end = after + 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        if end > raw.len() {
            return None;
        }
        if u16::from_be_bytes([fixed[0], fixed[1]]) == 41 && raw[p] == 0 && i >= an + ns {
            return Some(u16::from_be_bytes([fixed[6], fixed[7]]) & 0x8000 != 0);
        }
        p = end;
    }
    None
}

/// `msg` with every compressed name written out in full (so two encodings
/// that differ only in where they point compare equal), or `None` if it does
/// not parse. With `loose`, record TTLs are zeroed and record names (not the
/// question) lowercased: for cache hits, whose TTLs count down and whose
/// owner names may point into another question's spelling.
pub fn expand(msg: &[u8], loose: bool) -> Option<Vec<u8>> {
    if msg.len() < 12 {
        return None;
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([msg[at], msg[at + 1]]));
    let mut out = msg[..12].to_vec();
    let mut p = 12;
    for _ in 0..count(4) {
        p = copy_name(msg, p, &mut out, false)?;
        out.extend_from_slice(msg.get(p..p + 4)?);
        p += 4;
    }
    for _ in 0..count(6) + count(8) + count(10) {
        p = copy_name(msg, p, &mut out, loose)?;
        let fixed = msg.get(p..p + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        out.extend_from_slice(&fixed[..4]);
        if loose && rtype != 41 {
            out.extend_from_slice(&[0; 4]);
        } else {
            out.extend_from_slice(&fixed[4..8]);
        }
        let start = p + 10;
        let end = start + rdlen;
        let rdata = msg.get(start..end)?;
        let mut rd = Vec::new();
        let names_end = match rtype {
            // NS MD MF CNAME MB MG MR PTR: one name
            2 | 3 | 4 | 5 | 7 | 8 | 9 | 12 => copy_name(msg, start, &mut rd, loose)?,
            // SOA: MNAME RNAME, then five numbers; MINFO: two names
            6 | 14 => {
                let q = copy_name(msg, start, &mut rd, loose)?;
                copy_name(msg, q, &mut rd, loose)?
            }
            // MX: preference, exchange
            15 => {
                rd.extend_from_slice(rdata.get(..2)?);
                copy_name(msg, start + 2, &mut rd, loose)?
            }
            _ => start,
        };
        rd.extend_from_slice(msg.get(names_end..end)?);
        out.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        out.extend_from_slice(&rd);
        p = end;
    }
    out.extend_from_slice(&msg[p..]);
    Some(out)
}

/// Copies the name at `p` uncompressed into `out`; returns where it ends in `msg`.
fn copy_name(msg: &[u8], mut p: usize, out: &mut Vec<u8>, fold: bool) -> Option<usize> {
    let mut end = None;
    for _ in 0..256 {
        let len = *msg.get(p)?;
        if len & 0xC0 == 0xC0 {
            end.get_or_insert(p + 2);
            p = usize::from(len & 0x3F) << 8 | usize::from(*msg.get(p + 1)?);
            continue;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        out.push(len);
        if len == 0 {
            return Some(end.unwrap_or(p + 1));
        }
        let label = msg.get(p + 1..p + 1 + usize::from(len))?;
        if fold {
            out.extend(label.iter().map(u8::to_ascii_lowercase));
        } else {
            out.extend_from_slice(label);
        }
        p += 1 + usize::from(len);
    }
    None
}
