//! What fulcrum reads from a server's response header before passing it
//! on: whether it is too large to be a valid response, and how it says its
//! response ends, which the upstream connection's lease needs to know
//! whether the connection can go back to the idle list
//! (net/upstream/connector.rs).

use crate::net::upstream::connector::Lease;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorSource, ErrorType, Result};

/// Pingora rejects a response header over 1 MiB only when it arrives in
/// several reads (a header read in one go is parsed whole), so the limit is
/// checked here too, making it independent of timing.
const MAX_RESPONSE_HEADER_BYTES: usize = 1024 * 1024 - 1;

/// Fails (as an invalid response of the server, which error_while_proxy
/// counts and may retry) when the header is over Pingora's limit.
pub(super) fn check_size(resp: &ResponseHeader) -> Result<()> {
    // Size as sent: name, ": ", value, CRLF per field.
    let size: usize = resp
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size <= MAX_RESPONSE_HEADER_BYTES {
        return Ok(());
    }
    let mut e = Error::explain(
        ErrorType::InvalidHTTPHeader,
        format!("response header larger than {MAX_RESPONSE_HEADER_BYTES} bytes"),
    );
    e.esource = ErrorSource::Upstream;
    Err(e)
}

/// How a response header says its response ends.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ResponseEnd {
    /// Keepalive allowed and the body delimited by Content-Length: if
    /// Pingora then refuses to reuse the connection, it read bytes past it.
    length_keepalive: bool,
    /// No body follows (so no body filter will say the response ended).
    complete: bool,
}

impl ResponseEnd {
    pub(super) fn of(method: &http::Method, resp: &ResponseHeader) -> ResponseEnd {
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

    /// Tells the lease what it needs to know.
    pub(super) fn tell(&self, lease: &Lease) {
        if self.length_keepalive {
            lease.expect_length_keepalive();
        }
        if self.complete {
            lease.response_complete();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
