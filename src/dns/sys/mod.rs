//! The Linux system calls the listeners and the upstream pool share, which
//! neither std nor tokio wraps: batched datagrams with packet info
//! (`recvmmsg`/`sendmmsg`) and an epoll set of our own.

pub mod mmsg;
pub mod poll;
