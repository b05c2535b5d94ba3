//! Differential conformance for HTTP/2 clients: the same HTTP/2 requests go
//! through nginx and through fulcrum (both h2c with prior knowledge), both
//! in front of the HTTP/1.1 recording upstream of the HTTP/1.1 suite
//! (conformance/upstream.rs), and what the client and the upstream see must
//! be the same, except for the differences listed in [`DELIBERATE`].
//!
//! This is where HTTP/2 turns into HTTP/1.1, the translation RFC 9113 §8
//! asks a proxy to get right: cookies an HTTP/2 client splits into several
//! fields, bodies without Content-Length (chunked upstream), trailers,
//! `:authority` and Host, hop-by-hop fields in both directions, interim
//! answers, responses that end early.
//!
//! - The client is conformance_h2/client.py, Python's `h2` library
//!   (hyper-h2, written by neither proxy's authors), one fresh connection
//!   per case, sending exactly the frames the case lists.
//! - Compared: for the client, the outcome (final status, or the stream
//!   reset, or the connection ended), 1xx answers, the fields of the
//!   answer (except `date`, `server` and fulcrum's `x-request-id`), body
//!   and trailers; for the upstream, the requests it got (method, target,
//!   version), their Host, the fields the client sent, and the decoded
//!   bodies. A malformed request only on "refused (a 4xx, a stream reset
//!   or the connection ended), nothing upstream".
//!
//! `CONFORMANCE_ONLY=text` runs the cases whose name contains `text` and
//! prints what both proxies did with them.

use crate::common::{one_pool, repo_path, run_bounded, Fulcrum};
use crate::conformance::case::slug;
use crate::conformance::differential::{in_lanes, only, report, Aspect, Deliberate, Outcome};
use crate::conformance::nginx::Nginx;
use crate::conformance::upstream::{default_reply, reply, Recorder, Script, UpRequest};
use crate::conformance::wire::show;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const REFUSAL: &[&str] = &["refused, nothing upstream"];
const SERVED: &[&str] = &["outcome", "upstream requests"];

/// Every deliberate difference: where fulcrum follows RFC 9113 and nginx
/// 1.22 does not, or where nginx buffers a body that fulcrum streams.
#[rustfmt::skip]
const DELIBERATE: &[Deliberate] = &[
    Deliberate { case: "connection field in the request", aspects: REFUSAL,
        reason: "RFC 9113 8.2.2: a request with a connection-specific field is malformed; fulcrum (Pingora's h2 library) resets the stream, nginx drops the field and forwards the request" },
    Deliberate { case: "transfer-encoding field in the request", aspects: REFUSAL,
        reason: "as `connection`: RFC 9113 8.2.2 makes it malformed and fulcrum resets the stream; nginx drops it and forwards the body with a Content-Length (both leave nothing to smuggle)" },
    Deliberate { case: "pseudo-field after a regular field", aspects: REFUSAL,
        reason: "RFC 9113 8.3: a pseudo-field after a regular field makes the request malformed; fulcrum resets the stream, nginx forwards the request" },
    Deliberate { case: "Content-Length larger than the body", aspects: REFUSAL,
        reason: "nginx reads the whole body before it contacts the upstream; fulcrum streams bodies, so the upstream has the head and the first bytes when the stream turns out malformed, and then sees its connection close mid-body (as for a bad chunk in the HTTP/1.1 suite)" },
    Deliberate { case: "Content-Length smaller than the body", aspects: REFUSAL,
        reason: "as `Content-Length larger than the body`: fulcrum streams the body, so the upstream has received the declared bytes when the extra DATA resets the client's stream" },
    Deliberate { case: "Host field equal to :authority", aspects: SERVED,
        reason: "nginx 1.22 refuses a request carrying both Host and :authority with 400 (fixed in later nginx); RFC 9113 8.3.1 allows both when they agree, and fulcrum serves it" },
    Deliberate { case: "PUT with trailers", aspects: SERVED,
        reason: "nginx 1.22 ends the connection (GOAWAY) on a request with trailers; fulcrum forwards the request and its body (without the trailers, which an HTTP/1.1 server may ignore, RFC 9110 6.5.1)" },
    Deliberate { case: "103 Early Hints before the answer", aspects: &["outcome"],
        reason: "nginx 1.22 forwards the 103 and then neither the final answer nor an end (the client times out); fulcrum does not forward an upstream's 1xx over HTTP/2 and answers with the final response" },
    Deliberate { case: "a 101 to an HTTP/2 client", aspects: &["outcome"],
        reason: "HTTP/2 has no 101 (RFC 9113 8.6): fulcrum resets the stream; nginx 1.22 passes the 101 on as a 1xx and then sends DATA with no final HEADERS, which the client's library rejects as a protocol error" },
    Deliberate { case: "100 Continue before the answer", aspects: &["outcome"],
        reason: "as the 103: nginx 1.22 forwards the 100 and then never the final answer; fulcrum answers with the final response" },
    Deliberate { case: "a 20 KB Set-Cookie field", aspects: &["outcome"],
        reason: "nginx refuses a response header larger than proxy_buffer_size (4-8 KB by default) with 502; fulcrum passes response headers up to Pingora's limits" },
    Deliberate { case: "upstream sends Proxy-Connection", aspects: &["fields to client"],
        reason: "nginx forwards an upstream's Proxy-Connection, which RFC 9110 7.6.1 and RFC 9113 8.2.2 say to remove, as fulcrum does" },
    Deliberate { case: "upstream sends Upgrade on a 200", aspects: &["fields to client"],
        reason: "Upgrade is connection-specific and has no place in HTTP/2 (RFC 9113 8.2.2); nginx forwards it, fulcrum removes it" },
    Deliberate { case: "chunked answer with trailers", aspects: &["fields to client"],
        reason: "nginx forwards the upstream's Trailer field although it drops the trailers it announces; fulcrum drops the field (as in the HTTP/1.1 suite)" },
];

/// Response fields the proxies set themselves (`x-request-id`: fulcrum's).
const OWN_RESPONSE_FIELDS: &[&str] = &["date", "server", "x-request-id"];

/// Request fields not compared: fulcrum's request id; Expect, which a proxy
/// may answer itself or forward (RFC 9110 10.1.1); Host, an aspect of its
/// own.
const OWN_REQUEST_FIELDS: &[&str] = &["x-request-id", "expect", "host"];

/// Cases that run at once.
const WORKERS: usize = 4;

/// The authority every case sends unless it is about the authority.
const HOST: &str = "app.test";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Everything the client and the upstream see is compared.
    Request,
    /// Only "refused, nothing upstream".
    Malformed,
}

/// Which frame ends the client's stream.
#[derive(Clone, Copy)]
enum Ending {
    /// The HEADERS frame (no body).
    Headers,
    /// The last DATA frame.
    Data,
    /// An empty DATA frame after the data.
    Empty,
    /// A trailing HEADERS frame.
    Trailers,
}

struct Case {
    name: &'static str,
    kind: Kind,
    headers: Vec<(String, String)>,
    data: Vec<String>,
    ending: Ending,
    trailers: Vec<(String, String)>,
    script: Script,
}

fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A request with the usual pseudo-fields (`:path` made from the name),
/// then `fields`.
fn request(name: &'static str, method: &str, fields: &[(&str, &str)]) -> Case {
    let path = format!("/h2/{}", slug(name));
    let mut headers = pairs(&[
        (":method", method),
        (":scheme", "http"),
        (":authority", HOST),
        (":path", &path),
    ]);
    headers.extend(pairs(fields));
    raw(name, headers)
}

/// A request whose fields, pseudo-fields included, are exactly `headers`.
fn raw(name: &'static str, headers: Vec<(String, String)>) -> Case {
    Case {
        name,
        kind: Kind::Request,
        headers,
        data: vec![],
        ending: Ending::Headers,
        trailers: vec![],
        script: Arc::new(default_reply),
    }
}

impl Case {
    fn body(mut self, parts: &[&str], ending: Ending) -> Case {
        self.data = parts.iter().map(|p| p.to_string()).collect();
        self.ending = ending;
        self
    }

    fn trailers(mut self, fields: &[(&str, &str)]) -> Case {
        self.trailers = pairs(fields);
        self.ending = Ending::Trailers;
        self
    }

    fn path(mut self, path: &str) -> Case {
        if let Some(p) = self.headers.iter_mut().find(|(k, _)| k == ":path") {
            p.1 = path.to_string();
        }
        self
    }

    fn malformed(mut self) -> Case {
        self.kind = Kind::Malformed;
        self
    }

    /// The upstream answers every request of the case with `bytes`.
    fn answered(mut self, bytes: &str, close: bool) -> Case {
        let r = reply(bytes.as_bytes(), close);
        self.script = Arc::new(move |_: &UpRequest| r.clone());
        self
    }
}

/// A GET answered with the raw `bytes`.
fn response(name: &'static str, bytes: &str, close: bool) -> Case {
    request(name, "GET", &[]).answered(bytes, close)
}

fn corpus() -> Vec<Case> {
    use Ending::{Data, Empty};
    let cookies: Vec<String> = (0..40)
        .map(|i| format!("c{i}={}", "v".repeat(100)))
        .collect();
    let mut many_cookies = request("forty cookie fields", "GET", &[]);
    many_cookies
        .headers
        .extend(cookies.iter().map(|c| ("cookie".to_string(), c.clone())));
    let long = "x".repeat(8000);
    let base = |path: &str| {
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", HOST),
            (":path", path),
        ])
    };
    let without = |name: &str| -> Vec<(String, String)> {
        base("/h2/x")
            .into_iter()
            .filter(|(k, _)| k != name)
            .collect()
    };
    vec![
        // Requests.
        request("plain GET", "GET", &[("accept", "*/*"), ("user-agent", "h2-test")]),
        raw("query and percent-encoding", base("/h2/a%20b/c?x=1&y=%2F&z")),
        request("two cookie fields", "GET", &[("cookie", "a=1"), ("cookie", "b=2")]),
        request("cookie fields around others", "GET", &[("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2; c=3")]),
        many_cookies,
        request("one cookie field", "GET", &[("cookie", "a=1; b=2")]),
        request("two accept fields", "GET", &[("accept", "text/html"), ("accept", "*/*")]),
        request("a long field value", "GET", &[("x-long", &long)]),
        request("an empty field value", "GET", &[("x-empty", "")]),
        request("client's X-Forwarded-For", "GET", &[("x-forwarded-for", "192.0.2.1")]),
        request("browser-like request", "GET", &[
            ("sec-ch-ua", "\"Chromium\";v=\"120\""), ("user-agent", "Mozilla/5.0"),
            ("accept", "text/html,application/xhtml+xml"), ("accept-encoding", "gzip, deflate, br"),
            ("accept-language", "en-US,en;q=0.9"), ("cookie", "session=abc"), ("cookie", "theme=dark"),
            ("priority", "u=0, i")]),
        request("POST with Content-Length", "POST", &[("content-length", "11")]).body(&["hello world"], Data),
        request("POST without Content-Length", "POST", &[]).body(&["hello world"], Data),
        request("POST without Content-Length, two DATA frames", "POST", &[]).body(&["hello ", "world"], Data),
        request("POST without Content-Length ended by an empty DATA frame", "POST", &[]).body(&["hello ", "world"], Empty),
        request("POST with Content-Length ended by an empty DATA frame", "POST", &[("content-length", "11")]).body(&["hello world"], Empty),
        request("POST with Content-Length 0", "POST", &[("content-length", "0")]),
        request("POST with no body at all", "POST", &[]),
        request("GET with a body", "GET", &[]).body(&["abc"], Empty),
        request("PUT with trailers", "PUT", &[]).body(&["abc"], Data).trailers(&[("x-checksum", "1")]),
        request("DELETE with a body", "DELETE", &[("content-length", "3")]).body(&["abc"], Data),
        request("HEAD", "HEAD", &[]),
        request("OPTIONS", "OPTIONS", &[]),
        request("te: trailers", "GET", &[("te", "trailers")]),
        request("Expect: 100-continue", "POST", &[("expect", "100-continue"), ("content-length", "5")]).body(&["hello"], Data),
        raw("Host field and no :authority", pairs(&[(":method", "GET"), (":scheme", "http"), (":path", "/h2/host"), ("host", HOST)])),
        request("Host field equal to :authority", "GET", &[("host", HOST)]),
        raw(":scheme https", pairs(&[(":method", "GET"), (":scheme", "https"), (":authority", HOST), (":path", "/h2/https")])),
        // Malformed (RFC 9113 8.1.1: a stream error, nothing forwarded).
        request("connection field in the request", "GET", &[("connection", "keep-alive")]).malformed(),
        request("Content-Length larger than the body", "POST", &[("content-length", "10")]).body(&["abc"], Data).malformed(),
        request("Content-Length smaller than the body", "POST", &[("content-length", "3")]).body(&["hello"], Data).malformed(),
        raw("no :path", without(":path")).malformed(),
        raw("no :method", without(":method")).malformed(),
        raw("empty :path", base("")).malformed(),
        // Downgrade smuggling (HTTP/2 to HTTP/1.1): what the h1 request
        // would carry if these were copied as they are.
        request("transfer-encoding field in the request", "POST", &[("transfer-encoding", "chunked")])
            .body(&["0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"], Data).malformed(),
        request("CR LF in a field value", "GET", &[("x-a", "1\r\nX-Injected: 1")]).malformed(),
        request("LF in a field value", "GET", &[("x-a", "1\nX-Injected: 1")]).malformed(),
        request("a colon in a field name", "GET", &[("x-a:b", "1")]).malformed(),
        request("a space in a field name", "GET", &[("x a", "1")]).malformed(),
        request("CR LF in :path", "GET", &[]).path("/h2/x HTTP/1.1\r\nX-Injected: 1\r\nY: /").malformed(),
        request("a space in :path", "GET", &[]).path("/h2/a b").malformed(),
        raw("a space in :method", pairs(&[(":method", "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\nGET"),
            (":scheme", "http"), (":authority", HOST), (":path", "/h2/x")])).malformed(),
        raw("CR LF in :authority", pairs(&[(":method", "GET"), (":scheme", "http"),
            (":authority", "app.test\r\nX-Injected: 1"), (":path", "/h2/x")])).malformed(),
        raw("pseudo-field after a regular field", {
            let mut h = base("/h2/x");
            let path = h.remove(3);
            h.push(("accept".into(), "*/*".into()));
            h.push(path);
            h
        }).malformed(),
        // Responses: the upstream's answer, raw.
        response("upstream sends Connection, Keep-Alive and Proxy-Connection",
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok", false),
        response("upstream sends Proxy-Connection",
            "HTTP/1.1 200 OK\r\nProxy-Connection: keep-alive\r\nContent-Length: 2\r\n\r\nok", false),
        response("upstream sends Upgrade on a 200",
            "HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 2\r\n\r\nok", false),
        response("chunked answer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n", false),
        response("chunked answer with trailers",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n2\r\nok\r\n0\r\nx-t: 1\r\n\r\n", false),
        response("103 Early Hints before the answer",
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        response("204 with Content-Length: 0", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false),
        response("304 with a Content-Length", "HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\nContent-Length: 10\r\n\r\n", false),
        response("body delimited by close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close", true),
        response("HTTP/1.0 answer", "HTTP/1.0 200 OK\r\n\r\nten", true),
        response("body shorter than Content-Length, then close",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc", true),
        response("two Set-Cookie fields",
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok", false),
        response("field names in capitals", "HTTP/1.1 200 OK\r\nX-UPPER-Case: v\r\nContent-Length: 2\r\n\r\nok", false),
        response("an empty field value in the answer", "HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 2\r\n\r\nok", false),
        response("unknown status 299", "HTTP/1.1 299 Whatever\r\nContent-Length: 2\r\n\r\nok", false),
        response("404 with a body", "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\ngone", false),
        response("a 64 KB body",
            &format!("HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n{}", "b".repeat(65536)), false),
        request("HEAD answered with a Content-Length", "HEAD", &[])
            .answered("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", false),
        request("HEAD answered chunked", "HEAD", &[])
            .answered("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false),
        response("100 Continue before the answer",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        response("two equal Content-Length fields",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", false),
        response("a 20 KB Set-Cookie field",
            &format!("HTTP/1.1 200 OK\r\nSet-Cookie: big={}\r\nContent-Length: 2\r\n\r\nok", "c".repeat(20_000)), false),
        response("a chunked body in many small chunks",
            &format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n", "1\r\nz\r\n".repeat(500)), false),
        response("gzip content coding passed through",
            "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nVary: Accept-Encoding\r\nContent-Length: 4\r\n\r\n\x1f\u{8b}\x08\x00", false),
        response("a 101 to an HTTP/2 client",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", true),
        request("an encoded NUL and slashes in the path", "GET", &[]).path("/h2/a%00b/%2e%2e/c"),
        request("a 9 KB query string", "GET", &[]).path(&format!("/h2/q?{}", "k=v&".repeat(2250))),
    ]
}

/// What the client saw: client.py's report.
fn send(case: &Case, to: SocketAddr, source: IpAddr) -> Value {
    let ending = match case.ending {
        Ending::Headers => "headers",
        Ending::Data => "data",
        Ending::Empty => "empty",
        Ending::Trailers => "trailers",
    };
    let input = json!({
        "source": source.to_string(),
        "port": to.port(),
        "headers": case.headers,
        "data": case.data,
        "ending": ending,
        "trailers": case.trailers,
    });
    let out = run_bounded(
        std::process::Command::new("python3")
            .arg(repo_path("tests/integration/conformance_h2/client.py"))
            .arg(input.to_string()),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "client.py for {:?} (deploy/test.sh installs python3 and h2): {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client.py output ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Fields as sorted "name: value" lines (a stable sort: fields of one name
/// keep their order).
fn lines(mut fields: Vec<(String, String)>) -> String {
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn outcome(seen: &Value) -> String {
    if let Some(e) = seen["protocol_error"].as_str() {
        return format!("HTTP/2 broken by the proxy: {e}");
    }
    if let Some(status) = seen["status"].as_u64() {
        if seen["reset"].is_null() && seen["goaway"].is_null() {
            return status.to_string();
        }
        return format!("{status}, then the stream was reset");
    }
    if !seen["reset"].is_null() {
        "stream reset".into()
    } else if !seen["goaway"].is_null() {
        "GOAWAY".into()
    } else if seen["timeout"].as_bool() == Some(true) {
        "no answer (timeout)".into()
    } else {
        "connection closed".into()
    }
}

/// Each compared aspect of one run, by name. `lane`, the client's address,
/// reads `(client)` in what the upstream got.
fn aspects(case: &Case, seen: &Value, up: &[UpRequest], lane: &str) -> Vec<(&'static str, String)> {
    if case.kind == Kind::Malformed {
        let refused = seen["status"]
            .as_u64()
            .is_some_and(|s| (400..500).contains(&s))
            || !seen["reset"].is_null()
            || !seen["goaway"].is_null();
        let verdict = if refused && up.is_empty() {
            "yes".to_string()
        } else {
            format!("no: {}, {} request(s) upstream", outcome(seen), up.len())
        };
        return vec![("refused, nothing upstream", verdict)];
    }
    let client_fields = seen["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f[0].as_str()?.to_string(), f[1].as_str()?.to_string())))
        .filter(|(k, _)| !OWN_RESPONSE_FIELDS.contains(&k.as_str()))
        .collect();
    // Fields the client sent, as the upstream got them.
    let sent: Vec<String> = case
        .headers
        .iter()
        .chain(&case.trailers)
        .map(|(k, _)| k.to_ascii_lowercase())
        .filter(|k| !k.starts_with(':') && !OWN_REQUEST_FIELDS.contains(&k.as_str()))
        .collect();
    let forwarded = |r: &UpRequest| {
        lines(
            r.fields
                .iter()
                .chain(&r.trailers)
                .filter(|(k, _)| sent.contains(&k.to_ascii_lowercase()))
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v).replace(lane, "(client)");
                    (k.to_ascii_lowercase(), v)
                })
                .collect(),
        )
    };
    let join = |f: &dyn Fn(&UpRequest) -> String| up.iter().map(f).collect::<Vec<_>>().join(" | ");
    let body = if seen["reset"].is_null() {
        show(seen["body"].as_str().unwrap_or("").as_bytes())
    } else {
        // What arrives before a reset depends on timing.
        "(not compared: the stream was reset)".into()
    };
    vec![
        ("outcome", outcome(seen)),
        ("interim 1xx", seen["interim"].to_string()),
        ("fields to client", lines(client_fields)),
        ("body to client", body),
        ("trailers to client", seen["trailers"].to_string()),
        (
            "upstream requests",
            join(&|r| format!("{} {} HTTP/1.{}", r.method, r.target, r.minor)),
        ),
        ("Host upstream", join(&|r| field_text(r, "host"))),
        ("fields upstream", join(&forwarded)),
        ("body upstream", join(&|r| show(&r.body))),
    ]
}

/// nginx's and fulcrum's aspects side by side. Where the outcomes differ,
/// so does what the client got: that is one difference, the outcome; the
/// same for the requests upstream.
fn side_by_side(
    nginx: Vec<(&'static str, String)>,
    fulcrum: Vec<(&'static str, String)>,
) -> Vec<Aspect> {
    let differs = |name: &str| {
        let n = nginx.iter().find(|a| a.0 == name);
        let f = fulcrum.iter().find(|a| a.0 == name);
        n.is_some() && n != f
    };
    let (outcome, requests) = (differs("outcome"), differs("upstream requests"));
    // Neither upstream got a request: what the client got is each proxy's
    // own answer (its error page), compared by outcome only.
    let own_answer = nginx
        .iter()
        .chain(&fulcrum)
        .filter(|a| a.0 == "upstream requests")
        .all(|a| a.1.is_empty());
    nginx
        .into_iter()
        .zip(fulcrum)
        .map(|((name, n), (_, f))| {
            let covered = match name {
                "fields to client" | "body to client" => outcome || own_answer,
                "interim 1xx" | "trailers to client" => outcome,
                "Host upstream" | "fields upstream" | "body upstream" => requests,
                _ => false,
            };
            let (nginx, fulcrum) = if covered {
                ("(see above)".to_string(), "(see above)".to_string())
            } else {
                (n, f)
            };
            Aspect {
                name,
                nginx,
                fulcrum,
            }
        })
        .collect()
}

fn field_text(r: &UpRequest, name: &str) -> String {
    crate::conformance::wire::field(&r.fields, name)
        .map_or("(none)".into(), |v| String::from_utf8_lossy(v).into_owned())
}

struct Proxies {
    recorder: Recorder,
    nginx: Nginx,
    _fulcrum: Fulcrum,
    fulcrum_addr: SocketAddr,
}

impl Proxies {
    fn start() -> Proxies {
        let recorder = Recorder::start();
        let nginx = Nginx::start_h2c(recorder.addr);
        let body = format!(
            "access_log: off\n{}",
            one_pool(
                "recorder",
                "/",
                &[recorder.addr],
                "retry: { tries: 1, on: [error, timeout] }"
            )
        );
        let (fulcrum, ports) =
            Fulcrum::start_listening(&["{ addr: \"127.0.0.1:{port}\", http2: true }"], &body);
        let fulcrum_addr = SocketAddr::from(([127, 0, 0, 1], ports[0]));
        Proxies {
            recorder,
            nginx,
            _fulcrum: fulcrum,
            fulcrum_addr,
        }
    }

    fn run(&self, case: &Case, to: SocketAddr, lane: IpAddr) -> (Value, Vec<UpRequest>) {
        let key = lane.to_string();
        self.recorder.begin(&key, case.script.clone());
        let seen = send(case, to, lane);
        // The upstream may log a request a moment after the client is done.
        std::thread::sleep(Duration::from_millis(20));
        (seen, self.recorder.recorded(&key))
    }
}

/// Runs every case, `WORKERS` at a time; worker `w` sends from
/// 127.0.3.w to nginx and from 127.0.4.w to fulcrum.
fn run_all(p: &Proxies, cases: &[Case]) -> Vec<Outcome> {
    in_lanes(cases, WORKERS, (3, 4), |case, nginx_lane, fulcrum_lane| {
        let (a, a_up) = p.run(case, p.nginx.addr, nginx_lane);
        let (b, b_up) = p.run(case, p.fulcrum_addr, fulcrum_lane);
        if only().is_some() {
            println!(
                "=== {}\nnginx: {a}\n  upstream: {a_up:?}\nfulcrum: {b}\n  upstream: {b_up:?}",
                case.name
            );
        }
        Outcome {
            name: case.name.to_string(),
            kind: String::new(),
            aspects: side_by_side(
                aspects(case, &a, &a_up, &nginx_lane.to_string()),
                aspects(case, &b, &b_up, &fulcrum_lane.to_string()),
            ),
        }
    })
}

#[test]
fn nginx_and_fulcrum_agree_on_http2_requests_to_an_http1_upstream() {
    let p = Proxies::start();
    let mut cases = corpus();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    if let Some(text) = only() {
        cases.retain(|c| c.name.contains(&text));
    }
    let outcomes = run_all(&p, &cases);
    let failures = report(&outcomes, DELIBERATE);
    let orphans = p.recorder.orphans();
    assert!(
        orphans.is_empty(),
        "requests the upstream could not file under a client (a stray request on a reused connection?): {orphans:?}"
    );
    assert!(
        failures.is_empty(),
        "{} unexplained difference(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
