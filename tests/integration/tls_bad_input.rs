//! Bad input on a TLS listener (issue #26): garbage instead of a
//! ClientHello, clients that stall in the handshake, TLS 1.0/1.1 clients,
//! a TLS 1.2 client on a TLS 1.3-only address, unknown and known SNI names,
//! client certificates. Each test checks what a user would: the handshake
//! refused and the connection closed (and why, in the error log), the
//! certificate served; then that fulcrum still serves a good HTTP/2 client
//! over TLS, and that its resident memory did not grow by more than
//! [`RSS_BOUND_KIB`] over a couple hundred bad clients.
//!
//! The certificates are made for each test by the `openssl` command
//! (common/certs.rs); the TLS clients are raw sockets (exact bytes),
//! Python's `ssl` module (a real TLS stack, any version) and curl.

use crate::common::certs::{Pair, Pki};
use crate::common::raw::wait_closed;
use crate::common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Most that 200 bad clients may add to fulcrum's resident memory.
const RSS_BOUND_KIB: u64 = 20 * 1024;
/// `tls.handshake_timeout` of the listeners here.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// A backend behind a fulcrum with one TLS listener (HTTP/2 by ALPN)
/// serving two certificates: `site_a` (site-a.test, localhost,
/// 127.0.0.1: the default) and `site_b` (site-b.test, *.b.test).
struct Tls {
    pki: Pki,
    port: u16,
    f: Fulcrum,
    _b: Backends,
}

impl Tls {
    /// `extra`: more lines of the listener's `tls:` (indented by 6).
    fn start(extra: &str) -> Tls {
        let pki = Pki::new("fulcrum test CA");
        let site_a = pki.server(
            "site-a.test",
            &["DNS:site-a.test", "DNS:localhost", "IP:127.0.0.1"],
        );
        let site_b = pki.server("site-b.test", &["DNS:site-b.test", "DNS:*.b.test"]);
        Tls::start_with(pki, site_a, site_b, extra)
    }

    fn start_with(pki: Pki, site_a: Pair, site_b: Pair, extra: &str) -> Tls {
        let b = Backends::start(&["a"], &[]);
        let listener = format!(
            "addr: \"127.0.0.1:{{port}}\"\n    http2: true\n    tls:\n      certificates:\n        \
             - {{ cert: {}, key: {} }}\n        - {{ cert: {}, key: {} }}\n      handshake_timeout: {}ms\n{extra}",
            site_a.cert.display(),
            site_a.key.display(),
            site_b.cert.display(),
            site_b.key.display(),
            HANDSHAKE_TIMEOUT.as_millis(),
        );
        let body = format!(
            "access_log: off\nlimits:\n  client_header_timeout: 3s\n  keepalive_timeout: 3s\n{}",
            one_pool("svc", "/api", &[b.addr("a")], "")
        );
        let (f, ports) = Fulcrum::start_listening(&[&listener], &body);
        Tls {
            pki,
            port: ports[0],
            f,
            _b: b,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// curl over TLS to `https://localhost:PORT/api/good` (more `args`
    /// before the URL): `(exit code, "status http_version", stderr)`.
    fn curl(&self, args: &[&str]) -> (i32, String, String) {
        let port = self.port.to_string();
        let resolve = format!("localhost:{port}:127.0.0.1");
        let url = format!("https://localhost:{port}/api/good");
        let out = Command::new("curl")
            .args([
                "-s",
                "-S",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args(["--max-time", "10", "--cacert"])
            .arg(self.pki.ca())
            .args(["--resolve", &resolve])
            .args(args)
            .arg(&url)
            .output()
            .expect("run curl (deploy/test.sh installs it)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A good client is served: HTTP/2 over TLS, 200.
    fn assert_serves_a_good_client(&self) {
        let (code, out, err) = self.curl(&["--http2"]);
        assert_eq!(
            (code, out.as_str()),
            (0, "200 2"),
            "a good client after the bad ones: {err}\nlog:\n{}",
            self.f.log_text()
        );
    }

    /// Asserts that the error log has a line `client error: 127.0.0.1:P:
    /// {what}` for every client port of `ports` (within 5 s: the lines
    /// are written as the connections end).
    fn assert_logged(&self, what: &str, ports: &[u16]) {
        let missing = || {
            let log = self.f.log_text();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(" INFO ")).collect();
            ports
                .iter()
                .filter(|p| {
                    let line = format!("client error: 127.0.0.1:{p}: {what}");
                    !lines.iter().any(|l| l.contains(&line))
                })
                .count()
        };
        assert!(
            wait_until(Duration::from_secs(5), || missing() == 0),
            "{} of {} clients have no \"{what}\" line (info) in the log:\n{}",
            missing(),
            ports.len(),
            self.f.log_text()
        );
    }

    /// Asserts that resident memory grew by less than [`RSS_BOUND_KIB`]
    /// since `before`; prints both.
    fn assert_rss_bounded(&self, before: u64, what: &str) {
        let after = self.f.rss_kib();
        println!("VmRSS {what}: {before} KiB before, {after} KiB after");
        assert!(
            after < before + RSS_BOUND_KIB,
            "{what}: VmRSS grew from {before} to {after} KiB"
        );
    }
}

/// Sends `bytes` on a new connection, then reads until the server closes
/// (at most `wait`): what it sent back, and when it closed (`None`: not
/// within `wait`). Also returns the client's port, for the log.
fn send_and_wait_close(
    addr: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> (Vec<u8>, Option<Duration>, u16) {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    let port = s.local_addr().unwrap().port();
    // A server that refuses early may reset while bytes are still going out.
    let _ = s.write_all(bytes);
    let mut got = vec![];
    let closed = wait_closed(&mut s, wait, &mut got);
    (got, closed.then(|| start.elapsed()), port)
}

/// Whether `reply` is nothing, or TLS alert records only (content type
/// 21): never a ServerHello, never HTTP.
fn only_alerts(reply: &[u8]) -> bool {
    let mut rest = reply;
    while rest.len() >= 5 {
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        if rest[0] != 0x15 || rest[1] != 0x03 || rest.len() < 5 + len {
            return false;
        }
        rest = &rest[5 + len..];
    }
    rest.is_empty()
}

/// The description of the first alert in `reply` (RFC 8446 §6), if any.
fn alert(reply: &[u8]) -> Option<u8> {
    (reply.len() >= 7 && reply[0] == 0x15).then(|| reply[6])
}

/// alert descriptions
const PROTOCOL_VERSION: u8 = 70;

/// A ClientHello in a TLS record, as a TLS 1.2-era client sends it, with
/// `version` as its only offer (no supported_versions extension, so TLS
/// 1.3 is not offered): ECDHE-ECDSA suites, P-256, ecdsa_secp256r1_sha256,
/// SNI `localhost`.
fn client_hello(version: u16) -> Vec<u8> {
    fn u16b(v: usize) -> [u8; 2] {
        (v as u16).to_be_bytes()
    }
    let mut body = version.to_be_bytes().to_vec();
    body.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    body.push(0); // no session id
    let suites: [u16; 4] = [0xc02b, 0xc009, 0xc013, 0x002f];
    body.extend(u16b(suites.len() * 2));
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null
    let mut ext = vec![];
    let name = b"localhost";
    let mut sni = u16b(name.len() + 3).to_vec();
    sni.push(0);
    sni.extend(u16b(name.len()));
    sni.extend(name);
    for (kind, data) in [
        (0u16, sni),
        (10, vec![0, 2, 0, 23]),      // supported_groups: secp256r1
        (11, vec![1, 0]),             // ec_point_formats: uncompressed
        (13, vec![0, 2, 0x04, 0x03]), // signature_algorithms
    ] {
        ext.extend(kind.to_be_bytes());
        ext.extend(u16b(data.len()));
        ext.extend(data);
    }
    body.extend(u16b(ext.len()));
    body.extend(ext);
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(u16b(hs.len()));
    record.extend(hs);
    record
}

/// A real TLS client (Python's ssl): handshakes with `--min`/`--max`
/// versions, `--sni` (`-`: none), a client certificate, `--count` times,
/// and sends `GET /api/tls` on each; prints a JSON list of what happened
/// (version, certificate CN and DNS names, HTTP status, or the error).
const TLS_PROBE: &str = r#"
import argparse, json, socket, ssl, warnings
warnings.simplefilter("ignore")
p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("ca")
p.add_argument("--sni", default="localhost")
p.add_argument("--min")
p.add_argument("--max")
p.add_argument("--cert")
p.add_argument("--key")
p.add_argument("--count", type=int, default=1)
a = p.parse_args()
V = {"1.0": "TLSv1", "1.1": "TLSv1_1", "1.2": "TLSv1_2", "1.3": "TLSv1_3"}
out = []
for _ in range(a.count):
    r = {}
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(a.ca)
        ctx.check_hostname = False
        if a.min or a.max:
            if a.min in ("1.0", "1.1") or a.max in ("1.0", "1.1"):
                # Debian's OpenSSL allows these only at security level 0.
                ctx.set_ciphers("ALL:@SECLEVEL=0")
            if a.min:
                ctx.minimum_version = getattr(ssl.TLSVersion, V[a.min])
            if a.max:
                ctx.maximum_version = getattr(ssl.TLSVersion, V[a.max])
        if a.cert:
            ctx.load_cert_chain(a.cert, a.key)
        raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname=None if a.sni == "-" else a.sni)
        r["version"] = s.version()
        cert = s.getpeercert()
        r["cn"] = [v for rdn in cert["subject"] for k, v in rdn if k == "commonName"][0]
        r["dns"] = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
        s.sendall(b"GET /api/tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
        except (ssl.SSLError, OSError) as e:
            if not data:
                raise
        r["status"] = int(data.split(b" ")[1]) if data.startswith(b"HTTP/") else None
        s.close()
    except (ssl.SSLError, OSError, ValueError) as e:
        r["error"] = f"{type(e).__name__}: {e}"
    out.append(r)
print(json.dumps(out))
"#;

/// Runs [`TLS_PROBE`] against `port` with `args`.
fn probe(t: &Tls, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(TLS_PROBE)
        .arg(t.port.to_string())
        .arg(t.pki.ca())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "TLS probe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "TLS probe output ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    v.as_array().unwrap().clone()
}

/// The probe was refused: no HTTP status, an error.
fn refused(r: &serde_json::Value) -> bool {
    r.get("status").is_none_or(|s| s.is_null()) && r.get("error").is_some()
}

#[test]
fn garbage_instead_of_a_client_hello_is_refused_logged_and_closed() {
    let t = Tls::start("");
    t.assert_serves_a_good_client();
    let before = t.f.rss_kib();
    let mut noise = vec![0u8];
    let mut x: u32 = 0x2545_f491;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "plain HTTP",
            b"GET /api/x HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("binary noise", noise),
        // A handshake record holding a ServerHello, not a ClientHello.
        (
            "a ServerHello",
            vec![
                0x16, 0x03, 0x03, 0x00, 0x08, 0x02, 0x00, 0x00, 0x04, 0x03, 0x03, 0x00, 0x00,
            ],
        ),
        // SSL 2.0's record format.
        (
            "an SSLv2 hello",
            vec![
                0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
            ],
        ),
        (
            "a handshake record of nonsense",
            b"\x16\x03\x01\x00\x0chello, world".to_vec(),
        ),
    ];
    let mut ports = vec![];
    let mut failures = vec![];
    for i in 0..200 {
        let (name, bytes) = &cases[i % cases.len()];
        let (reply, closed, port) = send_and_wait_close(t.addr(), bytes, Duration::from_secs(5));
        ports.push(port);
        if i < cases.len() {
            println!(
                "{name:<32} -> {} byte(s) back {:02x?}, closed after {closed:?}",
                reply.len(),
                &reply[..reply.len().min(8)]
            );
        }
        // Refused at once: before the handshake timeout, and with at most
        // an alert.
        if closed.is_none_or(|c| c >= HANDSHAKE_TIMEOUT) || !only_alerts(&reply) {
            failures.push(format!(
                "{name}: closed after {closed:?}, reply {reply:02x?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    t.assert_logged("TLS handshake failed", &ports);
    t.assert_rss_bounded(before, "200 clients sending garbage");
    t.assert_serves_a_good_client();
}

#[test]
fn a_client_that_stalls_in_the_handshake_is_closed_after_handshake_timeout() {
    let t = Tls::start("");
    let before = t.f.rss_kib();
    let hello = client_hello(0x0303);
    // The record header says more than comes.
    let partial = hello[..hello.len() / 2].to_vec();
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        ("silent", vec![]),
        ("half a ClientHello", partial),
        ("a record header only", hello[..5].to_vec()),
    ];
    // 60 at once (20 of each kind), held while a good client is served.
    let clients: Vec<_> = (0..60)
        .map(|i| {
            let (name, bytes) = kinds[i % kinds.len()].clone();
            let addr = t.addr();
            std::thread::spawn(move || {
                let (reply, closed, port) =
                    send_and_wait_close(addr, &bytes, Duration::from_secs(8));
                (name, reply, closed, port)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    t.assert_serves_a_good_client();
    let during = t.f.rss_kib();
    let mut ports = vec![];
    let mut failures = vec![];
    let mut times = vec![];
    for c in clients {
        let (name, reply, closed, port) = c.join().unwrap();
        ports.push(port);
        match closed {
            Some(d)
                if d >= HANDSHAKE_TIMEOUT && d < Duration::from_secs(5) && only_alerts(&reply) =>
            {
                times.push(d)
            }
            _ => failures.push(format!(
                "{name}: closed after {closed:?}, reply {reply:02x?}"
            )),
        }
    }
    times.sort();
    println!(
        "60 stalled clients: closed after {:?} (first) to {:?} (last); VmRSS {during} KiB while held",
        times.first(),
        times.last()
    );
    assert!(
        failures.is_empty(),
        "not closed within {HANDSHAKE_TIMEOUT:?}..5s:\n{}",
        failures.join("\n")
    );
    t.assert_logged("TLS handshake not done within 1s", &ports);
    t.assert_rss_bounded(before, "60 clients stalled in the handshake");
    t.assert_serves_a_good_client();
}

#[test]
fn tls_1_0_and_1_1_clients_are_refused() {
    let t = Tls::start("");
    let before = t.f.rss_kib();
    // The same hello offering TLS 1.2 is answered with a ServerHello: what
    // refuses the others is their version.
    let (reply, _, _) =
        send_and_wait_close(t.addr(), &client_hello(0x0303), Duration::from_millis(500));
    assert_eq!(reply.first(), Some(&0x16), "TLS 1.2 hello: {reply:02x?}");
    assert_eq!(reply.get(5), Some(&0x02), "a ServerHello: {reply:02x?}");
    let mut ports = vec![];
    for i in 0..200 {
        let version = if i % 2 == 0 { 0x0301 } else { 0x0302 };
        let (reply, closed, port) =
            send_and_wait_close(t.addr(), &client_hello(version), Duration::from_secs(5));
        ports.push(port);
        assert!(
            closed.is_some() && only_alerts(&reply) && alert(&reply) == Some(PROTOCOL_VERSION),
            "hello for {version:#06x}: want a protocol_version alert and close; got {reply:02x?}, closed after {closed:?}"
        );
    }
    t.assert_logged("TLS handshake failed", &ports);
    // Real clients limited to TLS 1.0 or 1.1 (Python's ssl over OpenSSL).
    for version in ["1.0", "1.1"] {
        let r = probe(&t, &["--min", version, "--max", version]);
        println!("TLS {version} only client: {}", r[0]);
        assert!(refused(&r[0]), "TLS {version} client served: {}", r[0]);
    }
    // And curl with at most TLS 1.1.
    let (code, out, err) = t.curl(&[
        "--tlsv1.0",
        "--tls-max",
        "1.1",
        "--ciphers",
        "DEFAULT@SECLEVEL=0",
    ]);
    assert!(
        code != 0 && out.starts_with("000"),
        "curl --tls-max 1.1: {code} {out} {err}"
    );
    t.assert_rss_bounded(before, "200 TLS 1.0/1.1 hellos");
    t.assert_serves_a_good_client();
}

#[test]
fn an_unknown_sni_gets_the_default_certificate_and_sni_picks_among_two() {
    let t = Tls::start("");
    let before = t.f.rss_kib();
    // (SNI sent, CN of the certificate expected)
    let cases = [
        ("-", "site-a.test"),
        ("unknown.example", "site-a.test"),
        ("site-a.test", "site-a.test"),
        ("localhost", "site-a.test"),
        ("site-b.test", "site-b.test"),
        ("SITE-B.TEST", "site-b.test"),
        ("www.b.test", "site-b.test"),
        ("a.www.b.test", "site-a.test"),
    ];
    for (sni, cn) in cases {
        let r = &probe(&t, &["--sni", sni])[0];
        println!("SNI {sni:<16} -> {r}");
        assert_eq!(r["cn"], cn, "SNI {sni}: {r}");
        assert_eq!(r["status"], 200, "SNI {sni}: {r}");
    }
    let r = &probe(&t, &["--sni", "unknown.example"])[0];
    assert_eq!(
        r["dns"],
        serde_json::json!(["site-a.test", "localhost"]),
        "the default certificate's names: {r}"
    );
    // curl checks the name: each host gets a certificate valid for it.
    for host in ["site-a.test", "site-b.test", "x.b.test"] {
        let port = t.port;
        let out = Command::new("curl")
            .args([
                "-s",
                "-S",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "--http2",
            ])
            .arg("--cacert")
            .arg(t.pki.ca())
            .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
            .arg(format!("https://{host}:{port}/api/sni"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200 2",
            "curl https://{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // 200 handshakes naming hosts nobody serves.
    let many = probe(&t, &["--sni", "nobody.example", "--count", "200"]);
    assert!(
        many.iter()
            .all(|r| r["cn"] == "site-a.test" && r["status"] == 200),
        "{:?}",
        many.iter()
            .find(|r| r["cn"] != "site-a.test" || r["status"] != 200)
    );
    t.assert_rss_bounded(before, "200 handshakes with an unknown SNI");
    t.assert_serves_a_good_client();
}

#[test]
fn a_tls13_only_listener_refuses_a_tls12_client() {
    let t = Tls::start("      protocols: [tlsv1.3]\n");
    let before = t.f.rss_kib();
    let r = &probe(&t, &["--max", "1.2"])[0];
    println!("TLS 1.2 client: {r}");
    assert!(
        refused(r),
        "TLS 1.2 client served by a tlsv1.3 listener: {r}"
    );
    let r = &probe(&t, &[])[0];
    assert_eq!(r["version"], "TLSv1.3", "{r}");
    assert_eq!(r["status"], 200, "{r}");
    let (code, out, err) = t.curl(&["--tls-max", "1.2"]);
    assert!(
        code != 0 && out.starts_with("000"),
        "curl --tls-max 1.2: {code} {out} {err}"
    );
    // 200 hellos offering TLS 1.2 only.
    let mut ports = vec![];
    for _ in 0..200 {
        let (reply, closed, port) =
            send_and_wait_close(t.addr(), &client_hello(0x0303), Duration::from_secs(5));
        ports.push(port);
        assert!(
            closed.is_some() && only_alerts(&reply) && alert(&reply) == Some(PROTOCOL_VERSION),
            "TLS 1.2 hello: want a protocol_version alert and close; got {reply:02x?}, closed after {closed:?}"
        );
    }
    t.assert_logged("TLS handshake failed", &ports);
    t.assert_rss_bounded(before, "200 TLS 1.2 hellos on a TLS 1.3 listener");
    t.assert_serves_a_good_client();
}

#[test]
fn with_client_ca_only_clients_with_a_certificate_it_signed_are_served() {
    let pki = Pki::new("fulcrum test CA");
    let site_a = pki.server(
        "site-a.test",
        &["DNS:site-a.test", "DNS:localhost", "IP:127.0.0.1"],
    );
    let site_b = pki.server("site-b.test", &["DNS:site-b.test"]);
    let client = pki.client("good client");
    let other = Pki::new("another CA");
    let stranger = other.client("stranger");
    let ca = pki.ca();
    let t = Tls::start_with(
        pki,
        site_a,
        site_b,
        &format!("      client_ca: {}\n", ca.display()),
    );
    let before = t.f.rss_kib();
    let cert = client.cert.to_str().unwrap();
    let key = client.key.to_str().unwrap();
    // curl, as a user would.
    let (code, out, err) = t.curl(&["--http2"]);
    assert!(
        code != 0 && out.starts_with("000"),
        "no client certificate: {code} {out} {err}"
    );
    let (code, out, err) = t.curl(&[
        "--http2",
        "--cert",
        stranger.cert.to_str().unwrap(),
        "--key",
        stranger.key.to_str().unwrap(),
    ]);
    assert!(
        code != 0 && out.starts_with("000"),
        "another CA's certificate: {code} {out} {err}"
    );
    let (code, out, err) = t.curl(&["--http2", "--cert", cert, "--key", key]);
    assert_eq!(
        (code, out.as_str()),
        (0, "200 2"),
        "the CA's client certificate: {err}"
    );
    // 200 clients without a certificate, over TLS 1.3 and 1.2.
    let mut refusals = probe(&t, &["--count", "100"]);
    refusals.extend(probe(&t, &["--max", "1.2", "--count", "100"]));
    for r in &refusals {
        assert!(refused(r), "a client without certificate served: {r}");
    }
    println!("without a certificate: {}", refusals[0]);
    let log = t.f.log_text();
    let failed = log.matches("TLS handshake failed").count();
    assert!(
        failed >= 202,
        "{failed} handshake failures logged, want 202:\n{log}"
    );
    let r = &probe(&t, &["--cert", cert, "--key", key])[0];
    assert_eq!(r["status"], 200, "{r}");
    t.assert_rss_bounded(before, "200 clients without a certificate");
    let (code, out, err) = t.curl(&["--http2", "--cert", cert, "--key", key]);
    assert_eq!(
        (code, out.as_str()),
        (0, "200 2"),
        "a good client afterwards: {err}"
    );
    drop(other);
}
