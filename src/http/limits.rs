//! The admin API's connection limits (SPEC "Holding up"): at most
//! [`MAX_CONNECTIONS`] open, and none past the process's descriptor budget
//! (`fds`), past which new ones are closed at once; a
//! request's headers must arrive within [`HEADER_TIMEOUT`] of its first
//! byte (or of the connection's opening); a connection idle for
//! [`IDLE_TIMEOUT`] between requests is closed. The block page has the
//! same limits in its own loop (`conn.rs`, and its own `fds::Slots`); the
//! admin API is axum's, so they live in the listener and the stream it
//! hands out.
//!
//! The stream cannot see requests, only bytes: a read that waits past its
//! deadline fails, and hyper closes the connection. The deadline is 10 s
//! from the opening or from the first byte after a response, until the
//! blank line that ends the headers (then none while the request is
//! handled: a reload may wait 30 s for a download), and 60 s from a
//! response.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::fds::{self, Slot, Slots};

/// As the block page's: room for a burst of operators' and scripts'
/// requests (200 concurrent `POST /reload`s share one rebuild), while a
/// flood of idle connections holds at most this many descriptors.
pub const MAX_CONNECTIONS: usize = 512;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A listener that keeps to [`MAX_CONNECTIONS`].
pub struct Limited {
    inner: TcpListener,
    slots: Arc<Slots>,
}

impl Limited {
    pub fn new(inner: TcpListener) -> Self {
        Self {
            inner,
            slots: Slots::new(MAX_CONNECTIONS),
        }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Deadlined;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr, slot) = fds::accept(&self.inner, &self.slots, "admin").await;
        (Deadlined::new(stream, slot), addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection whose reads fail past their deadline.
pub struct Deadlined {
    stream: TcpStream,
    deadline: Pin<Box<Sleep>>,
    /// Bytes of a request have arrived since the last response.
    in_request: bool,
    /// The request's headers are all in (they ended with a blank line):
    /// no deadline while it is handled, however long (a reload may wait
    /// 30 s for a download).
    handling: bool,
    /// The last four bytes read, to see the blank line.
    tail: [u8; 4],
    /// Its place under the cap and its descriptor (`fds`).
    _slot: Slot,
}

impl Deadlined {
    fn new(stream: TcpStream, slot: Slot) -> Self {
        Self {
            stream,
            deadline: Box::pin(tokio::time::sleep(HEADER_TIMEOUT)),
            in_request: false,
            handling: false,
            tail: [0; 4],
            _slot: slot,
        }
    }

    fn responded(&mut self) {
        if self.in_request {
            // The next request may come within the idle time.
            self.in_request = false;
            self.handling = false;
            self.tail = [0; 4];
            self.deadline.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
        }
    }
}

impl AsyncRead for Deadlined {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() {
                    if !self.in_request {
                        self.in_request = true;
                        self.deadline
                            .as_mut()
                            .reset(Instant::now() + HEADER_TIMEOUT);
                    }
                    for &b in new {
                        self.tail = [self.tail[1], self.tail[2], self.tail[3], b];
                    }
                    if &self.tail == b"\r\n\r\n" {
                        self.handling = true;
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.handling => Poll::Pending,
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "admin connection: request headers or next request too slow",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Deadlined {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(_))) {
            self.responded();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(_))) {
            self.responded();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
