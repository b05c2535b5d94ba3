//! Retries to the next server (nginx `proxy_next_upstream`): what is retried
//! and what is not, how many attempts are made, which statuses count as a
//! server's failure, and how the access log lists every attempt.
//!
//! Server `a` is given weight 100 so that least_conn's tie-break sends the
//! first requests to it: each test knows which server is tried first.

use crate::common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

/// Pool `svc` at `/api`: `a` (weight 100, tried first) and `b`.
fn conf(b: &Backends, extra: &str) -> String {
    pool_with(
        "svc",
        "/api",
        &[(b.addr("a"), "weight: 100"), (b.addr("b"), "")],
        extra,
    )
}

#[test]
fn a_post_that_reached_a_server_is_not_retried_but_a_get_is() {
    let b = Backends::start(&["a", "b"], &[]);
    b.control("a", "/__control/mode?close_after_read=1");
    // max_fails 0: `a` stays in rotation; this test is about retries only.
    let f = Fulcrum::start(&conf(&b, "max_fails: 0"));

    let r = request(f.addr, "POST", "/api/orders", &[], b"{\"n\":1}");
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body.contains("pool svc"),
        "body names the pool: {}",
        r.body
    );
    assert_eq!(b.requests("a"), 1, "a received the POST exactly once");
    assert_eq!(b.requests("b"), 0, "the POST was not sent again");

    let r = f.get("/api/orders");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), "b");
    assert_eq!((b.requests("a"), b.requests("b")), (2, 1));

    let log = f.wait_access_log(2);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].status, 502);
    assert_eq!(log[0].upstreams, vec![b.addr("a")]);
    assert_eq!(log[0].upstream_statuses, vec![502]);
    assert_eq!(log[1].status, 200);
    assert_eq!(log[1].upstreams, vec![b.addr("a"), b.addr("b")]);
    assert_eq!(log[1].upstream_statuses, vec![502, 200]);
    assert!(
        log[1].raw.contains(&format!(
            "upstream={}, {} upstream_status=502, 200",
            b.addr("a"),
            b.addr("b")
        )),
        "nginx-style lists: {}",
        log[1].raw
    );
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn with_non_idempotent_a_post_is_retried_on_the_other_server_with_its_body() {
    let b = Backends::start(&["a", "b"], &[]);
    b.control("a", "/__control/mode?close_after_read=1");
    let f = Fulcrum::start(&conf(&b, "max_fails: 0\nretry: { non_idempotent: true }"));

    let body = vec![b'x'; 10_000];
    let r = request(f.addr, "POST", "/api/orders", &[], &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), "b");
    assert_eq!(r.json()["body_bytes"], 10_000, "the body was replayed");
    assert_eq!((b.requests("a"), b.requests("b")), (1, 1));
    let log = f.wait_access_log(1);
    assert_eq!(log[0].upstream_statuses, vec![502, 200]);
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_body_larger_than_the_retry_buffer_is_not_retried_and_the_log_says_so() {
    let b = Backends::start(&["a", "b"], &[]);
    b.control("a", "/__control/mode?close_after_read=1");
    let f = Fulcrum::start(&conf(&b, "max_fails: 0"));

    // PUT is idempotent, so only the body size prevents the retry.
    let body = vec![b'x'; 200 * 1024];
    let r = request(f.addr, "PUT", "/api/blob", &[], &body);
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!((b.requests("a"), b.requests("b")), (1, 0));
    assert!(
        wait_until(std::time::Duration::from_secs(5), || f
            .log_text()
            .contains("larger than the 64 KiB retry buffer")),
        "the error log explains why: {}",
        f.log_text()
    );
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_connect_failure_is_retried_even_for_a_post() {
    let b = Backends::start(&["b"], &[]);
    // Nothing listens on `dead`: the connection is refused, nothing was sent.
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let f = Fulcrum::start(&pool_with(
        "svc",
        "/api",
        &[(dead, "weight: 100"), (b.addr("b"), "")],
        "",
    ));
    let r = request(f.addr, "POST", "/api/orders", &[], b"{}");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.requests("b"), 1);
    let log = f.wait_access_log(1);
    assert_eq!(log[0].upstreams, vec![dead, b.addr("b")]);
    assert_eq!(log[0].upstream_statuses, vec![502, 200]);
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_404_passes_through_without_failure_and_a_listed_503_is_retried_and_counted() {
    let b = Backends::start(&["a", "b"], &[]);
    // max_fails 1 (the default): one counted failure takes `a` out.
    let f = Fulcrum::start(&conf(&b, "retry: { on: [error, timeout, http_503] }"));
    let a = b.addr("a");

    for status in [404, 404, 404, 500] {
        let r = f.get(&format!("/api/x?status={status}"));
        assert_eq!(r.status, status, "passed through: {}", r.body);
        assert_eq!(r.backend(), "a");
    }
    let s = f.server_status("svc", a);
    assert_eq!(
        s["failures"], 0,
        "404 and an unlisted 500 are no failures: {s}"
    );
    assert_eq!(s["state"], "up");
    assert_eq!(b.requests("b"), 0, "nothing was retried");

    b.control("a", "/__control/mode?status=503");
    let r = f.get("/api/x");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), "b", "the 503 from a was retried on b");
    let s = f.server_status("svc", a);
    assert_eq!(s["failures"], 1, "the listed 503 counts: {s}");
    assert_eq!(s["state"], "failed", "max_fails 1 reached: {s}");

    let log = f.wait_access_log(5);
    assert_eq!(log[4].upstreams, vec![a, b.addr("b")]);
    assert_eq!(log[4].upstream_statuses, vec![503, 200]);
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn tries_two_over_three_failing_servers_makes_exactly_two_attempts() {
    let b = Backends::start(&["a", "b", "c"], &[]);
    for n in ["a", "b", "c"] {
        b.control(n, "/__control/mode?close_after_read=1");
    }
    let servers = [b.addr("a"), b.addr("b"), b.addr("c")];
    let total = |b: &Backends| b.requests("a") + b.requests("b") + b.requests("c");

    let f = Fulcrum::start(&one_pool(
        "svc",
        "/api",
        &servers,
        "max_fails: 0\nretry: { tries: 2 }",
    ));
    let r = f.get("/api/x");
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("pool svc"), "{}", r.body);
    assert_eq!(total(&b), 2, "exactly two attempts reached the servers");
    let log = f.wait_access_log(1);
    assert_eq!(log[0].upstream_statuses, vec![502, 502]);
    assert_ne!(
        log[0].upstreams[0], log[0].upstreams[1],
        "two different servers"
    );
    f.assert_in_flight_returns_to_zero();
    drop(f);

    // tries 0: every usable server once.
    let f = Fulcrum::start(&one_pool("svc", "/api", &servers, "max_fails: 0"));
    assert_eq!(f.get("/api/x").status, 502);
    assert_eq!(total(&b), 2 + 3, "tries 0 tried all three servers once");
    let log = f.wait_access_log(1);
    assert_eq!(log[0].upstream_statuses, vec![502, 502, 502]);
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn when_every_server_answers_a_listed_503_the_last_answer_is_passed_through() {
    let b = Backends::start(&["a", "b"], &[]);
    b.control("a", "/__control/mode?status=503");
    b.control("b", "/__control/mode?status=503");
    let f = Fulcrum::start(&conf(&b, "retry: { on: [error, timeout, http_503] }"));
    let r = f.get("/api/x");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.backend(), "b", "the answer of the last attempt");
    assert_eq!((b.requests("a"), b.requests("b")), (1, 1));
    let log = f.wait_access_log(1);
    assert_eq!(log[0].upstream_statuses, vec![503, 503]);
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn timeouts_on_every_server_give_504_naming_the_pool() {
    let b = Backends::start(&["a", "b"], &[]);
    let f = Fulcrum::start(&conf(&b, "read_timeout: 300ms"));
    let r = f.get("/api/x?delay_ms=3000");
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(r.body.contains("timed out in pool svc"), "{}", r.body);
    assert_eq!(
        (b.requests("a"), b.requests("b")),
        (1, 1),
        "both were tried"
    );
    let log = f.wait_access_log(1);
    assert_eq!(log[0].upstream_statuses, vec![504, 504]);
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn retry_timeout_stops_further_attempts() {
    let b = Backends::start(&["a", "b", "c"], &[]);
    let servers = [b.addr("a"), b.addr("b"), b.addr("c")];
    // Each attempt times out after 500ms; the second ends past the 750ms
    // retry.timeout, so the third server is never tried.
    let f = Fulcrum::start(&one_pool(
        "svc",
        "/api",
        &servers,
        "max_fails: 0\nread_timeout: 500ms\nretry: { timeout: 750ms }",
    ));
    let r = f.get("/api/x?delay_ms=3000");
    assert_eq!(r.status, 504, "{}", r.body);
    let total = b.requests("a") + b.requests("b") + b.requests("c");
    assert_eq!(total, 2, "two attempts, not three");
    let log = f.wait_access_log(1);
    assert_eq!(log[0].upstream_statuses, vec![504, 504]);
    f.assert_in_flight_returns_to_zero();
}

/// A one-connection server that answers with a body shorter than its
/// Content-Length and closes; returns its address and how many requests it got.
fn truncating_server() -> (SocketAddr, Arc<AtomicUsize>) {
    raw::serve(|mut conn| {
        if raw::read_head(&mut conn) {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
        }
    })
}

#[test]
fn nothing_is_retried_once_response_bytes_went_to_the_client() {
    let b = Backends::start(&["b"], &[]);
    let (trunc, received) = truncating_server();
    let f = Fulcrum::start(&pool_with(
        "svc",
        "/api",
        &[(trunc, "weight: 100"), (b.addr("b"), "")],
        "max_fails: 5",
    ));
    // The client sees the 200 header, then the connection ends early.
    let result = try_request(f.addr, "GET", "/api/x", &[], b"");
    let err = result.expect_err("a truncated body cannot be read to its length");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(received.load(SeqCst), 1);
    assert_eq!(b.requests("b"), 0, "not retried after the header went out");
    let s = f.server_status("svc", trunc);
    assert_eq!(s["failures"], 1, "a truncated response is a failure: {s}");
    let log = f.wait_access_log(1);
    assert_eq!(log[0].upstreams, vec![trunc]);
    f.assert_in_flight_returns_to_zero();
}
