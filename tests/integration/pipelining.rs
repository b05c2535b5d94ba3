//! HTTP/1.1 pipelining (RFC 9112 §9.3.2): every request a client sends
//! before reading the answers is answered, in order, whatever answers it
//! (a server, /health, the status page, a 4xx of fulcrum's own); bytes
//! after a request that closes the connection are discarded; a client that
//! pipelines without reading is held back by the socket, not buffered.

use crate::common::raw::{connect, wait_closed};
use crate::common::*;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn setup() -> (Backends, Fulcrum) {
    let b = Backends::start(&["users"], &[]);
    let conf = format!(
        "access_log: stdout\nlimits: {{client_max_body_size: 10}}\npools:\n  users:\n    servers: [{{addr: \"{}\"}}]\nroutes:\n  - {{prefix: /api, pool: users}}\n",
        b.addr("users")
    );
    (b, Fulcrum::start(&conf))
}

/// Reads `n` responses from `s`; `heads` marks the answers to HEAD requests.
fn read_answers(s: &TcpStream, heads: &[bool]) -> Vec<Response> {
    let mut r = BufReader::new(s.try_clone().unwrap());
    heads
        .iter()
        .enumerate()
        .map(|(i, &head)| {
            read_response(&mut r, head)
                .unwrap_or_else(|e| panic!("answer {} of {}: {e}", i + 1, heads.len()))
        })
        .collect()
}

/// The request target a demo backend echoes.
fn uri(r: &Response) -> String {
    r.json()["uri"].as_str().unwrap().to_string()
}

#[test]
fn pipelined_requests_are_answered_in_order_whoever_answers_them() {
    let (b, f) = setup();
    let requests = [
        "GET /api/1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /api/2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        "GET /nginx-status HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /api/3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
        "HEAD /api/4 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /no-route HTTP/1.1\r\nHost: a\r\n\r\n",
        "DELETE /api/5 HTTP/1.1\r\nHost: a\r\n\r\n",
        "PUT /api/6 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        "PATCH /api/7 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nz",
        "OPTIONS /api/8 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /api/9 HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    let mut s = connect(f.addr, Duration::from_secs(10));
    s.write_all(requests.concat().as_bytes()).unwrap();
    let heads: Vec<bool> = requests.iter().map(|r| r.starts_with("HEAD")).collect();
    let got = read_answers(&s, &heads);
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 404, 200, 200, 200, 200, 200]
    );
    assert_eq!(got[1].body, "ok\n");
    assert!(
        got[3].body.starts_with("Active connections:"),
        "{}",
        got[3].body
    );
    let proxied = [0, 2, 4, 7, 8, 9, 10, 11];
    let uris: Vec<String> = proxied.iter().map(|&i| uri(&got[i])).collect();
    assert_eq!(
        uris,
        ["/api/1", "/api/2", "/api/3", "/api/5", "/api/6", "/api/7", "/api/8", "/api/9"]
    );
    assert_eq!(got[2].json()["body_bytes"], 3);
    assert_eq!(got[4].json()["body_bytes"], 3);
    assert_eq!(got[9].json()["body_bytes"], 1);
    // The HEAD request reached the server too; each request exactly once.
    assert_eq!(b.requests("users"), proxied.len() as u64 + 1);
    // The connection is still open and serves the next request.
    let mut s2 = s.try_clone().unwrap();
    s2.write_all(b"GET /api/10 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(uri(&read_answers(&s, &[false])[0]), "/api/10");
}

#[test]
fn bytes_after_a_request_that_closes_are_discarded() {
    let (b, f) = setup();
    // The client asks to close.
    let mut s = connect(f.addr, Duration::from_secs(10));
    s.write_all(
        b"GET /api/1 HTTP/1.1\r\nHost: a\r\n\r\nGET /api/2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /api/3 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    let got = read_answers(&s, &[false, false]);
    assert_eq!(
        (uri(&got[0]), uri(&got[1])),
        ("/api/1".into(), "/api/2".into())
    );
    let mut extra = Vec::new();
    assert!(wait_closed(&mut s, Duration::from_secs(5), &mut extra));
    assert!(
        extra.is_empty(),
        "a third answer: {}",
        String::from_utf8_lossy(&extra)
    );
    // fulcrum closes: a body over client_max_body_size (413).
    let mut s = connect(f.addr, Duration::from_secs(10));
    s.write_all(
        b"GET /api/4 HTTP/1.1\r\nHost: a\r\n\r\nPOST /api/5 HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n01234567890GET /api/6 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    let got = read_answers(&s, &[false, false]);
    assert_eq!((uri(&got[0]), got[1].status), ("/api/4".into(), 413));
    let mut extra = Vec::new();
    assert!(wait_closed(&mut s, Duration::from_secs(5), &mut extra));
    assert!(
        extra.is_empty(),
        "an answer after the 413: {}",
        String::from_utf8_lossy(&extra)
    );
    assert_eq!(b.requests("users"), 3, "/api/1, /api/2 and /api/4 only");
}

#[test]
fn an_http10_keepalive_client_may_send_its_next_request_at_once() {
    let (b, f) = setup();
    let mut s = connect(f.addr, Duration::from_secs(10));
    s.write_all(
        b"GET /api/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /api/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    )
    .unwrap();
    let got = read_answers(&s, &[false, false]);
    assert_eq!(
        (uri(&got[0]), uri(&got[1])),
        ("/api/1".into(), "/api/2".into())
    );
    assert_eq!(b.requests("users"), 2);
}

#[test]
fn a_request_arriving_while_the_previous_one_is_served_is_answered_after_it() {
    let (_b, f) = setup();
    let mut s = connect(f.addr, Duration::from_secs(10));
    s.write_all(b"GET /api/slow?delay_ms=300 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"GET /api/next HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let got = read_answers(&s, &[false, false]);
    assert_eq!(
        (uri(&got[0]), uri(&got[1])),
        ("/api/slow?delay_ms=300".into(), "/api/next".into())
    );
    // Idle after a pipelined burst, then a plain request and another burst.
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(b"GET /api/a HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(uri(&read_answers(&s, &[false])[0]), "/api/a");
    s.write_all(b"GET /api/b HTTP/1.1\r\nHost: a\r\n\r\nGET /api/c HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let got = read_answers(&s, &[false, false]);
    assert_eq!(
        (uri(&got[0]), uri(&got[1])),
        ("/api/b".into(), "/api/c".into())
    );
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A client that pipelines 36 MB of requests and reads nothing: fulcrum
/// reads a request only when the previous answer is written, so once the
/// answers fill the socket towards the client, it stops reading and the
/// client's writes block. Then every request is answered, in order.
#[test]
fn a_client_that_pipelines_without_reading_is_held_back_not_buffered() {
    let (_b, f) = setup();
    let pad = "p".repeat(12 * 1024);
    let count = 3000;
    let before = rss_kb(f.child.id());
    let s = connect(f.addr, Duration::from_secs(30));
    let mut w = s.try_clone().unwrap();
    let pad_len = pad.len();
    let written = Arc::new(AtomicUsize::new(0));
    let sent = Arc::clone(&written);
    let writer = std::thread::spawn(move || {
        for i in 0..count {
            let req = format!("GET /api/{i} HTTP/1.1\r\nHost: a\r\nX-Pad: {pad}\r\n\r\n");
            w.write_all(req.as_bytes()).unwrap();
            sent.fetch_add(1, SeqCst);
        }
    });
    // Wait until the client's writes are blocked: no progress for a second.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = written.load(SeqCst);
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    assert!(
        !writer.is_finished(),
        "fulcrum took all {count} requests without the client reading an answer"
    );
    let during = rss_kb(f.child.id());
    eprintln!(
        "{last} of {count} requests ({} MB) written before the client's writes blocked; fulcrum {before} -> {during} kB",
        (last * pad_len) >> 20
    );
    // Buffering what the client sent would take more than the 36 MB.
    assert!(
        during < before + 16 * 1024,
        "fulcrum grew from {before} to {during} kB while the client was not reading"
    );
    let mut r = BufReader::new(s.try_clone().unwrap());
    for i in 0..count {
        let resp = read_response(&mut r, false).unwrap_or_else(|e| panic!("answer {i}: {e}"));
        assert_eq!(uri(&resp), format!("/api/{i}"));
    }
    writer.join().unwrap();
}
