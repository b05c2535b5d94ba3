//! Helpers for the upgrade and reload tests: processes known only by pid
//! (daemons started by `-d` or by the upgrade script), client load that
//! counts every failure, and a census of a process's file descriptors.

use super::{free_port, pid_alive, signal, try_request, Fulcrum, KeepAlive, FULCRUM};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Pids to stop when the test ends, also on panic: SIGINT (fast stop), then
/// SIGKILL for any still alive after 5 s. Only processes whose command line
/// contains `marker` are signalled, so a pid reused by an unrelated process
/// since is left alone.
pub struct Pids {
    pids: Mutex<Vec<u32>>,
    marker: String,
}

impl Pids {
    pub fn new(marker: &str) -> Pids {
        Pids {
            pids: Mutex::new(vec![]),
            marker: marker.to_string(),
        }
    }

    pub fn add(&self, pid: u32) {
        let mut v = self.pids.lock().unwrap();
        if !v.contains(&pid) {
            v.push(pid);
        }
    }

    fn ours(&self, pid: u32) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&self.marker))
    }
}

impl Drop for Pids {
    fn drop(&mut self) {
        let pids: Vec<u32> = self
            .pids
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|&p| self.ours(p))
            .collect();
        for &p in &pids {
            if pid_alive(p) {
                signal(p, "INT");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && pids.iter().any(|&p| pid_alive(p)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for &p in &pids {
            if pid_alive(p) && self.ours(p) {
                signal(p, "KILL");
            }
        }
    }
}

/// The pid written in a pid file, if any.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits for `path` to name a live process other than `not`.
pub fn wait_pid_file(path: &Path, not: Option<u32>, timeout: Duration) -> Option<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(p) = read_pid(path) {
            if Some(p) != not && pid_alive(p) {
                return Some(p);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a unix socket at `path` is listening (`/proc/net/unix`, flag
/// `__SO_ACCEPTCON`): Pingora's `-u` waits there for the old process.
pub fn sock_listening(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 8 && f[3] == "00010000" && f[7] == p
        })
}

/// Both streams of a child to one append-mode file.
pub fn to_log(log: &Path) -> (Stdio, Stdio) {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    (Stdio::from(f.try_clone().unwrap()), Stdio::from(f))
}

/// Runs `cmd` to completion with `RUST_LOG=info`, no stdin, and both
/// streams appended to `log`.
pub fn run_logged(cmd: &mut Command, log: &Path) -> std::process::ExitStatus {
    let (out, err) = to_log(log);
    cmd.env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .unwrap()
}

/// Waits until the file at `log` contains `needle`.
pub fn wait_log(log: &Path, needle: &str, timeout: Duration) -> bool {
    super::wait_until(timeout, || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
    })
}

/// A fulcrum started with `-d` (as systemd and the upgrade script do), known
/// by the pid its daemon writes; it and every later process are stopped on
/// drop through `pids`.
pub struct Daemon {
    /// First, so that the processes stop before their directory goes.
    pub pids: Pids,
    pub dir: super::TempDir,
    pub conf: PathBuf,
    pub pid_file: PathBuf,
    pub sock: PathBuf,
    pub log: PathBuf,
    pub addr: SocketAddr,
    /// Last: held until the processes have stopped.
    _shared: super::Shared,
}

impl Daemon {
    /// Writes a config with these Pingora timeouts and `body`, starts it with
    /// `-d` and waits for /health.
    pub fn start(grace: u64, shutdown_timeout: u64, body: &str) -> Daemon {
        Daemon::start_listening(grace, shutdown_timeout, &[], body)
    }

    /// [`Daemon::start`] with `more` listen entries (YAML flow mappings)
    /// after its plain address.
    pub fn start_listening(grace: u64, shutdown_timeout: u64, more: &[&str], body: &str) -> Daemon {
        let dir = super::TempDir::new("daemon");
        let port = free_port();
        let d = Daemon {
            conf: dir.path("fulcrum.yaml"),
            pid_file: dir.path("fulcrum.pid"),
            sock: dir.path("upgrade.sock"),
            log: dir.path("fulcrum.log"),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            pids: Pids::new(&dir.path("fulcrum.yaml").to_string_lossy()),
            dir,
            _shared: super::shared(),
        };
        let head = format!(
            "version: 1\nthreads: 2\npid_file: {}\nupgrade_sock: {}\n\
             grace_period_seconds: {grace}\ngraceful_shutdown_timeout_seconds: {shutdown_timeout}\n\
             listen: [\"{}\"{}]\n",
            d.pid_file.display(),
            d.sock.display(),
            d.addr,
            more.iter().map(|m| format!(", {m}")).collect::<String>()
        );
        std::fs::write(&d.conf, format!("{head}{body}")).unwrap();
        let (out, err) = to_log(&d.log);
        let status = Command::new(FULCRUM)
            .args(["-d", "-c"])
            .arg(&d.conf)
            .env("RUST_LOG", "info")
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap();
        assert!(status.success(), "fulcrum -d failed: {}", d.log_text());
        let pid = wait_pid_file(&d.pid_file, None, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no pid file; log:\n{}", d.log_text()));
        d.pids.add(pid);
        d.wait_health();
        d
    }

    pub fn pid(&self) -> Option<u32> {
        read_pid(&self.pid_file)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_health(&self) {
        let ok = super::wait_until(Duration::from_secs(15), || {
            try_request(self.addr, "GET", "/health", &[], b"").is_ok_and(|r| r.status == 200)
        });
        assert!(ok, "no /health; log:\n{}", self.log_text());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Also whatever an interrupted upgrade left running.
        for file in [self.pid_file.clone(), self.dir.path("fulcrum.pid.old")] {
            if let Some(p) = read_pid(&file) {
                self.pids.add(p);
            }
        }
    }
}

/// Rewrites the config of a harness-started [`Fulcrum`]: its Pingora keys
/// and `listen` line stay, `body` replaces the rest.
pub fn rewrite_config(f: &Fulcrum, body: &str) {
    let path = f.dir.path("fulcrum.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut head = String::new();
    for line in text.lines() {
        head.push_str(line);
        head.push('\n');
        if line.starts_with("listen:") {
            break;
        }
    }
    std::fs::write(&path, format!("{head}{body}")).unwrap();
}

/// Counts kept by the load clients.
#[derive(Default)]
pub struct LoadStats {
    /// Requests answered 200 (slow ones included).
    pub ok: AtomicU64,
    /// Non-200 answers, resets, EOF without a response, timeouts.
    pub failed: AtomicU64,
    /// Connections refused (counted in `failed` too).
    pub refused: AtomicU64,
    /// Keepalive connections the server closed after a response that said
    /// `Connection: close` (not a failure: the client reconnects).
    pub closed_by_server: AtomicU64,
    /// Slow requests answered 200.
    pub slow_ok: AtomicU64,
    /// Slow requests sent.
    pub slow_sent: AtomicU64,
    /// The first failures, described.
    pub errors: Mutex<Vec<String>>,
}

impl LoadStats {
    fn fail(&self, what: String, refused: bool) {
        self.failed.fetch_add(1, Relaxed);
        if refused {
            self.refused.fetch_add(1, Relaxed);
        }
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 {
            e.push(what);
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "ok={} failed={} refused={} closed_by_server={} slow_ok={}/{} errors={:?}",
            self.ok.load(Relaxed),
            self.failed.load(Relaxed),
            self.refused.load(Relaxed),
            self.closed_by_server.load(Relaxed),
            self.slow_ok.load(Relaxed),
            self.slow_sent.load(Relaxed),
            self.errors.lock().unwrap()
        )
    }
}

/// Client threads sending requests until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub stats: Arc<LoadStats>,
}

/// What a [`Load`] sends.
pub struct LoadSpec {
    /// Clients that reuse one connection (and reconnect when told to close).
    pub keepalive: usize,
    /// Clients that open a new connection per request.
    pub fresh: usize,
    /// Clients that send one slow request after another, each on a new connection.
    pub slow: usize,
    /// Path of normal requests.
    pub path: String,
    /// Path of slow requests.
    pub slow_path: String,
    /// Pause between two requests of one client (keeps a 2-core machine usable).
    pub pause: Duration,
}

fn is_refused(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ConnectionRefused
}

impl Load {
    pub fn start(addr: SocketAddr, spec: LoadSpec) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LoadStats::default());
        let spec = Arc::new(spec);
        let mut threads = vec![];
        for i in 0..spec.keepalive {
            let (stop, stats, spec) = (stop.clone(), stats.clone(), spec.clone());
            threads.push(std::thread::spawn(move || {
                let mut conn: Option<KeepAlive> = None;
                while !stop.load(Relaxed) {
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match KeepAlive::connect(addr) {
                            Ok(c) => conn.insert(c),
                            Err(e) => {
                                stats.fail(format!("keepalive {i}: connect: {e}"), is_refused(&e));
                                std::thread::sleep(spec.pause);
                                continue;
                            }
                        },
                    };
                    match c.get(&spec.path) {
                        Ok(r) => {
                            if r.status == 200 {
                                stats.ok.fetch_add(1, Relaxed);
                            } else {
                                stats.fail(format!("keepalive {i}: status {}", r.status), false);
                            }
                            if r.header("connection")
                                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                            {
                                stats.closed_by_server.fetch_add(1, Relaxed);
                                conn = None;
                            }
                        }
                        Err(e) => {
                            stats.fail(format!("keepalive {i}: {e}"), false);
                            conn = None;
                        }
                    }
                    std::thread::sleep(spec.pause);
                }
            }));
        }
        for i in 0..spec.fresh {
            let (stop, stats, spec) = (stop.clone(), stats.clone(), spec.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    match try_request(addr, "GET", &spec.path, &[], b"") {
                        Ok(r) if r.status == 200 => {
                            stats.ok.fetch_add(1, Relaxed);
                        }
                        Ok(r) => stats.fail(format!("fresh {i}: status {}", r.status), false),
                        Err(e) => stats.fail(format!("fresh {i}: {e}"), is_refused(&e)),
                    }
                    std::thread::sleep(spec.pause);
                }
            }));
        }
        for i in 0..spec.slow {
            let (stop, stats, spec) = (stop.clone(), stats.clone(), spec.clone());
            threads.push(std::thread::spawn(move || {
                // Staggered, so that some slow request is always in flight.
                std::thread::sleep(Duration::from_millis(700 * i as u64));
                while !stop.load(Relaxed) {
                    stats.slow_sent.fetch_add(1, Relaxed);
                    match try_request(addr, "GET", &spec.slow_path, &[], b"") {
                        Ok(r) if r.status == 200 => {
                            stats.ok.fetch_add(1, Relaxed);
                            stats.slow_ok.fetch_add(1, Relaxed);
                        }
                        Ok(r) => stats.fail(format!("slow {i}: status {}", r.status), false),
                        Err(e) => stats.fail(format!("slow {i}: {e}"), is_refused(&e)),
                    }
                }
            }));
        }
        Load {
            stop,
            threads,
            stats,
        }
    }

    /// Stops the clients after their current request and returns the counts.
    pub fn stop(self) -> Arc<LoadStats> {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.stats
    }
}

/// A process's open file descriptors by kind. TCP connections come and go
/// with traffic (client connections, the upstream connection pool, health
/// checks), so they are counted apart from everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdCensus {
    pub total: usize,
    pub tcp_connections: usize,
    /// Kind (`tcp-listen`, `unix`, `pipe`, `anon_inode:[eventpoll]`, a file
    /// path, ...) -> count, TCP connections excluded.
    pub other: BTreeMap<String, usize>,
}

impl FdCensus {
    pub fn other_total(&self) -> usize {
        self.other.values().sum()
    }
}

/// socket inode -> kind, from the process's network namespace tables.
fn socket_kinds(pid: u32) -> BTreeMap<String, String> {
    let mut kinds = BTreeMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 9 {
                let kind = if f[3] == "0A" {
                    "tcp-listen"
                } else {
                    "tcp-conn"
                };
                kinds.insert(f[9].to_string(), kind.to_string());
            }
        }
    }
    let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    for l in unix.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 6 {
            kinds.insert(f[6].to_string(), "unix".to_string());
        }
    }
    kinds
}

pub fn fd_census(pid: u32) -> FdCensus {
    let kinds = socket_kinds(pid);
    let mut c = FdCensus {
        total: 0,
        tcp_connections: 0,
        other: BTreeMap::new(),
    };
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed meanwhile
        };
        let t = target.to_string_lossy().into_owned();
        c.total += 1;
        let kind = if let Some(inode) = t.strip_prefix("socket:[") {
            let inode = inode.trim_end_matches(']');
            kinds
                .get(inode)
                .cloned()
                .unwrap_or_else(|| "socket (other)".into())
        } else if t.starts_with("pipe:[") {
            "pipe".into()
        } else {
            t
        };
        if kind == "tcp-conn" {
            c.tcp_connections += 1;
        } else {
            *c.other.entry(kind).or_default() += 1;
        }
    }
    c
}

/// Opens `path` for appending (a log shared by several processes).
pub fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}
