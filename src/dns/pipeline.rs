//! The chain every query goes through, composed in one place.
//!
//! ```text
//!  Request ──► 1 parse ──► 2 access ──► 3 policy ──► 4 cache ──► 5 upstream ──► 6 response
//!   (bytes,      parse.rs    access.rs    policy.rs    cache.rs    upstream/       answers.rs
//!    client,        │           │            │            │            │
//!    transport,     └─ error    └─ refused   └─ blocked   └─ cached    └─ resumes in
//!    time)                                                                [`Pipeline::resume`]
//!
//! Access is decided first, from the client's address alone: a refused
//! client's packet is parsed only to echo its question (`refused:
//! refuse`), or not at all (`drop`).
//!                            every query ends in [`Pipeline::finish`]: one QueryRecord
//! ```
//!
//! [`Pipeline::begin`] runs stages 1–4 inline, with no I/O and no
//! allocation, and answers whatever it can (errors, blocked names, cached
//! answers) into the caller's buffer. A query it cannot answer leaves as
//! [`Step::Forward`] for the upstream stage, which the listener's worker
//! owns; when that stage is done, [`Pipeline::resume`] stores the answer in
//! the cache and writes the response. Either way the query ends in
//! [`Pipeline::finish`], the one observation point, which hands a
//! [`QueryRecord`] to the observers (metrics today; the audit log and
//! `/stats` plug in there too).
//!
//! Where the coming stages plug in: rate limits in stage 2; per-network groups in stage 3 (the client is in the request);
//! serve-stale in stage 5's "no answer" (the cache keeps expired entries a
//! while); CNAME inspection between 5 and 6 (the validated reply is walked
//! against the policy before it is cached); DoT/DoH upstreams in stage 5's
//! transports.

use std::sync::Arc;
use std::time::Instant;

use super::access::{Access, Admission};
use super::ratelimit::{OverLimit, RateLimiter};

/// The EDE text for a client outside `access.allow`.
const NOT_ALLOWED: &[u8] = b"client not in access.allow";
use super::answers::{
    self, BlockStyle, EDE_BLOCKED, EDE_FORGED_ANSWER, EDE_NO_REACHABLE_AUTHORITY,
    EDE_NOT_AUTHORITATIVE, EDE_PROHIBITED, Extra,
};
use super::cache::{Cache, Key};
use super::chase;
use super::parse::{self, Query, RejectKind, Rejection};
use super::policy::{PolicyStage, Verdict};
use super::record::{CacheLookup, Decided, Observe, Outcome, QueryRecord};
use super::request::{Request, Transport};
use super::upstream::loops::LoopGuard;
use super::upstream::{Chased, Finished, HeldQuery};
use super::wire::{
    EXT_RCODE_BADVERS, RCODE_FORMERR, RCODE_MASK, RCODE_NOTIMP, RCODE_REFUSED, RCODE_SERVFAIL,
};
use crate::policy::{Action, Live, Policy};

/// What [`Pipeline::begin`] did with a request.
#[derive(Debug)]
pub enum Step<'a> {
    /// The answer is in the output buffer.
    Answer,
    /// Send nothing (not a query at all).
    Drop,
    /// Ask upstream: the parsed query, and what the policy said of it.
    Forward(Query<'a>, Decided),
    /// Ask upstream for an RPZ CNAME's target on the client's behalf: the
    /// query is ready (it cannot borrow the client's packet).
    Chase(Box<HeldQuery>),
}

/// The stages, shared by every listener and worker.
pub struct Pipeline {
    access: Access,
    /// `limits.client_qps`; `None` when off.
    limiter: Option<RateLimiter>,
    policy: PolicyStage,
    cache: Cache,
    style: BlockStyle,
    observer: Arc<dyn Observe>,
    /// Our own loop probes, recognised when an upstream sends them back.
    loops: Arc<LoopGuard>,
}

impl Pipeline {
    pub fn new(
        access: Access,
        limiter: Option<RateLimiter>,
        live: Arc<Live>,
        cache: Cache,
        style: BlockStyle,
        observer: Arc<dyn Observe>,
        loops: Arc<LoopGuard>,
    ) -> Self {
        Self {
            access,
            limiter,
            policy: PolicyStage::new(live),
            cache,
            style,
            observer,
            loops,
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Who may query (for `/explain?client=`).
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Stages 1–4: answers what needs no upstream into `out`.
    pub fn begin<'a>(&self, req: &Request<'a>, out: &mut Vec<u8>) -> Step<'a> {
        // 2. access, ahead of the parse: the address decides.
        match self.access.check(req.client.ip()) {
            Admission::Admit => {}
            Admission::Drop => return self.refused(req, None, NOT_ALLOWED, out),
            Admission::Refuse => {
                let q = parse::parse(req.packet).ok();
                return self.refused(req, q.as_ref(), NOT_ALLOWED, out);
            }
        }

        if let Some(limiter) = &self.limiter
            && !limiter.allow(req.client.ip(), req.received)
        {
            self.observer.ratelimited();
            let q = match limiter.over_limit() {
                OverLimit::Drop => None,
                OverLimit::Refuse => parse::parse(req.packet).ok(),
            };
            return self.refused(req, q.as_ref(), b"rate limited (limits.client_qps)", out);
        }

        // 1. parse
        let q = match parse::parse(req.packet) {
            Ok(q) => q,
            Err(rejection) => return self.reject(req, &rejection, out),
        };
        // Our own loop probe, sent back by an upstream: it goes no further
        // (see `upstream::loops`).
        if self.loops.is_probe(q.qname) {
            let text: [&[u8]; 1] = [b"forwarding loop: this query came from this server"];
            let ede = Extra::Ede {
                code: EDE_PROHIBITED,
                text: &text,
            };
            answers::query_error(out, &q, RCODE_REFUSED, ede);
            return self.finish_local(req, &q, Decided::NotAsked, out, Outcome::Refused);
        }

        // 3. policy
        let snapshot = self.policy.snapshot();
        let decided = match self.policy.check(&snapshot, &q) {
            Verdict::Block { decided, answer } => match answer.action {
                // RPZ's own actions; the configurable ones are answered
                // by the table in `answers::blocked`.
                Action::Drop => {
                    self.finish_local(req, &q, decided, &[], Outcome::Blocked);
                    return Step::Drop;
                }
                Action::TcpOnly if req.transport == Transport::Tcp => Decided::Unlisted,
                Action::TcpOnly => {
                    answers::tcp_only(out, &q);
                    return self.finish_local(req, &q, decided, out, Outcome::Blocked);
                }
                Action::Local(id) => {
                    let records = snapshot.local(id);
                    if let Some(target) = chase::target(records, q.qtype) {
                        let text = [
                            &b"local data: category "[..],
                            answer.category.as_bytes(),
                            b", list ",
                            answer.list.as_bytes(),
                        ]
                        .concat();
                        return self.chase(req, &q, decided, target, text, &snapshot, out);
                    }
                    answers::local(out, &q, records, &answer, &self.style);
                    answers::fit(out, q.id, q.question, q.edns, req.transport);
                    return self.finish_local(req, &q, decided, out, Outcome::Blocked);
                }
                _ => {
                    answers::blocked(out, &q, &answer, &self.style);
                    // A long name, category and list in the EDE text can
                    // outgrow a 512-byte client.
                    answers::fit(out, q.id, q.question, q.edns, req.transport);
                    return self.finish_local(req, &q, decided, out, Outcome::Blocked);
                }
            },
            Verdict::Pass(decided) => decided,
        };
        drop(snapshot);
        // Recursion is all we offer: a query that does not want it gets
        // REFUSED, cached or not, so nobody can snoop the cache (Unbound's
        // default). Blocked names were answered above.
        if !q.rd() {
            let text: [&[u8]; 1] = [b"recursion not desired; this server only recurses"];
            let ede = Extra::Ede {
                code: EDE_NOT_AUTHORITATIVE,
                text: &text,
            };
            answers::query_error(out, &q, RCODE_REFUSED, ede);
            return self.finish_local(req, &q, decided, out, Outcome::Refused);
        }

        // 4. cache (the arrival time is "now": one clock read fewer)
        if self.cache.is_enabled() {
            let key = Key::new(q.qname, q.qtype, q.qclass, q.dnssec_ok(), q.cd());
            let hit = self.cache.lookup(&key, req.received, |answer, age| {
                answers::forwarded(out, &q, answer, age, req.transport);
            });
            if hit.is_some() {
                return self.finish_local(req, &q, decided, out, Outcome::Cached);
            }
        }

        // 5. upstream: the worker holds the query and calls `resume`.
        Step::Forward(q, decided)
    }

    /// Stages 5 → 6: the upstream stage finished with `held` at `now`.
    pub fn resume(
        &self,
        held: &HeldQuery,
        finished: Finished<'_>,
        now: Instant,
        out: &mut Vec<u8>,
    ) {
        let q = held.query();
        let client = held.client_query();
        let mut stale = false;
        let (rcode, outcome) = match finished {
            Finished::Answered(reply) => {
                if let Some(ttl) = reply.cache_ttl.filter(|_| self.cache.is_enabled()) {
                    let key = Key::new(q.qname, q.qtype, q.qclass, q.dnssec_ok(), q.cd());
                    self.cache.insert(&key, &reply.answer, ttl, now);
                }
                match &held.chase {
                    None => {
                        answers::forwarded(out, &q, &reply.answer, 0, held.transport);
                        (reply.rcode, Outcome::Allowed)
                    }
                    Some(c) => {
                        let rcode = self.chased(out, &q, c, &reply.answer, 0, held.transport);
                        (rcode, Outcome::Blocked)
                    }
                }
            }
            // RFC 8767: an answer that expired within cache.serve_stale
            // beats a SERVFAIL (not for an RPZ chase: its answer is ours).
            Finished::NoAnswer
                if held.chase.is_none()
                    && self
                        .cache
                        .lookup_stale(
                            &Key::new(q.qname, q.qtype, q.qclass, q.dnssec_ok(), q.cd()),
                            now,
                            |answer| answers::stale(out, &q, answer, held.transport),
                        )
                        .is_some() =>
            {
                stale = true;
                let rcode = out.get(3).map_or(0, |b| u16::from(*b) & RCODE_MASK);
                (rcode, Outcome::Cached)
            }
            Finished::NoAnswer => {
                let text: [&[u8]; 1] = [b"no upstream answered"];
                let ede = Extra::Ede {
                    code: EDE_NO_REACHABLE_AUTHORITY,
                    text: &text,
                };
                answers::query_error(out, &client, RCODE_SERVFAIL, ede);
                let rcode = u16::from(RCODE_SERVFAIL);
                (rcode, Outcome::Error)
            }
        };
        self.finish(&QueryRecord {
            client: held.client,
            transport: held.transport,
            name: Some(client.qname),
            qtype: client.qtype,
            decided: held.decided,
            cache: if stale {
                CacheLookup::Stale
            } else {
                self.looked_up()
            },
            rcode,
            outcome,
            received: held.received,
            duration: now.saturating_duration_since(held.received),
        });
    }

    /// An RPZ CNAME's target, answered from the cache or the upstreams,
    /// behind our CNAME for the client. Returns the RCODE sent.
    fn chased(
        &self,
        out: &mut Vec<u8>,
        target_q: &Query<'_>,
        c: &Chased,
        answer: &answers::Upstreamed<'_>,
        age: u32,
        transport: Transport,
    ) -> u16 {
        let client = c.query();
        let mut scratch = Vec::new();
        let bare = Query {
            edns: None,
            ..*target_q
        };
        answers::forwarded(&mut scratch, &bare, answer, age, Transport::Tcp);
        let text: [&[u8]; 1] = [&c.ede_text];
        let ede = Extra::Ede {
            code: EDE_FORGED_ANSWER,
            text: &text,
        };
        if chase::compose(out, &client, &c.target, c.ttl, &scratch, ede) {
            answers::fit(out, client.id, client.question, client.edns, transport);
        } else {
            answers::query_error(out, &client, RCODE_SERVFAIL, Extra::None);
        }
        out.get(3).map_or(0, |b| u16::from(*b) & RCODE_MASK)
    }

    /// An RPZ CNAME's target, asked like any name: the policy first (a
    /// blocked target gets its own block answer, with its own EDE), then
    /// the cache, else upstream on the client's behalf ([`Step::Chase`]).
    #[allow(clippy::too_many_arguments)]
    fn chase<'a>(
        &self,
        req: &Request<'a>,
        q: &Query<'_>,
        decided: Decided,
        target: &[u8],
        ede_text: Vec<u8>,
        policy: &Policy,
        out: &mut Vec<u8>,
    ) -> Step<'a> {
        let mut buf = [0u8; chase::MAX_TARGET_QUESTION];
        let Some(len) = chase::target_question(target, q, &mut buf) else {
            answers::query_error(out, q, RCODE_SERVFAIL, Extra::None);
            return self.finish_local(req, q, decided, out, Outcome::Error);
        };
        let question = &buf[..len];
        let target_q = Query {
            question,
            qname: &question[..target.len()],
            edns: None,
            ..*q
        };
        let chased = Chased::new(q, target, self.style.ttl, ede_text);
        let mut scratch = Vec::new();
        match self.policy.check(policy, &target_q) {
            Verdict::Block { answer, .. } => {
                match answer.action {
                    Action::Local(id) => {
                        // One hop only: a target with local data of its
                        // own is answered with that data, not chased on.
                        answers::local(
                            &mut scratch,
                            &target_q,
                            policy.local(id),
                            &answer,
                            &self.style,
                        );
                    }
                    _ => answers::blocked(&mut scratch, &target_q, &answer, &self.style),
                }
                // The target's own EDE, as its own query would have had.
                let (code, what) = match answer.action {
                    Action::Redirect | Action::Local(_) => (EDE_FORGED_ANSWER, &b"local data"[..]),
                    _ => (EDE_BLOCKED, &b"blocked"[..]),
                };
                let text: [&[u8]; 5] = [
                    what,
                    b": category ",
                    answer.category.as_bytes(),
                    b", list ",
                    answer.list.as_bytes(),
                ];
                let ok = chase::compose(
                    out,
                    q,
                    target,
                    self.style.ttl,
                    &scratch,
                    Extra::Ede { code, text: &text },
                );
                if !ok {
                    answers::query_error(out, q, RCODE_SERVFAIL, Extra::None);
                }
                answers::fit(out, q.id, q.question, q.edns, req.transport);
                return self.finish_local(req, q, decided, out, Outcome::Blocked);
            }
            Verdict::Pass(_) => {}
        }
        if !q.rd() {
            // No recursion wanted: the CNAME alone.
            let ok = chase::compose(
                out,
                q,
                target,
                self.style.ttl,
                &empty_answer(&target_q),
                Extra::None,
            );
            if !ok {
                answers::query_error(out, q, RCODE_SERVFAIL, Extra::None);
            }
            return self.finish_local(req, q, decided, out, Outcome::Blocked);
        }
        if self.cache.is_enabled() {
            let key = Key::new(
                target_q.qname,
                target_q.qtype,
                target_q.qclass,
                q.dnssec_ok(),
                q.cd(),
            );
            let mut rcode = None;
            self.cache.lookup(&key, req.received, |answer, age| {
                rcode = Some(self.chased(out, &target_q, &chased, answer, age, req.transport));
            });
            if rcode.is_some() {
                return self.finish_local(req, q, decided, out, Outcome::Blocked);
            }
        }
        let held = HeldQuery::chasing(
            req,
            &Query {
                edns: q.edns,
                ..target_q
            },
            decided,
            chased,
        );
        Step::Chase(Box::new(held))
    }

    /// Too many queries wait for upstreams already: SERVFAIL at once,
    /// rather than queueing without bound.
    pub fn overloaded(&self, held: &HeldQuery, out: &mut Vec<u8>) {
        let q = held.client_query();
        answers::query_error(out, &q, RCODE_SERVFAIL, Extra::None);
        self.finish(&QueryRecord {
            client: held.client,
            transport: held.transport,
            name: Some(q.qname),
            qtype: q.qtype,
            decided: held.decided,
            cache: self.looked_up(),
            rcode: u16::from(RCODE_SERVFAIL),
            outcome: Outcome::Error,
            received: held.received,
            duration: held.received.elapsed(),
        });
    }

    /// The error answer for a packet stage 1 would not take.
    fn reject<'a>(&self, req: &Request<'a>, r: &Rejection<'_>, out: &mut Vec<u8>) -> Step<'a> {
        let rcode = match r.kind {
            RejectKind::Drop => return Step::Drop,
            RejectKind::FormErr => u16::from(RCODE_FORMERR),
            RejectKind::NotImp => u16::from(RCODE_NOTIMP),
            RejectKind::BadVers => u16::from(EXT_RCODE_BADVERS) << 4,
        };
        let question = r.question.map(|q| q.bytes);
        answers::error(out, r.id, r.flags, question, r.edns, rcode, Extra::None);
        self.finish(&QueryRecord {
            client: req.client,
            transport: req.transport,
            name: r.question.map(|q| q.qname),
            qtype: r.question.map_or(0, |q| q.qtype),
            decided: Decided::NotAsked,
            cache: CacheLookup::NotAsked,
            rcode,
            outcome: Outcome::Error,
            received: req.received,
            duration: req.received.elapsed(),
        });
        Step::Answer
    }

    /// A client outside `access.allow`: REFUSED with EDE 18 when its query
    /// parsed and `refused: refuse`; nothing otherwise (not even FORMERR:
    /// a refused client learns nothing). Counted as `outcome="refused"`.
    fn refused<'a>(
        &self,
        req: &Request<'a>,
        q: Option<&Query<'_>>,
        why: &[u8],
        out: &mut Vec<u8>,
    ) -> Step<'a> {
        let step = match q {
            Some(q) => {
                let text: [&[u8]; 1] = [why];
                let ede = Extra::Ede {
                    code: EDE_PROHIBITED,
                    text: &text,
                };
                answers::query_error(out, q, RCODE_REFUSED, ede);
                Step::Answer
            }
            None => Step::Drop,
        };
        self.finish(&QueryRecord {
            client: req.client,
            transport: req.transport,
            name: q.map(|q| q.qname),
            qtype: q.map_or(0, |q| q.qtype),
            decided: Decided::NotAsked,
            cache: CacheLookup::NotAsked,
            rcode: if q.is_some() {
                u16::from(RCODE_REFUSED)
            } else {
                0
            },
            outcome: Outcome::Refused,
            received: req.received,
            duration: req.received.elapsed(),
        });
        step
    }

    /// Ends a query answered locally; its RCODE is read back from `out`.
    fn finish_local<'a>(
        &self,
        req: &Request<'a>,
        q: &Query<'_>,
        decided: Decided,
        out: &[u8],
        outcome: Outcome,
    ) -> Step<'a> {
        self.finish(&QueryRecord {
            client: req.client,
            transport: req.transport,
            name: Some(q.qname),
            qtype: q.qtype,
            decided,
            cache: if outcome == Outcome::Cached {
                CacheLookup::Hit
            } else {
                CacheLookup::NotAsked
            },
            rcode: out.get(3).map_or(0, |b| u16::from(*b) & RCODE_MASK),
            outcome,
            received: req.received,
            duration: req.received.elapsed(),
        });
        Step::Answer
    }

    /// A query that went upstream missed the cache, if there is one.
    fn looked_up(&self) -> CacheLookup {
        if self.cache.is_enabled() {
            CacheLookup::Miss
        } else {
            CacheLookup::NotAsked
        }
    }

    /// The observation point: every query that gets an answer ends here.
    #[inline]
    fn finish(&self, record: &QueryRecord<'_>) {
        self.observer.query(record);
    }
}

/// An empty NOERROR answer for `q` (no OPT): the target part of a CNAME
/// answered without recursion.
fn empty_answer(q: &Query<'_>) -> Vec<u8> {
    let mut m = Vec::with_capacity(super::wire::HEADER_LEN + q.question.len());
    super::wire::put_header(
        &mut m,
        q.id,
        super::wire::response_flags(q.flags, 0),
        [1, 0, 0, 0],
    );
    m.extend_from_slice(q.question);
    m
}
