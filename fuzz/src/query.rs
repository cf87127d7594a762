//! The `query` target: a client's packet through `Pipeline::begin`, and on
//! to `resume` and `overloaded` when it goes upstream.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use sinkhole::dns::access::Access;
use sinkhole::dns::answers::{BlockStyle, STALE_TTL, Upstreamed};
use sinkhole::dns::cache::{Cache, Key, MAX_TTL};
use sinkhole::dns::pipeline::{Pipeline, Step};
use sinkhole::dns::record::{CacheLookup, Observe, Outcome, QueryRecord, UpstreamAttempt};
use sinkhole::dns::request::{Request, Transport};
use sinkhole::dns::upstream::loops::LoopGuard;
use sinkhole::dns::upstream::reply::{Validated, matches, validate};
use sinkhole::dns::upstream::{Finished, HeldQuery, Reply};
use sinkhole::lists::{Format, FormatChoice, ParsedList};
use sinkhole::policy::{self, Action, Category, ListInput, Live};

use crate::check::{
    self, Expect, FLAG_AD, FLAG_QR, FLAG_RD, FLAG_TC, HEADER_LEN, OPCODE_MASK, check_answer, u16_at,
};
use crate::wire;

/// What the observer saw of one query.
#[derive(Debug, Clone, Copy)]
struct Seen {
    rcode: u16,
    outcome: Outcome,
    cache: CacheLookup,
}

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

/// Keeps what each finished query reported, for the checks.
struct Recorder;

impl Observe for Recorder {
    fn query(&self, r: &QueryRecord<'_>) {
        SEEN.with(|s| {
            s.borrow_mut().push(Seen {
                rcode: r.rcode,
                outcome: r.outcome,
                cache: r.cache,
            })
        });
    }
    fn upstream(&self, _: &UpstreamAttempt) {}
}

fn take_seen() -> Vec<Seen> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

const ADS: &str = "ads.example\n*.tracker.example\nzoom.us\n";
const VIDEO: &str = "video.example\n";
const QUIET: &str = "*.nodata.example\n";
const REFUSE: &str = "refused.example\n";
const TRIAL: &str = "monitored.example\n";
const ALLOW: &str = "ok.ads.example\n";
const ZONE: &str = "$TTL 300
$ORIGIN rpz.example.
@   IN SOA ns.rpz.example. admin.rpz.example. ( 1 3600 600 86400 60 )
    IN NS  ns.rpz.example.
nx.test             CNAME .
*.nx.test           CNAME .
nodata.test         CNAME *.
ok.nx.test          CNAME rpz-passthru.
drop.test           CNAME rpz-drop.
tcp.test            CNAME rpz-tcp-only.
local.test          A     192.0.2.10
local.test          AAAA  2001:db8::10
local.test          TXT   \"local\" \"data\"
alias.test          CNAME www.allowed.test.
alias-blocked.test  CNAME zoom.us.
alias-local.test    CNAME local.test.
alias-cached.test   CNAME cached.example.
";

fn category(name: &str, action: Action) -> Category {
    Category {
        name: name.into(),
        action,
        reason: None,
        alternatives: vec![],
    }
}

fn build_policy() -> policy::Policy {
    let parse = |text: &str, f: Format| sinkhole::lists::parse(text, FormatChoice::Fixed(f));
    let lists: Vec<(&str, Option<&str>, ParsedList)> = vec![
        ("ads", Some("ads"), parse(ADS, Format::Domains)),
        ("video", Some("video"), parse(VIDEO, Format::Domains)),
        ("quiet", Some("quiet"), parse(QUIET, Format::Wildcard)),
        ("refuse", Some("refuse"), parse(REFUSE, Format::Domains)),
        ("trial", Some("trial"), parse(TRIAL, Format::Domains)),
        ("zone", Some("ig"), parse(ZONE, Format::Rpz)),
        ("allow", None, parse(ALLOW, Format::Domains)),
    ];
    for (name, _, l) in &lists {
        assert!(
            !l.is_empty() && l.skipped().count == 0,
            "setup list {name}: {:?}",
            l.skipped()
        );
    }
    let inputs: Vec<ListInput<'_, ParsedList>> = lists
        .iter()
        .map(|(name, category, rules)| ListInput {
            name,
            path: Path::new(name),
            category: *category,
            rules,
        })
        .collect();
    let categories = vec![
        category("ads", Action::Nxdomain),
        category("video", Action::Redirect),
        category("quiet", Action::Nodata),
        category("refuse", Action::Refused),
        category("trial", Action::Monitor),
        category("ig", Action::Nxdomain),
    ];
    match policy::build(categories, &inputs) {
        Ok(p) => p,
        Err(e) => panic!("setup policy: {e}"),
    }
}

/// Stores an upstream answer for `name`/`qtype` the way the upstream
/// stage does: a reply that `matches` and `validate`s as cacheable. It is
/// kept for `ttl` seconds, or for the longest the cache keeps anything (so
/// a long run sees the same cache throughout).
fn cache_answer(
    cache: &Cache,
    name: &str,
    qtype: u16,
    dnssec_ok: bool,
    reply: &[u8],
    ttl: Option<u32>,
    at: Instant,
) {
    let qname = wire::name(name);
    let question = wire::question(&qname, qtype, wire::CLASS_IN);
    if let Err(e) = matches(reply, 0, &question) {
        panic!("setup reply for {name}: {e}");
    }
    let mut v = Validated::default();
    if let Err(e) = validate(reply, question.len(), &mut v) {
        panic!("setup reply for {name}: {e}");
    }
    let answer = Upstreamed {
        msg: &v.msg,
        ttl_offsets: &v.ttl_offsets,
        ad: v.ad,
        ede: &v.ede,
    };
    if v.cache_ttl.is_none() {
        panic!("setup reply for {name} is not cacheable");
    }
    let ttl = ttl.unwrap_or(MAX_TTL);
    let key = Key::new(&qname, qtype, wire::CLASS_IN, dnssec_ok, false);
    cache.insert(&key, &answer, ttl, at);
}

fn build_cache() -> Cache {
    let cache = Cache::new(4096).serving_stale(Duration::from_secs(86_400));
    let now = Instant::now();
    let a = |ip: [u8; 4]| wire::Rr::new(wire::TYPE_A, 3600, ip.to_vec());
    // A fresh A with AD (both DO keys), its CNAME, a NODATA and an NXDOMAIN.
    let cached = wire::reply(
        "cached.example",
        wire::TYPE_A,
        FLAG_AD,
        0,
        &[a([192, 0, 2, 53])],
        &[],
    );
    for dnssec_ok in [false, true] {
        cache_answer(
            &cache,
            "cached.example",
            wire::TYPE_A,
            dnssec_ok,
            &cached,
            None,
            now,
        );
    }
    let soa = wire::Rr::soa("example", 900, 300);
    let nodata = wire::reply(
        "cached.example",
        wire::TYPE_AAAA,
        0,
        0,
        &[],
        std::slice::from_ref(&soa),
    );
    cache_answer(
        &cache,
        "cached.example",
        wire::TYPE_AAAA,
        false,
        &nodata,
        None,
        now,
    );
    let nx = wire::reply("nx.cached.example", wire::TYPE_A, 0, 3, &[], &[soa]);
    cache_answer(
        &cache,
        "nx.cached.example",
        wire::TYPE_A,
        false,
        &nx,
        None,
        now,
    );
    let chain = wire::reply(
        "cname.cached.example",
        wire::TYPE_A,
        0,
        0,
        &[
            wire::Rr::new(wire::TYPE_CNAME, 600, wire::name("cached.example")),
            wire::Rr::owned("cached.example", wire::TYPE_A, 600, vec![192, 0, 2, 54]),
        ],
        &[],
    );
    cache_answer(
        &cache,
        "cname.cached.example",
        wire::TYPE_A,
        false,
        &chain,
        None,
        now,
    );
    // The upstream's EDE, relayed to clients with EDNS.
    let mut ede = wire::reply(
        "ede.cached.example",
        wire::TYPE_A,
        0,
        0,
        &[a([192, 0, 2, 55])],
        &[],
    );
    ede[11] = 1;
    ede.extend_from_slice(&wire::opt(1232, &wire::ede(3, b"from the upstream")));
    cache_answer(
        &cache,
        "ede.cached.example",
        wire::TYPE_A,
        false,
        &ede,
        None,
        now,
    );
    // Too big for UDP: the client gets TC=1.
    let big: Vec<wire::Rr> = (0..40u8)
        .map(|i| {
            let mut txt = vec![99u8];
            txt.extend(std::iter::repeat_n(b'a' + i % 26, 99));
            wire::Rr::new(wire::TYPE_TXT, 3600, txt)
        })
        .collect();
    let big = wire::reply("big.cached.example", wire::TYPE_TXT, 0, 0, &big, &[]);
    cache_answer(
        &cache,
        "big.cached.example",
        wire::TYPE_TXT,
        false,
        &big,
        None,
        now,
    );
    // The target of an RPZ CNAME, so a chase finds it cached.
    let www = wire::reply(
        "www.allowed.test",
        wire::TYPE_A,
        0,
        0,
        &[a([192, 0, 2, 80])],
        &[],
    );
    cache_answer(
        &cache,
        "www.allowed.test",
        wire::TYPE_A,
        false,
        &www,
        None,
        now,
    );
    // Expired ten seconds ago, within serve-stale's window: a miss that
    // `resume` serves stale when no upstream answers.
    let stale = wire::reply(
        "stale.example",
        wire::TYPE_A,
        0,
        0,
        &[a([192, 0, 2, 99])],
        &[],
    );
    let then = now.checked_sub(Duration::from_secs(11)).unwrap_or(now);
    cache_answer(
        &cache,
        "stale.example",
        wire::TYPE_A,
        false,
        &stale,
        Some(1),
        then,
    );
    cache
}

static PIPELINE: LazyLock<Pipeline> = LazyLock::new(|| {
    Pipeline::new(
        Access::default(),
        None,
        Arc::new(Live::from_pointee(build_policy())),
        build_cache(),
        BlockStyle {
            ttl: 60,
            redirect_v4: Some(Ipv4Addr::new(192, 0, 2, 80)),
            redirect_v6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x80)),
        },
        Arc::new(Recorder),
        Arc::new(LoopGuard::new(&[SocketAddr::new(
            Ipv4Addr::LOCALHOST.into(),
            53,
        )])),
    )
});

/// One input: the packet as a client sent it. The ID's low byte picks the
/// transport (bit 0: TCP) and the client (bits 1-2: 127.0.0.1, ::1, or
/// 192.0.2.7, outside `access.allow`).
pub fn run(data: &[u8]) {
    let pipeline = &*PIPELINE;
    let pick = data.get(1).copied().unwrap_or(0);
    let transport = if pick & 1 != 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let ip: IpAddr = match (pick >> 1) & 3 {
        2 => Ipv6Addr::LOCALHOST.into(),
        3 => Ipv4Addr::new(192, 0, 2, 7).into(),
        _ => Ipv4Addr::LOCALHOST.into(),
    };
    let refused_client = (pick >> 1) & 3 == 3;
    let req = Request {
        packet: data,
        client: SocketAddr::new(ip, 53000),
        local: None,
        transport,
        received: Instant::now(),
    };

    // What the query promises, read without sinkhole.
    let asked = check::hickory(data);
    let flags = u16_at(data, 2).unwrap_or(0);
    let qlen = check::question_len(data);
    let qd = u16_at(data, 4);
    // Exactly one uncompressed question: the one every answer echoes.
    let question = match (qd, qlen) {
        (Some(1), Some(len)) => data.get(HEADER_LEN..HEADER_LEN + len),
        _ => None,
    };
    if let Some(m) = &asked
        && m.queries.len() == 1
        && qlen.is_some()
    {
        // hickory read one question, and it is not compressed: sinkhole
        // reads it too.
        assert!(question.is_some());
    }
    let expect = Expect {
        id: u16_at(data, 0).unwrap_or(0),
        flags,
        question,
        udp_limit: match transport {
            Transport::Udp => Some(Expect::udp_limit_for(asked.as_ref())),
            Transport::Tcp => None,
        },
        ad_asked: asked
            .as_ref()
            .map(|m| flags & FLAG_AD != 0 || m.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok)),
        had_opt: asked.as_ref().map(|m| m.edns.is_some()),
        must_parse: true,
    };

    take_seen();
    let mut out = Vec::new();
    let step = pipeline.begin(&req, &mut out);
    let seen = take_seen();
    if *crate::VERBOSE {
        eprintln!("{transport:?} from {ip}: {step:?}, recorded {seen:?}");
    }
    match step {
        Step::Answer => {
            let msg = check_answer(&out, &expect);
            assert_eq!(seen.len(), 1, "an answered query is recorded once");
            if let Some(msg) = msg {
                assert_eq!(
                    seen[0].rcode,
                    u16::from(msg.metadata.response_code),
                    "recorded RCODE differs from the answer's"
                );
            }
            if refused_client {
                assert_eq!(seen[0].outcome, Outcome::Refused);
            }
        }
        Step::Drop => match seen.as_slice() {
            // Not a query at all: shorter than a header, or a response.
            [] => assert!(data.len() < HEADER_LEN || flags & FLAG_QR != 0),
            // RPZ's rpz-drop, or a refused client whose query did not parse.
            [s] => assert!(
                matches!(s.outcome, Outcome::Blocked | Outcome::Refused),
                "dropped as {:?}",
                s.outcome
            ),
            more => panic!("a dropped query recorded {} times", more.len()),
        },
        Step::Forward(q, decided) => {
            assert!(
                seen.is_empty(),
                "a forwarded query is recorded at its end only"
            );
            assert!(!refused_client, "a refused client's query went upstream");
            served_query(data, flags);
            let held = HeldQuery::new(&req, &q, decided);
            finish(pipeline, &held, &expect, data);
        }
        Step::Chase(held) => {
            assert!(
                seen.is_empty(),
                "a chased query is recorded at its end only"
            );
            assert!(!refused_client, "a refused client's query went upstream");
            served_query(data, flags);
            assert!(held.chase.is_some());
            finish(pipeline, &held, &expect, data);
        }
    }
}

/// A query that goes upstream is one sinkhole serves: a standard query,
/// one question, no answer or authority records, RD set, TC clear.
fn served_query(data: &[u8], flags: u16) {
    assert_eq!(flags & (FLAG_QR | OPCODE_MASK | FLAG_TC), 0);
    assert!(flags & FLAG_RD != 0, "a query without RD went upstream");
    assert_eq!(u16_at(data, 4), Some(1));
    assert_eq!(u16_at(data, 6), Some(0));
    assert_eq!(u16_at(data, 8), Some(0));
}

/// The ends a held query can have: no upstream answered (SERVFAIL, or a
/// stale answer), an upstream answered, or too many were waiting.
fn finish(pipeline: &Pipeline, held: &HeldQuery, expect: &Expect<'_>, data: &[u8]) {
    let now = Instant::now();

    let mut out = Vec::new();
    pipeline.resume(held, Finished::NoAnswer, now, &mut out);
    let seen = take_seen();
    if *crate::VERBOSE {
        eprintln!("  no answer: recorded {seen:?}");
    }
    assert_eq!(seen.len(), 1, "resume records the query once");
    if let Some(msg) = check_answer(&out, expect) {
        assert_eq!(seen[0].rcode, u16::from(msg.metadata.response_code));
        if seen[0].cache == CacheLookup::Stale {
            for ttl in check::ttls(&msg) {
                assert_eq!(ttl, STALE_TTL, "a stale answer's TTL");
            }
        }
    }

    // An upstream's answer for the held question: one record of its type
    // for A and AAAA, NODATA otherwise; AD as the input's first byte says.
    let target = held.query();
    let rr = match target.qtype {
        wire::TYPE_A => vec![wire::Rr::new(wire::TYPE_A, 300, vec![192, 0, 2, 1])],
        wire::TYPE_AAAA => vec![wire::Rr::new(wire::TYPE_AAAA, 300, vec![0x20; 16])],
        _ => vec![],
    };
    let ad = if data.first().is_some_and(|b| b & 1 != 0) {
        FLAG_AD
    } else {
        0
    };
    let reply = wire::reply_to(0x5151, target.question, ad, 0, &rr, &[]);
    if let Err(e) = matches(&reply, 0x5151, target.question) {
        panic!("an exact reply to the held question does not match: {e}");
    }
    let mut v = Validated::default();
    if let Err(e) = validate(&reply, target.question.len(), &mut v) {
        panic!("an exact reply to the held question is malformed: {e}");
    }
    let answered = Reply {
        answer: Upstreamed {
            msg: &v.msg,
            ttl_offsets: &v.ttl_offsets,
            ad: v.ad,
            ede: &v.ede,
        },
        rcode: v.rcode,
        // Not stored: the shared cache stays as set up, so every input
        // runs against the same state.
        cache_ttl: None,
    };
    out.clear();
    pipeline.resume(held, Finished::Answered(answered), now, &mut out);
    let seen = take_seen();
    assert_eq!(seen.len(), 1);
    if let Some(msg) = check_answer(&out, expect) {
        assert_eq!(seen[0].rcode, u16::from(msg.metadata.response_code));
    }

    out.clear();
    pipeline.overloaded(held, &mut out);
    let seen = take_seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].outcome, Outcome::Error);
    if let Some(msg) = check_answer(&out, expect) {
        assert_eq!(
            u16::from(msg.metadata.response_code),
            2,
            "overloaded is SERVFAIL"
        );
    }
}
