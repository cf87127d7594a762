//! One query over TCP to one upstream, for replies that came back
//! truncated over UDP.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dns::wire::tcp_frame;

/// Sends `query` and reads one framed message back. Matching it to the
/// query is the caller's job, as for UDP.
pub async fn exchange(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    tcp_frame(query, &mut framed)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    stream.write_all(&framed).await?;
    let len = usize::from(stream.read_u16().await?);
    let mut reply = vec![0u8; len];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}
