//! Differential test: sinkhole's wire-level fast path against a reference
//! written on hickory's full decode and encode (`tests/reference/`).
//!
//! Both run with the same config file and lists (every action, a block TTL,
//! redirect v4 and v6, an allowlist with a more specific allow, `*.name`
//! wildcards, hosts and adblock lists, and two real lists from
//! `../shared/data` when it is there) and forward to the same fake upstream.
//! The same raw query bytes go to the real `sinkhole` binary and to the
//! reference over real loopback sockets (UDP; TCP for a share), and the
//! answers are compared **byte for byte**: first the integration suite's
//! cases (`e2e_answers`, `e2e_malformed`, `e2e_forwarding`), then seeded
//! random fuzz (names drawn from the lists and elsewhere, random case,
//! qtype, qclass, header flags, EDNS presence, size, version and DO, and
//! randomly mutated packets).
//!
//! What runs where:
//! - Every packet hickory-server can decode goes to a
//!   `hickory_server::server::RequestHandler` served by hickory-server's own
//!   `Server` on loopback UDP and TCP. It decides with `sinkhole::policy` and
//!   builds each answer as hickory `Message`/`Record`/`SOA`/`Edns` (EDE as an
//!   EDNS option), sent through `MessageResponseBuilder`.
//! - Packets hickory-server cannot decode (`Request::from_bytes` fails) are
//!   answered by hickory-server's loop itself, with a FORMERR of its own
//!   (RA clear, no NOTIMP for unknown opcodes), before any handler runs. For
//!   those, and only those, the reference is in-process hickory-proto:
//!   `Header::read` → `Message` → `to_vec`, answering SPEC's FORMERR/NOTIMP.
//!   Packets with no header or with QR set are expected to get no answer;
//!   sinkhole is checked to drop them with a probe sent right behind.
//! - hickory refuses any record with an empty RDATA outside UPDATE messages
//!   (`DecodeError::InvalidEmptyRecord`), which RFC 3597 allows for unknown
//!   types; sinkhole reads a query's additional section only for its OPT.
//!   Fuzzing turns the OPT's type into another type with RDLENGTH 0 now and
//!   then; such records are removed (ARCOUNT adjusted) from what the
//!   reference is given ([`reference::strip_empty_additionals`]), as they
//!   change nothing in the answer, and the run reports how many and of which
//!   types. For a type whose RDATA cannot be empty (e.g. KX) this accepts
//!   sinkhole's leniency where SPEC's "malformed queries get FORMERR" would
//!   want a FORMERR.
//!
//! How answers are compared:
//! - hickory-server writes the question from the request's raw bytes but
//!   never lets later names point into it (its `Queries` registers the whole
//!   question section, type and class included, as one compression
//!   candidate, which no name can match). So the reference's wire bytes
//!   spell the owner names of answers and SOAs out where sinkhole points at
//!   the question; both are valid encodings of one message. They are
//!   compared (1) byte for byte after expanding every compression pointer
//!   ([`reference::expand`]), and (2) sinkhole's bytes exactly against
//!   hickory-proto's own encoding of the reference's answer (`Message::from_vec`
//!   then `to_vec`), which compresses the way sinkhole does. Answers of the
//!   in-process hickory-proto reference are compared exactly.
//! - The reference decides UDP truncation on the size of that standard
//!   (compressed) encoding, as SPEC's size limit applies to what the client
//!   is sent by a compressing server.
//! - Forwarded answers: the first (uncached) answer for a cache key is
//!   compared as above. Later ones may be cache hits, whose TTLs count down
//!   and whose names keep pointing into the new question's spelling, so they
//!   are compared after expansion with every record TTL zeroed and every
//!   record name (not the question) lowercased.
//! - Names ending in `invalid` are never generated: hickory would point the
//!   SOA's RNAME (`nobody.invalid.`) into such a question, sinkhole never does.
//!
//! The test fails listing every case that differs, each with its query and
//! both answers in hex and decoded.

mod common;
mod reference;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use common::dns::{self, Q};
use common::upstream::{Script, rec_a, rec_ns, rec_rrsig};
use common::{FakeUpstream, Setup, Sinkhole, XorShift};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use reference::RefServer;
use sinkhole::lists::{self, FormatChoice};
use std::net::Ipv4Addr;

const TTL: u32 = 77;
const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data");
const FUZZ_CASES: usize = 3000;
const SEED: u64 = 0xd1ff_5eed_2024_0001;
/// The probe that follows packets expected to be dropped (blocked: answered inline).
const PROBE: &str = "probe.ads.test";

/// Real lists used when `../shared/data` is there: (file, list name, category).
const REAL_LISTS: &[(&str, &str, &str)] = &[
    ("hagezi-personal.domains.txt", "hagezi-personal", "tracking"),
    ("easylist.hosts.txt", "easylist", "ads"),
];

struct Case {
    what: String,
    packet: Vec<u8>,
    tcp: bool,
}

impl Case {
    fn udp(what: impl Into<String>, packet: Vec<u8>) -> Self {
        Case {
            what: what.into(),
            packet,
            tcp: false,
        }
    }
    fn tcp(what: impl Into<String>, packet: Vec<u8>) -> Self {
        Case {
            what: what.into(),
            packet,
            tcp: true,
        }
    }
}

// ------------------------------------------------------------------ setup

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, d)
}

fn upstream() -> FakeUpstream {
    let up = FakeUpstream::start();
    up.on(
        "full.test",
        Script::a("full.test", 300, &[ip(50), ip(51)])
            .with_authority(rec_ns("full.test", 3600, "ns1.full.test"))
            .with_additional(rec_a("ns1.full.test", 3600, ip(53))),
    );
    up.on("nx.test", Script::nxdomain("test", 300, 300));
    up.on("nodata.test", Script::nodata("test", 300, 300));
    up.on("refused.test", Script::rcode(ResponseCode::Refused));
    up.on("ad.test", Script::a("ad.test", 300, &[ip(2)]).with_ad());
    up.on("aa.test", Script::a("aa.test", 300, &[ip(4)]).with_aa());
    up.on(
        "signed.test",
        Script::a("signed.test", 300, &[ip(5)])
            .with_answer(rec_rrsig("signed.test", 300, RecordType::A, "test"))
            .with_ad(),
    );
    up.on(
        "tc.test",
        Script::a("tc.test", 300, &[ip(77)]).tc_over_udp(),
    );
    up.on("many.test", Script::many_a("many.test", 300, 40));
    up.on("bigtxt.test", Script::big_txt("bigtxt.test", 300, 2000));
    up.on("short-ttl.test", Script::nxdomain("test", 2, 300));
    up.on("short-min.test", Script::nxdomain("test", 300, 2));
    up.on("servfail.test", Script::servfail());
    up.on("silent.test", Script::silent());
    up
}

/// The shared config; returns the running sinkhole and the names of the real
/// lists' rules (for the fuzz).
fn sinkhole(up: &FakeUpstream) -> (Sinkhole, Vec<String>) {
    let mut setup = Setup::new()
        .upstream(up.addr())
        .block_ttl(TTL)
        .category_per_action()
        .category("wild", Some("redirect"), "Wildcards", &[])
        .list("unapproved-video", Some("video"), "zoom.us\n")
        .list(
            "ad-list",
            Some("ads"),
            "ads.test\nads.example.com\ntie.test\n",
        )
        .list("tracker-list", Some("tracking"), "tracker.test\n")
        .list("malware-list", Some("malware"), "evil.test\n")
        .list_fmt(
            "wild-list",
            Some("wild"),
            "wildcard",
            "*.wild.test\n*.deep.tracker.test\n",
        )
        .list("plain-list", None, "plain.test\n")
        .list_fmt(
            "hosts-list",
            None,
            "hosts",
            "0.0.0.0 hosts-blocked.test\n127.0.0.1 other-hosts.test\n",
        )
        .list_fmt("adblock-list", None, "adblock", "||adblock-blocked.test^\n")
        .allowlist("allow", "support.zoom.us\nexample.com\ntie.test\n");
    let mut real_names = Vec::new();
    let dir = Path::new(DATA_DIR).join("blocklists");
    if dir.is_dir() {
        for (file, name, category) in REAL_LISTS {
            let text = std::fs::read_to_string(dir.join(file))
                .unwrap_or_else(|e| panic!("read {file}: {e}"));
            let parsed = lists::parse(&text, FormatChoice::Auto);
            real_names.extend(parsed.rules().map(|r| r.name.to_string()));
            setup = setup.list_fmt(name, Some(category), "auto", &text);
        }
    } else {
        eprintln!(
            "differential: {} not found; skipping the real lists (synthetic lists only)",
            dir.display()
        );
    }
    (setup.serve(), real_names)
}

// ------------------------------------------------------------------ raw queries

/// A query in raw form: everything the fuzz varies.
#[derive(Clone)]
struct Raw {
    id: u16,
    flags: u16,
    name: Vec<u8>,
    qtype: u16,
    qclass: u16,
    /// payload, version, DO, rest of the flags (z)
    edns: Option<(u16, u8, bool, u16)>,
}

impl Raw {
    fn new(id: u16, name: &str, qtype: RecordType) -> Self {
        Raw {
            id,
            flags: 0x0100,
            name: wire_name(name),
            qtype: qtype.into(),
            qclass: 1,
            edns: None,
        }
    }
    fn edns(mut self, payload: u16, dnssec_ok: bool) -> Self {
        self.edns = Some((payload, 0, dnssec_ok, 0));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.flags.to_be_bytes());
        let ar = u16::from(self.edns.is_some());
        for c in [1u16, 0, 0, ar] {
            p.extend_from_slice(&c.to_be_bytes());
        }
        p.extend_from_slice(&self.name);
        p.extend_from_slice(&self.qtype.to_be_bytes());
        p.extend_from_slice(&self.qclass.to_be_bytes());
        if let Some((payload, version, dnssec_ok, z)) = self.edns {
            p.push(0);
            p.extend_from_slice(&41u16.to_be_bytes());
            p.extend_from_slice(&payload.to_be_bytes());
            p.push(0);
            p.push(version);
            let flags = if dnssec_ok { 0x8000 } else { 0 } | (z & 0x7fff);
            p.extend_from_slice(&flags.to_be_bytes());
            p.extend_from_slice(&0u16.to_be_bytes());
        }
        p
    }
}

fn wire_name(name: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        w.push(label.len() as u8);
        w.extend_from_slice(label.as_bytes());
    }
    w.push(0);
    w
}

// ------------------------------------------------------------------ cases

const BLOCKED: &[&str] = &[
    "zoom.us",
    "us04web.zoom.us",
    "ZoOm.Us",
    "Us04Web.ZOOM.us",
    "ads.test",
    "www.ads.test",
    "WWW.Ads.TeSt",
    "a.b.c.ads.test",
    "tracker.test",
    "cdn.tracker.test",
    "tRaCkEr.TEST",
    "evil.test",
    "EVIL.test",
    "a.wild.test",
    "A.b.WILD.test",
    "x.deep.tracker.test",
    "plain.test",
    "www.plain.test",
    "hosts-blocked.test",
    "www.other-hosts.test",
    "adblock-blocked.test",
    "cdn.adblock-blocked.test",
    "ads.example.com",
    "x.ads.example.com",
];

const FORWARDED: &[&str] = &[
    "support.zoom.us",
    "eu.support.zoom.us",
    "www.example.com",
    "example.com",
    "tie.test",
    "www.tie.test",
    "wild.test",
    "deep.tracker.test",
    "notads.test",
    "ads.test.example.net",
    "s.test",
    "notwild.test",
    "unlisted.test",
    "full.test",
    "FULL.Test",
    "nx.test",
    "nodata.test",
    "refused.test",
    "ad.test",
    "aa.test",
    "signed.test",
    "tc.test",
    "many.test",
    "bigtxt.test",
    "short-ttl.test",
    "short-min.test",
    "servfail.test",
];

/// The integration suite's cases, as raw packets.
fn integration_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut id = 0x2000u16;
    let mut next = || {
        id = id.wrapping_add(1);
        id
    };
    let qtypes = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::ANY,
        RecordType::HTTPS,
    ];
    // (payload, DO) or no EDNS
    let ednses: [Option<(u16, bool)>; 6] = [
        None,
        Some((1232, false)),
        Some((1232, true)),
        Some((512, false)),
        Some((600, true)),
        Some((4096, false)),
    ];
    for names in [BLOCKED, FORWARDED] {
        for name in names {
            for qtype in qtypes {
                for edns in ednses {
                    for (rd, cd) in [(true, false), (false, true)] {
                        let mut raw = Raw::new(next(), name, qtype);
                        raw.flags = u16::from(rd) << 8 | u16::from(cd) << 4 | 0x0020; // AD asked
                        if let Some((payload, d)) = edns {
                            raw = raw.edns(payload, d);
                        }
                        let what = format!("{name} {qtype} edns={edns:?} rd={rd} cd={cd}");
                        cases.push(Case::udp(what, raw.bytes()));
                    }
                }
            }
            for edns in [None, Some((1232, true))] {
                let mut raw = Raw::new(next(), name, RecordType::A);
                if let Some((payload, d)) = edns {
                    raw = raw.edns(payload, d);
                }
                cases.push(Case::tcp(
                    format!("{name} A edns={edns:?} over TCP"),
                    raw.bytes(),
                ));
                let raw = Raw::new(next(), name, RecordType::TXT);
                cases.push(Case::tcp(format!("{name} TXT over TCP"), raw.bytes()));
            }
        }
    }
    // an upstream that never answers (costs one timeout per side)
    cases.push(Case::udp(
        "silent upstream",
        Raw::new(next(), "silent.test", RecordType::A)
            .edns(1232, false)
            .bytes(),
    ));

    // e2e_malformed
    let full = Raw::new(0xabcd, "www.example.test", RecordType::A).bytes();
    for short in [
        &[][..],
        &[0x12],
        &[0xab, 0xcd, 0x01, 0x00, 0x00],
        &full[..11],
    ] {
        cases.push(Case::udp(
            format!("{}-byte packet", short.len()),
            short.to_vec(),
        ));
    }
    for name in ["ads.test", "fine.test"] {
        let mut p = Raw::new(next(), name, RecordType::A).bytes();
        p[2] |= 0x80;
        cases.push(Case::udp(format!("QR set: {name}"), p));
    }
    for cut in [13, 17, full.len() - 3] {
        cases.push(Case::udp(format!("cut at {cut}"), full[..cut].to_vec()));
        cases.push(Case::tcp(
            format!("cut at {cut} over TCP"),
            full[..cut].to_vec(),
        ));
    }
    for opcode in [1u8, 2, 3, 4, 5, 7, 15] {
        for name in ["opcode.test", "ads.test"] {
            let mut p = Raw::new(next(), name, RecordType::A).bytes();
            p[2] = (p[2] & 0x87) | (opcode << 3);
            cases.push(Case::udp(format!("opcode {opcode}: {name}"), p));
        }
    }
    for name in ["ads.test", "fine.test", "zoom.us"] {
        for version in [1u8, 255] {
            let mut raw = Raw::new(next(), name, RecordType::A);
            raw.edns = Some((1232, version, true, 0));
            cases.push(Case::udp(
                format!("EDNS version {version}: {name}"),
                raw.bytes(),
            ));
            cases.push(Case::tcp(
                format!("EDNS version {version}: {name} over TCP"),
                raw.bytes(),
            ));
        }
    }
    // header counts and sections a query must not have
    let base = Raw::new(0x3456, "ads.test", RecordType::A).edns(1232, false);
    for (what, at, value) in [
        ("QDCOUNT 0", 5, 0u8),
        ("QDCOUNT 2", 5, 2),
        ("ANCOUNT 1", 7, 1),
        ("NSCOUNT 1", 9, 1),
        ("ARCOUNT 0 with OPT present", 11, 0),
        ("ARCOUNT 2", 11, 2),
    ] {
        let mut p = base.bytes();
        p[at] = value;
        cases.push(Case::udp(what, p));
    }
    // a second question, complete
    let mut p = Raw::new(0x3457, "ads.test", RecordType::A).bytes();
    p[5] = 2;
    p.extend_from_slice(&wire_name("fine.test"));
    p.extend_from_slice(&[0, 1, 0, 1]);
    cases.push(Case::udp("two questions", p));
    // compressed question name
    let mut p = Raw::new(0x3458, "x", RecordType::A).bytes();
    p.splice(12..15, [0xC0, 0x0C]);
    cases.push(Case::udp("compressed question name", p));
    // two OPT records
    let mut p = base.bytes();
    p[11] = 2;
    let opt = p[p.len() - 11..].to_vec();
    p.extend_from_slice(&opt);
    cases.push(Case::udp("two OPT records", p));
    // OPT not owned by the root
    let mut p = Raw::new(0x3459, "ads.test", RecordType::A).bytes();
    p[11] = 1;
    p.extend_from_slice(&[1, b'x', 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    cases.push(Case::udp("OPT owned by x.", p));
    // flags a query should not carry: AA, TC, Z, RA, RCODE
    for (what, flags) in [
        ("AA", 0x0500u16),
        ("TC", 0x0300),
        ("Z", 0x0140),
        ("RA", 0x0180),
        ("RCODE 5", 0x0105),
    ] {
        for name in ["ads.test", "zoom.us", "fine.test"] {
            let mut raw = Raw::new(next(), name, RecordType::A).edns(1232, false);
            raw.flags = flags;
            cases.push(Case::udp(
                format!("{what} set in query: {name}"),
                raw.bytes(),
            ));
        }
    }
    // the root, class CH / ANY / NONE, qtype 0 and OPT
    for (name, qtype, qclass) in [
        (".", 2u16, 1u16),
        ("zoom.us", 1, 3),
        ("zoom.us", 1, 255),
        ("ads.test", 1, 254),
        ("zoom.us", 0, 1),
        ("zoom.us", 41, 1),
        ("fine.test", 1, 3),
    ] {
        let mut raw = Raw::new(next(), name, RecordType::A).edns(1232, false);
        raw.qtype = qtype;
        raw.qclass = qclass;
        cases.push(Case::udp(
            format!("{name} type {qtype} class {qclass}"),
            raw.bytes(),
        ));
    }
    cases
}

/// Seeded random cases.
fn fuzz_cases(rng: &mut XorShift, real_names: &[String]) -> Vec<Case> {
    let top: Vec<String> = std::fs::read_to_string(Path::new(DATA_DIR).join("top-domains.csv"))
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split_once(',').map(|(_, d)| d.trim().to_string()))
                .take(5000)
                .collect()
        })
        .unwrap_or_default();
    let rules: Vec<String> = BLOCKED
        .iter()
        .chain(FORWARDED)
        .map(|s| s.to_string())
        .collect();
    let mut cases = Vec::with_capacity(FUZZ_CASES);
    for i in 0..FUZZ_CASES {
        let raw = random_query(rng, &rules, real_names, &top);
        let mut packet = raw.bytes();
        let mut what = format!("fuzz #{i}");
        if rng.below(100) < 25 {
            what += match rng.below(4) {
                0 => {
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(packet.len() as u64) as usize;
                        packet[at] ^= rng.next_u64() as u8 | 1;
                    }
                    " (bytes flipped)"
                }
                1 => {
                    packet.truncate(rng.below(packet.len() as u64) as usize);
                    " (cut short)"
                }
                2 => {
                    let n = 1 + rng.below(40) as usize;
                    packet.extend(rng.bytes(n));
                    " (trailing bytes)"
                }
                _ => {
                    let at = 4 + rng.below(8) as usize;
                    packet[at] = rng.next_u64() as u8 % 4;
                    " (a count changed)"
                }
            };
        }
        let tcp = rng.below(100) < 5 && packet.len() >= 12 && packet[2] & 0x80 == 0;
        cases.push(Case { what, packet, tcp });
    }
    cases
}

fn random_query(rng: &mut XorShift, rules: &[String], real: &[String], top: &[String]) -> Raw {
    let mut name = match rng.below(10) {
        0..=2 => rules[rng.below(rules.len() as u64) as usize].clone(),
        3..=4 if !real.is_empty() => real[rng.below(real.len() as u64) as usize].clone(),
        5 if !top.is_empty() => top[rng.below(top.len() as u64) as usize].clone(),
        _ => {
            let labels = 1 + rng.below(4);
            let mut n: Vec<String> = (0..labels).map(|_| random_label(rng)).collect();
            n.push(["test", "com", "example", "net", "uk"][rng.below(5) as usize].to_string());
            n.join(".")
        }
    };
    if rng.below(3) == 0 {
        // a subdomain of whatever was drawn
        name = format!("{}.{name}", random_label(rng));
    }
    if rng.below(40) == 0 {
        // long names, near the 255-byte limit
        while name.len() < 200 + rng.below(60) as usize {
            name = format!("{}.{name}", random_label(rng));
        }
    }
    if name.ends_with("invalid") {
        name += ".test"; // see the module doc
    }
    let mut wire = wire_name(&name);
    if wire.len() > 255 {
        wire = wire_name("too-long.test");
    }
    // random case, per letter
    if rng.below(2) == 0 {
        let src = wire.clone();
        for b in wire.iter_mut() {
            if b.is_ascii_alphabetic() && rng.below(2) == 0 {
                *b ^= 0x20;
            }
        }
        // the label length bytes may have been hit: rebuild them
        let mut p = 0;
        while p < src.len() {
            wire[p] = src[p];
            p += 1 + usize::from(src[p]);
        }
    }
    const TYPES: &[u16] = &[1, 28, 15, 16, 255, 65, 6, 2, 5, 12, 33, 99, 64, 257];
    let qtype = if rng.below(10) == 0 {
        rng.next_u64() as u16
    } else {
        TYPES[rng.below(TYPES.len() as u64) as usize]
    };
    let qclass = match rng.below(20) {
        0 => 3,
        1 => 255,
        2 => 254,
        3 => rng.next_u64() as u16,
        _ => 1,
    };
    // RD, CD, AD, AA, TC, Z, RA at random; QR and opcodes rarely
    let mut flags = (rng.next_u64() as u16) & 0x07f0;
    if rng.below(33) == 0 {
        flags |= 0x8000;
    }
    if rng.below(20) == 0 {
        flags |= (rng.below(16) as u16) << 11;
    }
    if rng.below(50) == 0 {
        flags |= rng.below(16) as u16;
    }
    let edns = (rng.below(10) < 6).then(|| {
        const SIZES: &[u16] = &[0, 100, 511, 512, 513, 600, 1232, 1233, 4096, 65535];
        let payload = if rng.below(5) == 0 {
            rng.next_u64() as u16
        } else {
            SIZES[rng.below(SIZES.len() as u64) as usize]
        };
        let version = if rng.below(10) == 0 {
            rng.next_u64() as u8
        } else {
            0
        };
        let z = if rng.below(10) == 0 {
            rng.next_u64() as u16
        } else {
            0
        };
        (payload, version, rng.below(2) == 0, z)
    });
    Raw {
        id: rng.next_u64() as u16,
        flags,
        name: wire,
        qtype,
        qclass,
        edns,
    }
}

fn random_label(rng: &mut XorShift) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_";
    let max = if rng.below(10) == 0 { 63 } else { 12 };
    let len = 1 + rng.below(max) as usize;
    (0..len)
        .map(|_| CHARS[rng.below(CHARS.len() as u64) as usize] as char)
        .collect()
}

// ------------------------------------------------------------------ running

/// The cache key sinkhole would use, for queries that reach its cache.
fn cache_key(packet: &[u8], reference: &RefServer) -> Option<String> {
    let msg = Message::from_vec(packet).ok()?;
    let q = msg.queries.first()?;
    let plain = msg.queries.len() == 1
        && msg.answers.is_empty()
        && msg.authorities.is_empty()
        && msg.metadata.op_code == hickory_proto::op::OpCode::Query
        && msg.edns.as_ref().is_none_or(|e| e.version() == 0)
        && !reference.blocks(q.name());
    plain.then(|| {
        format!(
            "{} {:?} {:?} do={} cd={}",
            q.name().to_lowercase(),
            q.query_type(),
            q.query_class(),
            msg.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
            msg.metadata.checking_disabled
        )
    })
}

fn exchange(addr: std::net::SocketAddr, case: &Case) -> Option<Vec<u8>> {
    if case.tcp {
        let mut s = dns::tcp_connect(addr);
        dns::tcp_send(&mut s, &case.packet);
        dns::tcp_recv(&mut s)
    } else {
        dns::udp_raw(addr, &case.packet, dns::TIMEOUT)
    }
}

/// Sends a packet sinkhole should drop, then a probe on the same socket:
/// sinkhole answers both inline and in order, so anything before the probe's
/// answer is an answer to the packet. Returns that answer, if any.
fn sinkhole_answer_to_dropped(sh: &Sinkhole, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = dns::udp_socket(sh.dns, dns::TIMEOUT);
    sock.send(packet).expect("send");
    let probe_id = packet
        .get(..2)
        .map_or(0x7777, |b| u16::from_be_bytes([b[0], b[1]]) ^ 0x8000);
    sock.send(&Q::a(PROBE).id(probe_id).bytes())
        .expect("send probe");
    let first = dns::recv(&sock).expect("the probe must be answered");
    let is_probe = first.len() >= 2 && u16::from_be_bytes([first[0], first[1]]) == probe_id;
    (!is_probe).then_some(first)
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn show(label: &str, b: Option<&[u8]>) -> String {
    match b {
        None => format!("  {label}: no answer\n"),
        Some(b) => {
            let decoded = match Message::from_vec(b) {
                Ok(m) => format!("{m:#?}"),
                Err(e) => format!("(does not decode: {e})"),
            };
            format!(
                "  {label} ({} bytes): {}\n  {label} decoded: {decoded}\n",
                b.len(),
                hex(b)
            )
        }
    }
}

#[derive(Default)]
struct Tally {
    compared: usize,
    exact_raw: usize,
    via_hickory_server: usize,
    via_proto: usize,
    dropped: usize,
    loose: usize,
    tcp: usize,
    /// types of the empty-RDATA additional records removed for the reference
    stripped: Vec<u16>,
}

/// Runs one case through both; `Err` describes the difference.
fn run(
    case: &Case,
    sh: &Sinkhole,
    reference: &RefServer,
    seen: &mut HashSet<String>,
    tally: &mut Tally,
) -> Result<(), String> {
    let p = &case.packet[..];
    tally.compared += 1;
    tally.tcp += usize::from(case.tcp);
    let fail = |why: &str, ours: Option<&[u8]>, theirs: Option<&[u8]>| {
        format!(
            "{} ({}): {why}\n  query: {}\n{}{}",
            case.what,
            if case.tcp { "TCP" } else { "UDP" },
            hex(p),
            show("sinkhole ", ours),
            show("reference", theirs)
        )
    };
    if p.len() < 12 || p[2] & 0x80 != 0 {
        // no header, or a response: no answer (SPEC: dropped)
        tally.dropped += 1;
        return match sinkhole_answer_to_dropped(sh, p) {
            None => Ok(()),
            Some(ours) => Err(fail(
                "reference drops it, sinkhole answers",
                Some(&ours),
                None,
            )),
        };
    }
    // what the reference is given: the packet, less any additional record
    // with empty RDATA hickory cannot read (see strip_empty_additionals)
    let mut p = p;
    let stripped;
    if !reference::hickory_server_decodes(p)
        && let Some((q, types)) = reference::strip_empty_additionals(p)
        && reference::hickory_server_decodes(&q)
    {
        tally.stripped.extend(types);
        stripped = q;
        p = &stripped;
    }
    if !reference::hickory_server_decodes(p) {
        tally.via_proto += 1;
        let theirs = reference::proto_answer(p);
        let ours = exchange(sh.dns, case);
        return if ours == theirs {
            tally.exact_raw += 1;
            Ok(())
        } else {
            Err(fail(
                &format!(
                    "differs from the hickory-proto reference (hickory: {})",
                    reference::decode_error(p)
                ),
                ours.as_deref(),
                theirs.as_deref(),
            ))
        };
    }
    tally.via_hickory_server += 1;
    let key = cache_key(p, reference);
    let theirs = exchange(
        reference.addr,
        &Case {
            what: String::new(),
            packet: p.to_vec(),
            tcp: case.tcp,
        },
    );
    let ours = exchange(sh.dns, case);
    let loose = key.as_ref().is_some_and(|k| !seen.insert(k.clone()));
    let (Some(o), Some(t)) = (&ours, &theirs) else {
        return if ours == theirs {
            Ok(())
        } else {
            Err(fail(
                "only one answered",
                ours.as_deref(),
                theirs.as_deref(),
            ))
        };
    };
    if o == t {
        tally.exact_raw += 1;
    }
    if loose {
        tally.loose += 1;
        return if reference::expand(o, true).is_some()
            && reference::expand(o, true) == reference::expand(t, true)
        {
            Ok(())
        } else {
            Err(fail(
                "differ (possible cache hit: compared expanded, record TTLs zeroed, record names lowercased)",
                ours.as_deref(),
                theirs.as_deref(),
            ))
        };
    }
    if reference::expand(o, false).is_none()
        || reference::expand(o, false) != reference::expand(t, false)
    {
        return Err(fail(
            "differ (compared with compression pointers expanded)",
            ours.as_deref(),
            theirs.as_deref(),
        ));
    }
    let canonical = Message::from_vec(t)
        .ok()
        .and_then(|m| m.to_vec().ok())
        .ok_or_else(|| fail("reference answer does not round-trip", Some(o), Some(t)))?;
    if *o != canonical {
        return Err(fail(
            "sinkhole's bytes differ from hickory-proto's encoding of the reference answer",
            Some(o),
            Some(&canonical),
        ));
    }
    Ok(())
}

#[test]
fn fast_path_answers_like_the_hickory_reference() {
    let started = Instant::now();
    let up = upstream();
    let (sh, real_names) = sinkhole(&up);
    let reference = RefServer::start(&sh.setup.config_path());

    let mut rng = XorShift(SEED);
    let integration = integration_cases();
    let fuzz = fuzz_cases(&mut rng, &real_names);
    let (n_integration, n_fuzz) = (integration.len(), fuzz.len());

    let mut seen = HashSet::new();
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for case in integration.iter().chain(&fuzz) {
        if let Err(e) = run(case, &sh, &reference, &mut seen, &mut tally) {
            failures.push(e);
        }
    }
    eprintln!(
        "differential: {} cases ({n_integration} integration + {n_fuzz} fuzz, seed {SEED:#x}, {} over TCP) in {:.1?}: \
         {} through hickory-server, {} through hickory-proto, {} dropped; \
         {} identical as sent, {} compared as possible cache hits; {} real-list rules; \
         {} given to the reference without an empty-RDATA additional record (types {:?}); {} differ",
        tally.compared,
        tally.tcp,
        started.elapsed(),
        tally.via_hickory_server,
        tally.via_proto,
        tally.dropped,
        tally.exact_raw,
        tally.loose,
        real_names.len(),
        tally.stripped.len(),
        tally.stripped,
        failures.len()
    );
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(8).collect();
        panic!(
            "{} of {} cases differ between sinkhole and the reference; the first {}:\n\n{}",
            failures.len(),
            tally.compared,
            shown.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
