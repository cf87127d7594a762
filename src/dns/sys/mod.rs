//! The Linux system calls the listeners and the upstream pool share, which
//! neither std nor tokio wraps: batched datagrams with packet info
//! (`recvmmsg`/`sendmmsg`) and an epoll set of our own; and the kernel's
//! count of datagrams dropped at our sockets (`drops`).

pub mod drops;
pub mod mmsg;
pub mod poll;
