//! The error log under normal traffic holds no error lines.

use crate::common::*;

#[test]
fn keepalive_clients_on_two_threads_log_no_errors() {
    // Two worker threads. With one upstream pool for both, Pingora logged
    // "failed to acquire reusable stream" 9-19 times here (src/net/workers.rs).
    let (_b, f) = api_on_one_backend("");
    keepalive_load(f.addr, "/api", 4, 1000);
    let log = f.log_text();
    let errors = error_lines(&log);
    assert!(
        errors.is_empty(),
        "{} error lines, the first: {:?}",
        errors.len(),
        errors.first()
    );
}

/// What clients do wrong is logged at info, as nginx logs "client
/// prematurely closed connection" or "client sent invalid header": an
/// error line is for what an operator must look at.
#[test]
fn client_aborts_and_bad_requests_are_not_error_lines() {
    use std::io::{Read, Write};
    let (_b, f) = api_on_one_backend("limits: { client_header_timeout: 1s }\n");
    // Gone while the server is still working on the answer.
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(f.addr).unwrap();
        write!(s, "GET /api/x?delay_ms=300 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(s);
    }
    // Ambiguous framing: 400.
    let mut s = std::net::TcpStream::connect(f.addr).unwrap();
    write!(
        s,
        "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Part of a header, then gone; part of a header, then too slow.
    for wait in [100, 1500] {
        let mut s = std::net::TcpStream::connect(f.addr).unwrap();
        write!(s, "GET /api/x HTTP/1.1\r\nHost").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(wait));
    }
    // Each abort is noticed at the latest when its answer comes (300 ms);
    // the lines are still there for whoever looks, at info.
    let client_lines = || {
        f.log_text()
            .lines()
            .filter(|l| l.contains(" INFO ") && l.contains("client error:"))
            .count()
    };
    let seen = wait_until(std::time::Duration::from_secs(5), || client_lines() >= 6);
    assert!(seen, "{} client error lines of 6", client_lines());
    let log = f.log_text();
    let errors = error_lines(&log);
    assert!(
        errors.is_empty(),
        "{} error lines: {errors:#?}",
        errors.len()
    );
}
