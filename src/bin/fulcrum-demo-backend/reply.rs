//! Answers as the backend writes them: status line with its own reason
//! phrases, `Server`, `X-Backend`, `Content-Type`, `Content-Length`, `Allow`
//! and `Connection` in that order, and a body type that also carries the
//! request's in-flight guard until hyper has taken the body.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::ext::ReasonPhrase;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::Value;

use crate::state::{Backend, InFlight};
use crate::PROGRAM;

const X_BACKEND: HeaderName = HeaderName::from_static("x-backend");

/// An answer before it becomes a hyper response.
pub struct Reply {
    pub status: u16,
    pub kind: Kind,
    pub body: Bytes,
    pub allow: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Json,
    /// The shared `--body-size` body (text/plain, length known in advance).
    Fixed,
}

impl Reply {
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Reply {
            status,
            kind: Kind::Text,
            body: Bytes::from(text.into()),
            allow: None,
        }
    }

    pub fn json(status: u16, value: &Value) -> Self {
        let mut body = serde_json::to_vec(value).expect("serializing a JSON value cannot fail");
        body.push(b'\n');
        Reply {
            status,
            kind: Kind::Json,
            body: Bytes::from(body),
            allow: None,
        }
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        Reply {
            allow: Some(allow),
            ..Reply::text(405, "method not allowed\n")
        }
    }
}

/// The `Connection` header of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnHeader {
    /// HTTP/1.1 keep-alive: no header needed.
    Omit,
    /// HTTP/1.0 keep-alive must be confirmed explicitly.
    KeepAlive,
    Close,
}

/// How the request being answered shapes the answer.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub conn: ConnHeader,
    /// A 2xx answer to CONNECT may not declare a length (hyper refuses to).
    pub connect: bool,
}

/// The first headers of every answer of one listener, built once: cloning
/// a small header map costs less than filling one.
pub struct Templates {
    /// `Server` and `X-Backend` (all a 204 has).
    bare: HeaderMap,
    /// The same plus `Content-Type: text/plain`.
    text: HeaderMap,
    /// The same plus `Content-Type: application/json`.
    json: HeaderMap,
    /// `text` plus the `Content-Length` of the `--body-size` body.
    fixed: Option<HeaderMap>,
}

impl Templates {
    pub fn new(name: &str, fixed_len: Option<usize>) -> Self {
        let mut bare = HeaderMap::with_capacity(6);
        bare.insert(header::SERVER, HeaderValue::from_static(PROGRAM));
        // The command line only lets visible ASCII through.
        let name = HeaderValue::from_str(name).expect("server names are visible ASCII");
        bare.insert(X_BACKEND, name);
        let typed = |content_type| {
            let mut map = bare.clone();
            map.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            map
        };
        let (text, json) = (typed("text/plain"), typed("application/json"));
        let fixed = fixed_len.map(|len| {
            let mut map = text.clone();
            map.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            map
        });
        Templates {
            bare,
            text,
            json,
            fixed,
        }
    }

    /// The headers of an answer of `kind` up to its `Content-Length`,
    /// included if `with_length`.
    fn headers(&self, kind: Kind, body_len: usize, with_length: bool) -> HeaderMap {
        if let (Kind::Fixed, Some(fixed), true) = (kind, &self.fixed, with_length) {
            return fixed.clone();
        }
        let mut map = match kind {
            Kind::Json => self.json.clone(),
            Kind::Text | Kind::Fixed => self.text.clone(),
        };
        if with_length {
            map.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
        }
        map
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        // The reason phrase is optional (RFC 9112 §4).
        _ => "",
    }
}

/// Builds the hyper response for `reply`. HEAD, 204 and 304 answers get no
/// body from hyper; 304 and HEAD still declare the length a 200 would carry.
pub fn respond(
    backend: &Backend,
    reply: Reply,
    ex: Exchange,
    in_flight: Option<InFlight>,
) -> Response<Payload> {
    // Statuses come from parse_status (200..=599) or from this program.
    let status = StatusCode::from_u16(reply.status).expect("valid status code");
    let no_content = reply.status == 204;
    let body = if no_content { Bytes::new() } else { reply.body };
    let mut headers = if no_content {
        backend.templates.bare.clone()
    } else {
        // hyper refuses to write a length on a 2xx answer to CONNECT.
        let with_length = !(ex.connect && status.is_success());
        backend
            .templates
            .headers(reply.kind, body.len(), with_length)
    };
    if let Some(allow) = reply.allow {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    match ex.conn {
        ConnHeader::Omit => {}
        ConnHeader::KeepAlive => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        }
        ConnHeader::Close => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }

    let mut res = Response::new(Payload {
        data: Some(body),
        _in_flight: in_flight,
    });
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    let reason = reason_phrase(reply.status);
    if status.canonical_reason() != Some(reason) {
        res.extensions_mut()
            .insert(ReasonPhrase::from_static(reason.as_bytes()));
    }
    res
}

/// A response body sent in one piece. It ends the in-flight span of a normal
/// request when hyper drops it, after taking its bytes.
pub struct Payload {
    data: Option<Bytes>,
    _in_flight: Option<InFlight>,
}

impl Body for Payload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(
            this.data
                .take()
                .filter(|d| !d.is_empty())
                .map(|d| Ok(Frame::data(d))),
        )
    }

    // Not `data.is_empty()`: an empty body still gets its `Content-Length: 0`
    // written where the other headers put it.
    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, Bytes::len) as u64)
    }
}
