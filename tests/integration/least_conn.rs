//! least_conn through the real proxy: even and weighted splits, the slow
//! server avoided while busy, and in-flight counts back at 0 after errors
//! and client aborts.

use crate::common::*;
use std::io::Write;
use std::time::Duration;

fn pool_conf(b: &Backends, weights: (u32, u32)) -> String {
    // max_fails 0: these tests look at counts, not at passive health.
    format!(
        "pools:\n  svc:\n    selection: least_conn\n    max_fails: 0\n    servers:\n      - {{addr: \"{}\", weight: {}}}\n      - {{addr: \"{}\", weight: {}}}\nroutes:\n  - {{prefix: /, pool: svc}}\n",
        b.addr("a"),
        weights.0,
        b.addr("b"),
        weights.1
    )
}

fn split(f: &Fulcrum, n: usize) -> (usize, usize) {
    let mut a = 0;
    for _ in 0..n {
        let r = f.get("/x");
        assert_eq!(r.status, 200);
        if r.backend() == "a" {
            a += 1;
        }
    }
    (a, n - a)
}

#[test]
fn ten_sequential_requests_split_five_five() {
    let b = Backends::start(&["a", "b"], &[]);
    let f = Fulcrum::start(&pool_conf(&b, (1, 1)));
    assert_eq!(split(&f, 10), (5, 5));
}

#[test]
fn weights_three_to_one_split_fifteen_five() {
    let b = Backends::start(&["a", "b"], &[]);
    let f = Fulcrum::start(&pool_conf(&b, (3, 1)));
    assert_eq!(split(&f, 20), (15, 5));
}

#[test]
fn a_busy_server_is_avoided_until_its_request_finishes() {
    let b = Backends::start(&["a", "b"], &[]);
    let f = Fulcrum::start(&pool_conf(&b, (1, 1)));
    // Find which server the next request goes to, and hold a slow one there.
    let addr = f.addr;
    let slow = std::thread::spawn(move || get(addr, "/slow?delay_ms=1500"));
    // fulcrum counts the request before the backend has read it: wait for
    // the backend's own count.
    let holds = |name: &str| b.stats(name).contains("\"in_flight\":1");
    assert!(wait_until(Duration::from_secs(5), || holds("a") || holds("b")));
    assert_eq!(f.total_in_flight(), 1);
    let busy = if holds("a") { "a" } else { "b" };
    let other = if busy == "a" { "b" } else { "a" };
    for i in 0..10 {
        let r = f.get("/x");
        assert_eq!(r.backend(), other, "request {i} went to the busy server");
    }
    assert_eq!(slow.join().unwrap().backend(), busy);
    assert_eq!(f.total_in_flight(), 0);
}

#[test]
fn in_flight_returns_to_zero_after_errors_and_client_aborts() {
    let b = Backends::start(&["a", "b"], &[]);
    let f = Fulcrum::start(&pool_conf(&b, (1, 1)));
    // Backend errors: 500s pass through (not in retry.on), and a server
    // that closes the connection without answering.
    for _ in 0..4 {
        assert_eq!(f.get("/x?status=500").status, 500);
    }
    b.control("a", "/__control/mode?close_after_read=1");
    for _ in 0..4 {
        let r = f.get("/x");
        assert_eq!(r.status, 200, "retried on b: {}", r.body);
    }
    b.control("a", "/__control/mode?close_after_read=0");
    // Client aborts while the upstream is still working: six requests, held
    // by the backends for 5 s, in flight for fulcrum and for the backends
    // themselves before their clients go.
    let clients: Vec<std::net::TcpStream> = (0..6)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(f.addr).unwrap();
            write!(s, "GET /abort?delay_ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            s
        })
        .collect();
    let at_backends = || b.in_flight("a") + b.in_flight("b");
    assert!(
        wait_until(Duration::from_secs(4), || f.total_in_flight() == 6
            && at_backends() == 6),
        "not all in flight: fulcrum {}, backends {}",
        f.total_in_flight(),
        at_backends()
    );
    drop(clients);
    assert!(
        wait_until(Duration::from_secs(10), || f.total_in_flight() == 0),
        "in-flight stuck at {}",
        f.total_in_flight()
    );
    // And the split is still even afterwards.
    assert_eq!(split(&f, 10), (5, 5));
}
