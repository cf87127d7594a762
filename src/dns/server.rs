//! Listeners: UDP and TCP on each configured address.
//!
//! UDP: one socket per worker thread on each address, bound with
//! `SO_REUSEPORT` so the kernel spreads clients across them. Each socket's
//! loop answers blocked and cached queries inline from one reused buffer and
//! spawns a task only for queries that must go upstream.
//!
//! TCP: a task per connection, answering its queries in order, closed after
//! an idle timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{Resolver, Step, Transport};

/// Largest query we read over UDP; bigger ones are cut and then rejected.
const MAX_UDP_QUERY: usize = 4096;
/// How long an idle TCP connection is kept (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Bound sockets, ready to serve.
pub struct Listeners {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
}

impl Listeners {
    /// Binds UDP (`workers` sockets per address) and TCP on every address.
    pub fn bind(addrs: &[SocketAddr], workers: usize) -> io::Result<Self> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in addrs {
            // Bind TCP first: with port 0 it picks the port UDP then shares.
            let listener = bind_tcp(*addr)?;
            let addr = listener.local_addr()?;
            tcp.push(listener);
            for _ in 0..workers.max(1) {
                udp.push(Arc::new(bind_udp(addr)?));
            }
        }
        Ok(Self { udp, tcp })
    }

    /// Addresses actually bound (TCP; UDP shares them).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` is cancelled; in-flight queries are tracked
    /// by `tasks` so the caller can wait for them.
    pub fn serve(self, resolver: Arc<Resolver>, shutdown: CancellationToken, tasks: &TaskTracker) {
        for socket in self.udp {
            tasks.spawn(udp_loop(
                socket,
                resolver.clone(),
                shutdown.clone(),
                tasks.clone(),
            ));
        }
        for listener in self.tcp {
            tasks.spawn(tcp_accept(
                listener,
                resolver.clone(),
                shutdown.clone(),
                tasks.clone(),
            ));
        }
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn udp_loop(
    socket: Arc<UdpSocket>,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let mut buf = vec![0u8; MAX_UDP_QUERY];
    let mut out = Vec::with_capacity(MAX_UDP_QUERY);
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.cancelled() => return,
        };
        let (n, peer) = match received {
            Ok(r) => r,
            // ICMP errors from earlier sends surface here on some kernels;
            // they concern one client, not the socket.
            Err(e) => {
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        let started = Instant::now();
        match resolver.answer_local(&buf[..n], &mut out, Transport::Udp, started) {
            Step::Reply => {
                let _ = socket.send_to(&out, peer).await;
            }
            Step::Drop => {}
            Step::Forward => {
                let packet = buf[..n].to_vec();
                let resolver = resolver.clone();
                let socket = socket.clone();
                tasks.spawn(async move {
                    let mut out = Vec::new();
                    if resolver
                        .answer_upstream(&packet, &mut out, Transport::Udp, started)
                        .await
                        == Step::Reply
                    {
                        let _ = socket.send_to(&out, peer).await;
                    }
                });
            }
        }
    }
}

async fn tcp_accept(
    listener: TcpListener,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, _peer)) => {
                tasks.spawn(tcp_conn(stream, resolver.clone(), shutdown.clone()));
            }
            Err(e) => {
                // Typically EMFILE: back off briefly rather than spin.
                tracing::warn!(error = %e, "tcp accept error");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn tcp_conn(mut stream: TcpStream, resolver: Arc<Resolver>, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let mut packet = Vec::new();
    let mut out = Vec::with_capacity(512);
    loop {
        let len = tokio::select! {
            r = tokio::time::timeout(TCP_IDLE, stream.read_u16()) => match r {
                Ok(Ok(len)) => usize::from(len),
                _ => return,
            },
            _ = shutdown.cancelled() => return,
        };
        packet.resize(len, 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let started = Instant::now();
        let step = match resolver.answer_local(&packet, &mut out, Transport::Tcp, started) {
            Step::Forward => {
                resolver
                    .answer_upstream(&packet, &mut out, Transport::Tcp, started)
                    .await
            }
            step => step,
        };
        if step == Step::Reply {
            let mut framed = Vec::with_capacity(out.len() + 2);
            framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
            framed.extend_from_slice(&out);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
}
