//! The recording upstream: a raw TCP server, independent of fulcrum's code,
//! that parses each request it receives (head with httparse, body decoded
//! here), records it, and answers with the raw bytes a script gives for it.
//!
//! Several cases run at once, each from its own client source address
//! (a *lane*). Both proxies tell the upstream the client's address in
//! X-Real-IP, so each recorded request is filed under its lane, and the
//! lane's script answers it.

use super::wire::{final_status, parse_request, Body, Fields, Framing, Head, Wire};
use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct UpRequest {
    /// Which upstream connection it came on (numbered from 1 in accept order).
    pub conn: usize,
    pub method: String,
    /// The request target exactly as received.
    pub target: String,
    /// HTTP/1.`minor`.
    pub minor: u8,
    /// Every field in order, names as written.
    pub fields: Fields,
    /// The decoded body.
    pub body: Vec<u8>,
    pub trailers: Fields,
    /// The final status the upstream answered with (None: no valid answer).
    pub answered: Option<u16>,
}

impl UpRequest {
    fn new(conn: usize, head: Head, body: Body) -> UpRequest {
        UpRequest {
            conn,
            method: head.method,
            target: head.target,
            minor: head.minor,
            fields: head.fields,
            body: body.bytes,
            trailers: body.trailers,
            answered: None,
        }
    }

    /// The path of the target, for an origin-form or absolute-form target.
    pub fn path(&self) -> &str {
        origin_path(&self.target)
    }
}

/// The path of `target`: itself in origin form, the part after the
/// authority in absolute form (`http://h/x?q` -> `/x?q`).
pub fn origin_path(target: &str) -> &str {
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    }
}

/// What the upstream writes back for one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Raw bytes, written as they are.
    pub bytes: Vec<u8>,
    /// Close the connection after writing them.
    pub close: bool,
}

/// Chooses the reply for a request.
pub type Script = Arc<dyn Fn(&UpRequest) -> Reply + Send + Sync>;

#[derive(Default)]
struct Lane {
    script: Option<Script>,
    log: Vec<UpRequest>,
}

#[derive(Default)]
struct State {
    lanes: HashMap<String, Lane>,
    /// Requests that named no known lane (a proxy that dropped X-Real-IP),
    /// and heads that did not parse.
    orphans: Vec<UpRequest>,
}

/// The running recorder. Its threads end with the test process.
pub struct Recorder {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            let conns = AtomicUsize::new(0);
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let id = conns.fetch_add(1, SeqCst) + 1;
                let state = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, id, &state));
            }
        });
        Recorder { addr, state }
    }

    /// Starts a case on `lane` (a client source IP): forgets what the lane
    /// recorded and answers its requests with `script` from now on.
    pub fn begin(&self, lane: &str, script: Script) {
        let mut st = self.state.lock().unwrap();
        let l = st.lanes.entry(lane.to_string()).or_default();
        l.script = Some(script);
        l.log.clear();
    }

    /// What the lane recorded since `begin`.
    pub fn recorded(&self, lane: &str) -> Vec<UpRequest> {
        let st = self.state.lock().unwrap();
        st.lanes
            .get(lane)
            .map(|l| l.log.clone())
            .unwrap_or_default()
    }

    /// Requests that could not be filed under a lane, and heads that did
    /// not parse.
    pub fn orphans(&self) -> Vec<UpRequest> {
        self.state.lock().unwrap().orphans.clone()
    }

    /// Files `req` under its lane and returns the lane's reply to it.
    fn record(state: &Mutex<State>, mut req: UpRequest) -> Reply {
        let lane = super::wire::field(&req.fields, "x-real-ip")
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let mut st = state.lock().unwrap();
        let script = lane
            .as_ref()
            .and_then(|l| st.lanes.get(l))
            .and_then(|l| l.script.clone());
        let reply = match &script {
            Some(s) => s(&req),
            None => default_reply(&req),
        };
        req.answered = final_status(&reply.bytes);
        match lane.and_then(|l| st.lanes.get_mut(&l)) {
            Some(l) if script.is_some() => l.log.push(req),
            _ => st.orphans.push(req),
        }
        reply
    }
}

/// One upstream connection: request after request until the peer closes,
/// a request cannot be read, or a reply says to close.
fn serve(stream: TcpStream, conn: usize, state: &Mutex<State>) {
    let mut wire = Wire::new(stream);
    while let Some(raw) = wire.raw_head() {
        let head = match parse_request(&raw) {
            Ok(h) => h,
            Err(e) => {
                // Bytes a proxy left on the connection after a request
                // (a framing error): an orphan, so that the suites see it.
                state.lock().unwrap().orphans.push(UpRequest {
                    conn,
                    method: format!("(unparsable: {e})"),
                    target: super::wire::show(&raw),
                    minor: 1,
                    fields: vec![],
                    body: vec![],
                    trailers: vec![],
                    answered: None,
                });
                let _ = wire.get_mut().write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                break;
            }
        };
        if expects_continue(&head) {
            // RFC 9110 10.1.1: a server that wants the body sends 100 and
            // reads on (always, so that the reply does not depend on timing).
            let _ = wire.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let framing = head.framing(false);
        let body = wire.body(framing);
        let persistent = keeps_alive(&head);
        let broken = !body.complete || framing == Framing::Invalid;
        let reply = Recorder::record(state, UpRequest::new(conn, head, body));
        if broken {
            break;
        }
        if wire.get_mut().write_all(&reply.bytes).is_err() || reply.close || !persistent {
            break;
        }
    }
    let _ = wire.get_mut().shutdown(Shutdown::Both);
}

fn expects_continue(head: &Head) -> bool {
    head.minor >= 1 && head.tokens("expect").iter().any(|t| t == "100-continue")
}

/// HTTP/1.1 keeps the connection unless `close`; HTTP/1.0 only with
/// `keep-alive`.
fn keeps_alive(head: &Head) -> bool {
    let tokens = head.tokens("connection");
    if head.minor >= 1 {
        !tokens.iter().any(|t| t == "close")
    } else {
        tokens.iter().any(|t| t == "keep-alive")
    }
}

/// The reply of request cases, chosen by the path so that a pipeline can
/// mix answers: `/s204` -> 204, `/s404` -> 404, `/sclose` -> 200 and close;
/// otherwise 200. A body names the request's method and path (the path
/// only, so that a proxy forwarding an absolute-form target differs in
/// what the upstream saw, not also in what the client got). A HEAD gets
/// the GET's fields without the body; a CONNECT gets a 405 (no tunnels).
pub fn default_reply(req: &UpRequest) -> Reply {
    let path = req.path();
    let last = path
        .split('?')
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("");
    if last == "s204" {
        return reply(b"HTTP/1.1 204 No Content\r\nX-Case: s204\r\n\r\n", false);
    }
    let (status, close) = match last {
        "s404" => ("404 Not Found", false),
        "sclose" => ("200 OK", true),
        _ if req.method == "CONNECT" => ("405 Method Not Allowed", false),
        _ => ("200 OK", false),
    };
    let body = format!("{} {}\n", req.method, path);
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        body.len()
    );
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    if req.method != "HEAD" {
        out.push_str(&body);
    }
    reply(out.as_bytes(), close)
}

pub fn reply(bytes: &[u8], close: bool) -> Reply {
    Reply {
        bytes: bytes.to_vec(),
        close,
    }
}
