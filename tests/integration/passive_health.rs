//! Passive health (nginx `max_fails`/`fail_timeout`) through the real proxy:
//! a crashed server and a flaky one cost no failed request and are taken out
//! after `max_fails` failures; after `fail_timeout` exactly one probe request
//! goes to the failed server; with nothing usable the answer is an immediate
//! 502 naming the pool.

use crate::common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Access log lines whose attempts include `addr`.
fn attempts_on(log: &[AccessLine], addr: SocketAddr) -> Vec<&AccessLine> {
    log.iter().filter(|l| l.upstreams.contains(&addr)).collect()
}

#[test]
fn sigkill_of_one_of_two_backends_during_300_sequential_gets_fails_no_request() {
    let mut a = Backends::start(&["a"], &[]);
    let b = Backends::start(&["b"], &[]);
    let (dead, live) = (a.addr("a"), b.addr("b"));
    // fail_timeout far longer than the run: no probe muddles the count.
    let f = Fulcrum::start(&one_pool(
        "svc",
        "/api",
        &[dead, live],
        "max_fails: 3\nfail_timeout: 60s",
    ));

    let done = Arc::new(AtomicUsize::new(0));
    let client = {
        let (done, addr) = (Arc::clone(&done), f.addr);
        thread::spawn(move || {
            let mut failed = vec![];
            for i in 0..300 {
                match try_request(addr, "GET", &format!("/api/x?i={i}"), &[], b"") {
                    Ok(r) if r.status == 200 => {}
                    other => failed.push((i, format!("{other:?}"))),
                }
                done.store(i + 1, SeqCst);
            }
            failed
        })
    };
    // Kill `a` a third of the way through, while the client keeps going.
    assert!(wait_until(Duration::from_secs(60), || done.load(SeqCst) >= 100));
    a.kill();
    let killed_after = done.load(SeqCst);
    let failed = client.join().unwrap();
    println!(
        "sigkill: {} of 300 requests failed (a killed after {killed_after})",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");

    let s = f.server_status("svc", dead);
    assert_eq!(s["state"], "failed", "{s}");
    assert_eq!(s["failures"], 3, "excluded after exactly max_fails: {s}");
    let log = f.wait_access_log(300);
    let retried: Vec<_> = log.iter().filter(|l| l.upstreams.len() > 1).collect();
    assert_eq!(retried.len(), 3, "three requests met the dead server");
    for l in &retried {
        assert_eq!(l.upstreams, vec![dead, live], "{}", l.raw);
        assert_eq!(l.upstream_statuses, vec![502, 200], "{}", l.raw);
    }
    let last_on_dead = log.iter().rposition(|l| l.upstreams.contains(&dead));
    assert!(
        log[last_on_dead.unwrap() + 1..]
            .iter()
            .all(|l| l.upstreams == vec![live]),
        "after its third failure every request went to the live server only"
    );
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_backend_dropping_every_third_request_is_taken_out_after_its_third_failure() {
    let b = Backends::start(&["flaky", "ok"], &[]);
    b.control("flaky", "/__control/mode?drop_every=3");
    let (flaky, ok) = (b.addr("flaky"), b.addr("ok"));
    let f = Fulcrum::start(&one_pool(
        "svc",
        "/api",
        &[flaky, ok],
        "max_fails: 3\nfail_timeout: 10s",
    ));

    let mut failed = 0;
    for i in 0..30 {
        let r = f.get(&format!("/api/x?i={i}"));
        if r.status != 200 {
            failed += 1;
        }
    }
    println!("flaky: {failed} of 30 requests failed");
    assert_eq!(failed, 0);
    // Its 3rd, 6th and 9th requests were dropped; the 9th made 3 failures.
    assert_eq!(b.requests("flaky"), 9, "no traffic after the third failure");
    let s = f.server_status("svc", flaky);
    assert_eq!(
        (s["state"].as_str(), s["failures"].as_u64()),
        (Some("failed"), Some(3)),
        "{s}"
    );

    let log = f.wait_access_log(30);
    let on_flaky = attempts_on(&log, flaky);
    assert_eq!(on_flaky.len(), 9);
    let dropped: Vec<_> = on_flaky
        .iter()
        .filter(|l| l.upstream_statuses[0] == 502)
        .collect();
    assert_eq!(dropped.len(), 3);
    for l in dropped {
        assert_eq!(l.upstreams, vec![flaky, ok], "retried: {}", l.raw);
        assert_eq!(l.status, 200);
    }
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn after_fail_timeout_exactly_one_probe_goes_to_the_failed_server_before_others_follow() {
    let b = Backends::start(&["a", "b"], &[]);
    let (a, addr_b) = (b.addr("a"), b.addr("b"));
    let fail_timeout = Duration::from_secs(3);
    // round_robin: least_conn would avoid the busy server anyway, which
    // would hide whether the one-probe rule holds.
    let f = Fulcrum::start(&one_pool(
        "svc",
        "/api",
        &[a, addr_b],
        "selection: round_robin\nmax_fails: 1\nfail_timeout: 3s\nretry: { on: [error, timeout, http_503] }",
    ));

    // One listed 503 takes `a` out.
    b.control("a", "/__control/mode?status=503");
    let marked = wait_until(Duration::from_secs(10), || {
        assert_eq!(f.get("/api/x").status, 200);
        f.server_state("svc", a) == "failed"
    });
    assert!(marked, "a never failed");
    let failed_at = Instant::now();
    // `a` recovers, but answers slowly so its probe is still running while
    // more requests arrive.
    b.control("a", "/__control/mode?status=0&delay_ms=4000");
    let a_before = b.requests("a");
    while failed_at.elapsed() < fail_timeout - Duration::from_secs(1) {
        assert_eq!(
            f.get("/api/x").backend(),
            "b",
            "a is out during fail_timeout"
        );
    }
    assert_eq!(b.requests("a"), a_before);

    // Requests until one of them is the probe (it stays in flight on `a`).
    let mut probe = None;
    let found = wait_until(fail_timeout + Duration::from_secs(5), || {
        let addr = f.addr;
        let h = thread::spawn(move || get(addr, "/api/x"));
        let on_a = wait_until(Duration::from_secs(2), || {
            h.is_finished() || b.requests("a") > a_before
        });
        assert!(on_a, "request neither finished nor reached a");
        if h.is_finished() {
            assert_eq!(h.join().unwrap().backend(), "b");
            false
        } else {
            probe = Some(h);
            true
        }
    });
    assert!(found, "no probe reached a after fail_timeout");
    // While the probe runs, everything else goes to `b`.
    for _ in 0..10 {
        assert_eq!(f.get("/api/x").backend(), "b", "only one probe at a time");
    }
    assert_eq!(b.requests("a"), a_before + 1, "exactly one probe request");
    let probe = probe.unwrap().join().unwrap();
    assert_eq!((probe.status, probe.backend().as_str()), (200, "a"));

    // Its success restored `a`: it takes requests again.
    assert_eq!(f.server_state("svc", a), "up");
    b.control("a", "/__control/mode?delay_ms=0");
    let back = (0..10).filter(|_| f.get("/api/x").backend() == "a").count();
    assert!(back >= 4, "a is back in rotation: {back} of 10");
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn with_no_usable_server_the_answer_is_an_immediate_502_naming_the_pool() {
    // Both servers fail their health checks: nothing is usable, and no
    // request may wait for a timeout.
    let b = Backends::start(&["a", "b"], &["--fail-health"]);
    let f = Fulcrum::start(&one_pool(
        "svc",
        "/api",
        &[b.addr("a"), b.addr("b")],
        "connect_timeout: 5s\nhealth_check: { interval: 200ms, timeout: 1s, rise: 1, fall: 1 }",
    ));
    assert!(
        wait_until(Duration::from_secs(10), || {
            f.server_state("svc", b.addr("a")) == "unhealthy"
                && f.server_state("svc", b.addr("b")) == "unhealthy"
        }),
        "health checks did not take both out"
    );
    let t = Instant::now();
    let r = f.get("/api/x");
    let took = t.elapsed();
    assert_eq!(r.status, 502);
    assert_eq!(
        r.body.trim(),
        "502 Bad Gateway: no live upstreams in pool svc"
    );
    assert!(took < Duration::from_secs(1), "answered at once: {took:?}");
    assert_eq!(b.requests("a") + b.requests("b"), 0, "no server was tried");
    let log = f.wait_access_log(1);
    assert_eq!((log[0].status, log[0].upstreams.len()), (502, 0));
    assert!(
        wait_until(Duration::from_secs(5), || f
            .log_text()
            .contains("no live upstreams in pool svc")),
        "error log line: {}",
        f.log_text()
    );
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_single_server_pool_never_marks_its_server_and_max_fails_0_disables_marking() {
    let b = Backends::start(&["a", "b", "c"], &[]);
    let f = Fulcrum::start(&format!(
        "pools:\n  one:\n    max_fails: 1\n    servers: [{{ addr: \"{}\" }}]\n  \
         off:\n    max_fails: 0\n    servers: [{{ addr: \"{}\" }}, {{ addr: \"{}\" }}]\n\
         routes:\n  - {{ prefix: /one, pool: one }}\n  - {{ prefix: /off, pool: off }}\n",
        b.addr("a"),
        b.addr("b"),
        b.addr("c"),
    ));
    b.control("a", "/__control/mode?close_after_read=1");
    b.control("b", "/__control/mode?close_after_read=1");
    for _ in 0..3 {
        assert_eq!(f.get("/one").status, 502);
        assert_eq!(f.get("/off").status, 200, "retried on c");
    }
    let one = f.server_status("one", b.addr("a"));
    assert_eq!(
        (one["state"].as_str(), one["failures"].as_u64()),
        (Some("up"), Some(3)),
        "{one}"
    );
    let off = f.server_status("off", b.addr("b"));
    assert_eq!(off["state"], "up", "{off}");
    assert!(off["failures"].as_u64().unwrap() >= 1, "{off}");
    // Still tried: the single server serves again as soon as it answers.
    b.control("a", "/__control/mode?close_after_read=0");
    assert_eq!(f.get("/one").status, 200);
    f.assert_in_flight_returns_to_zero();
}
