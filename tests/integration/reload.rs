//! SIGHUP reload: pools and routes change in place under load without a
//! failed request; a removed server finishes what it has; an invalid file
//! changes nothing; settings only an upgrade can apply are reported.

use crate::common::lifecycle::{rewrite_config, wait_log, Load, LoadSpec};
use crate::common::*;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const READY: &str = "reloads pools and routes from";

/// One pool `app` at `/api` with `(addr, weight)` servers.
fn body(servers: &[(SocketAddr, u32)]) -> String {
    let mut s = String::from("pools:\n  app:\n    read_timeout: 10s\n    servers:\n");
    for (a, w) in servers {
        s.push_str(&format!("      - {{ addr: \"{a}\", weight: {w} }}\n"));
    }
    s.push_str("routes:\n  - { prefix: /api, pool: app }\n");
    s
}

fn start(servers: &[(SocketAddr, u32)]) -> Fulcrum {
    let f = Fulcrum::start(&body(servers));
    assert!(
        wait_log(&f.log, READY, Duration::from_secs(10)),
        "{}",
        f.log_text()
    );
    f
}

fn hup_and_wait(f: &Fulcrum, needle: &str) {
    signal(f.child.id(), "HUP");
    assert!(
        wait_log(&f.log, needle, Duration::from_secs(10)),
        "no {needle:?} in the log:\n{}",
        f.log_text()
    );
}

fn generation(f: &Fulcrum) -> u64 {
    f.status_json()["generation"].as_u64().unwrap()
}

/// `server` names of `n` sequential requests.
fn split(f: &Fulcrum, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = f.get("/api/split");
        assert_eq!(r.status, 200, "{}", r.body);
        *m.entry(r.backend()).or_default() += 1;
    }
    m
}

#[test]
fn sighup_under_load_reweights_adds_and_removes_servers() {
    let b = Backends::start(&["a", "b", "c"], &["--threads", "2"]);
    let (a_addr, b_addr, c_addr) = (b.addr("a"), b.addr("b"), b.addr("c"));
    let f = start(&[(a_addr, 1), (b_addr, 1)]);
    let load = Load::start(
        f.addr,
        LoadSpec {
            keepalive: 4,
            fresh: 2,
            slow: 0,
            path: "/api/x".into(),
            slow_path: String::new(),
            pause: Duration::from_millis(10),
        },
    );

    // Slow requests until one is in flight on b, the server about to go
    // (the backend logs a request when it arrives, then waits 2 s).
    let mut slow = vec![];
    let mut on_b = false;
    for n in 0..10 {
        let addr = f.addr;
        let path = format!("/api/slow?delay_ms=2000&n={n}");
        let tag = format!("&n={n}\"");
        slow.push(std::thread::spawn(move || {
            try_request(addr, "GET", &path, &[], b"").map(|r| (r.status, r.backend()))
        }));
        let arrived = |name: &str| b.stats(name).contains(&tag);
        assert!(
            wait_until(Duration::from_secs(2), || arrived("a") || arrived("b")),
            "slow request {n} never reached a backend"
        );
        if arrived("b") {
            on_b = true;
            break;
        }
    }
    assert!(on_b, "no slow request in flight on b");
    let a_requests_before = f.server_status("app", a_addr)["requests"].as_u64().unwrap();

    // a: weight 1 -> 3, b removed, c added.
    rewrite_config(&f, &body(&[(a_addr, 3), (c_addr, 1)]));
    hup_and_wait(&f, "generation 2 running");
    let log = f.log_text();
    let summary = log
        .lines()
        .find(|l| l.contains("generation 2 running"))
        .unwrap();
    assert!(
        summary.contains(&format!("servers added: app/{c_addr}"))
            && summary.contains(&format!("removed (draining): app/{b_addr}"))
            && summary.contains(&format!("changed: app/{a_addr}")),
        "{summary}"
    );

    // b gets nothing new; its slow request finishes with 200.
    std::thread::sleep(Duration::from_millis(300));
    let b_seen = b.requests("b");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(b.requests("b"), b_seen, "b got requests after its removal");
    let results: Vec<(u16, String)> = slow
        .into_iter()
        .map(|t| t.join().unwrap().expect("slow request failed"))
        .collect();
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    assert!(results.iter().any(|(_, name)| name == "b"), "{results:?}");

    let stats = load.stop();
    assert_eq!(stats.failed.load(Relaxed), 0, "{}", stats.summary());
    assert!(stats.ok.load(Relaxed) > 100, "{}", stats.summary());

    // The new generation: a kept its counters, b is gone, c is new. With
    // the load stopped and every request answered, fulcrum's count for a is
    // the backend's own: the requests of both generations.
    assert_eq!(generation(&f), 2);
    f.assert_in_flight_returns_to_zero();
    let a_now = f.server_status("app", a_addr);
    assert_eq!(a_now["weight"], 3);
    assert!(a_requests_before > 0, "a had no requests before the reload");
    assert_eq!(
        a_now["requests"].as_u64().unwrap(),
        b.requests("a"),
        "fulcrum's count for a against a's own ({a_requests_before} before the reload): {a_now}"
    );
    let doc = f.status_json();
    let servers: Vec<String> = doc["pools"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["resolved"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(servers, vec![a_addr.to_string(), c_addr.to_string()]);

    // The new split: 3:1 between a and c, none to b.
    let m = split(&f, 40);
    let (na, nc) = (
        m.get("a").copied().unwrap_or(0),
        m.get("c").copied().unwrap_or(0),
    );
    assert!(!m.contains_key("b"), "{m:?}");
    assert!((28..=32).contains(&na) && na + nc == 40, "{m:?}");
}

#[test]
fn sighup_with_an_invalid_config_changes_nothing() {
    let b = Backends::start(&["a", "b"], &[]);
    let (a_addr, b_addr) = (b.addr("a"), b.addr("b"));
    let f = start(&[(a_addr, 1), (b_addr, 1)]);
    assert_eq!(generation(&f), 1);

    let bad = body(&[(a_addr, 1), (b_addr, 0)])
        .replace("    servers:", "    selection: fastest\n    servers:")
        + "  - { prefix: /nope, pool: missing }\n";
    rewrite_config(&f, &bad);
    hup_and_wait(&f, "error(s); still running generation 1");

    // Every error on its own line, at error level.
    let log = f.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("reload of"))
        .collect();
    for needle in [
        "unknown selection \"fastest\"",
        "servers[1].weight",
        "no pool named \"missing\"",
    ] {
        assert_eq!(
            errors.iter().filter(|l| l.contains(needle)).count(),
            1,
            "{needle}: {errors:#?}"
        );
    }

    // Nothing changed: same generation, same servers, routes still work.
    assert_eq!(generation(&f), 1);
    assert_eq!(f.server_status("app", b_addr)["weight"], 1);
    let m = split(&f, 10);
    assert_eq!((m.get("a"), m.get("b")), (Some(&5), Some(&5)), "{m:?}");
    assert_eq!(f.get("/nope").status, 404);

    // A fixed file is taken by the next SIGHUP.
    rewrite_config(&f, &body(&[(a_addr, 1)]));
    hup_and_wait(&f, "generation 2 running");
    assert_eq!(generation(&f), 2);
}

#[test]
fn sighup_reports_settings_that_need_an_upgrade() {
    let b = Backends::start(&["a"], &[]);
    let f = start(&[(b.addr("a"), 1)]);
    let path = f.dir.path("fulcrum.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let other = free_port();
    let changed = text
        .replace("threads: 2", "threads: 3")
        .replace(
            &format!("127.0.0.1:{}", f.addr.port()),
            &format!("127.0.0.1:{other}"),
        )
        .replace("prefix: /api,", "prefix: /v2,");
    std::fs::write(&path, changed).unwrap();
    hup_and_wait(&f, "generation 2 running");

    let log = f.log_text();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("requires an upgrade"))
        .collect();
    assert!(
        warns.iter().any(|l| l.contains("threads: 2 -> 3")),
        "{warns:#?}"
    );
    assert!(
        warns
            .iter()
            .any(|l| l.contains(&format!("listen: [{}] -> [127.0.0.1:{other}]", f.addr))),
        "{warns:#?}"
    );
    assert_eq!(warns.len(), 2, "{warns:#?}");
    // The routes changed; the sockets did not.
    assert_eq!(f.get("/v2/x").status, 200);
    assert_eq!(f.get("/api/x").status, 404);
    assert!(try_request(
        format!("127.0.0.1:{other}").parse().unwrap(),
        "GET",
        "/health",
        &[],
        b""
    )
    .is_err());
}
