//! Operating fulcrum as an nginx operator would: the signals logrotate,
//! nginx habits and systemd send (none may end the process), `-s`, `-v`,
//! `-V`, `-T`, `-q`.

use crate::common::lifecycle::{Load, LoadSpec};
use crate::common::*;
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

fn start(log: &str) -> (Backends, Fulcrum) {
    let b = Backends::start(&["a"], &[]);
    let conf = format!(
        "access_log: {log}\naccess_log_format: json\n{}",
        one_pool("svc", "/", &[b.addr("a")], "")
    );
    (b, Fulcrum::start(&conf))
}

fn fulcrum(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(FULCRUM).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The request ids of the JSON access log lines in `path` of proxied
/// requests (fulcrum's own answers, /health among them, have none).
fn ids(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["request_id"].as_str().map(str::to_string)
        })
        .collect()
}

/// Two keepalive clients and one opening a connection per request.
fn light_load(addr: std::net::SocketAddr) -> Load {
    Load::start(
        addr,
        LoadSpec {
            keepalive: 2,
            fresh: 1,
            slow: 0,
            path: "/x".into(),
            slow_path: "/x".into(),
            pause: Duration::from_millis(2),
        },
    )
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// logrotate without `copytruncate`: the file is renamed, then SIGUSR1.
/// Every request answered under load is in exactly one of the two files,
/// and the lines after the signal are in the new one.
#[test]
fn usr1_reopens_the_access_log_under_load_without_losing_or_doubling_a_line() {
    let dir = TempDir::new("signals");
    let log = dir.path("access.log");
    let (_b, f) = start(&log.display().to_string());
    let load = light_load(f.addr);
    wait_until("lines in the log", Duration::from_secs(10), || {
        !ids(&log).is_empty()
    });
    let rotated = dir.path("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal(f.child.id(), "USR1");
    wait_until("the reopened log", Duration::from_secs(10), || {
        !ids(&log).is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    let stats = load.stop();
    let ok = stats.ok.load(Relaxed);
    assert_eq!(stats.failed.load(Relaxed), 0, "{}", stats.summary());
    // Let the writer write what is queued (it batches for 20 ms).
    let before = ids(&rotated);
    let mut after = ids(&log);
    wait_until("every line written", Duration::from_secs(5), || {
        after = ids(&log);
        (before.len() + after.len()) as u64 >= ok
    });
    let all: Vec<&String> = before.iter().chain(after.iter()).collect();
    let unique: HashSet<&String> = all.iter().copied().collect();
    assert_eq!(
        all.len() as u64,
        ok,
        "lines in both files against requests answered"
    );
    assert_eq!(unique.len(), all.len(), "a line written twice");
    assert!(!before.is_empty() && !after.is_empty());
    assert!(pid_alive(f.child.id()));
    assert!(f.log_text().contains("reopened"), "{}", f.log_text());
}

/// A reopen that fails keeps the old file and says why.
#[test]
fn a_log_that_cannot_be_reopened_keeps_the_old_file() {
    let dir = TempDir::new("signals");
    let sub = dir.path("logs");
    std::fs::create_dir(&sub).unwrap();
    let log = sub.join("access.log");
    let (_b, f) = start(&log.display().to_string());
    assert_eq!(f.get("/one").status, 200);
    wait_until("the first line", Duration::from_secs(5), || {
        ids(&log).len() == 1
    });
    // The directory goes away: the path cannot be opened again.
    let moved = dir.path("logs.old");
    std::fs::rename(&sub, &moved).unwrap();
    signal(f.child.id(), "USR1");
    wait_until("the error", Duration::from_secs(5), || {
        f.log_text().contains("cannot reopen")
    });
    assert_eq!(f.get("/two").status, 200);
    wait_until(
        "the second line in the old file",
        Duration::from_secs(5),
        || ids(&moved.join("access.log")).len() == 2,
    );
}

#[test]
fn usr2_winch_and_usr1_under_load_cost_no_request() {
    let (_b, f) = start("off");
    let load = light_load(f.addr);
    std::thread::sleep(Duration::from_millis(300));
    for sig in ["USR2", "WINCH", "USR1"] {
        signal(f.child.id(), sig);
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until("all three logged", Duration::from_secs(5), || {
        let t = f.log_text();
        t.contains("SIGUSR2 ignored") && t.contains("SIGWINCH ignored") && t.contains("SIGUSR1")
    });
    std::thread::sleep(Duration::from_millis(300));
    let stats = load.stop();
    assert!(stats.ok.load(Relaxed) > 0, "{}", stats.summary());
    assert_eq!(stats.failed.load(Relaxed), 0, "{}", stats.summary());
    assert!(pid_alive(f.child.id()));
    assert_eq!(f.get("/x").status, 200);
}

#[test]
fn dash_s_signals_the_instance_named_by_the_pid_file() {
    let (_b, mut f) = start("off");
    let conf = f.dir.path("fulcrum.yaml");
    let conf = conf.to_str().unwrap();
    let (ok, _, err) = fulcrum(&["-s", "reload", "-c", conf]);
    assert!(ok, "{err}");
    assert!(err.contains("sent reload (SIGHUP)"), "{err}");
    wait_until("the reload", Duration::from_secs(10), || {
        f.log_text().contains("SIGHUP: reloading")
    });
    let (ok, _, err) = fulcrum(&["-s", "reopen", "-c", conf]);
    assert!(ok && err.contains("SIGUSR1"), "{err}");
    wait_until("the reopen", Duration::from_secs(5), || {
        f.log_text().contains("SIGUSR1: reopening")
    });
    assert!(pid_alive(f.child.id()));
    let (ok, _, err) = fulcrum(&["-s", "quit", "-c", conf]);
    assert!(ok && err.contains("SIGTERM"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = f.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running after -s quit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn dash_s_without_a_running_fulcrum_is_an_error_and_signals_nothing() {
    let dir = TempDir::new("signals");
    let pid_file = dir.path("fulcrum.pid");
    let conf = dir.path("fulcrum.yaml");
    std::fs::write(
        &conf,
        format!(
            "pid_file: {}\nupgrade_sock: {}\n{}",
            pid_file.display(),
            dir.path("u.sock").display(),
            one_pool("svc", "/", &["127.0.0.1:1".parse().unwrap()], "")
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    // No pid file.
    let (ok, _, err) = fulcrum(&["-s", "reload", "-c", conf]);
    assert!(!ok && err.contains("no running fulcrum found"), "{err}");
    // A stale one: a pid that no longer runs.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(&pid_file, format!("{gone_pid}\n")).unwrap();
    let (ok, _, err) = fulcrum(&["-s", "reload", "-c", conf]);
    assert!(!ok && err.contains("stale pid file"), "{err}");
    // Another program's pid: it must not get the signal.
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(&pid_file, format!("{}\n", other.id())).unwrap();
    let (ok, _, err) = fulcrum(&["-s", "stop", "-c", conf]);
    assert!(!ok && err.contains("not fulcrum"), "{err}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        other.try_wait().unwrap().is_none(),
        "the other program was signalled"
    );
    other.kill().unwrap();
    other.wait().unwrap();
    // A pid file that does not hold a pid.
    std::fs::write(&pid_file, "hello\n").unwrap();
    let (ok, _, err) = fulcrum(&["-s", "reload", "-c", conf]);
    assert!(!ok && err.contains("is not a pid"), "{err}");
}

#[test]
fn version_test_and_dump_as_nginx() {
    let (ok, out, _) = fulcrum(&["-v"]);
    assert!(ok);
    assert_eq!(
        out,
        format!("fulcrum version: fulcrum/{}\n", env!("CARGO_PKG_VERSION"))
    );
    let (ok, out, _) = fulcrum(&["-V"]);
    assert!(ok);
    for field in [
        "git commit: ",
        "pingora: 0.9.1",
        "build profile: debug",
        "profile-guided: no",
    ] {
        assert!(out.contains(field), "{field:?} not in:\n{out}");
    }
    let dir = TempDir::new("signals");
    let conf = dir.path("f.yaml");
    std::fs::write(
        &conf,
        "status:\n  admin_token: \"${FULCRUM_TEST_TOKEN}\"\npools:\n  p:\n    servers: [{addr: \"${FULCRUM_TEST_HOST}:1\"}]\n",
    )
    .unwrap();
    let out = Command::new(FULCRUM)
        .args(["-T", "-c", conf.to_str().unwrap()])
        .env("FULCRUM_TEST_TOKEN", "s3cret-token")
        .env("FULCRUM_TEST_HOST", "127.0.0.1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("127.0.0.1:1"), "{stdout}");
    assert!(
        stdout.contains("********") && !stdout.contains("s3cret"),
        "{stdout}"
    );
    assert!(stderr.contains("OK"), "{stderr}");
    // -q: errors only.
    let out = Command::new(FULCRUM)
        .args(["-t", "-q", "-c", conf.to_str().unwrap()])
        .env("FULCRUM_TEST_TOKEN", "x")
        .env("FULCRUM_TEST_HOST", "127.0.0.1")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let (ok, _, err) = fulcrum(&["-t", "-q", "-c", conf.to_str().unwrap()]);
    assert!(!ok && err.contains("FULCRUM_TEST_TOKEN"), "{err}");
}

#[test]
fn error_log_settings_are_checked_and_log_files_must_open() {
    let dir = TempDir::new("signals");
    let pool = one_pool("svc", "/", &["127.0.0.1:1".parse().unwrap()], "");
    for (body, expected) in [
        (
            "error_log: {level: loud}\n",
            "error_log.level: \"loud\" is not one of error, warn, info, debug, trace",
        ),
        (
            "error_log: {format: xml}\n",
            "error_log.format: \"xml\" is not one of text, json",
        ),
        (
            "error_log: {paht: /tmp/x}\n",
            "error_log.paht: unknown field",
        ),
        (
            "access_log: /nonexistent-dir-fulcrum/a.log\n",
            "access_log: cannot open /nonexistent-dir-fulcrum/a.log",
        ),
        (
            "error_log: /nonexistent-dir-fulcrum/e.log\n",
            "error_log.path: cannot open /nonexistent-dir-fulcrum/e.log",
        ),
    ] {
        let conf = dir.path("f.yaml");
        std::fs::write(&conf, format!("{body}{pool}")).unwrap();
        let (ok, out, err) = fulcrum(&["-t", "-c", conf.to_str().unwrap()]);
        assert!(!ok, "accepted: {body}{out}");
        assert!(err.contains(expected), "{expected:?} not in:\n{err}");
    }
}

#[test]
fn the_error_log_goes_to_its_file_as_json_and_is_reopened_on_usr1() {
    let dir = TempDir::new("signals");
    let log = dir.path("error.log");
    let b = Backends::start(&["a"], &[]);
    let conf = format!(
        "error_log: {{path: {}, format: json, level: info}}\naccess_log: off\n{}",
        log.display(),
        one_pool("svc", "/", &[b.addr("a")], "")
    );
    let f = Fulcrum::start(&conf);
    let lines = |p: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    wait_until("the start line", Duration::from_secs(5), || {
        !lines(&log).is_empty()
    });
    let first = &lines(&log)[0];
    for k in ["time", "level", "target", "message"] {
        assert!(first.get(k).is_some(), "{k} missing: {first}");
    }
    // Not on stderr any more.
    assert!(!f.log_text().contains("SIGHUP to pid"), "{}", f.log_text());
    let rotated = dir.path("error.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal(f.child.id(), "USR1");
    wait_until("the reopened file", Duration::from_secs(5), || {
        lines(&log).iter().any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("reopened"))
        })
    });
    assert!(lines(&rotated)
        .iter()
        .any(|l| l["message"].as_str().is_some_and(|m| m.contains("SIGUSR1"))));
}

#[test]
fn under_systemd_each_stderr_line_carries_its_syslog_priority() {
    let dir = TempDir::new("signals");
    let port = free_port();
    let conf = dir.path("f.yaml");
    // A server that refuses connections: its failure is logged at error.
    std::fs::write(
        &conf,
        format!(
            "pid_file: {}\nupgrade_sock: {}\nlisten: [\"127.0.0.1:{port}\"]\naccess_log: off\n{}",
            dir.path("f.pid").display(),
            dir.path("u.sock").display(),
            one_pool("svc", "/", &["127.0.0.1:1".parse().unwrap()], "")
        ),
    )
    .unwrap();
    let err = dir.path("stderr");
    let mut child = Command::new(FULCRUM)
        .args(["-c", conf.to_str().unwrap()])
        .env("JOURNAL_STREAM", "8:12345")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("fulcrum up", Duration::from_secs(10), || {
        try_request(addr, "GET", "/health", &[], b"").is_ok()
    });
    assert_eq!(get(addr, "/x").status, 502);
    let text = || std::fs::read_to_string(&err).unwrap_or_default();
    wait_until("an error line", Duration::from_secs(5), || {
        text().contains("<3>")
    });
    stop_child(&mut child, Duration::from_secs(5));
    let t = text();
    assert!(
        t.lines().all(|l| l.starts_with('<')),
        "a line without priority:\n{t}"
    );
    assert!(t.lines().any(|l| l.starts_with("<6>")), "{t}");
}

/// A full disk: requests are served, the failure is logged (not once per
/// line), and lines resume once there is room again. Needs root (mount).
#[test]
fn a_full_disk_loses_lines_not_requests_and_logging_resumes() {
    let dir = TempDir::new("signals");
    let logs = dir.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&logs)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "this test mounts a tmpfs: run the suite as root (deploy/test.sh)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(logs.clone());
    let log = logs.join("access.log");
    let (_b, f) = start(&log.display().to_string());
    assert_eq!(f.get("/before").status, 200);
    wait_until("the first line", Duration::from_secs(5), || {
        ids(&log).len() == 1
    });
    // Fill the file system.
    let filler = logs.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 512 * 1024]);
    for i in 0..300 {
        assert_eq!(
            f.get(&format!("/full/{i}")).status,
            200,
            "request {i} while the disk is full"
        );
    }
    wait_until("the write failure logged", Duration::from_secs(5), || {
        f.log_text().contains("write failed")
    });
    let reports = f.log_text().matches("write failed").count();
    assert!(reports <= 2, "logged {reports} times for 300 lost lines");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(f.get("/after").status, 200);
    wait_until("lines again", Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("/after")
    });
}
