//! The `upstream_answer` target: an upstream's reply to a held query, as
//! the upstream stage takes it (`matches`, `validate`), as the cache keeps
//! it, and as clients get it, fresh, cached, counted down and stale.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sinkhole::dns::answers::{self, STALE_TTL, Upstreamed};
use sinkhole::dns::cache::{Cache, Key, MAX_TTL};
use sinkhole::dns::parse;
use sinkhole::dns::record::Decided;
use sinkhole::dns::request::{Request, Transport};
use sinkhole::dns::upstream::HeldQuery;
use sinkhole::dns::upstream::reply::{Validated, matches, validate};

use crate::check::{
    self, Expect, FLAG_AD, FLAG_CD, FLAG_QR, FLAG_RD, FLAG_TC, HEADER_LEN, OPCODE_MASK,
    check_answer, u16_at, u32_at,
};
use crate::wire;

const NAMES: [&str; 8] = [
    "www.example.com",
    "example.com",
    "a.b.c.d.example.org",
    "xn--bcher-kva.example",
    "cached.example",
    "Mixed.Case.Example.NET",
    "_dmarc.example.com",
    "x.y",
];
const TYPES: [u16; 8] = [
    wire::TYPE_A,
    wire::TYPE_AAAA,
    wire::TYPE_MX,
    wire::TYPE_TXT,
    wire::TYPE_CNAME,
    wire::TYPE_HTTPS,
    wire::TYPE_SOA,
    wire::TYPE_ANY,
];
const PAYLOADS: [u16; 4] = [512, 1232, 4096, 700];

/// The client's ID, and the ID of our query upstream.
const CLIENT_ID: u16 = 0x4242;
const UPSTREAM_ID: u16 = 0xBEEF;

/// What the two leading bytes of an input choose.
struct Choice {
    qname: Vec<u8>,
    qtype: u16,
    /// Write our ID and question over the reply's (most random replies
    /// would not match otherwise).
    patch: bool,
    edns: Option<(u16, bool)>,
    cd: bool,
    ad: bool,
    transport: Transport,
    /// The reply came over TCP (a truncated one is taken then).
    over_tcp: bool,
}

impl Choice {
    fn new(a: u8, b: u8) -> Self {
        let mut qname = wire::name(NAMES[usize::from(a & 7)]);
        if b & 0x80 != 0 {
            qname.make_ascii_uppercase();
        }
        Self {
            qname,
            qtype: TYPES[usize::from((a >> 3) & 7)],
            patch: a & 0x40 != 0,
            edns: (a & 0x80 != 0).then_some((PAYLOADS[usize::from((b >> 5) & 3)], b & 1 != 0)),
            cd: b & 2 != 0,
            ad: b & 4 != 0,
            transport: if b & 8 != 0 {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            over_tcp: b & 0x10 != 0,
        }
    }
}

/// One input: two bytes of choices (see [`Choice`]), then the reply.
pub fn run(data: &[u8]) {
    let (Some(&a), Some(&b)) = (data.first(), data.get(1)) else {
        return;
    };
    let c = Choice::new(a, b);
    let question = wire::question(&c.qname, c.qtype, wire::CLASS_IN);
    let flags = FLAG_RD | if c.cd { FLAG_CD } else { 0 } | if c.ad { FLAG_AD } else { 0 };
    let packet = wire::query(CLIENT_ID, flags, &question, c.edns);
    let q = match parse::parse(&packet) {
        Ok(q) => q,
        Err(r) => panic!("harness query does not parse: {r:?}"),
    };
    let req = Request {
        packet: &packet,
        client: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 53000),
        local: None,
        transport: c.transport,
        received: Instant::now(),
    };
    let held = HeldQuery::new(&req, &q, Decided::Unlisted);
    let ours = held.query();
    assert_eq!(ours.question, &question[..]);

    let mut reply = data[2..].to_vec();
    if c.patch {
        if let Some(id) = reply.get_mut(..2) {
            id.copy_from_slice(&UPSTREAM_ID.to_be_bytes());
        }
        if let Some(q) = reply.get_mut(HEADER_LEN..HEADER_LEN + question.len()) {
            q.copy_from_slice(&question);
        }
    }
    // The upstream stage: a datagram under our ID that `matches` our
    // question is the answer (or, truncated, sends the query over TCP).
    if u16_at(&reply, 0) != Some(UPSTREAM_ID) {
        return;
    }
    let Ok(truncated) = matches(&reply, UPSTREAM_ID, ours.question) else {
        return;
    };
    check_match(&reply, &question, c.qname.len());
    assert_eq!(truncated, u16_at(&reply, 2).unwrap_or(0) & FLAG_TC != 0);
    if truncated && !c.over_tcp {
        return;
    }
    let mut v = Validated::default();
    if validate(&reply, question.len(), &mut v).is_err() {
        return;
    }
    // Known issue: a name whose pointer reaches bytes sinkhole rewrites
    // reads differently to the client (see `names_read_rewritten`).
    let rewritten = match check::names_read_rewritten(&reply, question.len()) {
        check::Rewritten::No => false,
        check::Rewritten::Checked => !*crate::STRICT,
        check::Rewritten::Unchecked => true,
    };
    let original = check::hickory(&reply).filter(|_| !rewritten);
    let kept = check_validated(&reply, &v, question.len(), original.as_ref());

    // `resume`: a final answer is stored for its TTL; any answer goes to
    // the client, with age 0.
    let cache_ttl = v.cache_ttl.filter(|_| v.is_final());
    let answer = Upstreamed {
        msg: &v.msg,
        ttl_offsets: &v.ttl_offsets,
        ad: v.ad,
        ede: &v.ede,
    };
    let expect = Expect {
        id: CLIENT_ID,
        flags,
        question: Some(&question),
        udp_limit: match c.transport {
            Transport::Udp => Some(match c.edns {
                Some((payload, _)) => usize::from(payload).clamp(512, check::MAX_UDP),
                None => 512,
            }),
            Transport::Tcp => None,
        },
        ad_asked: Some(c.ad || c.edns.is_some_and(|(_, dnssec_ok)| dnssec_ok)),
        had_opt: Some(c.edns.is_some()),
        // hickory read the upstream's records, so it must read ours.
        must_parse: original.is_some(),
    };
    let mut fresh = Vec::new();
    answers::forwarded(&mut fresh, &q, &answer, 0, c.transport);
    let client = check_answer(&fresh, &expect);
    check_forwarded(&fresh, &v, kept.as_ref(), client.as_ref(), 0);

    let Some(ttl) = cache_ttl else {
        return;
    };
    let cache = Cache::new(8).serving_stale(Duration::from_secs(60));
    let key = Key::new(q.qname, q.qtype, q.qclass, q.dnssec_ok(), q.cd());
    let now = Instant::now();
    cache.insert(&key, &answer, ttl, now);

    // The next client, at once: the very same answer. The key is the name
    // in any case.
    let mut upper = q.qname.to_vec();
    upper.make_ascii_uppercase();
    let any_case = Key::new(&upper, q.qtype, q.qclass, q.dnssec_ok(), q.cd());
    let mut cached = Vec::new();
    let hit = cache.lookup(&any_case, now, |a, age| {
        assert_eq!(age, 0);
        assert_eq!(a.msg, &v.msg[..], "the cache changed the message");
        assert_eq!(a.ttl_offsets, &v.ttl_offsets[..]);
        assert_eq!(a.ede, &v.ede[..]);
        assert_eq!(a.ad, v.ad);
        for ttl in ttls_at(a.msg, a.ttl_offsets) {
            assert!(ttl <= MAX_TTL, "a cached TTL of {ttl}");
        }
        answers::forwarded(&mut cached, &q, a, age, c.transport);
    });
    assert!(
        hit.is_some(),
        "a cacheable answer was not found right after insert"
    );
    assert_eq!(
        cached, fresh,
        "a cached answer at age 0 differs from the fresh one"
    );

    // Counted down: a client `ttl - 1` seconds later.
    let age = ttl - 1;
    let mut later = Vec::new();
    let hit = cache.lookup(&key, now + Duration::from_secs(u64::from(age)), |a, age| {
        answers::forwarded(&mut later, &q, a, age, c.transport);
        age
    });
    assert_eq!(
        hit,
        Some(age),
        "an answer gone before its TTL, or aged wrong"
    );
    let client = check_answer(&later, &expect);
    check_forwarded(&later, &v, kept.as_ref(), client.as_ref(), age);

    // Expired at its TTL; served stale within the window, then gone.
    let expired = now + Duration::from_secs(u64::from(ttl));
    assert!(
        cache.lookup(&key, expired, |_, _| ()).is_none(),
        "an answer served past its TTL"
    );
    let mut stale = Vec::new();
    let hit = cache.lookup_stale(&key, expired, |a| {
        answers::stale(&mut stale, &q, a, c.transport);
    });
    assert!(hit.is_some(), "no stale answer within the window");
    if let Some(msg) = check_answer(&stale, &expect) {
        for t in check::ttls(&msg) {
            assert_eq!(t, STALE_TTL, "a stale answer's TTL");
        }
    }
    let gone = expired + Duration::from_secs(60);
    assert!(cache.lookup_stale(&key, gone, |_| ()).is_none());
}

/// `matches` took the reply: it has our ID, is a response to a standard
/// query with one question, and that question is ours: the name in any
/// case, the type and class exactly (`regressions/upstream_answer/
/// reply-for-another-type` is what this once caught).
fn check_match(reply: &[u8], question: &[u8], qname_len: usize) {
    let flags = u16_at(reply, 2).unwrap_or(0);
    assert_eq!(u16_at(reply, 0), Some(UPSTREAM_ID));
    assert!(flags & FLAG_QR != 0, "a query taken as a reply");
    assert_eq!(flags & OPCODE_MASK, 0, "a reply of another opcode taken");
    assert_eq!(u16_at(reply, 4), Some(1));
    let theirs = &reply[HEADER_LEN..HEADER_LEN + question.len()];
    assert!(theirs[..qname_len].eq_ignore_ascii_case(&question[..qname_len]));
    let (asked, got) = (&question[qname_len..], &theirs[qname_len..]);
    assert_eq!(
        asked, got,
        "a reply for another type or class taken (asked {asked:02x?}, got {got:02x?})"
    );
}

fn ttls_at<'a>(msg: &'a [u8], offsets: &'a [u8]) -> impl Iterator<Item = u32> + 'a {
    assert_eq!(offsets.len() % 2, 0);
    offsets.chunks_exact(2).map(|p| {
        let at = usize::from(u16::from_le_bytes([p[0], p[1]]));
        match u32_at(msg, at) {
            Some(t) => t,
            None => panic!("a TTL offset {at} past the message ({} bytes)", msg.len()),
        }
    })
}

/// What validation kept: the header and question as sent, OPT gone, every
/// TTL sane and found, the cache TTL within bounds. Returns hickory's
/// reading of the kept message.
fn check_validated(
    reply: &[u8],
    v: &Validated,
    qlen: usize,
    original: Option<&hickory_proto::op::Message>,
) -> Option<hickory_proto::op::Message> {
    let head = HEADER_LEN + qlen;
    assert_eq!(v.msg[..10], reply[..10], "header changed");
    assert_eq!(v.msg[12..head], reply[12..head], "question changed");
    let flags = u16_at(reply, 2).unwrap_or(0);
    assert_eq!(v.rcode & 0xF, flags & 0xF);
    assert_eq!(v.ad, flags & FLAG_AD != 0);
    let ttls: Vec<u32> = ttls_at(&v.msg, &v.ttl_offsets).collect();
    for &t in &ttls {
        assert!(t <= MAX_TTL, "a kept TTL of {t}");
    }
    if let Some(t) = v.cache_ttl {
        assert!((1..=MAX_TTL).contains(&t), "cache TTL {t}");
        assert!(v.is_final(), "an error answer is cacheable");
        assert_eq!(flags & FLAG_TC, 0, "a truncated answer is cacheable");
        assert!(ttls.iter().all(|&x| x >= t) || v.rcode == 3 || u16_at(reply, 6) == Some(0));
    }
    let original = original?;
    assert_eq!(
        u16::from(original.metadata.response_code),
        v.rcode,
        "RCODE with its extended bits"
    );
    let kept = match check::hickory(&v.msg) {
        Some(m) => m,
        None => panic!("hickory reads the reply but not what validation kept"),
    };
    assert!(kept.edns.is_none(), "OPT kept");
    assert_eq!(
        check::record_count(&kept),
        ttls.len(),
        "a record without its TTL offset"
    );
    assert_eq!(
        check::ttls(&kept).collect::<Vec<_>>(),
        ttls,
        "the TTL offsets are not the records' TTLs"
    );
    assert_eq!(
        check::record_count(&kept),
        check::record_count(original),
        "records lost or gained"
    );
    // The same records but for their TTLs: names, types, classes, data.
    let all = |m: &hickory_proto::op::Message| {
        m.answers
            .iter()
            .chain(&m.authorities)
            .chain(&m.additionals)
            .map(|r| (r.name.clone(), r.record_type(), r.dns_class, r.data.clone()))
            .collect::<Vec<_>>()
    };
    let (before, after) = (all(original), all(&kept));
    for (b, a) in before.iter().zip(&after) {
        assert!(b.0.eq_case(&a.0), "a name changed: {} became {}", b.0, a.0);
        assert_eq!((b.1, b.2, &b.3), (a.1, a.2, &a.3), "a record changed");
    }
    Some(kept)
}

/// A client's answer from a kept reply at `age`: the upstream's RCODE and
/// records, every TTL the kept one less `age` (so none above the cap), or
/// cut to the question with TC=1.
fn check_forwarded(
    out: &[u8],
    v: &Validated,
    kept: Option<&hickory_proto::op::Message>,
    client: Option<&hickory_proto::op::Message>,
    age: u32,
) {
    assert_eq!(
        u16_at(out, 2).unwrap_or(0) & 0xF,
        v.rcode & 0xF,
        "RCODE not relayed"
    );
    let (Some(kept), Some(client)) = (kept, client) else {
        return;
    };
    let cut = client.metadata.truncation && check::record_count(client) == 0;
    if cut {
        return;
    }
    let expected: Vec<u32> = check::ttls(kept).map(|t| t.saturating_sub(age)).collect();
    let got: Vec<u32> = check::ttls(client).collect();
    assert_eq!(got, expected, "TTLs not counted down by {age}");
}
