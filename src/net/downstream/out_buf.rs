//! A client connection's write buffer. Pingora's stream keeps one
//! allocated for the connection's whole life; this one gathers the small
//! writes of a response (header, then a short body) into one system call,
//! as tokio's `BufWriter` does, and gives its memory back while the
//! connection waits for its next request.

use pingora::protocols::Stream;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;

/// Small writes of a response (header, then a short body) are gathered up to
/// this size and sent in one write: Pingora's default (about one segment).
pub(super) const OUT_CAP: usize = pingora_core::listeners::DEFAULT_L4_WRITE_BUFFER_SIZE;

/// Gathers small writes into one, as tokio's `BufWriter` does, but its
/// memory is given back while the connection waits for a request.
#[derive(Debug, Default)]
pub(super) struct OutBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already written (a flush interrupted by a full socket).
    sent: usize,
}

impl OutBuf {
    /// Writes `buf` to `inner` through the buffer: gathered if small,
    /// behind what is gathered if large.
    pub(super) fn poll_write(
        &mut self,
        inner: &mut Stream,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.len() >= OUT_CAP {
            return self.poll_write_behind(inner, cx, buf);
        }
        if !ready!(self.poll_room(inner, cx, buf.len()))? {
            return Pin::new(inner).poll_write(cx, buf);
        }
        self.gather([buf]);
        Poll::Ready(Ok(buf.len()))
    }

    /// Writes `bufs` to `inner` through the buffer: gathered if they fit,
    /// else to the socket's own vectored write.
    pub(super) fn poll_write_vectored(
        &mut self,
        inner: &mut Stream,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if !ready!(self.poll_room(inner, cx, len))? {
            return Pin::new(inner).poll_write_vectored(cx, bufs);
        }
        self.gather(bufs.iter().map(|b| &b[..]));
        Poll::Ready(Ok(len))
    }

    /// Whether bytes are gathered and not written yet.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The memory held (0 once released).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Writes out everything gathered.
    pub(super) fn poll_flush_into(
        &mut self,
        inner: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            match ready!(Pin::new(&mut *inner).poll_write(cx, &self.buf[self.sent..]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.sent += n,
            }
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes, flushing if they do not fit beside
    /// what is gathered: `true` when they are to be gathered, `false` when
    /// they are too many and go to the socket directly (as `BufWriter`).
    fn poll_room(
        &mut self,
        inner: &mut Stream,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Poll<io::Result<bool>> {
        if self.buf.len() + len > OUT_CAP {
            ready!(self.poll_flush_into(inner, cx))?;
        }
        Poll::Ready(Ok(len < OUT_CAP))
    }

    /// Writes `buf`, too large to gather, behind what is gathered: both in
    /// one vectored write (a response header and its large body go out in
    /// one system call instead of two). Returns how much of `buf` went.
    fn poll_write_behind(
        &mut self,
        inner: &mut Stream,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        while self.sent < self.buf.len() {
            let pending = &self.buf[self.sent..];
            let parts = [io::IoSlice::new(pending), io::IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut *inner).poll_write_vectored(cx, &parts))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n <= pending.len() {
                self.sent += n;
                continue;
            }
            let of_buf = n - pending.len();
            self.buf.clear();
            self.sent = 0;
            return Poll::Ready(Ok(of_buf));
        }
        self.buf.clear();
        self.sent = 0;
        Pin::new(inner).poll_write(cx, buf)
    }

    fn gather<'a>(&mut self, parts: impl IntoIterator<Item = &'a [u8]>) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(OUT_CAP);
        }
        for p in parts {
            self.buf.extend_from_slice(p);
        }
    }

    /// Gives the memory back if nothing is waiting to be written.
    pub(super) fn release(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (OutBuf, Stream, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1024);
        (OutBuf::default(), Box::new(a), b)
    }

    async fn write_all(out: &mut OutBuf, inner: &mut Stream, mut buf: &[u8]) {
        while !buf.is_empty() {
            let n = poll_fn(|cx| out.poll_write(inner, cx, buf)).await.unwrap();
            buf = &buf[n..];
        }
    }

    async fn flush(out: &mut OutBuf, inner: &mut Stream) {
        poll_fn(|cx| out.poll_flush_into(inner, cx)).await.unwrap();
    }

    #[tokio::test]
    async fn a_response_goes_out_in_one_write_and_the_memory_comes_back() {
        let (mut out, mut inner, mut client) = pair();
        write_all(
            &mut out,
            &mut inner,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        )
        .await;
        write_all(&mut out, &mut inner, b"hello").await;
        let mut buf = [0u8; 128];
        let early = tokio::time::timeout(Duration::from_millis(50), client.read(&mut buf)).await;
        assert!(early.is_err(), "sent before the flush: {early:?}");
        flush(&mut out, &mut inner).await;
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(
            &buf[..n],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        );
        assert!(out.capacity() >= OUT_CAP);
        out.release();
        assert_eq!(out.capacity(), 0);
    }

    #[tokio::test]
    async fn mixed_writes_arrive_whole_and_in_order() {
        // The pipe holds 1 KiB: flushes and large writes block half-way
        // until the reader catches up.
        let (mut out, mut inner, mut client) = pair();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut expect = Vec::new();
        for i in 0..300usize {
            let chunk = vec![(i % 251) as u8; (i * 37) % 3000];
            if i % 3 == 0 {
                let (a, b) = chunk.split_at(chunk.len() / 2);
                let parts = [io::IoSlice::new(a), io::IoSlice::new(b)];
                // A vectored write may take only part; write_all the rest.
                let n = poll_fn(|cx| out.poll_write_vectored(&mut inner, cx, &parts))
                    .await
                    .unwrap();
                write_all(&mut out, &mut inner, &chunk[n..]).await;
            } else {
                write_all(&mut out, &mut inner, &chunk).await;
            }
            expect.extend_from_slice(&chunk);
        }
        write_all(&mut out, &mut inner, b"tail").await;
        expect.extend_from_slice(b"tail");
        flush(&mut out, &mut inner).await;
        inner.shutdown().await.unwrap();
        drop(inner);
        assert_eq!(reader.await.unwrap(), expect);
    }
}
