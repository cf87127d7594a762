//! Listeners: UDP and TCP on each configured address.
//!
//! UDP is served by one [`worker`] per core, each with its own socket on
//! every address (`SO_REUSEPORT`, so the kernel spreads clients across
//! them), its own upstream stage and its own event loop. TCP has an accept
//! task per address and a task per connection ([`tcp`]).
//!
//! A socket bound to a wildcard address (`0.0.0.0`, `[::]`) reads each
//! datagram's destination (packet info) and answers from it, so a host with
//! several addresses, or a floating one, answers from the address it was
//! asked on. `[::]` is IPv6 only: list `0.0.0.0` as well for both.

pub mod tcp;
pub mod worker;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::tcp::Workers;
use self::worker::{Worker, WorkerConfig};
use super::pipeline::Pipeline;
use super::sys::mmsg::enable_pktinfo;

/// Forwarded TCP queries a worker's queue holds before new ones get
/// SERVFAIL (each is also bounded by the worker's upstream capacity).
const FORWARD_QUEUE: usize = 1024;

/// Bound sockets, ready to serve.
pub struct Listeners {
    /// `udp[w]`: worker `w`'s sockets, one per address, with "wildcard".
    udp: Vec<Vec<(UdpSocket, bool)>>,
    tcp: Vec<TcpListener>,
}

impl Listeners {
    /// Binds TCP and, per worker, UDP on every address.
    pub fn bind(addrs: &[SocketAddr], workers: usize) -> io::Result<Self> {
        let workers = workers.max(1);
        let mut udp: Vec<Vec<(UdpSocket, bool)>> = (0..workers).map(|_| Vec::new()).collect();
        let mut tcp = Vec::new();
        for addr in addrs {
            // Bind TCP first: with port 0 it picks the port UDP then shares.
            let listener = bind_tcp(*addr)?;
            let addr = listener.local_addr()?;
            tcp.push(listener);
            let wildcard = addr.ip().is_unspecified();
            for sockets in &mut udp {
                let socket = bind_udp(addr)?;
                if wildcard {
                    enable_pktinfo(socket.as_raw_fd(), addr.is_ipv6())?;
                }
                sockets.push((socket, wildcard));
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

    pub fn workers(&self) -> usize {
        self.udp.len()
    }

    /// Sets up every worker (its event set and upstream pool), then serves
    /// until `shutdown` is cancelled; workers and connections are tracked
    /// by `tasks`, which finish the queries in flight first. Called within
    /// the runtime; when it returns, the server is ready.
    pub fn serve(
        self,
        pipeline: Arc<Pipeline>,
        config: WorkerConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> io::Result<()> {
        let mut queues = Vec::with_capacity(self.udp.len());
        let mut workers = Vec::with_capacity(self.udp.len());
        for sockets in self.udp {
            let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
            queues.push(tx);
            workers.push(Worker::new(sockets, pipeline.clone(), &config, rx)?);
        }
        for w in workers {
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = worker::run(w, shutdown).await {
                    tracing::error!(error = %e, "dns worker stopped");
                }
            });
        }
        let workers = Arc::new(Workers::new(queues));
        // One count of open connections for every listener: the cap is
        // the process's.
        let open = Arc::new(tcp::Open::new(config.tcp));
        for listener in self.tcp {
            tasks.spawn(tcp::accept(
                listener,
                pipeline.clone(),
                workers.clone(),
                open.clone(),
                shutdown.clone(),
                tasks.clone(),
            ));
        }
        Ok(())
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    grow_receive_buffer(&socket);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Receive buffer asked of the kernel for each client socket: room for a
/// burst (or a worker briefly off the CPU) of some 4,000 queries, where
/// Linux's default (208 KiB, about 250 datagrams) drops queries after a
/// 12 ms pause at 20,000 a second. Unbound's `so-rcvbuf` advice, made the
/// default.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Asks for [`RECEIVE_BUFFER`]; the kernel caps `SO_RCVBUF` at
/// `net.core.rmem_max`, which `SO_RCVBUFFORCE` may pass with
/// CAP_NET_ADMIN. Says so when it got less.
fn grow_receive_buffer(socket: &Socket) {
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    // The kernel reports double what it was asked (its own bookkeeping).
    if socket.recv_buffer_size().unwrap_or(0) >= RECEIVE_BUFFER {
        return;
    }
    let want = RECEIVE_BUFFER as libc::c_int;
    // SAFETY: a setsockopt on a socket we own, with an int option value.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const want).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let got = socket.recv_buffer_size().unwrap_or(0);
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if got < RECEIVE_BUFFER && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            bytes = got,
            wanted = RECEIVE_BUFFER,
            "the kernel limits the DNS socket's receive buffer; a burst of queries may be dropped: raise net.core.rmem_max (sysctl) to 4194304"
        );
    }
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
