//! `status.path + /metrics`: valid Prometheus text (checked by a strict
//! parser of the exposition format, not by substrings), and its counters,
//! gauges and histograms move as requests, failures and retries happen.

use crate::common::*;
use prom::Exposition;
use std::net::SocketAddr;
use std::time::Duration;

fn scrape(f: &Fulcrum) -> Exposition {
    let r = f.get("/nginx-status/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    prom::parse(&r.body).unwrap_or_else(|e| panic!("invalid exposition: {e}\n{}", r.body))
}

/// The exposition once `settled` holds (waiting at most 5 s): a request is
/// counted at its end (log phase), a moment after its last byte left, and
/// possibly on the other worker thread than the scrape's.
fn scrape_when(f: &Fulcrum, settled: impl Fn(&Exposition) -> bool) -> Exposition {
    let mut m = scrape(f);
    wait_until(Duration::from_secs(5), || {
        m = scrape(f);
        settled(&m)
    });
    m
}

/// A loopback address where nothing listens (connect is refused).
fn dead_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

struct Setup {
    b: Backends,
    f: Fulcrum,
    a: String,
    dead: String,
    other: String,
    c: String,
    dead2: String,
}

fn setup() -> Setup {
    let b = Backends::start(&["a", "b", "c"], &[]);
    let (a, other, c) = (b.addr("a"), b.addr("b"), b.addr("c"));
    let (dead, dead2) = (dead_addr(), dead_addr());
    let conf = format!(
        r#"status:
  path: /nginx-status
  allow: ["127.0.0.1/32"]
pools:
  svc:
    max_fails: 0
    read_timeout: 500ms
    retry:
      on: [error, timeout, http_503]
    servers:
      - addr: "{a}"
      - addr: "{dead}"
  other:
    health_check: {{ type: http, path: /health, interval: 200ms, timeout: 1s, rise: 1, fall: 1 }}
    servers:
      - addr: "{other}"
  flaky:
    max_fails: 1
    fail_timeout: 60s
    servers:
      - addr: "{c}"
      - addr: "{dead2}"
routes:
  - {{ prefix: /api, pool: svc }}
  - {{ prefix: /other, pool: other }}
  - {{ prefix: /flaky, pool: flaky }}
"#
    );
    let f = Fulcrum::start(&conf);
    Setup {
        b,
        f,
        a: a.to_string(),
        dead: dead.to_string(),
        other: other.to_string(),
        c: c.to_string(),
        dead2: dead2.to_string(),
    }
}

fn srv<'a>(pool: &'a str, server: &'a str) -> [(&'a str, &'a str); 2] {
    [("pool", pool), ("server", server)]
}

fn with<'a>(l: [(&'a str, &'a str); 2], k: &'a str, v: &'a str) -> [(&'a str, &'a str); 3] {
    [l[0], l[1], (k, v)]
}

#[test]
fn every_family_is_there_with_its_type() {
    let s = setup();
    let m = scrape(&s.f);
    for (name, kind) in [
        ("fulcrum_build_info", "gauge"),
        ("fulcrum_connections_active", "gauge"),
        ("fulcrum_connections_reading", "gauge"),
        ("fulcrum_connections_writing", "gauge"),
        ("fulcrum_connections_waiting", "gauge"),
        ("fulcrum_connections_accepted_total", "counter"),
        ("fulcrum_connections_handled_total", "counter"),
        ("fulcrum_http_requests_total", "counter"),
        ("fulcrum_config_generation", "gauge"),
        ("fulcrum_config_last_reload_successful", "gauge"),
        ("fulcrum_config_last_reload_timestamp_seconds", "gauge"),
        ("fulcrum_config_reloads_total", "counter"),
        ("fulcrum_route_requests_total", "counter"),
        ("fulcrum_route_responses_total", "counter"),
        ("fulcrum_pool_servers", "gauge"),
        ("fulcrum_pool_usable_servers", "gauge"),
        ("fulcrum_upstream_requests_total", "counter"),
        ("fulcrum_upstream_responses_total", "counter"),
        ("fulcrum_upstream_failures_total", "counter"),
        ("fulcrum_upstream_retries_total", "counter"),
        ("fulcrum_upstream_in_flight", "gauge"),
        ("fulcrum_upstream_awaiting_header", "gauge"),
        ("fulcrum_upstream_active_healthy", "gauge"),
        ("fulcrum_upstream_passive_healthy", "gauge"),
        ("fulcrum_upstream_drained", "gauge"),
        ("fulcrum_upstream_state", "gauge"),
        ("fulcrum_upstream_response_time_seconds", "histogram"),
        ("fulcrum_upstream_connect_time_seconds", "histogram"),
    ] {
        m.family(name, kind);
    }
    // Every server of every pool, with pool and server labels.
    for (pool, server) in [
        ("svc", &s.a),
        ("svc", &s.dead),
        ("other", &s.other),
        ("flaky", &s.c),
        ("flaky", &s.dead2),
    ] {
        let l = srv(pool, server);
        assert_eq!(m.value("fulcrum_upstream_requests_total", &l), 0.0);
        assert_eq!(m.value("fulcrum_upstream_in_flight", &l), 0.0);
        assert_eq!(m.value("fulcrum_upstream_drained", &l), 0.0);
        assert_eq!(m.value("fulcrum_upstream_passive_healthy", &l), 1.0);
        assert_eq!(
            m.value("fulcrum_upstream_state", &with(l, "state", "up")),
            1.0
        );
        assert_eq!(
            m.value("fulcrum_upstream_state", &with(l, "state", "down")),
            0.0
        );
        assert_eq!(
            m.value("fulcrum_upstream_response_time_seconds_count", &l),
            0.0
        );
        assert_eq!(
            m.value(
                "fulcrum_upstream_response_time_seconds_bucket",
                &with(l, "le", "+Inf")
            ),
            0.0
        );
    }
    assert_eq!(m.value("fulcrum_config_generation", &[]), 1.0);
    assert_eq!(m.value("fulcrum_config_last_reload_successful", &[]), 1.0);
    assert_eq!(m.value("fulcrum_pool_servers", &[("pool", "flaky")]), 2.0);
    assert_eq!(
        m.value(
            "fulcrum_route_requests_total",
            &[("route", "/other"), ("pool", "other")]
        ),
        0.0
    );
    // Same rules as the other status pages.
    let head = request(s.f.addr, "HEAD", "/nginx-status/metrics", &[], b"");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(
        request(s.f.addr, "POST", "/nginx-status/metrics", &[], b"").status,
        405
    );
    let outsider = peer::request_from("127.0.0.2", s.f.addr, "GET", "/nginx-status/metrics", &[]);
    assert_eq!(outsider.status, 403);
}

#[test]
fn counters_move_with_requests_failures_and_retries() {
    let s = setup();
    let f = &s.f;
    let before = scrape(f);
    let (a, dead) = (srv("svc", &s.a), srv("svc", &s.dead));
    let route = [("route", "/api"), ("pool", "svc")];
    let delta =
        |m: &Exposition, name: &str, l: &[(&str, &str)]| m.value(name, l) - before.value(name, l);

    // Ten requests: the dead server is tried first now and then (connect
    // refused), and every such request is retried on the live one.
    for i in 0..10 {
        let r = f.get(&format!("/api/ok/{i}"));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let answered = |m: &Exposition| {
        ["2xx", "5xx"]
            .iter()
            .map(|&code| {
                delta(
                    m,
                    "fulcrum_route_responses_total",
                    &[route[0], route[1], ("code", code)],
                )
            })
            .sum::<f64>()
    };
    let m = scrape_when(f, |m| answered(m) >= 10.0);
    let refused = delta(
        &m,
        "fulcrum_upstream_failures_total",
        &with(dead, "kind", "connect"),
    );
    assert!(
        refused >= 1.0,
        "least_conn alternates, so the dead server was tried"
    );
    assert_eq!(delta(&m, "fulcrum_upstream_requests_total", &dead), refused);
    assert_eq!(delta(&m, "fulcrum_upstream_requests_total", &a), 10.0);
    assert_eq!(delta(&m, "fulcrum_upstream_retries_total", &a), refused);
    assert_eq!(delta(&m, "fulcrum_upstream_retries_total", &dead), 0.0);
    assert_eq!(
        delta(
            &m,
            "fulcrum_upstream_responses_total",
            &with(a, "code", "2xx")
        ),
        10.0
    );
    assert_eq!(
        delta(&m, "fulcrum_upstream_response_time_seconds_count", &a),
        10.0
    );
    assert!(delta(&m, "fulcrum_upstream_response_time_seconds_sum", &a) > 0.0);
    assert!(delta(&m, "fulcrum_upstream_connect_time_seconds_count", &a) >= 1.0);
    // The latency estimate exists once a server was measured, not before;
    // a failure is a penalty sample, so the dead server has a higher one.
    assert_eq!(
        before.get("fulcrum_upstream_response_time_ewma_seconds", &a),
        None
    );
    m.family("fulcrum_upstream_response_time_ewma_seconds", "gauge");
    let live = m.value("fulcrum_upstream_response_time_ewma_seconds", &a);
    assert!(live > 0.0);
    assert!(m.value("fulcrum_upstream_response_time_ewma_seconds", &dead) > live);
    assert_eq!(
        delta(&m, "fulcrum_upstream_connect_time_seconds_count", &dead),
        0.0,
        "a refused connection has no connect time"
    );
    assert_eq!(delta(&m, "fulcrum_route_requests_total", &route), 10.0);
    assert_eq!(
        delta(
            &m,
            "fulcrum_route_responses_total",
            &[route[0], route[1], ("code", "2xx")]
        ),
        10.0
    );
    // The scrape itself is a request on a new connection, so ≥ 11.
    assert!(delta(&m, "fulcrum_http_requests_total", &[]) >= 11.0);
    assert!(delta(&m, "fulcrum_connections_accepted_total", &[]) >= 11.0);
    assert_eq!(
        delta(&m, "fulcrum_connections_handled_total", &[]),
        delta(&m, "fulcrum_connections_accepted_total", &[])
    );

    // A timeout (read_timeout 500ms) and a status listed in retry.on.
    let r = f.get("/api/slow?delay_ms=3000");
    assert!(matches!(r.status, 502 | 504), "{} {}", r.status, r.body);
    let r = f.get("/api/err?status=503");
    assert!(matches!(r.status, 502 | 503), "{} {}", r.status, r.body);
    let m2 = scrape_when(f, |m| answered(m) >= 12.0);
    assert_eq!(
        delta(
            &m2,
            "fulcrum_upstream_failures_total",
            &with(a, "kind", "timeout")
        ),
        1.0
    );
    assert_eq!(
        delta(
            &m2,
            "fulcrum_upstream_failures_total",
            &with(a, "kind", "status")
        ),
        1.0
    );
    assert_eq!(
        delta(
            &m2,
            "fulcrum_upstream_responses_total",
            &with(a, "code", "5xx")
        ),
        1.0
    );
    assert_eq!(
        delta(
            &m2,
            "fulcrum_route_responses_total",
            &[route[0], route[1], ("code", "5xx")]
        ),
        2.0
    );
    let kinds: f64 = ["connect", "timeout", "invalid", "status"]
        .iter()
        .map(|k| m2.value("fulcrum_upstream_failures_total", &with(a, "kind", k)))
        .sum();
    let json = f.server_status("svc", s.a.parse().unwrap());
    assert_eq!(
        kinds,
        json["failures"].as_f64().unwrap(),
        "kinds add up to the failures the JSON status shows"
    );
    assert_eq!(m2.value("fulcrum_upstream_in_flight", &a), 0.0);
}

#[test]
fn gauges_follow_in_flight_health_and_reload() {
    let s = setup();
    let f = &s.f;
    let other = srv("other", &s.other);

    // In flight, and waiting for its header, while a slow request runs;
    // back to 0 after.
    let addr = f.addr;
    let slow = std::thread::spawn(move || get(addr, "/other/slow?delay_ms=1500"));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let m = scrape(f);
            m.value("fulcrum_upstream_in_flight", &other) == 1.0
                && m.value("fulcrum_upstream_awaiting_header", &other) == 1.0
        }),
        "in-flight and awaiting-header gauges never showed the slow request"
    );
    assert_eq!(slow.join().unwrap().status, 200);
    let m = scrape_when(f, |m| m.value("fulcrum_upstream_in_flight", &other) == 0.0);
    assert_eq!(m.value("fulcrum_upstream_in_flight", &other), 0.0);
    assert_eq!(m.value("fulcrum_upstream_awaiting_header", &other), 0.0);

    // Active health: fall 1 at a 200ms interval.
    s.b.control("b", "/__control/health?fail=1");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let m = scrape(f);
            m.value("fulcrum_upstream_active_healthy", &other) == 0.0
                && m.value("fulcrum_upstream_state", &with(other, "state", "unhealthy")) == 1.0
                && m.value("fulcrum_upstream_state", &with(other, "state", "up")) == 0.0
                && m.value("fulcrum_pool_usable_servers", &[("pool", "other")]) == 0.0
        }),
        "active health gauge never went to 0"
    );
    s.b.control("b", "/__control/health?fail=0");
    assert!(wait_until(Duration::from_secs(10), || {
        scrape(f).value("fulcrum_upstream_active_healthy", &other) == 1.0
    }));

    // Passive health: max_fails 1 marks the dead server of "flaky" failed.
    let dead2 = srv("flaky", &s.dead2);
    for i in 0..10 {
        assert_eq!(f.get(&format!("/flaky/{i}")).status, 200);
        if scrape(f).value("fulcrum_upstream_requests_total", &dead2) >= 1.0 {
            break;
        }
    }
    let m = scrape(f);
    assert_eq!(m.value("fulcrum_upstream_passive_healthy", &dead2), 0.0);
    assert_eq!(m.value("fulcrum_upstream_active_healthy", &dead2), 1.0);
    assert_eq!(
        m.value("fulcrum_upstream_state", &with(dead2, "state", "failed")),
        1.0
    );
    assert_eq!(
        m.value("fulcrum_pool_usable_servers", &[("pool", "flaky")]),
        1.0
    );

    // A SIGHUP reload of the same file is a new generation.
    signal(f.child.id(), "HUP");
    assert!(
        wait_until(Duration::from_secs(10), || {
            scrape(f).value("fulcrum_config_generation", &[]) == 2.0
        }),
        "generation did not move after SIGHUP:\n{}",
        f.log_text()
    );
    // Counters of servers that stay survive the reload.
    assert!(scrape(f).value("fulcrum_upstream_requests_total", &other) >= 1.0);
}

#[test]
fn the_parser_is_strict() {
    let ok = "# HELP x_total A counter.\n# TYPE x_total counter\nx_total{a=\"1\"} 3\n";
    assert!(prom::parse(ok).is_ok());
    for (bad, why) in [
        ("x_total 3", "no final newline"),
        ("# TYPE x counter\nx -1\n", "negative counter"),
        ("# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n", "duplicate series"),
        ("# TYPE x gauge\nx{a=1} 1\n", "unquoted label"),
        ("# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx{a=\"2\"} 1\n", "not contiguous"),
        ("x 1\n# TYPE x gauge\n", "TYPE after samples"),
        ("# TYPE x gauge\nx one\n", "bad value"),
        ("# TYPE 1x gauge\n", "bad name"),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "decreasing buckets",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
            "count differs from +Inf",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
            "no +Inf bucket",
        ),
    ] {
        assert!(prom::parse(bad).is_err(), "accepted ({why}): {bad:?}");
    }
}
