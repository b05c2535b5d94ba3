//! What a client may send: header size and count, unambiguous message
//! framing, body size; and the error text of the answers. Small pure
//! functions over the request header, called from the proxy phases.
//!
//! Pingora has already rejected (400, connection closed) anything httparse
//! cannot parse: a malformed request line, bad bytes in a header name or
//! value, obsolete line folding, whitespace before a colon, more than 256
//! header fields or more than 1 MiB of header, two different
//! `Content-Length`s, an invalid `Content-Length`, a final
//! `Transfer-Encoding` other than `chunked`, `Transfer-Encoding` in an
//! HTTP/1.0 request. What it lets through and fulcrum refuses here, because
//! a server behind it could frame the message differently:
//!
//! - `Content-Length` together with `Transfer-Encoding` (Pingora drops the
//!   `Content-Length` and goes on; RFC 9112 §6.1 allows a server to reject);
//! - `Transfer-Encoding` other than exactly one field `chunked` (Pingora
//!   only looks at the last coding of the last field, so
//!   `Transfer-Encoding: x` + `Transfer-Encoding: chunked` would pass);
//! - more than one `Content-Length` value, even identical ones (Pingora
//!   accepts `5` twice or `5, 5` and forwards them as sent; nginx refuses).
//!
//! Each of these is answered 400 and the connection is closed.

use crate::config::LimitsConfig;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use pingora_http::authority::raw_target_authority;

/// Why a request is refused before it is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reject {
    /// 400, 413 or 431.
    pub(crate) status: u16,
    /// Said in the response body and the error log.
    pub(crate) reason: String,
}

impl Reject {
    fn new(status: u16, reason: impl Into<String>) -> Reject {
        Reject {
            status,
            reason: reason.into(),
        }
    }

    /// The error that makes the proxy answer `status` and close the connection.
    pub(crate) fn into_error(self) -> Box<Error> {
        Error::explain(ErrorType::HTTPStatus(self.status), self.reason)
    }
}

/// Every check on a request header, in order: size (431), field count
/// (431), framing (400), declared body size (413). `raw` is the header as
/// received (request line through the empty line).
pub(crate) fn check_request(
    raw: &[u8],
    req: &RequestHeader,
    body: &DeclaredBody,
    limits: &LimitsConfig,
) -> Result<(), Reject> {
    if raw.len() > limits.max_header_size {
        return Err(Reject::new(
            431,
            format!(
                "request header of {} bytes exceeds limits.max_header_size ({})",
                raw.len(),
                limits.max_header_size
            ),
        ));
    }
    let count = req.headers.len();
    if count > limits.max_header_count {
        return Err(Reject::new(
            431,
            format!(
                "{count} header fields exceed limits.max_header_count ({})",
                limits.max_header_count
            ),
        ));
    }
    // RFC 9112 §3.2; nginx too, where the target has no authority either.
    if req.version == http::Version::HTTP_11
        && !req.headers.contains_key(http::header::HOST)
        && !has_absolute_target(req)
    {
        return Err(Reject::new(400, "HTTP/1.1 request without Host"));
    }
    // The raw scan is only needed when the parsed map says there is a body:
    // without either field Pingora reads no body and forwards neither.
    if *body != DeclaredBody::Absent {
        framing(raw)?;
    }
    if let DeclaredBody::Length(Some(len)) = *body {
        if body_too_large(len, limits.client_max_body_size) {
            return Err(body_reject(limits.client_max_body_size));
        }
    }
    Ok(())
}

/// What a request header says of its body (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeclaredBody {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body.
    Absent,
    /// `Content-Length` (`None`: not a number, which Pingora refuses first).
    Length(Option<u64>),
    /// `Transfer-Encoding` (chunked, once [`framing`] has passed).
    Encoded,
}

impl DeclaredBody {
    /// The body's length on the wire, where the header fixes it.
    pub(crate) fn wire_length(self) -> Option<u64> {
        match self {
            DeclaredBody::Absent => Some(0),
            DeclaredBody::Length(n) => n,
            DeclaredBody::Encoded => None,
        }
    }
}

/// Reads the body's framing fields (two lookups, shared by the checks here
/// and the client connection's accounting).
pub(crate) fn declared_body(req: &RequestHeader) -> DeclaredBody {
    if req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return DeclaredBody::Encoded;
    }
    match req.headers.get(http::header::CONTENT_LENGTH) {
        None => DeclaredBody::Absent,
        Some(v) => DeclaredBody::Length(
            std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|s| s.parse().ok()),
        ),
    }
}

/// `GET http://h/p`: the target names the host (RFC 9112 §3.2.2).
pub(crate) fn has_absolute_target(req: &RequestHeader) -> bool {
    let raw = req.raw_path();
    raw.first() != Some(&b'/') && raw_target_authority(raw).authority().is_some()
}

/// Checks that the body framing can be read only one way.
pub(crate) fn framing(raw: &[u8]) -> Result<(), Reject> {
    let mut lengths: Vec<&[u8]> = Vec::new();
    let mut te_fields = 0usize;
    let mut te_chunked = true;
    // The request line never contains ':' before its first space in a form
    // httparse accepted, but skip it anyway: only header lines matter.
    for line in raw.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths.extend(value.split(|&b| b == b',').map(<[u8]>::trim_ascii));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_fields += 1;
            te_chunked &= value.eq_ignore_ascii_case(b"chunked");
        }
    }
    if te_fields > 0 && !lengths.is_empty() {
        return Err(Reject::new(
            400,
            "both Content-Length and Transfer-Encoding: ambiguous framing",
        ));
    }
    if te_fields > 1 || !te_chunked {
        return Err(Reject::new(
            400,
            "Transfer-Encoding must be a single \"chunked\"",
        ));
    }
    // Like nginx, and stricter than Pingora (which lets identical
    // duplicates through, and forwards them as sent): exactly one value.
    match lengths.as_slice() {
        [] => Ok(()),
        [one] if !one.is_empty() && one.iter().all(u8::is_ascii_digit) => Ok(()),
        [_] => Err(Reject::new(400, "invalid Content-Length")),
        _ => Err(Reject::new(400, "more than one Content-Length")),
    }
}

/// Whether `len` body bytes are more than `client_max_body_size` (`max`,
/// 0 = unlimited) allows.
pub(crate) fn body_too_large(len: u64, max: u64) -> bool {
    max != 0 && len > max
}

/// The 413 answer for `client_max_body_size` `max`.
pub(crate) fn body_reject(max: u64) -> Reject {
    Reject::new(
        413,
        format!("request body exceeds limits.client_max_body_size ({max} bytes)"),
    )
}

/// After an early 413, reads and discards what the client is still sending
/// (at most [`LINGER_TIME`]) before the connection is closed: closing a
/// socket with unread data resets it, and the client could lose the answer.
pub(crate) async fn discard_body(session: &mut Session) {
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    while let Ok(Ok(Some(_))) = tokio::time::timeout_at(deadline, session.read_request_body()).await
    {
    }
}

/// How long [`discard_body`] goes on (nginx: `lingering_time`, 30 s).
pub(crate) const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Pingora's keepalive setting for `keepalive_timeout`: `None` turns
/// keepalive off; otherwise whole seconds, rounded up (Pingora counts in
/// seconds, and its 0 would mean "forever").
pub(crate) fn keepalive_secs(limits: &LimitsConfig) -> Option<u64> {
    let t = limits.keepalive_timeout;
    if t.is_zero() {
        None
    } else {
        Some(t.as_secs() + u64::from(t.subsec_nanos() > 0))
    }
}

/// The body of an error response fulcrum writes: `"431 Request Header
/// Fields Too Large: <why>"`; the why only for errors raised by a check.
pub(crate) fn error_text(code: u16, e: &Error) -> String {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    match (e.etype(), &e.context) {
        (ErrorType::HTTPStatus(_), Some(why)) => format!("{code} {reason}: {why}"),
        _ => format!("{code} {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Parses a raw header the way Pingora does, minus its own rejections.
    fn parse(raw: &str) -> RequestHeader {
        // Bare LF line ends too, as httparse accepts them.
        let mut lines = raw.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let mut first = lines.next().unwrap().split(' ');
        let (method, path) = (first.next().unwrap(), first.next().unwrap());
        let mut req = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        for l in lines.filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once(':').unwrap();
            req.append_header(k.to_string(), v.trim()).unwrap();
        }
        req
    }

    fn check(raw: &str, limits: &LimitsConfig) -> Result<(), Reject> {
        let req = parse(raw);
        check_request(raw.as_bytes(), &req, &declared_body(&req), limits)
    }

    fn status(raw: &str) -> Option<u16> {
        check(raw, &LimitsConfig::default()).err().map(|r| r.status)
    }

    #[test]
    fn ordinary_requests_pass() {
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
        assert_eq!(
            status("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            None
        );
        assert_eq!(
            status("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            None
        );
    }

    #[test]
    fn an_http11_request_needs_a_host_unless_its_target_has_one() {
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), Some(400));
        assert_eq!(status("GET http://a/ HTTP/1.1\r\n\r\n"), None);
        let mut old = parse("GET / HTTP/1.1\r\n\r\n");
        old.set_version(http::Version::HTTP_10);
        let ok = check_request(
            b"GET / HTTP/1.0\r\n\r\n",
            &old,
            &DeclaredBody::Absent,
            &LimitsConfig::default(),
        );
        assert_eq!(ok, Ok(()), "HTTP/1.0 may omit Host");
    }

    #[test]
    fn ambiguous_framing_is_400() {
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            // Identical duplicates too (RFC 9110 §8.6 allows rejecting; nginx does).
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        ] {
            assert_eq!(status(raw), Some(400), "{raw:?}");
        }
        // Bare LF line ends (httparse accepts them) are read the same way.
        assert_eq!(
            status("POST / HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: chunked\n\n"),
            Some(400)
        );
    }

    #[test]
    fn header_size_and_count_are_431() {
        let limits = LimitsConfig {
            max_header_size: 1024,
            max_header_count: 3,
            ..LimitsConfig::default()
        };
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1000)
        );
        assert_eq!(check(&big, &limits).unwrap_err().status, 431);
        let exact = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(1024 - 32)
        );
        assert_eq!(exact.len(), 1024);
        assert_eq!(check(&exact, &limits), Ok(()));
        let many = "GET / HTTP/1.1\r\nHost: a\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        let r = check(many, &limits).unwrap_err();
        assert_eq!(r.status, 431);
        assert!(r.reason.contains("4 header fields"), "{}", r.reason);
        assert_eq!(
            check("GET / HTTP/1.1\r\nHost: a\r\nB: 2\r\nC: 3\r\n\r\n", &limits),
            Ok(())
        );
    }

    #[test]
    fn declared_body_over_the_limit_is_413() {
        let limits = LimitsConfig {
            client_max_body_size: 100,
            ..LimitsConfig::default()
        };
        let r = check(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n",
            &limits,
        )
        .unwrap_err();
        assert_eq!(r.status, 413);
        assert_eq!(
            check(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n",
                &limits
            ),
            Ok(())
        );
        let unlimited = LimitsConfig {
            client_max_body_size: 0,
            ..LimitsConfig::default()
        };
        assert!(!body_too_large(u64::MAX, unlimited.client_max_body_size));
        let max = LimitsConfig::default().client_max_body_size;
        assert!(body_too_large(1_048_577, max));
        assert!(!body_too_large(1_048_576, max));
    }

    #[test]
    fn keepalive_rounds_up_and_zero_disables() {
        let with = |t| LimitsConfig {
            keepalive_timeout: t,
            ..LimitsConfig::default()
        };
        assert_eq!(keepalive_secs(&with(Duration::ZERO)), None);
        assert_eq!(keepalive_secs(&with(Duration::from_millis(1))), Some(1));
        assert_eq!(keepalive_secs(&with(Duration::from_secs(75))), Some(75));
        assert_eq!(keepalive_secs(&with(Duration::from_millis(1500))), Some(2));
    }

    #[test]
    fn error_texts_name_the_status_and_the_reason() {
        let e = Reject::new(431, "too many").into_error();
        assert_eq!(
            error_text(431, &e),
            "431 Request Header Fields Too Large: too many"
        );
        let e = Error::new(ErrorType::ReadTimedout);
        assert_eq!(error_text(408, &e), "408 Request Timeout");
        assert_eq!(
            error_text(400, &Error::new(ErrorType::InvalidHTTPHeader)),
            "400 Bad Request"
        );
    }
}
