//! A blackholed server: its machine stops answering (packets are dropped,
//! so connects hang and established connections go silent). The server runs
//! in a network namespace this test creates, reached over a veth pair; a
//! blackhole route inside the namespace drops everything it would send back.
//! fulcrum runs in the root namespace next to a healthy server on loopback.
//!
//! Needs root (CAP_NET_ADMIN) and iproute2; fails with a clear message
//! otherwise. And the converse on loopback: a server that is alive but
//! stops reading an upload is not taken for a vanished one.

use crate::common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// What a request may take on top of `connect_timeout` on a loaded
/// 2-core machine (normal latency here is a few milliseconds).
const NORMAL_LATENCY: Duration = Duration::from_millis(150);
const INTERVAL: Duration = Duration::from_millis(200);
const CHECK_TIMEOUT: Duration = Duration::from_millis(150);
const FALL: u32 = 3;

/// Runs `ip ARGS`, panicking with its output on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e} (is iproute2 installed?)"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace linked to the root namespace by a veth pair with a private
/// /30 between them; everything it created is removed on drop.
struct Netns {
    name: String,
    host_if: String,
    /// Address of the root side of the link.
    host_ip: String,
    /// Address inside the namespace.
    ns_ip: String,
}

impl Netns {
    fn create() -> Netns {
        let pid = std::process::id();
        let name = format!("fulcrum-bh-{pid}");
        let probe = Command::new("ip").args(["netns", "add", &name]).output();
        match probe {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "this test needs to create network namespaces (root with CAP_NET_ADMIN); \
                 run the suite as root (deploy/test.sh under sudo): ip netns add: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("this test needs iproute2 (`ip`): {e}"),
        }
        let (net, host_ip, ns_ip) = free_subnet(pid);
        let ns = Netns {
            host_if: format!("fbh{}", pid % 1_000_000),
            name,
            host_ip,
            ns_ip,
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}/30", ns.ns_ip),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
        println!("blackhole: namespace {} on {net}", ns.name);
        ns
    }

    /// Drops every packet the namespace sends to the root side: SYN-ACKs,
    /// ACKs and responses vanish, as if the machine had gone away.
    fn blackhole(&self) {
        ip(&[
            "-n",
            &self.name,
            "route",
            "add",
            "blackhole",
            &format!("{}/32", self.host_ip),
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the host end removes the pair at once, even while a
        // process still holds the namespace.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A 10.x.y.z/30 that no route of the root namespace covers except the
/// default route; returns (network, host address, namespace address).
fn free_subnet(seed: u32) -> (String, String, String) {
    for i in 0..256u32 {
        let n = seed.wrapping_add(i.wrapping_mul(7919));
        let (b, c, d) = (100 + n % 100, (n / 100) % 256, (n % 64) * 4);
        let net = format!("10.{b}.{c}.{d}");
        let out = Command::new("ip")
            .args(["-4", "route", "show", "match", &format!("{net}/30")])
            .output()
            .expect("ip route");
        let routes = String::from_utf8_lossy(&out.stdout);
        if routes.lines().all(|l| l.starts_with("default")) {
            return (
                format!("{net}/30"),
                format!("10.{b}.{c}.{}", d + 1),
                format!("10.{b}.{c}.{}", d + 2),
            );
        }
    }
    panic!("no free 10.x.y.z/30 found in the root namespace's routes");
}

#[test]
fn a_blackholed_server_costs_at_most_connect_timeout_and_requests_keep_succeeding() {
    let ns = Netns::create();
    let wrapper = ["ip", "netns", "exec", ns.name.as_str()];
    let far_listen = format!("{}:0", ns.ns_ip);
    let far = Backends::start_with(&wrapper, &[("far", far_listen.as_str())], &[]);
    let near = Backends::start(&["near"], &[]);
    let (far_addr, near_addr) = (far.addr("far"), near.addr("near"));
    let f = Fulcrum::start(&one_pool(
        "svc",
        "/api",
        &[far_addr, near_addr],
        &format!(
            "connect_timeout: {}ms\nmax_fails: 3\nfail_timeout: 30s\n\
             health_check: {{ interval: {}ms, timeout: {}ms, rise: 2, fall: {FALL} }}",
            CONNECT_TIMEOUT.as_millis(),
            INTERVAL.as_millis(),
            CHECK_TIMEOUT.as_millis()
        ),
    ));

    // Both serve, so fulcrum holds pooled connections to the far server too.
    let warm: Vec<String> = (0..10).map(|_| f.get("/api/x").backend()).collect();
    assert!(warm.contains(&"far".to_string()), "{warm:?}");

    // Watch the JSON status for the active checks' verdict.
    let marked: Arc<Mutex<Option<Duration>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    ns.blackhole();
    let t0 = Instant::now();
    let watcher = {
        let (marked, stop, addr) = (Arc::clone(&marked), Arc::clone(&stop), f.addr);
        thread::spawn(move || {
            while !stop.load(SeqCst) {
                let doc: serde_json::Value =
                    serde_json::from_str(&get(addr, "/nginx-status/json").body).unwrap();
                let healthy = doc["pools"][0]["servers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["resolved"] == far_addr.to_string())
                    .map(|s| s["active"]["healthy"] == true)
                    .unwrap();
                if !healthy {
                    *marked.lock().unwrap() = Some(t0.elapsed());
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // Sequential requests until 2s after the checks marked it down.
    let mut latencies = vec![];
    let mut failed = vec![];
    let mut down_at = None;
    while latencies.len() < 40
        || down_at.is_none_or(|d: Duration| t0.elapsed() < d + Duration::from_secs(2))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the checks never marked it down"
        );
        let start = Instant::now();
        let r = try_request(
            f.addr,
            "GET",
            &format!("/api/x?i={}", latencies.len()),
            &[],
            b"",
        );
        latencies.push(start.elapsed());
        match r {
            Ok(r) if r.status == 200 && r.backend() == "near" => {}
            other => failed.push(format!("{other:?}")),
        }
        down_at = *marked.lock().unwrap();
    }
    stop.store(true, SeqCst);
    watcher.join().unwrap();

    let worst = latencies.iter().max().unwrap();
    let slow = latencies
        .iter()
        .filter(|l| **l > Duration::from_millis(100))
        .count();
    let down_at = down_at.unwrap();
    println!(
        "blackhole: {} requests, {} failed, worst latency {worst:?}, {slow} over 100ms; \
         health checks marked it down after {down_at:?}",
        latencies.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    // A new connection costs connect_timeout; a pooled one goes silent and
    // is aborted by TCP_USER_TIMEOUT, which a short minimum RTO lets the
    // kernel act on in time (needs Linux 6.15+ for TCP_RTO_MIN_US).
    assert!(
        *worst < CONNECT_TIMEOUT + NORMAL_LATENCY,
        "a request took {worst:?} (connect_timeout {CONNECT_TIMEOUT:?})"
    );
    let hit: Vec<AccessLine> = f
        .wait_access_log(latencies.len())
        .into_iter()
        .filter(|l| l.upstreams.first() == Some(&far_addr) && l.uri.starts_with("/api/x?i="))
        .collect();
    assert!(!hit.is_empty(), "no request met the blackholed server");
    for l in &hit {
        println!("blackhole: {}", l.raw);
        assert_eq!(l.upstreams, vec![far_addr, near_addr], "{}", l.raw);
        assert_eq!((l.status, l.upstream_statuses[1]), (200, 200), "{}", l.raw);
    }
    // The first failing check starts within one interval and ends after its
    // timeout: fall × interval + timeout, plus scheduling slack.
    let bound = FALL * INTERVAL + CHECK_TIMEOUT + Duration::from_secs(1);
    assert!(
        down_at <= bound,
        "marked down after {down_at:?}, bound {bound:?}"
    );
    let s = f.server_status("svc", far_addr);
    assert_eq!(s["state"], "unhealthy", "{s}");
    assert!(
        s["active"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("timed out"),
        "{s}"
    );
    f.assert_in_flight_returns_to_zero();
}

/// How long the server below does nothing before it reads the body: well
/// past the user timeout (40% of its 300 ms `connect_timeout`).
const PAUSE: Duration = Duration::from_secs(2);
/// Large enough to fill the server's small receive buffer and wait.
const UPLOAD: usize = 2 << 20;

/// The other side of the same TCP settings: a server that is alive but
/// stops reading for a while (a busy worker, an upload read at the pace of
/// a disk) holds its receive window shut, and the kernel would abort the
/// connection after the user timeout. The upload must go through, as it
/// does through nginx (`proxy_send_timeout` only). Loopback, no namespace.
#[test]
fn a_server_that_pauses_reading_a_large_upload_still_gets_it() {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // Set before listen, so the accepted connection starts with it.
    sock.set_recv_buffer_size(32 * 1024).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(8).unwrap();
    let listener: std::net::TcpListener = sock.into();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut head = vec![];
        let body_start = loop {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "fulcrum closed before the head was in");
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        thread::sleep(PAUSE);
        let mut got = head.len() - body_start;
        while got < UPLOAD {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        let body = got.to_string();
        let _ = c.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        got
    });
    let f = Fulcrum::start(&format!(
        "limits:\n  client_max_body_size: 0\n{}",
        one_pool(
            "svc",
            "/up",
            &[addr],
            &format!(
                "connect_timeout: {}ms\nwrite_timeout: 30s\nread_timeout: 30s",
                CONNECT_TIMEOUT.as_millis()
            )
        )
    ));
    let mut request =
        format!("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {UPLOAD}\r\n\r\n").into_bytes();
    request.resize(request.len() + UPLOAD, b'u');
    let answer = raw::exchange(f.addr, &request, Duration::ZERO);
    let got = server.join().unwrap();
    assert_eq!(
        got,
        UPLOAD,
        "the server got {got} of {UPLOAD} bytes; fulcrum answered {}",
        answer.summary()
    );
    assert_eq!(answer.status(), 200, "{}", answer.summary());
    assert_eq!(answer.response.unwrap().body, UPLOAD.to_string());
}
