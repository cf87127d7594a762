//! A worker: one event loop per core, owning a client UDP socket on each
//! listen address (`SO_REUSEPORT` spreads clients over the workers) and an
//! upstream stage of its own.
//!
//! One turn of the loop: wait for the worker's epoll set (or a TCP
//! connection's forwarded query, a TCP retry's result, the next upstream
//! deadline); read every ready socket in batches; run each client datagram
//! through [`Pipeline::begin`] and queue its answer, or hand the query to
//! the upstream stage; read upstream replies and [`Pipeline::resume`] the
//! queries they finish; then send everything queued, upstream queries and
//! client answers alike, a batch per socket. Nothing here allocates per
//! query, and no query waits for a lock or another task.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::tcp::{Forwarded, TcpLimits};
use crate::dns::pipeline::{Pipeline, Step};
use crate::dns::record::Observe;
use crate::dns::request::{Request, Transport};
use crate::dns::sys::mmsg::{BATCH, RecvBatch, SendBatch, Sent};
use crate::dns::sys::poll::{Event, Poll, Wanted};
use crate::dns::upstream::{Finished, HeldQuery, ReplyTo, Servers, TcpDone, Upstream};

/// Largest query read over UDP; bigger ones are cut and then rejected.
const MAX_UDP_QUERY: usize = 4096;
/// Batches read from one client socket per turn, so one busy socket cannot
/// starve the upstream replies that finish queries already in flight.
const BATCHES_PER_TURN: usize = 8;
/// Tokens at and above this are the upstream pool's.
const POOL_TOKENS: u64 = 1 << 32;

/// What a worker needs besides its sockets.
#[derive(Clone)]
pub struct WorkerConfig {
    pub servers: Arc<Servers>,
    /// Upstream pool sockets per address family.
    pub pool_sockets: usize,
    /// Queries that may wait for upstreams at once (this worker's share).
    pub inflight: usize,
    pub observer: Arc<dyn Observe>,
    /// Client TCP connections: how many, how long idle.
    pub tcp: TcpLimits,
}

/// A client socket with its batches.
struct Client {
    socket: UdpSocket,
    recv: RecvBatch,
    out: SendBatch,
    /// Waiting for room in the socket's send buffer (registered for
    /// writability instead of readability meanwhile).
    blocked: bool,
}

impl Client {
    /// Sends what is queued; on a full send buffer, waits for writability
    /// and stops reading queries until then.
    fn flush(&mut self, poll: &Poll, token: u64) {
        if self.out.pending() == 0 {
            return;
        }
        let fd = self.socket.as_raw_fd();
        match self.out.send(fd) {
            Sent::All if self.blocked => {
                self.blocked = poll.change(fd, token, Wanted::Read).is_err();
            }
            Sent::Blocked if !self.blocked => {
                self.blocked = poll.change(fd, token, Wanted::Write).is_ok();
            }
            _ => {}
        }
    }
}

/// Turns taken back to back while sockets stay ready, before the worker
/// goes back to the runtime (which lets TCP and admin tasks on this thread
/// run). Under load this skips the runtime's wake-up machinery per batch.
const TURNS_PER_WAKE: usize = 16;

/// One worker's state: its sockets, its upstream stage, its event set.
pub struct Worker {
    pipeline: Arc<Pipeline>,
    poll: Poll,
    clients: Vec<Client>,
    upstream: Upstream,
    /// TCP connections' queries for the upstream stage.
    forwarded: mpsc::Receiver<Forwarded>,
    forwards_open: bool,
    mail: Vec<Forwarded>,
    /// The upstream stage's TCP retries, reporting back.
    tcp_done: mpsc::UnboundedReceiver<TcpDone>,
    tcp_mail: Vec<TcpDone>,
    events: Vec<Event>,
    stopping: bool,
}

impl Worker {
    /// Sets a worker up: its event set, its client sockets (one per listen
    /// address, non-blocking, packet info on where bound to a wildcard) and
    /// its upstream pool. Must be called within the runtime.
    pub fn new(
        sockets: Vec<(UdpSocket, bool)>,
        pipeline: Arc<Pipeline>,
        config: &WorkerConfig,
        forwarded: mpsc::Receiver<Forwarded>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut clients = Vec::with_capacity(sockets.len());
        for (token, (socket, pktinfo)) in sockets.into_iter().enumerate() {
            poll.add(socket.as_raw_fd(), token as u64, Wanted::Read)?;
            clients.push(Client {
                socket,
                recv: RecvBatch::new(MAX_UDP_QUERY, pktinfo),
                out: SendBatch::new(BATCH),
                blocked: false,
            });
        }
        let (upstream, tcp_done) = Upstream::new(
            config.servers.clone(),
            &poll,
            POOL_TOKENS,
            config.pool_sockets,
            config.inflight,
            config.observer.clone(),
        )?;
        Ok(Self {
            pipeline,
            poll,
            clients,
            upstream,
            forwarded,
            forwards_open: true,
            mail: Vec::with_capacity(MAIL_PER_TURN),
            tcp_done,
            tcp_mail: Vec::with_capacity(MAIL_PER_TURN),
            events: Vec::with_capacity(MAX_EVENTS),
            stopping: false,
        })
    }
}

/// Runs a worker until `shutdown`, then until its queries in flight are
/// answered.
pub async fn run(mut w: Worker, shutdown: CancellationToken) -> io::Result<()> {
    let stop = shutdown.clone().cancelled_owned();
    tokio::pin!(stop);
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    let mut busy_wakes = 0u32;

    enum Wake {
        Ready(io::Result<()>),
        Mail,
        Timer,
        Stop,
    }

    loop {
        if w.stopping && w.upstream.is_idle() {
            return Ok(());
        }
        let deadline = w.upstream.next_deadline();
        if deadline != armed {
            if let Some(d) = deadline {
                timer.as_mut().reset(d.into());
            }
            armed = deadline;
        }
        // Biased, sockets first: a wake-up for ready sockets (nearly all of
        // them) polls nothing else. Mail, deadlines and shutdown are also
        // checked at every turn, so none of them waits on a busy worker.
        let wake = tokio::select! {
            biased;
            r = w.poll.ready(&mut w.events, MAX_EVENTS) => Wake::Ready(r),
            _ = &mut stop, if !w.stopping => Wake::Stop,
            _ = w.forwarded.recv_many(&mut w.mail, MAIL_PER_TURN), if w.forwards_open => Wake::Mail,
            _ = w.tcp_done.recv_many(&mut w.tcp_mail, MAIL_PER_TURN) => Wake::Mail,
            _ = &mut timer, if armed.is_some() => Wake::Timer,
        };
        let mut now = Instant::now();
        match wake {
            Wake::Ready(Err(e)) => {
                tracing::error!(error = %e, "worker event set failed");
                return Err(e);
            }
            Wake::Ready(Ok(())) => w.on_events(now),
            Wake::Stop | Wake::Mail | Wake::Timer => {}
        }
        w.end_turn(now, &shutdown);
        // While sockets stay ready, take more turns without going back
        // through the runtime.
        let mut busy = true;
        for _ in 1..TURNS_PER_WAKE {
            if !w.poll.try_ready(&mut w.events, MAX_EVENTS)? {
                busy = false;
                break;
            }
            now = Instant::now();
            w.on_events(now);
            w.end_turn(now, &shutdown);
        }
        // Busy for a while: let the runtime's other tasks (signals, the
        // admin API, TCP) and its I/O driver run. Under a flood the sockets
        // never go quiet, and without this a SIGTERM was never seen. Every
        // YIELD_EVERY busy wakes (16 turns each), not each: a yield costs
        // the runtime's own polling, which a flood should not pay often.
        busy_wakes = if busy { busy_wakes + 1 } else { 0 };
        if busy_wakes >= YIELD_EVERY {
            busy_wakes = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// Busy wakes in a row after which a worker yields to the runtime.
const YIELD_EVERY: u32 = 8;

/// Forwarded TCP queries and TCP retry results taken per turn.
const MAIL_PER_TURN: usize = 64;

/// Ready sockets handed over per turn.
const MAX_EVENTS: usize = 64;

impl Worker {
    /// Shutting down: no new queries; the ones in flight still get answers.
    fn stop(&mut self) {
        self.stopping = true;
        for c in &self.clients {
            let _ = self.poll.remove(c.socket.as_raw_fd());
        }
    }

    /// Reads every ready socket: upstream replies first (they finish
    /// queries already waiting), then client queries.
    fn on_events(&mut self, now: Instant) {
        let Worker {
            pipeline,
            poll,
            clients,
            upstream,
            events,
            stopping,
            ..
        } = self;
        for ev in events.iter() {
            if let Some(slot) = upstream.owns(ev.token) {
                upstream.on_readable(slot, now, &mut |h, r, f| {
                    deliver(pipeline, poll, clients, now, h, r, f)
                });
            }
        }
        for ev in events.iter() {
            let Some(c) = clients.get_mut(ev.token as usize) else {
                continue;
            };
            if ev.writable {
                c.flush(poll, ev.token);
            }
            if ev.readable && !*stopping && !c.blocked {
                serve_client(c, ev.token, pipeline, upstream, poll);
            }
        }
    }

    /// Mail received by the last wake-up, and whatever else has arrived.
    fn take_mail(&mut self, now: Instant) {
        loop {
            match self.forwarded.try_recv() {
                Ok(f) => self.mail.push(f),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.forwards_open = false;
                    break;
                }
            }
        }
        while let Ok(done) = self.tcp_done.try_recv() {
            self.tcp_mail.push(done);
        }
        let mut mail = std::mem::take(&mut self.mail);
        for f in mail.drain(..) {
            self.on_forward(f, now);
        }
        self.mail = mail;
        let mut tcp_mail = std::mem::take(&mut self.tcp_mail);
        for done in tcp_mail.drain(..) {
            self.on_tcp_done(done, now);
        }
        self.tcp_mail = tcp_mail;
    }

    /// A TCP connection's query that must go upstream.
    fn on_forward(&mut self, f: Forwarded, now: Instant) {
        let Forwarded { held, reply } = f;
        if self.upstream.has_room() {
            self.upstream.submit(held, ReplyTo::Tcp(reply), now);
            return;
        }
        let mut buf = Vec::new();
        self.pipeline.overloaded(&held, &mut buf);
        let _ = reply.send(buf);
    }

    fn on_tcp_done(&mut self, done: TcpDone, now: Instant) {
        let Worker {
            pipeline,
            poll,
            clients,
            upstream,
            ..
        } = self;
        upstream.on_tcp_done(done, now, &mut |h, r, f| {
            deliver(pipeline, poll, clients, now, h, r, f)
        });
    }

    /// The end of every turn: take the mail, stop if asked to, time out
    /// what waited too long, send what was queued, replace the pool sockets
    /// that are due.
    fn end_turn(&mut self, now: Instant, shutdown: &CancellationToken) {
        self.take_mail(now);
        if !self.stopping && shutdown.is_cancelled() {
            self.stop();
        }
        let Worker {
            pipeline,
            poll,
            clients,
            upstream,
            ..
        } = self;
        upstream.expire(now, &mut |h, r, f| {
            deliver(pipeline, poll, clients, now, h, r, f)
        });
        upstream.flush(now);
        for (token, c) in clients.iter_mut().enumerate() {
            c.flush(poll, token as u64);
        }
        upstream.renew(poll);
    }
}

/// Where a finished query's answer goes: its client socket's batch, or the
/// TCP connection that asked.
fn deliver(
    pipeline: &Pipeline,
    poll: &Poll,
    clients: &mut [Client],
    now: Instant,
    held: &HeldQuery,
    reply_to: ReplyTo,
    finished: Finished<'_>,
) {
    match reply_to {
        ReplyTo::Udp { socket } => {
            let Some(c) = clients.get_mut(usize::from(socket)) else {
                return;
            };
            if c.out.is_full() {
                c.flush(poll, u64::from(socket));
            }
            match c.out.next_buf() {
                Some(buf) => {
                    pipeline.resume(held, finished, now, buf);
                    c.out.commit(held.client, held.local);
                }
                // The socket cannot take more now: the answer is lost like
                // a dropped datagram, but the query is still recorded.
                None => pipeline.resume(held, finished, now, &mut Vec::new()),
            }
        }
        ReplyTo::Tcp(tx) => {
            let mut buf = Vec::with_capacity(512);
            pipeline.resume(held, finished, now, &mut buf);
            let _ = tx.send(buf);
        }
    }
}

/// Reads and answers client datagrams on one socket, up to a turn's budget.
fn serve_client(
    c: &mut Client,
    token: u64,
    pipeline: &Pipeline,
    upstream: &mut Upstream,
    poll: &Poll,
) {
    let fd = c.socket.as_raw_fd();
    for _ in 0..BATCHES_PER_TURN {
        let n = match c.recv.recv(fd) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // ICMP errors from earlier sends surface here; they concern one
            // client, not the socket.
            Err(e) => {
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        let now = Instant::now();
        for i in 0..n {
            let Some(client) = c.recv.peer(i) else {
                continue;
            };
            let req = Request {
                packet: c.recv.packet(i),
                client,
                local: c.recv.local(i),
                transport: Transport::Udp,
                received: now,
            };
            if c.out.is_full() {
                c.out.send(fd);
            }
            let Some(buf) = c.out.next_buf() else {
                continue; // the socket is full: like a datagram lost on the way
            };
            let held = match pipeline.begin(&req, buf) {
                Step::Answer => {
                    let (to, len) = c.recv.raw_peer(i);
                    c.out.commit_raw(to, len, req.local);
                    continue;
                }
                Step::Drop => continue,
                Step::Forward(q, decided) => HeldQuery::new(&req, &q, decided),
                Step::Chase(held) => *held,
            };
            if upstream.has_room() {
                let reply_to = ReplyTo::Udp {
                    socket: token as u16,
                };
                upstream.submit(held, reply_to, now);
            } else {
                pipeline.overloaded(&held, buf);
                let (to, len) = c.recv.raw_peer(i);
                c.out.commit_raw(to, len, req.local);
            }
        }
        upstream.flush(now);
        c.flush(poll, token);
        if n < BATCH || c.blocked {
            return;
        }
    }
}
