//! The audit log (`log.queries`) and the counting behind `/stats`, done off
//! the query path.
//!
//! On the query path a selected record is copied into a fixed-size
//! [`Event`] and offered to a bounded queue: no formatting, no allocation,
//! no system call, and never a wait. A full queue drops the event and
//! counts it (`sinkhole_log_dropped_total`). One writer thread takes what
//! is queued every 10 ms, counts blocked queries into [`Stats`], formats
//! the JSON lines by hand into one buffer and writes them to stdout in one
//! call.
//!
//! A line's keys (SPEC "Audit log"): `ts` (RFC 3339, UTC), `event`
//! (`blocked`, `query`, or `blockpage` for the block page), `client` (per
//! `log.client`; absent with `none`), `name` (lower case, no trailing dot),
//! `qtype`; for `blocked`: `action`, `category`, `list`, `rule`; for
//! `query`: `outcome`, `rcode`. Timestamps come from the query's arrival
//! `Instant`, turned into wall time by the writer, so the query path never
//! reads the wall clock.

use std::io::Write;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;

use super::clock::Utc;
use super::show::Shower;
use super::stats::Stats;
use crate::config::{LogQueries, LogSettings};
use crate::dns::mnemonic;
use crate::dns::record::{Decided, Outcome, QueryRecord, name_text_into};
use crate::dns::wire::MAX_NAME_LEN;
use crate::policy::Action;

/// Events the queue holds before it drops (about 4.5 MiB of them).
pub const QUEUE: usize = 16_384;
/// How often the writer looks at the queue when it is not busy: at
/// 100,000 events a second a tick's worth fills a sixteenth of the queue.
const TICK: Duration = Duration::from_millis(10);
/// Bytes of lines the writer gathers before one write.
const FLUSH_AT: usize = 256 * 1024;

/// One query, as the writer needs it.
pub struct QueryEvent {
    received: Instant,
    client: IpAddr,
    name: [u8; MAX_NAME_LEN],
    name_len: u8,
    qtype: u16,
    rcode: u16,
    outcome: Outcome,
    decided: Decided,
    /// Write a line (else only count it for `/stats`).
    line: bool,
}

/// What goes through the queue.
// Queries are by far the most events, and are held inline: boxing them
// would allocate on the query path.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Query(QueryEvent),
    BlockPage {
        at: SystemTime,
        reference: String,
        name: String,
        client: IpAddr,
    },
    /// Write what came before, then end.
    Stop,
}

/// The names the writer spells ids with (both fixed by the configuration).
pub struct Names {
    /// By `ListId`.
    pub lists: Vec<String>,
    /// By `CategoryId`.
    pub categories: Vec<String>,
}

/// The query path's end of the audit log.
pub struct AuditLog {
    tx: SyncSender<Event>,
    queries: LogQueries,
    dropped: Counter,
}

impl AuditLog {
    /// Starts the writer thread. `dropped` counts what the queue refused.
    pub fn start(
        settings: &LogSettings,
        names: Names,
        stats: Arc<Mutex<Stats>>,
        dropped: Counter,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(QUEUE);
        let writer = Writer {
            queries: settings.queries,
            shower: Shower::new(settings.client.clone()),
            names,
            stats,
            base: (Instant::now(), SystemTime::now()),
            name: Vec::with_capacity(256),
            line: String::with_capacity(512),
            out: Vec::with_capacity(256 * 1024),
        };
        let handle = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer.run(rx))?;
        Ok((
            Self {
                tx,
                queries: settings.queries,
                dropped,
            },
            handle,
        ))
    }

    /// Offers a finished query to the writer if it is blocked (counted
    /// for `/stats`, and logged unless `log.queries: none`) or if every
    /// query is logged.
    #[inline]
    pub fn query(&self, r: &QueryRecord<'_>) {
        let blocked = matches!(r.decided, Decided::Blocked { .. });
        // A monitored match is logged as a blocked one would be: that is
        // what the IG team's trial is for.
        let monitored = matches!(r.decided, Decided::Monitored { .. });
        let line = match self.queries {
            LogQueries::All => true,
            LogQueries::Blocked => blocked || monitored,
            LogQueries::None => false,
        };
        if line || blocked {
            self.offer(r, line);
        }
    }

    #[cold]
    fn offer(&self, r: &QueryRecord<'_>, line: bool) {
        let mut e = QueryEvent {
            received: r.received,
            client: r.client.ip(),
            name: [0; MAX_NAME_LEN],
            name_len: 0,
            qtype: r.qtype,
            rcode: r.rcode,
            outcome: r.outcome,
            decided: r.decided,
            line,
        };
        if let Some(n) = r.name {
            let n = &n[..n.len().min(MAX_NAME_LEN)];
            e.name[..n.len()].copy_from_slice(n);
            e.name_len = n.len() as u8;
        }
        self.send(Event::Query(e));
    }

    /// Logs a block page shown (no line with `log.queries: none`).
    pub fn blockpage(&self, reference: &str, name: &str, client: IpAddr) {
        if self.queries == LogQueries::None {
            return;
        }
        self.send(Event::BlockPage {
            at: SystemTime::now(),
            reference: reference.to_owned(),
            name: name.to_owned(),
            client,
        });
    }

    /// Asks the writer to write what it has and end (at shutdown, after
    /// the last query); waits for it up to `wait`.
    pub fn stop(&self, writer: JoinHandle<()>, wait: Duration) {
        // Blocking send: the queue may be full; the writer is draining it.
        if self.tx.send(Event::Stop).is_err() {
            return;
        }
        let deadline = Instant::now() + wait;
        while !writer.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn send(&self, e: Event) {
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

struct Writer {
    queries: LogQueries,
    shower: Shower,
    names: Names,
    stats: Arc<Mutex<Stats>>,
    /// An `Instant` and the wall time it was, to date events by.
    base: (Instant, SystemTime),
    /// Buffers reused from event to event.
    name: Vec<u8>,
    line: String,
    out: Vec<u8>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Event>) {
        let mut stdout = std::io::stdout();
        let stats = self.stats.clone();
        loop {
            // Take what is queued, then sleep a tick. The writer never
            // blocks on the queue, so a query's `try_send` never has a
            // sleeping receiver to wake: no system call on the query path.
            self.base = (Instant::now(), SystemTime::now());
            let mut guard = stats.lock().ok();
            let mut taken = 0;
            let mut stop = false;
            while taken < QUEUE && !stop {
                match rx.try_recv() {
                    Ok(e) => {
                        stop = self.take(e, guard.as_deref_mut());
                        taken += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => stop = true,
                }
                if self.out.len() >= FLUSH_AT {
                    write_out(&mut stdout, &mut self.out);
                }
            }
            drop(guard);
            write_out(&mut stdout, &mut self.out);
            if stop {
                return;
            }
            if taken < QUEUE / 4 {
                std::thread::sleep(TICK);
            }
        }
    }

    fn wall(&self, at: Instant) -> SystemTime {
        let (base_instant, base_wall) = self.base;
        base_wall - base_instant.saturating_duration_since(at)
    }

    /// Handles one event; true when it was the last.
    fn take(&mut self, e: Event, stats: Option<&mut Stats>) -> bool {
        match e {
            Event::Stop => return true,
            Event::Query(q) => self.query(&q, stats),
            Event::BlockPage {
                at,
                reference,
                name,
                client,
            } => {
                let client = self.shower.show(client);
                let l = &mut self.line;
                l.clear();
                l.push_str("{\"ts\":\"");
                l.push_str(&Utc::from(at).rfc3339());
                l.push_str("\",\"event\":\"blockpage\",\"reference\":");
                json_str(l, &reference);
                l.push_str(",\"name\":");
                json_str(l, &name);
                if let Some(c) = client {
                    l.push_str(",\"client\":");
                    json_str(l, c);
                }
                l.push_str("}\n");
                self.out.extend_from_slice(l.as_bytes());
            }
        }
        false
    }

    fn query(&mut self, q: &QueryEvent, stats: Option<&mut Stats>) {
        let at = self.wall(q.received);
        self.name.clear();
        name_text_into(&q.name[..usize::from(q.name_len)], &mut self.name);
        // name_text_into writes only ASCII.
        let name = std::str::from_utf8(&self.name).unwrap_or_default();
        let client = self.shower.show(q.client);
        if let (Decided::Blocked { category, .. }, Some(stats)) = (q.decided, stats) {
            let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            stats.count(secs, name, usize::from(category.0), client);
        }
        if !q.line || self.queries == LogQueries::None {
            return;
        }
        let l = &mut self.line;
        l.clear();
        l.push_str("{\"ts\":\"");
        l.push_str(&Utc::from(at).rfc3339());
        l.push_str("\",\"event\":");
        l.push_str(match q.decided {
            Decided::Blocked { .. } => "\"blocked\"",
            Decided::Monitored { .. } => "\"monitored\"",
            _ => "\"query\"",
        });
        if let Some(c) = client {
            l.push_str(",\"client\":");
            json_str(l, c);
        }
        l.push_str(",\"name\":");
        json_str(l, name);
        l.push_str(",\"qtype\":\"");
        l.push_str(&mnemonic::qtype(q.qtype));
        l.push('"');
        let matched = match q.decided {
            Decided::Blocked {
                rule,
                category,
                action,
            } => Some((rule, category, action)),
            Decided::Monitored { rule, category } => Some((rule, category, Action::Monitor)),
            _ => None,
        };
        if let Some((rule, category, action)) = matched {
            l.push_str(",\"action\":\"");
            l.push_str(action.as_str());
            l.push_str("\",\"category\":");
            json_str(l, name_of(&self.names.categories, usize::from(category.0)));
            l.push_str(",\"list\":");
            json_str(l, name_of(&self.names.lists, usize::from(rule.list.0)));
            l.push_str(",\"rule\":");
            let suffix = suffix(name, usize::from(rule.depth));
            if rule.below_only {
                json_str(l, &format!("*.{suffix}"));
            } else {
                json_str(l, suffix);
            }
        }
        l.push_str(",\"outcome\":\"");
        l.push_str(q.outcome.as_str());
        l.push_str("\",\"rcode\":\"");
        l.push_str(&mnemonic::rcode(q.rcode));
        l.push_str("\"}\n");
        self.out.extend_from_slice(l.as_bytes());
    }
}

/// Writes the gathered lines in one call. A write error (stdout closed)
/// loses lines, never queries.
fn write_out(stdout: &mut std::io::Stdout, out: &mut Vec<u8>) {
    if !out.is_empty() {
        let _ = stdout.write_all(out).and_then(|()| stdout.flush());
        out.clear();
    }
}

fn name_of(names: &[String], i: usize) -> &str {
    names.get(i).map_or("", String::as_str)
}

/// The last `depth` labels of a dotted name: the rule that matched it.
fn suffix(name: &str, depth: usize) -> &str {
    let skip = name.split('.').count().saturating_sub(depth);
    let start: usize = name.split('.').take(skip).map(|l| l.len() + 1).sum();
    &name[start.min(name.len())..]
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_name_the_rule() {
        assert_eq!(suffix("us04web.zoom.us", 2), "zoom.us");
        assert_eq!(suffix("zoom.us", 2), "zoom.us");
        assert_eq!(suffix("a.b.c", 1), "c");
        assert_eq!(suffix("a.b.c", 9), "a.b.c");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd");
        assert_eq!(s, r#""a\"b\\c\u000ad""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd");
    }
}
