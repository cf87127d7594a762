//! What watches the query path: the observer every [`QueryRecord`] is
//! handed to, fanning out to the metrics, the audit log and `/stats`
//! ([`audit`], which counts into [`stats`] on its own thread), and, for
//! debugging, a log line per query.

pub mod audit;
pub mod clock;
pub mod show;
pub mod stats;

use std::sync::Arc;

use self::audit::AuditLog;
use crate::dns::record::{Decided, Observe, QueryRecord, UpstreamAttempt, name_text};
use crate::metrics::Metrics;

/// The observers of a running server.
pub struct Observer {
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
}

impl Observer {
    pub fn new(metrics: Arc<Metrics>, audit: Arc<AuditLog>) -> Self {
        Self { metrics, audit }
    }
}

impl Observe for Observer {
    #[inline]
    fn query(&self, r: &QueryRecord<'_>) {
        self.metrics.query(r);
        self.audit.query(r);
        // `RUST_LOG=sinkhole::query=debug` logs every query. It formats and
        // writes on the query path, so it is for debugging, not for audit
        // (that log has its own queue and writer). Off, it costs one load
        // of tracing's level filter.
        if tracing::enabled!(target: "sinkhole::query", tracing::Level::DEBUG) {
            log_query(r);
        }
    }

    #[inline]
    fn upstream(&self, a: &UpstreamAttempt) {
        self.metrics.upstream(a);
    }

    fn upstream_mismatched(&self) {
        self.metrics.upstream_mismatched();
    }

    fn ratelimited(&self) {
        self.metrics.ratelimited();
    }
}

#[cold]
fn log_query(r: &QueryRecord<'_>) {
    let name = r.name.map(name_text).unwrap_or_default();
    let (decision, list, rule) = match r.decided {
        Decided::NotAsked => ("none", None, None),
        Decided::Unlisted => ("unlisted", None, None),
        Decided::Allowed(rule) => ("allowed", Some(rule.list.0), Some(rule.rule)),
        Decided::Blocked { rule, .. } => ("blocked", Some(rule.list.0), Some(rule.rule)),
        Decided::Monitored { rule, .. } => ("monitored", Some(rule.list.0), Some(rule.rule)),
    };
    tracing::debug!(
        target: "sinkhole::query",
        client = %r.client,
        transport = r.transport.as_str(),
        name = %name,
        qtype = r.qtype,
        decision,
        list,
        rule,
        rcode = r.rcode,
        outcome = r.outcome.as_str(),
        micros = r.duration.as_micros() as u64,
        "query"
    );
}
