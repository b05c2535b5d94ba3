//! HTTP/2 abuse (issue #26), on a TLS listener (ALPN h2) and on an h2c
//! one (prior knowledge): rapid reset (CVE-2023-44487), CONTINUATION
//! flood (CVE-2024-27316 class), SETTINGS flood, a client whose flow
//! control window stays 0, an HPACK bomb, and clients that say nothing.
//! The hostile clients are h2_abuse/abuse.py (Python's `h2`/`hpack`
//! libraries and hand-made frames over raw sockets), which reports what
//! the server did as JSON; the assertions are here. After every case a
//! normal HTTP/2 request from a fresh connection (curl) is served, and
//! fulcrum's resident memory grew by less than [`RSS_BOUND_KIB`].

use crate::common::certs::Pki;
use crate::common::*;
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Most that a case may add to fulcrum's resident memory.
const RSS_BOUND_KIB: u64 = 20 * 1024;
/// `limits.client_header_timeout`, `keepalive_timeout` (the HTTP/2 idle
/// timeout), `client_body_timeout`, `send_timeout` and the pools' read and
/// write timeouts.
const TIMEOUTS: Duration = Duration::from_secs(2);
/// fulcrum's SETTINGS_MAX_CONCURRENT_STREAMS (nginx's default).
const MAX_CONCURRENT_STREAMS: u64 = 128;
/// HTTP/2 error codes (RFC 9113 §7).
const ENHANCE_YOUR_CALM: u64 = 0xb;
const REFUSED_STREAM: u64 = 0x7;

/// Backends `a` (echo) and `probe` (echo, for a client that checks fulcrum
/// stays responsive) and `big` (8 MB bodies) behind a fulcrum with a TLS
/// listener and an h2c listener, both with `http2`.
struct H2 {
    pki: Pki,
    tls_port: u16,
    h2c_port: u16,
    f: Fulcrum,
    b: Backends,
    _big: Backends,
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Tls,
    H2c,
}

const BOTH: [Via; 2] = [Via::H2c, Via::Tls];

impl H2 {
    fn start() -> H2 {
        let pki = Pki::new("fulcrum test CA");
        let site = pki.server("localhost", &["DNS:localhost", "IP:127.0.0.1"]);
        let b = Backends::start(&["a", "probe"], &[]);
        let big = Backends::start(&["big"], &["--body-size", "8000000"]);
        let tls = format!(
            "{{ addr: \"127.0.0.1:{{port}}\", http2: true, tls: {{ certificates: [{{ cert: {}, key: {} }}], handshake_timeout: 2s }} }}",
            site.cert.display(),
            site.key.display()
        );
        let h2c = "{ addr: \"127.0.0.1:{port}\", http2: true }";
        let t = TIMEOUTS.as_secs();
        let body = format!(
            "access_log: off\nlimits:\n  client_header_timeout: {t}s\n  keepalive_timeout: {t}s\n  client_body_timeout: {t}s\n  send_timeout: {t}s\n\
             pools:\n  svc:\n    servers: [{{ addr: \"{}\" }}]\n  probe:\n    servers: [{{ addr: \"{}\" }}]\n\
             \x20 big:\n    read_timeout: {t}s\n    write_timeout: {t}s\n    servers: [{{ addr: \"{}\" }}]\n\
             routes:\n  - {{ prefix: /api, pool: svc }}\n  - {{ prefix: /probe, pool: probe }}\n  - {{ prefix: /big, pool: big }}\n",
            b.addr("a"),
            b.addr("probe"),
            big.addr("big"),
        );
        let (f, ports) = Fulcrum::start_listening(&[&tls, h2c], &body);
        H2 {
            pki,
            tls_port: ports[0],
            h2c_port: ports[1],
            f,
            b,
            _big: big,
        }
    }

    /// Runs abuse.py `case` against `via` with `args`; its JSON report.
    fn abuse(&self, via: Via, case: &str, args: &[&str]) -> Value {
        let script = repo_path("tests/integration/h2_abuse/abuse.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(case).arg("127.0.0.1");
        match via {
            Via::H2c => cmd.arg(self.h2c_port.to_string()),
            Via::Tls => cmd
                .arg(self.tls_port.to_string())
                .arg("--tls")
                .arg(self.pki.ca()),
        };
        let out = run_bounded(cmd.args(args), Duration::from_secs(60));
        assert!(
            out.status.success(),
            "abuse.py {case} {via:?} {args:?} (deploy/test.sh installs python3 and h2): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "abuse.py output ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A normal HTTP/2 request on a fresh connection (curl) is answered.
    fn assert_h2_ok(&self, via: Via, after: &str) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .args(["--max-time", "10"]);
        match via {
            Via::H2c => cmd
                .arg("--http2-prior-knowledge")
                .arg(format!("http://127.0.0.1:{}/api/after", self.h2c_port)),
            Via::Tls => cmd
                .arg("--http2")
                .arg("--cacert")
                .arg(self.pki.ca())
                .arg("--resolve")
                .arg(format!("localhost:{}:127.0.0.1", self.tls_port))
                .arg(format!("https://localhost:{}/api/after", self.tls_port)),
        };
        let out = cmd.output().expect("run curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200 2",
            "a normal HTTP/2 request ({via:?}) after {after}: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.f.log_text())
        );
    }

    fn assert_rss_bounded(&self, before: u64, what: &str) {
        let after = self.f.rss_kib();
        println!("VmRSS {what}: {before} KiB before, {after} KiB after");
        assert!(
            after < before + RSS_BOUND_KIB,
            "{what}: VmRSS grew from {before} to {after} KiB"
        );
    }

    /// Requests the backend `a` has received so far.
    fn forwarded(&self) -> u64 {
        self.b.requests("a")
    }
}

/// The last lines of a log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A client that keeps asking fulcrum for `/probe` (HTTP/1.1, fresh
/// connections) while an attack runs: how many were answered 200, and
/// the failures.
struct Prober {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Prober {
    fn start(f: &Fulcrum) -> Prober {
        let addr = f.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (s, o) = (Arc::clone(&stop), Arc::clone(&ok));
        let thread = std::thread::spawn(move || {
            let mut failures = vec![];
            while !s.load(Relaxed) {
                match try_request(addr, "GET", "/probe/x", &[], b"") {
                    Ok(r) if r.status == 200 => {
                        o.fetch_add(1, Relaxed);
                    }
                    Ok(r) => failures.push(format!("{} {}", r.status, r.body)),
                    Err(e) => failures.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            failures
        });
        Prober { stop, ok, thread }
    }

    /// Stops; asserts every request was answered, and some were made.
    fn finish(self, what: &str) {
        self.stop.store(true, Relaxed);
        let failures = self.thread.join().unwrap();
        let ok = self.ok.load(Relaxed);
        println!("{what}: another client got {ok} answers meanwhile");
        assert!(
            failures.is_empty() && ok > 0,
            "{what}: another client, {ok} answered, failures: {failures:?}"
        );
    }
}

fn conns(v: &Value) -> &Vec<Value> {
    v["conns"].as_array().expect("conns")
}

/// The server ended the connection: a GOAWAY, or closed (a reset may
/// discard a GOAWAY that was on its way).
fn ended(c: &Value) -> bool {
    !c["goaway"].is_null() || c["closed"] == true
}

#[test]
fn rapid_reset_is_cut_off_and_hardly_reaches_the_backend() {
    let h = H2::start();
    let before = h.f.rss_kib();
    let prober = Prober::start(&h.f);
    let n = 5000;
    for via in BOTH {
        // Back to back, and in batches whose resets come 5 ms after their
        // HEADERS (the requests are under way by then).
        for delay in ["0", "5"] {
            let seen = h.forwarded();
            let r = h.abuse(
                via,
                "rapid_reset",
                &[
                    "--n",
                    &n.to_string(),
                    "--conns",
                    "4",
                    "--path",
                    "/api/rr",
                    "--delay-ms",
                    delay,
                ],
            );
            // Cancelled requests still on their way have arrived.
            std::thread::sleep(Duration::from_millis(500));
            let forwarded = h.forwarded() - seen;
            let summary: Vec<String> = conns(&r)
                .iter()
                .map(|c| {
                    format!(
                        "{} sent, GOAWAY {} {}",
                        c["sent"], c["goaway"], c["goaway_debug"]
                    )
                })
                .collect();
            println!(
                "rapid reset {via:?}, delay {delay} ms: {} streams opened and reset on 4 connections in {} s, {forwarded} forwarded; {summary:?}",
                r["sent"], r["elapsed"]
            );
            for c in conns(&r) {
                assert!(
                    ended(c) && c["sent"].as_u64().unwrap() < n,
                    "{via:?} delay {delay}: the server let a connection reset {} streams without ending it: {c}",
                    c["sent"]
                );
            }
            assert!(
                forwarded <= MAX_CONCURRENT_STREAMS * 4,
                "{via:?} delay {delay}: {forwarded} of {} reset requests forwarded",
                r["sent"]
            );
        }
        h.assert_h2_ok(via, "rapid reset");
    }
    prober.finish("rapid reset");
    h.assert_rss_bounded(before, "rapid reset, 16 connections");
}

#[test]
fn a_continuation_flood_gets_goaway_and_never_reaches_the_backend() {
    let h = H2::start();
    let before = h.f.rss_kib();
    let seen = h.forwarded();
    let n = 10_000;
    for via in BOTH {
        // CONTINUATION frames of 8 header fields of 1 KB each, and empty ones.
        for empty in [false, true] {
            let mut args = vec!["--n", "10000", "--conns", "20", "--path", "/api/flood"];
            if empty {
                args.push("--empty");
            }
            let r = h.abuse(via, "continuation_flood", &args);
            let c0 = &conns(&r)[0];
            println!(
                "CONTINUATION flood {via:?} (empty: {empty}), 20 connections: first one got GOAWAY {} {:?} after {} frames, closed after {} s",
                c0["goaway"], c0["goaway_debug"], c0["continuations_sent"], c0["closed_after"]
            );
            for c in conns(&r) {
                assert!(
                    ended(c)
                        && c["closed"] == true
                        && c["continuations_sent"].as_u64().unwrap() < n,
                    "{via:?} (empty: {empty}): the flood was not stopped: {c}"
                );
                assert!(
                    c["goaway"].is_null() || c["goaway"] == ENHANCE_YOUR_CALM || c["goaway"] == 9,
                    "{via:?}: GOAWAY with {c}"
                );
            }
        }
        h.assert_h2_ok(via, "a CONTINUATION flood");
    }
    assert_eq!(
        h.forwarded() - seen,
        2,
        "only the 2 normal requests after the floods reach the backend"
    );
    h.assert_rss_bounded(before, "CONTINUATION flood, 80 connections");
}

#[test]
fn a_settings_flood_is_bounded_and_the_connection_ends() {
    let h = H2::start();
    let before = h.f.rss_kib();
    let prober = Prober::start(&h.f);
    for via in BOTH {
        // 1,000,000 SETTINGS frames (21 MB), none of the ACKs read: the
        // server must stop reading or drop the connection rather than
        // queue 9 MB of ACKs.
        let wait = (TIMEOUTS * 5).as_secs().to_string();
        let r = h.abuse(via, "settings_flood", &["--n", "1000000", "--wait", &wait]);
        println!("SETTINGS flood {via:?}: {r}");
        assert!(
            ended(&r),
            "{via:?}: connection still open {wait} s after a SETTINGS flood: {r}"
        );
        h.assert_h2_ok(via, "a SETTINGS flood");
    }
    prober.finish("SETTINGS flood");
    h.assert_rss_bounded(before, "SETTINGS flood, 2 connections");
}

#[test]
fn a_client_that_never_opens_its_window_does_not_hold_streams_forever() {
    let h = H2::start();
    let before = h.f.rss_kib();
    // Stream windows of 0, 10 streams on each of 5 connections per
    // listener, each asking for 8 MB. Every timeout of the config is 2 s.
    let limit = TIMEOUTS * 6;
    let wait = limit.as_secs().to_string();
    let runs: Vec<_> = BOTH
        .iter()
        .map(|&via| {
            let (pki_ca, tls, h2c) = (h.pki.ca(), h.tls_port, h.h2c_port);
            let wait = wait.clone();
            std::thread::spawn(move || {
                let script = repo_path("tests/integration/h2_abuse/abuse.py");
                let mut cmd = Command::new("python3");
                cmd.arg(script).args(["zero_window", "127.0.0.1"]);
                match via {
                    Via::H2c => cmd.arg(h2c.to_string()),
                    Via::Tls => cmd.arg(tls.to_string()).arg("--tls").arg(pki_ca),
                };
                cmd.args([
                    "--path",
                    "/big",
                    "--conns",
                    "5",
                    "--streams",
                    "10",
                    "--wait",
                    &wait,
                ]);
                (via, run_bounded(&mut cmd, Duration::from_secs(60)))
            })
        })
        .collect();
    // While the streams are held (send_timeout cuts them after 2 s).
    std::thread::sleep(TIMEOUTS / 2);
    let held = h.f.rss_kib();
    let prober = Prober::start(&h.f);
    let mut failures = vec![];
    for run in runs {
        let (via, out) = run.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        let responses: u64 = conns(&r)
            .iter()
            .map(|c| c["responses"].as_u64().unwrap())
            .sum();
        let data: u64 = conns(&r).iter().map(|c| c["data"].as_u64().unwrap()).sum();
        let ended_after: Vec<&Value> = conns(&r).iter().map(|c| &c["ended_after"]).collect();
        println!(
            "zero window {via:?}: {responses} response headers, {data} body bytes; connections ended after {ended_after:?} s (waited {} s)",
            r["waited"]
        );
        for c in conns(&r) {
            if c["ended_after"].is_null() {
                failures.push(format!(
                    "{via:?}: after {wait} s, {} stream(s) of a zero-window connection neither reset nor closed: {c}",
                    10 - c["resets"].as_u64().unwrap()
                ));
            }
        }
    }
    prober.finish("zero-window clients");
    println!("VmRSS with 100 zero-window streams held: {before} KiB before, {held} KiB while held");
    for via in BOTH {
        h.assert_h2_ok(via, "zero-window clients");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_hpack_bomb_is_refused_and_never_forwarded() {
    let h = H2::start();
    let before = h.f.rss_kib();
    for via in BOTH {
        // 20 references: 79 KB decoded, over max_header_size (32k): 431.
        let r = h.abuse(
            via,
            "hpack_bomb",
            &["--n", "20", "--conns", "5", "--path", "/api/hpack"],
        );
        for c in conns(&r) {
            println!(
                "HPACK bomb {via:?}, {} bytes on the wire for {} decoded: status {}, reset {}, GOAWAY {}",
                c["bomb_wire_bytes"], c["bomb_decoded_bytes"], c["bomb_status"], c["bomb_reset"], c["goaway"]
            );
            assert_eq!(
                c["first_status"], 200,
                "{via:?}: the request before the bomb: {c}"
            );
            assert!(
                c["bomb_status"] == 431
                    || c["bomb_reset"] == REFUSED_STREAM
                    || !c["goaway"].is_null(),
                "{via:?}: an over-size header list not refused: {c}"
            );
        }
        // 5000 references: 19.7 MB decoded from 5 KB sent.
        let r = h.abuse(
            via,
            "hpack_bomb",
            &["--n", "5000", "--conns", "50", "--path", "/api/hpack"],
        );
        let c0 = &conns(&r)[0];
        println!(
            "HPACK bomb {via:?}, {} bytes on the wire for {} decoded, 50 connections: GOAWAY {} {:?}, closed after {} s",
            c0["bomb_wire_bytes"], c0["bomb_decoded_bytes"], c0["goaway"], c0["goaway_debug"], c0["closed_after"]
        );
        for c in conns(&r) {
            assert!(
                c["bomb_status"] == 431 || c["bomb_reset"] == REFUSED_STREAM || ended(c),
                "{via:?}: a 19.7 MB header list not refused: {c}"
            );
            assert!(c["bomb_status"] != 200, "{c}");
        }
        h.assert_h2_ok(via, "an HPACK bomb");
    }
    let stats: Value = serde_json::from_str(&h.b.stats("a")).unwrap();
    let bombs: Vec<&Value> = stats["recent"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["uri"] == "/api/hpack/bomb")
        .collect();
    assert!(bombs.is_empty(), "the bomb reached the backend: {bombs:?}");
    h.assert_rss_bounded(before, "HPACK bombs, 110 connections");
}

#[test]
fn clients_that_say_nothing_are_closed() {
    let h = H2::start();
    let before = h.f.rss_kib();
    let limit = TIMEOUTS * 4;
    let wait = limit.as_secs().to_string();
    let mut failures = vec![];
    // (listener, sends the connection preface, what the client did)
    let cases = [
        (Via::H2c, false, "h2c listener, nothing sent"),
        (Via::H2c, true, "h2c, preface and SETTINGS, then nothing"),
        (
            Via::Tls,
            true,
            "TLS with ALPN h2, preface and SETTINGS, then nothing",
        ),
        (
            Via::Tls,
            false,
            "TLS with ALPN h2, then nothing (no HTTP/2 preface)",
        ),
    ];
    for (via, preface, what) in cases {
        let mut args = vec!["--conns", "20", "--wait", &wait];
        if preface {
            args.push("--preface");
        }
        let r = h.abuse(via, "silent", &args);
        let times: Vec<&Value> = conns(&r).iter().map(|c| &c["closed_after"]).collect();
        println!("{what}: 20 connections closed after {:?} s", &times[..3]);
        let open = conns(&r).iter().filter(|c| c["closed"] != true).count();
        if open > 0 {
            failures.push(format!(
                "{what}: {open} of 20 connections still open after {wait} s (timeouts: {TIMEOUTS:?})"
            ));
        }
    }
    // Each case's clients closed their end (those still open, at least):
    // none of them is an error of fulcrum's.
    std::thread::sleep(Duration::from_millis(500));
    let log = h.f.log_text();
    let errors = error_lines(&log);
    for via in BOTH {
        h.assert_h2_ok(via, "silent clients");
    }
    h.assert_rss_bounded(before, "80 silent clients");
    if let Some(first) = errors.first() {
        failures.push(format!(
            "clients that closed their connection are logged as errors: {} line(s) at ERROR, the first:\n{first}",
            errors.len()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
