//! TCP connections tuned for small request/answer round trips.
//!
//! An RPC's answer leaves in several small writes (head, envelopes, end of stream), and
//! the official Python SDK sends a request's head and body in two writes with Nagle on.
//! Left at the kernel's defaults, each side's second small write waits for the other side's
//! delayed ACK, 40 ms on Linux, on every round trip of a kept-alive connection. So every
//! accepted connection gets `TCP_NODELAY` (our small writes leave at once) and
//! `TCP_QUICKACK` re-armed after each read (the kernel clears it by itself), so the
//! client's held-back body is released at once too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections answer small round trips without delayed-ACK stalls.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let listener = courier_envd::tcp::LowLatencyListener::new(listener);
/// axum::serve(listener, axum::Router::new()).await
/// # }
/// ```
#[derive(Debug)]
pub struct LowLatencyListener(TcpListener);

impl LowLatencyListener {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener) -> Self {
        Self(listener)
    }

    /// Accepts one connection, tuned; errors as [`TcpListener::accept`].
    pub async fn accept(&self) -> io::Result<(LowLatencyStream, std::net::SocketAddr)> {
        let (stream, addr) = self.0.accept().await?;
        Ok((LowLatencyStream::new(stream), addr))
    }
}

impl axum::serve::Listener for LowLatencyListener {
    type Io = LowLatencyStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own loop over accept errors (EMFILE and the like back off).
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (LowLatencyStream::new(stream), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// An accepted connection with `TCP_NODELAY` set and `TCP_QUICKACK` re-armed on reads.
#[derive(Debug)]
pub struct LowLatencyStream(TcpStream);

impl From<TcpStream> for LowLatencyStream {
    /// Tunes a connection accepted elsewhere (a hand-rolled accept loop).
    fn from(stream: TcpStream) -> Self {
        Self::new(stream)
    }
}

impl LowLatencyStream {
    fn new(stream: TcpStream) -> Self {
        // Only latency is at stake: a socket that refuses these still carries the traffic.
        let _ = stream.set_nodelay(true);
        let _ = rustix::net::sockopt::set_tcp_quickack(&stream, true);
        Self(stream)
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &TcpStream {
        &self.0
    }
}

impl AsyncRead for LowLatencyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // The kernel leaves quick-ACK mode on its own after a few segments.
            let _ = rustix::net::sockopt::set_tcp_quickack(&self.0, true);
        }
        polled
    }
}

impl AsyncWrite for LowLatencyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
