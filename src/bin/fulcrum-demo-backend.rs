//! `fulcrum-demo-backend`: a small HTTP/1.1 backend for the quick start, the
//! namespaced deployment demo and the integration tests of fulcrum.
//!
//! It echoes every request back as JSON (or, for benchmarks, a fixed-size
//! body), answers a health endpoint, and can be told to misbehave (delay,
//! fail health, drop connections) through command-line flags or control
//! endpoints at run time. One process can serve several named listeners, each
//! with its own independent counters and modes.
//!
//! The HTTP/1.1 server is hand-rolled on purpose (no hyper) so that the demo
//! backend has full control over misbehaviour such as closing a connection
//! after reading a request without answering it.
//!
//! # Usage
//!
//! ```text
//! fulcrum-demo-backend --listen user-m1@127.0.0.1:3001 --listen user-m2@127.0.0.1:3002
//! fulcrum-demo-backend --name api --listen 127.0.0.1:0 --port-file /tmp/ports
//! ```
//!
//! Options:
//!
//! * `--listen NAME@ADDR` (repeatable), or `--name NAME --listen ADDR` once.
//! * `--delay-ms N`: default delay added to every normal request (0).
//! * `--fail-health`: start with `/health` answering 503.
//! * `--drop-every N`: close without answering every Nth normal request (0 = off).
//! * `--close-after-read`: read each normal request fully, then close without answering.
//! * `--body-size N`: normal responses carry N bytes of `x` instead of JSON.
//! * `--port-file PATH`: write `NAME ADDR` lines for the bound addresses.
//! * `--threads N`: tokio worker threads (1).
//!
//! # Endpoints (per listener)
//!
//! * `GET /health`: 200 `ok`, or 503 `unhealthy` while health is failing.
//! * `GET /__control/stats`: JSON counters (requests, connections accepted, ...)
//!   and the last 1000 normal requests.
//! * `POST /__control/health?fail=1|0`: make health fail or pass.
//! * `POST /__control/mode?delay_ms=N&drop_every=N&close_after_read=0|1&status=N`:
//!   change the defaults for later requests.
//! * `POST /__control/reset`: zero the counters and the recent-request log.
//! * Anything else: after the delay (`?delay_ms=N` overrides it), answer with
//!   status `?status=N` (default 200) and a JSON echo of the request.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PROGRAM: &str = "fulcrum-demo-backend";

/// Largest accepted request head (request line + headers + blank line).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest accepted chunk-size line (size plus extensions) in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// How much spare buffer room to offer each socket read.
const READ_CHUNK: usize = 16 * 1024;
/// Bodies up to this size are sent in the same write as the head.
const COALESCE_LIMIT: usize = 64 * 1024;
/// Number of normal requests kept in the `recent` log of the stats endpoint.
const RECENT_CAP: usize = 1000;
/// Paths under this prefix are control endpoints: never counted, delayed or dropped.
const CONTROL_PREFIX: &str = "/__control/";

const USAGE: &str = "\
fulcrum-demo-backend: a demo/test HTTP/1.1 backend for fulcrum

USAGE:
    fulcrum-demo-backend --listen NAME@ADDR [--listen NAME@ADDR ...] [OPTIONS]
    fulcrum-demo-backend --name NAME --listen ADDR [OPTIONS]

OPTIONS:
    --listen NAME@ADDR   serve a server named NAME on ADDR (repeatable)
    --name NAME          name of the single server given by --listen ADDR
    --delay-ms N         default delay added to every normal request [0]
    --fail-health        start with /health answering 503
    --drop-every N       close without answering every Nth normal request [0 = off]
    --close-after-read   read each normal request, then close without answering
    --body-size N        answer normal requests with N bytes of 'x' instead of JSON
    --port-file PATH     write 'NAME ADDR' per listener to PATH once bound
    --threads N          tokio worker threads [1]
    -h, --help           print this help

ENDPOINTS (per listener):
    GET  /health                      200 ok, or 503 unhealthy
    GET  /__control/stats             counters and recent requests (JSON)
    POST /__control/health?fail=1|0   make /health fail or pass
    POST /__control/mode?delay_ms=N&drop_every=N&close_after_read=0|1&status=N
    POST /__control/reset             zero counters and the recent log
    *    anything else                JSON echo; ?delay_ms=N and ?status=N honoured
";

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Config {
    listeners: Vec<(String, SocketAddr)>,
    delay_ms: u64,
    fail_health: bool,
    drop_every: u64,
    close_after_read: bool,
    body_size: Option<usize>,
    port_file: Option<PathBuf>,
    threads: usize,
}

#[derive(Debug, PartialEq)]
enum Command {
    Run(Config),
    Help,
}

/// Returns the value of an option given either as `--flag=value` or `--flag value`.
fn option_value(
    flag: &str,
    inline: Option<String>,
    rest: &mut impl Iterator<Item = String>,
) -> Result<String, String> {
    match inline {
        Some(v) => Ok(v),
        None => rest.next().ok_or_else(|| format!("{flag} needs a value")),
    }
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not a valid non-negative integer"))
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut raw_listens: Vec<String> = Vec::new();
    let mut name: Option<String> = None;
    let mut cfg = Config {
        listeners: Vec::new(),
        delay_ms: 0,
        fail_health: false,
        drop_every: 0,
        close_after_read: false,
        body_size: None,
        port_file: None,
        threads: 1,
    };

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => raw_listens.push(option_value(&flag, inline, &mut args)?),
            "--name" => {
                if name.is_some() {
                    return Err("--name given more than once".into());
                }
                name = Some(option_value(&flag, inline, &mut args)?);
            }
            "--delay-ms" => {
                cfg.delay_ms = parse_number(&flag, &option_value(&flag, inline, &mut args)?)?
            }
            "--drop-every" => {
                cfg.drop_every = parse_number(&flag, &option_value(&flag, inline, &mut args)?)?
            }
            "--body-size" => {
                cfg.body_size = Some(parse_number(
                    &flag,
                    &option_value(&flag, inline, &mut args)?,
                )?)
            }
            "--port-file" => cfg.port_file = Some(option_value(&flag, inline, &mut args)?.into()),
            "--threads" => {
                cfg.threads = parse_number(&flag, &option_value(&flag, inline, &mut args)?)?;
                if cfg.threads == 0 {
                    return Err("--threads must be at least 1".into());
                }
            }
            "--fail-health" | "--close-after-read" => {
                if inline.is_some() {
                    return Err(format!("{flag} takes no value"));
                }
                if flag == "--fail-health" {
                    cfg.fail_health = true;
                } else {
                    cfg.close_after_read = true;
                }
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }

    if raw_listens.is_empty() {
        return Err("at least one --listen is required".into());
    }
    let pairs: Vec<(String, String)> = match name {
        Some(name) => {
            if raw_listens.len() != 1 {
                return Err("--name can only be used with a single --listen ADDR".into());
            }
            if raw_listens[0].contains('@') {
                return Err("--name conflicts with --listen NAME@ADDR; use one form".into());
            }
            vec![(name, raw_listens.remove(0))]
        }
        None => raw_listens
            .iter()
            .map(|l| match l.split_once('@') {
                Some((n, a)) => Ok((n.to_string(), a.to_string())),
                None => Err(format!(
                    "--listen '{l}': expected NAME@ADDR (or use --name NAME --listen ADDR)"
                )),
            })
            .collect::<Result<_, _>>()?,
    };

    for (name, addr) in pairs {
        // The name goes into a response header and into the port file's
        // space-separated lines, so keep it to visible ASCII.
        if name.is_empty() || !name.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(format!(
                "invalid server name '{name}': use visible ASCII characters only"
            ));
        }
        if cfg.listeners.iter().any(|(n, _)| *n == name) {
            return Err(format!("server name '{name}' used more than once"));
        }
        let addr = resolve_addr(&addr).map_err(|e| format!("--listen {name}@{addr}: {e}"))?;
        cfg.listeners.push((name, addr));
    }
    Ok(Command::Run(cfg))
}

fn resolve_addr(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    // Allow host names such as localhost:3001; resolution happens once at start.
    addr.to_socket_addrs()
        .map_err(|e| format!("invalid address: {e}"))?
        .next()
        .ok_or_else(|| "address resolved to nothing".to_string())
}

// ---------------------------------------------------------------------------
// Per-listener state
// ---------------------------------------------------------------------------

struct RecentEntry {
    method: String,
    uri: String,
}

/// State of one named server. Atomics keep the normal path lock-free except
/// for the short critical section appending to the recent log.
struct Backend {
    name: String,
    /// Pre-built body for `--body-size`, shared by all responses.
    fixed_body: Option<Arc<[u8]>>,
    requests: AtomicU64,
    health_requests: AtomicU64,
    in_flight: AtomicU64,
    /// TCP connections accepted (a proxy's upstream connection reuse shows here).
    connections: AtomicU64,
    health_failing: AtomicBool,
    delay_ms: AtomicU64,
    drop_every: AtomicU64,
    close_after_read: AtomicBool,
    /// Default status for normal requests; 0 means 200.
    default_status: AtomicU16,
    recent: Mutex<VecDeque<RecentEntry>>,
}

impl Backend {
    fn new(name: &str, cfg: &Config, fixed_body: Option<Arc<[u8]>>) -> Self {
        Backend {
            name: name.to_string(),
            fixed_body,
            requests: AtomicU64::new(0),
            health_requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            health_failing: AtomicBool::new(cfg.fail_health),
            delay_ms: AtomicU64::new(cfg.delay_ms),
            drop_every: AtomicU64::new(cfg.drop_every),
            close_after_read: AtomicBool::new(cfg.close_after_read),
            default_status: AtomicU16::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_CAP)),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, VecDeque<RecentEntry>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a normal request and logs it; returns its 1-based sequence number.
    fn record(&self, method: &str, uri: &str) -> u64 {
        let seq = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let mut recent = self.recent();
        if recent.len() == RECENT_CAP {
            recent.pop_front();
        }
        recent.push_back(RecentEntry {
            method: method.to_string(),
            uri: uri.to_string(),
        });
        seq
    }
}

/// Keeps `in_flight` accurate on every exit path (answered, dropped, abandoned).
struct InFlight<'a>(&'a Backend);

impl<'a> InFlight<'a> {
    fn enter(backend: &'a Backend) -> Self {
        backend.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(backend)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
struct RequestHead {
    method: String,
    target: String,
    http10: bool,
    /// Header names lowercased, values with surrounding whitespace trimmed.
    headers: Vec<(String, String)>,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
}

#[derive(Debug)]
enum ReadError {
    /// The peer closed the connection in the middle of a request.
    Closed,
    Io(io::Error),
    /// The request is unacceptable: answer with this status, then close.
    Reject {
        status: u16,
        reason: &'static str,
    },
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

fn bad(reason: &'static str) -> ReadError {
    ReadError::Reject {
        status: 400,
        reason,
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Reads more bytes into `buf`; returns 0 at end of stream.
async fn read_more<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    rd.read_buf(buf).await
}

/// Finds the end of the request head (index just past the blank line),
/// scanning from `from`. Bare LF line endings are tolerated like most servers do.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        match &buf[nl + 1..] {
            [b'\n', ..] => return Some(nl + 2),
            [b'\r', b'\n', ..] => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Reads one request head from `rd`, keeping any bytes after it in `buf` (the
/// body and pipelined requests). Returns `Ok(None)` on a clean end of stream
/// between requests.
async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<RequestHead>, ReadError> {
    let mut scanned = 0;
    loop {
        // RFC 9112 §2.2: ignore empty lines before a request line (some
        // clients send a stray CRLF after a body).
        let blank = buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if blank > 0 {
            buf.drain(..blank);
            scanned = 0;
        }
        if let Some(end) = find_head_end(buf, scanned) {
            if end > MAX_HEAD_BYTES {
                return Err(too_large());
            }
            let head = parse_head(&buf[..end])?;
            buf.drain(..end);
            return Ok(Some(head));
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(too_large());
        }
        // Only the last 2 bytes can start a terminator that more data completes.
        scanned = buf.len().saturating_sub(2);
        if read_more(rd, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Closed)
            };
        }
    }
}

fn too_large() -> ReadError {
    ReadError::Reject {
        status: 431,
        reason: "request header fields too large",
    }
}

/// Parses a complete request head (including its terminating blank line).
fn parse_head(raw: &[u8]) -> Result<RequestHead, ReadError> {
    let mut lines = raw
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let (method, target, http10) = parse_request_line(lines.next().unwrap_or_default())?;

    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(bad("obsolete header line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| bad("header line without colon"))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(bad("invalid header name"));
        }
        let value = trim_ows(&line[colon + 1..]);
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(bad("invalid character in header value"));
        }
        headers.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }

    let mut content_length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    for (name, value) in &headers {
        match name.as_str() {
            "content-length" => {
                // A list of identical values ("5, 5") is tolerated; anything
                // else ambiguous is rejected to avoid request smuggling.
                for part in value.split(',') {
                    let part = part.trim();
                    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad("invalid Content-Length"));
                    }
                    let n: u64 = part.parse().map_err(|_| bad("invalid Content-Length"))?;
                    if content_length.is_some_and(|prev| prev != n) {
                        return Err(bad("conflicting Content-Length values"));
                    }
                    content_length = Some(n);
                }
            }
            "transfer-encoding" => codings.extend(
                value
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            ),
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    conn_close |= token.eq_ignore_ascii_case("close");
                    conn_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
            "expect" => expect_continue |= value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }

    let mut force_close = false;
    let framing = if !codings.is_empty() {
        // RFC 9112 §6.3: chunked must be the final coding of a request body,
        // and only once. Other codings are counted as opaque bytes.
        let chunked_count = codings.iter().filter(|c| *c == "chunked").count();
        if codings.last().map(String::as_str) != Some("chunked") || chunked_count != 1 {
            return Err(bad("unsupported Transfer-Encoding"));
        }
        // Transfer-Encoding wins over Content-Length, but such a message (or
        // an HTTP/1.0 one with Transfer-Encoding) must not be followed by
        // another request on the same connection.
        force_close = content_length.is_some() || http10;
        BodyFraming::Chunked
    } else {
        match content_length {
            None | Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };

    let keep_alive = !force_close && !conn_close && (!http10 || conn_keep_alive);
    Ok(RequestHead {
        method,
        target,
        http10,
        headers,
        framing,
        keep_alive,
        expect_continue: expect_continue && !http10,
    })
}

fn parse_request_line(line: &[u8]) -> Result<(String, String, bool), ReadError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad("invalid method"));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(bad("invalid request target"));
    }
    let http10 = match version {
        b"HTTP/1.0" => true,
        // Higher 1.x minor versions are served as 1.1 (RFC 9110 §6.2).
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if d.is_ascii_digit() => false,
        [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            return Err(ReadError::Reject {
                status: 505,
                reason: "HTTP version not supported",
            })
        }
        _ => return Err(bad("malformed HTTP version")),
    };
    // Both were checked to be ASCII above.
    Ok((
        String::from_utf8_lossy(method).into_owned(),
        String::from_utf8_lossy(target).into_owned(),
        http10,
    ))
}

/// Reads and discards the request body, returning its decoded length.
async fn read_body<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
    framing: BodyFraming,
) -> Result<u64, ReadError> {
    match framing {
        BodyFraming::None => Ok(0),
        BodyFraming::Length(n) => {
            skip_bytes(rd, buf, n).await?;
            Ok(n)
        }
        BodyFraming::Chunked => {
            let mut total: u64 = 0;
            loop {
                let line = read_line(rd, buf, MAX_CHUNK_LINE).await?;
                let size = parse_chunk_size(&line).ok_or_else(|| bad("invalid chunk size"))?;
                if size == 0 {
                    break;
                }
                skip_bytes(rd, buf, size).await?;
                total = total
                    .checked_add(size)
                    .ok_or_else(|| bad("chunked body too large"))?;
                if !read_line(rd, buf, 0).await?.is_empty() {
                    return Err(bad("missing CRLF after chunk data"));
                }
            }
            // Trailer section: header lines up to an empty line, bounded like the head.
            let mut trailer_bytes = 0;
            loop {
                let line = read_line(rd, buf, MAX_HEAD_BYTES).await?;
                if line.is_empty() {
                    return Ok(total);
                }
                trailer_bytes += line.len();
                if trailer_bytes > MAX_HEAD_BYTES {
                    return Err(too_large());
                }
            }
        }
    }
}

/// Discards exactly `n` bytes of input, without holding them in memory.
async fn skip_bytes<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
    n: u64,
) -> Result<(), ReadError> {
    let mut remaining = n;
    loop {
        let take = remaining.min(buf.len() as u64) as usize;
        buf.drain(..take);
        remaining -= take as u64;
        if remaining == 0 {
            return Ok(());
        }
        if read_more(rd, buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// Reads one LF-terminated line (CR stripped) of at most `limit` bytes.
async fn read_line<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut scanned = 0;
    loop {
        if let Some(pos) = buf[scanned..].iter().position(|&b| b == b'\n') {
            let pos = scanned + pos;
            let mut line = buf[..pos].to_vec();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > limit {
                return Err(bad("line too long in chunked body"));
            }
            buf.drain(..=pos);
            return Ok(line);
        }
        // +1 leaves room for the CR of a line that is exactly at the limit.
        if buf.len() > limit + 1 {
            return Err(bad("line too long in chunked body"));
        }
        scanned = buf.len();
        if read_more(rd, buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let size = trim_ows(size);
    if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

/// Splits a request target into (path, query). Absolute-form targets (as sent
/// to a forward proxy) have their scheme and authority removed from the path.
fn split_target(target: &str) -> (&str, &str) {
    let (before, query) = target.split_once('?').unwrap_or((target, ""));
    let path = match before.find("://") {
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

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

enum Body {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Body {
    fn as_slice(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Shared(s) => s,
        }
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Body,
    allow: Option<&'static str>,
}

impl Response {
    fn text(status: u16, text: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain",
            body: Body::Owned(text.into().into_bytes()),
            allow: None,
        }
    }

    fn json(status: u16, value: &Value) -> Self {
        let mut body = serde_json::to_vec(value).expect("serializing a JSON value cannot fail");
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body: Body::Owned(body),
            allow: None,
        }
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        Response {
            allow: Some(allow),
            ..Response::text(405, "method not allowed\n")
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnHeader {
    /// HTTP/1.1 keep-alive: no header needed.
    Omit,
    /// HTTP/1.0 keep-alive must be confirmed explicitly.
    KeepAlive,
    Close,
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

async fn write_response<W: AsyncWrite + Unpin>(
    wr: &mut W,
    server: &str,
    resp: &Response,
    head_only: bool,
    conn: ConnHeader,
) -> io::Result<()> {
    let body = resp.body.as_slice();
    // 204 and 304 never carry a body; 204 must not even declare a length
    // (RFC 9110 §8.6), 304 declares what a 200 would have carried, like HEAD.
    let send_body = !head_only && resp.status != 204 && resp.status != 304;
    let mut out = Vec::with_capacity(
        256 + if send_body && body.len() <= COALESCE_LIMIT {
            body.len()
        } else {
            0
        },
    );
    write!(
        out,
        "HTTP/1.1 {} {}\r\nServer: {PROGRAM}\r\nX-Backend: {server}\r\n",
        resp.status,
        reason_phrase(resp.status)
    )?;
    if resp.status != 204 {
        write!(
            out,
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            resp.content_type,
            body.len()
        )?;
    }
    if let Some(allow) = resp.allow {
        write!(out, "Allow: {allow}\r\n")?;
    }
    match conn {
        ConnHeader::Omit => {}
        ConnHeader::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnHeader::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    if send_body && body.len() <= COALESCE_LIMIT {
        out.extend_from_slice(body);
        wr.write_all(&out).await
    } else {
        wr.write_all(&out).await?;
        if send_body {
            wr.write_all(body).await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

fn headers_json(headers: &[(String, String)]) -> Map<String, Value> {
    let mut map = Map::new();
    for (name, value) in headers {
        match map.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                map.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    map
}

fn parse_flag(value: &str) -> Option<bool> {
    match value {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// Parses a status code for a response; 1xx is refused because an interim
/// response cannot end an exchange.
fn parse_status(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(s) if (200..=599).contains(&s) => Ok(s),
        _ => Err(format!(
            "status must be an integer in 200..=599, got '{value}'"
        )),
    }
}

fn handle_control(backend: &Backend, method: &str, path: &str, query: &str) -> Response {
    let ok = || Response::text(200, "ok");
    match path {
        "/__control/stats" => {
            if method != "GET" && method != "HEAD" {
                return Response::method_not_allowed("GET, HEAD");
            }
            let recent: Vec<Value> = backend
                .recent()
                .iter()
                .map(|e| json!({"method": e.method, "uri": e.uri}))
                .collect();
            Response::json(
                200,
                &json!({
                    "server": backend.name,
                    "requests": backend.requests.load(Ordering::SeqCst),
                    "health_requests": backend.health_requests.load(Ordering::SeqCst),
                    "in_flight": backend.in_flight.load(Ordering::SeqCst),
                    "connections": backend.connections.load(Ordering::SeqCst),
                    "recent": recent,
                }),
            )
        }
        "/__control/health" => {
            if method != "POST" {
                return Response::method_not_allowed("POST");
            }
            let fail = query_pairs(query)
                .find(|(k, _)| *k == "fail")
                .and_then(|(_, v)| parse_flag(v));
            match fail {
                Some(fail) => {
                    backend.health_failing.store(fail, Ordering::SeqCst);
                    ok()
                }
                None => Response::text(400, "expected ?fail=1 or ?fail=0\n"),
            }
        }
        "/__control/mode" => {
            if method != "POST" {
                return Response::method_not_allowed("POST");
            }
            match apply_mode(backend, query) {
                Ok(()) => ok(),
                Err(msg) => Response::text(400, format!("{msg}\n")),
            }
        }
        "/__control/reset" => {
            if method != "POST" {
                return Response::method_not_allowed("POST");
            }
            // in_flight is a gauge of live requests, not a counter: keep it.
            let mut recent = backend.recent();
            backend.requests.store(0, Ordering::SeqCst);
            backend.health_requests.store(0, Ordering::SeqCst);
            recent.clear();
            ok()
        }
        _ => Response::text(404, "unknown control endpoint\n"),
    }
}

/// Validates every parameter before changing anything, so a bad request
/// leaves the mode untouched.
fn apply_mode(backend: &Backend, query: &str) -> Result<(), String> {
    let (mut delay, mut drop_every, mut close, mut status) = (None, None, None, None);
    for (key, value) in query_pairs(query) {
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key} must be a non-negative integer, got '{value}'"))
        };
        match key {
            "delay_ms" => delay = Some(number()?),
            "drop_every" => drop_every = Some(number()?),
            "close_after_read" => {
                close = Some(
                    parse_flag(value).ok_or_else(|| "close_after_read must be 0 or 1".to_string())?,
                )
            }
            "status" if value == "0" => status = Some(0),
            "status" => status = Some(parse_status(value)?),
            other => {
                return Err(format!(
                    "unknown mode parameter '{other}' (known: delay_ms, drop_every, close_after_read, status)"
                ))
            }
        }
    }
    if let Some(v) = delay {
        backend.delay_ms.store(v, Ordering::SeqCst);
    }
    if let Some(v) = drop_every {
        backend.drop_every.store(v, Ordering::SeqCst);
    }
    if let Some(v) = close {
        backend.close_after_read.store(v, Ordering::SeqCst);
    }
    if let Some(v) = status {
        backend.default_status.store(v, Ordering::SeqCst);
    }
    Ok(())
}

/// Sleeps for `delay` while watching the connection, so a peer that gives up
/// (e.g. a proxy timing out) is noticed and the request counted as abandoned.
/// Returns false if the peer went away. Pipelined bytes read meanwhile are kept.
async fn wait_delay<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut Vec<u8>, delay: Duration) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        if buf.len() >= 4 * MAX_HEAD_BYTES {
            // Enough buffered; stop reading so memory stays bounded.
            sleep.await;
            return true;
        }
        tokio::select! {
            _ = &mut sleep => return true,
            // read_buf is cancel-safe: if the sleep wins, no data is lost.
            r = read_more(rd, buf) => match r {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            },
        }
    }
}

/// Handles a normal (echo) request. Returns `None` when the connection must be
/// closed without an answer.
async fn handle_normal<R: AsyncRead + Unpin>(
    backend: &Backend,
    seq: u64,
    head: &RequestHead,
    body_bytes: u64,
    rd: &mut R,
    buf: &mut Vec<u8>,
) -> Option<Response> {
    if backend.close_after_read.load(Ordering::SeqCst) {
        return None;
    }
    let every = backend.drop_every.load(Ordering::SeqCst);
    if every > 0 && seq.is_multiple_of(every) {
        return None;
    }

    let (path, query) = split_target(&head.target);
    let mut delay_ms = backend.delay_ms.load(Ordering::SeqCst);
    let mut status = match backend.default_status.load(Ordering::SeqCst) {
        0 => 200,
        s => s,
    };
    for (key, value) in query_pairs(query) {
        match key {
            "delay_ms" => match value.parse() {
                Ok(v) => delay_ms = v,
                Err(_) => {
                    return Some(Response::text(
                        400,
                        format!("delay_ms must be a non-negative integer, got '{value}'\n"),
                    ))
                }
            },
            "status" => match parse_status(value) {
                Ok(s) => status = s,
                Err(msg) => return Some(Response::text(400, format!("{msg}\n"))),
            },
            _ => {}
        }
    }

    if delay_ms > 0 && !wait_delay(rd, buf, Duration::from_millis(delay_ms)).await {
        return None;
    }

    Some(match &backend.fixed_body {
        Some(body) => Response {
            status,
            content_type: "text/plain",
            body: Body::Shared(Arc::clone(body)),
            allow: None,
        },
        None => Response::json(
            status,
            &json!({
                "server": backend.name,
                "method": head.method,
                "path": path,
                "uri": head.target,
                "query": query,
                "body_bytes": body_bytes,
                "headers": headers_json(&head.headers),
            }),
        ),
    })
}

/// Answers an unacceptable request and closes, lingering briefly so the
/// client can read the answer before unread input would make the kernel reset
/// the connection.
async fn reject<R, W>(rd: &mut R, wr: &mut W, backend: &Backend, status: u16, reason: &str)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let resp = Response::text(status, format!("{reason}\n"));
    if write_response(wr, &backend.name, &resp, false, ConnHeader::Close)
        .await
        .is_err()
    {
        return;
    }
    let _ = wr.shutdown().await;
    let drain = async {
        let mut scratch = vec![0u8; READ_CHUNK];
        let mut total = 0;
        while total < 1024 * 1024 {
            match rd.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

async fn serve_connection(backend: Arc<Backend>, mut stream: TcpStream) {
    let (mut rd, mut wr) = stream.split();
    // Kept across requests: it holds the body and any pipelined requests.
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        let head = match read_head(&mut rd, &mut buf).await {
            Ok(Some(head)) => head,
            Ok(None) | Err(ReadError::Closed) => return,
            Err(ReadError::Io(e)) => {
                log::debug!("{}: read error: {e}", backend.name);
                return;
            }
            Err(ReadError::Reject { status, reason }) => {
                return reject(&mut rd, &mut wr, &backend, status, reason).await;
            }
        };
        if head.expect_continue
            && head.framing != BodyFraming::None
            && wr
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let body_bytes = match read_body(&mut rd, &mut buf, head.framing).await {
            Ok(n) => n,
            Err(ReadError::Reject { status, reason }) => {
                return reject(&mut rd, &mut wr, &backend, status, reason).await;
            }
            Err(_) => return,
        };

        let (path, query) = split_target(&head.target);
        let head_only = head.method == "HEAD";
        let conn = if !head.keep_alive {
            ConnHeader::Close
        } else if head.http10 {
            ConnHeader::KeepAlive
        } else {
            ConnHeader::Omit
        };

        let written = if path.starts_with(CONTROL_PREFIX) {
            let resp = handle_control(&backend, &head.method, path, query);
            write_response(&mut wr, &backend.name, &resp, head_only, conn).await
        } else if path == "/health" && (head.method == "GET" || head_only) {
            backend.health_requests.fetch_add(1, Ordering::SeqCst);
            let resp = if backend.health_failing.load(Ordering::SeqCst) {
                Response::text(503, "unhealthy")
            } else {
                Response::text(200, "ok")
            };
            write_response(&mut wr, &backend.name, &resp, head_only, conn).await
        } else {
            let seq = backend.record(&head.method, &head.target);
            // Lives until the response is written or the request abandoned.
            let _in_flight = InFlight::enter(&backend);
            match handle_normal(&backend, seq, &head, body_bytes, &mut rd, &mut buf).await {
                Some(resp) => write_response(&mut wr, &backend.name, &resp, head_only, conn).await,
                None => return,
            }
        };

        if let Err(e) = written {
            log::debug!("{}: write error: {e}", backend.name);
            return;
        }
        if !head.keep_alive {
            let _ = wr.shutdown().await;
            return;
        }
    }
}

async fn accept_loop(listener: TcpListener, backend: Arc<Backend>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backend.connections.fetch_add(1, Ordering::Relaxed);
                // Small responses should not wait for Nagle.
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(Arc::clone(&backend), stream));
            }
            Err(e) => {
                // Typically EMFILE; back off instead of spinning.
                log::warn!("{}: accept failed: {e}", backend.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Startup
// ---------------------------------------------------------------------------

/// Writes the port file atomically so a reader never sees a partial file.
fn write_port_file(path: &Path, lines: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, lines)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                log::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds every listener, announces them, and serves until a signal arrives.
/// Returns the process exit code.
async fn run(cfg: Config) -> i32 {
    let fixed_body: Option<Arc<[u8]>> = cfg.body_size.map(|n| vec![b'x'; n].into());

    // Bind everything before announcing anything, so a port file or a ready
    // line always means every listener accepts connections.
    let mut bound = Vec::with_capacity(cfg.listeners.len());
    for (name, addr) in &cfg.listeners {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{PROGRAM}: error: cannot listen on {addr} for '{name}': {e}");
                return 1;
            }
        };
        let local = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{PROGRAM}: error: cannot read bound address for '{name}': {e}");
                return 1;
            }
        };
        bound.push((name.as_str(), listener, local));
    }

    if let Some(path) = &cfg.port_file {
        let lines: String = bound
            .iter()
            .map(|(name, _, local)| format!("{name} {local}\n"))
            .collect();
        if let Err(e) = write_port_file(path, &lines) {
            eprintln!(
                "{PROGRAM}: error: cannot write port file {}: {e}",
                path.display()
            );
            return 1;
        }
    }

    let mut ready = String::new();
    for (name, listener, local) in bound {
        let backend = Arc::new(Backend::new(name, &cfg, fixed_body.clone()));
        tokio::spawn(accept_loop(listener, backend));
        ready.push_str(&format!("{PROGRAM} {name} listening on {local}\n"));
    }
    {
        // Ignore errors: a closed stdout must not stop the server.
        let mut out = io::stdout().lock();
        let _ = out.write_all(ready.as_bytes());
        let _ = out.flush();
    }

    shutdown_signal().await;
    0
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();

    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return;
        }
        Err(msg) => {
            eprintln!("{PROGRAM}: error: {msg}\nRun '{PROGRAM} --help' for usage.");
            std::process::exit(2);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{PROGRAM}: error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(cfg));
    // Exit without waiting for connection tasks: shutdown should be prompt.
    std::process::exit(code);
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// A reader that hands out at most `step` bytes per read, so the parser is
    /// exercised at every possible split point of its input.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let end = (self.pos + self.step)
                .min(self.data.len())
                .min(self.pos + out.remaining());
            let pos = self.pos;
            out.put_slice(&self.data[pos..end]);
            self.pos = end;
            Poll::Ready(Ok(()))
        }
    }

    async fn read_request<R: AsyncRead + Unpin>(
        rd: &mut R,
        buf: &mut Vec<u8>,
    ) -> Result<Option<(RequestHead, u64)>, ReadError> {
        let Some(head) = read_head(rd, buf).await? else {
            return Ok(None);
        };
        let body = read_body(rd, buf, head.framing).await?;
        Ok(Some((head, body)))
    }

    /// Parses every request in `data`, fed `step` bytes at a time.
    async fn parse_all(data: &[u8], step: usize) -> Result<Vec<(RequestHead, u64)>, ReadError> {
        let mut rd = Trickle {
            data: data.to_vec(),
            pos: 0,
            step,
        };
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(req) = read_request(&mut rd, &mut buf).await? {
            out.push(req);
        }
        Ok(out)
    }

    const STEPS: [usize; 5] = [1, 2, 3, 7, usize::MAX / 2];

    fn rejected_with(result: Result<Vec<(RequestHead, u64)>, ReadError>) -> u16 {
        match result {
            Err(ReadError::Reject { status, .. }) => status,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn content_length_body_then_pipelined_request() {
        let data = b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
                     GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
        for step in STEPS {
            let reqs = parse_all(data, step).await.unwrap();
            assert_eq!(reqs.len(), 2, "step {step}");
            let (a, a_body) = &reqs[0];
            assert_eq!((a.method.as_str(), a.target.as_str()), ("POST", "/a?x=1"));
            assert_eq!(a.framing, BodyFraming::Length(5));
            assert_eq!(*a_body, 5);
            assert!(a.keep_alive);
            let (b, b_body) = &reqs[1];
            assert_eq!((b.method.as_str(), b.target.as_str()), ("GET", "/b"));
            assert_eq!(*b_body, 0);
            assert!(!b.keep_alive);
        }
    }

    #[tokio::test]
    async fn chunked_body_with_extensions_and_trailers() {
        let data = b"POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
                     5;name=value\r\nhello\r\n6\r\n world\r\nA \r\n0123456789\r\n0\r\n\
                     X-Trailer: yes\r\n\r\n\
                     GET /next HTTP/1.1\r\n\r\n";
        for step in STEPS {
            let reqs = parse_all(data, step).await.unwrap();
            assert_eq!(reqs.len(), 2, "step {step}");
            assert_eq!(reqs[0].0.framing, BodyFraming::Chunked);
            assert_eq!(reqs[0].1, 21);
            assert_eq!(reqs[1].0.target, "/next");
        }
    }

    #[tokio::test]
    async fn pipelining_keep_alive_rules_and_repeated_headers() {
        let data = b"\r\nGET /1 HTTP/1.0\r\n\r\n\
                     GET /2 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n\
                     HEAD /3 HTTP/1.1\r\nX-A: one\r\nx-a:  two \r\n\r\n\
                     GET /4 HTTP/1.1\nBare: lf\n\n";
        for step in STEPS {
            let reqs = parse_all(data, step).await.unwrap();
            let targets: Vec<&str> = reqs.iter().map(|(h, _)| h.target.as_str()).collect();
            assert_eq!(targets, ["/1", "/2", "/3", "/4"], "step {step}");
            let keep: Vec<bool> = reqs.iter().map(|(h, _)| h.keep_alive).collect();
            assert_eq!(keep, [false, true, true, true]);
            let headers = headers_json(&reqs[2].0.headers);
            assert_eq!(headers["x-a"], "one, two");
            assert_eq!(reqs[3].0.headers, [("bare".to_string(), "lf".to_string())]);
        }
    }

    #[tokio::test]
    async fn header_section_limit() {
        let fits = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES - 100)
        );
        assert_eq!(parse_all(fits.as_bytes(), 4096).await.unwrap().len(), 1);

        let complete_but_big = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(
            rejected_with(parse_all(complete_but_big.as_bytes(), usize::MAX / 2).await),
            431
        );

        // Never terminated: must be refused once the limit is reached rather
        // than buffering forever.
        let endless = format!(
            "GET / HTTP/1.1\r\nX-Big: {}",
            "a".repeat(3 * MAX_HEAD_BYTES)
        );
        assert_eq!(
            rejected_with(parse_all(endless.as_bytes(), 1000).await),
            431
        );
    }

    #[tokio::test]
    async fn malformed_requests_are_rejected() {
        let cases: &[(&[u8], u16)] = &[
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                400,
            ),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
                400,
            ),
        ];
        for (data, status) in cases {
            let got = rejected_with(parse_all(data, 3).await);
            assert_eq!(got, *status, "{}", String::from_utf8_lossy(data));
        }
        // A body cut short is not answered at all.
        let cut = parse_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 2).await;
        assert!(matches!(cut, Err(ReadError::Closed)));
    }

    #[test]
    fn target_splitting() {
        assert_eq!(split_target("/a/b?c=1&d"), ("/a/b", "c=1&d"));
        assert_eq!(split_target("/plain"), ("/plain", ""));
        assert_eq!(split_target("http://host:8/x?q"), ("/x", "q"));
        assert_eq!(split_target("http://host"), ("/", ""));
        assert_eq!(split_target("/odd://path"), ("/odd://path", ""));
    }

    #[test]
    fn argument_parsing() {
        let args = |s: &str| parse_args(s.split_whitespace().map(String::from));
        let Ok(Command::Run(cfg)) = args(
            "--listen a@127.0.0.1:1 --listen=b@127.0.0.1:2 --delay-ms 5 --drop-every=3 --fail-health",
        ) else {
            panic!("valid arguments refused");
        };
        assert_eq!(cfg.listeners.len(), 2);
        assert_eq!(cfg.listeners[1].0, "b");
        assert_eq!(
            (cfg.delay_ms, cfg.drop_every, cfg.fail_health),
            (5, 3, true)
        );

        let Ok(Command::Run(cfg)) = args("--name solo --listen 127.0.0.1:0") else {
            panic!("--name form refused");
        };
        assert_eq!(cfg.listeners[0].0, "solo");

        for bad in [
            "",
            "--listen 127.0.0.1:1",
            "--listen a@127.0.0.1:1 --listen a@127.0.0.1:2",
            "--name x --listen a@127.0.0.1:1",
            "--listen a@nonsense",
            "--listen a@127.0.0.1:1 --delay-ms abc",
            "--listen a@127.0.0.1:1 --bogus",
            "--listen a@127.0.0.1:1 --threads 0",
        ] {
            assert!(args(bad).is_err(), "accepted: {bad}");
        }
    }

    /// Full server round trip over TCP: pipelined requests, drop mode, stats.
    #[tokio::test]
    async fn server_round_trip() {
        let cfg = match parse_args(["--name", "t", "--listen", "127.0.0.1:0"].map(String::from)) {
            Ok(Command::Run(cfg)) => cfg,
            other => panic!("{other:?}"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(Backend::new("t", &cfg, None));
        tokio::spawn(accept_loop(listener, Arc::clone(&backend)));

        async fn exchange(addr: SocketAddr, data: &[u8]) -> String {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(data).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            String::from_utf8(out).unwrap()
        }

        let out = exchange(
            addr,
            b"GET /x?status=201 HTTP/1.1\r\nHost: h\r\n\r\n\
              GET /health HTTP/1.1\r\n\r\n\
              POST /__control/mode?drop_every=2 HTTP/1.1\r\nContent-Length: 0\r\n\r\n\
              GET /y HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 201 Created\r\n"), "{out}");
        assert!(out.contains("X-Backend: t\r\n"));
        assert!(out.contains("\"path\":\"/x\""));
        assert!(out.contains("\r\n\r\nok"));
        // /y is the 2nd normal request, so it is dropped without an answer.
        assert_eq!(out.matches("HTTP/1.1 ").count(), 3, "{out}");

        let out = exchange(addr, b"GET /__control/stats HTTP/1.0\r\n\r\n").await;
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        let stats: Value = serde_json::from_str(body).unwrap();
        assert_eq!(stats["requests"], 2);
        assert_eq!(stats["health_requests"], 1);
        assert_eq!(stats["in_flight"], 0);
        assert_eq!(
            stats["connections"], 2,
            "the pipelined exchange and this one"
        );
        assert_eq!(stats["recent"][1]["uri"], "/y");

        let out = exchange(addr, b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.contains("Connection: close\r\n"));
    }
}
