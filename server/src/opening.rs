//! A connection's first bytes, read before the protocol's own state exists: what a silent or
//! trickling peer (a flood of half-open connections) costs us is then a small task and the
//! bytes it sent, not an 8 KiB HTTP/1 buffer, an RTMP handshake's state and a connection
//! future of several KiB.
//!
//! [`read_opening`] reads into a buffer that grows with what arrives, until the opening is
//! complete (an HTTP header's blank line, an RTMP connection's first 1,537 bytes: C0+C1, or a
//! PROXY header and most of them), a size bound, the deadline or the end; the caller then builds its connection state, boxed so that the spawned task stays
//! small while it waits, and feeds it the opening ([`Rewind`] puts the bytes back in front of
//! the stream for a library that reads the stream itself).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// How much the opening buffer grows at a time: a peer that trickles holds about what it
/// sent, and a complete opening of a few hundred bytes takes one or two reads.
const OPENING_STEP: usize = 512;

/// Read `io` until `complete` says the bytes so far are a whole opening, or `max` bytes are
/// in, before `until`. Errors: `TimedOut` at the deadline, `UnexpectedEof` if the peer closed
/// first, or the socket's own.
pub async fn read_opening<S>(
    io: &mut S,
    until: tokio::time::Instant,
    max: usize,
    complete: impl Fn(&[u8]) -> bool,
) -> io::Result<Vec<u8>>
where
    S: AsyncRead + Unpin,
{
    let mut buf = Vec::new();
    loop {
        if buf.len() >= max || (!buf.is_empty() && complete(&buf)) {
            return Ok(buf);
        }
        buf.reserve((max - buf.len()).min(OPENING_STEP));
        let want = (max - buf.len()).min(buf.capacity() - buf.len());
        let read = {
            let mut limited = (&mut *io).take(want as u64);
            tokio::time::timeout_at(until, limited.read_buf(&mut buf)).await
        };
        match read {
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(_)) => {}
        }
    }
}

/// An HTTP opening is complete at the blank line that ends the first request's header (an
/// HTTP/2 preface has one too: `PRI * HTTP/2.0\r\n\r\n`), with CRLF or bare LF line ends as
/// hyper takes them.
pub fn http_head_complete(b: &[u8]) -> bool {
    b.windows(2).any(|w| w == b"\n\n") || b.windows(3).any(|w| w == b"\n\r\n")
}

/// A stream with bytes already read from it put back in front.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix: Bytes::from(prefix),
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Give the memory back now, not when the connection ends.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "opening_test.rs"]
mod tests;
