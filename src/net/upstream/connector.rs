//! Upstream connections: fulcrum keeps the idle ones itself, one list per
//! worker thread as nginx's `keepalive` cache does, and lends each request's
//! connection to Pingora.
//!
//! Why not Pingora's pool: in 0.9 it costs about 12,000 instructions per
//! request (11% of fulcrum's): a lock, an `Arc<Mutex>` and an LRU entry per
//! release, a task spawned to watch each idle connection, which the next
//! request must wake and wait for, a timer for its idle timeout and a
//! `getpeername` per reuse. And it keeps to itself what fulcrum needs for
//! passive health: that a server sent more than its Content-Length.
//!
//! How: each attempt gets a [`Lease`], whose connector (Pingora's
//! `custom_l4`) takes an idle connection from the worker's list or opens
//! one, and hands it to Pingora as a virtual socket ([`LentSocket`]).
//! Pingora never pools it. When a response has ended and Pingora asks its
//! usual question before pooling (a one-byte read: has the server sent
//! anything since?), the socket reads once itself, puts a quiet connection
//! back on the list and answers end-of-file, so Pingora lets go of it. When
//! Pingora refuses reuse instead (it shuts the connection down) although
//! the response was complete and allowed keepalive, the server sent bytes
//! past its Content-Length along with the response: a failure.
//!
//! The lent socket also notes when the request was written and reads the
//! first bytes of the answer with their kernel arrival time, which gives
//! the server's own answer time for `ewma` (net/upstream/server_time.rs).
//!
//! How many idle connections a worker keeps (`upstream_keepalive_pool_size`)
//! is passed in with each lease ([`Lease::with_idle_capacity`]).
//!
//! What this relies on in Pingora, and the tests that guard it: src/net/mod.rs.

use crate::net::upstream::server_time;
use crate::net::upstream::tcp as upstream_tcp;
use crate::pool::{FailureKind, Pool, Server};
use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::ext as l4_ext;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::{Error, ErrorType, Result};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// How long an idle upstream connection is kept (nginx's upstream
/// `keepalive_timeout` default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle connections kept per worker thread when nothing else is said
/// (Pingora's default `upstream_keepalive_pool_size`).
pub const DEFAULT_IDLE_CAPACITY: usize = 128;

thread_local! {
    /// This worker's idle connections, oldest first.
    static IDLE: RefCell<Vec<Idle>> = const { RefCell::new(Vec::new()) };
}

/// One idle connection.
struct Idle {
    addr: SocketAddr,
    tcp: TcpStream,
    since: Instant,
}

/// Whether an idle connection is still quiet: nothing to read, not closed.
/// Tokio's readiness says so without a system call unless an event came.
fn is_quiet(tcp: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match tcp.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        // Readable: closed, data, or a stale readiness that one read clears.
        Poll::Ready(_) => {
            matches!(tcp.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// The most recently used quiet connection to `addr`, if any. Closed,
/// expired and talkative ones met on the way are dropped.
fn checkout(addr: SocketAddr) -> Option<TcpStream> {
    IDLE.with_borrow_mut(|idle| {
        let now = Instant::now();
        while let Some(i) = idle.iter().rposition(|c| c.addr == addr) {
            let c = idle.remove(i);
            if now.duration_since(c.since) < IDLE_TIMEOUT && is_quiet(&c.tcp) {
                return Some(c.tcp);
            }
        }
        None
    })
}

/// Keeps a connection for reuse in a list of at most `cap`, dropping the
/// oldest beyond it and any expired at the front.
fn checkin(cap: usize, addr: SocketAddr, tcp: TcpStream) {
    if cap == 0 {
        return;
    }
    IDLE.with_borrow_mut(|idle| {
        let now = Instant::now();
        let expired = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
            .count();
        let over = (idle.len() - expired + 1).saturating_sub(cap);
        idle.drain(..expired + over);
        idle.push(Idle {
            addr,
            tcp,
            since: now,
        });
    });
}

/// Closes this worker's idle connections that expired or that the server
/// closed; run once a second on each worker.
pub fn sweep_idle() {
    IDLE.with_borrow_mut(|idle| {
        let now = Instant::now();
        idle.retain(|c| now.duration_since(c.since) < IDLE_TIMEOUT && is_quiet(&c.tcp));
    });
}

// Lease flags.
/// The connection came from the idle list.
const REUSED: u8 = 1;
/// The response allows keepalive and is delimited by Content-Length.
const LENGTH_KEEPALIVE: u8 = 2;
/// The whole response has been read.
const COMPLETE: u8 = 4;
/// The end-of-response read was done.
const CHECKED: u8 = 8;
/// The server sent more than its Content-Length (counted as a failure).
const SURPLUS: u8 = 16;

/// One attempt's use of an upstream connection, shared by the request's
/// context, the connector and the lent socket.
pub struct Lease {
    flags: AtomicU8,
    /// Time to connect, when this attempt opened the connection (ns).
    connect_ns: AtomicU64,
    /// The server's time to the first bytes of its answer, as the kernel
    /// stamped them (ns; 0: unknown). See net/upstream/server_time.rs.
    answer_ns: AtomicU64,
    /// Idle connections this worker keeps (`upstream_keepalive_pool_size`).
    idle_capacity: usize,
    pool: Arc<Pool>,
    server: Arc<Server>,
}

impl Lease {
    /// A lease for an attempt on `server` of `pool`, whose connection goes
    /// back to a worker's list of at most `idle_capacity` idle ones.
    pub fn with_idle_capacity(
        pool: Arc<Pool>,
        server: Arc<Server>,
        idle_capacity: usize,
    ) -> Arc<Lease> {
        Arc::new(Lease {
            flags: AtomicU8::new(0),
            connect_ns: AtomicU64::new(0),
            answer_ns: AtomicU64::new(0),
            idle_capacity,
            pool,
            server,
        })
    }

    /// The connector to give Pingora as the peer's `custom_l4`.
    pub fn connector(
        self: &Arc<Self>,
        connect_timeout: Duration,
    ) -> Arc<dyn L4Connect + Send + Sync> {
        Arc::new(Connector {
            lease: Arc::clone(self),
            connect_timeout,
        })
    }

    /// Whether the connection came from the idle list.
    pub fn reused(&self) -> bool {
        self.has(REUSED)
    }

    /// The response header allows keepalive and declares a Content-Length.
    pub fn expect_length_keepalive(&self) {
        self.flags.fetch_or(LENGTH_KEEPALIVE, Relaxed);
    }

    /// The whole response has been read: the next read Pingora makes is its
    /// check before pooling.
    pub fn response_complete(&self) {
        self.flags.fetch_or(COMPLETE, Relaxed);
    }

    /// How long opening the connection took, when this attempt opened one.
    pub fn connect_time(&self) -> Option<Duration> {
        match self.connect_ns.load(Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// The server's own time for this attempt (connecting, if it had to,
    /// then from the request's last write to the answer's arrival), without
    /// fulcrum's delays; None when the kernel gave no receive timestamp.
    pub fn server_time(&self) -> Option<Duration> {
        match self.answer_ns.load(Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns + self.connect_ns.load(Relaxed))),
        }
    }

    /// Whether the server sent more than its Content-Length on this
    /// attempt's connection (found when Pingora let go of it).
    pub fn surplus_found(&self) -> bool {
        self.has(SURPLUS)
    }

    fn has(&self, flag: u8) -> bool {
        self.flags.load(Relaxed) & flag != 0
    }

    /// The server sent more than its Content-Length: a failure, as an
    /// invalid response is.
    fn surplus(&self, how: &str) {
        self.flags.fetch_or(SURPLUS, Relaxed);
        log::warn!(
            "pool {}: server {} sent more than its Content-Length ({how})",
            self.pool.name(),
            self.server.name
        );
        self.server
            .count_late_failure(FailureKind::Invalid, self.pool.passive_enabled());
    }
}

/// Pingora's `custom_l4` for one attempt.
#[derive(Debug)]
struct Connector {
    lease: Arc<Lease>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Lease({}, {:#x})",
            self.server.name,
            self.flags.load(Relaxed)
        )
    }
}

#[async_trait]
impl L4Connect for Connector {
    async fn connect(&self, addr: &PeerAddr) -> Result<Stream> {
        let Some(&addr) = addr.as_inet() else {
            return Error::e_explain(ErrorType::ConnectError, "upstream servers are TCP only");
        };
        let tcp = match checkout(addr) {
            Some(tcp) => {
                self.lease.flags.fetch_or(REUSED, Relaxed);
                tcp
            }
            None => {
                let started = Instant::now();
                let tcp = connect(addr, self.connect_timeout).await?;
                // At least 1: 0 means "did not connect".
                let took = (started.elapsed().as_nanos() as u64).max(1);
                self.lease.connect_ns.store(took, Relaxed);
                tcp
            }
        };
        Ok(Stream::from(VirtualSocketStream::new(Box::new(
            LentSocket {
                tcp: Some(tcp),
                addr,
                lease: Arc::clone(&self.lease),
                sent_ns: 0,
                written: 0,
                connect_timeout: self.connect_timeout,
            },
        ))))
    }
}

/// A new connection with fulcrum's TCP settings (net/upstream/tcp.rs).
async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let tcp = match tokio::time::timeout(timeout, l4_ext::connect(&addr, None)).await {
        Ok(r) => r?,
        Err(_) => {
            return Error::e_explain(
                ErrorType::ConnectTimedout,
                format!("timeout {timeout:?} connecting to server {addr}"),
            )
        }
    };
    tcp.set_nodelay(true)
        .map_err(|e| Error::because(ErrorType::ConnectError, "failed to set TCP_NODELAY", e))?;
    l4_ext::set_tcp_keepalive(&tcp, &upstream_tcp::dead_peer_detection(timeout))?;
    upstream_tcp::shorten_min_rto(tcp.as_raw_fd(), timeout);
    server_time::enable(tcp.as_raw_fd());
    Ok(tcp)
}

/// The connection as Pingora sees it for one attempt.
#[derive(Debug)]
struct LentSocket {
    /// Until it goes back to the idle list.
    tcp: Option<TcpStream>,
    addr: SocketAddr,
    lease: Arc<Lease>,
    /// When the request was last written to (ns, server_time's clock); 0
    /// once its answer began to arrive.
    sent_ns: u64,
    /// Bytes of the request written so far.
    written: usize,
    /// The pool's, for the user timeout (net/upstream/tcp.rs).
    connect_timeout: Duration,
}

impl LentSocket {
    fn tcp(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        match self.tcp.as_mut() {
            Some(tcp) => Ok(Pin::new(tcp)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Pingora's read after a complete response: one read of our own says
    /// whether the server stayed quiet; if so the connection goes back to
    /// the idle list.
    fn end_of_response(&mut self) {
        let Some(tcp) = self.tcp.take() else {
            return;
        };
        match tcp.try_read(&mut [0u8; 1]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.ready_for_next(&tcp) => {
                checkin(self.lease.idle_capacity, self.addr, tcp)
            }
            Ok(n) if n > 0 => self.lease.surplus("more bytes came after it"),
            _ => {} // closed, broken, or not ready for the next: dropped
        }
    }

    /// A lifted user timeout is set back for the next request; a
    /// connection it cannot be set on is not kept.
    fn ready_for_next(&self, tcp: &TcpStream) -> bool {
        self.written <= upstream_tcp::PATIENT_AFTER
            || upstream_tcp::set_user_timeout(tcp.as_raw_fd(), Some(self.connect_timeout)).is_ok()
    }

    /// Counts the request's bytes; past `PATIENT_AFTER` the server may fill
    /// its receive window and wait, which is not death: the user timeout
    /// is lifted until the request ends (net/upstream/tcp.rs).
    fn wrote(&mut self, n: usize) {
        let before = self.written;
        self.written += n;
        if before <= upstream_tcp::PATIENT_AFTER && self.written > upstream_tcp::PATIENT_AFTER {
            if let Some(tcp) = &self.tcp {
                if let Err(e) = upstream_tcp::set_user_timeout(tcp.as_raw_fd(), None) {
                    log::debug!("upstream {}: user timeout not lifted: {e}", self.addr);
                }
            }
        }
    }

    /// The first read after a write: also takes the kernel's arrival time
    /// of the answer (net/upstream/server_time.rs).
    fn poll_read_stamped(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(tcp) = self.tcp.as_ref() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        loop {
            std::task::ready!(tcp.poll_read_ready(cx))?;
            // SAFETY: recvmsg only writes bytes into the unfilled part, and
            // exactly the n it wrote are marked initialized below.
            let unfilled = unsafe { buf.unfilled_mut() };
            let fd = tcp.as_raw_fd();
            match tcp.try_io(Interest::READABLE, || server_time::recv(fd, unfilled)) {
                Ok((n, stamp)) => {
                    // SAFETY: see above.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if n > 0 {
                        let took = stamp.map_or(0, |at| at.saturating_sub(self.sent_ns));
                        self.lease.answer_ns.store(took, Relaxed);
                        self.sent_ns = 0;
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for LentSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flags = this.lease.flags.load(Relaxed);
        if flags & COMPLETE != 0 {
            if flags & CHECKED == 0 {
                this.lease.flags.fetch_or(CHECKED, Relaxed);
                this.end_of_response();
            }
            return Poll::Ready(Ok(())); // end of file: Pingora lets go
        }
        if this.sent_ns != 0 && buf.remaining() > 0 {
            return this.poll_read_stamped(cx, buf);
        }
        this.tcp()?.poll_read(cx, buf)
    }
}

impl AsyncWrite for LentSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.tcp()?.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            if n > 0 {
                this.sent_ns = server_time::now_ns();
                this.wrote(n);
            }
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().tcp()?.poll_flush(cx)
    }

    /// Pingora shuts a connection down when it will not reuse it.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flags = this.lease.flags.fetch_or(CHECKED, Relaxed);
        if flags & (COMPLETE | LENGTH_KEEPALIVE | CHECKED) == COMPLETE | LENGTH_KEEPALIVE {
            // Complete and reusable by its headers, yet refused: Pingora's
            // body reader holds bytes read past the Content-Length.
            this.lease.surplus("in the same read");
        }
        this.tcp()?.poll_shutdown(cx)
    }
}

impl VirtualSocket for LentSocket {
    /// Pingora sets TCP_NODELAY on every connection it gets; fulcrum did so
    /// when it connected.
    fn set_socket_option(&self, _opt: VirtualSockOpt) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn idle_count() -> usize {
        IDLE.with_borrow(|idle| idle.len())
    }

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (server, client) = tokio::join!(listener.accept(), client);
        (client.unwrap(), server.unwrap().0)
    }

    #[tokio::test]
    async fn the_idle_list_returns_quiet_connections_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (quiet, _quiet_server) = pair(&listener).await;
        let (closed, closed_server) = pair(&listener).await;
        let (talkative, mut talkative_server) = pair(&listener).await;
        checkin(8, addr, quiet);
        let quiet_port = IDLE.with_borrow(|i| i[0].tcp.local_addr().unwrap());
        checkin(8, addr, closed);
        checkin(8, addr, talkative);
        drop(closed_server);
        talkative_server.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Most recent first: the talkative and closed ones are dropped.
        let got = checkout(addr).expect("the quiet connection");
        assert_eq!(got.local_addr().unwrap(), quiet_port);
        assert_eq!(idle_count(), 0);
        assert!(checkout(addr).is_none());
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        checkin(8, other, got);
        assert!(checkout(addr).is_none(), "a connection to another server");
        assert_eq!(idle_count(), 1);
        sweep_idle();
        assert_eq!(idle_count(), 1, "quiet and fresh: kept");
        IDLE.with_borrow_mut(|i| i.clear());
    }

    #[tokio::test]
    async fn capacity_drops_the_oldest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut servers = Vec::new();
        let mut first = None;
        for i in 0..3 {
            let (c, s) = pair(&listener).await;
            if i == 1 {
                first = Some(c.local_addr().unwrap());
            }
            servers.push(s);
            checkin(2, addr, c);
        }
        assert_eq!(idle_count(), 2);
        let oldest = IDLE.with_borrow(|i| i[0].tcp.local_addr().unwrap());
        assert_eq!(Some(oldest), first);
        // The dropped one is closed: its server reads end of file.
        let mut b = [0u8; 1];
        assert_eq!(servers[0].read(&mut b).await.unwrap(), 0);
        IDLE.with_borrow_mut(|i| i.clear());
    }

    fn user_timeout_ms(tcp: &TcpStream) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: v and len describe a c_int-sized buffer.
        let rc = unsafe {
            libc::getsockopt(
                tcp.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        v
    }

    #[tokio::test]
    async fn a_large_request_lifts_the_user_timeout_until_its_connection_is_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = crate::config::from_str(
            &format!("pools:\n  p:\n    servers: [{{addr: \"{addr}\"}}]\n"),
            &|_| None,
        )
        .unwrap()
        .config
        .pools
        .remove(0);
        let pool = Pool::new(config, &Default::default());
        let server = Arc::clone(&pool.servers[0]);
        let connect_timeout = Duration::from_secs(1);
        let (client, mut peer) = pair(&listener).await;
        upstream_tcp::set_user_timeout(client.as_raw_fd(), Some(connect_timeout)).unwrap();
        assert_eq!(user_timeout_ms(&client), 400);
        let lease = Lease::with_idle_capacity(Arc::new(pool), server, 8);
        let mut sock = LentSocket {
            tcp: Some(client),
            addr,
            lease: Arc::clone(&lease),
            sent_ns: 0,
            written: 0,
            connect_timeout,
        };
        sock.write_all(&[b'h'; 1000]).await.unwrap();
        assert_eq!(
            user_timeout_ms(sock.tcp.as_ref().unwrap()),
            400,
            "a small request keeps it"
        );
        sock.write_all(&vec![b'b'; upstream_tcp::PATIENT_AFTER])
            .await
            .unwrap();
        assert_eq!(
            user_timeout_ms(sock.tcp.as_ref().unwrap()),
            0,
            "a large one lifts it"
        );
        let mut got = vec![0u8; 1000 + upstream_tcp::PATIENT_AFTER];
        peer.read_exact(&mut got).await.unwrap();
        // The answer is in: Pingora's next read is its check before pooling.
        lease.response_complete();
        assert_eq!(sock.read(&mut [0u8; 1]).await.unwrap(), 0);
        let kept = checkout(addr).expect("kept for the next request");
        assert_eq!(user_timeout_ms(&kept), 400, "set back before it was kept");
        IDLE.with_borrow_mut(|i| i.clear());
    }
}
