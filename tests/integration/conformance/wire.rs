//! HTTP/1.1 message framing, written for this suite: a buffered reader over
//! a socket (or over bytes already in memory) that takes a message head,
//! a Content-Length body, a chunked body (chunk extensions, trailers) or
//! everything up to the peer's close. The recording upstream reads requests
//! with it, the client reads responses with it, and the suite splits its
//! own raw requests with it to know what it sent.

use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::time::Instant;

/// Header fields as received: the name as written, the value's raw bytes.
pub type Fields = Vec<(String, Vec<u8>)>;

/// Most fields a head may have here (the corpus sends ~60 plus the
/// proxies' own).
const MAX_FIELDS: usize = 256;

/// Something to read bytes from, with an optional deadline.
pub trait Source: Read {
    fn set_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()>;
}

impl Source for TcpStream {
    fn set_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let left = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ErrorKind::TimedOut.into());
                }
                Some(left)
            }
        };
        self.set_read_timeout(left)
    }
}

impl Source for &[u8] {
    fn set_deadline(&mut self, _: Option<Instant>) -> io::Result<()> {
        Ok(())
    }
}

/// A buffered reader of HTTP/1 messages.
pub struct Wire<S: Source> {
    src: S,
    buf: Vec<u8>,
    /// The peer closed (or reset) the connection.
    pub eof: bool,
    /// Give up reading at this instant (None: wait for ever).
    pub deadline: Option<Instant>,
}

/// A parsed message head (request or response).
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// Request: method; response: empty.
    pub method: String,
    /// Request: target exactly as received; response: empty.
    pub target: String,
    /// Response status (0 for a request).
    pub status: u16,
    /// Minor version: HTTP/1.0 or HTTP/1.1.
    pub minor: u8,
    pub fields: Fields,
}

impl Head {
    /// The first field named `name` (any case).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        field(&self.fields, name)
    }

    /// The comma-separated tokens of every field named `name`, lowercased.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// How the body of this message is delimited (RFC 9112 section 6.3),
    /// given whether it answers a HEAD request.
    pub fn framing(&self, answers_head: bool) -> Framing {
        let no_body = answers_head
            || (self.status >= 100 && self.status < 200)
            || self.status == 204
            || self.status == 304;
        if self.status != 0 && no_body {
            return Framing::None;
        }
        if self.field("transfer-encoding").is_some() {
            return match self.tokens("transfer-encoding").last() {
                Some(t) if t == "chunked" => Framing::Chunked,
                // A request with another coding has no length; a response
                // runs to the close.
                _ if self.status == 0 => Framing::Invalid,
                _ => Framing::UntilClose,
            };
        }
        match self.field("content-length") {
            Some(v) => match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                Some(n) => Framing::Length(n),
                None => Framing::Invalid,
            },
            None if self.status == 0 => Framing::None,
            None => Framing::UntilClose,
        }
    }
}

/// The first field named `name` (any case) in `fields`.
pub fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
    Invalid,
}

/// A body as read: its decoded bytes, its trailer fields, and whether it
/// ended where its framing said (false: the connection closed or the
/// deadline passed first, or the chunked encoding was broken).
#[derive(Debug, Clone, Default)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub trailers: Fields,
    pub complete: bool,
}

impl<S: Source> Wire<S> {
    pub fn new(src: S) -> Wire<S> {
        Wire {
            src,
            buf: Vec::new(),
            eof: false,
            deadline: None,
        }
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.src
    }

    /// Bytes received but not taken yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads more bytes into the buffer; false at the peer's close (a reset
    /// counts as a close) or when the deadline passed.
    pub fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.src.set_deadline(self.deadline).is_err() {
                return false;
            }
            match self.src.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return false;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(_) => {
                    self.eof = true;
                    return false;
                }
            }
        }
    }

    /// Takes `n` bytes from the front of the buffer.
    fn take(&mut self, n: usize) -> Vec<u8> {
        self.buf.drain(..n).collect()
    }

    /// The bytes up to the next CRLF (which is consumed, not returned).
    pub fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.take(i);
                self.take(2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The next message head, raw, up to and including its empty line.
    /// None if the connection closed (or the deadline passed) first; what
    /// arrived of it stays buffered.
    pub fn raw_head(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                return Some(self.take(i + 4));
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Reads a body framed as `framing` into `body`.
    pub fn body(&mut self, framing: Framing) -> Body {
        let mut body = Body::default();
        body.complete = match framing {
            Framing::None => true,
            Framing::Invalid => false,
            Framing::Length(n) => self.exact(n, &mut body.bytes),
            Framing::Chunked => self.chunked(&mut body),
            Framing::UntilClose => {
                while self.fill() {}
                body.bytes = std::mem::take(&mut self.buf);
                self.eof
            }
        };
        body
    }

    /// Appends exactly `n` bytes to `out`; false if fewer arrived.
    fn exact(&mut self, n: usize, out: &mut Vec<u8>) -> bool {
        while self.buf.len() < n {
            if !self.fill() {
                out.append(&mut self.buf);
                return false;
            }
        }
        out.extend(self.take(n));
        true
    }

    /// Decodes a chunked body: `size[;ext]CRLF data CRLF` ..., `0[;ext]CRLF`,
    /// trailer fields, CRLF.
    fn chunked(&mut self, body: &mut Body) -> bool {
        loop {
            let Some(line) = self.line() else {
                return false;
            };
            let size = String::from_utf8_lossy(&line);
            let size = size.split(';').next().unwrap_or("").trim();
            let Ok(n) = usize::from_str_radix(size, 16) else {
                return false;
            };
            if n == 0 {
                return self.trailers(&mut body.trailers);
            }
            if !self.exact(n, &mut body.bytes) || self.line().is_none_or(|l| !l.is_empty()) {
                return false;
            }
        }
    }

    /// Trailer fields up to the empty line.
    fn trailers(&mut self, out: &mut Fields) -> bool {
        loop {
            let Some(line) = self.line() else {
                return false;
            };
            if line.is_empty() {
                return true;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return false;
            };
            let name = String::from_utf8_lossy(&line[..colon]).into_owned();
            out.push((name, trim(&line[colon + 1..]).to_vec()));
        }
    }
}

/// Parses a raw request head.
pub fn parse_request(raw: &[u8]) -> Result<Head, String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(_)) => Ok(Head {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            status: 0,
            minor: req.version.unwrap_or(1),
            fields: owned(req.headers),
        }),
        Ok(httparse::Status::Partial) => Err("incomplete head".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a raw response head.
pub fn parse_response(raw: &[u8]) -> Result<Head, String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut fields);
    match resp.parse(raw) {
        Ok(httparse::Status::Complete(_)) => Ok(Head {
            status: resp.code.unwrap_or(0),
            minor: resp.version.unwrap_or(1),
            fields: owned(resp.headers),
            ..Head::default()
        }),
        Ok(httparse::Status::Partial) => Err("incomplete head".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn owned(fields: &[httparse::Header]) -> Fields {
    fields
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b" \t".contains(b))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b" \t".contains(b))
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// The status of the final response in raw response bytes (after any 1xx).
pub fn final_status(bytes: &[u8]) -> Option<u16> {
    let mut wire = Wire::new(bytes);
    while let Some(raw) = wire.raw_head() {
        let status = parse_response(&raw).ok()?.status;
        if status >= 200 {
            return Some(status);
        }
    }
    None
}

/// Splits raw client bytes into the heads of the complete requests they hold, in
/// order; stops at the first one that does not parse or is incomplete.
/// Also says whether bytes were left over (such a request is answered,
/// at best, with one error).
pub fn split_requests(bytes: &[u8]) -> (Vec<Head>, bool) {
    let mut wire = Wire::new(bytes);
    let mut out = vec![];
    loop {
        let Some(raw) = wire.raw_head() else {
            return (out, !wire.buffered().is_empty());
        };
        let Ok(head) = parse_request(&raw) else {
            return (out, true);
        };
        if !wire.body(head.framing(false)).complete {
            return (out, true);
        }
        out.push(head);
    }
}

/// Bytes for a report: printable ASCII kept, the rest escaped.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}
