//! The systemd unit under a real systemd (issue 27 item 5): the packaged
//! `Type=notify` unit (fulcrum's `sd_notify`, lifecycle/notify.rs) and the
//! `Type=forking` one it replaced, each started, upgraded twice with
//! `systemctl reload` (deploy/fulcrum-upgrade) under steady load, sent
//! SIGHUP, stopped, and started with its address taken; the figures are
//! printed (docs/operations.md: systemd).
//!
//! systemd runs as PID 1 of a PID and mount namespace of its own
//! (`unshare`), with a tmpfs on `/run` and a named cgroup hierarchy of no
//! controllers; the network namespace is the host's, so the load reaches
//! fulcrum on loopback. The units are the packaged one
//! (`deploy/debian/fulcrum.service`) with the test's paths, no
//! dependencies on other units, no environment file, and output to a file
//! (there is no journal); the two differ only in `Type=` and
//! `NotifyAccess=`. Every hardening line stays. Killing the namespace's
//! PID 1 ends every process in it.
//!
//! Needs root and systemd (`/lib/systemd/systemd`); fails with a clear
//! message otherwise. Takes about 40 s.

use crate::common::lifecycle::{Load, LoadSpec};
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SYSTEMD: &str = "/lib/systemd/systemd";
/// Where the test's directory appears inside the namespace (a bind mount:
/// the units' `PrivateTmp=` would hide `/tmp`).
const INSIDE: &str = "/run/fulcrum-test";
/// The packaged unit's runtime directory (`RuntimeDirectory=fulcrum`), on
/// the namespace's own `/run`.
const RUN_DIR: &str = "/run/fulcrum";
const GRACE: u64 = 1;
const SHUTDOWN_TIMEOUT: u64 = 1;

fn require_root_and_systemd() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root: it runs systemd as PID 1 of a PID and mount namespace \
         (unshare); run the suite as root (deploy/test.sh under sudo)"
    );
    assert!(
        Path::new(SYSTEMD).exists(),
        "this test needs systemd ({SYSTEMD}; Debian's package systemd) and util-linux \
         (unshare, nsenter)"
    );
}

/// systemd as PID 1 of a namespace; killed (and with it every process it
/// started) on drop.
struct Systemd {
    unshare: Child,
    /// systemd's pid in the host's PID namespace.
    pid: u32,
    dir: TempDir,
    _shared: Shared,
}

impl Systemd {
    fn start(dir: TempDir) -> Systemd {
        let shared = shared();
        let units = dir.path("units");
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(units.join("test.target"), "[Unit]\nDescription=test\n").unwrap();
        // Mount points for the binary and the upgrade script, which the
        // units reach under INSIDE whatever the checkout's path.
        std::fs::write(dir.path("fulcrum"), "").unwrap();
        std::fs::write(dir.path("fulcrum-upgrade"), "").unwrap();
        let script = format!(
            "set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd {INSIDE}
mount -t tmpfs cgroup_root /sys/fs/cgroup
mkdir -p /sys/fs/cgroup/systemd
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mount --bind '{dir}' {INSIDE}
mount --bind '{fulcrum}' {INSIDE}/fulcrum
mount --bind '{upgrade}' {INSIDE}/fulcrum-upgrade
export SYSTEMD_UNIT_PATH='{units}'
exec {SYSTEMD} --system --unit=test.target --log-target=console --show-status=no
",
            dir = dir.0.display(),
            fulcrum = FULCRUM,
            upgrade = repo_path("deploy/fulcrum-upgrade").display(),
            units = units.display(),
        );
        let log = std::fs::File::create(dir.path("systemd.log")).unwrap();
        let unshare = Command::new("unshare")
            .args([
                "--fork",
                "--pid",
                "--mount",
                "--mount-proc",
                "--kill-child",
                "bash",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare (util-linux)");
        let mut sd = Systemd {
            pid: 0,
            unshare,
            dir,
            _shared: shared,
        };
        let found = wait_until(Duration::from_secs(10), || {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", sd.unshare.id()))
                    .unwrap_or_default();
            match children.split_whitespace().next() {
                Some(p) => {
                    sd.pid = p.parse().unwrap();
                    true
                }
                None => false,
            }
        });
        assert!(found, "systemd did not start: {}", sd.log());
        let running = wait_until(Duration::from_secs(20), || {
            let out = sd.systemctl(&["is-system-running"]);
            let state = String::from_utf8_lossy(&out.stdout);
            matches!(state.trim(), "running" | "degraded")
        });
        assert!(running, "systemd is not running: {}", sd.log());
        sd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("systemd.log")).unwrap_or_default()
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-p", "systemctl"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter (util-linux)")
    }

    /// `systemctl ARGS`, which must succeed; returns how long it took.
    fn run(&self, unit: &Unit, args: &[&str]) -> Duration {
        let t = Instant::now();
        let out = self.systemctl(args);
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "systemctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.report(unit)
        );
        took
    }

    /// One property of a unit.
    fn show(&self, unit: &str, property: &str) -> String {
        let out = self.systemctl(&["show", unit, "-p", property, "--value"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn main_pid(&self, unit: &str) -> u32 {
        self.show(unit, "MainPID").parse().unwrap_or(0)
    }

    /// The command line of a process of the namespace (by its pid there).
    fn cmdline(&self, pid: u32) -> Option<String> {
        let raw = std::fs::read(format!("/proc/{}/root/proc/{pid}/cmdline", self.pid)).ok()?;
        Some(String::from_utf8_lossy(&raw).replace('\0', " "))
    }

    /// Pids (in the namespace) of the fulcrum processes running there.
    fn fulcrums(&self) -> Vec<u32> {
        let proc = format!("/proc/{}/root/proc", self.pid);
        let mut out = vec![];
        for entry in std::fs::read_dir(proc).unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let zombie = stat.split(") ").nth(1).is_some_and(|r| r.starts_with('Z'));
            if !zombie
                && self
                    .cmdline(pid)
                    .is_some_and(|c| c.starts_with(&format!("{INSIDE}/fulcrum ")))
            {
                out.push(pid);
            }
        }
        out
    }

    /// What to print when something fails: the unit's state, its output
    /// and systemd's.
    fn report(&self, unit: &Unit) -> String {
        let out = self.systemctl(&["status", "--no-pager", "-l", &unit.name]);
        format!(
            "systemctl status:\n{}\nunit output:\n{}\nsystemd:\n{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(self.dir.path(&format!("{}.log", unit.name)))
                .unwrap_or_default(),
            self.log()
        )
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // PID 1 of the namespace: its end takes every process with it.
        if self.pid != 0 {
            signal(self.pid, "KILL");
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// A unit variant the test installs.
struct Unit {
    name: String,
    notify: bool,
    addr: std::net::SocketAddr,
}

/// The packaged unit, pointed at the test's files, with `Type=` and what
/// goes with it set for `notify` or forking.
fn unit_text(shipped: &str, name: &str, notify: bool) -> String {
    let inside = |p: &str| format!("{INSIDE}/{p}");
    let mut out = vec![];
    for line in shipped.lines() {
        let l = line.trim();
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        // Only the test's target exists here, and no environment file.
        if l.starts_with("After=") || l.starts_with("Wants=") || l.starts_with("EnvironmentFile=") {
            continue;
        }
        // The variant's own lines come after Type=.
        if l.starts_with("NotifyAccess=") || l.starts_with("PIDFile=") {
            continue;
        }
        if l.starts_with("Type=") {
            if notify {
                out.push("Type=notify".to_string());
                out.push("NotifyAccess=all".to_string());
            } else {
                out.push("Type=forking".to_string());
            }
            out.push(format!("PIDFile={RUN_DIR}/fulcrum.pid"));
            continue;
        }
        let l = l
            .replace("/usr/sbin/fulcrum-upgrade", &inside("fulcrum-upgrade"))
            .replace("/usr/sbin/fulcrum", &inside("fulcrum"))
            .replace(
                "/etc/fulcrum/fulcrum.yaml",
                &inside(&format!("{name}.yaml")),
            );
        out.push(l.clone());
        if l == "[Unit]" {
            out.push("DefaultDependencies=no".into());
        }
        if l == "[Service]" {
            // No journal in the namespace.
            let log = inside(&format!("{name}.log"));
            out.push(format!("StandardOutput=append:{log}"));
            out.push(format!("StandardError=append:{log}"));
        }
    }
    out.join("\n") + "\n"
}

/// Polls the unit's ActiveState and MainPID; keeps each change with its
/// time.
struct Watch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Duration, String, u32)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Watch {
    fn start(sd: &Systemd, unit: &str, since: Instant) -> Watch {
        let (stop, seen) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(vec![])),
        );
        let (pid, unit) = (sd.pid, unit.to_string());
        let (s, v) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            while !s.load(Relaxed) {
                let out = Command::new("nsenter")
                    .args(["-t", &pid.to_string(), "-m", "-p", "systemctl", "show"])
                    .args([&unit, "-p", "ActiveState", "-p", "MainPID"])
                    .output();
                if let Ok(out) = out {
                    let text = String::from_utf8_lossy(&out.stdout).to_string();
                    let get = |k: &str| {
                        text.lines()
                            .find_map(|l| l.strip_prefix(&format!("{k}=")))
                            .unwrap_or("")
                            .to_string()
                    };
                    let (state, main) = (get("ActiveState"), get("MainPID").parse().unwrap_or(0));
                    let mut v = v.lock().unwrap();
                    if v.last().is_none_or(|(_, s, m)| *s != state || *m != main) {
                        v.push((since.elapsed(), state, main));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watch { stop, seen, thread }
    }

    fn stop(self) -> Vec<(Duration, String, u32)> {
        self.stop.store(true, Relaxed);
        let _ = self.thread.join();
        let v = self.seen.lock().unwrap().clone();
        v
    }
}

/// What one variant measured.
struct Figures {
    /// With the listen address taken: whether `systemctl start` succeeded,
    /// how long it took, and ActiveState half a second later.
    failed_start: (bool, Duration),
    failed_state: String,
    start: Duration,
    start_to_health: Duration,
    reloads: Vec<Duration>,
    /// Seconds into each reload at which systemd named the new main process.
    main_pid_switch: Vec<Option<f64>>,
    stop: Duration,
    ok: u64,
    failed: u64,
    sighup_reported: bool,
    status: String,
}

fn run_variant(sd: &Systemd, unit: &Unit, backends: &Backends) -> Figures {
    // As the packaged config: started as root, running as a user (here
    // nobody and its group) once the sockets are bound.
    let group = Command::new("id").args(["-gn", "nobody"]).output().unwrap();
    assert!(group.status.success(), "no user nobody: {group:?}");
    let group = String::from_utf8_lossy(&group.stdout).trim().to_string();
    let conf = format!(
        "version: 1\nthreads: 2\nuser: nobody\ngroup: {group}\npid_file: {RUN_DIR}/fulcrum.pid\n\
         upgrade_sock: {RUN_DIR}/upgrade.sock\ngrace_period_seconds: {GRACE}\n\
         graceful_shutdown_timeout_seconds: {SHUTDOWN_TIMEOUT}\naccess_log: off\n\
         listen: [\"{}\"]\n{}",
        unit.addr,
        one_pool(
            "app",
            "/api",
            &[backends.addr("a"), backends.addr("b")],
            "read_timeout: 10s\n"
        )
    );
    std::fs::write(sd.dir.path(&format!("{}.yaml", unit.name)), conf).unwrap();
    let name = unit.name.as_str();
    let health =
        || try_request(unit.addr, "GET", "/health", &[], b"").is_ok_and(|r| r.status == 200);

    // Start: active, and the main process is the daemon.
    let t = Instant::now();
    let start = sd.run(unit, &["start", name]);
    assert!(
        wait_until(Duration::from_secs(15), health),
        "no /health\n{}",
        sd.report(unit)
    );
    let start_to_health = t.elapsed();
    assert_eq!(
        sd.show(name, "ActiveState"),
        "active",
        "{}",
        sd.report(unit)
    );
    let first = sd.main_pid(name);
    let cmd = sd.cmdline(first).unwrap_or_default();
    assert!(
        cmd.contains(&format!("{INSIDE}/fulcrum -d -c")),
        "MainPID {first} is not fulcrum's daemon: {cmd:?}\n{}",
        sd.report(unit)
    );
    // The process systemd started exits once the daemon is ready (under
    // Type=notify just after READY=1, which ends `systemctl start`).
    assert!(
        wait_until(Duration::from_secs(5), || sd.fulcrums() == vec![first]),
        "fulcrum processes {:?}, MainPID {first}\n{}",
        sd.fulcrums(),
        sd.report(unit)
    );
    let status = sd.show(name, "StatusText");
    if unit.notify {
        assert_eq!(
            status,
            format!("serving on {}", unit.addr),
            "{}",
            sd.report(unit)
        );
    }

    let load = Load::start(
        unit.addr,
        LoadSpec {
            keepalive: 4,
            fresh: 2,
            slow: 2,
            path: "/api/x".into(),
            slow_path: "/api/slow?delay_ms=300".into(),
            pause: Duration::from_millis(10),
        },
    );
    std::thread::sleep(Duration::from_millis(700));
    let since = Instant::now();
    let watch = Watch::start(sd, name, since);

    let mut reloads = vec![];
    let mut began = vec![];
    let mut main = first;
    for i in 1..=2 {
        began.push(since.elapsed());
        reloads.push(sd.run(unit, &["reload", name]));
        let new = sd.main_pid(name);
        assert_ne!(
            new,
            main,
            "reload {i}: MainPID unchanged\n{}",
            sd.report(unit)
        );
        let cmd = sd.cmdline(new).unwrap_or_default();
        assert!(
            cmd.contains(&format!("{INSIDE}/fulcrum -u -d -c")),
            "reload {i}: MainPID {new} is not the new fulcrum: {cmd:?}\n{}",
            sd.report(unit)
        );
        // fulcrum-upgrade returns once the old process has gone.
        assert_eq!(sd.fulcrums(), vec![new], "{}", sd.report(unit));
        assert_eq!(
            sd.show(name, "ActiveState"),
            "active",
            "{}",
            sd.report(unit)
        );
        main = new;
    }

    // SIGHUP to the main process: does systemd hear of the reload?
    let before = sd.show(name, "StateChangeTimestampMonotonic");
    let log_before = std::fs::read_to_string(sd.dir.path(&format!("{name}.log")))
        .unwrap_or_default()
        .matches("reload of ")
        .count();
    sd.run(unit, &["kill", "-s", "HUP", "--kill-who=main", name]);
    let reloaded = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(sd.dir.path(&format!("{name}.log")))
            .unwrap_or_default()
            .matches("reload of ")
            .count()
            > log_before
    });
    assert!(reloaded, "SIGHUP did not reload\n{}", sd.report(unit));
    std::thread::sleep(Duration::from_millis(300));
    let sighup_reported = sd.show(name, "StateChangeTimestampMonotonic") != before;
    assert_eq!(sd.main_pid(name), main, "SIGHUP changed MainPID");
    let status = if unit.notify {
        let after = sd.show(name, "StatusText");
        assert!(after.starts_with("reloaded: generation 2"), "{after}");
        format!("{status} | after SIGHUP: {after}")
    } else {
        status
    };
    std::thread::sleep(Duration::from_millis(500));
    let stats = load.stop();
    let seen = watch.stop();

    // Zero failed requests; never anything but active or reloading.
    let summary = stats.summary();
    assert_eq!(stats.failed.load(Relaxed), 0, "{name}: {summary}");
    assert!(stats.slow_ok.load(Relaxed) > 0, "{name}: {summary}");
    let states: Vec<String> = seen
        .iter()
        .map(|(t, s, m)| format!("{:.2}s {s} {m}", t.as_secs_f64()))
        .collect();
    assert!(
        seen.iter()
            .all(|(_, s, _)| s == "active" || s == "reloading"),
        "{name}: states seen {states:?}"
    );
    // When, into each reload, systemd first named a new main process.
    let mut main_pid_switch = vec![];
    let mut prev = first;
    for (i, b) in began.iter().enumerate() {
        let end = began.get(i + 1).copied().unwrap_or(Duration::MAX);
        let at = seen
            .iter()
            .find(|(t, _, m)| *t >= *b && *t < end && *m != prev && *m != 0);
        main_pid_switch.push(at.map(|(t, _, _)| (*t - *b).as_secs_f64()));
        if let Some((_, _, m)) = at {
            prev = *m;
        }
    }
    eprintln!("{name}: states and main pids seen: {states:?}");

    // Stop: clean, inactive, nothing left.
    let stop = sd.run(unit, &["stop", name]);
    assert_eq!(
        sd.show(name, "ActiveState"),
        "inactive",
        "{}",
        sd.report(unit)
    );
    assert_eq!(sd.show(name, "Result"), "success", "{}", sd.report(unit));
    assert_eq!(sd.show(name, "NRestarts"), "0", "{}", sd.report(unit));
    assert!(
        sd.fulcrums().is_empty(),
        "left running: {:?}",
        sd.fulcrums()
    );
    assert!(!health(), "{name}: still answering after stop");

    // A start that cannot succeed: the address is taken. Does `systemctl
    // start` say so?
    let taken = std::net::TcpListener::bind(unit.addr).unwrap();
    let t = Instant::now();
    let out = sd.systemctl(&["start", name]);
    let failed_start = (out.status.success(), t.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let failed_state = sd.show(name, "ActiveState");
    sd.run(unit, &["stop", name]);
    let _ = sd.systemctl(&["reset-failed", name]);
    drop(taken);
    assert!(
        sd.fulcrums().is_empty(),
        "left running: {:?}",
        sd.fulcrums()
    );
    if unit.notify {
        assert!(
            !failed_start.0,
            "systemctl start succeeded with the port taken\n{}",
            sd.report(unit)
        );
    }

    Figures {
        failed_start,
        failed_state,
        start,
        start_to_health,
        reloads,
        main_pid_switch,
        stop,
        ok: stats.ok.load(Relaxed),
        failed: stats.failed.load(Relaxed),
        sighup_reported,
        status,
    }
}

#[test]
fn notify_and_forking_units_upgrade_under_systemd_without_a_failed_request() {
    require_root_and_systemd();
    let shipped = std::fs::read_to_string(repo_path("deploy/debian/fulcrum.service")).unwrap();
    let shipped_type = shipped
        .lines()
        .find_map(|l| l.strip_prefix("Type="))
        .expect("the packaged unit has a Type=")
        .trim()
        .to_string();
    assert!(
        shipped_type == "notify" || shipped_type == "forking",
        "Type={shipped_type}"
    );
    let backends = Backends::start(&["a", "b"], &["--threads", "2"]);
    let sd = Systemd::start(TempDir::new("systemd"));
    let variants = [
        Unit {
            name: "fulcrum-notify".into(),
            notify: true,
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        },
        Unit {
            name: "fulcrum-forking".into(),
            notify: false,
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        },
    ];
    for u in &variants {
        let text = unit_text(&shipped, &u.name, u.notify);
        let path: PathBuf = sd.dir.path("units").join(format!("{}.service", u.name));
        std::fs::write(path, text).unwrap();
    }
    let verify = sd.systemctl(&["daemon-reload"]);
    assert!(verify.status.success(), "{verify:?}");
    let mut lines = vec![];
    for u in &variants {
        let f = run_variant(&sd, u, &backends);
        lines.push(format!(
            "{}: start {:.2}s (until /health {:.2}s), reloads {}, new MainPID known {} into the reload, \
             stop {:.2}s, requests {} ok / {} failed, SIGHUP reported to systemd: {}, \
             port taken: systemctl start {} after {:.2}s, then {}, StatusText: {:?}",
            u.name,
            f.start.as_secs_f64(),
            f.start_to_health.as_secs_f64(),
            f.reloads
                .iter()
                .map(|r| format!("{:.2}s", r.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" "),
            f.main_pid_switch
                .iter()
                .map(|s| s.map_or("?".into(), |s| format!("{s:.2}s")))
                .collect::<Vec<_>>()
                .join(" "),
            f.stop.as_secs_f64(),
            f.ok,
            f.failed,
            f.sighup_reported,
            if f.failed_start.0 { "succeeded" } else { "failed" },
            f.failed_start.1.as_secs_f64(),
            f.failed_state,
            f.status,
        ));
        assert_eq!(
            f.sighup_reported, u.notify,
            "{}: SIGHUP reported to systemd: {}",
            u.name, f.sighup_reported
        );
    }
    eprintln!(
        "systemd figures (shipped Type={shipped_type}):\n{}",
        lines.join("\n")
    );
}
