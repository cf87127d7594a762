//! One epoll set per worker, holding its client sockets and its upstream
//! pool, itself registered with the tokio runtime.
//!
//! Why not one tokio task per socket: a worker owns a thousand upstream
//! sockets (for the port entropy, see `upstream::pool`), and a reply on any
//! of them must reach the state that worker owns (its table of waiting
//! queries, its answer batches) without a lock or a channel hop. With one
//! set, one wake-up of the worker hands it every ready socket, as an event
//! loop in C (Unbound's, NSD's) is built. The set is level-triggered, so a
//! socket left with data after a turn's budget is reported again.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

/// What a registered socket is waited on for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Read,
    Write,
}

pub struct Poll {
    fd: AsyncFd<OwnedFd>,
}

/// A ready socket: its token and whether it can be read or written.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
}

impl Poll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an `OwnedFd` stays open and refers to the same epoll set
        // until the `AsyncFd` that owns it is dropped. Only readability is
        // asked for: an epoll set is never written to.
        let fd = unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, wanted: Wanted) -> io::Result<()> {
        let events = match wanted {
            Wanted::Read => libc::EPOLLIN,
            Wanted::Write => libc::EPOLLOUT,
        };
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: both fds are open; `ev` is a valid event struct.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &raw mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add(&self, fd: RawFd, token: u64, wanted: Wanted) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, wanted)
    }

    pub fn change(&self, fd: RawFd, token: u64, wanted: Wanted) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, wanted)
    }

    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, Wanted::Read)
    }

    /// Waits until some socket in the set is ready, then returns up to
    /// `max` of them (never none).
    pub async fn ready(&self, events: &mut Vec<Event>, max: usize) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| match wait(fd.as_raw_fd(), events, max)? {
                // Nothing ready after all: tokio must wait for the next edge.
                0 => Err(io::ErrorKind::WouldBlock.into()),
                _ => Ok(()),
            }) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Returns the sockets ready now, if any, without waiting.
    pub fn try_ready(&self, events: &mut Vec<Event>, max: usize) -> io::Result<bool> {
        loop {
            match wait(self.fd.as_raw_fd(), events, max) {
                Ok(n) => return Ok(n > 0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One non-blocking `epoll_wait` into `events`; returns how many.
fn wait(epfd: RawFd, events: &mut Vec<Event>, max: usize) -> io::Result<usize> {
    // Not zeroed first: the kernel writes the events it returns, and
    // zeroing 768 bytes cost more than the rest of a wait (callgrind:
    // ~60 instructions a call, twice a forwarded query at low rates).
    let mut raw = [const { MaybeUninit::<libc::epoll_event>::uninit() }; 64];
    let max = max.min(raw.len());
    // SAFETY: `raw` has room for `max` events; the kernel only writes.
    let n = unsafe { libc::epoll_wait(epfd, raw.as_mut_ptr().cast(), max as libc::c_int, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (n as usize).min(max);
    events.clear();
    events.extend(raw[..n].iter().map(|e| {
        // SAFETY: epoll_wait initialised the first `n` entries.
        let e = unsafe { e.assume_init_read() };
        let flags = e.events;
        Event {
            token: e.u64,
            readable: flags & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0,
            writable: flags & libc::EPOLLOUT as u32 != 0,
        }
    }));
    Ok(n)
}
