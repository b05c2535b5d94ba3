//! /health, the stub_status page (byte-compatible with nginx), its method and
//! allow-list rules, and the JSON status.

use crate::common::*;

fn conf(b: &Backends, allow: &str) -> String {
    format!(
        "status:\n  path: /nginx-status\n  allow: {allow}\n{}",
        one_pool("svc", "/api", &[b.addr("a"), b.addr("b")], "")
    )
}

#[test]
fn health_is_answered_by_fulcrum_itself() {
    let b = Backends::start(&["a", "b"], &[]);
    let f = Fulcrum::start(&conf(&b, "[\"127.0.0.1/32\"]"));
    let r = f.get("/health");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(b.requests("a") + b.requests("b"), 0);
}

#[test]
fn stub_status_matches_nginx_byte_for_byte() {
    let b = Backends::start(&["a", "b"], &[]);
    let f = Fulcrum::start(&conf(&b, "[\"127.0.0.1/32\", \"::1/128\"]"));
    for _ in 0..3 {
        assert_eq!(f.get("/api/x").status, 200);
    }
    let r = f.get("/nginx-status");
    assert_eq!(r.status, 200);
    let re = regex::Regex::new(
        r"\AActive connections: (\d+) \nserver accepts handled requests\n (\d+) (\d+) (\d+) \nReading: (\d+) Writing: (\d+) Waiting: (\d+) \n\z",
    )
    .unwrap();
    let c = re
        .captures(&r.body)
        .unwrap_or_else(|| panic!("not stub_status: {:?}", r.body));
    let n = |i: usize| c[i].parse::<u64>().unwrap();
    assert!(n(1) >= 1, "this connection is active");
    assert!(n(2) >= 4 && n(3) == n(2), "accepts/handled: {}", r.body);
    assert!(n(4) >= 4, "requests: {}", r.body);
    assert_eq!(
        n(1),
        n(5) + n(6) + n(7),
        "active = reading + writing + waiting"
    );
    assert!(n(6) >= 1, "this request is being written");
    let head = request(f.addr, "HEAD", "/nginx-status", &[], b"");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
}

#[test]
fn stub_status_rejects_other_methods_with_405() {
    let b = Backends::start(&["a", "b"], &[]);
    let f = Fulcrum::start(&conf(&b, "[\"127.0.0.1/32\"]"));
    for m in ["POST", "PUT", "DELETE"] {
        let r = request(f.addr, m, "/nginx-status", &[], b"");
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
}

#[test]
fn clients_outside_allow_get_403_whatever_they_claim() {
    let b = Backends::start(&["a", "b"], &[]);
    let f = Fulcrum::start(&conf(&b, "[\"10.0.0.0/8\"]"));
    for path in ["/nginx-status", "/nginx-status/json"] {
        let r = request(
            f.addr,
            "GET",
            path,
            &[("X-Forwarded-For", "10.1.2.3"), ("X-Real-IP", "10.1.2.3")],
            b"",
        );
        assert_eq!(r.status, 403, "{path}");
    }
    assert_eq!(f.get("/health").status, 200, "health is for everyone");
}

#[test]
fn json_lists_every_pool_and_server() {
    let b = Backends::start(&["a", "b"], &[]);
    let f = Fulcrum::start(&conf(&b, "[\"127.0.0.1/32\"]"));
    for _ in 0..4 {
        f.get("/api/x");
    }
    let doc = f.status_json();
    let pools = doc["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0]["name"], "svc");
    let servers = pools[0]["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    let mut total = 0;
    for s in servers {
        assert_eq!(s["weight"], 1);
        assert_eq!(s["in_flight"], 0);
        assert_eq!(s["failures"], 0);
        assert_eq!(s["state"], "up");
        total += s["requests"].as_u64().unwrap();
    }
    assert_eq!(total, 4);
}

#[test]
fn stub_status_counts_connections_reading_a_header_and_idle_ones() {
    use std::io::Write;
    let b = Backends::start(&["a", "b"], &[]);
    let f = Fulcrum::start(&conf(&b, "[\"127.0.0.1/32\"]"));
    // (reading, writing, waiting) as seen by a request of its own (writing 1).
    let counts = || {
        let body = f.get("/nginx-status").body;
        let last = body.lines().nth(3).unwrap_or_default().to_string();
        let n: Vec<u64> = last
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (n[0], n[1], n[2], body)
    };
    let mut half = crate::common::raw::connect(f.addr, std::time::Duration::from_secs(10));
    let _silent = crate::common::raw::connect(f.addr, std::time::Duration::from_secs(10));
    half.write_all(b"GET /api/x HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    let settles_to = |expected: (u64, u64, u64)| {
        wait_until(std::time::Duration::from_secs(5), || {
            let (r, w, idle, _) = counts();
            (r, w, idle) == expected
        })
    };
    assert!(
        settles_to((1, 1, 1)),
        "half a header: Reading 1, the silent connection Waiting: {}",
        counts().3
    );
    half.write_all(b"\r\n").unwrap();
    let mut reader = std::io::BufReader::new(half.try_clone().unwrap());
    let r = read_response(&mut reader, false).unwrap();
    assert_eq!(r.status, 200);
    // The request is counted until its end (log phase), a moment after its
    // last byte left, possibly on another thread than the status request.
    assert!(settles_to((0, 1, 2)), "answered, now idle: {}", counts().3);
}
