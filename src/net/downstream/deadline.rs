//! The client connection's stream: [`HeaderDeadline`] wraps the socket
//! and fails its reads once a request header has taken longer than
//! `limits.client_header_timeout`: from accept for the first request, from
//! the first byte for later ones (before that byte the connection is idle
//! and `keepalive_timeout` applies). Pingora times each read separately (60
//! s, or the keepalive timeout on a reused connection), so without it a
//! client sending one byte now and then would hold the connection forever.
//! The proxy stops the clock when the header is complete
//! ([`header_received`]) and rearms it when the request is done
//! ([`expect_next_header`]); the connection is then closed without an
//! answer, as nginx does.
//!
//! The stream also counts the connections in the middle of a request
//! header (stub_status `Reading`, and the cleanup's wait), tells the
//! keepalive loop whether Pingora holds bytes of a next request
//! ([`HeaderDeadline::consumed_all`]), writes through the connection's
//! [`OutBuf`], and passes Pingora's stream traits through to the socket.

use super::out_buf::OutBuf;
use async_trait::async_trait;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    raw_connect::ProxyDigest, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown,
    SocketDigest, Ssl, TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where the first empty line of `buf` ends. Never past the end of the
/// request header that Pingora parses (leading empty lines, which it skips,
/// only make this shorter), which is what [`HeaderDeadline::consumed_all`]
/// relies on.
pub(super) fn header_end(buf: &[u8]) -> Option<usize> {
    // memchr finds the line ends without looking at each byte in turn: a
    // browser's header has a dozen lines in 500 bytes.
    memchr::memchr_iter(b'\n', buf).find_map(|i| match &buf[i + 1..] {
        [b'\n', ..] => Some(i + 2),
        [b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

/// Milliseconds on the process clock, never 0 (0 means "no deadline").
pub(super) use crate::clock::now_ms as clock_ms;

/// A client connection's stream with a deadline for reading a request header.
#[derive(Debug)]
pub struct HeaderDeadline {
    inner: Stream,
    /// `client_header_timeout` in ms.
    timeout_ms: AtomicU64,
    /// When the current header must be complete ([`clock_ms`]); 0: no clock.
    deadline_ms: AtomicU64,
    /// Start the clock at the next byte read.
    armed: AtomicBool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A request header is expected (from accept, and after each request).
    awaiting: AtomicBool,
    /// Bytes of that header arrived; counted in `partial_count`.
    partial: AtomicBool,
    partial_count: Option<Arc<AtomicUsize>>,
    out: OutBuf,
    /// Bytes handed to Pingora for the current request: its start and every
    /// read since. Pingora holds nothing of a next request when this equals
    /// the request's length on the wire (see [`Self::consumed_all`]).
    given: u64,
    /// The current request header's length, when it was seen whole here.
    header_len: Option<u64>,
    /// Its body's length, once the header is parsed; `u64::MAX`: unknown
    /// (chunked, or not parsed).
    body_len: AtomicU64,
}

impl HeaderDeadline {
    /// A new connection: the first header must be complete within `timeout`.
    pub fn new(inner: Stream, timeout: Duration) -> Self {
        let ms = timeout.as_millis() as u64;
        HeaderDeadline {
            inner,
            timeout_ms: AtomicU64::new(ms),
            deadline_ms: AtomicU64::new(clock_ms() + ms),
            armed: AtomicBool::new(false),
            sleep: None,
            awaiting: AtomicBool::new(true),
            partial: AtomicBool::new(false),
            partial_count: None,
            out: OutBuf::default(),
            given: 0,
            header_len: None,
            body_len: AtomicU64::new(u64::MAX),
        }
    }

    /// A session starts with `start` (`None`: with what Pingora kept).
    pub(super) fn begin_request(&mut self, start: Option<&[u8]>) {
        self.given = start.map_or(0, |s| s.len() as u64);
        self.header_len = start.and_then(header_end).map(|n| n as u64);
        self.body_len.store(u64::MAX, Relaxed);
    }

    /// Whether Pingora was given exactly the current request and nothing
    /// past it. Pingora reads only through this stream, so when the header
    /// and body lengths add up to what it was given, it holds no byte of a
    /// next request; otherwise it may (pipelining), and the next session
    /// must start without waiting for the client.
    pub(super) fn consumed_all(&self) -> bool {
        let body = self.body_len.load(Relaxed);
        match self.header_len {
            Some(header) if body != u64::MAX => header.saturating_add(body) == self.given,
            _ => false,
        }
    }

    /// Counts this connection in `count` while it is in the middle of a header.
    pub(super) fn counting(mut self, count: Arc<AtomicUsize>) -> Self {
        self.partial_count = Some(count);
        self
    }

    fn set_partial(&self, on: bool) {
        if self.partial.swap(on, Relaxed) != on {
            if let Some(c) = &self.partial_count {
                if on {
                    c.fetch_add(1, Relaxed);
                } else {
                    c.fetch_sub(1, Relaxed);
                }
            }
        }
    }

    /// Gives the write buffer's memory back (the connection is idle).
    pub(super) fn release_out(&mut self) {
        self.out.release();
    }

    /// The write buffer's memory (0 once released).
    #[cfg(test)]
    pub(super) fn out_capacity(&self) -> usize {
        self.out.capacity()
    }

    fn of(session: &Session) -> Option<&HeaderDeadline> {
        session.as_ref().stream()?.as_any().downcast_ref()
    }
}

/// The request header is complete: stop the clock, and note the body's
/// length on the wire (`None`: not known from the header, chunked) for
/// [`HeaderDeadline::consumed_all`].
pub(crate) fn header_received(session: &Session, body_len: Option<u64>) {
    if let Some(h) = HeaderDeadline::of(session) {
        h.body_len.store(body_len.unwrap_or(u64::MAX), Relaxed);
        h.armed.store(false, Relaxed);
        h.deadline_ms.store(0, Relaxed);
        h.awaiting.store(false, Relaxed);
        h.set_partial(false);
    }
}

/// The request is done: the next header gets `timeout` from its first byte.
pub(crate) fn expect_next_header(session: &Session, timeout: Duration) {
    if let Some(h) = HeaderDeadline::of(session) {
        h.timeout_ms.store(timeout.as_millis() as u64, Relaxed);
        h.deadline_ms.store(0, Relaxed);
        h.armed.store(true, Relaxed);
        h.awaiting.store(true, Relaxed);
    }
}

impl Drop for HeaderDeadline {
    fn drop(&mut self) {
        self.set_partial(false);
        // Pingora does not flush a response cut short by an upstream error;
        // its own stream sends what it buffered when dropped, if the socket
        // takes it at once. So does this one: the client sees the response
        // end early instead of no response at all.
        if !self.out.is_empty() {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = self.out.poll_flush_into(&mut self.inner, &mut cx);
        }
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.given += (buf.filled().len() - before) as u64;
                    if this.armed.swap(false, Relaxed) {
                        let deadline = clock_ms() + this.timeout_ms.load(Relaxed);
                        this.deadline_ms.store(deadline, Relaxed);
                    }
                    if this.awaiting.load(Relaxed) {
                        this.set_partial(true);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = this.deadline_ms.load(Relaxed);
                if deadline == 0 {
                    return Poll::Pending;
                }
                let when = tokio::time::Instant::from_std(
                    crate::clock::process_start()
                        + Duration::from_millis(deadline.saturating_sub(1)),
                );
                let sleep = match &mut this.sleep {
                    Some(s) => {
                        if s.deadline() != when {
                            s.as_mut().reset(when);
                        }
                        s
                    }
                    None => this.sleep.insert(Box::pin(tokio::time::sleep_until(when))),
                };
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "limits.client_header_timeout: request header not complete in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.out.poll_write(&mut this.inner, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.out.poll_flush_into(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.out.poll_flush_into(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.out.poll_write_vectored(&mut this.inner, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true // small slices are gathered, large ones go to the socket's writev
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        let this = &mut *self;
        if let Err(e) = poll_fn(|cx| this.out.poll_flush_into(&mut this.inner, cx)).await {
            log::debug!("client connection: last bytes not written at shutdown: {e}");
        }
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection whose client side is the returned pipe end.
    pub(in crate::net::downstream) fn pair() -> (HeaderDeadline, tokio::io::DuplexStream, Duration)
    {
        let (a, b) = tokio::io::duplex(1024);
        let t = Duration::from_millis(300);
        (HeaderDeadline::new(Box::new(a), t), b, t)
    }

    #[tokio::test]
    async fn a_trickling_header_is_cut_off() {
        let (mut s, mut client, t) = pair();
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            for _ in 0..20 {
                if client.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let mut buf = [0u8; 16];
        let err = loop {
            match s.read(&mut buf).await {
                Ok(0) => panic!("eof"),
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= t && start.elapsed() < t * 3);
        writer.abort();
    }

    #[tokio::test]
    async fn headers_in_progress_are_counted() {
        let (s, mut client, _) = pair();
        let count = Arc::new(AtomicUsize::new(0));
        let mut s = s.counting(Arc::clone(&count));
        let mut buf = [0u8; 16];
        client.write_all(b"GE").await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap(), 2);
        assert_eq!(count.load(Relaxed), 1);
        // header_received
        s.awaiting.store(false, Relaxed);
        s.set_partial(false);
        assert_eq!(count.load(Relaxed), 0);
        client.write_all(b"body").await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap(), 4);
        assert_eq!(count.load(Relaxed), 0, "body bytes are not a header");
        // expect_next_header, then the next request begins
        s.awaiting.store(true, Relaxed);
        client.write_all(b"G").await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap(), 1);
        assert_eq!(count.load(Relaxed), 1);
        drop(s);
        assert_eq!(count.load(Relaxed), 0, "a closed connection is not counted");
    }

    #[tokio::test]
    async fn gathered_bytes_go_out_at_shutdown_or_when_dropped_unflushed() {
        let part = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123";
        for shut_down in [true, false] {
            let (mut s, mut client, _) = pair();
            s.write_all(part).await.unwrap();
            if shut_down {
                // How Pingora closes a connection.
                Shutdown::shutdown(&mut s).await;
            }
            // Pingora drops the session after an upstream error mid-body
            // without a flush (tests/integration/upstream_misbehaviour.rs).
            drop(s);
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, part);
        }
    }

    #[tokio::test]
    async fn no_clock_after_the_header_and_rearmed_at_the_next_byte() {
        let (mut s, mut client, t) = pair();
        s.deadline_ms.store(0, Relaxed); // header_received
        let mut buf = [0u8; 16];
        // Idle longer than the timeout: nothing happens.
        let idle = tokio::time::timeout(t * 2, s.read(&mut buf)).await;
        assert!(idle.is_err(), "read returned {idle:?}");
        // expect_next_header: the clock starts at the next byte.
        s.armed.store(true, Relaxed);
        client.write_all(b"G").await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap(), 1);
        let start = Instant::now();
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < t * 2);
    }
}
