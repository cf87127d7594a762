//! What leaves the pipeline: one [`QueryRecord`] per query, at one
//! observation point.
//!
//! The record is built on the stack and borrows the query's name, so
//! observing a query costs no allocation; whoever observes it (metrics
//! today, the audit log and `/stats` later) copies what it keeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::request::Transport;
use crate::policy::{Action, CategoryId, ListId};

/// How a query ended; each query counts exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A policy block, whatever its action.
    Blocked,
    /// Forwarded upstream (and answered, with whatever RCODE it gave).
    Allowed,
    /// Answered from the cache.
    Cached,
    /// Refused by us: a recursion request we do not serve, and later
    /// access control and rate limits.
    Refused,
    /// SERVFAIL, FORMERR, NOTIMP or BADVERS made by the server itself.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Blocked,
        Outcome::Allowed,
        Outcome::Cached,
        Outcome::Refused,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Blocked => "blocked",
            Outcome::Allowed => "allowed",
            Outcome::Cached => "cached",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

/// The rule that decided a name, by index into the policy snapshot that
/// was in service (list and category ids are stable across reloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRef {
    pub list: ListId,
    /// Index of the rule in the snapshot's rule table.
    pub rule: u32,
    /// Labels in the rule's own name: it is the query's last `depth` labels.
    pub depth: u8,
    /// The rule covers only names below its own (`*.name`).
    pub below_only: bool,
}

/// What the policy said about the query's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// The policy was not asked (the packet was not a query we serve).
    NotAsked,
    /// No rule matched.
    Unlisted,
    /// An allow rule was the most specific match.
    Allowed(RuleRef),
    /// A block rule was.
    Blocked {
        rule: RuleRef,
        category: CategoryId,
        action: Action,
    },
    /// Nothing enforcing blocked it, but a monitored list (`action:
    /// monitor`) would have: answered as unlisted, counted and logged.
    Monitored { rule: RuleRef, category: CategoryId },
}

/// What the cache said, if it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLookup {
    NotAsked,
    Hit,
    Miss,
    /// Missed, no upstream answered, and an expired entry was served
    /// (serve-stale).
    Stale,
}

/// One finished query.
#[derive(Debug, Clone, Copy)]
pub struct QueryRecord<'a> {
    pub client: SocketAddr,
    pub transport: Transport,
    /// The question's name in wire form as sent (any case), when it parsed.
    pub name: Option<&'a [u8]>,
    pub qtype: u16,
    pub decided: Decided,
    pub cache: CacheLookup,
    /// The answer's RCODE, extended bits included (BADVERS is 16).
    pub rcode: u16,
    pub outcome: Outcome,
    /// When the query arrived.
    pub received: Instant,
    /// From arrival to the answer being ready.
    pub duration: Duration,
}

/// How one attempt at one upstream went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// It answered (whatever the RCODE).
    Answered,
    Timeout,
    /// A network error or a malformed reply.
    Error,
}

/// One attempt at one upstream server.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamAttempt {
    /// Index of the server in the configured order.
    pub server: usize,
    pub result: AttemptResult,
    pub took: Duration,
}

/// The observation point: everything that watches queries implements this.
/// Called on the query path, so implementations must be cheap and never
/// block (hand work off to a queue when it is more than a counter).
pub trait Observe: Send + Sync {
    fn query(&self, record: &QueryRecord<'_>);
    fn upstream(&self, attempt: &UpstreamAttempt);
    /// A datagram on an upstream socket matched no query sent (another
    /// source, ID or question: late, stray or spoofed) and was dropped.
    fn upstream_mismatched(&self) {}
    /// A query was over its client's `limits.client_qps`.
    fn ratelimited(&self) {}
}

/// Wire-form name as text, lower case, no trailing dot (for logs); the
/// root is `.`.
pub fn name_text(wire: &[u8]) -> String {
    let mut v = Vec::with_capacity(wire.len());
    name_text_into(wire, &mut v);
    if v.is_empty() {
        v.push(b'.');
    }
    // Only ASCII is ever written.
    String::from_utf8(v).unwrap_or_default()
}

/// Appends the wire-form name as text to `out`: lower case, dots between
/// labels, no trailing dot (the root appends nothing), and any byte that
/// is not a printable ASCII character other than `.` and `\` as `\DDD`
/// (RFC 1035 §5.1). Only ASCII is written.
pub fn name_text_into(wire: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let mut p = 0;
    while let Some(&len) = wire.get(p) {
        let len = usize::from(len);
        if len == 0 || p + 1 + len > wire.len() {
            break;
        }
        if out.len() > start {
            out.push(b'.');
        }
        for &b in &wire[p + 1..p + 1 + len] {
            let b = b.to_ascii_lowercase();
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'\\', b'0' + b / 100, b'0' + b / 10 % 10, b'0' + b % 10]);
            }
        }
        p += 1 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_text() {
        assert_eq!(
            name_text(b"\x07US04web\x04zoom\x02us\x00"),
            "us04web.zoom.us"
        );
        assert_eq!(name_text(b"\x00"), ".");
        assert_eq!(name_text(b"\x03a.b\x02c\\\x00"), "a\\046b.c\\092");
        assert_eq!(name_text(b"\x01\xff\x00"), "\\255");
    }
}
