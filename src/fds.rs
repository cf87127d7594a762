//! The open-file budget: how many descriptors client connections may hold.
//!
//! A service started with the usual soft limit of 1,024 open files used to
//! let idle connections to the DNS or admin port take every descriptor,
//! after which the upstream stage could not open a socket (every uncached
//! query SERVFAILed) and nothing could be accepted even to be closed. Now:
//!
//! - at start the soft limit is raised to the hard one ([`raise_limit`]);
//! - the upstream pools are sized from what that allows (`app.rs`) and
//!   opened before any client is accepted;
//! - once every listener and pool is open, what is left, less
//!   [`HEADROOM`], is the budget of client connections ([`settle`]), shared
//!   by DNS over TCP, the admin API and the block page, each also under
//!   its own cap;
//! - a connection past the budget is accepted and closed at once (accept
//!   needs one descriptor for a moment; the headroom has it).
//!
//! UDP needs no descriptor per client, so cached, blocked and forwarded
//! answers keep flowing however many connections wait.
//!
//! The budget is one per process, as the limit is: a static, so the three
//! listeners and their tests need no handle passed down to them.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Descriptors kept out of the connection budget for everything else the
/// server opens while it runs: list files and the watcher, downloads, the
/// state directory, upstream TCP retries, health probes, the pool's
/// socket renewals, accept's momentary one.
pub const HEADROOM: usize = 256;

static HELD: AtomicUsize = AtomicUsize::new(0);
/// No cap until [`settle`] has measured one.
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);

/// One client connection's descriptor, given back on drop.
#[derive(Debug)]
pub struct FdPermit(());

impl Drop for FdPermit {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A permit for one more client connection, or `None` when the budget is
/// spent (close the connection).
pub fn take() -> Option<FdPermit> {
    let held = HELD.fetch_add(1, Ordering::Relaxed);
    if held >= CAP.load(Ordering::Relaxed) {
        HELD.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(FdPermit(()))
}

/// What [`settle`] found.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub limit: u64,
    /// Open when measured, connections aside.
    pub open: usize,
    /// Client connections allowed at once.
    pub connections: usize,
}

/// Measures the descriptors open now and sets the connection budget to
/// what the limit leaves, less [`HEADROOM`]. Call once every listener and
/// upstream pool is open.
pub fn settle() -> Budget {
    let limit = current_limit();
    let held = HELD.load(Ordering::Relaxed);
    let open = open_descriptors().map_or(0, |n| n.saturating_sub(held));
    let connections = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(open)
        .saturating_sub(HEADROOM);
    CAP.store(connections, Ordering::Relaxed);
    Budget {
        limit,
        open,
        connections,
    }
}

fn open_descriptors() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

fn current_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain system call on a struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// Raises the open-file soft limit to the hard limit; returns the limit
/// now in force.
pub fn raise_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on structs we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}
