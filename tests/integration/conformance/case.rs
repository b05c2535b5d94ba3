//! A case of the corpus: what the client sends and how the upstream answers.

use super::client::Step;
use super::upstream::{default_reply, reply, Script};
use std::sync::Arc;
use std::time::Duration;

/// How a case is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request case: everything the client and the upstream see.
    Request,
    /// A response case: the same, for a scripted upstream answer.
    Response,
    /// A malformed request: only "a 4xx, the connection closes, the
    /// upstream receives nothing" (the exact 4xx may differ).
    Malformed,
}

pub struct Case {
    pub name: String,
    pub kind: Kind,
    pub steps: Vec<Step>,
    pub script: Script,
    /// The raw upstream response of a response case (to know which
    /// hop-by-hop fields it carried).
    pub scripted: Option<Vec<u8>>,
}

/// The Host every case sends unless it is about Host.
pub const HOST: &str = "app.test";

/// A request case: `bytes` in one write, default replies.
pub fn request(name: &str, bytes: impl AsRef<[u8]>) -> Case {
    steps(name, vec![Step::Send(bytes.as_ref().to_vec())])
}

/// A request case with its own client steps.
pub fn steps(name: &str, steps: Vec<Step>) -> Case {
    Case {
        name: name.to_string(),
        kind: Kind::Request,
        steps,
        script: Arc::new(default_reply),
        scripted: None,
    }
}

/// A malformed request, compared only on 4xx + close + nothing upstream.
pub fn malformed(name: &str, bytes: impl AsRef<[u8]>) -> Case {
    Case {
        kind: Kind::Malformed,
        ..request(name, bytes)
    }
}

/// Sends `parts` with `pause` between them.
pub fn slowly(name: &str, parts: &[&[u8]], pause: Duration) -> Case {
    let mut s = vec![];
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push(Step::Pause(pause));
        }
        s.push(Step::Send(p.to_vec()));
    }
    steps(name, s)
}

/// A response case: `GET /resp/NAME` is answered with `raw` (the connection
/// closed after it if `close`); once that answer is in, `GET
/// /resp/NAME/next` on the same client connection gets a default answer,
/// which shows whether anything of the first answer leaked into the next.
pub fn response(name: &str, raw: impl AsRef<[u8]>, close: bool) -> Case {
    let first = format!("GET /resp/{} HTTP/1.1\r\nHost: {HOST}\r\n\r\n", slug(name));
    response_to(name, first.as_bytes(), raw, close)
}

/// `name` as a path segment: letters and digits, `-` for the rest.
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// A response case for a request of its own (e.g. HEAD).
pub fn response_to(name: &str, first: &[u8], raw: impl AsRef<[u8]>, close: bool) -> Case {
    let next = format!(
        "GET /resp/{}/next HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
        slug(name)
    );
    let raw = raw.as_ref().to_vec();
    let scripted = raw.clone();
    Case {
        name: name.to_string(),
        kind: Kind::Response,
        steps: vec![
            Step::Send(first.to_vec()),
            Step::Await(1),
            Step::Send(next.into_bytes()),
        ],
        script: Arc::new(move |r| {
            if r.path().ends_with("/next") {
                default_reply(r)
            } else {
                reply(&raw, close)
            }
        }),
        scripted: Some(scripted),
    }
}

/// `METHOD target HTTP/1.1` with Host and `extra` field lines, no body.
pub fn get(method: &str, target: &str, extra: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n")
}

/// A request with a Content-Length body.
pub fn with_body(method: &str, target: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: {HOST}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A request with a chunked body given as its raw chunked encoding.
pub fn chunked(method: &str, target: &str, extra: &str, encoded: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: {HOST}\r\n{extra}Transfer-Encoding: chunked\r\n\r\n{encoded}"
    )
}
