//! deploy/install.sh against a scratch root (`--prefix DIR --no-systemd`):
//! it validates before switching, installs, starts fulcrum; run again with
//! nothing changed it does nothing; with a changed config it upgrades the
//! running process gracefully (no failed request); with an invalid config it
//! changes nothing.

use crate::common::*;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn install(prefix: &Path, config: &Path) -> (bool, String) {
    let out = Command::new(repo_path("deploy/install.sh"))
        .arg("--config")
        .arg(config)
        .arg("--binary")
        .arg(FULCRUM)
        .arg("--prefix")
        .arg(prefix)
        .arg("--no-systemd")
        .output()
        .expect("run install.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Stops whatever process the pid file names when the test ends.
struct PidFileGuard(std::path::PathBuf);

impl Drop for PidFileGuard {
    fn drop(&mut self) {
        if let Some(pid) = read_pid(&self.0) {
            signal(pid, "INT");
            wait_until(Duration::from_secs(5), || !pid_alive(pid));
            signal(pid, "KILL");
        }
    }
}

#[test]
fn install_starts_then_is_idempotent_then_upgrades_gracefully() {
    let b = Backends::start(&["a", "b"], &[]);
    let dir = TempDir::new("install");
    let prefix = dir.path("root");
    let port = free_port();
    let pid_file = dir.path("run/fulcrum.pid");
    let _guard = PidFileGuard(pid_file.clone());
    let conf = |weight: u32| {
        format!(
            "version: 1\nthreads: 2\npid_file: {}\nupgrade_sock: {}\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\nerror_log: {}\nlisten: [\"127.0.0.1:{port}\"]\naccess_log: off\npools:\n  svc:\n    servers:\n      - {{addr: \"{}\", weight: {weight}}}\n      - {{addr: \"{}\"}}\nroutes:\n  - {{prefix: /, pool: svc}}\n",
            pid_file.display(),
            dir.path("run/upgrade.sock").display(),
            dir.path("error.log").display(),
            b.addr("a"),
            b.addr("b"),
        )
    };
    let src = dir.path("fulcrum.yaml");
    std::fs::write(&src, conf(1)).unwrap();
    std::fs::create_dir_all(dir.path("run")).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // First install: files in place, fulcrum started.
    let (ok, out) = install(&prefix, &src);
    assert!(ok, "{out}");
    for f in [
        "usr/local/bin/fulcrum",
        "usr/local/bin/fulcrum-upgrade",
        "etc/fulcrum/fulcrum.yaml",
        "etc/fulcrum/fulcrum.env",
    ] {
        assert!(prefix.join(f).exists(), "{f} not installed:\n{out}");
    }
    assert!(
        !prefix.join("etc/systemd/system/fulcrum.service").exists(),
        "--no-systemd installs no unit"
    );
    assert!(out.contains("starting fulcrum"), "{out}");
    let first = read_pid(&pid_file).expect("pid file after start");
    assert!(wait_until(Duration::from_secs(10), || try_request(
        addr,
        "GET",
        "/health",
        &[],
        b""
    )
    .is_ok_and(|r| r.status == 200)));

    // Second install, nothing changed: nothing happens.
    let (ok, out) = install(&prefix, &src);
    assert!(ok, "{out}");
    assert!(out.contains("nothing changed"), "{out}");
    assert!(!out.contains("installed "), "{out}");
    assert_eq!(read_pid(&pid_file), Some(first));

    // Changed config under load: graceful upgrade, zero failed requests.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                match try_request(addr, "GET", "/x", &[], b"") {
                    Ok(r) if r.status == 200 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    std::fs::write(&src, conf(3)).unwrap();
    let (ok, out) = install(&prefix, &src);
    assert!(ok, "{out}");
    assert!(out.contains("graceful upgrade"), "{out}");
    let second = read_pid(&pid_file).unwrap();
    assert_ne!(second, first, "a new process serves after the upgrade");
    assert!(
        wait_until(Duration::from_secs(15), || !pid_alive(first)),
        "old process exited"
    );

    // Invalid config: refused before anything changes.
    std::fs::write(&src, conf(0)).unwrap();
    let (ok, out) = install(&prefix, &src);
    assert!(!ok, "an invalid config must be refused:\n{out}");
    assert!(out.contains("weight"), "the error names the field:\n{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(read_pid(&pid_file), Some(second));
    let installed = std::fs::read_to_string(prefix.join("etc/fulcrum/fulcrum.yaml")).unwrap();
    assert!(
        installed.contains("weight: 3"),
        "the installed config is the last good one"
    );

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("install upgrade: {sent} requests, {failed} failed");
    assert!(sent > 20, "the load ran ({sent} requests)");
    assert_eq!(failed, 0, "failed requests during install/upgrade");
}
