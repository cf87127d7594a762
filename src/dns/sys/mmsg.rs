//! Batched UDP I/O with `recvmmsg`/`sendmmsg`, and the destination address
//! of each datagram (`IP_PKTINFO` / `IPV6_RECVPKTINFO`).
//!
//! Under load one system call moves up to [`BATCH`] datagrams; when the
//! load is light a batch simply holds one. The same two types serve the
//! client sockets and the upstream pool's sockets.
//!
//! Packet info matters on a socket bound to a wildcard address: the kernel
//! would answer from whatever address the route to the client prefers, and
//! a client that asked 192.0.2.53 would drop an answer from 192.0.2.54. So
//! each datagram's destination is read on receipt and given back as the
//! source of its answer (Unbound's `interface-automatic` does the same).

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use crate::dns::request::Local;

/// Datagrams per system call. Past a few dozen the saving per datagram is
/// gone and the buffers only cost cache.
pub const BATCH: usize = 32;
/// Room for one packet-info control message of either family.
const CONTROL_LEN: usize = 64;

/// A control-message buffer, aligned as `cmsghdr` must be.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL_LEN]);

/// Turns on packet info for a socket bound to a wildcard address.
pub fn enable_pktinfo(fd: RawFd, v6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: a valid fd and a pointer to an int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn zeroed<T>() -> T {
    // SAFETY: only used for plain C structs (sockaddr_storage, mmsghdr),
    // for which all-zero bytes are a valid value.
    unsafe { MaybeUninit::<T>::zeroed().assume_init() }
}

/// A socket address as the kernel wants it.
pub fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut storage: libc::sockaddr_storage = zeroed();
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for any
            // socket address type.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A socket address the kernel wrote.
pub fn from_sockaddr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    let ptr: *const libc::sockaddr_storage = storage;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family and length say a sockaddr_in is here.
            let a = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let a = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
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

/// Receive buffers for one socket, allocated once.
pub struct RecvBatch {
    size: usize,
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    controls: Vec<Control>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Headers the kernel wrote to last time.
    used: usize,
    pktinfo: bool,
}

// SAFETY: the raw pointers in the headers only point into this value's own
// heap buffers and are only used by whoever owns it; moving it to another
// thread moves those buffers' ownership with it.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Buffers for `BATCH` datagrams of up to `size` bytes; `pktinfo` reads
    /// each datagram's destination too.
    pub fn new(size: usize, pktinfo: bool) -> Self {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut b = Self {
            size,
            bufs: vec![0u8; BATCH * size],
            addrs: (0..BATCH).map(|_| zeroed()).collect(),
            controls: vec![Control([0u8; CONTROL_LEN]); BATCH],
            iovs: vec![iov; BATCH],
            hdrs: (0..BATCH).map(|_| zeroed()).collect(),
            used: BATCH,
            pktinfo,
        };
        // The headers point into the vectors' heap buffers, which stay put
        // however `RecvBatch` itself moves: set them once.
        for i in 0..BATCH {
            b.iovs[i] = libc::iovec {
                iov_base: b.bufs[i * size..].as_mut_ptr().cast(),
                iov_len: size,
            };
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&raw mut b.addrs[i]).cast();
            h.msg_iov = &raw mut b.iovs[i];
            h.msg_iovlen = 1;
            if pktinfo {
                h.msg_control = b.controls[i].0.as_mut_ptr().cast();
            }
        }
        b
    }

    /// Receives up to `BATCH` datagrams without blocking; returns how many
    /// (an error of kind `WouldBlock` when there are none).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // Address and control lengths are in-out: restore them where the
        // kernel wrote. Everything else in a header is fixed or output.
        for h in &mut self.hdrs[..self.used] {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if self.pktinfo {
                h.msg_hdr.msg_controllen = CONTROL_LEN as _;
            }
        }
        self.used = 0;
        // SAFETY: every header points at buffers of the stated sizes owned
        // by `self`, which outlives the call; the kernel writes only within.
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

    /// Datagram `i` as received (cut at the buffer size if it was bigger:
    /// a parser then rejects it).
    pub fn packet(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(self.size);
        &self.bufs[i * self.size..i * self.size + len]
    }

    /// The sender of datagram `i`.
    pub fn peer(&self, i: usize) -> Option<SocketAddr> {
        from_sockaddr(&self.addrs[i], self.hdrs[i].msg_hdr.msg_namelen)
    }

    /// The sender of datagram `i`, as the kernel wrote it.
    pub fn raw_peer(&self, i: usize) -> (&libc::sockaddr_storage, libc::socklen_t) {
        (&self.addrs[i], self.hdrs[i].msg_hdr.msg_namelen)
    }

    /// Where datagram `i` was sent to, when packet info is on.
    pub fn local(&self, i: usize) -> Option<Local> {
        if !self.pktinfo {
            return None;
        }
        let h = &self.hdrs[i].msg_hdr;
        // SAFETY: the kernel wrote `msg_controllen` bytes of well-formed
        // control messages into our buffer; the CMSG macros walk them
        // within that length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                let data = libc::CMSG_DATA(c);
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                        return Some(Local {
                            ip: IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))),
                            ifindex: 0,
                        });
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                        let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                        return Some(Local {
                            ip: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                            ifindex: info.ipi6_ifindex,
                        });
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }
}

/// Datagrams to send from one socket, each with its destination and, on a
/// wildcard socket, its source address.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    controls: Vec<Control>,
    control_lens: Vec<usize>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Datagrams queued: `sent..len` are still to go.
    len: usize,
    sent: usize,
}

// SAFETY: as for `RecvBatch`: the headers point into owned heap buffers.
unsafe impl Send for SendBatch {}

/// What [`SendBatch::send`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Everything queued went.
    All,
    /// The socket's buffer is full: the rest waits for writability.
    Blocked,
}

impl SendBatch {
    pub fn new(capacity: usize) -> Self {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            bufs: (0..capacity).map(|_| Vec::with_capacity(1232)).collect(),
            addrs: (0..capacity).map(|_| zeroed()).collect(),
            addr_lens: vec![0; capacity],
            controls: vec![Control([0u8; CONTROL_LEN]); capacity],
            control_lens: vec![0; capacity],
            iovs: vec![iov; capacity],
            hdrs: (0..capacity).map(|_| zeroed()).collect(),
            len: 0,
            sent: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    /// Forgets whatever is still queued.
    pub fn clear(&mut self) {
        self.len = 0;
        self.sent = 0;
    }

    /// Datagrams still to send.
    pub fn pending(&self) -> usize {
        self.len - self.sent
    }

    /// The buffer the next datagram is written into (cleared); it is queued
    /// only by [`SendBatch::commit`]. `None` when the batch is full.
    pub fn next_buf(&mut self) -> Option<&mut Vec<u8>> {
        let b = self.bufs.get_mut(self.len)?;
        b.clear();
        Some(b)
    }

    /// Queues the datagram written into [`SendBatch::next_buf`], to `to`
    /// (as the kernel gave it), from `from` when given.
    pub fn commit_raw(
        &mut self,
        to: &libc::sockaddr_storage,
        to_len: libc::socklen_t,
        from: Option<Local>,
    ) {
        let i = self.len;
        if i == self.bufs.len() || self.bufs[i].is_empty() {
            return;
        }
        self.addrs[i] = *to;
        self.addr_lens[i] = to_len;
        self.control_lens[i] = match from {
            Some(local) => write_pktinfo(&mut self.controls[i], local),
            None => 0,
        };
        self.len += 1;
    }

    /// As [`SendBatch::commit_raw`], for an address we hold as a value.
    pub fn commit(&mut self, to: SocketAddr, from: Option<Local>) {
        let (storage, len) = to_sockaddr(to);
        self.commit_raw(&storage, len, from);
    }

    /// Sends what is queued without blocking. A datagram the kernel refuses
    /// outright (an unroutable client, say) is skipped; a full socket
    /// buffer stops the batch with [`Sent::Blocked`], keeping the rest.
    pub fn send(&mut self, fd: RawFd) -> Sent {
        while self.sent < self.len {
            let from = self.sent;
            for i in from..self.len {
                self.iovs[i] = libc::iovec {
                    iov_base: self.bufs[i].as_mut_ptr().cast(),
                    iov_len: self.bufs[i].len(),
                };
                let h = &mut self.hdrs[i].msg_hdr;
                h.msg_name = (&raw mut self.addrs[i]).cast();
                h.msg_namelen = self.addr_lens[i];
                h.msg_iov = &raw mut self.iovs[i];
                h.msg_iovlen = 1;
                if self.control_lens[i] > 0 {
                    h.msg_control = self.controls[i].0.as_mut_ptr().cast();
                    h.msg_controllen = self.control_lens[i] as _;
                } else {
                    h.msg_control = std::ptr::null_mut();
                    h.msg_controllen = 0;
                }
                h.msg_flags = 0;
                self.hdrs[i].msg_len = 0;
            }
            // SAFETY: headers `from..len` were just laid out and point at
            // buffers owned by `self`, unchanged during the call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[from..self.len].as_mut_ptr(),
                    (self.len - from) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Sent::Blocked,
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        tracing::debug!(error = %e, "udp send error");
                        self.sent += 1;
                    }
                }
            } else {
                self.sent += (n as usize).max(1);
            }
        }
        self.len = 0;
        self.sent = 0;
        Sent::All
    }
}

/// Writes the control message that makes `local` the datagram's source;
/// returns its length.
fn write_pktinfo(buf: &mut Control, local: Local) -> usize {
    // SAFETY: `buf` is CONTROL_LEN bytes aligned for `cmsghdr`, enough for
    // one with either packet-info struct (CMSG_SPACE of in6_pktinfo is 40
    // on Linux); the header built here covers exactly that buffer, so the
    // CMSG macros stay within it. The payload is written unaligned.
    unsafe {
        let mut h: libc::msghdr = zeroed();
        h.msg_control = buf.0.as_mut_ptr().cast();
        match local.ip {
            IpAddr::V4(ip) => {
                let space = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
                h.msg_controllen = space as _;
                let c = libc::CMSG_FIRSTHDR(&h);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                libc::CMSG_DATA(c)
                    .cast::<libc::in_pktinfo>()
                    .write_unaligned(info);
                space
            }
            IpAddr::V6(ip) => {
                let space = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
                h.msg_controllen = space as _;
                let c = libc::CMSG_FIRSTHDR(&h);
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: local.ifindex,
                };
                libc::CMSG_DATA(c)
                    .cast::<libc::in6_pktinfo>()
                    .write_unaligned(info);
                space
            }
        }
    }
}
