//! Graceful binary upgrade (Pingora's socket hand-over) under load: no
//! refused connection, no failed request, old processes leave on time, no
//! file descriptor leak; an invalid config leaves the old process serving.
//!
//! Upgrades run both through `deploy/fulcrum-upgrade` and through the same
//! steps written here in Rust (which, unlike the script, do not wait for the
//! old process to exit, so several old processes drain at once).

use crate::common::lifecycle::{
    append, fd_census, read_pid, sock_listening, to_log, wait_pid_file, Daemon, Load, LoadSpec,
};
use crate::common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const GRACE: u64 = 3;
const SHUTDOWN_TIMEOUT: u64 = 1;
/// Pingora keeps accepting for 5 s after handing the sockets over
/// (CLOSE_TIMEOUT in pingora-core server/mod.rs), then waits the grace
/// period, then gives its runtimes up to graceful_shutdown_timeout_seconds.
const HANDOVER_ACCEPT: u64 = 5;
/// Headroom for a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(3);

fn exit_bound() -> Duration {
    Duration::from_secs(HANDOVER_ACCEPT + GRACE + SHUTDOWN_TIMEOUT) + SLACK
}

fn pool_body(backends: &Backends) -> String {
    one_pool(
        "app",
        "/api",
        &[backends.addr("a"), backends.addr("b")],
        "read_timeout: 10s\n",
    )
}

/// Runs `deploy/fulcrum-upgrade`, its output (and the new daemon's) going to
/// `log`; returns whether it succeeded and what it printed.
fn run_script(d: &Daemon, extra: &[&str], log: &Path) -> (bool, String) {
    let before = std::fs::read_to_string(log).unwrap_or_default().len();
    let (out, err) = to_log(log);
    let mut child = Command::new("bash")
        .arg(repo_path("deploy/fulcrum-upgrade"))
        .arg("--config")
        .arg(&d.conf)
        .arg("--binary")
        .arg(FULCRUM)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("fulcrum-upgrade did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let printed: String = text[before..]
        .lines()
        .filter(|l| l.starts_with("fulcrum-upgrade:"))
        .map(|l| format!("{l}\n"))
        .collect();
    (status.success(), printed)
}

/// The script's steps in Rust, without waiting for the old process to exit.
/// Returns (old pid, new pid, when SIGQUIT was sent).
fn upgrade_by_steps(d: &Daemon) -> (u32, u32, Instant) {
    let check = Command::new(FULCRUM)
        .arg("-t")
        .arg("-c")
        .arg(&d.conf)
        .output()
        .unwrap();
    assert!(check.status.success(), "config check failed: {check:?}");
    let old = d.pid().expect("running pid");
    let _ = std::fs::remove_file(&d.sock);
    let mut new_fg = Command::new(FULCRUM)
        .args(["-u", "-d", "-c"])
        .arg(&d.conf)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(append(&d.log)))
        .stderr(Stdio::from(append(&d.log)))
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || sock_listening(&d.sock)),
        "new process never listened on the upgrade socket"
    );
    let quit_at = Instant::now();
    signal(old, "QUIT");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = new_fg.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "new process never took the sockets"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "new process failed: {status}");
    let new = wait_pid_file(&d.pid_file, Some(old), Duration::from_secs(10))
        .expect("pid file names the new process");
    d.pids.add(new);
    (old, new, quit_at)
}

/// Watches old processes and records how long after SIGQUIT each exited.
struct Exits(Vec<std::thread::JoinHandle<(u32, Option<Duration>)>>);

impl Exits {
    fn watch(&mut self, pid: u32, quit_at: Instant) {
        self.0.push(std::thread::spawn(move || {
            let limit = quit_at + Duration::from_secs(60);
            while Instant::now() < limit {
                if !pid_alive(pid) {
                    return (pid, Some(quit_at.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (pid, None)
        }));
    }

    fn collect(self) -> Vec<(u32, Option<Duration>)> {
        self.0.into_iter().map(|h| h.join().unwrap()).collect()
    }
}

#[test]
fn ten_upgrades_under_load_fail_no_request() {
    let backends = Backends::start(&["a", "b"], &["--threads", "2"]);
    let d = Daemon::start(GRACE, SHUTDOWN_TIMEOUT, &pool_body(&backends));
    let script_log = d.dir.path("script.log");
    let first = d.pid().unwrap();
    // A fresh start, before any traffic (the final one is counted after
    // the traffic stopped).
    let fresh = fd_census(first);

    let load = Load::start(
        d.addr,
        LoadSpec {
            keepalive: 8,
            fresh: 4,
            slow: 3,
            path: "/api/x".into(),
            slow_path: "/api/slow?delay_ms=2000".into(),
            pause: Duration::from_millis(10),
        },
    );
    std::thread::sleep(Duration::from_millis(1500));

    let mut exits = Exits(vec![]);
    let mut script_exit_lines = vec![];
    let mut newest = first;
    let started = Instant::now();
    for i in 1..=10 {
        let old = d.pid().unwrap();
        if i % 2 == 0 {
            let quit_guess = Instant::now();
            let (ok, printed) = run_script(&d, &[], &script_log);
            assert!(
                ok,
                "upgrade {i} by script failed:\n{printed}\nlog:\n{}",
                d.log_text()
            );
            newest = d.pid().unwrap();
            d.pids.add(newest);
            assert_ne!(newest, old);
            assert!(!pid_alive(old), "the script returned before {old} exited");
            exits.watch(old, quit_guess);
            script_exit_lines.extend(
                printed
                    .lines()
                    .filter(|l| l.contains("after SIGQUIT"))
                    .map(str::to_string),
            );
        } else {
            let (o, n, quit_at) = upgrade_by_steps(&d);
            assert_eq!(o, old);
            exits.watch(o, quit_at);
            newest = n;
            // Let the new process serve a little before the next hand-over.
            std::thread::sleep(Duration::from_millis(700));
        }
        assert!(
            try_request(d.addr, "GET", "/health", &[], b"").is_ok_and(|r| r.status == 200),
            "no /health after upgrade {i}"
        );
    }
    let upgrades_took = started.elapsed();
    let exit_times = exits.collect();
    let stats = load.stop();

    // The pid file names the newest process, which is the only one left.
    assert_eq!(read_pid(&d.pid_file), Some(newest));
    assert!(pid_alive(newest));
    for (pid, t) in &exit_times {
        let t = t.unwrap_or_else(|| panic!("old process {pid} never exited"));
        assert!(
            t <= exit_bound(),
            "old process {pid} took {t:?} to exit after SIGQUIT (bound {:?})",
            exit_bound()
        );
    }

    // Zero failures of any kind, and the slow requests all completed.
    let summary = stats.summary();
    assert_eq!(stats.failed.load(Relaxed), 0, "{summary}");
    assert_eq!(stats.refused.load(Relaxed), 0, "{summary}");
    assert!(stats.slow_ok.load(Relaxed) >= 10, "{summary}");
    assert_eq!(
        stats.slow_ok.load(Relaxed),
        stats.slow_sent.load(Relaxed),
        "{summary}"
    );
    // Every keepalive client was moved at least once per upgrade overall.
    assert!(stats.closed_by_server.load(Relaxed) >= 10, "{summary}");

    // No descriptor leak: the final process holds what a fresh start held,
    // TCP connections aside (clients, pooled upstream connections and health
    // checks come and go with traffic).
    std::thread::sleep(Duration::from_millis(300));
    let last = fd_census(newest);
    let (a, b) = (fresh.other_total() as i64, last.other_total() as i64);
    assert!(
        (b - a).abs() <= 2,
        "descriptors other than TCP connections: fresh start {a} {:?}, after 10 upgrades {b} {:?}",
        fresh.other,
        last.other
    );

    let mut times: Vec<f64> = exit_times
        .iter()
        .filter_map(|(_, t)| t.map(|t| t.as_secs_f64()))
        .collect();
    times.sort_by(f64::total_cmp);
    eprintln!(
        "upgrade figures: 10 upgrades in {:.1}s; requests served {} (slow {}), failed {}, refused {}, \
         keepalive connections closed by the server {}; SIGQUIT to exit: min {:.2}s max {:.2}s \
         (bound {:?}); fds: fresh {} {:?} (+{} tcp conns), final {} {:?} (+{} tcp conns)\nscript: {}",
        upgrades_took.as_secs_f64(),
        stats.ok.load(Relaxed),
        stats.slow_ok.load(Relaxed),
        stats.failed.load(Relaxed),
        stats.refused.load(Relaxed),
        stats.closed_by_server.load(Relaxed),
        times.first().unwrap_or(&0.0),
        times.last().unwrap_or(&0.0),
        exit_bound(),
        fresh.other_total(),
        fresh.other,
        fresh.tcp_connections,
        last.other_total(),
        last.other,
        last.tcp_connections,
        script_exit_lines.join(" | "),
    );
}

#[test]
fn an_invalid_config_leaves_the_old_process_serving() {
    let backends = Backends::start(&["a", "b"], &[]);
    let d = Daemon::start(GRACE, SHUTDOWN_TIMEOUT, &pool_body(&backends));
    let old = d.pid().unwrap();
    let good = std::fs::read_to_string(&d.conf).unwrap();
    let load = Load::start(
        d.addr,
        LoadSpec {
            keepalive: 2,
            fresh: 1,
            slow: 1,
            path: "/api/x".into(),
            slow_path: "/api/slow?delay_ms=2000".into(),
            pause: Duration::from_millis(10),
        },
    );

    // The file is edited in place with two mistakes.
    let bad = good.replace("    servers:", "    selection: fastest\n    servers:")
        + "  - { prefix: /nope, pool: missing }\n";
    std::fs::write(&d.conf, &bad).unwrap();

    // fulcrum -u itself refuses before it asks for the sockets.
    let direct = Command::new(FULCRUM)
        .args(["-u", "-d", "-c"])
        .arg(&d.conf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&direct.stderr);
    assert!(!direct.status.success());
    assert!(stderr.contains("unknown selection \"fastest\""), "{stderr}");
    assert!(stderr.contains("no pool named \"missing\""), "{stderr}");
    assert!(!d.sock.exists(), "the upgrade socket was touched");

    // So does the script, and it says so.
    let log = d.dir.path("script.log");
    let (ok, printed) = run_script(&d, &[], &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!ok, "the script reported success:\n{text}");
    assert!(text.contains("unknown selection \"fastest\""), "{text}");
    assert!(
        text.contains("the config is invalid; nothing was changed"),
        "{text}"
    );
    assert!(
        printed.contains("[1/7]") && !printed.contains("[3/7]"),
        "{printed}"
    );

    // A new process that never asks for the sockets (here: it listens on
    // another upgrade socket) is stopped after the bounded wait.
    std::fs::write(&d.conf, &good).unwrap();
    let elsewhere = d.dir.path("other.sock");
    let other_conf = d.dir.path("other.yaml");
    std::fs::write(
        &other_conf,
        good.replace(
            &d.sock.display().to_string(),
            &elsewhere.display().to_string(),
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (out, err) = to_log(&log);
    let status = Command::new("bash")
        .arg(repo_path("deploy/fulcrum-upgrade"))
        .arg("--config")
        .arg(&other_conf)
        .arg("--binary")
        .arg(FULCRUM)
        .args(["--pid-file"])
        .arg(&d.pid_file)
        .arg("--upgrade-sock")
        .arg(&d.sock)
        .args(["--socket-timeout", "2"])
        .stdout(out)
        .stderr(err)
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        text.contains("did not listen on") && text.contains("keeps serving untouched"),
        "{text}"
    );

    // The old process was never disturbed.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.pid(), Some(old));
    assert!(pid_alive(old));
    assert!(!d.log_text().contains("SIGQUIT"), "{}", d.log_text());
    let stats = load.stop();
    assert_eq!(stats.failed.load(Relaxed), 0, "{}", stats.summary());
    assert!(stats.ok.load(Relaxed) > 0);
    assert_eq!(
        stats.closed_by_server.load(Relaxed),
        0,
        "{}",
        stats.summary()
    );
}

#[test]
fn keepalive_clients_of_the_old_process_are_told_to_close() {
    let backends = Backends::start(&["a", "b"], &[]);
    let d = Daemon::start(GRACE, SHUTDOWN_TIMEOUT, &pool_body(&backends));
    let mut proxied = KeepAlive::connect(d.addr).unwrap();
    let mut local = KeepAlive::connect(d.addr).unwrap();
    let r = proxied.get("/api/x").unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    let r = local.get("/health").unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));

    let (old, _new, quit_at) = upgrade_by_steps(&d);
    // Well inside the 5 s during which Pingora still accepts on the old
    // process: its keepalive clients are already told to go.
    assert!(quit_at.elapsed() < Duration::from_secs(HANDOVER_ACCEPT));
    assert!(pid_alive(old));
    for (conn, path) in [(&mut proxied, "/api/x"), (&mut local, "/health")] {
        let r = conn.get(path).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"), "{path}");
        assert!(conn.get(path).is_err(), "{path}: connection still open");
    }
}

#[test]
fn the_upgrade_script_needs_a_running_process() {
    let backends = Backends::start(&["a"], &[]);
    let dir = TempDir::new("noproc");
    let conf = dir.path("f.yaml");
    std::fs::write(
        &conf,
        format!(
            "pid_file: {}\nupgrade_sock: {}\nlisten: [\"127.0.0.1:{}\"]\n{}",
            dir.path("f.pid").display(),
            dir.path("u.sock").display(),
            free_port(),
            one_pool("app", "/api", &[backends.addr("a")], "")
        ),
    )
    .unwrap();
    let out = Command::new("bash")
        .arg(repo_path("deploy/fulcrum-upgrade"))
        .arg("--config")
        .arg(&conf)
        .arg("--binary")
        .arg(FULCRUM)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("is fulcrum running?"), "{text}");
    assert!(!dir.path("u.sock").exists());
}
