//! Hostile requests on raw sockets: each malformed, ambiguous or smuggling
//! request gets a 4xx, the connection is closed, and the backend receives
//! nothing (its own request log stays empty). Path tricks against prefix
//! routing: the backend receives exactly the normalized path it was routed
//! by, and a path that climbs out of its prefix is refused.

use crate::common::raw::{exchange, Exchange};
use crate::common::*;
use std::time::Duration;

const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Expected status of a header over Pingora's 1 MiB limit: Pingora checks
/// the size only before reading more, so a header whose last read crosses
/// 1 MiB is parsed and then refused by fulcrum's own limit (431); otherwise
/// Pingora answers 400.
const OVER_1MIB: u16 = 0;

fn setup() -> (Backends, Fulcrum) {
    let b = Backends::start(&["users", "orders"], &[]);
    let conf = format!(
        "access_log: stdout\npools:\n  users:\n    servers: [{{addr: \"{}\"}}]\n  orders:\n    servers: [{{addr: \"{}\"}}]\nroutes:\n  - {{prefix: /api/users, pool: users}}\n  - {{prefix: /api/orders, pool: orders}}\n",
        b.addr("users"),
        b.addr("orders")
    );
    let f = Fulcrum::start(&conf);
    (b, f)
}

/// Requests the backends logged since the last reset, as `METHOD uri`.
fn backend_log(b: &Backends) -> Vec<String> {
    let mut out = vec![];
    for name in ["users", "orders"] {
        let v: serde_json::Value = serde_json::from_str(&b.stats(name)).unwrap();
        for e in v["recent"].as_array().unwrap() {
            out.push(format!(
                "{name}: {} {}",
                e["method"].as_str().unwrap(),
                e["uri"].as_str().unwrap()
            ));
        }
    }
    out
}

fn reset(b: &Backends) {
    for name in ["users", "orders"] {
        b.control(name, "/__control/reset");
    }
}

/// Runs each case on a fresh connection and checks: the expected 4xx, the
/// connection closed, nothing reached a backend. Prints the whole table and
/// fails listing every case that did not hold.
fn run_table(b: &Backends, f: &Fulcrum, cases: &[(&str, Vec<u8>, u16)]) {
    let mut failures = vec![];
    for (name, bytes, want) in cases {
        reset(b);
        let ex: Exchange = exchange(f.addr, bytes, CLOSE_WAIT);
        let log = backend_log(b);
        println!("{name:<55} -> {}", ex.summary());
        let status_ok = match *want {
            OVER_1MIB => matches!(ex.status(), 400 | 431),
            w => ex.status() == w,
        };
        if !status_ok || !ex.closed || !log.is_empty() {
            failures.push(format!(
                "{name}: want {want} and closed with nothing forwarded; got {} (extra {:?}), backend log {log:?}",
                ex.summary(),
                String::from_utf8_lossy(&ex.extra)
            ));
        }
    }
    // Fulcrum is still fine, and the next request is the only one the
    // backend sees: nothing smuggled was left queued anywhere.
    reset(b);
    let r = get(f.addr, "/api/users/after");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(backend_log(b), ["users: GET /api/users/after"]);
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn req(head: &str) -> Vec<u8> {
    head.as_bytes().to_vec()
}

#[test]
fn malformed_requests_get_400_and_the_connection_closes() {
    let (b, f) = setup();
    let h = "Host: a\r\n";
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("request line: method only", req("GET\r\n\r\n"), 400),
        (
            "request line: extra token",
            req(&format!("GET /api/users HTTP/1.1 x\r\n{h}\r\n")),
            400,
        ),
        (
            "request line: unknown version",
            req(&format!("GET /api/users HTTP/7.1\r\n{h}\r\n")),
            400,
        ),
        (
            "request line: bad method token",
            req(&format!("G@T /api/users HTTP/1.1\r\n{h}\r\n")),
            400,
        ),
        (
            "request line: binary garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
        ),
        (
            "request line: NUL in target",
            b"GET /api/users/\x00 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header name: space inside",
            req(&format!("GET /api/users HTTP/1.1\r\n{h}Bad Name: x\r\n\r\n")),
            400,
        ),
        (
            "header name: control byte",
            b"GET /api/users HTTP/1.1\r\nHost: a\r\nX\x01: y\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header name: non-ASCII",
            b"GET /api/users HTTP/1.1\r\nHost: a\r\nN\xc3\xa9: y\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header name: empty",
            req(&format!("GET /api/users HTTP/1.1\r\n{h}: x\r\n\r\n")),
            400,
        ),
        (
            "header value: NUL",
            b"GET /api/users HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header value: control byte",
            b"GET /api/users HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header value: DEL",
            b"GET /api/users HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header value: bare CR",
            b"GET /api/users HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n".to_vec(),
            400,
        ),
        (
            "obsolete line folding",
            req(&format!(
                "GET /api/users HTTP/1.1\r\n{h}X-Folded: a\r\n  b\r\n\r\n"
            )),
            400,
        ),
        (
            "whitespace before colon",
            req(&format!("GET /api/users HTTP/1.1\r\n{h}X-A : b\r\n\r\n")),
            400,
        ),
        (
            "Content-Length: two different values",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
            )),
            400,
        ),
        (
            "Content-Length: the same value twice",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 5\r\n\r\nabcde"
            )),
            400,
        ),
        (
            "Content-Length: list 5, 5",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Content-Length: 5, 5\r\n\r\nabcde"
            )),
            400,
        ),
        (
            "Content-Length: negative",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Content-Length: -1\r\n\r\n"
            )),
            400,
        ),
        (
            "Content-Length: signed",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Content-Length: +5\r\n\r\nabcde"
            )),
            400,
        ),
        (
            "Content-Length: not a number",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Content-Length: five\r\n\r\nabcde"
            )),
            400,
        ),
        (
            "Content-Length: overflows u64",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Content-Length: 99999999999999999999999\r\n\r\n"
            )),
            400,
        ),
        (
            "Content-Length with Transfer-Encoding",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            )),
            400,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            req(&format!(
                "POST /api/users HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            )),
            400,
        ),
        (
            "Transfer-Encoding: gzip, chunked",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
            )),
            400,
        ),
        (
            "Transfer-Encoding: identity",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Transfer-Encoding: identity\r\n\r\n"
            )),
            400,
        ),
        (
            "chunk size: not hex",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            )),
            400,
        ),
        (
            "chunk size: negative",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n"
            )),
            400,
        ),
        (
            "chunk size: 0x prefix",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"
            )),
            400,
        ),
        (
            "chunk size: overflows u64",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"
            )),
            400,
        ),
        (
            "chunk data longer than its size",
            req(&format!(
                "POST /api/users HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"
            )),
            400,
        ),
    ];
    run_table(&b, &f, &cases);
}

#[test]
fn smuggling_attempts_get_400_and_reach_no_backend() {
    let (b, f) = setup();
    let h = "Host: a\r\n";
    // Each body hides a second request that a server framing the message
    // the other way would run.
    let smuggled = "GET /api/orders/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let cl_te = format!(
        "POST /api/users HTTP/1.1\r\n{h}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let te_cl_chunk = format!("{smuggled}X");
    let te_cl = format!(
        "POST /api/users HTTP/1.1\r\n{h}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{te_cl_chunk}\r\n0\r\n\r\n",
        te_cl_chunk.len()
    );
    let te_te = |te_lines: &str| {
        format!(
            "POST /api/users HTTP/1.1\r\n{h}{te_lines}Content-Length: {}\r\n\r\n0\r\n\r\n{smuggled}",
            5 + smuggled.len()
        )
    };
    let te_only = |te_lines: &str| {
        format!("POST /api/users HTTP/1.1\r\n{h}{te_lines}\r\n0\r\n\r\n{smuggled}")
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("CL.TE", req(&cl_te), 400),
        ("TE.CL", req(&te_cl), 400),
        (
            "TE.TE: chunked + x, with CL",
            req(&te_te(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
            )),
            400,
        ),
        (
            "TE.TE: x + chunked, with CL",
            req(&te_te(
                "Transfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n",
            )),
            400,
        ),
        (
            "TE.TE: xchunked, with CL",
            req(&te_te("Transfer-Encoding: xchunked\r\n")),
            400,
        ),
        (
            "TE.TE: space before colon, with CL",
            req(&te_te("Transfer-Encoding : chunked\r\n")),
            400,
        ),
        (
            "TE.TE: chunked + identity, with CL",
            req(&te_te(
                "Transfer-Encoding: chunked\r\nTransfer-encoding: identity\r\n",
            )),
            400,
        ),
        (
            "TE.TE: vertical tab before chunked, with CL",
            req(&te_te("Transfer-Encoding:\x0bchunked\r\n")),
            400,
        ),
        (
            "TE.TE: folded value, with CL",
            req(&te_te("Transfer-Encoding:\r\n chunked\r\n")),
            400,
        ),
        (
            "TE.TE: chunked + x, no CL",
            req(&te_only(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
            )),
            400,
        ),
        (
            "TE.TE: x + chunked, no CL",
            req(&te_only(
                "Transfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n",
            )),
            400,
        ),
        (
            "TE.TE: chunked, chunked, no CL",
            req(&te_only("Transfer-Encoding: chunked, chunked\r\n")),
            400,
        ),
        (
            "TE.TE: xchunked, no CL",
            req(&te_only("Transfer-Encoding: xchunked\r\n")),
            400,
        ),
        (
            "TE.TE: space before colon, no CL",
            req(&te_only("Transfer-Encoding : chunked\r\n")),
            400,
        ),
    ];
    run_table(&b, &f, &cases);
}

#[test]
fn header_size_and_count_limits() {
    let (b, f) = setup();
    let big = |n: usize| {
        req(&format!(
            "GET /api/users HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "a".repeat(n)
        ))
    };
    let many = |n: usize| {
        let mut s = "GET /api/users HTTP/1.1\r\nHost: a\r\n".to_string();
        for i in 0..n {
            s.push_str(&format!("X-H{i}: v\r\n"));
        }
        s.push_str("\r\n");
        req(&s)
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "header above limits.max_header_size (40k > 32k)",
            big(40 * 1024),
            431,
        ),
        (
            "header above Pingora's 1 MiB limit",
            big(1024 * 1024 + 10),
            OVER_1MIB,
        ),
        (
            "120 fields, above limits.max_header_count (100)",
            many(120),
            431,
        ),
        ("300 fields, above Pingora's 256", many(300), 400),
    ];
    run_table(&b, &f, &cases);
    // Just below the limits: forwarded.
    let r = exchange(f.addr, &big(30 * 1024), CLOSE_WAIT);
    assert_eq!(r.status(), 200, "{}", r.summary());
    let r = exchange(f.addr, &many(90), CLOSE_WAIT);
    assert_eq!(r.status(), 200, "{}", r.summary());
}

/// (request target, expected status, backend and uri it must receive).
type PathCase = (&'static str, u16, Option<(&'static str, &'static str)>);

#[test]
fn path_tricks_route_on_the_normalized_path_and_forward_it() {
    let (b, f) = setup();
    let cases: &[PathCase] = &[
        ("/api/users/../orders", 400, None),
        ("/api/users/%2e%2e/orders", 400, None),
        ("/api/users/%2E%2E/%2e%2E/api/orders", 400, None),
        ("/api/users/.%2e/orders", 400, None),
        ("/api/users/../../etc/passwd", 400, None),
        ("/../api/users", 400, None),
        ("/api/users/7/../../orders/1", 400, None),
        ("/api/users\\..\\orders", 400, None),
        ("/api/users/%5c..%5corders", 400, None),
        ("/api/users/%5C", 400, None),
        ("/api/users/%00", 400, None),
        ("/api/users/%zz", 400, None),
        ("/api/users/%2", 400, None),
        ("http://evil.example/api/users/../orders", 400, None),
        ("/api/users/7", 200, Some(("users", "/api/users/7"))),
        ("/api/users/./7", 200, Some(("users", "/api/users/7"))),
        ("/api/users/a/../7", 200, Some(("users", "/api/users/7"))),
        (
            "/api/users/a/%2e%2e/7",
            200,
            Some(("users", "/api/users/7")),
        ),
        ("/api//users//7", 200, Some(("users", "/api/users/7"))),
        ("//api/users", 200, Some(("users", "/api/users"))),
        ("/api/%75sers/7", 200, Some(("users", "/api/users/7"))),
        ("/api/users/a%2fb", 200, Some(("users", "/api/users/a%2Fb"))),
        (
            "/api/users/a%2F..%2F..%2Forders",
            200,
            Some(("users", "/api/users/a%2F..%2F..%2Forders")),
        ),
        ("/api/users%2f..%2forders", 404, None),
        ("/api/usersX", 404, None),
        (
            "/api//orders/./1?next=/../x",
            200,
            Some(("orders", "/api/orders/1?next=/../x")),
        ),
    ];
    let mut failures = vec![];
    for (target, want, forwarded) in cases {
        reset(&b);
        let bytes = format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let ex = exchange(f.addr, bytes.as_bytes(), CLOSE_WAIT);
        let log = backend_log(&b);
        println!("{target:<45} -> {}; backend saw {log:?}", ex.summary());
        let expected_log: Vec<String> = forwarded
            .iter()
            .map(|(name, uri)| format!("{name}: GET {uri}"))
            .collect();
        let mut ok = ex.status() == *want && log == expected_log;
        if let (Some((name, uri)), Some(r)) = (forwarded, &ex.response) {
            let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            ok &= echo["server"] == *name && echo["uri"] == *uri;
        }
        if !ok {
            failures.push(format!(
                "{target}: want {want} forwarded as {forwarded:?}; got {}, backend saw {log:?}",
                ex.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn spoofed_forwarding_headers_and_request_ids() {
    let b = Backends::start(&["users"], &[]);
    let conf = format!(
        "status:\n  allow: [\"10.0.0.0/8\"]\n{}",
        one_pool("users", "/api/users", &[b.addr("users")], "")
    );
    let f = Fulcrum::start(&conf);
    // Only the socket peer counts for the status allow list.
    for headers in [
        &[("X-Forwarded-For", "10.1.2.3")][..],
        &[("X-Real-IP", "10.1.2.3")][..],
        &[("Forwarded", "for=10.1.2.3")][..],
        &[("X-Forwarded-For", "10.1.2.3, 10.9.9.9")][..],
    ] {
        let r = request(f.addr, "GET", "/nginx-status", headers, b"");
        assert_eq!(r.status, 403, "{headers:?}");
    }
    // A client-sent X-Forwarded-For is kept but the peer is appended, and
    // X-Real-IP is always the peer.
    let r = request(
        f.addr,
        "GET",
        "/api/users/1",
        &[("X-Forwarded-For", "6.6.6.6"), ("X-Real-IP", "6.6.6.6")],
        b"",
    );
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    // Request ids: up to 128 safe characters are kept; anything else is replaced.
    let ok = "a".repeat(128);
    let r = request(f.addr, "GET", "/api/users/1", &[("X-Request-Id", &ok)], b"");
    assert_eq!(r.header("x-request-id"), Some(ok.as_str()));
    let too_long = "a".repeat(129);
    for bad in [
        too_long.as_str(),
        "",
        "a/b",
        "<script>",
        "id\u{e9}",
        "a b",
        "x%0d%0aSet-Cookie:1",
    ] {
        let r = request(f.addr, "GET", "/api/users/1", &[("X-Request-Id", bad)], b"");
        let id = r.header("x-request-id").unwrap().to_string();
        assert_ne!(id, bad);
        assert!(
            id.len() == 24 && id.bytes().all(|c| c.is_ascii_hexdigit()),
            "{id:?}"
        );
        assert_eq!(r.json()["headers"]["x-request-id"], id.as_str());
    }
}
