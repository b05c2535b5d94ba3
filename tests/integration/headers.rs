//! Forwarded headers reach the backend; X-Request-Id is generated or kept,
//! and returned to the client; Host is kept, or supplied where HTTP/1.0
//! left it out; an absolute-form target arrives in origin-form; hop-by-hop
//! fields go neither way.

use crate::common::raw::{exchange, serve};
use crate::common::*;
use std::io::Write;
use std::time::Duration;

fn setup() -> (Backends, Fulcrum) {
    let b = Backends::start(&["a"], &[]);
    let f = Fulcrum::start(&one_pool("svc", "/", &[b.addr("a")], ""));
    (b, f)
}

#[test]
fn forwarded_headers_arrive_at_the_backend() {
    let (_b, f) = setup();
    let r = request(
        f.addr,
        "GET",
        "/x",
        &[("Host", "shop.example"), ("X-Forwarded-For", "203.0.113.7")],
        b"",
    );
    let h = &r.json()["headers"];
    assert_eq!(
        h["x-forwarded-for"], "203.0.113.7, 127.0.0.1",
        "client's list plus the peer"
    );
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(
        h["host"].as_str().unwrap().contains("shop.example") || h["host"] == "shop.example",
        "{h}"
    );
    let plain = f.get("/y").json();
    assert_eq!(plain["headers"]["x-forwarded-for"], "127.0.0.1");
}

#[test]
fn bodies_pass_through_uncompressed_whatever_the_client_accepts() {
    // nginx without `gzip on`: Accept-Encoding goes to the backend as sent,
    // and its answer comes back byte for byte.
    let (_b, f) = setup();
    let r = request(
        f.addr,
        "GET",
        "/z",
        &[("Accept-Encoding", "gzip, br, zstd")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None, "{:?}", r.headers);
    assert_eq!(
        r.header("content-length").map(str::to_string),
        Some(r.body.len().to_string()),
        "{:?}",
        r.headers
    );
    assert_eq!(r.json()["headers"]["accept-encoding"], "gzip, br, zstd");
}

#[test]
fn request_id_is_generated_and_returned() {
    let (_b, f) = setup();
    let r1 = f.get("/x");
    let r2 = f.get("/x");
    let id1 = r1
        .header("x-request-id")
        .expect("returned to the client")
        .to_string();
    assert_eq!(
        r1.json()["headers"]["x-request-id"],
        id1.as_str(),
        "same id upstream"
    );
    assert_ne!(
        Some(id1.as_str()),
        r2.header("x-request-id"),
        "ids are unique"
    );
}

#[test]
fn client_request_id_round_trips_if_safe() {
    let (_b, f) = setup();
    let r = request(f.addr, "GET", "/x", &[("X-Request-Id", "abc-123.def")], b"");
    assert_eq!(r.header("x-request-id"), Some("abc-123.def"));
    assert_eq!(r.json()["headers"]["x-request-id"], "abc-123.def");
    // Sent twice: the first is kept and the server gets it once.
    let r = request(
        f.addr,
        "GET",
        "/x",
        &[("X-Request-Id", "first-1"), ("X-Request-Id", "second-2")],
        b"",
    );
    assert_eq!(r.header("x-request-id"), Some("first-1"));
    assert_eq!(r.json()["headers"]["x-request-id"], "first-1");
    let long = "a".repeat(300);
    for bad in ["has space", "semi;colon", long.as_str()] {
        let r = request(f.addr, "GET", "/x", &[("X-Request-Id", bad)], b"");
        let id = r.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert_eq!(r.json()["headers"]["x-request-id"], id);
    }
}

#[test]
fn access_log_lists_client_method_path_status_pool_upstream_and_id() {
    let (b, f) = setup();
    let r = request(
        f.addr,
        "GET",
        "/logged?q=1",
        &[("X-Request-Id", "log-me-1")],
        b"",
    );
    assert_eq!(r.status, 200);
    let a = b.addr("a").to_string();
    assert!(
        wait_until(std::time::Duration::from_secs(5), || f
            .log_text()
            .lines()
            .any(|l| l.contains("id=log-me-1"))),
        "no access log line in:\n{}",
        f.log_text()
    );
    let line = f
        .log_text()
        .lines()
        .find(|l| l.contains("id=log-me-1"))
        .unwrap()
        .to_string();
    for part in [
        "127.0.0.1 ",
        "\"GET /logged?q=1\" 200",
        "pool=svc",
        &format!("upstream={a}"),
        "upstream_status=200",
        "upstream_time=",
        "total=",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
}

/// The request a demo backend echoed, from a raw exchange through `f`.
fn echoed(f: &Fulcrum, raw: &str) -> serde_json::Value {
    let x = exchange(f.addr, raw.as_bytes(), Duration::ZERO);
    assert_eq!(x.status(), 200, "{raw:?}: {}", x.summary());
    x.response.unwrap().json()
}

#[test]
fn every_request_sent_upstream_has_a_host() {
    let (b, f) = setup();
    // HTTP/1.0 may leave Host out: the server's address, as written.
    let e = echoed(&f, "GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(e["headers"]["host"], b.addr("a").to_string());
    // Absolute-form: origin-form upstream, the target's authority as Host
    // (also where HTTP/1.1 sends no Host: the target names it).
    for raw in [
        "GET http://shop.example:8080/abs?q=1 HTTP/1.1\r\nHost: shop.example:8080\r\n\r\n",
        "GET http://shop.example:8080/abs?q=1 HTTP/1.1\r\n\r\n",
        "GET http://shop.example:8080/abs?q=1 HTTP/1.0\r\n\r\n",
    ] {
        let e = echoed(&f, raw);
        assert_eq!(e["uri"], "/abs?q=1", "{raw:?}");
        assert_eq!(e["headers"]["host"], "shop.example:8080", "{raw:?}");
    }
    let e = echoed(&f, "GET http://shop.example HTTP/1.1\r\n\r\n");
    assert_eq!(
        (&e["uri"], &e["headers"]["host"]),
        (&"/".into(), &"shop.example".into())
    );
    // HTTP/1.1 without Host is the client's error (RFC 9112 §3.2): 400 from
    // fulcrum, nothing sent to the server, the server not counted as failed.
    let before = b.requests("a");
    for path in ["/x", "/health"] {
        let x = exchange(
            f.addr,
            format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        );
        assert_eq!(
            (x.status(), x.closed),
            (400, true),
            "{path}: {}",
            x.summary()
        );
    }
    assert_eq!(b.requests("a"), before);
    assert_eq!(f.server_status("svc", b.addr("a"))["failures"], 0);
}

#[test]
fn a_pool_may_send_a_host_of_its_own() {
    let b = Backends::start(&["a"], &[]);
    let f = Fulcrum::start(&one_pool(
        "svc",
        "/",
        &[b.addr("a")],
        "host_header: api.internal:8080",
    ));
    for raw in [
        "GET /x HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        "GET /x HTTP/1.0\r\n\r\n",
        "GET http://shop.example/x HTTP/1.1\r\n\r\n",
    ] {
        let e = echoed(&f, raw);
        assert_eq!(e["headers"]["host"], "api.internal:8080", "{raw:?}");
        assert_eq!(e["uri"], "/x", "{raw:?}");
    }
}

#[test]
fn hop_by_hop_fields_are_not_forwarded_either_way() {
    // A server that answers with fields about its own connection, and
    // records the request it got.
    let (addr, _) = serve(|mut s| {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match std::io::Read::read(&mut s, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let body = String::from_utf8_lossy(&got).to_lowercase();
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: x-hop, keep-alive\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nUpgrade: h2c\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-End-To-End: yes\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(answer.as_bytes());
    });
    let f = Fulcrum::start(&one_pool("svc", "/", &[addr], ""));
    let x = exchange(
        f.addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: x-mine, keep-alive\r\nX-Mine: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-End-To-End: yes\r\n\r\n",
        Duration::ZERO,
    );
    let r = x.response.expect("an answer");
    // What the server received.
    for field in [
        "x-mine:",
        "keep-alive:",
        "proxy-connection:",
        "te:",
        "trailer:",
        "upgrade:",
    ] {
        assert!(
            !r.body.contains(&format!("\r\n{field}")),
            "{field} forwarded:\n{}",
            r.body
        );
    }
    assert!(r.body.contains("\r\nx-end-to-end: yes\r\n"), "{}", r.body);
    // What the client received.
    for field in [
        "X-Hop",
        "Keep-Alive",
        "Proxy-Connection",
        "Trailer",
        "Upgrade",
    ] {
        assert_eq!(r.header(field), None, "{field} forwarded: {:?}", r.headers);
    }
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(r.header("X-End-To-End"), Some("yes"));
    assert_ne!(r.header("Connection"), Some("x-hop, keep-alive"));
}
