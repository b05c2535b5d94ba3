//! Forwarded headers reach the backend; X-Request-Id is generated or kept,
//! and returned to the client; Host is kept.

mod common;
use common::*;

fn setup() -> (Backends, Fulcrum) {
    let b = Backends::start(&["a"], &[]);
    let f = Fulcrum::start(&one_pool("svc", "/", &[b.addr("a")], ""));
    (b, f)
}

#[test]
fn forwarded_headers_arrive_at_the_backend() {
    let (_b, f) = setup();
    let r = request(
        f.addr,
        "GET",
        "/x",
        &[("Host", "shop.example"), ("X-Forwarded-For", "203.0.113.7")],
        b"",
    );
    let h = &r.json()["headers"];
    assert_eq!(
        h["x-forwarded-for"], "203.0.113.7, 127.0.0.1",
        "client's list plus the peer"
    );
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(
        h["host"].as_str().unwrap().contains("shop.example") || h["host"] == "shop.example",
        "{h}"
    );
    let plain = f.get("/y").json();
    assert_eq!(plain["headers"]["x-forwarded-for"], "127.0.0.1");
}

#[test]
fn bodies_pass_through_uncompressed_whatever_the_client_accepts() {
    // nginx without `gzip on`: Accept-Encoding goes to the backend as sent,
    // and its answer comes back byte for byte.
    let (_b, f) = setup();
    let r = request(
        f.addr,
        "GET",
        "/z",
        &[("Accept-Encoding", "gzip, br, zstd")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None, "{:?}", r.headers);
    assert_eq!(
        r.header("content-length").map(str::to_string),
        Some(r.body.len().to_string()),
        "{:?}",
        r.headers
    );
    assert_eq!(r.json()["headers"]["accept-encoding"], "gzip, br, zstd");
}

#[test]
fn request_id_is_generated_and_returned() {
    let (_b, f) = setup();
    let r1 = f.get("/x");
    let r2 = f.get("/x");
    let id1 = r1
        .header("x-request-id")
        .expect("returned to the client")
        .to_string();
    assert_eq!(
        r1.json()["headers"]["x-request-id"],
        id1.as_str(),
        "same id upstream"
    );
    assert_ne!(
        Some(id1.as_str()),
        r2.header("x-request-id"),
        "ids are unique"
    );
}

#[test]
fn client_request_id_round_trips_if_safe() {
    let (_b, f) = setup();
    let r = request(f.addr, "GET", "/x", &[("X-Request-Id", "abc-123.def")], b"");
    assert_eq!(r.header("x-request-id"), Some("abc-123.def"));
    assert_eq!(r.json()["headers"]["x-request-id"], "abc-123.def");
    // Sent twice: the first is kept and the server gets it once.
    let r = request(
        f.addr,
        "GET",
        "/x",
        &[("X-Request-Id", "first-1"), ("X-Request-Id", "second-2")],
        b"",
    );
    assert_eq!(r.header("x-request-id"), Some("first-1"));
    assert_eq!(r.json()["headers"]["x-request-id"], "first-1");
    let long = "a".repeat(300);
    for bad in ["has space", "semi;colon", long.as_str()] {
        let r = request(f.addr, "GET", "/x", &[("X-Request-Id", bad)], b"");
        let id = r.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert_eq!(r.json()["headers"]["x-request-id"], id);
    }
}

#[test]
fn access_log_lists_client_method_path_status_pool_upstream_and_id() {
    let (b, f) = setup();
    let r = request(
        f.addr,
        "GET",
        "/logged?q=1",
        &[("X-Request-Id", "log-me-1")],
        b"",
    );
    assert_eq!(r.status, 200);
    let a = b.addr("a").to_string();
    assert!(
        wait_until(std::time::Duration::from_secs(5), || f
            .log_text()
            .lines()
            .any(|l| l.contains("id=log-me-1"))),
        "no access log line in:\n{}",
        f.log_text()
    );
    let line = f
        .log_text()
        .lines()
        .find(|l| l.contains("id=log-me-1"))
        .unwrap()
        .to_string();
    for part in [
        "127.0.0.1 ",
        "\"GET /logged?q=1\" 200",
        "pool=svc",
        &format!("upstream={a}"),
        "upstream_status=200",
        "upstream_time=",
        "total=",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
}
