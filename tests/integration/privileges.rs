//! Pingora's `user`/`group` keys: started as root with `-d`, fulcrum binds a
//! port below 1024, then runs as `nobody:nogroup`; it serves, writes its
//! access log (opened before the switch), and a graceful upgrade run as root
//! hands over to a new daemon that is unprivileged again, with no failed
//! request; a root daemon without `user` says that it stays root.
//!
//! Needs root; fails with a clear message otherwise.

use crate::common::lifecycle::{run_logged, wait_pid_file, Daemon, Load, LoadSpec, Pids};
use crate::common::*;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// A loopback port below 1024 that is free now (as root we can bind it).
fn free_privileged_port() -> u16 {
    (600..1000)
        .rev()
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("no free port in 600..1000 on 127.0.0.1")
}

/// (real uid, real gid) of a running process, from /proc.
fn ids(pid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u32 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        let all: Vec<u32> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        // Real, effective, saved and filesystem ids all switched.
        assert!(all.iter().all(|v| *v == all[0]), "{line}");
        all[0]
    };
    (field("Uid:"), field("Gid:"))
}

fn id_of(flag: &str, name: &str) -> u32 {
    let out = Command::new("id").args([flag, name]).output().unwrap();
    assert!(out.status.success(), "id {flag} {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn binds_below_1024_as_root_then_runs_as_the_configured_user_across_an_upgrade() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root: it binds a port below 1024 and switches user"
    );
    let (nobody, nogroup) = (id_of("-u", "nobody"), id_of("-g", "nobody"));
    let group_name = String::from_utf8(
        Command::new("id")
            .args(["-gn", "nobody"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let group_name = group_name.trim();

    let b = Backends::start(&["a"], &[]);
    let dir = TempDir::new("privileges");
    // The unprivileged old process connects to the new one's upgrade socket
    // in here during an upgrade.
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let port = free_privileged_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (conf, pid_file, log, access) = (
        dir.path("fulcrum.yaml"),
        dir.path("fulcrum.pid"),
        dir.path("fulcrum.log"),
        dir.path("access.log"),
    );
    let pids = Pids::new(&conf.to_string_lossy());
    std::fs::write(
        &conf,
        format!(
            "version: 1\nthreads: 2\npid_file: {}\nupgrade_sock: {}\n\
             grace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\n\
             user: nobody\ngroup: {group_name}\nlisten: [\"{addr}\"]\naccess_log: {}\n{}",
            pid_file.display(),
            dir.path("upgrade.sock").display(),
            access.display(),
            one_pool("app", "/api", &[b.addr("a")], ""),
        ),
    )
    .unwrap();

    let status = run_logged(Command::new(FULCRUM).args(["-d", "-c"]).arg(&conf), &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "fulcrum -d failed:\n{}", log_text());
    let first = wait_pid_file(&pid_file, None, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no pid file; log:\n{}", log_text()));
    pids.add(first);
    assert!(
        wait_until(Duration::from_secs(10), || try_request(
            addr,
            "GET",
            "/health",
            &[],
            b""
        )
        .is_ok_and(|r| r.status == 200)),
        "no /health on port {port}; log:\n{}",
        log_text()
    );
    assert_eq!(ids(first), (nobody, nogroup), "the daemon did not switch");
    let r = get(addr, "/api/x");
    assert_eq!((r.status, r.backend()), (200, "a".to_string()));
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&access)
            .is_ok_and(|t| t.contains("\"GET /api/x\" 200"))),
        "the access log (root-owned, opened before the switch) got no line; log:\n{}",
        log_text()
    );

    // A graceful upgrade, run as root as systemd's ExecReload does, under load.
    let load = Load::start(
        addr,
        LoadSpec {
            keepalive: 2,
            fresh: 2,
            slow: 0,
            path: "/api/x".into(),
            slow_path: "/api/x".into(),
            pause: Duration::from_millis(2),
        },
    );
    let upgrade = run_logged(
        Command::new("bash")
            .arg(repo_path("deploy/fulcrum-upgrade"))
            .arg("--config")
            .arg(&conf)
            .arg("--binary")
            .arg(FULCRUM),
        &log,
    );
    let second = wait_pid_file(&pid_file, Some(first), Duration::from_secs(10));
    if let Some(p) = second {
        pids.add(p);
    }
    let stats = load.stop();
    assert!(
        upgrade.success(),
        "fulcrum-upgrade failed; log:\n{}",
        log_text()
    );
    let second = second.expect("the pid file names the new daemon");
    assert_eq!(
        ids(second),
        (nobody, nogroup),
        "the new daemon did not switch"
    );
    assert!(!pid_alive(first), "the old daemon is still running");
    println!("privileges: upgrade under load: {}", stats.summary());
    assert_eq!(stats.failed.load(Relaxed), 0, "{}", stats.summary());
    assert!(stats.ok.load(Relaxed) > 0, "{}", stats.summary());
    assert_eq!(get(addr, "/api/x").status, 200);
}

#[test]
fn a_root_daemon_without_user_says_it_stays_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    let b = Backends::start(&["a"], &[]);
    let d = Daemon::start(1, 1, &one_pool("app", "/", &[b.addr("a")], ""));
    let pid = d.pid().expect("daemon pid");
    assert_eq!(ids(pid).0, 0);
    assert!(
        d.log_text()
            .contains("running as root: set `user:` and `group:`"),
        "{}",
        d.log_text()
    );
}
