//! The chain every query goes through, composed in one place.
//!
//! ```text
//!  Request ──► 1 parse ──► 2 access ──► 3 policy ──► 4 cache ──► 5 upstream ──► 6 response
//!   (bytes,      parse.rs    access.rs    policy.rs    cache.rs    upstream/       answers.rs
//!    client,        │                        │            │            │
//!    transport,     └─ error answer          └─ blocked   └─ cached    └─ resumes in
//!    time)                                                                [`Pipeline::resume`]
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
//! Where the coming stages plug in: access control and rate limits in
//! stage 2; per-network groups in stage 3 (the client is in the request);
//! serve-stale in stage 5's "no answer" (the cache keeps expired entries a
//! while); CNAME inspection between 5 and 6 (the validated reply is walked
//! against the policy before it is cached); DoT/DoH upstreams in stage 5's
//! transports.

use std::sync::Arc;
use std::time::Instant;

use super::access::{Access, Admission};
use super::answers::{self, BlockStyle, EDE_NO_REACHABLE_AUTHORITY, EDE_NOT_AUTHORITATIVE, Extra};
use super::cache::{Cache, Key};
use super::parse::{self, Query, RejectKind, Rejection};
use super::policy::{PolicyStage, Verdict};
use super::record::{CacheLookup, Decided, Observe, Outcome, QueryRecord};
use super::request::Request;
use super::upstream::{Finished, HeldQuery};
use super::wire::{
    EXT_RCODE_BADVERS, RCODE_FORMERR, RCODE_MASK, RCODE_NOTIMP, RCODE_REFUSED, RCODE_SERVFAIL,
};
use crate::policy::Live;

/// What [`Pipeline::begin`] did with a request.
#[derive(Debug)]
pub enum Step<'a> {
    /// The answer is in the output buffer.
    Answer,
    /// Send nothing (not a query at all).
    Drop,
    /// Ask upstream: the parsed query, and what the policy said of it.
    Forward(Query<'a>, Decided),
}

/// The stages, shared by every listener and worker.
pub struct Pipeline {
    access: Access,
    policy: PolicyStage,
    cache: Cache,
    style: BlockStyle,
    observer: Arc<dyn Observe>,
}

impl Pipeline {
    pub fn new(
        live: Arc<Live>,
        cache: Cache,
        style: BlockStyle,
        observer: Arc<dyn Observe>,
    ) -> Self {
        Self {
            access: Access,
            policy: PolicyStage::new(live),
            cache,
            style,
            observer,
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Stages 1–4: answers what needs no upstream into `out`.
    pub fn begin<'a>(&self, req: &Request<'a>, out: &mut Vec<u8>) -> Step<'a> {
        // 1. parse
        let q = match parse::parse(req.packet) {
            Ok(q) => q,
            Err(rejection) => return self.reject(req, &rejection, out),
        };

        // 2. access
        match self.access.check(req) {
            Admission::Admit => {}
        }

        // 3. policy
        let snapshot = self.policy.snapshot();
        let decided = match self.policy.check(&snapshot, &q) {
            Verdict::Block { decided, answer } => {
                answers::blocked(out, &q, &answer, &self.style);
                // A long name, category and list in the EDE text can
                // outgrow a 512-byte client.
                answers::fit(out, q.id, q.question, q.edns, req.transport);
                return self.finish_local(req, &q, decided, out, Outcome::Blocked);
            }
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
        let (rcode, outcome) = match finished {
            Finished::Answered(reply) => {
                if let Some(ttl) = reply.cache_ttl.filter(|_| self.cache.is_enabled()) {
                    let key = Key::new(q.qname, q.qtype, q.qclass, q.dnssec_ok(), q.cd());
                    self.cache.insert(&key, &reply.answer, ttl, now);
                }
                answers::forwarded(out, &q, &reply.answer, 0, held.transport);
                (reply.rcode, Outcome::Allowed)
            }
            Finished::NoAnswer => {
                let text: [&[u8]; 1] = [b"no upstream answered"];
                let ede = Extra::Ede {
                    code: EDE_NO_REACHABLE_AUTHORITY,
                    text: &text,
                };
                answers::query_error(out, &q, RCODE_SERVFAIL, ede);
                let rcode = u16::from(RCODE_SERVFAIL);
                (rcode, Outcome::Error)
            }
        };
        self.finish(&QueryRecord {
            client: held.client,
            transport: held.transport,
            name: Some(q.qname),
            qtype: q.qtype,
            decided: held.decided,
            cache: self.looked_up(),
            rcode,
            outcome,
            received: held.received,
            duration: now.saturating_duration_since(held.received),
        });
    }

    /// Too many queries wait for upstreams already: SERVFAIL at once,
    /// rather than queueing without bound.
    pub fn overloaded(&self, held: &HeldQuery, out: &mut Vec<u8>) {
        let q = held.query();
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
