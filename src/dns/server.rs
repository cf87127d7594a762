//! Listeners: UDP and TCP on each configured address.
//!
//! UDP: one socket per worker thread on each address, bound with
//! `SO_REUSEPORT` so the kernel spreads clients across them. Each socket's
//! loop answers blocked and cached queries inline from reused buffers and
//! spawns a task only for queries that must go upstream. On Linux it reads
//! and writes in batches (`recvmmsg`/`sendmmsg`, see [`batch`]): under load
//! one system call moves many datagrams and the runtime is woken once per
//! batch, not per query; when the load is light a batch simply holds one.
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

#[cfg(target_os = "linux")]
use batch::udp_loop;

#[cfg(not(target_os = "linux"))]
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
            Step::Forward => forward(&socket, &resolver, &tasks, &buf[..n], peer, started),
        }
    }
}

/// Hands a query the local stage could not answer to a task of its own, so
/// the loop goes straight back to the socket.
fn forward(
    socket: &Arc<UdpSocket>,
    resolver: &Arc<Resolver>,
    tasks: &TaskTracker,
    packet: &[u8],
    peer: SocketAddr,
    started: Instant,
) {
    let packet = packet.to_vec();
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

/// Batched UDP I/O with `recvmmsg`/`sendmmsg`.
#[cfg(target_os = "linux")]
mod batch {
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::Arc;
    use std::time::Instant;

    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use tokio::io::Interest;
    use tokio::net::UdpSocket;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::{MAX_UDP_QUERY, forward};
    use crate::dns::handler::{Resolver, Step, Transport};

    /// Datagrams per system call. Past a few dozen the saving per datagram
    /// is gone and the buffers only cost cache.
    const BATCH: usize = 32;
    /// Batches read back to back before the loop yields to the runtime, so
    /// a flood cannot starve the forwarding tasks on the same thread.
    const BATCHES_BEFORE_YIELD: usize = 8;

    /// Buffers for one socket, allocated once.
    struct Batch {
        bufs: Vec<u8>,
        addrs: Vec<libc::sockaddr_storage>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
        /// Answers, one per received datagram (empty when there is none).
        outs: Vec<Vec<u8>>,
        send_iovs: Vec<libc::iovec>,
        send_hdrs: Vec<libc::mmsghdr>,
        /// Receive headers the kernel wrote to last time.
        used: usize,
    }

    // SAFETY: the raw pointers in the headers only ever point into this
    // same value's own heap buffers, and are only used by whoever owns it;
    // moving it to another thread moves those buffers' ownership with it.
    unsafe impl Send for Batch {}

    impl Batch {
        fn new() -> Self {
            // SAFETY: all-zero bytes are a valid value of these plain C
            // structs (null pointers, zero lengths).
            let zeroed = || unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() };
            let storage =
                || unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
            let iov = libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            let mut b = Self {
                bufs: vec![0u8; BATCH * MAX_UDP_QUERY],
                addrs: (0..BATCH).map(|_| storage()).collect(),
                iovs: vec![iov; BATCH],
                hdrs: (0..BATCH).map(|_| zeroed()).collect(),
                outs: (0..BATCH)
                    .map(|_| Vec::with_capacity(MAX_UDP_QUERY))
                    .collect(),
                send_iovs: vec![iov; BATCH],
                send_hdrs: (0..BATCH).map(|_| zeroed()).collect(),
                used: BATCH,
            };
            // The headers point into the vectors' heap buffers, which stay
            // put however `Batch` itself moves: set them once.
            for i in 0..BATCH {
                b.iovs[i] = libc::iovec {
                    iov_base: b.bufs[i * MAX_UDP_QUERY..].as_mut_ptr().cast(),
                    iov_len: MAX_UDP_QUERY,
                };
                let h = &mut b.hdrs[i].msg_hdr;
                h.msg_name = (&raw mut b.addrs[i]).cast();
                h.msg_iov = &raw mut b.iovs[i];
                h.msg_iovlen = 1;
            }
            b
        }

        /// Receives up to `BATCH` datagrams without blocking; returns how
        /// many (an error of `WouldBlock` when there are none).
        fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
            // The address length is in-out: restore it where the kernel
            // wrote one. Everything else in a header is fixed or output.
            for h in &mut self.hdrs[..self.used] {
                h.msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
            self.used = 0;
            // SAFETY: every header points at buffers of the stated sizes
            // owned by `self`, which outlives the call; the kernel writes
            // only within them.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            self.used = n as usize;
            Ok(n as usize)
        }

        /// Datagram `i` as received (cut at the buffer size if it was
        /// bigger: the parser then rejects it, as with `recv_from`).
        fn packet(&self, i: usize) -> &[u8] {
            let len = (self.hdrs[i].msg_len as usize).min(MAX_UDP_QUERY);
            &self.bufs[i * MAX_UDP_QUERY..i * MAX_UDP_QUERY + len]
        }

        /// The sender of datagram `i`.
        fn peer(&self, i: usize) -> Option<SocketAddr> {
            let len = self.hdrs[i].msg_hdr.msg_namelen as usize;
            let storage: *const libc::sockaddr_storage = &self.addrs[i];
            match i32::from(self.addrs[i].ss_family) {
                libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
                    // SAFETY: the kernel wrote a `sockaddr_in` here (family
                    // and length say so); the storage is big and aligned
                    // enough for any address type.
                    let a = unsafe { &*storage.cast::<libc::sockaddr_in>() };
                    Some(SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                        u16::from_be(a.sin_port),
                    )))
                }
                libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
                    // SAFETY: as above, for a `sockaddr_in6`.
                    let a = unsafe { &*storage.cast::<libc::sockaddr_in6>() };
                    Some(SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::from(a.sin6_addr.s6_addr),
                        u16::from_be(a.sin6_port),
                        a.sin6_flowinfo,
                        a.sin6_scope_id,
                    )))
                }
                _ => None,
            }
        }

        /// Lays out one send header per non-empty answer, in order; returns
        /// how many.
        fn prepare_send(&mut self, received: usize) -> usize {
            let mut n = 0;
            for i in 0..received {
                if self.outs[i].is_empty() {
                    continue;
                }
                self.send_iovs[n] = libc::iovec {
                    iov_base: self.outs[i].as_mut_ptr().cast(),
                    iov_len: self.outs[i].len(),
                };
                let h = &mut self.send_hdrs[n].msg_hdr;
                h.msg_name = (&raw mut self.addrs[i]).cast();
                h.msg_namelen = self.hdrs[i].msg_hdr.msg_namelen;
                h.msg_iov = &raw mut self.send_iovs[n];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
                self.send_hdrs[n].msg_len = 0;
                n += 1;
            }
            n
        }

        /// Sends prepared answers `from..to` without blocking; returns how
        /// many went.
        fn send(&mut self, fd: RawFd, from: usize, to: usize) -> io::Result<usize> {
            // SAFETY: headers `from..to` were laid out by `prepare_send` and
            // point at buffers owned by `self`, unchanged since.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.send_hdrs[from..to].as_mut_ptr(),
                    (to - from) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        }
    }

    pub(super) async fn udp_loop(
        socket: Arc<UdpSocket>,
        resolver: Arc<Resolver>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) {
        let mut batch = Batch::new();
        let fd = socket.as_raw_fd();
        loop {
            tokio::select! {
                r = socket.readable() => if let Err(e) = r {
                    tracing::warn!(error = %e, "udp socket failed");
                    return;
                },
                _ = shutdown.cancelled() => return,
            }
            let mut drained = false;
            for _ in 0..BATCHES_BEFORE_YIELD {
                let received = match socket.try_io(Interest::READABLE, || batch.recv(fd)) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    // ICMP errors from earlier sends surface here; they
                    // concern one client, not the socket.
                    Err(e) => {
                        tracing::debug!(error = %e, "udp receive error");
                        continue;
                    }
                };
                let started = Instant::now();
                for i in 0..received {
                    let mut out = std::mem::take(&mut batch.outs[i]);
                    out.clear();
                    match resolver.answer_local(batch.packet(i), &mut out, Transport::Udp, started)
                    {
                        Step::Reply => {}
                        Step::Drop => out.clear(),
                        Step::Forward => {
                            out.clear();
                            if let Some(peer) = batch.peer(i) {
                                forward(&socket, &resolver, &tasks, batch.packet(i), peer, started);
                            }
                        }
                    }
                    batch.outs[i] = out;
                }
                send_all(&socket, fd, &mut batch, received).await;
                if received < BATCH {
                    // Most likely drained; the next readiness wait finds
                    // out for sure.
                    drained = true;
                    break;
                }
            }
            if !drained {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Sends every answer of the batch: a partial send continues where it
    /// stopped, a full socket buffer waits for room, and a datagram the
    /// kernel refuses outright (say, an unroutable client) is skipped.
    async fn send_all(socket: &UdpSocket, fd: RawFd, batch: &mut Batch, received: usize) {
        let total = batch.prepare_send(received);
        let mut sent = 0;
        while sent < total {
            match socket.try_io(Interest::WRITABLE, || batch.send(fd, sent, total)) {
                Ok(n) => sent += n.max(1).min(total - sent),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "udp send error");
                    sent += 1;
                }
            }
        }
    }
}
