//! Test support: start the real `fulcrum` and demo backends on loopback with
//! ports chosen at run time, talk HTTP to them, and stop every process
//! started (by pid, on drop, also when a test panics).

mod alone;
pub mod cdp;
pub mod certs;
pub mod lifecycle;
pub mod peer;
pub mod prom;
pub mod raw;
pub mod route_model;

pub use alone::{alone, shared, Shared};

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const FULCRUM: &str = env!("CARGO_BIN_EXE_fulcrum");
pub const DEMO: &str = env!("CARGO_BIN_EXE_fulcrum-demo-backend");

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, Relaxed);
        let p = std::env::temp_dir().join(format!("fulcrum-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port that was free a moment ago.
///
/// Never the same port twice in one test run: once released, the kernel
/// may hand the port to the next bind(0) again, and two listen entries of
/// one config (or two tests) then ask for the same address.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILLs.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `kill -SIG pid`.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')),
        Err(_) => false,
    }
}

/// A demo backend process serving one or more named listeners.
pub struct Backends {
    child: Child,
    pub addrs: HashMap<String, SocketAddr>,
    _dir: TempDir,
    _shared: Shared,
}

impl Backends {
    /// Starts one process serving `names`, each on a fresh port.
    pub fn start(names: &[&str], extra: &[&str]) -> Backends {
        let listen: Vec<(&str, &str)> = names.iter().map(|n| (*n, "127.0.0.1:0")).collect();
        Backends::start_with(&[], &listen, extra)
    }

    /// Starts one process serving each `(name, addr)` of `listen`, run
    /// through `wrapper` (e.g. `ip netns exec NS`, which execs, so the pid
    /// stays the backend's).
    pub fn start_with(wrapper: &[&str], listen: &[(&str, &str)], extra: &[&str]) -> Backends {
        Backends::try_start_with(wrapper, listen, extra).expect("demo backend did not start")
    }

    /// [`Backends::start_with`], or None when the backend does not start
    /// (e.g. an address is taken).
    // The child moves into `Backends`, whose Drop waits for it.
    #[allow(clippy::zombie_processes)]
    pub fn try_start_with(
        wrapper: &[&str],
        listen: &[(&str, &str)],
        extra: &[&str],
    ) -> Option<Backends> {
        let shared = shared();
        let names: Vec<&str> = listen.iter().map(|(n, _)| *n).collect();
        let dir = TempDir::new("backends");
        let port_file = dir.path("ports");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(DEMO);
                c
            }
            None => Command::new(DEMO),
        };
        for (n, addr) in listen {
            cmd.arg("--listen").arg(format!("{n}@{addr}"));
        }
        cmd.arg("--port-file").arg(&port_file).args(extra);
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start demo backend");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let addrs: HashMap<String, SocketAddr> = text
                    .lines()
                    .filter_map(|l| l.split_once(' '))
                    .map(|(n, a)| (n.to_string(), a.parse().unwrap()))
                    .collect();
                if addrs.len() == names.len() {
                    return Some(Backends {
                        child,
                        addrs,
                        _dir: dir,
                        _shared: shared,
                    });
                }
            }
            let exited = child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// The backend's own request counter (control requests excluded).
    pub fn requests(&self, name: &str) -> u64 {
        self.counter(name, "requests")
    }

    /// The requests the backend is working on now.
    pub fn in_flight(&self, name: &str) -> u64 {
        self.counter(name, "in_flight")
    }

    /// The TCP connections the backend has accepted.
    pub fn connections(&self, name: &str) -> u64 {
        self.counter(name, "connections")
    }

    fn counter(&self, name: &str, field: &str) -> u64 {
        let s = self.stats(name);
        s.split(&format!("\"{field}\":"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {field} in {s}"))
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn stats(&self, name: &str) -> String {
        get(self.addr(name), "/__control/stats").body
    }

    pub fn control(&self, name: &str, path_and_query: &str) {
        let r = request(self.addr(name), "POST", path_and_query, &[], b"");
        assert_eq!(r.status, 200, "control {path_and_query}: {}", r.body);
    }

    /// SIGKILLs the process (a crashed service).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

/// A running fulcrum with its own config, pid file and upgrade socket.
pub struct Fulcrum {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub log: PathBuf,
    _shared: Shared,
}

impl Fulcrum {
    /// Writes `body` (fulcrum's own keys, without `listen`/Pingora keys),
    /// adds a fresh listen port and scratch paths, starts, waits for /health.
    pub fn start(body: &str) -> Fulcrum {
        Fulcrum::start_listening(&[], body).0
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(r) = try_request(self.addr, "GET", "/health", &[], b"") {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("fulcrum did not become ready; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Response {
        get(self.addr, path)
    }

    /// The JSON status document.
    pub fn status_json(&self) -> serde_json::Value {
        let r = self.get("/nginx-status/json");
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    /// (pool, addr) -> server object from the JSON status.
    pub fn server_status(&self, pool: &str, addr: SocketAddr) -> serde_json::Value {
        let doc = self.status_json();
        let p = doc["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == pool)
            .expect("pool");
        p["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["resolved"] == addr.to_string())
            .expect("server")
            .clone()
    }

    /// Sum of in_flight over every server of every pool.
    pub fn total_in_flight(&self) -> u64 {
        self.total_over_servers("in_flight")
    }

    /// Sum of one numeric field of every server in the JSON status.
    pub fn total_over_servers(&self, field: &str) -> u64 {
        let doc = self.status_json();
        doc["pools"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["servers"].as_array().unwrap().iter())
            .map(|s| s[field].as_u64().unwrap())
            .sum()
    }
}

impl Drop for Fulcrum {
    fn drop(&mut self) {
        // SIGINT: fast stop; graceful shutdown is tested where it matters.
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "INT");
        }
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `server` field of a demo backend's JSON echo.
    pub fn backend(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not a backend echo ({e}): {} {}", self.status, self.body));
        v["server"].as_str().unwrap().to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

/// One request on a fresh connection (`Connection: close`).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut reader = BufReader::new(s);
    read_response(&mut reader, method == "HEAD")
}

/// Reads one response (Content-Length, chunked or until close).
pub fn read_response<R: BufRead>(r: &mut R, head: bool) -> std::io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut headers = vec![];
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = vec![];
    if head || status == 204 || status == 304 {
    } else if let Some(len) = find("content-length") {
        body.resize(len.parse().unwrap_or(0), 0);
        r.read_exact(&mut body)?;
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if n == 0 {
                line.clear();
                r.read_line(&mut line)?;
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A keepalive client connection.
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> std::io::Result<KeepAlive> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(KeepAlive {
            reader: BufReader::new(s),
            addr,
        })
    }

    /// The underlying socket (for raw writes and close detection).
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        self.reader.get_mut().write_all(req.as_bytes())?;
        read_response(&mut self.reader, false)
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Backend `a` behind a fulcrum (two threads, no access log) that routes
/// `/api` to it; `top` adds top-level config lines.
pub fn api_on_one_backend(top: &str) -> (Backends, Fulcrum) {
    let b = Backends::start(&["a"], &[]);
    let conf = format!(
        "access_log: off\n{top}{}",
        one_pool("svc", "/api", &[b.addr("a")], "")
    );
    (b, Fulcrum::start(&conf))
}

/// The lines of `log` at error level.
pub fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" ERROR ")).collect()
}

/// `clients` keepalive connections at once, each sending `requests` GETs
/// of `prefix/<client>/<i>` and expecting 200 for every one.
pub fn keepalive_load(addr: SocketAddr, prefix: &str, clients: usize, requests: usize) {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let mut client = KeepAlive::connect(addr).unwrap();
                for i in 0..requests {
                    let r = client.get(&format!("{prefix}/{c}/{i}")).unwrap();
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A pools+routes YAML fragment: one pool named `pool` over `servers`,
/// routed at `prefix`, with `extra` pool-level lines (indented by 4).
pub fn one_pool(pool: &str, prefix: &str, servers: &[SocketAddr], extra: &str) -> String {
    let mut s = format!("pools:\n  {pool}:\n");
    for l in extra.lines() {
        s.push_str(&format!("    {l}\n"));
    }
    s.push_str("    servers:\n");
    for a in servers {
        s.push_str(&format!("      - addr: \"{a}\"\n"));
    }
    s.push_str(&format!(
        "routes:\n  - {{ prefix: {prefix}, pool: {pool} }}\n"
    ));
    s
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Like [`one_pool`], with settings per server: each entry is an address and
/// the body of an inline YAML map (`"weight: 3, backup: true"`, may be empty).
pub fn pool_with(pool: &str, prefix: &str, servers: &[(SocketAddr, &str)], extra: &str) -> String {
    let mut s = format!("pools:\n  {pool}:\n");
    for l in extra.lines() {
        s.push_str(&format!("    {l}\n"));
    }
    s.push_str("    servers:\n");
    for (a, opts) in servers {
        let sep = if opts.is_empty() { "" } else { ", " };
        s.push_str(&format!("      - {{ addr: \"{a}\"{sep}{opts} }}\n"));
    }
    s.push_str(&format!(
        "routes:\n  - {{ prefix: {prefix}, pool: {pool} }}\n"
    ));
    s
}

/// One access log line, parsed.
#[derive(Debug, Clone)]
pub struct AccessLine {
    pub method: String,
    pub uri: String,
    pub status: u16,
    pub pool: String,
    /// Every upstream tried, in order.
    pub upstreams: Vec<SocketAddr>,
    /// Their statuses, in the same order.
    pub upstream_statuses: Vec<u16>,
    pub raw: String,
}

impl AccessLine {
    /// Parses a line of fulcrum's default access log format; `None` for
    /// any other line (the error log shares the file in tests).
    pub fn parse(line: &str) -> Option<AccessLine> {
        static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        let re = RE.get_or_init(|| {
            regex::Regex::new(
                r#"^\S+ \[\d+\.\d+\] "(\S+) (\S+)" (\d+) pool=(\S+) upstream=(.+) upstream_status=(.+) upstream_time=(.+) total=\d+\.\d{3} id=\S*$"#,
            )
            .unwrap()
        });
        let c = re.captures(line)?;
        let list = |i: usize| -> Vec<String> {
            if &c[i] == "-" {
                vec![]
            } else {
                c[i].split(", ").map(str::to_string).collect()
            }
        };
        Some(AccessLine {
            method: c[1].to_string(),
            uri: c[2].to_string(),
            status: c[3].parse().ok()?,
            pool: c[4].to_string(),
            upstreams: list(5).iter().filter_map(|a| a.parse().ok()).collect(),
            upstream_statuses: list(6).iter().filter_map(|s| s.parse().ok()).collect(),
            raw: line.to_string(),
        })
    }
}

impl Fulcrum {
    /// Access log lines of routed requests written so far, in order
    /// (local answers such as /health and the status pages are left out,
    /// so that polling the status does not shift the lines).
    pub fn access_log(&self) -> Vec<AccessLine> {
        self.log_text()
            .lines()
            .filter_map(AccessLine::parse)
            .filter(|l| l.pool != "-")
            .collect()
    }

    /// Waits until at least `n` access log lines of routed requests are
    /// written (the log has its own writer thread) and returns them all.
    pub fn wait_access_log(&self, n: usize) -> Vec<AccessLine> {
        let ok = wait_until(Duration::from_secs(10), || self.access_log().len() >= n);
        let lines = self.access_log();
        assert!(
            ok,
            "expected {n} access log lines, have {}:\n{}",
            lines.len(),
            self.log_text()
        );
        lines
    }

    /// The `state` of a server in the JSON status (`up`, `failed`, ...).
    pub fn server_state(&self, pool: &str, addr: SocketAddr) -> String {
        self.server_status(pool, addr)["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Asserts that every in-flight count in the JSON status returns to 0.
    pub fn assert_in_flight_returns_to_zero(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || self.total_in_flight() == 0
                && self.total_over_servers("awaiting_header") == 0),
            "in-flight counts stuck: {}",
            self.get("/nginx-status/json").body
        );
    }
}

/// Runs `cmd` to completion, killing it (by pid) after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "run {:?} (deploy/test.sh installs what the tests run): {e}",
                cmd.get_program()
            )
        });
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let until = Instant::now() + limit;
            while !done.load(Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !done.load(Relaxed) {
                signal(pid, "KILL");
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, Relaxed);
    watchdog.join().unwrap();
    out
}

/// A server in Python (`python3 SCRIPT server PORT_FILE`: it listens on a
/// free loopback port and writes the port to PORT_FILE), stopped by its
/// pid on drop.
pub struct PyServer {
    child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
    _shared: Shared,
}

impl PyServer {
    /// Starts `script` with `args` after the port file; `what` names it
    /// and `needs` the pip package it needs, for the message if it does
    /// not start.
    // The child moves into `PyServer`, whose Drop waits for it.
    #[allow(clippy::zombie_processes)]
    pub fn start(script: &Path, args: &[&str], what: &str, needs: &str) -> PyServer {
        let shared = shared();
        let dir = TempDir::new("pyserver");
        let port_file = dir.path("port");
        let err = dir.path("stderr");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("server")
            .arg(&port_file)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
            .spawn()
            .expect("run python3 (deploy/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok())
            {
                return PyServer {
                    child,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    _dir: dir,
                    _shared: shared,
                };
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} did not start ({exited:?}); it needs `pip install {needs}` \
                     (deploy/test.sh does):\n{}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}
