//! Servers from DNS (`discover:` SRV, `resolve:` host names) against a
//! real DNS server the test starts and changes: Debian's dnsmasq on
//! loopback with a run-time port. Its records are an `addn-hosts` file,
//! which SIGHUP reloads (SIGHUP does not re-read the config file, so the
//! SRV records stay fixed and the changes go through their targets' A
//! records); `local=/fulcrum.test/` makes it answer "no such name" for a
//! target without an address instead of refusing.

use crate::common::lifecycle::{rewrite_config, wait_log, Load, LoadSpec};
use crate::common::*;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A dnsmasq serving `conf` plus the hosts file `hosts`, stopped by pid on drop.
struct Dnsmasq {
    child: Child,
    port: u16,
    hosts: std::path::PathBuf,
    log: std::path::PathBuf,
    _dir: TempDir,
    _shared: Shared,
}

impl Dnsmasq {
    fn start(conf: &str, hosts: &str) -> Dnsmasq {
        let shared = shared();
        let dir = TempDir::new("dnsmasq");
        let (conf_path, hosts_path, log) =
            (dir.path("dnsmasq.conf"), dir.path("hosts"), dir.path("log"));
        std::fs::write(&hosts_path, hosts).unwrap();
        std::fs::write(
            &conf_path,
            format!(
                "local=/fulcrum.test/\naddn-hosts={}\nlog-queries\n{conf}",
                hosts_path.display()
            ),
        )
        .unwrap();
        // dnsmasq takes UDP and TCP on one port: try ports free for both
        // a moment ago until one is still free when it binds.
        for _ in 0..20 {
            let Some(port) = free_udp_and_tcp_port() else {
                continue;
            };
            let mut cmd = Command::new(DNSMASQ);
            // As root it would switch to its own user, who may not read the
            // test's scratch files.
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                cmd.arg("--user=root");
            }
            let mut child = cmd
                .arg("--no-daemon")
                .arg(format!("--port={port}"))
                .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
                .args(["--no-resolv", "--no-hosts"])
                .arg(format!("--conf-file={}", conf_path.display()))
                .arg(format!("--pid-file={}", dir.path("pid").display()))
                .stdout(Stdio::null())
                .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
                .spawn()
                .expect("start dnsmasq (Debian package dnsmasq-base; deploy/test.sh installs it)");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut exited = false;
            let up = wait_until(Duration::from_secs(10), || {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                exited || TcpStream::connect(addr).is_ok()
            });
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if exited && text.contains("Address already in use") {
                continue;
            }
            if !up || exited {
                stop_child(&mut child, Duration::from_secs(2));
                panic!("dnsmasq did not start: {text}");
            }
            return Dnsmasq {
                child,
                port,
                hosts: hosts_path,
                log,
                _dir: dir,
                _shared: shared,
            };
        }
        panic!("no port for dnsmasq after 20 tries");
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the hosts file and has dnsmasq read it again.
    fn set_hosts(&self, hosts: &str) {
        let before = self.log_text().matches("read ").count();
        std::fs::write(&self.hosts, hosts).unwrap();
        signal(self.child.id(), "HUP");
        assert!(
            wait_until(Duration::from_secs(5), || self
                .log_text()
                .matches("read ")
                .count()
                > before),
            "dnsmasq did not re-read its hosts: {}",
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Queries it has answered so far.
    fn queries(&self) -> usize {
        self.log_text().matches(": query[").count()
    }

    fn stop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that was free for both UDP and TCP a moment ago.
fn free_udp_and_tcp_port() -> Option<u16> {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    let port = tcp.local_addr().ok()?.port();
    UdpSocket::bind(("127.0.0.1", port)).ok()?;
    Some(port)
}

/// The `resolved` addresses of a pool's servers in the JSON status, sorted,
/// with their weight and whether they are backups.
fn members(f: &Fulcrum, pool: &str) -> Vec<(String, u64, bool)> {
    let doc = f.status_json();
    let p = pool_json(&doc, pool);
    let mut v: Vec<(String, u64, bool)> = p["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["resolved"].as_str().unwrap().to_string(),
                s["weight"].as_u64().unwrap(),
                s["backup"].as_bool().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn pool_json<'a>(doc: &'a serde_json::Value, pool: &str) -> &'a serde_json::Value {
    doc["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .expect("pool")
}

fn addrs(m: &[(String, u64, bool)]) -> Vec<String> {
    m.iter().map(|(a, _, _)| a.clone()).collect()
}

/// Waits until the pool's servers are `want` (sorted) and returns how long it took.
fn follow(f: &Fulcrum, pool: &str, want: &[SocketAddr]) -> Duration {
    let t = Instant::now();
    let mut want: Vec<String> = want.iter().map(|a| a.to_string()).collect();
    want.sort();
    let ok = wait_until(Duration::from_secs(10), || addrs(&members(f, pool)) == want);
    assert!(
        ok,
        "pool {pool} did not follow DNS to {want:?}: {:?}\n{}",
        members(f, pool),
        f.log_text()
    );
    t.elapsed()
}

const INTERVAL: Duration = Duration::from_secs(1);

#[test]
fn srv_pool_follows_dns_under_load_and_survives_the_dns_server_stopping() {
    // a, c on 127.0.0.1; b on 127.0.0.2 and, later, b2 on 127.0.0.4 with
    // b's port (the same SRV record, another address); e a backup.
    // b's port may be taken on 127.0.0.4 by another test's socket: then
    // start over with other ports.
    let (b, b2s) = (0..5)
        .find_map(|_| {
            let b = Backends::start_with(
                &[],
                &[
                    ("a", "127.0.0.1:0"),
                    ("b", "127.0.0.2:0"),
                    ("c", "127.0.0.1:0"),
                    ("e", "127.0.0.1:0"),
                ],
                &["--threads", "2"],
            );
            let b2_listen = format!("127.0.0.4:{}", b.addr("b").port());
            let b2s = Backends::try_start_with(&[], &[("b2", b2_listen.as_str())], &[])?;
            Some((b, b2s))
        })
        .expect("b2 on 127.0.0.4 with b's port, in five tries");
    let (a, bb, c, e) = (b.addr("a"), b.addr("b"), b.addr("c"), b.addr("e"));
    let b2 = b2s.addr("b2");
    let srv = |target: &str, port: u16, prio: u16, weight: u16| {
        format!("srv-host=_users._tcp.fulcrum.test,{target}.fulcrum.test,{port},{prio},{weight}\n")
    };
    let conf = [
        srv("a", a.port(), 0, 10),
        srv("b", bb.port(), 0, 10),
        srv("c", c.port(), 0, 20),
        srv("e", e.port(), 10, 1),
    ]
    .concat();
    let dns = Dnsmasq::start(
        &conf,
        "127.0.0.1 a.fulcrum.test e.fulcrum.test\n127.0.0.2 b.fulcrum.test\n",
    );
    let f = Fulcrum::start(&format!(
        "access_log: off\npools:\n  users:\n    discover: {{ srv: _users._tcp.fulcrum.test, resolvers: [\"{}\"], interval: 1s }}\nroutes:\n  - {{ prefix: /api, pool: users }}\n",
        dns.addr()
    ));
    // Looked up before serving; priority 10 is the backup tier, weights from the records.
    let mut start = vec![
        (a.to_string(), 10, false),
        (bb.to_string(), 10, false),
        (e.to_string(), 1, true),
    ];
    start.sort();
    assert_eq!(members(&f, "users"), start);

    let load = Load::start(
        f.addr,
        LoadSpec {
            keepalive: 2,
            fresh: 1,
            slow: 0,
            path: "/api/x".into(),
            slow_path: String::new(),
            pause: Duration::from_millis(10),
        },
    );
    // One slow request in flight on a when it leaves: it must finish.
    let slow_addr = f.addr;
    let mut slow = None;
    for n in 0..20 {
        let path = format!("/api/slow?delay_ms=2500&n={n}");
        let t = std::thread::spawn(move || {
            try_request(slow_addr, "GET", &path, &[], b"").map(|r| (r.status, r.backend()))
        });
        let tag = format!("&n={n}\"");
        let on = |name: &str| b.stats(name).contains(&tag);
        assert!(
            wait_until(Duration::from_secs(2), || on("a") || on("b")),
            "slow request {n} went nowhere"
        );
        if on("a") {
            slow = Some(t);
            break;
        }
        t.join().unwrap().unwrap();
    }
    let slow = slow.expect("no slow request landed on a");

    // 1. c gets an address: it joins.
    dns.set_hosts(
        "127.0.0.1 a.fulcrum.test c.fulcrum.test e.fulcrum.test\n127.0.0.2 b.fulcrum.test\n",
    );
    let added = follow(&f, "users", &[a, bb, c, e]);
    assert!(
        wait_until(Duration::from_secs(5), || b.requests("c") > 0),
        "c got no requests"
    );
    // a stayed: the same server, its slow request still counted in flight.
    let a_now = f.server_status("users", a);
    assert!(a_now["in_flight"].as_u64() >= Some(1), "{a_now}");

    // 2. a loses its address: it leaves, its slow request finishes.
    dns.set_hosts("127.0.0.1 c.fulcrum.test e.fulcrum.test\n127.0.0.2 b.fulcrum.test\n");
    let removed = follow(&f, "users", &[bb, c, e]);
    std::thread::sleep(Duration::from_millis(200));
    let a_seen = b.requests("a");
    let (status, by) = slow.join().unwrap().expect("the slow request on a failed");
    assert_eq!((status, by.as_str()), (200, "a"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.requests("a"), a_seen, "a got requests after it left");

    // 3. b's target moves to 127.0.0.4: the old address leaves, the new joins.
    dns.set_hosts("127.0.0.1 c.fulcrum.test e.fulcrum.test\n127.0.0.4 b.fulcrum.test\n");
    let moved = follow(&f, "users", &[b2, c, e]);
    assert!(
        wait_until(Duration::from_secs(5), || b2s.requests("b2") > 0),
        "b2 got no requests"
    );

    // The DNS server stops: the pool stays as it was, failures are counted.
    let before = members(&f, "users");
    let queries = dns.queries();
    let mut dns = dns;
    dns.stop();
    let failed = wait_until(Duration::from_secs(15), || {
        pool_json(&f.status_json(), "users")["discovery"]["failures"].as_u64() > Some(0)
    });
    assert!(
        failed,
        "no failure counted: {}",
        f.get("/nginx-status/json").body
    );
    std::thread::sleep(3 * INTERVAL);
    assert_eq!(members(&f, "users"), before);
    let served = load.stats.ok.load(Relaxed);
    assert!(
        wait_until(Duration::from_secs(5), || load.stats.ok.load(Relaxed)
            > served + 20),
        "requests stopped with the DNS server"
    );
    let stats = load.stop();
    assert_eq!(stats.failed.load(Relaxed), 0, "{}", stats.summary());
    assert!(stats.ok.load(Relaxed) > 100, "{}", stats.summary());
    assert_eq!(
        b.requests("e"),
        0,
        "the backup tier got traffic while primaries were up"
    );
    // c joined in the first change and stayed through the others: one
    // server all along, so fulcrum's count for it is c's own.
    f.assert_in_flight_returns_to_zero();
    assert_eq!(
        f.server_status("users", c)["requests"].as_u64(),
        Some(b.requests("c")),
        "c's state did not survive the later changes"
    );

    let doc = f.status_json();
    let d = &pool_json(&doc, "users")["discovery"];
    assert_eq!(d["type"], "srv");
    assert!(d["last_success_unix_ms"].as_u64().is_some(), "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("_users._tcp.fulcrum.test")),
        "{d}"
    );
    assert_eq!(d["changes"], 3, "{d}");
    let metrics = f.get("/nginx-status/metrics").body;
    let failures: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("fulcrum_discovery_lookups_total{pool=\"users\",result=\"failure\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no failure counter in\n{metrics}"));
    assert!(failures >= 1.0);
    let log = f.log_text();
    assert_eq!(
        log.matches("pool users: DNS lookup (SRV _users._tcp.fulcrum.test")
            .count(),
        1,
        "a failure streak is logged once (then once a minute):\n{log}"
    );
    assert!(queries > 3);
    // Each change shows within the interval plus one lookup and status
    // poll; 2 intervals leaves room for a loaded machine, and fails if the
    // pool waited for the TTL clamp (5 s) or missed a lookup.
    for (what, took) in [("add", added), ("remove", removed), ("change", moved)] {
        assert!(took < 2 * INTERVAL, "{what} took {took:?}");
    }
    eprintln!(
        "followed DNS: add {added:?}, remove {removed:?}, change address {moved:?} (interval {INTERVAL:?}); load: {}",
        stats.summary()
    );
}

#[test]
fn resolve_follows_a_records_and_a_reload_replaces_the_resolver() {
    // x's port may be taken on 127.0.0.3 by another test's socket: then
    // start over with another port.
    let (b, ys) = (0..5)
        .find_map(|_| {
            let b = Backends::start_with(&[], &[("x", "127.0.0.2:0")], &[]);
            let y_listen = format!("127.0.0.3:{}", b.addr("x").port());
            let ys = Backends::try_start_with(&[], &[("y", y_listen.as_str())], &[])?;
            Some((b, ys))
        })
        .expect("y on 127.0.0.3 with x's port, in five tries");
    let x = b.addr("x");
    let y = ys.addr("y");
    let one = Dnsmasq::start("", "127.0.0.2 svc.fulcrum.test\n");
    let two = Dnsmasq::start("", "127.0.0.3 svc.fulcrum.test\n");
    let body = |dns: &Dnsmasq| {
        format!(
            "access_log: off\npools:\n  app:\n    resolve: {{ interval: 1s, resolvers: [\"{}\"] }}\n    servers:\n      - {{ addr: \"svc.fulcrum.test:{}\", weight: 3 }}\nroutes:\n  - {{ prefix: /api, pool: app }}\n",
            dns.addr(),
            x.port()
        )
    };
    let f = Fulcrum::start(&body(&one));
    assert_eq!(members(&f, "app"), [(x.to_string(), 3, false)]);
    assert_eq!(f.get("/api/1").backend(), "x");

    // A second address joins with the entry's settings.
    one.set_hosts("127.0.0.2 svc.fulcrum.test\n127.0.0.3 svc.fulcrum.test\n");
    follow(&f, "app", &[x, y]);
    assert_eq!(members(&f, "app")[1], (y.to_string(), 3, false));

    // A reload to the other DNS server: the servers stay until its answer,
    // which it looks up at once; the old server is asked no more.
    rewrite_config(&f, &body(&two));
    signal(f.child.id(), "HUP");
    assert!(
        wait_log(&f.log, "generation 2 running", Duration::from_secs(10)),
        "{}",
        f.log_text()
    );
    follow(&f, "app", &[y]);
    std::thread::sleep(INTERVAL);
    let asked = one.queries();
    std::thread::sleep(3 * INTERVAL);
    assert_eq!(
        one.queries(),
        asked,
        "the replaced discovery still asks the old DNS server"
    );
    assert!(two.queries() > 0);
    assert_eq!(f.get("/api/2").backend(), "y");
}

#[test]
fn a_large_answer_comes_over_tcp_and_is_capped() {
    // 300 addresses for one name (loopback, never connected to: no
    // health check, no requests): too many for a UDP answer.
    let hosts: String = (0..300)
        .map(|i| format!("127.1.{}.{} many.fulcrum.test\n", i / 200, 1 + i % 200))
        .collect();
    let dns = Dnsmasq::start("", &hosts);
    let f = Fulcrum::start(&format!(
        "access_log: off\npools:\n  many:\n    resolve: {{ interval: 1s, resolvers: [\"{}\"] }}\n    servers: [{{ addr: \"many.fulcrum.test:80\" }}]\n",
        dns.addr()
    ));
    let m = members(&f, "many");
    assert_eq!(m.len(), 128, "{m:?}");
    // Lowest addresses first: the same 128 whatever order DNS gives.
    let got: std::collections::BTreeSet<SocketAddr> =
        m.iter().map(|(a, _, _)| a.parse().unwrap()).collect();
    let want: std::collections::BTreeSet<SocketAddr> = (1..=128)
        .map(|i| SocketAddr::from(([127, 1, 0, i], 80)))
        .collect();
    assert_eq!(got, want);
    let doc = f.status_json();
    let d = &pool_json(&doc, "many")["discovery"];
    assert_eq!(d["ignored_over_cap"], 172, "{d}");
    assert!(
        f.log_text()
            .contains("gave 300 addresses; the first 128 are servers"),
        "{}",
        f.log_text()
    );
}

#[test]
fn check_names_the_field_of_bad_discovery_settings() {
    let dir = TempDir::new("dns-check");
    let path = dir.path("bad.yaml");
    std::fs::write(
        &path,
        "pools:\n  users:\n    discover: { srv: users.service.consul, resolvers: [\"127.0.0.1\"], interval: 0s }\n  web:\n    resolve: { interval: 48h }\n    servers: [{ addr: \"web.internal:80\" }]\n",
    )
    .unwrap();
    let out = Command::new(FULCRUM)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for needle in [
        "pools.users.discover.srv: \"users.service.consul\" is not an SRV name _service._proto.name",
        "pools.users.discover.resolvers[0]: \"127.0.0.1\" is not an ip:port address",
        "pools.users.discover.interval: \"0s\" is out of range: 1s to 1h",
        "pools.web.resolve.interval: \"48h\" is out of range: 1s to 1h",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
}
