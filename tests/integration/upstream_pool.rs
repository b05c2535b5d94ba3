//! Pooled upstream connections are reused, whichever worker thread a
//! request runs on, and never once their server has closed them.

use crate::common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// Four keepalive clients never have more than four requests in flight, so
/// a working pool needs at most four upstream connections per worker
/// thread. Pingora's shared pool, watched from a random thread, opened 10
/// to 30 here (the race in src/net/workers.rs).
#[test]
fn keepalive_clients_on_two_threads_reuse_upstream_connections() {
    // Two worker threads; no health check connections.
    let (b, f) = api_on_one_backend("");
    let (clients, requests) = (4, 1000);
    let before = b.connections("a");
    keepalive_load(f.addr, "/api", clients, requests);
    // The stats request itself is one more connection.
    let opened = b.connections("a") - before - 1;
    let bound = 2 * clients as u64;
    println!(
        "{opened} upstream connections for {} requests",
        clients * requests
    );
    assert!(
        opened <= bound,
        "{opened} upstream connections for {} requests from {clients} clients (at most {bound})",
        clients * requests
    );
}

/// A server that closes each keepalive connection `idle_close` after its
/// response, as a backend with a short keepalive timeout does. Counts the
/// connections it accepted.
fn closing_server(idle_close: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    raw::serve(move |mut s| {
        if raw::read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            std::thread::sleep(idle_close);
        }
        // Dropping the stream closes it: the connection fulcrum keeps idle
        // is now dead.
    })
}

/// fulcrum's upstream sockets to `server` in CLOSE_WAIT (the server closed,
/// fulcrum has not), from /proc/net/tcp.
fn close_wait_to(server: SocketAddr) -> usize {
    let port = format!(":{:04X}", server.port());
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f[2].ends_with(&port) && f[3] == "08"
        })
        .count()
}

/// An idle upstream connection the server closed is never used for a
/// request (no failed request, no failure counted against the server) and
/// is closed on fulcrum's side within about a second.
#[test]
fn idle_connections_closed_by_the_server_are_not_reused() {
    let (server, accepted) = closing_server(Duration::from_millis(100));
    let f = Fulcrum::start(&one_pool("api", "/api", &[server], ""));
    for i in 0..6 {
        let r = f.get("/api/x");
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "request {i}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let s = f.server_status("api", server);
    assert_eq!(s["failures"], 0, "no failure counted: {s}");
    assert_eq!(
        accepted.load(SeqCst),
        6,
        "each request found its connection closed"
    );
    assert!(error_lines(&f.log_text()).is_empty(), "{}", f.log_text());
    // The last connection was closed by the server after 100 ms; fulcrum's
    // once-a-second sweep closes its end.
    assert!(
        wait_until(Duration::from_secs(3), || close_wait_to(server) == 0),
        "{} sockets to the server left in CLOSE_WAIT",
        close_wait_to(server)
    );
}

/// A server that answers the first request on each connection and closes
/// the connection after reading the second, without answering.
fn answers_once_per_connection() -> SocketAddr {
    let (addr, _) = raw::serve(|mut s| {
        if raw::read_head(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst");
            raw::read_head(&mut s);
        }
    });
    addr
}

/// A kept-alive connection that closes after the request was sent may be a
/// keepalive race: an idempotent request is retried on another server even
/// though `retry.on` lists nothing, and the server gets the failure.
#[test]
fn a_reused_connection_closed_without_an_answer_is_retried() {
    let closing = answers_once_per_connection();
    let b = Backends::start(&["b"], &[]);
    let f = Fulcrum::start(&one_pool(
        "api",
        "/api",
        &[closing, b.addr("b")],
        "retry: { on: [] }",
    ));
    // least_conn alternates between the two idle servers: the closing one
    // answers its first request on a new connection, then gets the second
    // on the same connection, kept idle in between.
    let mut bodies = Vec::new();
    for i in 0..4 {
        let r = f.get("/api/x");
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        bodies.push(r.body);
    }
    assert_eq!(
        bodies.iter().filter(|b| *b == "first").count(),
        1,
        "{bodies:?}"
    );
    let s = f.server_status("api", closing);
    assert_eq!(s["failures"], 1, "{s}");
}

/// Responses without a body (HEAD, 204, 304, Content-Length: 0) end with
/// their header: their connection goes back to the idle list all the same.
#[test]
fn connections_are_reused_after_responses_without_a_body() {
    let (b, f) = api_on_one_backend("");
    let before = b.connections("a");
    let kinds = [
        ("HEAD", "/api/x", 200),
        ("GET", "/api/x?status=204", 204),
        ("GET", "/api/x?status=304", 304),
        ("GET", "/api/x", 200),
    ];
    for _ in 0..10 {
        for (method, path, status) in kinds {
            let r = request(f.addr, method, path, &[], b"");
            assert_eq!(r.status, status, "{method} {path}");
        }
    }
    // The stats request itself is one more connection; the two worker
    // threads take client connections in turn, so each opens one.
    let opened = b.connections("a") - before - 1;
    assert!(
        opened <= 2,
        "{opened} upstream connections for 40 sequential requests"
    );
}
