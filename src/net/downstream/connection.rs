//! Limits per client connection that Pingora's HTTP/1 server has no knob
//! for: `limits.max_connections` (excess connections are closed at once and
//! counted, so stub_status `handled` falls behind `accepts` as in nginx) and
//! `limits.client_header_timeout` as a deadline for a whole request header.
//!
//! Pingora times each read of a header separately (60 s, or the keepalive
//! timeout on a reused connection), so a client sending one byte now and
//! then would hold the connection forever. [`HeaderDeadline`] wraps the
//! connection's stream and fails its reads once the header has taken longer
//! than `client_header_timeout`: from accept for the first request, from the
//! first byte for later ones (before that byte, the connection is idle and
//! `keepalive_timeout` applies). The proxy stops the clock when the header is
//! complete ([`header_received`]) and rearms it when the request is done
//! ([`expect_next_header`]). The connection is then closed without an answer,
//! as nginx does.
//!
//! Between requests an HTTP/1 connection is held here, not in Pingora:
//! [`ClientLimits`] runs the keepalive loop itself and waits for each
//! request's header ([`HeaderDeadline::wait_for_request`]) before it
//! creates Pingora's session and hands those bytes over as the start of the
//! request. Pingora's own loop creates the next session at once and keeps
//! its request future (~9 KB), its header buffer (4 KB) and its loop future
//! (~4 KB) allocated while the client is idle; here an idle connection costs
//! the stream, the task and these small wrappers (deploy/bench, scenario e).
//! For the same reason the connection's write buffer lives here too
//! ([`OutBuf`]) and exists only while a response is being written, where
//! Pingora's stream keeps one allocated for the connection's whole life.
//! fulcrum speaks plain HTTP/1 only, so Pingora's h2c and ALPN branches of
//! that loop are not needed.
//!
//! It also counts the connections whose request header has begun but is not
//! complete. When the process leaves (upgrade or stop), Pingora's cleanup
//! drops every connection waiting for a request header, including one whose
//! client is still sending it (a slow client, or a large header); the
//! cleanup is therefore held back until those headers are complete, at most
//! `client_header_timeout`, so that their requests are answered (with
//! `Connection: close`) instead of cut.

use crate::net::workers::PerWorker;
use crate::proxy::limits::DeclaredBody;
use crate::runtime::SharedRuntime;
use crate::status::Counters;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    raw_connect::ProxyDigest, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown,
    SocketDigest, Ssl, TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{futures::Notified, Notify};

/// What one read takes while waiting for a request: a typical header in one
/// go (Pingora starts its header buffer at this size too).
const FIRST_READ: usize = 4096;

/// A header not complete within this many bytes is left for Pingora to read
/// on (and for the header size limit to answer, 431).
const WHOLE_HEADER_CAP: usize = 64 * 1024;

/// Whether `buf` holds a whole request header: an empty line (CRLF or bare
/// LF, both of which Pingora's parser accepts) after the request line.
fn header_complete(buf: &[u8]) -> bool {
    // The usual case: the read ends with the header (no body yet).
    buf.ends_with(b"\r\n\r\n") || header_end(buf).is_some()
}

/// Where the first empty line of `buf` ends. Never past the end of the
/// request header that Pingora parses (leading empty lines, which it skips,
/// only make this shorter), which is what [`HeaderDeadline::holds_nothing_more`]
/// relies on.
fn header_end(buf: &[u8]) -> Option<usize> {
    // memchr finds the line ends without looking at each byte in turn: a
    // browser's header has a dozen lines in 500 bytes.
    memchr::memchr_iter(b'\n', buf).find_map(|i| match &buf[i + 1..] {
        [b'\n', ..] => Some(i + 2),
        [b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

/// Small writes of a response (header, then a short body) are gathered up to
/// this size and sent in one write: Pingora's default (about one segment).
const OUT_CAP: usize = pingora_core::listeners::DEFAULT_L4_WRITE_BUFFER_SIZE;

/// Wraps the HTTP app (one per worker thread): refuses connections above
/// `limits.max_connections` and gives each accepted one a [`HeaderDeadline`].
pub struct ClientLimits<A> {
    inner: PerWorker<A>,
    runtime: SharedRuntime,
    counters: Arc<Counters>,
    open: Arc<AtomicUsize>,
    /// Connections in the middle of sending a request header (stub_status
    /// `Reading`).
    partial: Arc<AtomicUsize>,
    /// Set by the cleanup: connections waiting for a request close.
    closing: AtomicBool,
    closed: Notify,
}

impl<A> ClientLimits<A> {
    /// Applies the limits of the current runtime (a reload changes them) to `inner`.
    pub fn new(inner: PerWorker<A>, runtime: SharedRuntime, counters: Arc<Counters>) -> Self {
        ClientLimits {
            inner,
            runtime,
            partial: counters.reading_count(),
            counters,
            open: Arc::new(AtomicUsize::new(0)),
            closing: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    /// Waits for the next request's header: `None` when the
    /// connection is to close (client gone, header or keepalive timeout, the
    /// process leaving: `closed` is this connection's registration with the
    /// cleanup's notification, made once per connection because it takes
    /// the `Notify`'s lock, shared by all connections).
    async fn next_request(
        &self,
        conn: &mut HeaderDeadline,
        first: bool,
        mut closed: Pin<&mut Notified<'_>>,
    ) -> Option<BytesMut> {
        if self.closing.load(Relaxed) {
            return None;
        }
        // The first request's wait is bounded by client_header_timeout from
        // accept (HeaderDeadline), a later one's by keepalive_timeout.
        let keepalive = self.runtime.load().config.limits.keepalive_timeout;
        let read = conn.wait_for_request((!first).then_some(keepalive));
        tokio::select! {
            biased;
            r = read => r.unwrap_or_else(|e| {
                log::debug!("client connection closed while waiting for a request: {e}");
                None
            }),
            _ = closed.as_mut() => None,
        }
    }
}

struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for ClientLimits<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let (max, header_timeout) = {
            let rt = self.runtime.load();
            let l = &rt.config.limits;
            (l.max_connections, l.client_header_timeout)
        };
        let open = Open(Arc::clone(&self.open));
        let now_open = open.0.fetch_add(1, Relaxed) + 1;
        if max > 0 && now_open > max {
            self.counters.connection_dropped();
            log_refusal(max);
            return None; // dropping the stream closes the connection
        }
        let mut conn = Box::new(
            HeaderDeadline::new(stream, header_timeout).counting(Arc::clone(&self.partial)),
        );
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        // Pingora may already hold the next request's first bytes (the
        // client pipelined): its session must start at once, since waiting
        // here for more bytes would wait for a client that waits for us.
        let mut pipelined = false;
        // Registered before `closing` is read (in next_request), so a cleanup
        // in between still wakes it; a notification that arrives during a
        // request is kept and closes the connection after that request.
        let closed = self.closed.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        // Pingora's HTTP/1 keepalive loop (its ServerApp for HTTP apps), with
        // the wait for each request moved ahead of the session (module doc).
        loop {
            let start = if pipelined {
                if self.closing.load(Relaxed) {
                    break;
                }
                conn.out.release();
                None
            } else {
                match self.next_request(&mut conn, first, closed.as_mut()).await {
                    Some(start) => Some(start),
                    None => break,
                }
            };
            let session = new_session(conn, start, settings.take(), shutdown);
            // This worker thread's proxy (the connection stays on the thread).
            let app = self.inner.current();
            let Some(reused) = app.process_new_http(session, shutdown).await else {
                break;
            };
            let (stream, next_settings) = reused.consume();
            settings = next_settings;
            conn = match stream.into_any().downcast::<HeaderDeadline>() {
                Ok(c) => c,
                Err(_) => break, // not ours: cannot happen, close to be safe
            };
            // Once pipelined, Pingora's session reads each following request
            // itself: the bytes it holds are not visible from here.
            pipelined = pipelined || !conn.consumed_all();
            first = false;
        }
        drop(open);
        None
    }

    /// The listeners have stopped: let headers being received complete (at
    /// most `client_header_timeout`) before the inner cleanup drops every
    /// connection waiting for a request.
    async fn cleanup(&self) {
        let limit = self.runtime.load().config.limits.client_header_timeout;
        let until = Instant::now() + limit;
        let waiting = self.partial.load(Relaxed);
        if waiting > 0 {
            log::info!("waiting up to {limit:?} for {waiting} request header(s) being received");
        }
        while self.partial.load(Relaxed) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.closing.store(true, Relaxed);
        self.closed.notify_waiters();
        for app in self.inner.all() {
            app.http_cleanup().await;
        }
    }
}

/// Pingora's session for the next request: one that begins with `start`,
/// or, with `None`, one whose first bytes Pingora kept from the previous
/// request (carried in `settings`) or reads itself. Built outside the
/// connection's future: a session made there (and borrowed, to set it up)
/// keeps its ~0.8 KB in that future for the connection's life, idle or not.
fn new_session(
    mut conn: Box<HeaderDeadline>,
    start: Option<BytesMut>,
    settings: Option<HttpPersistentSettings>,
    shutdown: &ShutdownWatch,
) -> ServerSession {
    conn.begin_request(start.as_deref());
    let mut session = ServerSession::new_http1(conn);
    match settings {
        // Carries the pipelining switch and any bytes of the next request.
        Some(s) => s.apply_to_session(&mut session),
        None => {
            // As Pingora: 60 s per read; the proxy sets the configured
            // keepalive once it has the request.
            session.set_keepalive((!*shutdown.borrow()).then_some(60));
            // Requests the client pipelined are answered in order (RFC 9112
            // §9.3.2); without this Pingora closes the connection after the
            // first of them.
            session.set_pipelining_enabled(true);
        }
    }
    if let Some(start) = start {
        session.set_pipelined_prefix(start);
    }
    session
}

/// One warning per second at most: a flood must not flood the log too.
fn log_refusal(max: usize) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = clock_ms();
    let last = LAST.load(Relaxed);
    if now.saturating_sub(last) >= 1000
        && LAST.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
    {
        log::warn!("limits.max_connections ({max}) reached: closing new connections at once");
    }
}

/// Milliseconds since the first call, never 0 (0 means "no deadline").
fn clock_ms() -> u64 {
    base().elapsed().as_millis() as u64 + 1
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

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

/// Gathers small writes into one, as tokio's `BufWriter` does, but its
/// memory is given back while the connection waits for a request.
#[derive(Debug, Default)]
struct OutBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already written (a flush interrupted by a full socket).
    sent: usize,
}

impl OutBuf {
    /// Writes out everything gathered.
    fn poll_flush_into(
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
    fn release(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
    }
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
    fn begin_request(&mut self, start: Option<&[u8]>) {
        self.given = start.map_or(0, |s| s.len() as u64);
        self.header_len = start.and_then(header_end).map(|n| n as u64);
        self.body_len.store(u64::MAX, Relaxed);
    }

    /// Whether Pingora was given exactly the current request and nothing
    /// past it. Pingora reads only through this stream, so when the header
    /// and body lengths add up to what it was given, it holds no byte of a
    /// next request; otherwise it may (pipelining), and the next session
    /// must start without waiting for the client.
    fn consumed_all(&self) -> bool {
        let body = self.body_len.load(Relaxed);
        match self.header_len {
            Some(header) if body != u64::MAX => header.saturating_add(body) == self.given,
            _ => false,
        }
    }

    /// Counts this connection in `count` while it is in the middle of a header.
    pub fn counting(mut self, count: Arc<AtomicUsize>) -> Self {
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

    /// Waits until the client sends the next request and returns its whole
    /// header (and whatever followed it in the same reads; `None`: the
    /// client closed, stayed idle `idle_timeout`, or stopped in the middle
    /// of the header). The reads go
    /// through the deadline, so the first request's `client_header_timeout`
    /// still counts from accept, and a later one's from its first byte.
    ///
    /// The header is read whole here, not by Pingora, so that a client that
    /// closes or times out in the middle of one is logged at info as nginx
    /// does: Pingora logs it as an error before any hook of fulcrum's runs.
    pub async fn wait_for_request(
        &mut self,
        idle_timeout: Option<Duration>,
    ) -> io::Result<Option<BytesMut>> {
        // The previous response is flushed (Pingora flushes at its end).
        self.out.release();
        let first = match idle_timeout {
            None => self.first_bytes().await?,
            // Idle that long: close (only the wait for a first byte counts).
            Some(t) => tokio::time::timeout(t, self.first_bytes())
                .await
                .unwrap_or(Ok(None))?,
        };
        let Some(mut start) = first else {
            return Ok(None);
        };
        while !header_complete(&start) && start.len() < WHOLE_HEADER_CAP {
            start.reserve(FIRST_READ);
            let read = tokio::io::AsyncReadExt::read_buf(self, &mut start).await;
            let e = match read {
                Ok(0) => io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"),
                Ok(_) => continue,
                Err(e) => e,
            };
            let peer = self
                .get_socket_digest()
                .and_then(|d| d.peer_addr().cloned());
            let peer = peer.map_or_else(String::new, |p| format!("{p}: "));
            log::info!(
                "client error: {peer}request header incomplete after {} bytes: {e}",
                start.len()
            );
            return Ok(None);
        }
        Ok(Some(start))
    }

    /// The first bytes of the next request (`None`: the client closed).
    async fn first_bytes(&mut self) -> io::Result<Option<BytesMut>> {
        poll_fn(|cx| {
            // On the stack for this poll only, so nothing is held while idle.
            let mut space = [MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut buf = ReadBuf::uninit(&mut space);
            match Pin::new(&mut *self).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Ok(None)),
                Poll::Ready(Ok(())) => {
                    let mut start = BytesMut::with_capacity(FIRST_READ);
                    start.extend_from_slice(buf.filled());
                    Poll::Ready(Ok(Some(start)))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    fn of(session: &Session) -> Option<&HeaderDeadline> {
        session.as_ref().stream()?.as_any().downcast_ref()
    }
}

/// The request header is complete: stop the clock, and note the body's
/// length for [`HeaderDeadline::consumed_all`].
pub fn header_received(session: &Session, body: DeclaredBody) {
    if let Some(h) = HeaderDeadline::of(session) {
        h.body_len
            .store(body.wire_length().unwrap_or(u64::MAX), Relaxed);
        h.armed.store(false, Relaxed);
        h.deadline_ms.store(0, Relaxed);
        h.awaiting.store(false, Relaxed);
        h.set_partial(false);
    }
}

/// The request is done: the next header gets `timeout` from its first byte.
pub fn expect_next_header(session: &Session, timeout: Duration) {
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
        if !self.out.buf.is_empty() {
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
                    base() + Duration::from_millis(deadline.saturating_sub(1)),
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
        if buf.len() >= OUT_CAP {
            return this.out.poll_write_behind(&mut this.inner, cx, buf);
        }
        if !ready!(this.out.poll_room(&mut this.inner, cx, buf.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.out.gather([buf]);
        Poll::Ready(Ok(buf.len()))
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
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if !ready!(this.out.poll_room(&mut this.inner, cx, len))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        this.out.gather(bufs.iter().map(|b| &b[..]));
        Poll::Ready(Ok(len))
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
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_header_is_complete_at_its_empty_line() {
        assert!(header_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(header_complete(b"GET / HTTP/1.1\nHost: a\n\n"));
        assert!(header_complete(
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
        ));
        assert!(header_complete(
            b"GET / HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n"
        ));
        assert!(!header_complete(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!header_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r"));
        assert!(!header_complete(b"GET / HTT"));
        assert!(!header_complete(b""));
    }

    fn pair() -> (HeaderDeadline, tokio::io::DuplexStream, Duration) {
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
    async fn a_response_goes_out_in_one_write_and_an_idle_connection_holds_no_buffer() {
        let (mut s, mut client, _) = pair();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            .await
            .unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 128];
        let early = tokio::time::timeout(Duration::from_millis(50), client.read(&mut buf)).await;
        assert!(early.is_err(), "sent before the flush: {early:?}");
        s.flush().await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(
            &buf[..n],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        );
        assert!(s.out.buf.capacity() >= OUT_CAP);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let start = s.wait_for_request(None).await.unwrap().unwrap();
        assert_eq!(&start[..], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(s.out.buf.capacity(), 0, "buffer kept while waiting");
    }

    #[tokio::test]
    async fn gathered_bytes_go_out_when_the_connection_is_dropped_unflushed() {
        // Pingora drops the session after an upstream error mid-body
        // without a flush (tests/upstream_misbehaviour.rs).
        let (mut s, mut client, _) = pair();
        let part = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123";
        s.write_all(part).await.unwrap();
        drop(s);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, part);
    }

    #[tokio::test]
    async fn mixed_writes_arrive_whole_and_in_order() {
        // The pipe holds 1 KiB: flushes and large writes block half-way
        // until the reader catches up.
        let (mut s, mut client, _) = pair();
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
                // write_vectored may take only part; write_all the rest.
                let n = s.write_vectored(&parts).await.unwrap();
                s.write_all(&chunk[n..]).await.unwrap();
            } else {
                s.write_all(&chunk).await.unwrap();
            }
            expect.extend_from_slice(&chunk);
        }
        s.write_all(b"tail").await.unwrap();
        expect.extend_from_slice(b"tail");
        // Pingora closes with its Shutdown trait: gathered bytes go first.
        Shutdown::shutdown(&mut s).await;
        drop(s);
        assert_eq!(reader.await.unwrap(), expect);
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
