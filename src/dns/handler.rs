//! The query pipeline: parse → policy → (synthesised answer | cache →
//! upstream) → response.
//!
//! It is split where the network is: [`Resolver::answer_local`] does
//! everything that needs no I/O (and allocates nothing), and reports when the
//! query must go upstream; [`Resolver::answer_upstream`] does that part. The
//! listeners run the first inline and spawn the second, so one slow upstream
//! never holds up blocked or cached answers.

use std::sync::Arc;
use std::time::Instant;

use super::answers::{self, BlockStyle, Blocked, EDE_NO_REACHABLE_AUTHORITY};
use super::cache::{self, Cache, Lookup};
use super::upstream::Upstreams;
use super::wire::{RCODE_FORMERR, RCODE_NOTIMP, RCODE_SERVFAIL, Reject, parse_query};
use crate::metrics::{Metrics, Outcome};
use crate::policy::Decision;
use crate::reload::Reloader;

/// How the query arrived: UDP answers are size-limited, TCP ones are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What the local stage decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The answer is in the output buffer.
    Reply,
    /// Send nothing.
    Drop,
    /// Needs an upstream: call [`Resolver::answer_upstream`].
    Forward,
}

pub struct Resolver {
    lists: Arc<Reloader>,
    cache: Cache,
    upstreams: Upstreams,
    style: BlockStyle,
    metrics: Arc<Metrics>,
}

impl Resolver {
    pub fn new(
        lists: Arc<Reloader>,
        cache: Cache,
        upstreams: Upstreams,
        style: BlockStyle,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            lists,
            cache,
            upstreams,
            style,
            metrics,
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Answers from the policy or the cache if it can.
    pub fn answer_local(
        &self,
        packet: &[u8],
        out: &mut Vec<u8>,
        transport: Transport,
        started: Instant,
    ) -> Step {
        let q = match parse_query(packet) {
            Ok(q) => q,
            Err(Reject::Drop) => return Step::Drop,
            Err(Reject::FormErr { id, flags }) => {
                answers::header_only(out, id, flags, RCODE_FORMERR, false);
                return self.done(Outcome::Error, started);
            }
            Err(Reject::NotImp { id, flags }) => {
                answers::header_only(out, id, flags, RCODE_NOTIMP, false);
                return self.done(Outcome::Error, started);
            }
            Err(Reject::BadVers { id, flags }) => {
                answers::header_only(out, id, flags, 0, true);
                return self.done(Outcome::Error, started);
            }
        };

        let snapshot = self.lists.current().load();
        let labels = q.labels();
        if let Decision::Block { hit, category, .. } = snapshot.policy.decide(labels.from_top()) {
            let blocked = Blocked {
                action: category.action,
                rule_depth: hit.depth,
                category: &category.name,
                list: &hit.list.name,
            };
            answers::blocked(out, &q, &blocked, &self.style);
            // A long name and a long category and list name in the EDE
            // text can outgrow a 512-byte client.
            if transport == Transport::Udp && out.len() > answers::udp_limit(&q) {
                answers::truncate(out, &q);
            }
            snapshot.blocked[usize::from(hit.list_id.0)].inc();
            return self.done(Outcome::Blocked, started);
        }

        // The arrival time doubles as "now" for TTL countdown: one clock
        // read fewer per query, and a microsecond is nothing to a TTL.
        match self
            .cache
            .lookup(&q, out, transport == Transport::Udp, started)
        {
            Lookup::Hit => self.done(Outcome::Cached, started),
            Lookup::Miss => Step::Forward,
        }
    }

    /// Forwards a query the local stage could not answer; always leaves an
    /// answer in `out` (SERVFAIL when no upstream helps).
    pub async fn answer_upstream(
        &self,
        packet: &[u8],
        out: &mut Vec<u8>,
        transport: Transport,
        started: Instant,
    ) -> Step {
        // The local stage already accepted this packet; parsing again is
        // cheaper than carrying borrowed parts across the await.
        let Ok(q) = parse_query(packet) else {
            return Step::Drop;
        };
        let reply = match self.upstreams.forward(&q, &self.metrics).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(error = %e, "upstream failure");
                answers::error(
                    out,
                    &q,
                    RCODE_SERVFAIL,
                    Some((EDE_NO_REACHABLE_AUTHORITY, "no upstream answered")),
                );
                return self.done(Outcome::Error, started);
            }
        };
        let Some(analysis) = cache::analyse(&reply, q.question.len()) else {
            tracing::debug!("malformed upstream reply");
            answers::error(out, &q, RCODE_SERVFAIL, None);
            return self.done(Outcome::Error, started);
        };
        let now = Instant::now();
        self.cache.insert(&q, &analysis, now);
        cache::render(
            out,
            &q,
            &analysis.without_opt,
            &analysis.ttl_offsets,
            0,
            transport == Transport::Udp,
        );
        self.done(Outcome::Allowed, started)
    }

    fn done(&self, outcome: Outcome, started: Instant) -> Step {
        self.metrics.query_done(outcome, started.elapsed());
        Step::Reply
    }
}
