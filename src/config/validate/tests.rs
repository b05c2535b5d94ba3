//! The validation tests: a good document, and each invalid case with its
//! field path.

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "MACHINE1_IP" => Some("10.0.0.1".into()),
        "MACHINE2_IP" => Some("10.0.0.2".into()),
        _ => None,
    }
}

const GOOD: &str = r#"
version: 1
threads: 2
listen: ["127.0.0.1:8080"]
pools:
  users:
    selection: least_conn
    max_fails: 3
    fail_timeout: 10s
    retry: { tries: 2, on: [error, timeout, http_503] }
    health_check: { type: http, path: /health, expect_status: [200-299, 301], interval: 500ms, rise: 2, fall: 3 }
    servers:
      - addr: "${MACHINE1_IP}:3001"
        weight: 3
      - { addr: "${MACHINE2_IP}:3011", backup: true, max_fails: 0 }
routes:
  - { prefix: /api/users/, pool: users, strip_prefix: true }
"#;

fn errors_of(doc: &str) -> Vec<String> {
    match from_str(doc, &env) {
        Ok(_) => vec![],
        Err(e) => e.0,
    }
}

fn assert_rejects(doc: &str, path: &str, needle: &str) {
    let errs = errors_of(doc);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(path) && e.contains(needle)),
        "expected an error at {path:?} containing {needle:?}, got {errs:#?}"
    );
}

#[test]
fn a_good_document_becomes_the_model() {
    let l = from_str(GOOD, &env).unwrap();
    let c = l.config;
    assert_eq!(l.server.threads, 2);
    assert_eq!(c.pools.len(), 1);
    let p = &c.pools[0];
    assert_eq!(p.servers[0].addr, "10.0.0.1:3001".parse().unwrap());
    assert_eq!(p.servers[0].weight, 3);
    assert_eq!(p.servers[0].max_fails, 3);
    assert_eq!(p.servers[1].max_fails, 0);
    assert!(p.servers[1].backup);
    assert_eq!(p.retry.tries, 2);
    assert!(p.retry.on.http_503 && p.retry.on.error && !p.retry.on.http_500);
    let hc = p.health_check.as_ref().unwrap();
    assert_eq!(hc.interval, Duration::from_millis(500));
    assert_eq!(
        hc.kind,
        CheckKind::Http {
            path: "/health".into(),
            expect_status: vec![(200, 299), (301, 301)]
        }
    );
    assert_eq!(c.routes[0].prefix, "/api/users");
    assert!(c.routes[0].strip_prefix);
    assert_eq!(c.status.path, "/nginx-status");
    assert_eq!(c.access_log, AccessLogTarget::Stdout);
}

#[test]
fn rejects_each_invalid_case_with_its_path() {
    let base = "pools:\n  users:\n    servers: [{addr: \"127.0.0.1:1\"}]\n";
    assert_rejects(
        &format!("{base}routes: [{{prefix: /a, pool: orders}}]"),
        "routes[0].pool",
        "no pool named \"orders\"",
    );
    assert_rejects(
        &format!("{base}routes: [{{prefix: /a, pool: users}}, {{prefix: /a/, pool: users}}]"),
        "routes[1].prefix",
        "duplicate prefix",
    );
    assert_rejects(
        &format!("{base}routes: [{{prefix: a, pool: users}}]"),
        "routes[0].prefix",
        "must start with '/'",
    );
    assert_rejects(
        "pools:\n  p:\n    servers: [{addr: \"nonsense\"}]\n",
        "pools.p.servers[0].addr",
        "host:port",
    );
    assert_rejects(
        "pools:\n  p:\n    servers: [{weight: 2}]\n",
        "pools.p.servers[0].addr",
        "missing",
    );
    assert_rejects(
        "pools:\n  p:\n    servers: [{addr: \"127.0.0.1:1\", weight: 0}]\n",
        "pools.p.servers[0].weight",
        "at least 1",
    );
    assert_rejects(
        "pools:\n  p:\n    servers: []\n",
        "pools.p.servers",
        "at least one server",
    );
    assert_rejects(
        "pools:\n  p: {}\n",
        "pools.p.servers",
        "at least one server",
    );
    assert_rejects(
        &format!("{base}    fail_timeout: 10 seconds\n"),
        "pools.users.fail_timeout",
        "invalid duration",
    );
    assert_rejects(
        "pools:\n  p:\n    servers: [{addr: \"${NOPE}:1\"}]\n",
        "pools.p.servers[0].addr",
        "NOPE is not set",
    );
    assert_rejects(
        &format!("{base}    selection: fastest\n"),
        "pools.users.selection",
        "unknown selection \"fastest\"",
    );
    assert_rejects(
        "pools:\n  p:\n    servers: [{addr: \"127.0.0.1:1\", weigth: 2}]\n",
        "pools.p.servers[0]",
        "unknown field `weigth`",
    );
    assert_rejects(
        &format!("{base}    retyr: {{}}\n"),
        "pools.users",
        "unknown field `retyr`",
    );
    assert_rejects(&format!("{base}statsu: {{}}\n"), "statsu", "unknown key");
    assert_rejects("status: {pth: /x}\n", "status", "unknown field `pth`");
    assert_rejects("listen: [\"8080\"]\n", "listen[0]", "not an ip:port");
    assert_rejects(
        &format!("{base}    retry: {{on: [error, http_418]}}\n"),
        "pools.users.retry.on[1]",
        "http_418",
    );
    assert_rejects(
        &format!("{base}    health_check: {{expect_status: [\"300-200\"]}}\n"),
        "pools.users.health_check.expect_status[0]",
        "empty",
    );
    assert_rejects(
        "threads: many\n",
        "(pingora settings).threads",
        "invalid type",
    );
}

#[test]
fn ewma_and_p2c_with_decay_and_default_rtt() {
    let base = "pools:\n  p:\n    servers: [{addr: \"127.0.0.1:1\"}]\n";
    let l = from_str(base, &env).unwrap();
    let p = &l.config.pools[0];
    assert_eq!(p.selection, Selection::LeastConn);
    assert_eq!(p.decay, Duration::from_secs(10));
    assert_eq!(p.default_rtt, Duration::from_millis(1));
    let doc = format!("{base}    selection: ewma\n    decay: 500ms\n    default_rtt: 20ms\n");
    let p = &from_str(&doc, &env).unwrap().config.pools[0];
    assert_eq!(p.selection, Selection::Ewma);
    assert_eq!(p.decay, Duration::from_millis(500));
    assert_eq!(p.default_rtt, Duration::from_millis(20));
    let doc = format!("{base}    selection: p2c\n");
    assert_eq!(
        from_str(&doc, &env).unwrap().config.pools[0].selection,
        Selection::P2c
    );
    assert_rejects(
        &format!("{base}    decay: 0s\n"),
        "pools.p.decay",
        "greater than 0",
    );
    assert_rejects(
        &format!("{base}    decay: soon\n"),
        "pools.p.decay",
        "invalid duration",
    );
    assert_rejects(
        &format!("{base}    default_rtt: 0ms\n"),
        "pools.p.default_rtt",
        "greater than 0",
    );
    assert_rejects(
        &format!("{base}    selection: fastest\n"),
        "pools.p.selection",
        "least_conn, round_robin, random, ewma, p2c",
    );
    assert_rejects(
        &format!("{base}    decya: 1s\n"),
        "pools.p",
        "unknown field `decya`",
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let doc = "pools:\n  p:\n    selection: x\n    servers: [{addr: bad}, {addr: \"127.0.0.1:1\", weight: 0}]\nroutes: [{prefix: nope, pool: q}]\n";
    let errs = errors_of(doc);
    assert!(errs.len() >= 5, "{errs:#?}");
}

#[test]
fn limits_have_nginx_defaults_and_checked_values() {
    let d = from_str("", &env).unwrap().config.limits;
    assert_eq!(d, LimitsConfig::default());
    assert_eq!(d.client_max_body_size, 1 << 20);
    assert_eq!(d.keepalive_timeout, Duration::from_secs(75));
    let l = from_str(
        "limits:\n  max_header_size: 8k\n  max_header_count: 50\n  client_max_body_size: 0\n  \
         client_header_timeout: 5s\n  client_body_timeout: 500ms\n  keepalive_timeout: 0s\n  \
         send_timeout: 7s\n  max_connections: 1000\n",
        &env,
    )
    .unwrap()
    .config
    .limits;
    assert_eq!(
        l,
        LimitsConfig {
            max_header_size: 8192,
            max_header_count: 50,
            client_max_body_size: 0,
            client_header_timeout: Duration::from_secs(5),
            client_body_timeout: Duration::from_millis(500),
            keepalive_timeout: Duration::ZERO,
            send_timeout: Duration::from_secs(7),
            max_connections: 1000,
        }
    );
    assert_rejects(
        "limits: {max_header_size: 2m}\n",
        "limits.max_header_size",
        "out of range",
    );
    assert_rejects(
        "limits: {max_header_size: 100}\n",
        "limits.max_header_size",
        "out of range",
    );
    assert_rejects(
        "limits: {max_header_count: 300}\n",
        "limits.max_header_count",
        "out of range",
    );
    assert_rejects(
        "limits: {client_max_body_size: 1mb}\n",
        "limits.client_max_body_size",
        "invalid size",
    );
    assert_rejects(
        "limits: {client_header_timeout: 0s}\n",
        "limits.client_header_timeout",
        "greater than 0",
    );
    assert_rejects(
        "limits: {client_body_timeout: 1 minute}\n",
        "limits.client_body_timeout",
        "invalid duration",
    );
    assert_rejects("limits: {max_conections: 5}\n", "limits", "unknown field");
    assert_rejects(
        "limits: {max_connections: -1}\n",
        "limits.max_connections",
        "invalid value",
    );
}

#[test]
fn rejected_pingora_keys_are_errors_that_give_the_reason() {
    for (key, why) in crate::config::REJECTED_PINGORA_KEYS {
        let errs = errors_of(&format!("{key}: 1\n"));
        assert_eq!(errs, vec![format!("{key}: {why}")], "{key}");
    }
    assert_rejects(
        "listener_tasks_per_fd: 2\n",
        "listener_tasks_per_fd",
        "no effect unless work_stealing is true",
    );
    let l = from_str("listener_tasks_per_fd: 2\nwork_stealing: true\n", &env).unwrap();
    assert_eq!(l.server.listener_tasks_per_fd, 2);
    assert!(l.server.work_stealing);
    let l = from_str("upstream_keepalive_pool_size: 7\nmax_retries: 3\n", &env).unwrap();
    assert_eq!(l.server.upstream_keepalive_pool_size, 7);
    assert!(!l.server.work_stealing, "fulcrum's default");
}

const POOL: &str = "pools:\n  p:\n    servers: [{addr: \"127.0.0.1:1\"}]\n";

#[test]
fn listen_entries_are_addresses_or_mappings_with_their_own_routes() {
    let doc = format!(
        "listen:\n  - \"127.0.0.1:8080\"\n  - {{ addr: \"127.0.0.1:8081\", http2: true, routes: [{{prefix: /x, pool: p}}] }}\n{POOL}routes: [{{prefix: /, pool: p}}]\n"
    );
    let c = from_str(&doc, &env).unwrap().config;
    assert_eq!(c.listen.len(), 2);
    assert!(!c.listen[0].http2 && c.listen[0].routes.is_none());
    assert!(c.listen[1].http2 && c.listen[1].tls.is_none());
    assert_eq!(c.listen[1].routes.as_ref().unwrap()[0].prefix, "/x");

    assert_rejects(
        &format!("listen: [{{http2: true}}]\n{POOL}"),
        "listen[0].addr",
        "required",
    );
    assert_rejects(
        &format!("listen: [{{addr: \"127.0.0.1:1\", routes: [{{prefix: /x, pool: q}}]}}]\n{POOL}"),
        "listen[0].routes[0].pool",
        "no pool named",
    );
    assert_rejects(
        &format!("listen: [{{addr: \"127.0.0.1:1\", routes: []}}]\n{POOL}"),
        "listen[0].routes",
        "at least one route",
    );
    assert_rejects(
        &format!("listen: [{{addr: \"127.0.0.1:1\", tls: {{}}}}]\n{POOL}"),
        "listen[0].tls.certificates",
        "at least one certificate",
    );
    assert_rejects(
        &format!(
            "listen: [{{addr: \"127.0.0.1:1\", tls: {{certificates: [{{cert: /x}}]}}}}]\n{POOL}"
        ),
        "listen[0].tls.certificates[0].key",
        "required",
    );
    assert_rejects(
        &format!("listen: [{{addr: \"127.0.0.1:1\", tcp: 1}}]\n{POOL}"),
        "listen[0]",
        "unknown field",
    );
}

#[test]
fn a_pools_protocol_and_tls_are_checked_together() {
    let pool =
        |extra: &str| format!("pools:\n  p:\n{extra}    servers: [{{addr: \"127.0.0.1:1\"}}]\n");
    let c = from_str(&pool("    protocol: h2c\n"), &env).unwrap().config;
    assert_eq!(c.pools[0].protocol, UpstreamProtocol::H2c);
    let c = from_str(
        &pool("    tls: { verify: false, sni: api.internal }\n    protocol: h2\n"),
        &env,
    )
    .unwrap()
    .config;
    let tls = c.pools[0].tls.as_ref().unwrap();
    assert!(!tls.verify);
    assert_eq!(tls.sni.as_deref(), Some("api.internal"));
    assert!(
        c.pools[0].servers[0].tls,
        "servers use the pool's tls by default"
    );

    assert_rejects(&pool("    protocol: h2\n"), "pools.p.protocol", "needs tls");
    assert_rejects(
        &pool("    tls: {}\n    protocol: h2c\n"),
        "pools.p.protocol",
        "without tls",
    );
    assert_rejects(
        &pool("    protocol: http3\n"),
        "pools.p.protocol",
        "not one of",
    );
    assert_rejects(
        &pool("    tls: { sni: \"a b\" }\n"),
        "pools.p.tls.sni",
        "not a host name",
    );
    assert_rejects(
        &pool("    tls: { client_cert: /x.pem }\n"),
        "pools.p.tls.client_key",
        "required",
    );
    assert_rejects(
        &pool("    tls: { ca: /nonexistent/ca.pem }\n"),
        "pools.p.tls.ca",
        "cannot read",
    );
    assert_rejects(
        &pool("    tls: { verify: 1 }\n"),
        "pools.p.tls",
        "invalid type",
    );
}
