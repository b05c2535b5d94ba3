//! Limits per client connection that Pingora's HTTP/1 server has no knob
//! for: `limits.max_connections` (excess connections are closed at once and
//! counted, so stub_status `handled` falls behind `accepts` as in nginx) and
//! `limits.client_header_timeout` as a deadline for a whole request header
//! (the connection's stream, [`HeaderDeadline`], in deadline.rs).
//!
//! Between requests an HTTP/1 connection is held here, not in Pingora:
//! [`ClientLimits`] runs the keepalive loop itself and waits for each
//! request's header ([`wait_for_request`]) before it creates Pingora's
//! session and hands those bytes over as the start of the request.
//! Pingora's own loop creates the next session at once and keeps its
//! request future (~9 KB), its header buffer (4 KB) and its loop future
//! (~4 KB) allocated while the client is idle; here an idle connection
//! costs the stream, the task and these small wrappers (deploy/bench,
//! scenario e). For the same reason the connection's write buffer
//! (out_buf.rs) exists only while a response is being written, where
//! Pingora's stream keeps one allocated for the connection's whole life.
//! A connection that speaks HTTP/2 (ALPN h2, or the h2c preface on a
//! listener with `http2`) goes to Pingora's own HTTP/2 server instead, as
//! Pingora's loop would send it.
//!
//! When the process leaves (upgrade or stop), Pingora's cleanup drops every
//! connection waiting for a request header, including one whose client is
//! still sending it (a slow client, or a large header); the cleanup is
//! therefore held back until those headers are complete (the stream counts
//! them), at most `client_header_timeout`, so that their requests are
//! answered (with `Connection: close`) instead of cut.

use super::deadline::HeaderDeadline;
use super::deadline::{clock_ms, header_end};
use super::handshake;
use crate::net::workers::PerWorker;
use crate::runtime::SharedRuntime;
use crate::status::Counters;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora_core::protocols::GetSocketDigest;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};
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

/// Wraps the HTTP app (one per worker thread): refuses connections above
/// `limits.max_connections` and gives each accepted one a [`HeaderDeadline`].
pub(crate) struct ClientLimits<A> {
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
    pub(crate) fn new(
        inner: PerWorker<A>,
        runtime: SharedRuntime,
        counters: Arc<Counters>,
    ) -> Self {
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
        let read = wait_for_request(conn, (!first).then_some(keepalive));
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
        // TLS, or a look for the h2c preface, as the listener asked.
        let stream = if handshake::is_pending(&stream) {
            // Boxed: the handshake's state (a TLS handshake is several KB)
            // would otherwise be part of every connection's future, plain
            // ones and idle ones included, for the connection's whole life.
            Box::pin(handshake::finish(stream, header_timeout)).await?
        } else {
            stream
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // Pingora's HTTP/2 server: a task per stream on this worker,
            // GOAWAY when the process leaves (its `shutdown` watch).
            let app = Arc::clone(self.inner.current());
            ServerApp::process_new(&app, stream, shutdown).await;
            drop(open);
            return None;
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
                conn.release_out();
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
async fn wait_for_request(
    conn: &mut HeaderDeadline,
    idle_timeout: Option<Duration>,
) -> io::Result<Option<BytesMut>> {
    // The previous response is flushed (Pingora flushes at its end).
    conn.release_out();
    let first = match idle_timeout {
        None => first_bytes(conn).await?,
        // Idle that long: close (only the wait for a first byte counts).
        Some(t) => tokio::time::timeout(t, first_bytes(conn))
            .await
            .unwrap_or(Ok(None))?,
    };
    let Some(mut start) = first else {
        return Ok(None);
    };
    while !header_complete(&start) && start.len() < WHOLE_HEADER_CAP {
        start.reserve(FIRST_READ);
        let read = tokio::io::AsyncReadExt::read_buf(conn, &mut start).await;
        let e = match read {
            Ok(0) => io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"),
            Ok(_) => continue,
            Err(e) => e,
        };
        let peer = conn
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
async fn first_bytes(conn: &mut HeaderDeadline) -> io::Result<Option<BytesMut>> {
    poll_fn(|cx| {
        // On the stack for this poll only, so nothing is held while idle.
        let mut space = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut buf = ReadBuf::uninit(&mut space);
        match Pin::new(&mut *conn).poll_read(cx, &mut buf) {
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

#[cfg(test)]
mod tests {
    use super::super::deadline::tests::pair;
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

    #[tokio::test]
    async fn an_idle_connection_holds_no_write_buffer() {
        let (mut s, mut client, _) = pair();
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        s.flush().await.unwrap();
        let mut buf = [0u8; 128];
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 204 No Content\r\n\r\n");
        assert!(s.out_capacity() > 0);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let start = wait_for_request(&mut s, None).await.unwrap().unwrap();
        assert_eq!(&start[..], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(s.out_capacity(), 0, "buffer kept while waiting");
    }
}
