//! The deployment the project exists for: two machines in network
//! namespaces (deploy/demo.sh), each running fulcrum with conf/machineN.yaml
//! in front of the reference services, and a client namespace. Asserts the
//! deployment's promises end to end: both balancers serve every prefix, a
//! service's requests split between the machines, a crashed service and a
//! vanished machine cost no failed request, and deploy/test-load-balancing.sh
//! passes. Needs root for namespaces; fails with a clear message otherwise.

use crate::common::*;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const M1: &str = "10.77.0.1";
const M2: &str = "10.77.0.2";
/// conf/machine*.yaml: connect_timeout 1s, health checks every 10s, rise 2,
/// max_fails 3 within fail_timeout 10s.
const CONNECT_TIMEOUT: f64 = 1.0;
const RECOVERY_BOUND: Duration = Duration::from_secs(35);

/// The demo, brought down (processes and namespaces) on drop.
struct Demo {
    prefix: String,
    state: std::path::PathBuf,
    _shared: Shared,
}

impl Demo {
    fn script(&self, args: &[&str]) -> Output {
        Command::new(repo_path("deploy/demo.sh"))
            .args(args)
            .env("DEMO_PREFIX", &self.prefix)
            .env("DEMO_STATE", &self.state)
            .env("FULCRUM_BIN", FULCRUM)
            .env("DEMO_BIN", DEMO)
            .output()
            .expect("run deploy/demo.sh")
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.script(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "demo.sh {args:?} failed:\n{text}");
        text
    }

    fn client_ns(&self) -> String {
        format!("{}-client", self.prefix)
    }

    /// Sequential GETs from the client namespace, one curl process.
    fn fetch(&self, urls: &[String]) -> Vec<Fetched> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client_ns(),
                "curl",
                "-s",
                "--max-time",
                "10",
            ])
            .args(["-w", "\n@@%{http_code} %{time_total}\n"])
            .args(urls)
            .output()
            .expect("curl in the client namespace");
        parse_fetched(&String::from_utf8_lossy(&out.stdout))
    }

    fn namespaces(&self) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
            .map(str::to_string)
            .collect()
    }

    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![];
        for dir in [
            self.state.clone(),
            self.state.join("run-m1"),
            self.state.join("run-m2"),
        ] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.path().extension().is_some_and(|x| x == "pid") {
                        if let Ok(p) = std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .trim()
                            .parse()
                        {
                            pids.push(p);
                        }
                    }
                }
            }
        }
        pids
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.script(&["down"]);
    }
}

/// One transfer's result.
#[derive(Debug)]
struct Fetched {
    status: u16,
    seconds: f64,
    backend: String,
}

fn parse_fetched(text: &str) -> Vec<Fetched> {
    let mut out = vec![];
    let mut body = String::new();
    for line in text.lines() {
        if let Some(meta) = line.strip_prefix("@@") {
            let mut it = meta.split_whitespace();
            let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::MAX);
            let backend = serde_json::from_str::<serde_json::Value>(body.trim())
                .ok()
                .and_then(|v| v["server"].as_str().map(str::to_string))
                .unwrap_or_default();
            out.push(Fetched {
                status,
                seconds,
                backend,
            });
            body.clear();
        } else {
            body.push_str(line);
        }
    }
    out
}

fn urls(balancer: &str, path: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "http://{balancer}:8080{path}{}r={i}",
                if path.contains('?') { "&" } else { "?" }
            )
        })
        .collect()
}

fn require_namespaces() {
    let probe = format!("fulcrum-probe-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    }
    assert!(
        ok,
        "this test needs to create network namespaces (root with CAP_NET_ADMIN and iproute2); \
         run the suite as root (deploy/test.sh under sudo)"
    );
    let curl = Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(curl, "this test needs curl (deploy/test.sh installs it)");
}

#[test]
fn two_machine_deployment_survives_a_crashed_service_and_a_vanished_machine() {
    require_namespaces();
    let demo = Demo {
        prefix: format!("ft{}", std::process::id() % 100_000),
        state: std::env::temp_dir().join(format!("fulcrum-two-machines-{}", std::process::id())),
        _shared: shared(),
    };
    demo.run(&["up"]);

    // Both balancers answer /health and every prefix.
    for m in [M1, M2] {
        let r = demo.fetch(&[format!("http://{m}:8080/health")]);
        assert_eq!(r[0].status, 200, "/health on {m}");
        for p in ["/api/users", "/api/products", "/api/orders"] {
            let r = demo.fetch(&[format!("http://{m}:8080{p}")]);
            assert_eq!(r[0].status, 200, "{p} through {m}");
        }
    }

    // 20 sequential requests through one balancer split evenly.
    let r = demo.fetch(&urls(M1, "/api/users", 20));
    let on_m1 = r.iter().filter(|f| f.backend == "user-m1").count();
    let on_m2 = r.iter().filter(|f| f.backend == "user-m2").count();
    assert!(r.iter().all(|f| f.status == 200));
    assert_eq!((on_m1, on_m2), (10, 10), "split of 20 requests through m1");
    println!("split through m1: user-m1={on_m1} user-m2={on_m2}");

    // Crash the user service on m1 while clients go through both balancers.
    let clients: Vec<_> = [M1, M2]
        .into_iter()
        .map(|m| {
            let ns = demo.client_ns();
            let list = urls(m, "/api/users?delay_ms=10", 150);
            std::thread::spawn(move || {
                let out = Command::new("ip")
                    .args(["netns", "exec", &ns, "curl", "-s", "--max-time", "10"])
                    .args(["-w", "\n@@%{http_code} %{time_total}\n"])
                    .args(&list)
                    .output()
                    .unwrap();
                parse_fetched(&String::from_utf8_lossy(&out.stdout))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(600));
    demo.run(&["stop-service", "m1", "user"]);
    for (c, m) in clients.into_iter().zip([M1, M2]) {
        let r = c.join().unwrap();
        assert_eq!(r.len(), 150, "every request answered through {m}");
        let failed = r.iter().filter(|f| f.status != 200).count();
        assert_eq!(
            failed, 0,
            "failed requests through {m} while user-m1 crashed"
        );
        let tail = &r[r.len() - 40..];
        assert!(
            tail.iter().all(|f| f.backend == "user-m2"),
            "after the crash every request through {m} reaches m2's replica"
        );
        println!(
            "service crash, through {m}: {} requests, {failed} failed",
            r.len()
        );
    }
    demo.run(&["start-service", "m1", "user"]);

    // Machine 2 vanishes: m1's balancer keeps serving every prefix.
    demo.run(&["machine-down", "m2"]);
    let mut worst = 0.0f64;
    let mut sent = 0;
    for round in 0..4 {
        for p in ["/api/users", "/api/products", "/api/orders"] {
            let r = demo.fetch(&urls(M1, &format!("{p}?round={round}"), 5));
            for f in &r {
                assert_eq!(f.status, 200, "{p} through m1 while m2 is down");
                assert!(
                    f.seconds < CONNECT_TIMEOUT + 0.5,
                    "{p} took {:.3}s; bound is connect_timeout plus normal latency",
                    f.seconds
                );
                worst = worst.max(f.seconds);
            }
            sent += r.len();
            assert!(
                r.iter().all(|f| f.backend.ends_with("-m1")),
                "{p}: only m1 can answer"
            );
        }
    }
    println!("machine 2 down: {sent} requests through m1, 0 failed, worst latency {worst:.3}s");

    // Machine 2 returns: its servers get traffic again.
    demo.run(&["machine-up", "m2"]);
    let back = Instant::now();
    let returned = wait_until(RECOVERY_BOUND, || {
        let r = demo.fetch(&urls(M1, "/api/orders", 4));
        r.iter().all(|f| f.status == 200) && r.iter().any(|f| f.backend == "order-m2")
    });
    assert!(
        returned,
        "order-m2 got no traffic within {RECOVERY_BOUND:?} of m2's return"
    );
    println!(
        "machine 2 back in rotation after {:.1}s",
        back.elapsed().as_secs_f64()
    );

    // Wait until both machines are in rotation everywhere, then verify with
    // the operator's script.
    let settled = wait_until(RECOVERY_BOUND, || {
        [M1, M2].iter().all(|m| {
            ["/api/users", "/api/products", "/api/orders"]
                .iter()
                .all(|p| {
                    let r = demo.fetch(&urls(m, p, 6));
                    let first = &r[0].backend;
                    r.iter().all(|f| f.status == 200) && r.iter().any(|f| &f.backend != first)
                })
        })
    });
    assert!(settled, "both machines did not return to rotation");
    let out = Command::new(repo_path("deploy/test-load-balancing.sh"))
        .args([
            "--via",
            &format!("ip netns exec {}", demo.client_ns()),
            M1,
            M2,
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "test-load-balancing.sh failed:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Everything the demo created is gone afterwards.
    let pids = demo.pids();
    assert!(pids.len() >= 8, "demo recorded its processes: {pids:?}");
    demo.run(&["down"]);
    assert!(
        demo.namespaces().is_empty(),
        "namespaces left: {:?}",
        demo.namespaces()
    );
    let alive: Vec<u32> = pids.into_iter().filter(|p| pid_alive(*p)).collect();
    assert!(alive.is_empty(), "processes left: {alive:?}");
}

/// `demo.sh up --tls` (conf/machineN-tls.yaml): the same deployment with the
/// traffic between the machines over TLS with client certificates. A
/// capture on the switch between the machines (tcpdump, in the switch's
/// namespace) holds their TLS traffic and not one byte of plain HTTP; a
/// crashed service behind the other machine still costs no request.
#[test]
fn encrypted_two_machines_send_no_plain_http_between_them() {
    require_namespaces();
    assert!(
        Command::new("tcpdump").arg("--version").output().is_ok(),
        "this test needs tcpdump (deploy/test.sh installs it)"
    );
    let demo = Demo {
        prefix: format!("fe{}", std::process::id() % 100_000),
        state: std::env::temp_dir()
            .join(format!("fulcrum-two-machines-tls-{}", std::process::id())),
        _shared: shared(),
    };
    demo.run(&["up", "--tls"]);
    let pcap = demo.state.join("between.pcap");
    let mut capture = Command::new("ip")
        .args(["netns", "exec", &format!("{}-sw", demo.prefix)])
        .args(["tcpdump", "-i", "br0", "-U", "-s", "0", "-w"])
        .arg(&pcap)
        .arg(format!("host {M1} and host {M2}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tcpdump");
    // tcpdump says "listening on" once it captures.
    let mut err = capture.stderr.take().unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("listening on") && Instant::now() < deadline {
        let mut buf = [0u8; 256];
        match std::io::Read::read(&mut err, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }

    // Every prefix through both machines; each balancer's requests split
    // between its own service and the other machine's (over TLS).
    let mut remote = 0;
    for (m, other) in [(M1, "m2"), (M2, "m1")] {
        for p in ["/api/users", "/api/products", "/api/orders"] {
            let r = demo.fetch(&urls(m, p, 6));
            assert!(r.iter().all(|f| f.status == 200), "{p} through {m}: {r:?}");
            remote += r.iter().filter(|f| f.backend.ends_with(other)).count();
        }
    }
    assert!(
        remote >= 12,
        "requests that crossed to the other machine: {remote} of 36"
    );

    // The services answer only on their own machine's loopback.
    let direct = demo.fetch(&[format!("http://{M2}:3011/health")]);
    assert_eq!(
        direct[0].status, 0,
        "m2's user service reachable from outside"
    );
    // The peer address refuses a client without a certificate.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &demo.client_ns(),
            "curl",
            "-sk",
            "--max-time",
            "5",
        ])
        .arg(format!("https://{M2}:8443/api/users"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "no client certificate, yet served");

    // m2's user service crashes: m1's requests sent there come back 502
    // and are tried on m1's own.
    demo.run(&["stop-service", "m2", "user"]);
    let r = demo.fetch(&urls(M1, "/api/users", 20));
    let failed = r.iter().filter(|f| f.status != 200).count();
    assert_eq!(failed, 0, "through m1 with user-m2 down: {r:?}");
    assert!(r.iter().all(|f| f.backend == "user-m1"));

    std::thread::sleep(Duration::from_millis(300));
    crate::common::signal(capture.id(), "INT");
    let _ = capture.wait();
    let bytes = std::fs::read(&pcap).expect("the capture");
    assert!(
        bytes.len() > 20_000,
        "a capture of the traffic between the machines: {} bytes",
        bytes.len()
    );
    // Case as sent: the ClientHello names "http/1.1" in clear (ALPN), as
    // every TLS client does; a request or status line says "HTTP/1.1".
    for plain in [
        "HTTP/1.1\r\n",
        "HTTP/1.1 200",
        "GET /api",
        "/api/users",
        "user-m1",
        "user-m2",
        "X-Forwarded-For",
        "x-forwarded-for",
    ] {
        assert!(
            !bytes.windows(plain.len()).any(|w| w == plain.as_bytes()),
            "{plain:?} in clear between the machines"
        );
    }
    println!(
        "encrypted: {remote} of 36 requests crossed machines; {} bytes captured between them, no plain HTTP",
        bytes.len()
    );
}
