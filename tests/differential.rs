//! Differential test: the server's wire-level fast path against a reference
//! written on hickory-proto's full decode and encode.
//!
//! sinkhole never decodes a query into a `Message`: it reads the header and
//! question in place and writes answers byte by byte (`src/dns/wire.rs`,
//! `answers.rs`). That is only acceptable if it answers exactly as a
//! conventional implementation would, so this test holds it against one.
//! The reference below decodes each query with `Message::from_vec`, decides
//! with the same policy (`sinkhole::policy`, built here from the same list
//! texts), builds the answer SPEC describes as a hickory `Message`, and
//! encodes it with `Message::to_vec` — the decode/encode path hickory-server
//! itself is built on. The real binary gets the same bytes over UDP, and
//! the two answers must be identical, byte for byte.
//!
//! hickory-server's `RequestHandler` is not used for the reference: its
//! server loop answers some of these cases itself before a handler sees
//! them (undecodable packets, EDNS versions, opcodes), so it could not
//! express SPEC's rules for them. The message layer is what matters here.
//!
//! Names the policy does not block are forwarded; the upstream here answers
//! SERVFAIL to everything, so the server's answer to them is also one it
//! writes itself (SERVFAIL with EDE 22) and is compared byte for byte too.
//! Upstream answers that pass through unchanged are covered by
//! `e2e_forwarding.rs`.
//!
//! Mutated packets change only what a server interprets: the header, the
//! question and the OPT's fixed fields. The RDATA of other records in a
//! query's additional section is skipped by its length, never decoded (as
//! Unbound does), whereas hickory's decoder rejects, say, a TLSA record
//! with empty RDATA there; that difference is by design, so those bytes
//! are left alone.
//!
//! Cases: every row of SPEC's answer table, with and without EDNS (DO, CD,
//! RD, payload sizes), mixed case, apex and subdomain matches, allow beating
//! block, wildcard rules, the malformed inputs of `e2e_malformed.rs`, then
//! seeded random queries (names drawn from the lists and made up, random
//! case, types, classes, flags, EDNS).

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{FakeUpstream, Script, Setup, Sinkhole, XorShift};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use sinkhole::lists::{self, FormatChoice};
use sinkhole::policy::{self, Action, Category, Decision, ListInput, Policy};

const TTL: u32 = 300;
const V4: Ipv4Addr = Ipv4Addr::new(10, 9, 8, 7);
const V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x42);
const EDE: u16 = 15;
const EDE_BLOCKED: u16 = 15;
const EDE_FORGED: u16 = 4;
const EDE_NO_REACHABLE: u16 = 22;
const PAYLOAD: u16 = 1232;
const RANDOM_QUERIES: usize = 3000;
const MUTATED_PACKETS: usize = 3000;

/// (list name, category, action, contents): one list per action, plus an
/// allowlist, wildcards and overlaps.
const LISTS: &[(&str, &str, Action, &str)] = &[
    (
        "video",
        "unapproved-video",
        Action::Nxdomain,
        "zoom.us\nzoom.com\n*.zoomgov.com\n",
    ),
    (
        "empty-answers",
        "quiet",
        Action::Nodata,
        "nodata.test\nads.example.com\n",
    ),
    ("refusals", "refuse", Action::Refused, "refused.test\n"),
    (
        "redirects",
        "redirect",
        Action::Redirect,
        "redirect.test\nblock-page.test\n",
    ),
];
const ALLOW: &str = "support.zoom.us\nexample.com\n";

fn setup(upstream: SocketAddr) -> Setup {
    let mut s = Setup::new().upstream(upstream).block_ttl(TTL);
    s.redirect_v4 = V4.to_string();
    s.redirect_v6 = V6.to_string();
    for (list, category, action, contents) in LISTS {
        s = s
            .category(category, Some(action.as_str()), "reason", &["Teams"])
            .list(list, Some(category), contents);
    }
    s.allowlist("allow", ALLOW)
}

/// The same policy the server loads, built through the library.
fn reference_policy() -> Policy {
    let categories = LISTS
        .iter()
        .map(|(_, category, action, _)| Category {
            name: (*category).into(),
            action: *action,
            reason: Some("reason".into()),
            alternatives: vec!["Teams".into()],
        })
        .collect();
    let mut inputs: Vec<ListInput> = LISTS
        .iter()
        .map(|(list, category, _, contents)| ListInput {
            name: (*list).into(),
            path: PathBuf::from(list),
            category: Some((*category).into()),
            rules: Arc::new(lists::parse(contents, FormatChoice::Auto)),
        })
        .collect();
    inputs.push(ListInput {
        name: "allow".into(),
        path: PathBuf::from("allow"),
        category: None,
        rules: Arc::new(lists::parse(ALLOW, FormatChoice::Auto)),
    });
    policy::build(categories, &inputs).expect("reference policy")
}

/// What the reference says the server must do with a packet.
enum Expect {
    Reply(Vec<u8>),
    Drop,
}

/// The reference: hickory's full decode, SPEC's rules, hickory's encoder.
fn reference(policy: &Policy, packet: &[u8]) -> Expect {
    // Header-level checks come first: without a readable header there is
    // nobody to answer, and a response is never answered.
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Expect::Drop;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
    let rd = packet[2] & 0x01 != 0;
    let cd = packet[3] & 0x10 != 0;
    let header_only = |rcode: ResponseCode, edns: Option<Edns>| {
        let mut m = Message::new(id, MessageType::Response, op_code);
        m.metadata.recursion_desired = rd;
        m.metadata.recursion_available = true;
        m.metadata.checking_disabled = cd;
        m.metadata.response_code = rcode;
        if let Some(e) = edns {
            m.set_edns(e);
        }
        Expect::Reply(m.to_vec().expect("encode header-only answer"))
    };
    if op_code != OpCode::Query {
        return header_only(ResponseCode::NotImp, None);
    }
    let Ok(query) = Message::from_vec(packet) else {
        return header_only(ResponseCode::FormErr, None);
    };
    // One question, and nothing in the answer or authority sections; the
    // question name must be written out (compression has nothing to point
    // at in a question). hickory decodes all of those, SPEC does not.
    let question_compressed = {
        let mut i = 12;
        loop {
            match packet.get(i) {
                Some(0) | None => break false,
                Some(len) if len & 0xc0 != 0 => break true,
                Some(len) => i += 1 + usize::from(*len),
            }
        }
    };
    if query.queries.len() != 1
        || !query.answers.is_empty()
        || !query.authorities.is_empty()
        || question_compressed
    {
        return header_only(ResponseCode::FormErr, None);
    }
    if let Some(e) = &query.edns
        && e.version() > 0
    {
        let mut edns = ours(false);
        edns.set_rcode_high(ResponseCode::BADVERS.high());
        return header_only(ResponseCode::BADVERS, Some(edns));
    }

    let q = &query.queries[0];
    let dnssec_ok = query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
    let mut m = Message::new(id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = rd;
    m.metadata.recursion_available = true;
    m.metadata.checking_disabled = cd;
    m.add_query(q.clone());

    let labels: Vec<&[u8]> = q.name().iter().collect();
    let with_ede = |m: &mut Message, code: u16, text: String| {
        if query.edns.is_some() {
            let mut e = ours(dnssec_ok);
            let mut data = code.to_be_bytes().to_vec();
            data.extend_from_slice(&text.as_bytes()[..text.len().min(200)]);
            e.options_mut().insert(EdnsOption::Unknown(EDE, data));
            m.set_edns(e);
        }
    };
    match policy.decide(labels.iter().rev().copied()) {
        Decision::Block { hit, category, .. } => {
            let qclass = q.query_class();
            let redirect = match (category.action, qclass, q.query_type()) {
                (Action::Redirect, DNSClass::IN, RecordType::A) => Some(RData::A(A(V4))),
                (Action::Redirect, DNSClass::IN, RecordType::AAAA) => Some(RData::AAAA(AAAA(V6))),
                _ => None,
            };
            m.metadata.response_code = match category.action {
                Action::Nxdomain => ResponseCode::NXDomain,
                Action::Refused => ResponseCode::Refused,
                Action::Nodata | Action::Redirect => ResponseCode::NoError,
            };
            if let Some(data) = redirect.clone() {
                m.add_answer(Record::from_rdata(q.name().clone(), TTL, data));
            } else if category.action != Action::Refused {
                let owner = q.name().trim_to(hit.depth);
                let soa = SOA::new(
                    owner.clone(),
                    Name::from_ascii("nobody.invalid.").expect("rname"),
                    1,
                    3600,
                    600,
                    86400,
                    TTL,
                );
                let mut r = Record::from_rdata(owner, TTL, RData::SOA(soa));
                r.dns_class = qclass;
                m.add_authority(r);
            }
            let code = if redirect.is_some() || category.action == Action::Redirect {
                EDE_FORGED
            } else {
                EDE_BLOCKED
            };
            let text = format!(
                "blocked: category {}, list {}",
                category.name, hit.list.name
            );
            with_ede(&mut m, code, text);
        }
        // Forwarded; the upstream answers SERVFAIL, so every server fails.
        Decision::Forward | Decision::Allow(_) => {
            m.metadata.response_code = ResponseCode::ServFail;
            with_ede(&mut m, EDE_NO_REACHABLE, "no upstream answered".into());
        }
    }
    Expect::Reply(m.to_vec().expect("encode reference answer"))
}

/// Our OPT: 1232 bytes, version 0.
fn ours(dnssec_ok: bool) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(PAYLOAD);
    e.set_version(0);
    e.set_dnssec_ok(dnssec_ok);
    e
}

/// A query as a client would build it.
fn query(name: &str, qtype: RecordType, class: DNSClass, id: u16) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let mut q = Query::query(Name::from_ascii(name).expect("test name"), qtype);
    q.set_query_class(class);
    m.add_query(q);
    m
}

fn with_edns(mut m: Message, payload: u16, dnssec_ok: bool, version: u8) -> Message {
    let mut e = Edns::new();
    e.set_max_payload(payload);
    e.set_dnssec_ok(dnssec_ok);
    e.set_version(version);
    m.set_edns(e);
    m
}

struct Harness {
    policy: Policy,
    sock: UdpSocket,
    _up: FakeUpstream,
    sh: Sinkhole,
    compared: usize,
}

impl Harness {
    fn start() -> Self {
        let up = FakeUpstream::start();
        up.set_default(Script::servfail());
        let sh = setup(up.addr()).serve();
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        sock.connect(sh.dns).expect("connect");
        Self {
            policy: reference_policy(),
            sock,
            _up: up,
            sh,
            compared: 0,
        }
    }

    /// Sends `packet` to the server and holds its answer (or silence)
    /// against the reference's.
    fn check(&mut self, what: &str, packet: &[u8]) {
        self.compared += 1;
        let expect = reference(&self.policy, packet);
        self.sock.send(packet).expect("send");
        match expect {
            Expect::Reply(want) => {
                self.sock
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut buf = [0u8; 4096];
                let got = match self.sock.recv(&mut buf) {
                    Ok(n) => buf[..n].to_vec(),
                    Err(e) => panic!(
                        "{what}: no answer ({e}); query {packet:02x?}; logs:\n{}",
                        self.sh.logs()
                    ),
                };
                if got != want {
                    panic!(
                        "{what}: answers differ\nquery     {packet:02x?}\nsinkhole  {got:02x?}\nreference {want:02x?}\n\
                         sinkhole decoded:  {}\nreference decoded: {}",
                        decoded(&got),
                        decoded(&want)
                    );
                }
            }
            Expect::Drop => {
                // Silence is shown by a probe's answer arriving first.
                let probe = query("probe.zoom.us", RecordType::A, DNSClass::IN, 0x7e57)
                    .to_vec()
                    .unwrap();
                self.sock.send(&probe).unwrap();
                self.sock
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut buf = [0u8; 4096];
                let n = self
                    .sock
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("{what}: probe unanswered ({e})"));
                assert_eq!(
                    &buf[..2],
                    &[0x7e, 0x57],
                    "{what}: the server answered a packet it must drop: {:02x?}",
                    &buf[..n]
                );
            }
        }
    }

    fn check_msg(&mut self, what: &str, m: &Message) {
        let bytes = m.to_vec().expect("encode query");
        self.check(what, &bytes);
    }
}

/// `below` over `usize`.
struct Rng(XorShift);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }
}

fn decoded(bytes: &[u8]) -> String {
    match Message::from_vec(bytes) {
        Ok(m) => format!("{m}"),
        Err(e) => format!("(does not decode: {e})"),
    }
}

#[test]
fn fast_path_matches_the_reference_on_the_integration_cases() {
    let mut h = Harness::start();
    let names = [
        "zoom.us",
        "us04web.zoom.us",
        "US04WEB.Zoom.US",
        "support.zoom.us",
        "a.support.zoom.us",
        "notzoom.us",
        "zoom.us.evil.test",
        "zoomgov.com",
        "www.zoomgov.com",
        "nodata.test",
        "x.nodata.test",
        "example.com",
        "ads.example.com",
        "deep.ads.Example.com",
        "refused.test",
        "redirect.test",
        "www.Block-Page.test",
        "forwarded.test",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::ANY,
        RecordType::HTTPS,
    ];
    let mut id = 0x4000;
    for name in names {
        for qtype in types {
            for class in [DNSClass::IN, DNSClass::CH] {
                id += 1;
                let plain = query(name, qtype, class, id);
                h.check_msg(&format!("{name} {qtype} {class}"), &plain);
                let mut no_rd = plain.clone();
                no_rd.metadata.recursion_desired = false;
                no_rd.metadata.checking_disabled = true;
                h.check_msg(&format!("{name} {qtype} {class} RD=0 CD=1"), &no_rd);
                for (payload, dnssec_ok) in [(1232, false), (4096, true), (512, false), (100, true)]
                {
                    let m = with_edns(plain.clone(), payload, dnssec_ok, 0);
                    h.check_msg(
                        &format!("{name} {qtype} {class} EDNS {payload} DO={dnssec_ok}"),
                        &m,
                    );
                }
            }
        }
    }

    // Malformed input (SPEC: FORMERR when the header reads, NOTIMP for
    // other opcodes, BADVERS for EDNS > 0, otherwise silence).
    let good = query("zoom.us", RecordType::A, DNSClass::IN, 0x5151)
        .to_vec()
        .unwrap();
    h.check("empty", &[]);
    h.check("short header", &good[..11]);
    for cut in [12, 13, 17, good.len() - 3, good.len() - 1] {
        h.check(&format!("cut at {cut}"), &good[..cut]);
    }
    let mut qr = good.clone();
    qr[2] |= 0x80;
    h.check("QR set", &qr);
    for opcode in [1u8, 2, 4, 5, 15] {
        let mut p = good.clone();
        p[2] = (p[2] & 0x87) | (opcode << 3);
        h.check(&format!("opcode {opcode}"), &p);
    }
    let mut two = good.clone();
    two[5] = 2;
    h.check("qdcount 2", &two);
    let mut zero = good.clone();
    zero[5] = 0;
    h.check("qdcount 0", &zero);
    let mut label = good.clone();
    label[12] = 0x40;
    h.check("label length 64", &label);
    let mut pointer = good.clone();
    pointer[12] = 0xc0;
    pointer[13] = 0x0c;
    h.check("pointer in the question", &pointer);
    let v1 = with_edns(
        query("zoom.us", RecordType::A, DNSClass::IN, 0x5152),
        1232,
        true,
        1,
    );
    h.check_msg("EDNS version 1", &v1);
    let v1 = with_edns(
        query("forwarded.test", RecordType::A, DNSClass::IN, 0x5153),
        1232,
        false,
        3,
    );
    h.check_msg("EDNS version 3, not blocked", &v1);
    eprintln!("{} packets compared", h.compared);
}

#[test]
fn fast_path_matches_the_reference_on_random_queries() {
    let mut h = Harness::start();
    let mut rng = Rng(XorShift(0x5eed_d1ff));
    let listed: Vec<String> = LISTS
        .iter()
        .flat_map(|(_, _, _, c)| c.lines())
        .chain(ALLOW.lines())
        .map(|l| l.trim_start_matches("*.").to_string())
        .collect();
    let words = [
        "www", "a", "cdn", "x-1", "login", "m", "_srv", "deep", "ZOOM", "us",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::ANY,
        RecordType::SOA,
        RecordType::PTR,
        RecordType::Unknown(65280),
    ];
    for i in 0..RANDOM_QUERIES {
        // A listed name under 0-3 extra labels, or a made-up name.
        let mut name = if rng.below(4) == 0 {
            format!(
                "{}.{}",
                words[rng.below(words.len())],
                ["test", "com", "us"][rng.below(3)]
            )
        } else {
            listed[rng.below(listed.len())].clone()
        };
        for _ in 0..rng.below(4) {
            name = format!("{}.{name}", words[rng.below(words.len())]);
        }
        let name: String = name
            .chars()
            .map(|c| {
                if rng.below(3) == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        let qtype = types[rng.below(types.len())];
        let class = if rng.below(8) == 0 {
            DNSClass::CH
        } else {
            DNSClass::IN
        };
        let mut m = query(&name, qtype, class, rng.below(65536) as u16);
        m.metadata.recursion_desired = rng.below(4) != 0;
        m.metadata.checking_disabled = rng.below(4) == 0;
        m.metadata.authentic_data = rng.below(4) == 0;
        if rng.below(3) != 0 {
            let payload = [512u16, 1232, 1400, 4096, 0, 65535][rng.below(6)];
            let version = if rng.below(20) == 0 { 1 } else { 0 };
            m = with_edns(m, payload, rng.below(2) == 0, version);
        }
        h.check_msg(&format!("random query {i}: {name} {qtype} {class}"), &m);
    }
    eprintln!("{} packets compared", h.compared);
}

#[test]
fn fast_path_matches_the_reference_on_mutated_packets() {
    let mut h = Harness::start();
    let mut rng = Rng(XorShift(0xbad_5eed));
    let bases: Vec<Vec<u8>> = [
        query("us04web.zoom.us", RecordType::A, DNSClass::IN, 0x1111),
        with_edns(
            query("redirect.test", RecordType::AAAA, DNSClass::IN, 0x2222),
            1232,
            true,
            0,
        ),
        with_edns(
            query("x.nodata.test", RecordType::MX, DNSClass::IN, 0x3333),
            512,
            false,
            0,
        ),
    ]
    .iter()
    .map(|m| m.to_vec().unwrap())
    .collect();
    for i in 0..MUTATED_PACKETS {
        let mut p = bases[rng.below(bases.len())].clone();
        // Header and question bytes, and the OPT's payload size, extended
        // RCODE, version and flags: the fields a server interprets.
        let question_end = 12 + p[12..].iter().position(|b| *b == 0).unwrap_or(0) + 1 + 4;
        let mut fields: Vec<usize> = (0..question_end).collect();
        if p.len() > question_end {
            fields.extend(question_end + 3..question_end + 9);
        }
        for _ in 0..1 + rng.below(3) {
            let at = fields[rng.below(fields.len())];
            p[at] = rng.below(256) as u8;
        }
        // Responses and short packets are dropped; make most mutants
        // queries so the interesting paths get the traffic.
        if rng.below(8) != 0 {
            p[2] &= 0x7f;
        }
        h.check(&format!("mutated packet {i}"), &p);
    }
    eprintln!("{} packets compared", h.compared);
}
