//! The state of one request through the phases ([`RequestCtx`]) and the
//! bookkeeping of its upstream attempts: the servers tried, the attempt in
//! flight (its in-flight slot, released on every path, and its connection
//! lease), how each attempt ended (passive health, latency, the access
//! log), and whether another attempt is allowed.

use super::failure::{self, Stage};
use crate::access_log::AttemptLog;
use crate::net::upstream::connector::Lease;
use crate::pool::{Choice, FailureKind, InFlight, Pool, Refusal, Waiting};
use crate::router::RouteStats;
use crate::status::RequestGuard;
use http::HeaderValue;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state.
pub(crate) struct RequestCtx {
    pub(super) start: Instant,
    /// The request's count in the status counters, until it ends.
    pub(super) _request: Option<RequestGuard>,
    pub(super) pool: Option<Arc<Pool>>,
    /// Set when the path was normalized or stripped.
    pub(super) upstream_uri: Option<http::Uri>,
    /// The client's id if acceptable, else a new one (sent both ways).
    pub(super) request_id: HeaderValue,
    /// The request already carries `request_id` as its only X-Request-Id.
    pub(super) request_id_forwarded: bool,
    /// One entry per attempt, for the access log.
    pub(super) attempts: Vec<AttemptLog>,
    tried: Vec<SocketAddr>,
    /// The attempt in flight, until it has a verdict.
    pub(super) current: Option<InFlight>,
    /// The current attempt's use of its upstream connection.
    pub(super) lease: Option<Arc<Lease>>,
    attempt_start: Instant,
    /// How the last failed attempt failed (502 or 504 at the end).
    pub(super) last_failure: Option<FailureKind>,
    /// `retry.timeout` from the request's start.
    deadline: Option<Instant>,
    /// Status of a response fulcrum wrote itself.
    pub(super) local_status: Option<u16>,
    /// Request body bytes read so far, and `limits.client_max_body_size`.
    pub(super) body_bytes: u64,
    pub(super) body_limit: u64,
    /// Counters of the matched route.
    pub(super) route_stats: Option<Arc<RouteStats>>,
    /// How long the request waited in its pool's queue, if it queued.
    pub(super) queue_time: Option<Duration>,
    /// Why the queue gave it no server, if so.
    pub(super) queue_refusal: Option<Refusal>,
}

/// Where the next attempt comes from.
pub(super) enum Next {
    /// A server, its attempt started.
    Now(InFlight),
    /// A place in the pool's queue, to wait in (`proxy/queued.rs`).
    Wait(Waiting),
}

impl RequestCtx {
    pub(super) fn new() -> RequestCtx {
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
            queue_time: None,
            queue_refusal: None,
        }
    }

    /// The request goes to `pool`; `retry.timeout` runs from its start.
    pub(super) fn route_to(&mut self, pool: Arc<Pool>) {
        self.deadline = pool.config.retry.timeout.map(|t| self.start + t);
        self.pool = Some(pool);
    }

    /// The routed pool (every phase after request_filter has one).
    pub(super) fn routed_pool(&self) -> Arc<Pool> {
        Arc::clone(
            self.pool
                .as_ref()
                .expect("request_filter routed this request"),
        )
    }

    /// Whether the routed pool counts failures (passive health).
    fn passive_health(&self) -> bool {
        self.pool.as_ref().is_some_and(|p| p.passive_enabled())
    }

    /// A server of the routed pool not tried yet for the next attempt, or
    /// a place in the pool's queue; fails when there is neither.
    pub(super) fn choose(&mut self) -> Result<Next> {
        let pool = self.routed_pool();
        // Each attempt sends the body from its start.
        self.body_bytes = 0;
        // An attempt that ended without a verdict cannot be reused (and
        // its slot is free for this pick).
        self.current = None;
        match pool.choose(&self.tried) {
            Choice::Server(attempt) => Ok(Next::Now(attempt)),
            Choice::Queued(waiting) => Ok(Next::Wait(waiting)),
            Choice::Refused(refusal) => Err(self.refused(&pool, refusal)),
            Choice::NoServer => Err(failure::no_server(&pool, !self.attempts.is_empty())),
        }
    }

    /// The error that ends a request the queue gave no server.
    pub(super) fn refused(&mut self, pool: &Pool, refusal: Refusal) -> Box<Error> {
        if refusal == Refusal::NoServer {
            return failure::no_server(pool, false);
        }
        self.queue_refusal = Some(refusal);
        failure::queue_refused(pool, refusal)
    }

    /// Starts `attempt`, the next attempt of the request: its in-flight
    /// slot, its log entry and the lease of the connection that Pingora
    /// will use.
    pub(super) fn begin_attempt(
        &mut self,
        attempt: InFlight,
        idle_capacity: usize,
    ) -> (SocketAddr, Arc<Lease>) {
        let pool = self.routed_pool();
        let addr = attempt.server().addr;
        if !self.tried.is_empty() {
            attempt.server().stats.count_retry();
        }
        self.tried.push(addr);
        self.attempts.push(AttemptLog {
            addr,
            status: 0,
            time: Duration::ZERO,
        });
        let lease = Lease::with_idle_capacity(
            Arc::clone(&pool),
            Arc::clone(attempt.server()),
            idle_capacity,
        );
        self.current = Some(attempt);
        self.attempt_start = Instant::now();
        self.lease = Some(Arc::clone(&lease));
        (addr, lease)
    }

    /// The connector opened a new connection for the attempt: its time.
    pub(super) fn count_connect(&self) {
        let took = self.lease.as_ref().and_then(|l| l.connect_time());
        if let (Some(took), Some(attempt)) = (took, self.current.as_ref()) {
            attempt.server().stats.count_connect(took);
        }
    }

    /// The attempt's response header arrived with `status`: logged,
    /// counted, and (a final header, not a 100 Continue) a latency sample,
    /// the server's own time where the kernel stamped its answer, so that
    /// fulcrum's delays do not count (net/upstream/server_time.rs).
    pub(super) fn response_arrived(&mut self, status: u16) {
        let took = self.attempt_start.elapsed();
        self.end_attempt_log(status, took);
        if let Some(attempt) = self.current.as_mut() {
            attempt.server().stats.count_response(status, took);
            if status >= 200 || status == 101 {
                let server = self.lease.as_ref().and_then(|l| l.server_time());
                attempt.record_response(server.map_or(took, |t| t.min(took)));
            }
        }
    }

    /// The server's whole response is in: the attempt succeeded.
    pub(super) fn response_complete(&mut self) {
        if let Some(lease) = &self.lease {
            lease.response_complete();
        }
        if let Some(mut attempt) = self.current.take() {
            attempt.succeed();
        }
    }

    /// The attempt failed as `kind`: counted against its server, and its
    /// log entry completed with 502 or 504. A status failure is logged with
    /// its status (already recorded by [`Self::response_arrived`]) and stays
    /// the current attempt: its response may yet be passed through, holding
    /// the server's in-flight slot until it ends.
    pub(super) fn fail_attempt(&mut self, kind: FailureKind) {
        let passive = self.passive_health();
        if kind == FailureKind::Status {
            if let Some(attempt) = self.current.as_mut() {
                attempt.fail_as(kind, passive);
            }
        } else if let Some(mut attempt) = self.current.take() {
            attempt.fail_as(kind, passive);
            self.end_attempt_log(failure::gateway_status(kind), self.attempt_start.elapsed());
        }
        self.last_failure = Some(kind);
    }

    /// The request is over (`e`: how it failed): an attempt still without
    /// a verdict succeeded, or failed if the error came from the server. A
    /// client abort gives none; the in-flight guard releases the server.
    pub(super) fn settle(&mut self, e: Option<&Error>) {
        let Some(mut attempt) = self.current.take() else {
            return;
        };
        match e {
            None => attempt.succeed(),
            Some(err) if err.esource() == &ErrorSource::Upstream => {
                attempt.fail_as(
                    failure::classify(err, Stage::Exchange),
                    self.passive_health(),
                );
            }
            Some(_) => {}
        }
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
    pub(super) fn may_try_again(&self, pool: &Pool) -> bool {
        let limit = match pool.config.retry.tries {
            0 => pool.servers.len(),
            n => n as usize,
        };
        self.tried.len() < limit
            && self.deadline.is_none_or(|d| Instant::now() < d)
            && pool.has_untried(&self.tried)
    }

    /// Whether a request that reached a server may be sent to another one.
    pub(super) fn may_resend(&self, session: &Session, pool: &Pool) -> bool {
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
        self.may_try_again(pool)
    }
}
