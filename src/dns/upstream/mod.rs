//! Stage 5, upstream: asks the configured servers, in failover order, and
//! hands back a validated reply or says that none came.
//!
//! Each worker has its own [`Upstream`]: its socket pool ([`pool`]), its
//! table of waiting queries ([`inflight`]), its buffers. A forwarded query
//! is held as a [`HeldQuery`], a copy of the parts of the client's packet
//! its answer needs, so the packet is parsed once. Queries leave in
//! batches (`sendmmsg`, all of one turn's on one pool socket) and replies
//! are read in batches; the worker's event loop drives it all, so no task
//! and no lock stand between a reply and its answer.
//!
//! An attempt ends in one of three ways:
//! - a reply that [`reply::matches`] the query (source address and port,
//!   ID, question) and [`reply::validate`]s: NOERROR and NXDOMAIN are
//!   final; any other RCODE moves on to the next server, and is kept to be
//!   relayed if no later server answers better; a truncated one is asked
//!   again over TCP of the same server;
//! - a malformed reply (counted as an error) or a timeout: the next server;
//! - anything that does not match is ignored and the query keeps waiting.
//!
//! When the servers run out, the query finishes with the last error answer
//! kept, or with none (the pipeline then answers SERVFAIL with EDE 22).

pub mod health;
pub mod inflight;
pub mod loops;
pub mod pool;
pub mod reply;
pub mod tcp;

use health::Health;
use loops::LoopGuard;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use self::inflight::{Attempt, Inflight, Waiting};
use self::pool::Pool;
use self::reply::{Rejected, Validated, matches, validate};
use super::answers::{EDNS_PAYLOAD, Upstreamed};
use super::parse::Query;
use super::record::{AttemptResult, Decided, Observe, UpstreamAttempt};
use super::request::{Local, Request, Transport};
use super::sys::mmsg::{BATCH, RecvBatch, SendBatch, Sent};
use super::sys::poll::Poll;
use super::wire::{
    Edns, FLAG_AD, FLAG_CD, FLAG_RD, HEADER_LEN, MAX_QUESTION_LEN, put_header, put_opt, read_u16,
};

/// Largest UDP reply read. Our queries advertise [`EDNS_PAYLOAD`], so a
/// conforming reply is smaller; a bigger one is cut and fails validation.
const MAX_UDP_REPLY: usize = 4096;

/// The configured servers, shared by every worker.
#[derive(Debug)]
pub struct Servers {
    /// In failover order.
    pub addrs: Vec<SocketAddr>,
    /// Per attempt.
    pub timeout: Duration,
    /// Which servers are down, by index: shared by every worker, so one
    /// worker's timeout spares the others the wait.
    pub health: Health,
    /// Which servers send our own queries back to us (shared with the
    /// pipeline, which sees the probes arrive).
    pub loops: Arc<LoopGuard>,
}

impl Servers {
    /// What `sinkhole_upstream_up` shows for server `i`: 0 while it is
    /// down (from a failed attempt until it answers a query or the probe)
    /// and while it sends our queries back to us.
    pub fn in_service(&self, i: usize) -> bool {
        self.health.is_up(i) && !self.loops.is_looped(i)
    }

    pub fn new(addrs: Vec<SocketAddr>, timeout: Duration) -> Self {
        let health = Health::new(&addrs);
        let loops = Arc::new(LoopGuard::new(&addrs));
        Self {
            addrs,
            timeout,
            health,
            loops,
        }
    }

    /// May a query be sent to `server`? Not when it loops back to us.
    #[inline]
    fn usable(&self, server: usize) -> bool {
        !self.loops.is_looped(server)
    }

    /// The first server a new query tries: the first that is up, in
    /// order; when every one is down, the first that does not loop (a real
    /// query doubles as a probe rather than no query getting an answer);
    /// `addrs.len()` when every one loops.
    fn first(&self) -> usize {
        (0..self.addrs.len())
            .find(|&i| self.health.is_up(i) && self.usable(i))
            .or_else(|| (0..self.addrs.len()).find(|&i| self.usable(i)))
            .unwrap_or(self.addrs.len())
    }

    /// The server after `current` for a query that failed there: the next
    /// that is up, or, when all are down, simply the next; never one that
    /// loops.
    fn after(&self, current: usize) -> usize {
        let all_down = (0..self.addrs.len()).all(|i| !self.health.is_up(i));
        (current + 1..self.addrs.len())
            .find(|&i| (all_down || self.health.is_up(i)) && self.usable(i))
            .unwrap_or(self.addrs.len())
    }
}

/// A forwarded query, held while it waits: the parts of the client's
/// packet its answer needs, and who asked.
#[derive(Debug, Clone)]
pub struct HeldQuery {
    pub id: u16,
    pub flags: u16,
    pub edns: Option<Edns>,
    question: [u8; MAX_QUESTION_LEN],
    question_len: u16,
    qname_len: u16,
    pub qtype: u16,
    pub qclass: u16,
    pub client: SocketAddr,
    pub local: Option<Local>,
    pub transport: Transport,
    pub received: Instant,
    pub decided: Decided,
    /// Set when this query is for an RPZ CNAME's target on a client's
    /// behalf: what the client asked, to answer it (rare; boxed so the
    /// common query stays small).
    pub chase: Option<Box<Chased>>,
}

/// The client's side of a chased query: its question and how to answer it
/// (see `dns::chase`).
#[derive(Debug, Clone)]
pub struct Chased {
    id: u16,
    flags: u16,
    edns: Option<Edns>,
    question: Box<[u8]>,
    qname_len: u16,
    qtype: u16,
    qclass: u16,
    /// Our CNAME's target (wire form) and TTL.
    pub target: Box<[u8]>,
    pub ttl: u32,
    /// The EDE text of the local data ("local data: category …, list …").
    pub ede_text: Box<[u8]>,
}

impl Chased {
    pub fn new(client: &Query<'_>, target: &[u8], ttl: u32, ede_text: Vec<u8>) -> Self {
        Self {
            id: client.id,
            flags: client.flags,
            edns: client.edns,
            question: client.question.into(),
            qname_len: client.qname.len() as u16,
            qtype: client.qtype,
            qclass: client.qclass,
            target: target.into(),
            ttl,
            ede_text: ede_text.into(),
        }
    }

    /// The client's query.
    pub fn query(&self) -> Query<'_> {
        Query {
            id: self.id,
            flags: self.flags,
            question: &self.question,
            qname: &self.question[..usize::from(self.qname_len).min(self.question.len())],
            qtype: self.qtype,
            qclass: self.qclass,
            edns: self.edns,
        }
    }
}

impl HeldQuery {
    pub fn new(req: &Request<'_>, q: &Query<'_>, decided: Decided) -> Self {
        let mut question = [0u8; MAX_QUESTION_LEN];
        // The parser bounds a question to MAX_QUESTION_LEN bytes.
        let len = q.question.len().min(MAX_QUESTION_LEN);
        question[..len].copy_from_slice(&q.question[..len]);
        Self {
            id: q.id,
            flags: q.flags,
            edns: q.edns,
            question,
            question_len: len as u16,
            qname_len: q.qname.len().min(len) as u16,
            qtype: q.qtype,
            qclass: q.qclass,
            client: req.client,
            local: req.local,
            transport: req.transport,
            received: req.received,
            decided,
            chase: None,
        }
    }

    /// A query for `target_q` (an RPZ CNAME's target) on behalf of the
    /// client in `chased`.
    pub fn chasing(
        req: &Request<'_>,
        target_q: &Query<'_>,
        decided: Decided,
        chased: Chased,
    ) -> Self {
        let mut held = Self::new(req, target_q, decided);
        held.chase = Some(Box::new(chased));
        held
    }

    /// The query as the client asked it (for its answer and its record).
    pub fn client_query(&self) -> Query<'_> {
        match &self.chase {
            Some(c) => c.query(),
            None => self.query(),
        }
    }

    /// The held query, seen as a parsed one.
    pub fn query(&self) -> Query<'_> {
        let question = &self.question[..usize::from(self.question_len)];
        Query {
            id: self.id,
            flags: self.flags,
            question,
            qname: &question[..usize::from(self.qname_len)],
            qtype: self.qtype,
            qclass: self.qclass,
            edns: self.edns,
        }
    }

    /// Our own query for it: a random ID (set per attempt), RD, CD as the
    /// client set it, AD always (so the upstream tells us its verdict and
    /// every client that asks for AD can get it), EDNS with the client's DO.
    fn write_query(&self, id: u16, out: &mut Vec<u8>) {
        let q = self.query();
        out.clear();
        let flags = FLAG_RD | FLAG_AD | (q.flags & FLAG_CD);
        put_header(out, id, flags, [1, 0, 0, 1]);
        out.extend_from_slice(q.question);
        put_opt(out, EDNS_PAYLOAD, 0, q.dnssec_ok(), &[]);
    }
}

/// Where a finished query's answer goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// Out of the worker's client socket `socket`.
    Udp { socket: u16 },
    /// To the TCP connection waiting for it.
    Tcp(oneshot::Sender<Vec<u8>>),
}

/// A copy of an error answer, kept in case no later server answers.
#[derive(Debug)]
pub struct Kept {
    msg: Vec<u8>,
    ttl_offsets: Vec<u8>,
    ede: Vec<u8>,
    ad: bool,
    rcode: u16,
}

/// A reply the pipeline can answer with.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    pub answer: Upstreamed<'a>,
    /// With its extended bits.
    pub rcode: u16,
    /// How long it may be cached; `None` when not at all.
    pub cache_ttl: Option<u32>,
}

/// How a held query ended.
#[derive(Debug, Clone, Copy)]
pub enum Finished<'a> {
    Answered(Reply<'a>),
    /// No server answered at all.
    NoAnswer,
}

/// A TCP retry's outcome, posted back to the worker.
#[derive(Debug)]
pub struct TcpDone {
    entry: u32,
    generation: u32,
    result: io::Result<Vec<u8>>,
}

fn view(v: &Validated) -> Reply<'_> {
    Reply {
        answer: Upstreamed {
            msg: &v.msg,
            ttl_offsets: &v.ttl_offsets,
            ad: v.ad,
            ede: &v.ede,
        },
        rcode: v.rcode,
        cache_ttl: v.cache_ttl,
    }
}

fn kept_view(k: &Kept) -> Reply<'_> {
    Reply {
        answer: Upstreamed {
            msg: &k.msg,
            ttl_offsets: &k.ttl_offsets,
            ad: k.ad,
            ede: &k.ede,
        },
        rcode: k.rcode,
        cache_ttl: None,
    }
}

/// Hands a finished query's answer to it and to every follower.
fn finish(
    w: Waiting,
    finished: Finished<'_>,
    deliver: &mut impl FnMut(&HeldQuery, ReplyTo, Finished<'_>),
) {
    let Waiting {
        held,
        reply_to,
        followers,
        ..
    } = w;
    deliver(&held, reply_to, finished);
    for (held, reply_to) in followers {
        deliver(&held, reply_to, finished);
    }
}

/// One worker's upstream stage.
pub struct Upstream {
    servers: Arc<Servers>,
    pool: Pool,
    waiting: Inflight,
    /// Entries whose next attempt goes out at the end of this turn.
    queue: Vec<u32>,
    send: [SendBatch; 2],
    recv: RecvBatch,
    scratch: Validated,
    expired: Vec<u32>,
    /// No UDP attempt times out before this (it may be early: then a scan
    /// finds nothing and sets it again).
    earliest: Option<Instant>,
    tcp_tx: mpsc::UnboundedSender<TcpDone>,
    observer: Arc<dyn Observe>,
}

impl Upstream {
    /// Opens the pool (`sockets` per address family in use) in `poll`
    /// under tokens from `token_base`; at most `capacity` queries wait at
    /// once. TCP retries report on the returned channel.
    pub fn new(
        servers: Arc<Servers>,
        poll: &Poll,
        token_base: u64,
        sockets: usize,
        capacity: usize,
        observer: Arc<dyn Observe>,
    ) -> io::Result<(Self, mpsc::UnboundedReceiver<TcpDone>)> {
        let v4 = servers.addrs.iter().any(SocketAddr::is_ipv4);
        let v6 = servers.addrs.iter().any(SocketAddr::is_ipv6);
        let pool = Pool::new(poll, token_base, v4, v6, sockets)?;
        let (tcp_tx, tcp_rx) = mpsc::unbounded_channel();
        Ok((
            Self {
                servers,
                pool,
                waiting: Inflight::new(capacity),
                queue: Vec::with_capacity(BATCH),
                send: [SendBatch::new(BATCH), SendBatch::new(BATCH)],
                recv: RecvBatch::new(MAX_UDP_REPLY, false),
                scratch: Validated::default(),
                expired: Vec::new(),
                earliest: None,
                tcp_tx,
                observer,
            },
            tcp_rx,
        ))
    }

    /// Is `token` one of this stage's sockets?
    pub fn owns(&self, token: u64) -> Option<u16> {
        self.pool.slot_of(token)
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// When the stage next needs [`Upstream::expire`] called.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.earliest
    }

    /// May another query wait? When not (the table is full, or every
    /// server loops back to us), the caller answers SERVFAIL at once
    /// rather than queue without bound.
    pub fn has_room(&self) -> bool {
        self.waiting.has_room() && !self.servers.loops.all_looped()
    }

    /// Takes a query to forward (there must be room); it goes out at the
    /// next [`Upstream::flush`].
    pub fn submit(&mut self, held: HeldQuery, reply_to: ReplyTo, now: Instant) {
        // An RPZ chase answers another question than its own: not shared.
        let question_key = match held.chase {
            None => Some(self.waiting.question_key(&held)),
            Some(_) => None,
        };
        if let Some(index) = question_key.and_then(|k| self.waiting.leader_for(k, &held)) {
            self.waiting.follow(index, held, reply_to);
            return;
        }
        let w = Waiting {
            held,
            reply_to,
            server: self.servers.first(),
            attempt: Attempt::Queued,
            sent: now,
            deadline: now,
            last: None,
            followers: Vec::new(),
            question_key,
        };
        match self.waiting.insert(w) {
            Some(index) => self.queue.push(index),
            None => debug_assert!(false, "submit without room"),
        }
    }

    /// Sends every queued attempt: each family's on one pool socket picked
    /// at random for this batch.
    pub fn flush(&mut self, now: Instant) {
        if self.queue.is_empty() {
            return;
        }
        let mut slots: [Option<u16>; 2] = [None, None];
        let timeout = self.servers.timeout;
        for qi in 0..self.queue.len() {
            let index = self.queue[qi];
            let Some(w) = self.waiting.get(index) else {
                continue;
            };
            let server = self.servers.addrs[w.server];
            let family = usize::from(server.is_ipv6());
            let slot = match slots[family] {
                Some(s) => s,
                None => {
                    let Some(s) = self.pool.pick(family == 1) else {
                        continue;
                    };
                    slots[family] = Some(s);
                    s
                }
            };
            if self.send[family].is_full() {
                self.send[family].send(self.pool.fd(slot));
            }
            // A fresh random ID not in use on this socket.
            let mut id = rand::random::<u16>();
            while !self.waiting.bind(index, slot, id) {
                id = rand::random::<u16>();
            }
            let Some(w) = self.waiting.get_mut(index) else {
                continue;
            };
            w.attempt = Attempt::Udp { slot, id };
            w.sent = now;
            w.deadline = now + timeout;
            self.earliest = Some(self.earliest.map_or(w.deadline, |t| t.min(w.deadline)));
            self.pool.sent(slot);
            if let Some(buf) = self.send[family].next_buf() {
                w.held.write_query(id, buf);
                self.send[family].commit(server, None);
            }
        }
        self.queue.clear();
        for (family, slot) in slots.iter().enumerate() {
            if let Some(slot) = slot
                && self.send[family].send(self.pool.fd(*slot)) == Sent::Blocked
            {
                // The socket's buffer is full: what did not go times out
                // and moves on to the next server like any lost datagram.
                self.send[family].clear();
            }
        }
    }

    /// Reads the replies waiting on pool socket `slot`, and finishes or
    /// moves on the queries they answer.
    pub fn on_readable(
        &mut self,
        slot: u16,
        now: Instant,
        deliver: &mut impl FnMut(&HeldQuery, ReplyTo, Finished<'_>),
    ) {
        let fd = self.pool.fd(slot);
        loop {
            let n = match self.recv.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "upstream receive error");
                    break;
                }
            };
            for i in 0..n {
                self.on_datagram(slot, i, now, deliver);
            }
            if n < BATCH {
                break;
            }
        }
    }

    fn on_datagram(
        &mut self,
        slot: u16,
        i: usize,
        now: Instant,
        deliver: &mut impl FnMut(&HeldQuery, ReplyTo, Finished<'_>),
    ) {
        // Whatever does not answer a query we sent is dropped, counted,
        // and the query goes on waiting for the real answer.
        let packet = self.recv.packet(i);
        if packet.len() < HEADER_LEN {
            self.observer.upstream_mismatched();
            return;
        }
        let id = u16::from_be_bytes([packet[0], packet[1]]);
        let Some(index) = self.waiting.find(slot, id) else {
            self.observer.upstream_mismatched();
            return; // late, stray or spoofed: nobody waits for it
        };
        let Some(w) = self.waiting.get(index) else {
            self.observer.upstream_mismatched();
            return;
        };
        let server = self.servers.addrs[w.server];
        let from = self.recv.peer(i);
        if from.map(|a| (a.ip(), a.port())) != Some((server.ip(), server.port())) {
            self.observer.upstream_mismatched();
            return; // not from the server we asked
        }
        let question = w.held.query().question;
        let (server_index, took, qlen) = (
            w.server,
            now.saturating_duration_since(w.sent),
            question.len(),
        );
        let truncated = match matches(packet, id, question) {
            Ok(truncated) => truncated,
            Err(Rejected::BareError) => {
                // Alive, but no use for this question: the next server.
                self.waiting.unbind(slot, id);
                self.pool.done(slot);
                self.attempted(&UpstreamAttempt {
                    server: server_index,
                    result: AttemptResult::Answered,
                    took,
                });
                self.next_server(index, deliver);
                return;
            }
            Err(_) => {
                self.observer.upstream_mismatched();
                return; // another question under our ID: ignore it
            }
        };
        self.waiting.unbind(slot, id);
        self.pool.done(slot);
        if truncated {
            self.retry_over_tcp(index);
            return;
        }
        let valid = validate(self.recv.packet(i), qlen, &mut self.scratch).is_ok();
        self.settle(index, server_index, valid, took, deliver);
    }

    /// After an attempt that read a reply into `scratch` (`valid`) or
    /// failed to: finish the query, or move it on to the next server.
    fn settle(
        &mut self,
        index: u32,
        server: usize,
        valid: bool,
        took: Duration,
        deliver: &mut impl FnMut(&HeldQuery, ReplyTo, Finished<'_>),
    ) {
        let result = if valid {
            AttemptResult::Answered
        } else {
            tracing::debug!(server = %self.servers.addrs[server], "malformed reply");
            AttemptResult::Error
        };
        self.attempted(&UpstreamAttempt {
            server,
            result,
            took,
        });
        if valid && self.scratch.is_final() {
            if let Some(w) = self.waiting.take(index) {
                finish(w, Finished::Answered(view(&self.scratch)), deliver);
            }
            return;
        }
        if valid && let Some(w) = self.waiting.get_mut(index) {
            // An error RCODE: keep it, in case nobody answers better.
            let s = &self.scratch;
            w.last = Some(Box::new(Kept {
                msg: s.msg.clone(),
                ttl_offsets: s.ttl_offsets.clone(),
                ede: s.ede.clone(),
                ad: s.ad,
                rcode: s.rcode,
            }));
        }
        self.next_server(index, deliver);
    }

    /// Reports an attempt, and marks its server down (a timeout or an
    /// error) or up (an answer): the shared health every worker skips by.
    fn attempted(&self, attempt: &UpstreamAttempt) {
        self.observer.upstream(attempt);
        let addr = self.servers.addrs[attempt.server];
        if attempt.result == AttemptResult::Answered {
            self.servers.health.answered(attempt.server, addr);
        } else {
            self.servers.health.failed(attempt.server, addr);
        }
    }

    /// Moves a query on to the next server, or finishes it.
    fn next_server(
        &mut self,
        index: u32,
        deliver: &mut impl FnMut(&HeldQuery, ReplyTo, Finished<'_>),
    ) {
        let servers = self.servers.addrs.len();
        let Some(w) = self.waiting.get_mut(index) else {
            return;
        };
        w.server = self.servers.after(w.server);
        if w.server < servers {
            w.attempt = Attempt::Queued;
            self.queue.push(index);
            return;
        }
        if let Some(mut w) = self.waiting.take(index) {
            let last = w.last.take();
            let finished = match &last {
                Some(k) => Finished::Answered(kept_view(k)),
                None => Finished::NoAnswer,
            };
            finish(w, finished, deliver);
        }
    }

    fn retry_over_tcp(&mut self, index: u32) {
        let generation = self.waiting.generation(index);
        let Some(w) = self.waiting.get_mut(index) else {
            return;
        };
        w.attempt = Attempt::Tcp;
        let server = self.servers.addrs[w.server];
        let id = rand::random::<u16>();
        let mut query = Vec::with_capacity(HEADER_LEN + MAX_QUESTION_LEN + 11);
        w.held.write_query(id, &mut query);
        let timeout = self.servers.timeout;
        let tx = self.tcp_tx.clone();
        // Rare (answers over 1232 bytes): a task of its own is fine here.
        tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, tcp::exchange(server, &query)).await {
                Ok(r) => r,
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            };
            // The worker may be gone (shutting down): nothing to tell then.
            let _ = tx.send(TcpDone {
                entry: index,
                generation,
                result: result.and_then(|reply| {
                    if reply.len() >= 2 && reply[..2] == query[..2] {
                        Ok(reply)
                    } else {
                        Err(io::Error::new(io::ErrorKind::InvalidData, "another ID"))
                    }
                }),
            });
        });
    }

    /// A TCP retry came back.
    pub fn on_tcp_done(
        &mut self,
        done: TcpDone,
        now: Instant,
        deliver: &mut impl FnMut(&HeldQuery, ReplyTo, Finished<'_>),
    ) {
        if self.waiting.generation(done.entry) != done.generation {
            return;
        }
        let Some(w) = self.waiting.get(done.entry) else {
            return;
        };
        if w.attempt != Attempt::Tcp {
            return;
        }
        let (server, took) = (w.server, now.saturating_duration_since(w.sent));
        match done.result {
            Ok(reply) => {
                let question = w.held.query().question;
                let valid = read_u16(&reply, 0)
                    .is_some_and(|id| matches(&reply, id, question).is_ok())
                    && validate(&reply, question.len(), &mut self.scratch).is_ok();
                self.settle(done.entry, server, valid, took, deliver);
            }
            Err(e) => {
                tracing::debug!(server = %self.servers.addrs[server], error = %e, "tcp retry failed");
                let result = if e.kind() == io::ErrorKind::TimedOut {
                    AttemptResult::Timeout
                } else {
                    AttemptResult::Error
                };
                self.attempted(&UpstreamAttempt {
                    server,
                    result,
                    took,
                });
                self.next_server(done.entry, deliver);
            }
        }
    }

    /// Moves on every query whose UDP attempt has timed out.
    pub fn expire(
        &mut self,
        now: Instant,
        deliver: &mut impl FnMut(&HeldQuery, ReplyTo, Finished<'_>),
    ) {
        if self.earliest.is_none_or(|t| t > now) {
            return;
        }
        let mut expired = std::mem::take(&mut self.expired);
        self.earliest = self.waiting.expired(now, &mut expired);
        for &index in &expired {
            let Some(w) = self.waiting.get(index) else {
                continue;
            };
            let (attempt, server, sent) = (w.attempt, w.server, w.sent);
            if let Attempt::Udp { slot, id } = attempt {
                self.waiting.unbind(slot, id);
                self.pool.done(slot);
            }
            self.attempted(&UpstreamAttempt {
                server,
                result: AttemptResult::Timeout,
                took: now.saturating_duration_since(sent),
            });
            self.next_server(index, deliver);
        }
        self.expired = expired;
    }

    /// Replaces pool sockets that are due; call between turns.
    pub fn renew(&mut self, poll: &Poll) {
        self.pool.renew(poll);
    }

    /// Ports the pool has open (for tests).
    pub fn ports(&self) -> Vec<u16> {
        self.pool.ports()
    }
}
