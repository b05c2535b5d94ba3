//! Active health checks (`fall`/`rise`), backup servers, `down` servers and
//! `max_conns`, through the real proxy.

use crate::common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

/// Checks every 200ms; `fall` 3, `rise` 2.
const INTERVAL: Duration = Duration::from_millis(200);
const FALL: u32 = 3;
const RISE: u32 = 2;
/// Scheduling slack on a loaded machine, on top of the nominal bound.
const SLACK: Duration = Duration::from_millis(1500);

fn check_conf(extra: &str) -> String {
    format!(
        "health_check: {{ type: http, path: /health, expect_status: [200-299], interval: 200ms, timeout: 150ms, rise: {RISE}, fall: {FALL} }}\n{extra}"
    )
}

/// Polls the server's JSON status until `done` holds, checking `invariant`
/// on every snapshot on the way; returns the time it took and the first
/// snapshot for which `done` held.
fn watch(
    f: &Fulcrum,
    addr: SocketAddr,
    limit: Duration,
    mut invariant: impl FnMut(&Value),
    done: impl Fn(&Value) -> bool,
) -> (Duration, Value) {
    let start = Instant::now();
    loop {
        let s = f.server_status("svc", addr);
        if done(&s) {
            return (start.elapsed(), s);
        }
        invariant(&s);
        assert!(start.elapsed() < limit, "not reached within {limit:?}: {s}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn send(f: &Fulcrum, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = f.get("/api/x");
            assert_eq!(r.status, 200, "{}", r.body);
            r.backend()
        })
        .collect()
}

#[test]
fn a_server_failing_its_checks_is_out_after_fall_checks_and_back_after_rise() {
    let b = Backends::start(&["a", "b"], &[]);
    let a = b.addr("a");
    let f = Fulcrum::start(&one_pool("svc", "/api", &[a, b.addr("b")], &check_conf("")));
    assert!(send(&f, 10).contains(&"a".to_string()));
    let since_up = f.server_status("svc", a)["active"]["since_unix_ms"].clone();

    b.control("a", "/__control/health?fail=1");
    let mut seen_counting = false;
    let (took, s) = watch(
        &f,
        a,
        FALL * INTERVAL + SLACK * 4,
        |s| {
            // Fewer than `fall` failed checks leave the server in.
            let fails = s["active"]["consecutive_failures"].as_u64().unwrap();
            assert!(
                fails < FALL as u64,
                "still up after {fails} failed checks: {s}"
            );
            seen_counting |= fails > 0;
        },
        |s| s["state"] == "unhealthy",
    );
    println!("active: marked unhealthy {took:?} after /health began failing");
    assert!(seen_counting, "never saw the failed checks being counted");
    // Out at the `fall`-th failed check, not before: the first snapshot
    // that shows the change (polled every 20 ms, checks every 200 ms)
    // counts `fall` failed checks, or more only if the poll came late.
    let at_change = s["active"]["consecutive_failures"].as_u64().unwrap();
    assert!(
        at_change >= FALL as u64,
        "unhealthy after {at_change} failed checks, fall is {FALL}: {s}"
    );
    // The first failed check may start up to one interval after the change.
    assert!(
        took <= FALL * INTERVAL + INTERVAL + SLACK,
        "fall {FALL} × {INTERVAL:?} took {took:?}"
    );
    let s = f.server_status("svc", a);
    assert_eq!(s["active"]["last_error"], "status 503", "{s}");
    assert!(
        s["active"]["since_unix_ms"].as_u64() > since_up.as_u64(),
        "since when: {s}"
    );
    let before = b.requests("a");
    assert!(send(&f, 20).iter().all(|n| n == "b"));
    assert_eq!(
        b.requests("a"),
        before,
        "no request reached the unhealthy server"
    );
    assert!(
        f.log_text().contains(&format!("server {a} is unhealthy")),
        "the change is logged:\n{}",
        f.log_text()
    );

    b.control("a", "/__control/health?fail=0");
    let (took, s) = watch(
        &f,
        a,
        RISE * INTERVAL + SLACK * 4,
        |s| {
            // Fewer than `rise` good checks keep it out.
            let oks = s["active"]["consecutive_successes"].as_u64().unwrap();
            assert!(oks < RISE as u64, "still out after {oks} good checks: {s}");
            assert_eq!(b.requests("a"), before, "traffic before it was back");
        },
        |s| s["state"] == "up",
    );
    println!("active: back in rotation {took:?} after /health recovered");
    let at_change = s["active"]["consecutive_successes"].as_u64().unwrap();
    assert!(
        at_change >= RISE as u64,
        "back after {at_change} good checks, rise is {RISE}: {s}"
    );
    assert!(
        took <= RISE * INTERVAL + INTERVAL + SLACK,
        "rise {RISE} × {INTERVAL:?} took {took:?}"
    );
    let names = send(&f, 10);
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 5, "{names:?}");
    assert!(f
        .log_text()
        .contains(&format!("server {a} is healthy again")));
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_backup_serves_only_while_both_primaries_are_down_and_down_servers_never() {
    let b = Backends::start(&["a", "b", "backup", "off"], &[]);
    let f = Fulcrum::start(&pool_with(
        "svc",
        "/api",
        &[
            (b.addr("a"), ""),
            (b.addr("b"), ""),
            (b.addr("backup"), "backup: true"),
            (b.addr("off"), "down: true"),
        ],
        &check_conf(""),
    ));
    let unhealthy = |name: &str| {
        let addr = b.addr(name);
        watch(
            &f,
            addr,
            Duration::from_secs(10),
            |_| {},
            |s| s["state"] == "unhealthy",
        );
    };
    let up = |name: &str| {
        let addr = b.addr(name);
        watch(
            &f,
            addr,
            Duration::from_secs(10),
            |_| {},
            |s| s["state"] == "up",
        );
    };
    assert_eq!(f.server_state("svc", b.addr("off")), "down");

    let names = send(&f, 10);
    assert!(names.iter().all(|n| n == "a" || n == "b"), "{names:?}");

    b.control("a", "/__control/health?fail=1");
    unhealthy("a");
    assert!(send(&f, 10).iter().all(|n| n == "b"), "one primary left");

    b.control("b", "/__control/health?fail=1");
    unhealthy("b");
    assert!(
        send(&f, 10).iter().all(|n| n == "backup"),
        "both primaries down"
    );

    b.control("a", "/__control/health?fail=0");
    up("a");
    assert!(send(&f, 10).iter().all(|n| n == "a"), "a primary is back");
    assert_eq!(b.requests("backup"), 10);
    assert_eq!(b.requests("off"), 0, "a down server never gets traffic");
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn max_conns_sends_the_second_concurrent_request_elsewhere_and_503_when_all_are_full() {
    let b = Backends::start(&["a", "b", "backup"], &[]);
    // One primary limited to 1 connection, and a backup: a second slow
    // request cannot go to the primary, so it goes to the backup.
    let f = Fulcrum::start(&pool_with(
        "svc",
        "/api",
        &[
            (b.addr("a"), "max_conns: 1"),
            (b.addr("backup"), "backup: true"),
        ],
        "",
    ));
    let addr = f.addr;
    let first = thread::spawn(move || get(addr, "/api/slow?delay_ms=1500"));
    assert!(wait_until(Duration::from_secs(5), || {
        f.server_status("svc", b.addr("a"))["in_flight"] == 1
    }));
    let second = get(addr, "/api/slow?delay_ms=100");
    assert_eq!((second.status, second.backend().as_str()), (200, "backup"));
    assert_eq!(first.join().unwrap().backend(), "a");
    assert_eq!(get(addr, "/api/x").backend(), "a", "free again");
    f.assert_in_flight_returns_to_zero();
    drop(f);

    // Every server at its limit and no backup: 503 at once.
    let f = Fulcrum::start(&pool_with(
        "svc",
        "/api",
        &[(b.addr("a"), "max_conns: 1"), (b.addr("b"), "max_conns: 1")],
        "",
    ));
    let addr = f.addr;
    let held: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || get(addr, "/api/slow?delay_ms=2000")))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || f.total_in_flight() == 2));
    let t = Instant::now();
    let r = get(addr, "/api/x");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("pool svc") && r.body.contains("max_conns"),
        "{}",
        r.body
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "503 at once: {:?}",
        t.elapsed()
    );
    let mut served: Vec<String> = held
        .into_iter()
        .map(|h| h.join().unwrap().backend())
        .collect();
    served.sort();
    assert_eq!(served, vec!["a", "b"]);
    assert_eq!(get(addr, "/api/x").status, 200, "free again");
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_tcp_check_takes_out_a_server_that_no_longer_accepts_connections() {
    let mut gone = Backends::start(&["gone"], &[]);
    let b = Backends::start(&["b"], &[]);
    let addr = gone.addr("gone");
    let f = Fulcrum::start(&one_pool(
        "svc",
        "/api",
        &[addr, b.addr("b")],
        // max_fails 0: only the active check may take it out.
        "max_fails: 0\nhealth_check: { type: tcp, interval: 200ms, timeout: 150ms, rise: 2, fall: 3 }",
    ));
    gone.kill();
    watch(
        &f,
        addr,
        Duration::from_secs(10),
        |_| {},
        |s| s["state"] == "unhealthy",
    );
    let s = f.server_status("svc", addr);
    let err = s["active"]["last_error"].as_str().unwrap_or_default();
    assert!(err.starts_with("connect:"), "{s}");
    // Requests now go to b only: none is even tried on the dead server.
    assert!(send(&f, 10).iter().all(|n| n == "b"));
    let log = f.wait_access_log(10);
    assert!(
        log.iter().all(|l| l.upstreams == vec![b.addr("b")]),
        "{log:?}"
    );
    f.assert_in_flight_returns_to_zero();
}
