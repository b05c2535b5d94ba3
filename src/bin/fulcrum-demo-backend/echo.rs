//! The hyper service of every connection: what the backend answers to each
//! request. The JSON echo (or the `--body-size` body) with its delays,
//! statuses and deliberate drops, `/health`, and (in `control`) the
//! `/__control/` endpoints.

use std::borrow::Cow;
use std::fmt;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::header;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, Uri, Version};

use crate::control::{handle_control, parse_status};
use crate::json::Echo;
use crate::reply::{respond, ConnHeader, Exchange, Kind, Payload, Reply};
use crate::serve::client_stays;
use crate::state::{Backend, InFlight};

/// Paths under this prefix are control endpoints: never counted, delayed or dropped.
const CONTROL_PREFIX: &str = "/__control/";

/// The service's error: hyper then closes the connection without answering.
#[derive(Debug)]
pub struct Unanswered;

impl fmt::Display for Unanswered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("closed without an answer")
    }
}

impl std::error::Error for Unanswered {}

/// What one connection's service shares with the task serving it.
pub struct ConnCtx {
    pub backend: Arc<Backend>,
    /// The connection's socket, watched during delays.
    pub fd: RawFd,
    /// Set once a request was refused for its body; the connection then
    /// lingers before closing so that the client can read the refusal.
    pub rejected: AtomicBool,
}

/// Answers one request. Every request body is read fully first, as a
/// refusal or a drop must come after the whole request arrived.
pub async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<Payload>, Unanswered> {
    let backend = &ctx.backend;
    let (parts, body) = req.into_parts();
    let ex = Exchange {
        conn: conn_header(&parts),
        connect: parts.method == Method::CONNECT,
    };
    let body_bytes = match read_body(body).await {
        Ok(n) => n,
        Err(None) => return Err(Unanswered),
        Err(Some((status, reason))) => {
            ctx.rejected.store(true, Ordering::Relaxed);
            let ex = Exchange {
                conn: ConnHeader::Close,
                ..ex
            };
            let reply = Reply::text(status, reason);
            return Ok(respond(backend, reply, ex, None));
        }
    };

    let target = request_target(&parts.uri);
    let (path, query) = split_target(&target);
    let method = parts.method.as_str();
    if path.starts_with(CONTROL_PREFIX) {
        let reply = handle_control(backend, method, path, query);
        return Ok(respond(backend, reply, ex, None));
    }
    if path == "/health" && (parts.method == Method::GET || parts.method == Method::HEAD) {
        backend.health_requests.fetch_add(1, Ordering::SeqCst);
        let reply = if backend.health_failing.load(Ordering::SeqCst) {
            Reply::text(503, "unhealthy")
        } else {
            Reply::text(200, "ok")
        };
        return Ok(respond(backend, reply, ex, None));
    }

    let seq = backend.record(method, &target);
    // Lives until hyper has taken the answer, or the request is abandoned.
    let in_flight = InFlight::enter(backend);
    if backend.close_after_read.load(Ordering::SeqCst) {
        return Err(Unanswered);
    }
    let every = backend.drop_every.load(Ordering::SeqCst);
    if every > 0 && seq.is_multiple_of(every) {
        return Err(Unanswered);
    }
    let reply = match normal_params(backend, query) {
        Ok((delay_ms, status)) => {
            // A client that leaves meanwhile abandons the request.
            if delay_ms > 0 && !client_stays(ctx.fd, Duration::from_millis(delay_ms)).await {
                return Err(Unanswered);
            }
            normal_reply(backend, status, &parts, &target, path, query, body_bytes)
        }
        Err(msg) => Reply::text(400, msg),
    };
    Ok(respond(backend, reply, ex, Some(in_flight)))
}

/// `Connection: close` when the connection ends after this answer, an
/// explicit keep-alive for HTTP/1.0 clients that asked for it, else nothing.
/// (hyper itself adds `close` where the request's framing forbids reuse.)
fn conn_header(parts: &Parts) -> ConnHeader {
    let http10 = parts.version == Version::HTTP_10;
    let (mut close, mut keep_alive) = (false, false);
    for value in parts.headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    if close || (http10 && !keep_alive) {
        ConnHeader::Close
    } else if http10 {
        ConnHeader::KeepAlive
    } else {
        ConnHeader::Omit
    }
}

/// Reads and discards the request body, returning its decoded length. A
/// client gone mid-body gets no answer (`None`); a malformed chunked body
/// gets this status and reason.
async fn read_body(mut body: Incoming) -> Result<u64, Option<(u16, String)>> {
    let mut total = 0u64;
    if body.is_end_stream() {
        return Ok(total);
    }
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    total += data.len() as u64;
                }
            }
            Err(e) => return Err(body_refusal(&e)),
        }
    }
    Ok(total)
}

fn body_refusal(e: &hyper::Error) -> Option<(u16, String)> {
    let io = std::error::Error::source(e)?.downcast_ref::<std::io::Error>()?;
    if io.kind() == std::io::ErrorKind::UnexpectedEof {
        return None;
    }
    // Only chunked framing can be malformed once the head was accepted.
    // hyper's words, mapped onto the reasons this backend has always given.
    let msg = io.to_string().to_ascii_lowercase();
    let (status, reason) = if msg.contains("trailers") && msg.contains("over") {
        (431, "request header fields too large")
    } else if msg.contains("chunk size") {
        (400, "invalid chunk size")
    } else if msg.contains("extension") {
        (400, "line too long in chunked body")
    } else if msg.contains("chunk body") {
        (400, "missing CRLF after chunk data")
    } else {
        (400, "invalid chunked body")
    };
    Some((status, format!("{reason}\n")))
}

/// The request target as the client sent it, rebuilt from hyper's parsed
/// form (hyper keeps no raw copy). Lost on the way: a `#fragment`, the case
/// of an `HTTP://` scheme, and the absence of a path after an absolute
/// form's authority (`http://h` comes back as `http://h/`).
fn request_target(uri: &Uri) -> Cow<'_, str> {
    let pq = uri.path_and_query().map_or("", |pq| pq.as_str());
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => Cow::Owned(format!("{scheme}://{authority}{pq}")),
        (_, Some(authority)) if pq.is_empty() => Cow::Borrowed(authority.as_str()),
        _ => Cow::Borrowed(if pq.is_empty() { uri.path() } else { pq }),
    }
}

/// Splits a request target into (path, query). Absolute-form targets (as sent
/// to a forward proxy) have their scheme and authority removed from the path.
pub fn split_target(target: &str) -> (&str, &str) {
    let (before, query) = target.split_once('?').unwrap_or((target, ""));
    // (An origin-form target, the usual one, starts with '/' and so has no scheme.)
    let scheme_end = if before.starts_with('/') {
        None
    } else {
        before.find("://")
    };
    let path = match scheme_end {
        Some(i)
            if i > 0
                && before[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            let rest = &before[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        _ => before,
    };
    (path, query)
}

pub fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// The delay and status of a normal request: the listener's defaults,
/// overridden by `?delay_ms=` and `?status=`; `Err` is a 400 body.
fn normal_params(backend: &Backend, query: &str) -> Result<(u64, u16), String> {
    let mut delay_ms = backend.delay_ms.load(Ordering::SeqCst);
    let mut status = match backend.default_status.load(Ordering::SeqCst) {
        0 => 200,
        s => s,
    };
    for (key, value) in query_pairs(query) {
        match key {
            "delay_ms" => {
                delay_ms = value.parse().map_err(|_| {
                    format!("delay_ms must be a non-negative integer, got '{value}'\n")
                })?
            }
            "status" => status = parse_status(value).map_err(|msg| format!("{msg}\n"))?,
            _ => {}
        }
    }
    Ok((delay_ms, status))
}

fn normal_reply(
    backend: &Backend,
    status: u16,
    parts: &Parts,
    target: &str,
    path: &str,
    query: &str,
    body_bytes: u64,
) -> Reply {
    match &backend.fixed_body {
        Some(body) => Reply {
            status,
            kind: Kind::Fixed,
            body: body.clone(),
            allow: None,
        },
        None => {
            let echo = Echo {
                server: &backend.name,
                method: parts.method.as_str(),
                path,
                uri: target,
                query,
                body_bytes,
                headers: &parts.headers,
            };
            Reply {
                status,
                kind: Kind::Json,
                body: echo.to_json().into(),
                allow: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_splitting() {
        assert_eq!(split_target("/a/b?c=1&d"), ("/a/b", "c=1&d"));
        assert_eq!(split_target("/plain"), ("/plain", ""));
        assert_eq!(split_target("http://host:8/x?q"), ("/x", "q"));
        assert_eq!(split_target("http://host"), ("/", ""));
        assert_eq!(split_target("/odd://path"), ("/odd://path", ""));
    }

    #[test]
    fn targets_are_rebuilt_as_sent() {
        for raw in [
            "/a/b?c=1&d",
            "/",
            "//x",
            "*",
            "http://host:8/x?q",
            "http://host?q",
            "host:443",
            "/odd://path",
            "/q?{x}|`",
        ] {
            let uri: Uri = raw.parse().unwrap();
            assert_eq!(request_target(&uri), raw);
        }
        // What hyper's parsed form cannot give back as sent.
        for (raw, rebuilt) in [
            ("http://host", "http://host/"),
            ("HTTP://h/x", "http://h/x"),
        ] {
            assert_eq!(request_target(&raw.parse().unwrap()), rebuilt);
        }
    }
}
