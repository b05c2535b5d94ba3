//! Prefix routing through the real proxy: longest prefix, segment boundary,
//! 404 without a route, strip_prefix, and paths that try to leave a prefix.

use crate::common::*;

fn setup() -> (Backends, Fulcrum) {
    let b = Backends::start(&["api", "users", "static"], &[]);
    let conf = format!(
        "pools:\n  api:\n    servers: [{{addr: \"{}\"}}]\n  users:\n    servers: [{{addr: \"{}\"}}]\n  static:\n    servers: [{{addr: \"{}\"}}]\nroutes:\n  - {{prefix: /api, pool: api}}\n  - {{prefix: /api/users, pool: users}}\n  - {{prefix: /static/, pool: static, strip_prefix: true}}\n",
        b.addr("api"),
        b.addr("users"),
        b.addr("static")
    );
    let f = Fulcrum::start(&conf);
    (b, f)
}

#[test]
fn longest_prefix_wins_on_segment_boundaries() {
    let (_b, f) = setup();
    for (path, backend) in [
        ("/api/users", "users"),
        ("/api/users/7", "users"),
        ("/api/users?q=1", "users"),
        ("/api/usersX", "api"),
        ("/api/orders/1", "api"),
        ("/api", "api"),
    ] {
        let r = f.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.backend(), backend, "{path}");
    }
    let echoed = f.get("/api/users?q=1").json();
    assert_eq!(
        echoed["uri"], "/api/users?q=1",
        "path and query arrive unchanged"
    );
}

#[test]
fn no_route_is_404_with_a_short_body() {
    let (_b, f) = setup();
    for path in ["/", "/apix", "/other/api/users"] {
        let r = f.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.body.len() < 100 && r.body.contains("no route"),
            "{:?}",
            r.body
        );
    }
}

#[test]
fn strip_prefix_removes_the_prefix_and_keeps_the_query() {
    let (_b, f) = setup();
    let r = f.get("/static/css/site.css?v=3");
    assert_eq!(r.backend(), "static");
    assert_eq!(r.json()["uri"], "/css/site.css?v=3");
    assert_eq!(f.get("/static").json()["uri"], "/");
}

#[test]
fn dot_segments_are_resolved_and_cannot_leave_the_prefix() {
    let (b, f) = setup();
    let r = f.get("/api/users/./7");
    assert_eq!(
        (r.backend().as_str(), r.json()["path"].as_str().unwrap()),
        ("users", "/api/users/7")
    );
    let before = b.requests("api") + b.requests("users");
    for path in [
        "/api/users/../orders",
        "/api/users/%2e%2e/orders",
        "/../etc/passwd",
    ] {
        assert_eq!(f.get(path).status, 400, "{path}");
    }
    assert_eq!(
        b.requests("api") + b.requests("users"),
        before,
        "rejected paths reach no backend"
    );
}
