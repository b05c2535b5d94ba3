//! Drain and undrain: `POST status.path + /servers/{pool}/{addr}/drain`.
//! A drained server gets no new requests while its in-flight ones finish;
//! undrain restores it. Only the allow list, and only with the bearer token;
//! without a configured token the write endpoints are off (405).

use crate::common::*;
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "s3cret-token";

fn conf(b: &Backends, token: Option<&str>) -> String {
    let token = match token {
        // Through ${VAR:-default} expansion, as a deployment would write it.
        Some(t) => format!("  admin_token: \"${{FULCRUM_TEST_UNSET_TOKEN_VAR:-{t}}}\"\n"),
        None => String::new(),
    };
    format!(
        "status:\n  path: /nginx-status\n  allow: [\"127.0.0.1/32\"]\n{token}pools:\n  svc:\n    servers:\n      - addr: \"{}\"\n      - addr: \"{}\"\n  other:\n    servers:\n      - addr: \"{}\"\nroutes:\n  - {{ prefix: /api, pool: svc }}\n  - {{ prefix: /other, pool: other }}\n",
        b.addr("a"),
        b.addr("b"),
        b.addr("c"),
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn post(f: &Fulcrum, path: &str, auth: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    request(f.addr, "POST", path, &headers, b"")
}

fn drained(f: &Fulcrum, pool: &str, addr: SocketAddr) -> bool {
    f.server_status(pool, addr)["drained"].as_bool().unwrap()
}

/// Which backend (by name) answered each of `n` requests.
fn who_answers(f: &Fulcrum, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let r = f.get(&format!("/api/req/{i}"));
            assert_eq!(r.status, 200, "{}", r.body);
            r.backend()
        })
        .collect()
}

#[test]
fn drained_server_gets_no_new_requests_and_in_flight_ones_finish() {
    let b = Backends::start(&["a", "b", "c"], &[]);
    let f = Fulcrum::start(&conf(&b, Some(TOKEN)));
    let auth = bearer(TOKEN);

    // A slow request occupies one server.
    let addr = f.addr;
    let slow = std::thread::spawn(move || get(addr, "/api/slow?delay_ms=2500"));
    assert!(wait_until(Duration::from_secs(10), || f.total_in_flight() == 1));
    let (busy_name, busy, idle_name) = if f.server_status("svc", b.addr("a"))["in_flight"] == 1 {
        ("a", b.addr("a"), "b")
    } else {
        ("b", b.addr("b"), "a")
    };

    // Drain it, naming it with an encoded colon.
    let path = format!(
        "/nginx-status/servers/svc/{}/drain",
        busy.to_string().replace(':', "%3A")
    );
    let r = post(&f, &path, Some(&auth));
    assert_eq!(r.status, 200, "{}", r.body);
    let doc = r.json();
    assert_eq!(doc["drained"], true);
    assert_eq!(doc["state"], "draining");
    assert_eq!(doc["in_flight"], 1, "the slow request is still in flight");
    assert!(drained(&f, "svc", busy));
    assert_eq!(f.server_state("svc", busy), "draining");

    // New requests all go to the other server.
    let served = who_answers(&f, 10);
    assert!(
        served.iter().all(|s| s == idle_name),
        "a drained server got new requests: {served:?}"
    );
    // The in-flight one finishes normally, on the drained server.
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), busy_name);
    assert_eq!(f.server_status("svc", busy)["in_flight"], 0);

    // Shown in the metrics and on the page.
    let m = prom::parse(&f.get("/nginx-status/metrics").body).unwrap();
    let l = [("pool", "svc"), ("server", &*busy.to_string())];
    assert_eq!(m.value("fulcrum_upstream_drained", &l), 1.0);
    assert_eq!(
        m.value(
            "fulcrum_upstream_state",
            &[l[0], l[1], ("state", "draining")]
        ),
        1.0
    );
    assert_eq!(
        m.value("fulcrum_pool_usable_servers", &[("pool", "svc")]),
        1.0
    );
    let page = f.get("/nginx-status/ui").body;
    assert!(
        page.contains(&format!(
            "data-pool=\"svc\" data-server=\"{busy}\" data-resolved=\"{busy}\" data-state=\"draining\""
        )),
        "page does not show the drain"
    );

    // A reload that keeps the server keeps the drain.
    signal(f.child.id(), "HUP");
    assert!(wait_until(Duration::from_secs(10), || {
        f.status_json()["generation"] == 2
    }));
    assert!(drained(&f, "svc", busy), "a reload lost the drain");
    assert!(who_answers(&f, 4).iter().all(|s| s == idle_name));

    // Undrain, naming it as written (plain colon): traffic returns.
    let r = post(
        &f,
        &format!("/nginx-status/servers/svc/{busy}/undrain"),
        Some(&auth),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["drained"], false);
    assert_eq!(f.server_state("svc", busy), "up");
    let served = who_answers(&f, 10);
    let back = served.iter().filter(|s| *s == busy_name).count();
    assert!(
        back >= 3,
        "undrained server should share the load again: {served:?}"
    );
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn write_endpoints_refuse_bad_tokens_and_outsiders_and_change_nothing() {
    let b = Backends::start(&["a", "b", "c"], &[]);
    let f = Fulcrum::start(&conf(&b, Some(TOKEN)));
    let a = b.addr("a");
    let path = format!("/nginx-status/servers/svc/{a}/drain");

    // No token, a wrong one, a token with another scheme.
    for auth in [
        None,
        Some(bearer("wrong")),
        Some(bearer(&format!("{TOKEN}x"))),
        Some(bearer("")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
    ] {
        let r = post(&f, &path, auth.as_deref());
        assert_eq!(r.status, 401, "{auth:?}: {}", r.body);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"fulcrum\"")
        );
        assert!(!drained(&f, "svc", a), "{auth:?} changed the state");
    }
    // The right token from outside the allow list (socket peer 127.0.0.2).
    let r = peer::request_from(
        "127.0.0.2",
        f.addr,
        "POST",
        &path,
        &[("Authorization", &bearer(TOKEN))],
    );
    assert_eq!(r.status, 403);
    assert!(!drained(&f, "svc", a), "an outsider changed the state");
    // Even with a forwarded header claiming to be inside.
    let r = peer::request_from(
        "127.0.0.2",
        f.addr,
        "POST",
        &path,
        &[
            ("Authorization", &bearer(TOKEN)),
            ("X-Forwarded-For", "127.0.0.1"),
            ("X-Real-IP", "127.0.0.1"),
        ],
    );
    assert_eq!(r.status, 403);
    assert!(!drained(&f, "svc", a));

    // Reads are GET/HEAD, writes are POST.
    let r = get(f.addr, &path);
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    assert!(!drained(&f, "svc", a));
    for p in [
        "/nginx-status/json",
        "/nginx-status/ui",
        "/nginx-status/metrics",
    ] {
        let r = post(&f, p, Some(&bearer(TOKEN)));
        assert_eq!(r.status, 405, "{p}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }

    // Unknown pool, unknown server, a server of another pool, unknown action.
    for p in [
        format!("/nginx-status/servers/nope/{a}/drain"),
        "/nginx-status/servers/svc/127.0.0.1:1/drain".to_string(),
        format!("/nginx-status/servers/svc/{}/drain", b.addr("c")),
        format!("/nginx-status/servers/svc/{a}/disable"),
        format!("/nginx-status/servers/svc/{a}"),
    ] {
        let r = post(&f, &p, Some(&bearer(TOKEN)));
        assert_eq!(r.status, 404, "{p}: {}", r.body);
    }

    // Nothing changed: both servers still take requests.
    for s in ["a", "b"] {
        assert_eq!(f.server_state("svc", b.addr(s)), "up");
    }
    let served = who_answers(&f, 10);
    assert!(served.iter().any(|s| s == "a") && served.iter().any(|s| s == "b"));

    // The scheme name is case-insensitive; then it works.
    let r = post(&f, &path, Some(&format!("bearer {TOKEN}")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(drained(&f, "svc", a));
}

#[test]
fn write_endpoints_are_off_without_a_token() {
    let b = Backends::start(&["a", "b", "c"], &[]);
    let f = Fulcrum::start(&conf(&b, None));
    let a = b.addr("a");
    for auth in [None, Some(bearer("anything")), Some(bearer(""))] {
        let r = post(
            &f,
            &format!("/nginx-status/servers/svc/{a}/drain"),
            auth.as_deref(),
        );
        assert_eq!(r.status, 405, "{auth:?}: {}", r.body);
        assert!(r.body.contains("admin_token"), "{}", r.body);
    }
    assert!(!drained(&f, "svc", a));
    // Reads stay available to the allow list.
    for p in [
        "/nginx-status",
        "/nginx-status/json",
        "/nginx-status/metrics",
        "/nginx-status/ui",
    ] {
        assert_eq!(f.get(p).status, 200, "{p}");
    }
}
