//! The `ProxyHttp` implementation: one small method per Pingora phase.
//!
//! request_filter   answers /health and the status pages, routes, 404/400
//! upstream_peer    picks the next server (least_conn etc.), or 502/503
//! upstream_request_filter  forwarded headers, rewritten path
//! upstream_response_filter status-based failures and retries
//! response_filter  X-Request-Id, Connection: close while shutting down
//! fail_to_connect / error_while_proxy  failure accounting, retry decision
//! fail_to_proxy    the final error response naming the pool
//! logging          settles the attempt, writes the access log record

pub mod limits;
pub mod route_stats;
pub mod router;

pub use route_stats::RouteStats;

use crate::access_log::{AccessLog, AttemptLog, Record};
use crate::lifecycle::drain;
use crate::net::downstream::connection as client_conn;
use crate::net::upstream::connector::Lease;
use crate::pool::{FailureKind, InFlight, Pool};
use crate::proxy::router::BadPath;
use crate::runtime::{Runtime, SharedRuntime};
use crate::status::respond::{respond, respond_text};
use crate::status::{self, Counters, RequestGuard};
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};
use pingora_http::authority::{raw_target_authority, RawTargetAuthority};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Marks the error we raise to retry on a status listed in `retry.on`.
const STATUS_RETRY: &str = "upstream status listed in retry.on";

/// The proxy: shared, read-mostly state only.
pub struct Fulcrum {
    runtime: SharedRuntime,
    counters: Arc<Counters>,
    access_log: AccessLog,
}

impl Fulcrum {
    /// A proxy over the given runtime (which a reload may swap).
    pub fn new(runtime: SharedRuntime, counters: Arc<Counters>, access_log: AccessLog) -> Self {
        Fulcrum {
            runtime,
            counters,
            access_log,
        }
    }
}

/// How an attempt failed, for the retry policy and the final status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Connect error or invalid/closed response.
    Error,
    /// Connect, read or write timeout.
    Timeout,
    /// A status listed in `retry.on`.
    Status,
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    _request: Option<RequestGuard>,
    pool: Option<Arc<Pool>>,
    /// Set when the path was normalized or stripped.
    upstream_uri: Option<http::Uri>,
    /// The client's id if acceptable, else a new one (sent both ways).
    request_id: HeaderValue,
    /// The request already carries `request_id` as its only X-Request-Id
    /// (saves an insert: each costs ~1,500 instructions in Pingora).
    request_id_forwarded: bool,
    attempts: Vec<AttemptLog>,
    tried: Vec<SocketAddr>,
    current: Option<InFlight>,
    /// The current attempt's use of its upstream connection.
    lease: Option<Arc<Lease>>,
    attempt_start: Instant,
    last_failure: Option<Failure>,
    deadline: Option<Instant>,
    /// Status of a response fulcrum wrote itself.
    local_status: Option<u16>,
    /// Request body bytes read so far, and `limits.client_max_body_size`.
    body_bytes: u64,
    body_limit: u64,
    /// Counters of the matched route.
    route_stats: Option<Arc<RouteStats>>,
}

impl RequestCtx {
    /// Whether the routed pool counts failures (passive health).
    fn passive_health(&self) -> bool {
        self.pool.as_ref().is_some_and(|p| p.passive_enabled())
    }

    /// Ends the current attempt as failed and records it for the log.
    fn fail_attempt(&mut self, failure: Failure, kind: FailureKind) {
        let passive = self.passive_health();
        if let Some(mut attempt) = self.current.take() {
            attempt.fail_as(kind, passive);
            let status = if failure == Failure::Timeout {
                504
            } else {
                502
            };
            self.end_attempt_log(status, self.attempt_start.elapsed());
        }
        self.last_failure = Some(failure);
    }

    /// Completes the log entry of the current attempt: its status and how
    /// long it took (`took`, measured once by the caller).
    fn end_attempt_log(&mut self, status: u16, took: Duration) {
        if let Some(a) = self.attempts.last_mut() {
            if a.status == 0 {
                a.status = status;
                a.time = took;
            }
        }
    }

    /// Whether another attempt is allowed by `tries`, `timeout` and the pool.
    fn may_try_again(&self, pool: &Pool) -> bool {
        let limit = match pool.config.retry.tries {
            0 => pool.servers.len(),
            n => n as usize,
        };
        self.tried.len() < limit
            && self.deadline.is_none_or(|d| Instant::now() < d)
            && pool.has_untried(&self.tried)
    }
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Pingora rejects a response header over 1 MiB only when it arrives in
/// several reads (a header read in one go is parsed whole), so the limit is
/// checked here too, making it independent of timing.
const MAX_RESPONSE_HEADER_BYTES: usize = 1024 * 1024 - 1;

/// How a response header says its response ends, for the connection's
/// lease (net/upstream/connector.rs).
#[derive(Debug, PartialEq, Eq)]
struct ResponseEnd {
    /// Keepalive allowed and the body delimited by Content-Length: if
    /// Pingora then refuses to reuse the connection, it read bytes past it.
    length_keepalive: bool,
    /// No body follows (so no body filter will say the response ended).
    complete: bool,
}

impl ResponseEnd {
    fn of(method: &http::Method, resp: &ResponseHeader) -> ResponseEnd {
        let status = resp.status.as_u16();
        if status < 200 {
            // 100 Continue: the real response follows; 101 is never reused.
            return ResponseEnd {
                length_keepalive: false,
                complete: false,
            };
        }
        let length = resp.headers.get(http::header::CONTENT_LENGTH);
        let connection = resp
            .headers
            .get(http::header::CONNECTION)
            .map(|v| v.as_bytes());
        let has = |token: &[u8]| {
            connection.is_some_and(|c| {
                c.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
            })
        };
        let keepalive = match resp.version {
            http::Version::HTTP_11 => !has(b"close"),
            http::Version::HTTP_10 => has(b"keep-alive"),
            _ => false,
        };
        ResponseEnd {
            length_keepalive: keepalive && length.is_some(),
            complete: status == 204
                || status == 304
                || method == http::Method::HEAD
                || length.is_some_and(|l| l.as_bytes() == b"0"),
        }
    }

    fn tell(&self, lease: &Lease) {
        if self.length_keepalive {
            lease.expect_length_keepalive();
        }
        if self.complete {
            lease.response_complete();
        }
    }
}

/// Size of a response header as sent: name, ": ", value, CRLF per field.
fn response_header_bytes(resp: &ResponseHeader) -> usize {
    resp.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// The client address as a header value. IPv4, nearly every client here, is
/// written by hand: `to_string` goes through the formatting machinery
/// (~1,000 instructions, for every request).
fn ip_header_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::try_from(ip.to_string()).expect("an IP is a valid value");
    };
    let mut text = Vec::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push(b'.');
        }
        if octet >= 100 {
            text.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            text.push(b'0' + octet / 10 % 10);
        }
        text.push(b'0' + octet % 10);
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .expect("digits and dots are a valid value")
}

/// A client-sent request id is kept only if short and of safe characters.
fn acceptable_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A process-unique id: a per-process random prefix and a counter, as 24
/// hex digits (written by hand: this runs for every request).
fn new_request_id() -> HeaderValue {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    let count = COUNTER.fetch_add(1, Relaxed) as u32;
    let mut id = [0u8; 24];
    let digits = (0..16)
        .map(|i| (seed >> (60 - 4 * i)) & 0xf)
        .chain((0..8).map(|i| u64::from(count >> (28 - 4 * i)) & 0xf));
    for (d, v) in id.iter_mut().zip(digits) {
        *d = b"0123456789abcdef"[v as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

#[async_trait]
impl ProxyHttp for Fulcrum {
    type CTX = RequestCtx;

    /// No downstream modules. Pingora's default adds a response compression
    /// module at level 0 (off), which still builds a context and runs its
    /// filters on every request; fulcrum passes bodies through as nginx
    /// does without `gzip on`.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        let now = Instant::now();
        RequestCtx {
            start: now,
            _request: None,
            pool: None,
            upstream_uri: None,
            request_id: HeaderValue::from_static(""),
            request_id_forwarded: false,
            attempts: Vec::new(),
            tried: Vec::new(),
            current: None,
            lease: None,
            attempt_start: now,
            last_failure: None,
            deadline: None,
            local_status: None,
            body_bytes: 0,
            body_limit: 0,
            route_stats: None,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx._request = Some(self.counters.request_started());
        let body = limits::declared_body(session.req_header());
        client_conn::header_received(session, body);
        {
            let rt = self.runtime.load();
            let l = &rt.config.limits;
            // Only where the client keeps the connection (an HTTP/1.0
            // request without `Connection: keep-alive` does not).
            if session.as_ref().get_keepalive().is_some() {
                session.set_keepalive(limits::keepalive_secs(l));
            }
            session.set_read_timeout(Some(l.client_body_timeout));
            ctx.body_limit = l.client_max_body_size;
            let raw = session.as_ref().to_h1_raw();
            limits::check_request(&raw, session.req_header(), &body, l)
                .map_err(|r| r.into_error())?;
        }
        // Here too, so that responses fulcrum writes itself carry it.
        drain::close_connection_if_draining(session);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = self.runtime.load();
        let path = session.req_header().uri.path();
        if path == rt.config.health_path {
            ctx.local_status = Some(200);
            respond(session, 200, "text/plain", "ok\n", &[]).await?;
            return Ok(true);
        }
        if status::is_status_path(&rt, path) {
            let peer = client_ip(session);
            ctx.local_status = Some(status::handle(session, &rt, &self.counters, peer).await?);
            return Ok(true);
        }
        let mut ids = session.req_header().headers.get_all("x-request-id").iter();
        ctx.request_id = match (ids.next(), ids.next()) {
            (Some(v), None) if acceptable_request_id(v.as_bytes()) => {
                ctx.request_id_forwarded = true; // already in the request
                v.clone()
            }
            (Some(v), _) if acceptable_request_id(v.as_bytes()) => v.clone(),
            _ => new_request_id(),
        };
        self.route(session, ctx, &rt).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool
            .clone()
            .expect("request_filter routed this request");
        ctx.body_bytes = 0; // each attempt sends the body from its start
        if let Some(stale) = ctx.current.take() {
            // An attempt ended without a verdict; it cannot be reused.
            drop(stale);
        }
        let Some(attempt) = pool.select(&ctx.tried) else {
            return Err(self.no_server_error(&pool, ctx));
        };
        let addr = attempt.server().addr;
        if !ctx.tried.is_empty() {
            attempt.server().stats.count_retry();
        }
        ctx.tried.push(addr);
        ctx.attempts.push(AttemptLog {
            addr,
            status: 0,
            time: Duration::ZERO,
        });
        let lease = Lease::new(Arc::clone(&pool), Arc::clone(attempt.server()));
        ctx.current = Some(attempt);
        ctx.attempt_start = Instant::now();
        let cfg = &pool.config;
        let mut peer = HttpPeer::new(addr, false, String::new());
        // fulcrum connects and keeps idle connections itself (net/upstream/connector.rs).
        peer.options.custom_l4 = Some(lease.connector(cfg.connect_timeout));
        peer.options.connection_timeout = Some(cfg.connect_timeout);
        peer.options.read_timeout = Some(cfg.read_timeout);
        peer.options.write_timeout = Some(cfg.write_timeout);
        // Pingora's own pool never gets our connections; should one reach
        // it all the same, it is closed at once rather than kept unseen.
        peer.options.idle_timeout = Some(Duration::ZERO);
        ctx.lease = Some(lease);
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        // Pingora sees fulcrum's connections as virtual sockets: no fd here.
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The connector timed the connect itself (net/upstream/connector.rs).
        let took = ctx.lease.as_ref().and_then(|l| l.connect_time());
        if let (Some(took), Some(attempt)) = (took, ctx.current.as_ref()) {
            attempt.server().stats.count_connect(took);
        }
        Ok(())
    }

    /// Counts the body as it streams (chunked bodies have no length
    /// upfront): past `client_max_body_size` the request ends with 413.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if limits::body_too_large(ctx.body_bytes, ctx.body_limit) {
                return Err(limits::body_reject(ctx.body_limit).into_error());
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let authority = to_origin_form(req)?;
        if let Some(uri) = &ctx.upstream_uri {
            req.set_uri(uri.clone());
        }
        let configured = ctx.pool.as_ref().and_then(|p| p.config.host_header.clone());
        if let Some(host) = configured {
            req.insert_header(http::header::HOST, host)?;
        } else if (session.req_header().version != http::Version::HTTP_11 || authority.is_some())
            && !req.headers.contains_key(http::header::HOST)
        {
            // Only HTTP/1.0 clients (and absolute-form targets) may leave
            // Host out (limits.rs); the lookup is skipped for the rest. But the
            // request goes upstream as HTTP/1.1, which needs one (RFC 9112
            // §3.2): the target's authority, else the server's address as
            // written in the config, as nginx's $proxy_host.
            let host = match (authority, &ctx.current) {
                (Some(a), _) => Some(a),
                (None, Some(attempt)) => HeaderValue::from_str(&attempt.server().name).ok(),
                (None, None) => None,
            };
            if let Some(host) = host {
                req.insert_header(http::header::HOST, host)?;
            }
        }
        if let Some(ip) = client_ip(session) {
            // One value shared by both fields (a HeaderValue clone is a
            // reference count).
            let ip = ip_header_value(ip);
            let xff = match req
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) if !prev.is_empty() => {
                    HeaderValue::try_from(format!("{prev}, {}", ip.to_str().unwrap_or_default()))
                        .expect("valid values joined by a comma")
                }
                _ => ip.clone(),
            };
            req.insert_header("X-Forwarded-For", xff)?;
            req.insert_header("X-Real-IP", ip)?;
        }
        req.insert_header("X-Forwarded-Proto", HeaderValue::from_static("http"))?;
        if !ctx.request_id_forwarded {
            req.insert_header("X-Request-Id", ctx.request_id.clone())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if response_header_bytes(resp) > MAX_RESPONSE_HEADER_BYTES {
            // An invalid response: error_while_proxy counts and retries it.
            let mut e = Error::explain(
                ErrorType::InvalidHTTPHeader,
                format!("response header larger than {MAX_RESPONSE_HEADER_BYTES} bytes"),
            );
            e.esource = ErrorSource::Upstream;
            return Err(e);
        }
        let status = resp.status.as_u16();
        if let Some(lease) = &ctx.lease {
            ResponseEnd::of(&session.req_header().method, resp).tell(lease);
        }
        // After the lease has read the server's own `Connection`.
        strip_hop_by_hop(resp);
        let took = ctx.attempt_start.elapsed();
        ctx.end_attempt_log(status, took);
        if let Some(attempt) = ctx.current.as_mut() {
            attempt.server().stats.count_response(status, took);
            // The final response header (not a 100 Continue): a latency
            // sample, the server's own time where the kernel stamped its
            // answer, so that fulcrum's delays do not count (net/upstream/server_time.rs).
            if status >= 200 || status == 101 {
                let server = ctx.lease.as_ref().and_then(|l| l.server_time());
                attempt.record_response(server.map_or(took, |t| t.min(took)));
            }
        }
        let Some(pool) = ctx.pool.clone() else {
            return Ok(());
        };
        if !pool.config.retry.on.status_is_failure(status) {
            return Ok(());
        }
        if let Some(attempt) = ctx.current.as_mut() {
            attempt.fail_as(FailureKind::Status, pool.passive_enabled());
        }
        ctx.last_failure = Some(Failure::Status);
        if self.may_resend(session, ctx, &pool) {
            ctx.current = None;
            let mut e = Error::explain(ErrorType::Custom(STATUS_RETRY), format!("status {status}"));
            e.set_retry(true);
            return Err(e);
        }
        // Out of attempts: pass the last response through, as nginx does.
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Pingora closes the connection after an answer that goes out
        // before the request body is in. A 100 Continue is sent precisely
        // to ask for that body, so only final answers count (Pingora 0.9.1
        // counts every one; 1xx other than 101 ask nothing of the body).
        let interim = resp.status.is_informational() && resp.status.as_u16() != 101;
        session
            .as_mut()
            .set_close_on_response_before_downstream_finish(!interim);
        resp.insert_header("X-Request-Id", ctx.request_id.clone())?;
        // Old process after an upgrade: move keepalive clients to the new one.
        drain::close_connection_if_draining(session);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let (failure, kind) = match e.etype() {
            ErrorType::ConnectTimedout => (Failure::Timeout, FailureKind::Timeout),
            _ => (Failure::Error, FailureKind::Connect),
        };
        let pool = ctx.pool.clone().expect("routed");
        ctx.fail_attempt(failure, kind);
        // Nothing was sent: another server may always be tried.
        e.set_retry(ctx.may_try_again(&pool));
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let Some(pool) = ctx.pool.clone() else {
            e.set_retry(false);
            return e;
        };
        if matches!(e.etype(), ErrorType::Custom(s) if *s == STATUS_RETRY) {
            return e; // decided in upstream_response_filter
        }
        if e.esource() != &ErrorSource::Upstream {
            // The client went away or broke the request: not the server's fault.
            e.set_retry(false);
            return e;
        }
        let failure = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout | ErrorType::ConnectTimedout => {
                Failure::Timeout
            }
            _ => Failure::Error,
        };
        // A pooled connection that closes before answering may be a keepalive
        // race, so it is retried whatever `retry.on` says. It still counts as
        // the server's failure (as in nginx): idle connections the server
        // closed are dropped before use (net/upstream/connector.rs), so what remains is
        // nearly always a server that read the request and then closed or
        // crashed. (Pingora's `client_reused` is always false: it sees each
        // connection fulcrum lends it as new.)
        let reused = ctx.lease.as_ref().is_some_and(|l| l.reused());
        let reused_closed = reused && e.retry == pingora::RetryType::ReusedOnly;
        let kind = match failure {
            Failure::Timeout => FailureKind::Timeout,
            _ => FailureKind::Invalid,
        };
        ctx.fail_attempt(failure, kind);
        let listed = match failure {
            Failure::Timeout => pool.config.retry.on.timeout,
            _ => pool.config.retry.on.error,
        };
        let retry = (listed || reused_closed) && self.may_resend(session, ctx, &pool);
        e.set_retry(retry);
        e
    }

    /// What the client did (went away, sent a bad, oversized or slow
    /// request) is logged at info, as nginx logs "client prematurely closed
    /// connection": on an internet-facing balancer these come all day, and
    /// the error level is kept for what an operator must look at.
    fn suppress_error_log(&self, session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        if !caused_by_client(e) {
            return false;
        }
        log::info!("client error: {e}, {}", self.request_summary(session, ctx));
        true
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => *code,
            (_, ErrorSource::Upstream) if ctx.last_failure == Some(Failure::Timeout) => 504,
            (_, ErrorSource::Upstream) => 502,
            (
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => 0,
            (ErrorType::ReadTimedout, ErrorSource::Downstream) => 408, // client_body_timeout
            (_, ErrorSource::Downstream) => 400,
            _ => 500,
        };
        if code > 0 && session.response_written().is_none() {
            // Pingora 0.9.1 ends the client connection after this answer
            // whatever `can_reuse_downstream` says when the proxy loop
            // failed (502, 503, 504: it passes its own verdict to finish),
            // and fulcrum closes on a client error: say so in the answer.
            session.set_keepalive(None);
            let text = match (&ctx.pool, code) {
                (Some(p), 502) if ctx.attempts.is_empty() => {
                    format!("502 Bad Gateway: no live upstreams in pool {}", p.name())
                }
                (Some(p), 502) => format!("502 Bad Gateway: upstream error in pool {}", p.name()),
                (Some(p), 503) => format!(
                    "503 Service Unavailable: every server of pool {} is at max_conns",
                    p.name()
                ),
                (Some(p), 504) => format!(
                    "504 Gateway Timeout: upstream timed out in pool {}",
                    p.name()
                ),
                _ => limits::error_text(code, e),
            };
            let _ = respond(
                session,
                code,
                "text/plain; charset=utf-8",
                format!("{text}\n"),
                &[("X-Request-Id", ctx.request_id.to_str().unwrap_or_default())],
            )
            .await;
            if code == 413 {
                limits::discard_body(session).await;
            }
        }
        ctx.local_status = Some(code);
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        // The server is done with this request once its whole response is in:
        // release the in-flight slot now (as nginx frees the peer), not after
        // the last bytes reached the client, or the client's next request can
        // see this server as still busy and least_conn's ties break wrongly.
        // Bytes past its end are found when the connection is given back
        // (net/upstream/connector.rs) and counted as a failure then.
        if end_of_stream {
            if let Some(lease) = &ctx.lease {
                lease.response_complete();
            }
            if let Some(mut attempt) = ctx.current.take() {
                attempt.succeed();
            }
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let header_timeout = self.runtime.load().config.limits.client_header_timeout;
        client_conn::expect_next_header(session, header_timeout);
        if let Some(mut attempt) = ctx.current.take() {
            match e {
                None => attempt.succeed(),
                Some(err) if err.esource() == &ErrorSource::Upstream => {
                    let kind = match err.etype() {
                        ErrorType::ReadTimedout
                        | ErrorType::WriteTimedout
                        | ErrorType::ConnectTimedout => FailureKind::Timeout,
                        _ => FailureKind::Invalid,
                    };
                    attempt.fail_as(kind, ctx.passive_health());
                }
                // Client abort: no verdict on the server; the guard releases it.
                Some(_) => {}
            }
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.local_status)
            .unwrap_or(0);
        if let Some(route) = &ctx.route_stats {
            route.count_response(status);
        }
        if !self.access_log.enabled() {
            return;
        }
        let req = session.req_header();
        let header = |name: http::header::HeaderName| {
            req.headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        self.access_log.log(Record {
            at: SystemTime::now(),
            client: client_ip(session),
            method: req.method.clone(),
            uri: req.uri.clone(),
            version: req.version,
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            body_bytes_sent: session.as_ref().body_bytes_sent() as u64,
            status,
            pool: ctx.pool.as_ref().map(|p| p.name_arc()),
            attempts: std::mem::take(&mut ctx.attempts),
            total: ctx.start.elapsed(),
            request_id: ctx.request_id.clone(),
        });
    }
}

impl Fulcrum {
    /// Routes the request or answers 404/400. Returns `Ok(true)` if answered.
    async fn route(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
    ) -> Result<bool> {
        let uri = &session.req_header().uri;
        let matched = match rt.router.route(uri.path()) {
            Ok(Some(m)) => m,
            Ok(None) => {
                ctx.local_status = Some(404);
                respond_text(session, 404, "404 Not Found: no route for this path").await?;
                return Ok(true);
            }
            Err(BadPath::ClimbsOut) => {
                ctx.local_status = Some(400);
                session.set_keepalive(None); // a hostile request: close
                respond_text(
                    session,
                    400,
                    "400 Bad Request: path leaves its route prefix",
                )
                .await?;
                return Ok(true);
            }
            Err(BadPath::Malformed) => {
                ctx.local_status = Some(400);
                session.set_keepalive(None);
                respond_text(session, 400, "400 Bad Request: malformed path").await?;
                return Ok(true);
            }
        };
        if matched.upstream_path != uri.path() {
            let pq = match uri.query() {
                Some(q) => format!("{}?{q}", matched.upstream_path),
                None => matched.upstream_path.to_string(),
            };
            ctx.upstream_uri = Some(pq.parse().map_err(|_| {
                Error::explain(
                    ErrorType::HTTPStatus(400),
                    "rewritten path is not a valid URI",
                )
            })?);
        }
        if let Some(stats) = rt.route_stats_of(matched.route) {
            stats.count_request();
            ctx.route_stats = Some(Arc::clone(stats));
        }
        let pool = Arc::clone(&rt.pools[matched.route.pool]);
        ctx.deadline = pool.config.retry.timeout.map(|t| ctx.start + t);
        ctx.pool = Some(pool);
        // Keep up to 64 KiB of the request body so a retry can replay it.
        session.as_mut().enable_retry_buffering();
        Ok(false)
    }

    /// Whether a request that reached a server may be sent to another one.
    fn may_resend(&self, session: &Session, ctx: &RequestCtx, pool: &Pool) -> bool {
        if session.response_written().is_some() {
            return false; // bytes went to the client
        }
        let method_ok =
            session.req_header().method.is_idempotent() || pool.config.retry.non_idempotent;
        if !method_ok {
            return false;
        }
        if session.as_ref().retry_buffer_truncated() {
            log::warn!(
                "not retrying {} {} in pool {}: request body larger than the 64 KiB retry buffer",
                session.req_header().method,
                session.req_header().uri,
                pool.name()
            );
            return false;
        }
        ctx.may_try_again(pool)
    }

    /// The error for "no server can take this request".
    fn no_server_error(&self, pool: &Pool, ctx: &mut RequestCtx) -> Box<Error> {
        if !ctx.attempts.is_empty() {
            // Retries ran out of servers: report the last failure.
            let mut e = Error::explain(
                ErrorType::ConnectError,
                format!("no more servers to try in pool {}", pool.name()),
            );
            e.esource = ErrorSource::Upstream;
            return e;
        }
        if pool.all_busy() {
            return Error::explain(
                ErrorType::HTTPStatus(503),
                format!("every server of pool {} is at max_conns", pool.name()),
            );
        }
        log::warn!("no live upstreams in pool {}", pool.name());
        Error::explain(
            ErrorType::HTTPStatus(502),
            format!("no live upstreams in pool {}", pool.name()),
        )
    }
}

/// Removes the hop-by-hop fields of a server's response (RFC 9110 §7.6.1):
/// they describe the connection between the server and fulcrum, not the one
/// to the client (Pingora writes that one's `Connection` itself, and strips
/// the request's). A 101 keeps them: they are the upgrade.
fn strip_hop_by_hop(resp: &mut ResponseHeader) {
    use http::header::{CONNECTION, TE, TRAILER, UPGRADE};
    use http::HeaderName;
    // Not standard names in `http`: compared as names, not as strings.
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    fn hop_by_hop(name: &HeaderName) -> bool {
        name == CONNECTION
            || name == TE
            || name == TRAILER
            || name == UPGRADE
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
    }
    // Most responses have none: one pass over the names decides.
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS || !resp.headers.keys().any(hop_by_hop)
    {
        return;
    }
    let nominated: Vec<http::HeaderName> = resp
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| http::HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in nominated {
        resp.remove_header(&name);
    }
    for name in [
        CONNECTION,
        TE,
        TRAILER,
        UPGRADE,
        KEEP_ALIVE,
        PROXY_CONNECTION,
    ] {
        resp.remove_header(&name);
    }
}

/// Rewrites an absolute-form target (`GET http://h/p?q`) to origin-form
/// (`GET /p?q`), as a proxy forwards it to an origin server (RFC 9112
/// §3.2.2), and returns its authority, the Host to send. Pingora has
/// already refused a request whose Host differs from that authority.
fn to_origin_form(req: &mut RequestHeader) -> Result<Option<HeaderValue>> {
    if req.raw_path().first() == Some(&b'/') {
        return Ok(None); // origin-form, the usual case
    }
    let (authority, path) = match raw_target_authority(req.raw_path()) {
        RawTargetAuthority::Absolute {
            authority,
            path_and_query,
            ..
        } => {
            let mut path = Vec::with_capacity(path_and_query.len() + 1);
            if path_and_query.first() != Some(&b'/') {
                path.push(b'/'); // `http://h` and `http://h?q` have no path
            }
            path.extend_from_slice(path_and_query);
            (HeaderValue::from_bytes(authority).ok(), path)
        }
        _ => return Ok(None),
    };
    req.set_raw_path(&path)?;
    Ok(authority)
}

/// An error of the client's making: from the client side of the connection,
/// or a 4xx fulcrum answers (framing, limits, path checks).
fn caused_by_client(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
        || matches!(e.etype(), ErrorType::HTTPStatus(code) if (400..500).contains(code))
}

#[cfg(test)]
mod tests {
    #[test]
    fn how_a_response_header_says_it_ends() {
        let end = |method: &str, status: u16, version, headers: &[(&'static str, &str)]| {
            let mut resp = ResponseHeader::build(status, None).unwrap();
            resp.set_version(version);
            for (k, v) in headers {
                resp.insert_header(*k, *v).unwrap();
            }
            let m = ResponseEnd::of(&method.parse().unwrap(), &resp);
            (m.length_keepalive, m.complete)
        };
        use http::Version;
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        let cl = ("Content-Length", "5");
        assert_eq!(end("GET", 200, HTTP_11, &[cl]), (true, false));
        assert_eq!(
            end("GET", 200, HTTP_11, &[]),
            (false, false),
            "chunked or close-delimited"
        );
        assert_eq!(
            end("GET", 200, HTTP_11, &[cl, ("Connection", "Close")]),
            (false, false)
        );
        assert_eq!(
            end("GET", 200, HTTP_11, &[cl, ("Connection", "upgrade, close")]),
            (false, false)
        );
        assert_eq!(end("GET", 200, HTTP_10, &[cl]), (false, false));
        assert_eq!(
            end("GET", 200, HTTP_10, &[cl, ("Connection", "Keep-Alive")]),
            (true, false)
        );
        assert_eq!(
            end("GET", 200, HTTP_11, &[("Content-Length", "0")]),
            (true, true)
        );
        assert_eq!(end("HEAD", 200, HTTP_11, &[cl]), (true, true));
        assert_eq!(end("GET", 204, HTTP_11, &[]), (false, true));
        assert_eq!(end("GET", 304, HTTP_11, &[cl]), (true, true));
        assert_eq!(
            end("GET", 100, HTTP_11, &[]),
            (false, false),
            "an interim response"
        );
        assert_eq!(end("GET", 101, HTTP_11, &[]), (false, false));
    }

    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    proptest! {
        #[test]
        fn an_ipv4_header_value_reads_as_the_address(bits in any::<u32>()) {
            let ip = IpAddr::V4(Ipv4Addr::from(bits));
            let value = ip_header_value(ip);
            prop_assert_eq!(value.to_str().unwrap(), ip.to_string());
        }
    }

    #[test]
    fn header_values_of_edge_and_ipv6_addresses() {
        for ip in [
            IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
            IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)),
            IpAddr::V4(Ipv4Addr::new(10, 100, 9, 199)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6("2001:db8::7:1".parse().unwrap()),
        ] {
            assert_eq!(ip_header_value(ip).to_str().unwrap(), ip.to_string());
        }
    }
}
