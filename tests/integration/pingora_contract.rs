//! In-process contract tests: one per assumption fulcrum makes about
//! Pingora's internals (the list, with the Pingora file each relies on, is
//! the module doc of src/net/mod.rs). Each drives Pingora's real code, on
//! mock IO (`tokio::io::duplex`) or loopback sockets, the way fulcrum does,
//! so that a Pingora upgrade that breaks an assumption fails the test named
//! after it instead of silently losing reuse or counting false failures.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use fulcrum::config::{PINGORA_MAX_HEADER_COUNT, PINGORA_MAX_HEADER_SIZE};
use fulcrum::net::downstream::deadline::HeaderDeadline;
use fulcrum::net::upstream::connector::Lease;
use fulcrum::pool::{Pool, Server};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::Stream;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Fds;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result, RetryType};
use pingora_core::protocols::{
    raw_connect::ProxyDigest, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown,
    SocketDigest, Ssl, TimingDigest, UniqueID, UniqueIDType,
};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

// ---- Client side: a client connection as fulcrum's listener hands it over ----

/// A client connection on mock IO that counts the bytes read from it and
/// carries a peer address in its socket digest, as fulcrum's `ClientSocket`
/// does (no timing digest, no TLS).
#[derive(Debug)]
struct Wire {
    io: DuplexStream,
    read: Arc<AtomicUsize>,
    digest: Arc<SocketDigest>,
}

/// A client (the test's end) and the connection as Pingora gets it, with
/// the count of bytes read from it.
fn client_wire() -> (DuplexStream, Wire, Arc<AtomicUsize>) {
    let (client, io) = tokio::io::duplex(64 * 1024);
    let digest = SocketDigest::from_raw_fd(-1);
    let _ = digest
        .peer_addr
        .set(Some(PingoraAddr::Inet("192.0.2.7:4321".parse().unwrap())));
    let read = Arc::new(AtomicUsize::new(0));
    let wire = Wire {
        io,
        read: Arc::clone(&read),
        digest: Arc::new(digest),
    };
    (client, wire, read)
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        to: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let had = to.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, to);
        self.read.fetch_add(to.filled().len() - had, Relaxed);
        polled
    }
}

impl AsyncWrite for Wire {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Wire {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.io).await;
    }
}
impl UniqueID for Wire {
    fn id(&self) -> UniqueIDType {
        0
    }
}
impl Ssl for Wire {}
impl GetTimingDigest for Wire {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}
impl GetProxyDigest for Wire {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}
impl GetSocketDigest for Wire {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(Arc::clone(&self.digest))
    }
}
#[async_trait]
impl Peek for Wire {}

/// fulcrum's stream for a client connection: the header deadline around the socket.
fn deadline(wire: Wire) -> Stream {
    Box::new(HeaderDeadline::new(Box::new(wire), WAIT))
}

/// A session for the first request of a connection, set up as fulcrum's
/// connection loop does (src/net/downstream/connection.rs, `new_session`).
fn first_session(stream: Stream, start: Option<&[u8]>) -> ServerSession {
    let mut s = ServerSession::new_http1(stream);
    s.set_keepalive(Some(60));
    s.set_pipelining_enabled(true);
    if let Some(start) = start {
        s.set_pipelined_prefix(BytesMut::from(start));
    }
    s
}

async fn read_request(s: &mut ServerSession) -> bool {
    timeout(WAIT, s.read_request())
        .await
        .expect("no request in time")
        .expect("a valid request")
}

/// Answers the session's request with an empty 200 and finishes it.
async fn answer(mut s: ServerSession) -> Option<ReusedHttpStream> {
    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.insert_header("Content-Length", "0").unwrap();
    s.write_response_header(Box::new(resp)).await.unwrap();
    // As Pingora's proxy does at the end of a request (pingora-proxy lib.rs, finish).
    let settings = HttpPersistentSettings::for_session(&s);
    let reusable = s.finish().await.unwrap()?;
    Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
}

/// The next session on a reused connection, as fulcrum's loop builds it
/// when Pingora holds the next request's first bytes.
fn next_session(reused: ReusedHttpStream) -> ServerSession {
    let (stream, settings) = reused.consume();
    let mut s = ServerSession::new_http1(stream);
    settings
        .expect("HTTP/1 keeps its settings")
        .apply_to_session(&mut s);
    s
}

const GET_A: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
const GET_B: &[u8] = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n";

// Assumption: with pipelining on, bytes Pingora read past a request reach
// the next session through HttpPersistentSettings, and the switch stays on.
#[tokio::test]
async fn pipelined_bytes_and_the_switch_reach_the_next_session_through_persistent_settings() {
    let (_client, wire, _) = client_wire();
    let both = [GET_A, GET_B].concat();
    let mut s = first_session(deadline(wire), Some(&both));
    assert!(read_request(&mut s).await);
    assert_eq!(s.req_header().uri.path(), "/a");
    let reused = answer(s).await.expect("reusable with pipelining on");
    let mut next = next_session(reused);
    assert!(next.pipelining_enabled(), "the switch was not carried");
    // The client sends nothing more: /b must come from the carried bytes.
    assert!(read_request(&mut next).await);
    assert_eq!(next.req_header().uri.path(), "/b");
}

// Assumption: without the switch, Pingora refuses to reuse a connection on
// which it read past the request: fulcrum must set it on every first session.
#[tokio::test]
async fn without_pipelining_pingora_refuses_reuse_after_reading_past_a_request() {
    let (_client, wire, _) = client_wire();
    let both = [GET_A, GET_B].concat();
    let mut s = first_session(deadline(wire), Some(&both));
    s.set_pipelining_enabled(false);
    assert!(read_request(&mut s).await);
    assert!(answer(s).await.is_none(), "reused despite the overread");
}

// Assumption: a prefix holding a whole header is parsed without a read
// from the stream (fulcrum waits for the header itself, then hands it over).
#[tokio::test]
async fn a_prefix_holding_a_whole_header_is_parsed_without_reading_the_stream() {
    let (mut client, wire, read) = client_wire();
    let mut s = first_session(deadline(wire), Some(GET_A));
    assert!(read_request(&mut s).await);
    assert_eq!(s.req_header().uri.path(), "/a");
    assert_eq!(read.load(Relaxed), 0, "Pingora read the stream");
    // A prefix that ends mid-header is continued from the stream.
    let (head, rest) = GET_B.split_at(10);
    let (mut client2, wire2, read2) = client_wire();
    let mut s2 = first_session(deadline(wire2), Some(head));
    client2.write_all(rest).await.unwrap();
    assert!(read_request(&mut s2).await);
    assert_eq!(s2.req_header().uri.path(), "/b");
    assert_eq!(read2.load(Relaxed), rest.len());
    client.write_all(b"x").await.unwrap(); // keeps `client` alive until here
}

// Assumption: Pingora reads a client connection only through the stream it
// is given, and what it read past a request is exactly what it hands on;
// fulcrum counts the bytes it gave to know whether Pingora holds a next
// request (HeaderDeadline::consumed_all).
#[tokio::test]
async fn pingora_holds_exactly_what_it_read_past_a_request() {
    let (mut client, wire, read) = client_wire();
    let post = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let mut s = first_session(deadline(wire), None);
    client
        .write_all(&[&post[..], GET_B].concat())
        .await
        .unwrap();
    assert!(read_request(&mut s).await);
    let mut body = Vec::new();
    while let Some(b) = s.read_request_body().await.unwrap() {
        body.extend_from_slice(&b);
    }
    assert_eq!(body, b"hello");
    let reused = answer(s).await.expect("reusable");
    let mut next = next_session(reused);
    assert!(read_request(&mut next).await);
    assert_eq!(next.req_header().uri.path(), "/b");
    assert_eq!(read.load(Relaxed), post.len() + GET_B.len());
    // Exactly one request given: nothing is carried, the next one is read.
    let (mut client, wire, _) = client_wire();
    let s = first_session(deadline(wire), Some(GET_A));
    let mut s = s;
    assert!(read_request(&mut s).await);
    let (stream, settings) = answer(s).await.expect("reusable").consume();
    let mut next = ServerSession::new_http1(stream);
    settings.unwrap().apply_to_session(&mut next);
    let pending = timeout(Duration::from_millis(100), next.read_request()).await;
    assert!(pending.is_err(), "a request parsed out of nothing");
    client.write_all(b"x").await.unwrap();
}

// Assumption: the stream given to a session is the one Pingora's session
// exposes and gives back for reuse, unwrapped: fulcrum finds its
// HeaderDeadline by downcasting (connection.rs `HeaderDeadline::of` and its
// keepalive loop).
#[tokio::test]
async fn the_stream_given_to_a_session_comes_back_unwrapped() {
    let (_client, wire, _) = client_wire();
    let mut s = first_session(deadline(wire), Some(GET_A));
    assert!(read_request(&mut s).await);
    let during = s.stream().expect("an HTTP/1 session has a stream");
    assert!(during.as_any().downcast_ref::<HeaderDeadline>().is_some());
    let (stream, _) = answer(s).await.expect("reusable").consume();
    assert!(stream.into_any().downcast::<HeaderDeadline>().is_ok());
}

// Assumption: Pingora takes the client's address from the stream's socket
// digest (fulcrum's ClientSocket sets it from accept; X-Forwarded-For, the
// status allow list and the access log use it).
#[tokio::test]
async fn a_session_takes_the_client_address_from_the_socket_digest() {
    let (_client, wire, _) = client_wire();
    let mut s = first_session(deadline(wire), Some(GET_A));
    assert!(read_request(&mut s).await);
    let peer = s.client_addr().and_then(|a| a.as_inet()).copied();
    assert_eq!(peer, Some("192.0.2.7:4321".parse().unwrap()));
}

// Assumption: the raw header Pingora keeps is the request line and header
// fields as received, byte for byte (proxy/limits.rs measures
// `limits.max_header_size` and counts fields on it, and checks framing).
#[tokio::test]
async fn the_raw_header_is_the_bytes_as_received() {
    let head = b"GET /a?b=1 HTTP/1.1\r\nhOsT:   x \r\nX-A:b\r\nX-A: c\r\n\r\n";
    let (_client, wire, _) = client_wire();
    let mut s = first_session(deadline(wire), Some(&[&head[..], b"tail"].concat()));
    assert!(read_request(&mut s).await);
    assert_eq!(&s.to_h1_raw()[..], &head[..]);
}

// Assumption: Pingora answers a request header with more fields than
// PINGORA_MAX_HEADER_COUNT, or one it holds more than
// PINGORA_MAX_HEADER_SIZE bytes of without its end, with an error itself
// (config/mod.rs bounds `limits.max_header_count` and
// `limits.max_header_size` by them).
#[tokio::test]
async fn pingora_refuses_headers_beyond_the_limits_fulcrum_configures_up_to() {
    /// Parses `head`, then `last` once Pingora has read all of `head`.
    async fn parse(head: Vec<u8>, last: &'static [u8]) -> Result<bool> {
        let (mut client, wire, read) = client_wire();
        let mut s = first_session(deadline(wire), None);
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&head).await;
            while read.load(Relaxed) < head.len() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let _ = client.write_all(last).await;
            client
        });
        let r = timeout(WAIT, s.read_request()).await.expect("in time");
        writer.abort();
        r
    }
    let fields = |n: usize| {
        let mut h = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 1..n {
            h.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        h
    };
    assert!(parse(fields(PINGORA_MAX_HEADER_COUNT), b"\r\n")
        .await
        .is_ok());
    let many = parse(fields(PINGORA_MAX_HEADER_COUNT + 1), b"\r\n").await;
    assert_eq!(many.unwrap_err().etype(), &ErrorType::InvalidHTTPHeader);
    // `n` bytes of a header without its end, which comes after them.
    let open = |n: usize| {
        let mut h = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        h.resize(n, b'a');
        h
    };
    // A whole header of the size is read; its end may come in a read of its own.
    let end = b"\r\n\r\n";
    assert!(parse(open(PINGORA_MAX_HEADER_SIZE - end.len()), end)
        .await
        .is_ok());
    let large = parse(open(PINGORA_MAX_HEADER_SIZE + 1), end).await;
    assert_eq!(large.unwrap_err().etype(), &ErrorType::InvalidHTTPHeader);
}

// Assumption: Pingora closes the client connection after any response
// header written before the request body is in, a 100 Continue included,
// unless the flag is cleared for it; the flag is read at each header, so
// fulcrum clears it for 1xx and sets it for the final answer
// (proxy/mod.rs `response_filter`).
#[tokio::test]
async fn a_1xx_before_the_body_closes_the_connection_unless_the_flag_is_cleared_for_it() {
    async fn exchange(clear_for_1xx: bool) -> bool {
        let (mut client, wire, _) = client_wire();
        let mut s = first_session(deadline(wire), None);
        let head =
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        client.write_all(head).await.unwrap();
        assert!(read_request(&mut s).await);
        s.set_close_on_response_before_downstream_finish(!clear_for_1xx);
        let cont = ResponseHeader::build(100, None).unwrap();
        s.write_response_header(Box::new(cont)).await.unwrap();
        client.write_all(b"hi").await.unwrap();
        while s.read_request_body().await.unwrap().is_some() {}
        s.set_close_on_response_before_downstream_finish(true);
        answer(s).await.is_some()
    }
    assert!(
        !exchange(false).await,
        "Pingora keeps a connection after an early 100"
    );
    assert!(
        exchange(true).await,
        "the connection closes although the body was in"
    );
}

/// How a session was set up: keepalive, pipelining, reuses left.
type Setup = (Option<u64>, bool, Option<u32>);

/// Records how Pingora's own HTTP/1 loop sets up each session, and answers.
struct Recording {
    seen: Arc<Mutex<Vec<Setup>>>,
}

#[async_trait]
impl HttpServerApp for Recording {
    async fn process_new_http(
        self: &Arc<Self>,
        mut s: ServerSession,
        _shutdown: &pingora::server::ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let setup = (
            s.get_keepalive(),
            s.pipelining_enabled(),
            s.get_keepalive_reuses_remaining(),
        );
        self.seen.lock().unwrap().push(setup);
        if !s.read_request().await.ok()? {
            return None;
        }
        answer(s).await
    }
}

// Assumption: fulcrum's client connection loop is a fork of Pingora's HTTP/1
// loop (pingora-core apps/mod.rs, `ServerApp::process_new` for HTTP apps):
// each connection's first session gets a 60 s keepalive and no limit on
// reuses, and each next one the settings of the previous, carried by
// HttpPersistentSettings. fulcrum's `new_session` does the same and adds
// the pipelining switch; if Pingora's loop changes, the fork must follow.
#[tokio::test]
async fn pingoras_http1_loop_sets_up_sessions_as_fulcrums_fork_does() {
    use pingora::apps::ServerApp;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Arc::new(Recording {
        seen: Arc::clone(&seen),
    });
    let (mut client, wire, _) = client_wire();
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    client.write_all(GET_A).await.unwrap();
    let serving = tokio::spawn(async move { app.process_new(deadline(wire), &shutdown).await });
    read_answer(&mut client).await;
    client.write_all(GET_B).await.unwrap();
    read_answer(&mut client).await;
    drop(client);
    assert!(timeout(WAIT, serving).await.unwrap().unwrap().is_none());
    // The first session as fulcrum's `new_session` sets it up (but for
    // pipelining, which fulcrum turns on); then HTTP/1.1's keepalive
    // (0: no timeout of Pingora's own) carried to the next ones.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], (Some(60), false, None));
    assert_eq!(seen[1..], [(Some(0), false, None), (Some(0), false, None)]);
}

// ---- Pingora's proxy, driven in-process ----

fn conf(max_retries: usize) -> Arc<ServerConf> {
    Arc::new(ServerConf {
        max_retries,
        ..Default::default()
    })
}

/// Runs one request through `app` as fulcrum's connection loop does:
/// the proxy's `process_new_http` on a session over mock IO. Returns
/// the connection if Pingora keeps it, and the raw answer.
async fn proxy_once<A: HttpServerApp + Send + Sync + 'static>(
    app: &Arc<A>,
    request: &[u8],
) -> (Option<ReusedHttpStream>, String) {
    let (mut client, wire, _) = client_wire();
    let s = first_session(deadline(wire), Some(request));
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let kept = timeout(WAIT, app.process_new_http(s, &shutdown))
        .await
        .expect("the proxy finished in time");
    (kept, read_answer(&mut client).await)
}

/// One whole response (header and a Content-Length body) from `client`.
async fn read_answer(client: &mut DuplexStream) -> String {
    let mut got = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .and_then(|v| v.ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let mut chunk = [0u8; 4096];
        match timeout(WAIT, client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => return text,
        }
    }
}

/// A proxy whose every attempt fails and whose `fail_to_proxy` answers and
/// says the client connection may be reused.
struct Failing {
    attempts: Arc<AtomicUsize>,
    retry: bool,
}

#[async_trait]
impl ProxyHttp for Failing {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        self.attempts.fetch_add(1, Relaxed);
        let mut e = Error::explain(ErrorType::ConnectRefused, "no server");
        e.set_retry(self.retry);
        Err(e)
    }

    async fn fail_to_proxy(&self, session: &mut Session, _e: &Error, _c: &mut ()) -> FailToProxy {
        // Written as a response that keeps the connection (Pingora's own
        // error responses turn keepalive off).
        let mut resp = ResponseHeader::build(502, None).unwrap();
        resp.insert_header("Content-Length", "0").unwrap();
        let _ = session.write_response_header(Box::new(resp), true).await;
        FailToProxy {
            error_code: 502,
            can_reuse_downstream: true,
        }
    }
}

// Assumption: after a failed proxy attempt Pingora 0.9.1 ends the client
// connection whatever `can_reuse_downstream` says (fulcrum's own 502, 503
// and 504 therefore say `Connection: close`: proxy/mod.rs `fail_to_proxy`).
#[tokio::test]
async fn a_failed_proxy_attempt_ends_the_client_connection_whatever_fail_to_proxy_says() {
    let app = Arc::new(pingora::proxy::http_proxy(
        &conf(16),
        Failing {
            attempts: Arc::default(),
            retry: false,
        },
    ));
    let (kept, answer) = proxy_once(&app, GET_A).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("keep-alive"), "{answer}");
    assert!(
        kept.is_none(),
        "Pingora kept the client connection after a failure"
    );
}

// Assumption: Pingora makes at most `max_retries` attempts per request
// (fulcrum raises it to its largest pool and `retry.tries`:
// lifecycle/service.rs `retry_limit`).
#[tokio::test]
async fn pingora_makes_at_most_max_retries_attempts() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let app = Arc::new(pingora::proxy::http_proxy(
        &conf(3),
        Failing {
            attempts: Arc::clone(&attempts),
            retry: true,
        },
    ));
    let (_, answer) = proxy_once(&app, GET_A).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert_eq!(attempts.load(Relaxed), 3);
}

// ---- Server side: fulcrum's connector under Pingora's ----

/// What the test server answers on each connection.
#[derive(Clone, Copy)]
enum Script {
    /// A 200 with `Content-Length: 2`, connection kept.
    Ok,
    /// The same with 5 bytes more in the same write.
    SurplusSameWrite,
    /// The same, then 4 bytes more a moment later.
    SurplusLater,
    /// Reads the request and closes without an answer.
    Close,
}

/// A loopback server running `script` on every connection; counts them.
async fn server(script: Script) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Relaxed);
            tokio::spawn(serve(tcp, script));
        }
    });
    (addr, accepted)
}

async fn serve(mut tcp: TcpStream, script: Script) {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            let sent = match script {
                Script::Ok => tcp.write_all(ok).await,
                Script::SurplusSameWrite => tcp.write_all(&[&ok[..], b"EXTRA"].concat()).await,
                Script::SurplusLater => {
                    let _ = tcp.write_all(ok).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    tcp.write_all(b"late").await
                }
                Script::Close => return,
            };
            if sent.is_err() {
                return;
            }
        }
    }
}

/// A pool of one server at `addr`, as fulcrum builds it from its config.
fn pool_of(addr: SocketAddr) -> (Arc<Pool>, Arc<Server>) {
    let doc = format!("pools:\n  p:\n    servers: [{{addr: \"{addr}\"}}]\n");
    let config = fulcrum::config::from_str(&doc, &|_| None).unwrap().config;
    let pool = Arc::new(Pool::new(config.pools[0].clone(), &HashMap::new()));
    let server = Arc::clone(&pool.servers[0]);
    (pool, server)
}

/// A peer whose connections come from fulcrum's connector, as
/// proxy/mod.rs `upstream_peer` makes it.
fn lent_peer(addr: SocketAddr, lease: &Arc<Lease>) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.custom_l4 = Some(lease.connector(Duration::from_secs(1)));
    peer.options.idle_timeout = Some(Duration::ZERO);
    peer
}

/// A connection from fulcrum's connector, through Pingora's HTTP/1
/// connector, with a GET written on it; and whether Pingora itself thought
/// the connection reused.
async fn lent_request(
    connector: &Connector,
    addr: SocketAddr,
) -> (Arc<Lease>, HttpPeer, HttpSession, bool) {
    let (pool, server) = pool_of(addr);
    let lease = Lease::with_idle_capacity(pool, server, 8);
    let peer = lent_peer(addr, &lease);
    let (mut http, pingora_reused) = connector.get_http_session(&peer).await.unwrap();
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.insert_header("Host", "x").unwrap();
    http.write_request_header(Box::new(req)).await.unwrap();
    (lease, peer, http, pingora_reused)
}

/// Reads the response, telling the lease what fulcrum's proxy tells it,
/// and `pause`s; then releases the connection as Pingora's proxy does.
async fn read_and_release(
    connector: &Connector,
    lent: (&Lease, &HttpPeer, HttpSession),
    pause: Duration,
) {
    let (lease, peer, mut http) = lent;
    http.read_response().await.unwrap();
    // upstream_response_filter: keepalive, delimited by Content-Length.
    lease.expect_length_keepalive();
    while http.read_body_bytes().await.unwrap().is_some() {}
    // upstream_response_body_filter at the end of the body.
    lease.response_complete();
    tokio::time::sleep(pause).await;
    // As pingora-proxy's proxy_to_upstream does after a response.
    connector.release_http_session(http, peer, None).await;
}

/// One GET on a lent connection, released after its response.
async fn lent_get(connector: &Connector, addr: SocketAddr) -> (Arc<Lease>, bool) {
    let (lease, peer, http, pingora_reused) = lent_request(connector, addr).await;
    read_and_release(connector, (&lease, &peer, http), Duration::ZERO).await;
    (lease, pingora_reused)
}

// Assumption: Pingora's release path reads one byte from a connection
// before pooling it and drops it on end of file; fulcrum's lent socket
// answers that read by putting a quiet connection back on its own idle
// list, and Pingora's pool (and its `reused`) never sees it.
#[tokio::test]
async fn a_lent_connection_returns_to_fulcrums_idle_list_through_pingoras_release_path() {
    let (addr, accepted) = server(Script::Ok).await;
    let connector = Connector::new(None);
    let (first, pingora_reused) = lent_get(&connector, addr).await;
    assert!(!first.reused() && !pingora_reused);
    let (second, pingora_reused) = lent_get(&connector, addr).await;
    assert!(
        second.reused(),
        "the connection did not come back to the idle list"
    );
    assert!(!pingora_reused, "Pingora's own pool got the connection");
    assert_eq!(accepted.load(Relaxed), 1);
    assert!(!first.surplus_found() && !second.surplus_found());
}

// Assumption: when Pingora refuses to reuse a connection (here: its body
// reader holds bytes past the Content-Length), it shuts it down, which the
// lent socket takes as the server's failure; a connection Pingora merely
// dropped would not be counted.
#[tokio::test]
async fn pingora_shuts_a_connection_down_when_it_read_past_the_content_length() {
    let (addr, accepted) = server(Script::SurplusSameWrite).await;
    let connector = Connector::new(None);
    let (first, _) = lent_get(&connector, addr).await;
    assert!(first.surplus_found(), "the surplus was not counted");
    let (second, _) = lent_get(&connector, addr).await;
    assert!(!second.reused(), "a connection with a surplus was reused");
    assert_eq!(accepted.load(Relaxed), 2);
}

// Assumption: the one-byte read of Pingora's release path comes after the
// whole response was read, so the lent socket's own read then finds bytes
// the server sent after its response.
#[tokio::test]
async fn bytes_sent_after_the_response_are_found_by_the_release_read() {
    let (addr, _) = server(Script::SurplusLater).await;
    let connector = Connector::new(None);
    let (lease, peer, http, _) = lent_request(&connector, addr).await;
    // The server's "late" arrives before Pingora lets go of the connection.
    let pause = Duration::from_millis(200);
    read_and_release(&connector, (&lease, &peer, http), pause).await;
    assert!(lease.surplus_found());
}

// Assumption: Pingora marks a response-header read that finds the
// connection closed as `RetryType::ReusedOnly`; fulcrum retries those on
// the connections it reused (proxy/mod.rs `error_while_proxy`).
#[tokio::test]
async fn a_connection_closed_before_the_answer_is_an_error_retried_on_reuse_only() {
    let (addr, _) = server(Script::Close).await;
    let connector = Connector::new(None);
    let (_lease, _peer, mut http, _) = lent_request(&connector, addr).await;
    let e = http.read_response().await.unwrap_err();
    assert_eq!(e.retry, RetryType::ReusedOnly, "{e}");
}

/// A proxy to one server that lends fulcrum's connections, as
/// proxy/mod.rs does, and notes for each attempt whether its connection
/// came from the idle list.
struct Lending {
    addr: SocketAddr,
    reused: Arc<Mutex<Vec<bool>>>,
}

#[async_trait]
impl ProxyHttp for Lending {
    type CTX = Option<Arc<Lease>>;
    fn new_ctx(&self) -> Self::CTX {
        None
    }

    async fn upstream_peer(&self, _s: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let (pool, server) = pool_of(self.addr);
        let lease = Lease::with_idle_capacity(pool, server, 8);
        let peer = lent_peer(self.addr, &lease);
        *ctx = Some(lease);
        Ok(Box::new(peer))
    }

    async fn upstream_response_filter(
        &self,
        _s: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(lease) = ctx {
            lease.expect_length_keepalive();
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _s: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if let (true, Some(lease)) = (end_of_stream, ctx.as_ref()) {
            lease.response_complete();
        }
        Ok(None)
    }

    async fn logging(&self, _s: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        if let Some(lease) = ctx {
            self.reused.lock().unwrap().push(lease.reused());
        }
    }
}

// Assumption: Pingora's proxy calls the response body filter with
// `end_of_stream` before it releases the upstream connection, and reads
// nothing from it in between, so its release read is the one the lent
// socket answers (proxy/mod.rs `upstream_response_body_filter`).
#[tokio::test]
async fn pingoras_proxy_ends_the_body_before_it_releases_the_connection() {
    let (addr, accepted) = server(Script::Ok).await;
    let reused = Arc::new(Mutex::new(Vec::new()));
    let app = Arc::new(pingora::proxy::http_proxy(
        &conf(16),
        Lending {
            addr,
            reused: Arc::clone(&reused),
        },
    ));
    for _ in 0..3 {
        let (_, answer) = proxy_once(&app, GET_A).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
    }
    assert_eq!(*reused.lock().unwrap(), [false, true, true]);
    assert_eq!(accepted.load(Relaxed), 1);
}

// ---- Listening sockets across an upgrade ----

// Assumption: a listening socket in Pingora's table of inherited sockets
// passes to the next process through `upgrade_sock` under the key it was
// added with, the address as `SocketAddr` prints it (fulcrum's listener and
// its handoff as root key them so: net/downstream/listener.rs,
// lifecycle/privileges.rs).
#[test]
fn listening_sockets_pass_to_the_next_process_under_their_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let path = std::env::temp_dir().join(format!("fulcrum-contract-{}.sock", std::process::id()));
    let path = path.to_str().unwrap().to_string();
    let _ = std::fs::remove_file(&path);
    let receiving = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut fds = Fds::new();
            fds.get_from_sock(path.as_str()).map(|_| fds)
        })
    };
    while !std::path::Path::new(&path).exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut fds = Fds::new();
    fds.add(addr.to_string(), listener.into_raw_fd());
    fds.send_to_sock(path.as_str()).unwrap();
    let got = receiving.join().unwrap().unwrap();
    let fd = *got
        .get(&addr.to_string())
        .expect("the socket under its address");
    // SAFETY: the received descriptor is ours alone.
    let received = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    assert_eq!(received.local_addr().unwrap(), addr);
    assert!(received.as_raw_fd() >= 0);
    for fd in fds.serialize().1 {
        // SAFETY: the sender's copy, owned by nobody else here.
        unsafe { libc::close(fd) };
    }
}
