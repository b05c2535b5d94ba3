//! The `ProxyHttp` implementation: one small method per Pingora phase,
//! each delegating to the file of its concern.
//!
//! request_filter   answers /health and the status pages, routes, 404/400
//! upstream_peer    picks the next server (least_conn etc.), waits in the
//!                  pool's queue (queued.rs), or 502/503
//! upstream_request_filter  forwarded headers, rewritten path (headers.rs)
//! upstream_response_filter status-based failures and retries
//! response_filter  X-Request-Id, Connection: close while shutting down
//! fail_to_connect / error_while_proxy  failure accounting, retry decision
//! fail_to_proxy    the final error response naming the pool (failure.rs)
//! logging          settles the attempt, writes the access log record
//!
//! The request's state and its attempts are in context.rs; how an attempt
//! failed, and what that means, in failure.rs; what a server's response
//! header says about its end in upstream_response.rs.

mod context;
mod failure;
mod headers;
mod leaving;
pub(crate) mod limits;
mod queued;
mod upstream_response;

pub(crate) use leaving::Leaving;

use crate::access_log::{AccessLog, Record};
use crate::net::downstream::deadline;
use crate::net::upstream::peer;
use crate::pool::FailureKind;
use crate::router::BadPath;
use crate::runtime::{Runtime, SharedRuntime};
use crate::status::respond::{respond, respond_text};
use crate::status::{self, Counters, Reloads};
use async_trait::async_trait;
use bytes::Bytes;
use context::{Next, RequestCtx};
use failure::Stage;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use upstream_response::ResponseEnd;

/// The proxy: shared, read-mostly state only.
pub(crate) struct Fulcrum {
    runtime: SharedRuntime,
    counters: Arc<Counters>,
    reloads: Arc<Reloads>,
    leaving: Arc<Leaving>,
    access_log: AccessLog,
    /// Idle upstream connections kept per worker
    /// (`upstream_keepalive_pool_size`).
    idle_capacity: usize,
}

impl Fulcrum {
    /// A proxy over the given runtime (which a reload may swap). `counters`
    /// and `reloads` feed the status pages; `leaving` says when the process
    /// is leaving.
    pub(crate) fn new(
        runtime: SharedRuntime,
        counters: Arc<Counters>,
        reloads: Arc<Reloads>,
        leaving: Arc<Leaving>,
        access_log: AccessLog,
        idle_capacity: usize,
    ) -> Self {
        Fulcrum {
            runtime,
            counters,
            reloads,
            leaving,
            access_log,
            idle_capacity,
        }
    }
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
        RequestCtx::new()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx._request = Some(self.counters.request_started());
        let body = limits::declared_body(session.req_header());
        deadline::header_received(session, body.wire_length());
        {
            let rt = self.runtime.load();
            let l = &rt.config.limits;
            // Only where the client keeps the connection (an HTTP/1.0
            // request without `Connection: keep-alive` does not).
            if session.as_ref().get_keepalive().is_some() {
                session.set_keepalive(limits::keepalive_secs(l));
            }
            session.set_read_timeout(Some(l.client_body_timeout));
            session.set_write_timeout(Some(l.send_timeout));
            ctx.body_limit = l.client_max_body_size;
            let raw = session.as_ref().to_h1_raw();
            limits::check_request(&raw, session.req_header(), &body, l)
                .map_err(|r| r.into_error())?;
        }
        // Here too, so that responses fulcrum writes itself carry it.
        self.leaving.close_connection_if_leaving(session);
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
            let peer = headers::client_ip(session);
            let code = status::handle(session, &rt, &self.counters, &self.reloads, peer).await?;
            ctx.local_status = Some(code);
            return Ok(true);
        }
        (ctx.request_id, ctx.request_id_forwarded) = headers::request_id(session.req_header());
        self.route(session, ctx, &rt).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let attempt = match ctx.choose()? {
            Next::Now(attempt) => attempt,
            Next::Wait(waiting) => queued::wait(session, ctx, waiting).await?,
        };
        let (_, lease) = ctx.begin_attempt(attempt, self.idle_capacity);
        let pool = ctx.pool.as_deref().expect("an attempt has a pool");
        let attempt = ctx.current.as_ref().expect("an attempt was begun");
        let peer = peer::peer(attempt.server(), Some(&lease), &pool.config);
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
        ctx.count_connect();
        Ok(())
    }

    /// Counts the body as it streams (chunked bodies have no length
    /// upfront): past `client_max_body_size` the request ends with 413.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if limits::body_too_large(ctx.body_bytes, ctx.body_limit) {
                return Err(limits::body_reject(ctx.body_limit).into_error());
            }
            // An HTTP/2 client's body may end with an empty DATA frame.
            // Pingora would write that as an empty chunk, which in HTTP/1.1
            // chunked encoding is the last chunk, and then the last chunk
            // again: the server would read a stray "0" request after this
            // one (Pingora assumption 30, src/net/mod.rs).
            if end_of_stream && b.is_empty() {
                *body = None;
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
        headers::set_target_and_host(
            req,
            session.req_header().version,
            ctx.upstream_uri.as_ref(),
            ctx.pool.as_ref().and_then(|p| p.config.host_header.clone()),
            ctx.current.as_ref().map(|a| a.server().name.as_str()),
        )?;
        if session.req_header().version == http::Version::HTTP_2 {
            headers::join_cookies(req)?;
        }
        let https = session
            .as_ref()
            .digest()
            .is_some_and(|d| d.ssl_digest.is_some());
        headers::add_forwarded(
            req,
            headers::client_ip(session),
            https,
            &ctx.request_id,
            ctx.request_id_forwarded,
        )
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Too large: an invalid response, which error_while_proxy counts.
        upstream_response::check_size(resp)?;
        if let Some(lease) = &ctx.lease {
            ResponseEnd::of(&session.req_header().method, resp).tell(lease);
        }
        // After the lease has read the server's own `Connection`.
        headers::strip_hop_by_hop(resp);
        headers::normalize_length(resp)?;
        let status = resp.status.as_u16();
        ctx.response_arrived(status);
        let Some(pool) = ctx.pool.clone() else {
            return Ok(());
        };
        if !pool.config.retry.on.status_is_failure(status) {
            return Ok(());
        }
        ctx.fail_attempt(FailureKind::Status);
        if ctx.may_resend(session, &pool) {
            ctx.current = None;
            return Err(failure::status_retry(status));
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
        if headers::unchunk_for_http10(session.req_header().version, resp) {
            session.set_keepalive(None);
        }
        // Old process after an upgrade: move keepalive clients to the new one.
        self.leaving.close_connection_if_leaving(session);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let pool = ctx.routed_pool();
        ctx.fail_attempt(failure::classify(&e, Stage::Connect));
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
        if failure::is_status_retry(&e) {
            return e; // decided in upstream_response_filter
        }
        if e.esource() != &ErrorSource::Upstream {
            // The client went away or broke the request: not the server's fault.
            e.set_retry(false);
            return e;
        }
        let kind = failure::classify(&e, Stage::Exchange);
        // A pooled connection that closes before answering may be a keepalive
        // race, so it is retried whatever `retry.on` says. It still counts as
        // the server's failure (as in nginx): idle connections the server
        // closed are dropped before use (net/upstream/connector.rs), so what
        // remains is nearly always a server that read the request and then
        // closed or crashed. (Pingora's `client_reused` is always false: it
        // sees each connection fulcrum lends it as new.)
        let reused = ctx.lease.as_ref().is_some_and(|l| l.reused());
        let reused_closed = reused && e.retry == pingora::RetryType::ReusedOnly;
        ctx.fail_attempt(kind);
        let listed = failure::listed(&pool.config.retry.on, kind);
        let retry = (listed || reused_closed) && ctx.may_resend(session, &pool);
        e.set_retry(retry);
        e
    }

    /// What the client did (went away, sent a bad, oversized or slow
    /// request) is logged at info, as nginx logs "client prematurely closed
    /// connection": on an internet-facing balancer these come all day, and
    /// the error level is kept for what an operator must look at.
    fn suppress_error_log(&self, session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        if !failure::caused_by_client(e) {
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
        let code = failure::final_status(e, ctx.last_failure);
        if code > 0 && session.response_written().is_none() {
            // Pingora 0.9.1 ends the client connection after this answer
            // whatever `can_reuse_downstream` says when the proxy loop
            // failed (502, 503, 504: it passes its own verdict to finish),
            // and fulcrum closes on a client error: say so in the answer.
            session.set_keepalive(None);
            let text = failure::answer_text(
                code,
                e,
                ctx.pool.as_deref(),
                !ctx.attempts.is_empty(),
                ctx.queue_refusal,
            );
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
            ctx.response_complete();
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let header_timeout = self.runtime.load().config.limits.client_header_timeout;
        deadline::expect_next_header(session, header_timeout);
        ctx.settle(e);
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.local_status)
            .unwrap_or(0);
        if let Some(route) = &ctx.route_stats {
            route.count_response(status);
        }
        if self.access_log.enabled() {
            self.access_log.log(access_record(session, ctx, status));
        }
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
        let router = rt.router_for(|| match session.as_ref().server_addr()? {
            pingora::protocols::l4::socket::SocketAddr::Inet(a) => Some(*a),
            _ => None,
        });
        let matched = match router.route(uri.path()) {
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
        ctx.route_to(Arc::clone(&rt.pools[matched.route.pool]));
        // Keep up to 64 KiB of the request body so a retry can replay it.
        session.as_mut().enable_retry_buffering();
        Ok(false)
    }
}

/// The access log record of a finished request.
fn access_record(session: &Session, ctx: &mut RequestCtx, status: u16) -> Record {
    let req = session.req_header();
    let header = |name: http::header::HeaderName| {
        req.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    Record {
        at: SystemTime::now(),
        client: headers::client_ip(session),
        method: req.method.clone(),
        // An HTTP/2 request's target carries scheme and authority
        // (:scheme, :authority); the log shows its path, as nginx's $request.
        uri: if req.version == http::Version::HTTP_2 {
            req.uri
                .path_and_query()
                .and_then(|pq| pq.as_str().parse().ok())
                .unwrap_or_else(|| req.uri.clone())
        } else {
            req.uri.clone()
        },
        version: req.version,
        referer: header(http::header::REFERER),
        user_agent: header(http::header::USER_AGENT),
        body_bytes_sent: session.as_ref().body_bytes_sent() as u64,
        status,
        pool: ctx.pool.as_ref().map(|p| p.name_arc()),
        attempts: std::mem::take(&mut ctx.attempts),
        total: ctx.start.elapsed(),
        queue_time: ctx.queue_time,
        request_id: ctx.request_id.clone(),
    }
}
