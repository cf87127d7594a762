//! sinkhole: a DNS sinkhole resolver.
//!
//! The path of a query, top to bottom: `dns::listen` reads it, the chain in
//! `dns::pipeline` answers it (parse, access, policy, cache, upstream,
//! response), and it leaves as one `dns::record::QueryRecord` for
//! `observe` (which feeds `metrics`). Lists come in through `lists` and
//! `reload`, which build the `policy` snapshots the pipeline reads;
//! `http::admin` serves the operators.
//!
//! `serve` is for Linux: its listeners use `recvmmsg`/`sendmmsg`, packet
//! info and epoll directly.

pub mod app;
pub mod config;
pub mod diff;
pub mod dns;
pub mod fds;
pub mod http;
pub mod keyed;
pub mod lists;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod reload;

#[cfg(not(target_os = "linux"))]
compile_error!("sinkhole's listeners use Linux system calls (recvmmsg, sendmmsg, epoll)");
