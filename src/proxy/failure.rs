//! How an upstream attempt failed, and what the client gets when every
//! attempt has. One classification, the pool's [`FailureKind`] (the kinds
//! the status pages count), is made from Pingora's errors in one place
//! ([`classify`]) and serves passive health, the retry decision, the access
//! log's attempt status and the final 502/504.

use crate::config::RetryOn;
use crate::pool::{FailureKind, Pool, Refusal};
use crate::proxy::limits;
use pingora::{Error, ErrorSource, ErrorType};

/// Where in an attempt an error arose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Opening the connection (Pingora's `fail_to_connect`): nothing was sent.
    Connect,
    /// Sending the request or reading the response.
    Exchange,
}

/// The kind of failure a Pingora error of an attempt is: a timeout wherever
/// it happened, else a connect failure before the connection was open, an
/// invalid or closed response after.
pub(super) fn classify(e: &Error, stage: Stage) -> FailureKind {
    match (e.etype(), stage) {
        (ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout, _) => {
            FailureKind::Timeout
        }
        (_, Stage::Connect) => FailureKind::Connect,
        (_, Stage::Exchange) => FailureKind::Invalid,
    }
}

/// The status logged for an attempt that failed this way (as nginx's
/// `$upstream_status`), and answered when it was the last: 504 for a
/// timeout, else 502. (A status failure is logged with the server's status.)
pub(super) fn gateway_status(kind: FailureKind) -> u16 {
    match kind {
        FailureKind::Timeout => 504,
        FailureKind::Connect | FailureKind::Invalid | FailureKind::Status => 502,
    }
}

/// Whether `retry.on` lets a request that reached the server be sent to
/// another one after this failure. (A connect failure is retried whatever
/// it says: nothing was sent.)
pub(super) fn listed(on: &RetryOn, kind: FailureKind) -> bool {
    match kind {
        FailureKind::Timeout => on.timeout,
        FailureKind::Connect | FailureKind::Invalid => on.error,
        // Only the statuses listed are failures at all.
        FailureKind::Status => true,
    }
}

/// Marks the error raised to retry on a status listed in `retry.on`.
const STATUS_RETRY: &str = "upstream status listed in retry.on";

/// The error that makes Pingora try the next server after `status`.
pub(super) fn status_retry(status: u16) -> Box<Error> {
    let mut e = Error::explain(ErrorType::Custom(STATUS_RETRY), format!("status {status}"));
    e.set_retry(true);
    e
}

/// Whether `e` is a [`status_retry`] (already decided and counted).
pub(super) fn is_status_retry(e: &Error) -> bool {
    matches!(e.etype(), ErrorType::Custom(s) if *s == STATUS_RETRY)
}

/// The error for "no server can take this request": after attempts, the
/// last failure stands (a 502 or 504); before any, 503 when only
/// `max_conns` kept servers out, else 502 "no live upstreams".
pub(super) fn no_server(pool: &Pool, attempted: bool) -> Box<Error> {
    if attempted {
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

/// The error for a request the pool's queue refused (full) or let go
/// (timeout): 503, naming the pool and the reason.
pub(super) fn queue_refused(pool: &Pool, refusal: Refusal) -> Box<Error> {
    Error::explain(
        ErrorType::HTTPStatus(503),
        format!("{} in pool {}", refusal.as_str(), pool.name()),
    )
}

/// An error of the client's making: from the client side of the connection,
/// or a 4xx fulcrum answers (framing, limits, path checks).
pub(super) fn caused_by_client(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
        || matches!(e.etype(), ErrorType::HTTPStatus(code) if (400..500).contains(code))
}

/// The status of fulcrum's own answer when the request could not be
/// proxied (0: none, the client is gone). `last` is how the last attempt
/// failed.
pub(super) fn final_status(e: &Error, last: Option<FailureKind>) -> u16 {
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (_, ErrorSource::Upstream) => last.map_or(502, gateway_status),
        // The client went away; an HTTP/2 client resets its stream (a
        // cancelled call, a deadline): the log's 499, as nginx's.
        (
            ErrorType::ReadError
            | ErrorType::WriteError
            | ErrorType::ConnectionClosed
            | ErrorType::H2Error,
            ErrorSource::Downstream,
        ) => 0,
        (ErrorType::ReadTimedout, ErrorSource::Downstream) => 408, // client_body_timeout
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

/// The body of that answer: naming the pool for 502, 503 and 504, and for
/// a 503 of the queue its reason (`queue`).
pub(super) fn answer_text(
    code: u16,
    e: &Error,
    pool: Option<&Pool>,
    attempted: bool,
    queue: Option<Refusal>,
) -> String {
    match (pool, code) {
        (Some(p), 503) if queue.is_some() => format!(
            "503 Service Unavailable: {} in pool {}",
            queue.map_or("", Refusal::as_str),
            p.name()
        ),
        (Some(p), 502) if !attempted => {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_classification_for_every_phase() {
        let err = |t| Error::new(t);
        use ErrorType::*;
        for t in [ConnectTimedout, ReadTimedout, WriteTimedout] {
            assert_eq!(
                classify(&err(t.clone()), Stage::Connect),
                FailureKind::Timeout
            );
            assert_eq!(classify(&err(t), Stage::Exchange), FailureKind::Timeout);
        }
        for t in [
            ConnectRefused,
            ConnectError,
            ConnectionClosed,
            InvalidHTTPHeader,
        ] {
            assert_eq!(
                classify(&err(t.clone()), Stage::Connect),
                FailureKind::Connect
            );
            assert_eq!(classify(&err(t), Stage::Exchange), FailureKind::Invalid);
        }
    }

    #[test]
    fn final_status_follows_the_last_failure() {
        let up = Error::new_up(ErrorType::ConnectError);
        assert_eq!(final_status(&up, Some(FailureKind::Timeout)), 504);
        assert_eq!(final_status(&up, Some(FailureKind::Invalid)), 502);
        assert_eq!(final_status(&up, Some(FailureKind::Status)), 502);
        assert_eq!(final_status(&up, None), 502);
        let mut client = Error::new_down(ErrorType::ReadTimedout);
        assert_eq!(final_status(&client, Some(FailureKind::Timeout)), 408);
        client.etype = ErrorType::ConnectionClosed;
        assert_eq!(final_status(&client, None), 0);
        let status = Error::new(ErrorType::HTTPStatus(413));
        assert_eq!(final_status(&status, None), 413);
        assert!(caused_by_client(&status) && caused_by_client(&client));
        assert!(!caused_by_client(&up));
        assert!(is_status_retry(&status_retry(503)));
        assert!(!is_status_retry(&up));
    }
}
