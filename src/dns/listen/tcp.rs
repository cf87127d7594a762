//! TCP: a task per connection, answering its queries in order (RFC 7766:
//! one in flight per connection), closed after an idle timeout, whether
//! the client stops sending or stops reading.
//!
//! Blocked and cached answers are made on the connection's task; a query
//! that must go upstream is handed to a worker's upstream stage (see
//! `worker`), and its answer comes back on a channel. TCP carries a small
//! share of the traffic, so the allocation per forwarded query here is fine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dns::pipeline::{Pipeline, Step};
use crate::dns::request::{Local, Request, Transport};
use crate::dns::upstream::HeldQuery;
use crate::dns::wire::tcp_frame;
use crate::fds::{self, Slot, Slots};

/// A query a TCP connection could not answer locally, for a worker's
/// upstream stage; the answer comes back on `reply`.
pub struct Forwarded {
    pub held: HeldQuery,
    pub reply: oneshot::Sender<Vec<u8>>,
}

/// `limits.tcp_connections` and `limits.tcp_idle`.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub connections: usize,
    pub idle: Duration,
}

/// The open client connections, against their cap. A slowloris client
/// holds one slot of many, for at most the idle timeout, which shrinks to
/// a fifth once half the slots are taken (RFC 7766 §6.2.3: close idle
/// connections under pressure); past the cap new connections are closed
/// at once, so UDP and the connections already open carry on.
pub struct Open {
    slots: Arc<Slots>,
    idle: Duration,
}

impl Open {
    pub fn new(limits: TcpLimits) -> Self {
        Self {
            slots: Slots::new(limits.connections),
            idle: limits.idle,
        }
    }

    /// How long a connection may now sit without sending.
    fn idle(&self) -> Duration {
        if self.slots.held() * 2 > self.slots.cap() {
            (self.idle / 5).max(Duration::from_millis(200))
        } else {
            self.idle
        }
    }
}

/// The workers' queues for forwarded queries, taken in turn.
pub struct Workers {
    queues: Vec<mpsc::Sender<Forwarded>>,
    next: AtomicUsize,
}

impl Workers {
    pub fn new(queues: Vec<mpsc::Sender<Forwarded>>) -> Self {
        Self {
            queues,
            next: AtomicUsize::new(0),
        }
    }

    /// Hands `held` to a worker; `None` when none can take it.
    fn forward(&self, held: HeldQuery) -> Option<oneshot::Receiver<Vec<u8>>> {
        if self.queues.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        let (reply, answer) = oneshot::channel();
        self.queues[i].try_send(Forwarded { held, reply }).ok()?;
        Some(answer)
    }
}

pub async fn accept(
    listener: TcpListener,
    pipeline: Arc<Pipeline>,
    workers: Arc<Workers>,
    open: Arc<Open>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        // Past `limits.tcp_connections` or the budget: closed at once.
        let (stream, peer, slot) = tokio::select! {
            a = fds::accept(&listener, &open.slots, "dns tcp") => a,
            _ = shutdown.cancelled() => return,
        };
        tasks.spawn(connection(
            stream,
            peer,
            pipeline.clone(),
            workers.clone(),
            open.clone(),
            slot,
            shutdown.clone(),
        ));
    }
}

async fn connection(
    mut stream: TcpStream,
    client: SocketAddr,
    pipeline: Arc<Pipeline>,
    workers: Arc<Workers>,
    open: Arc<Open>,
    _slot: Slot,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok().map(|a| Local {
        ip: a.ip(),
        ifindex: 0,
    });
    let mut packet = Vec::new();
    let mut out = Vec::with_capacity(512);
    let mut framed = Vec::with_capacity(514);
    loop {
        let len = tokio::select! {
            r = tokio::time::timeout(open.idle(), stream.read_u16()) => match r {
                Ok(Ok(len)) => usize::from(len),
                _ => return,
            },
            _ = shutdown.cancelled() => return,
        };
        packet.resize(len, 0);
        match tokio::time::timeout(open.idle(), stream.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let req = Request {
            packet: &packet,
            client,
            local,
            transport: Transport::Tcp,
            received: Instant::now(),
        };
        match pipeline.begin(&req, &mut out) {
            Step::Answer => {}
            Step::Drop => continue,
            Step::Forward(q, decided) => {
                let held = HeldQuery::new(&req, &q, decided);
                match workers.forward(held) {
                    Some(answer) => match answer.await {
                        Ok(bytes) => out = bytes,
                        // The worker stopped before answering.
                        Err(_) => return,
                    },
                    None => pipeline.overloaded(&HeldQuery::new(&req, &q, decided), &mut out),
                }
            }
            Step::Chase(held) => {
                let spare = (*held).clone();
                match workers.forward(*held) {
                    Some(answer) => match answer.await {
                        Ok(bytes) => out = bytes,
                        Err(_) => return,
                    },
                    None => pipeline.overloaded(&spare, &mut out),
                }
            }
        }
        // Answers are made to fit a frame (`answers::fit`). A client that
        // does not read its answers gets the idle timeout to take each
        // one, then is closed: it holds no slot, and no memory, for longer.
        if tcp_frame(&out, &mut framed).is_none() {
            return;
        }
        match tokio::time::timeout(open.idle(), stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
