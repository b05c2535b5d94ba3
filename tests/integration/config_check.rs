//! `fulcrum -t`: accepts the shipped configs, rejects each invalid case with
//! the field path in the message, and reports every error at once.

use crate::common::*;
use std::process::Command;

fn check(conf: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = TempDir::new("check");
    let path = dir.path("c.yaml");
    std::fs::write(&path, conf).unwrap();
    check_file(&path, env)
}

fn check_file(path: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(FULCRUM);
    cmd.arg("-t")
        .arg("-c")
        .arg(path)
        .env_remove("MACHINE1_IP")
        .env_remove("MACHINE2_IP");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn shipped_configs_are_valid() {
    let ips = [("MACHINE1_IP", "10.0.0.1"), ("MACHINE2_IP", "10.0.0.2")];
    for f in [
        "conf/fulcrum.yaml",
        "conf/machine1.yaml",
        "conf/machine2.yaml",
    ] {
        let (ok, out) = check_file(&repo_path(f), &ips);
        assert!(ok, "{f}: {out}");
        assert!(out.contains("configuration OK"), "{f}: {out}");
    }
}

#[test]
fn machine_configs_name_the_unset_variable() {
    let (ok, out) = check_file(
        &repo_path("conf/machine1.yaml"),
        &[("MACHINE1_IP", "10.0.0.1")],
    );
    assert!(!ok);
    assert!(
        out.contains(
            "pools.user_service.servers[1].addr: environment variable MACHINE2_IP is not set"
        ),
        "{out}"
    );
}

const POOL: &str = "pools:\n  users:\n    servers: [{addr: \"127.0.0.1:3001\"}]\n";

#[test]
fn each_invalid_case_is_rejected_with_its_field_path() {
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{POOL}routes: [{{prefix: /a, pool: orders}}]\n"),
            "routes[0].pool: no pool named \"orders\"",
        ),
        (
            format!("{POOL}routes: [{{prefix: /a, pool: users}}, {{prefix: /a, pool: users}}]\n"),
            "routes[1].prefix: duplicate prefix \"/a\"",
        ),
        (
            format!("{POOL}routes: [{{prefix: api, pool: users}}]\n"),
            "routes[0].prefix: \"api\" must start with '/'",
        ),
        (
            "pools:\n  p:\n    servers: [{addr: \"not an address\"}]\n".into(),
            "pools.p.servers[0].addr: \"not an address\" is not host:port",
        ),
        (
            "pools:\n  p:\n    servers: [{weight: 1}]\n".into(),
            "pools.p.servers[0].addr: missing",
        ),
        (
            "pools:\n  p:\n    servers: [{addr: \"127.0.0.1:1\", weight: 0}]\n".into(),
            "pools.p.servers[0].weight: must be at least 1",
        ),
        (
            "pools:\n  p:\n    servers: []\n".into(),
            "pools.p.servers: a pool needs at least one server",
        ),
        (
            format!("{POOL}    fail_timeout: 10sec\n"),
            "pools.users.fail_timeout: invalid duration \"10sec\"",
        ),
        (
            "pools:\n  p:\n    servers: [{addr: \"${FULCRUM_TEST_UNSET}:80\"}]\n".into(),
            "pools.p.servers[0].addr: environment variable FULCRUM_TEST_UNSET is not set",
        ),
        (
            format!("{POOL}    selection: fastest\n"),
            "pools.users.selection: unknown selection \"fastest\"",
        ),
        (
            "pools:\n  p:\n    servers: [{addr: \"127.0.0.1:1\", wieght: 2}]\n".into(),
            "pools.p.servers[0].wieght: unknown field `wieght`",
        ),
        (format!("{POOL}rotues: []\n"), "rotues: unknown key"),
        (
            format!("{POOL}    host_header: \"a b\"\n"),
            "pools.users.host_header: \"a b\" is not a host name with an optional :port",
        ),
        (
            format!("{POOL}    host_header: \"api:99999\"\n"),
            "pools.users.host_header: \"api:99999\" is not a host name",
        ),
        (
            format!("{POOL}    host_header: \"user@api\"\n"),
            "pools.users.host_header: \"user@api\" is not a host name",
        ),
    ];
    for (conf, expected) in cases {
        let (ok, out) = check(&conf, &[]);
        assert!(!ok, "accepted:\n{conf}");
        assert!(
            out.contains(expected),
            "expected {expected:?} in:\n{out}\nfor:\n{conf}"
        );
        assert!(!out.contains("configuration OK"), "{out}");
    }
}

#[test]
fn every_error_is_listed() {
    let conf = "pools:\n  p:\n    selection: nope\n    servers: [{addr: bad}, {addr: \"127.0.0.1:1\", weight: 0}]\nroutes: [{prefix: x, pool: q}]\n";
    let (ok, out) = check(conf, &[]);
    assert!(!ok);
    for needle in [
        "pools.p.selection",
        "pools.p.servers[0].addr",
        "pools.p.servers[1].weight",
        "routes[0].prefix",
        "routes[0].pool",
    ] {
        assert!(out.contains(needle), "{needle} missing from:\n{out}");
    }
}

#[test]
fn a_missing_file_is_an_error() {
    let (ok, out) = check_file(std::path::Path::new("/nonexistent/fulcrum.yaml"), &[]);
    assert!(!ok);
    assert!(out.contains("cannot read"), "{out}");
}

#[test]
fn an_unknown_user_or_group_is_an_error_naming_the_field() {
    let (ok, text) = check(
        "listen: [\"127.0.0.1:1\"]\nuser: no-such-user-fulcrum\ngroup: no-such-group-fulcrum\n",
        &[],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("user: no such user \"no-such-user-fulcrum\""),
        "{text}"
    );
    assert!(
        text.contains("group: no such group \"no-such-group-fulcrum\""),
        "{text}"
    );
    // Existing accounts pass (Pingora switches to them when daemonizing).
    let (ok, text) = check("listen: [\"127.0.0.1:1\"]\nuser: root\ngroup: root\n", &[]);
    assert!(ok, "{text}");
}

#[test]
fn a_listen_address_in_use_stops_the_process_with_an_error_naming_it() {
    // Held by another socket (no SO_REUSEADDR listener can share it).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = TempDir::new("in-use");
    let conf = dir.path("c.yaml");
    std::fs::write(
        &conf,
        format!(
            "version: 1\npid_file: {}\nupgrade_sock: {}\nlisten: [\"{addr}\"]\n",
            dir.path("fulcrum.pid").display(),
            dir.path("upgrade.sock").display()
        ),
    )
    .unwrap();
    let log = dir.path("fulcrum.log");
    let (out, err) = crate::common::lifecycle::to_log(&log);
    let mut child = Command::new(FULCRUM)
        .arg("-c")
        .arg(&conf)
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    // Five tries half a second apart, as nginx; then the process exits.
    let mut status = None;
    wait_until(std::time::Duration::from_secs(15), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    stop_child(&mut child, std::time::Duration::from_secs(1));
    let text = std::fs::read_to_string(&log).unwrap();
    let status = status.unwrap_or_else(|| panic!("still running with {addr} taken:\n{text}"));
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("listen {addr}: Address already in use")),
        "{text}"
    );
    drop(taken);
}
