//! TLS and HTTP/2 towards clients, seen by clients we did not write (curl,
//! built on OpenSSL and nghttp2; `openssl s_client`): one listener with TLS
//! and ALPN h2, one plain with h2c; certificates checked by `fulcrum -t`;
//! a certificate replaced by SIGHUP under load; a bad one refused.

use crate::common::certs::{Pair, Pki};
use crate::common::lifecycle::wait_log;
use crate::common::{free_port, signal, Backends, Fulcrum, TempDir, FULCRUM};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn yaml_path(p: &std::path::Path) -> String {
    format!("{:?}", p.display().to_string())
}

fn tls_entry(pair: &Pair, extra: &str) -> String {
    format!(
        "{{ addr: \"127.0.0.1:{{port}}\", http2: true, tls: {{ certificates: [{{ cert: {}, key: {} }}]{extra} }} }}",
        yaml_path(&pair.cert),
        yaml_path(&pair.key)
    )
}

fn pool_body(b: &Backends) -> String {
    format!(
        "pools:\n  p:\n    servers: [{{ addr: \"{}\" }}]\nroutes:\n  - {{ prefix: /, pool: p }}\n",
        b.addr("a")
    )
}

/// curl with `args`; its stdout, and `%{http_version} %{http_code}` last.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_string(), tail.to_string())
}

fn https(port: u16, ca: &std::path::Path, path: &str, more: &[&str]) -> (String, String) {
    let resolve = format!("site.test:{port}:127.0.0.1");
    let url = format!("https://site.test:{port}{path}");
    let mut args = vec![
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ];
    args.extend_from_slice(more);
    curl(&args)
}

/// The serial number of the certificate served on `port` for `sni`.
fn served_serial(port: u16, sni: &str) -> String {
    let connect = format!("127.0.0.1:{port}");
    let s_client = Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-servername", sni])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let pem = String::from_utf8_lossy(&s_client.stdout).into_owned();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn file_serial(cert: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in", cert.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Two HTTP/2 streams on one connection (curl -Z), each answered after
/// `delay_ms`; what curl printed for each (`2 200`).
fn two_slow_streams(
    port: u16,
    ca: &std::path::Path,
    delay_ms: u64,
) -> std::thread::JoinHandle<String> {
    let ca = ca.to_path_buf();
    std::thread::spawn(move || {
        let resolve = format!("site.test:{port}:127.0.0.1");
        let url = format!("https://site.test:{port}/slow?delay_ms={delay_ms}");
        let out = Command::new("curl")
            .args(["-sS", "--http2", "--max-time", "20", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &resolve, "-o", "/dev/null"])
            .args(["-w", "%{http_version} %{http_code}\n", "-Z", &url, &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

#[test]
fn tls_with_http1_and_http2_and_h2c_reach_the_same_pool() {
    let pki = Pki::new("fulcrum test CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let b = Backends::start(&["a"], &[]);
    let (f, ports) = Fulcrum::start_listening(
        &[
            &tls_entry(&site, ""),
            "{ addr: \"127.0.0.1:{port}\", http2: true }",
        ],
        &pool_body(&b),
    );
    let (tls_port, h2c_port) = (ports[0], ports[1]);
    let ca = pki.ca();

    let (body, v) = https(tls_port, &ca, "/one?x=1", &["--http1.1"]);
    assert_eq!(v, "1.1 200", "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");
    assert_eq!(echo["headers"]["host"], format!("site.test:{tls_port}"));
    assert_eq!(echo["uri"], "/one?x=1");

    let (body, v) = https(tls_port, &ca, "/two", &["--http2"]);
    assert_eq!(v, "2 200", "ALPN h2 over TLS: {body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert_eq!(
        echo["headers"]["host"],
        format!("site.test:{tls_port}"),
        "{echo}"
    );
    assert_eq!(echo["uri"], "/two");

    let url = format!("http://127.0.0.1:{h2c_port}/three");
    let (body, v) = curl(&["--http2-prior-knowledge", &url]);
    assert_eq!(v, "2 200", "h2c prior knowledge: {body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    // The same address still serves HTTP/1.1.
    let (_, v) = curl(&["--http1.1", &url]);
    assert_eq!(v, "1.1 200");
    // HTTP/1.1 on the plain address, and its status page counts them all.
    assert_eq!(f.get("/four").status, 200);
    assert_eq!(b.requests("a"), 5);
    let served = f.server_status("p", b.addr("a"));
    assert_eq!(served["requests"], 5, "{served}");
}

#[test]
fn fulcrum_t_checks_certificates_and_names_the_field() {
    let pki = Pki::new("fulcrum test CA");
    let site = pki.server("site.test", &["DNS:site.test", "DNS:*.site.test"]);
    let other = pki.server("other.test", &["DNS:other.test"]);
    let dir = TempDir::new("tls-t");
    let check = |listen_tls: &str| -> (bool, String) {
        let conf = dir.path("f.yaml");
        std::fs::write(
            &conf,
            format!(
                "listen:\n  - addr: \"127.0.0.1:{}\"\n    tls: {listen_tls}\npools:\n  p:\n    servers: [{{addr: \"127.0.0.1:1\"}}]\n",
                free_port()
            ),
        )
        .unwrap();
        let out = Command::new(FULCRUM)
            .args(["-t", "-c"])
            .arg(&conf)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let pair = |c: &std::path::Path, k: &std::path::Path| {
        format!(
            "{{ certificates: [{{ cert: {}, key: {} }}] }}",
            yaml_path(c),
            yaml_path(k)
        )
    };

    let (ok, text) = check(&pair(&site.cert, &site.key));
    assert!(ok, "{text}");
    assert!(
        text.contains("site.test, *.site.test"),
        "names shown: {text}"
    );

    let (ok, text) = check(&pair(&dir.path("missing.pem"), &site.key));
    assert!(!ok);
    assert!(
        text.contains("listen[0].tls.certificates[0].cert") && text.contains("missing.pem"),
        "{text}"
    );

    let (ok, text) = check(&pair(&site.cert, &other.key));
    assert!(!ok);
    assert!(
        text.contains("listen[0].tls.certificates[0].key") && text.contains("is not the key of"),
        "{text}"
    );

    let (ok, text) = check(&format!(
        "{{ certificates: [{{ cert: {}, key: {}, names: [www.site.test, www.other.test] }}] }}",
        yaml_path(&site.cert),
        yaml_path(&site.key)
    ));
    assert!(!ok);
    assert!(
        text.contains("certificates[0].names[1]") && text.contains("www.other.test"),
        "{text}"
    );
    assert!(
        !text.contains("names[0]"),
        "a wildcard covers www.site.test: {text}"
    );

    let (ok, text) = check(&format!(
        "{{ certificates: [{{ cert: {}, key: {} }}], protocols: [tlsv1.1, tlsv1.2] }}",
        yaml_path(&site.cert),
        yaml_path(&site.key)
    ));
    assert!(!ok);
    assert!(text.contains("listen[0].tls.protocols[0]"), "{text}");

    // A certificate that expires in 5 days: valid, with a warning.
    let (soon_cert, soon_key) = (dir.path("soon.pem"), dir.path("soon.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-days",
            "5",
            "-subj",
            "/CN=soon.test",
            "-addext",
            "subjectAltName=DNS:soon.test",
        ])
        .arg("-keyout")
        .arg(&soon_key)
        .arg("-out")
        .arg(&soon_cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (ok, text) = check(&pair(&soon_cert, &soon_key));
    assert!(ok, "{text}");
    assert!(
        text.contains("warning") && text.contains("expires in"),
        "{text}"
    );
}

#[test]
fn a_certificate_replaced_by_sighup_serves_new_handshakes_without_a_failed_request() {
    let pki = Pki::new("fulcrum test CA");
    let first = pki.server("site.test", &["DNS:site.test"]);
    let b = Backends::start(&["a"], &[]);
    // The file the config names; replaced in place, as certbot does.
    let dir = TempDir::new("tls-reload");
    let live = Pair {
        cert: dir.path("live.pem"),
        key: dir.path("live.key"),
    };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let (f, ports) = Fulcrum::start_listening(&[&tls_entry(&live, "")], &pool_body(&b));
    let port = ports[0];
    assert_eq!(served_serial(port, "site.test"), file_serial(&first.cert));

    // New connections all the time (a handshake per request), and one
    // keepalive connection, while the certificate changes.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ca = pki.ca();
    let load = {
        let (stop, ok, failed, ca) = (stop.clone(), ok.clone(), failed.clone(), ca.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                match https(port, &ca, "/", &[]).1.as_str() {
                    "2 200" => ok.fetch_add(1, Relaxed),
                    other => {
                        eprintln!("failed: {other}");
                        failed.fetch_add(1, Relaxed)
                    }
                };
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let second = pki.server("site.test", &["DNS:site.test"]);
    std::fs::copy(&second.key, &live.key).unwrap();
    std::fs::copy(&second.cert, &live.cert).unwrap();
    signal(f.child.id(), "HUP");
    assert!(
        wait_log(&f.log, "reload of", Duration::from_secs(10)),
        "{}",
        f.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));

    // A bad certificate now (key of another): refused, the second stays.
    let other = pki.server("other.test", &["DNS:other.test"]);
    std::fs::copy(&other.key, &live.key).unwrap();
    signal(f.child.id(), "HUP");
    assert!(
        wait_log(&f.log, "failed with", Duration::from_secs(10)),
        "{}",
        f.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    load.join().unwrap();

    assert_eq!(served_serial(port, "site.test"), file_serial(&second.cert));
    let log = f.log_text();
    assert!(
        log.contains("listen[1].tls.certificates[0].key") && log.contains("is not the key of"),
        "the refused reload names the field:\n{log}"
    );
    let (ok, failed) = (ok.load(Relaxed), failed.load(Relaxed));
    assert!(ok > 10, "only {ok} requests during the test");
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
}

#[test]
fn a_graceful_stop_finishes_http2_streams_in_flight() {
    let pki = Pki::new("fulcrum test CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let b = Backends::start(&["a"], &[]);
    let (f, ports) = Fulcrum::start_listening(&[&tls_entry(&site, "")], &pool_body(&b));
    let port = ports[0];
    let ca = pki.ca();
    // Two streams on one connection, each answered after 1.5 s.
    let started = Instant::now();
    let client = two_slow_streams(port, &ca, 1500);
    // Both streams are in flight at the server.
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.in_flight("a") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.in_flight("a"), 2, "both streams reached the server");
    signal(f.child.id(), "TERM");
    let out = client.join().unwrap();
    assert_eq!(
        out.lines().filter(|l| *l == "2 200").count(),
        2,
        "curl: {out}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

/// A binary upgrade (deploy/fulcrum-upgrade) while clients make a new TLS
/// connection per request and HTTP/2 streams are in flight on the old
/// process: no request fails, the streams finish on the old process, and
/// the new process serves the certificate from the files.
#[test]
fn an_upgrade_under_tls_and_http2_load_fails_no_request() {
    use crate::common::lifecycle::{to_log, wait_pid_file, Daemon};
    let pki = Pki::new("fulcrum test CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let b = Backends::start(&["a"], &[]);
    let port = free_port();
    let entry = tls_entry(&site, "").replace("{port}", &port.to_string());
    let d = Daemon::start_listening(3, 2, &[&entry], &pool_body(&b));
    let ca = pki.ca();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loops: Vec<_> = [vec!["--http1.1"], vec!["--http2"]]
        .into_iter()
        .map(|flags| {
            let (stop, ok, failed, ca) = (stop.clone(), ok.clone(), failed.clone(), ca.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let (body, v) = https(port, &ca, "/", &flags);
                    if v.ends_with(" 200") {
                        ok.fetch_add(1, Relaxed);
                    } else {
                        eprintln!("failed: {v} {body}");
                        failed.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    // Two HTTP/2 streams on one connection to the old process, answered
    // after the hand-over.
    let slow = two_slow_streams(port, &ca, 2500);
    // Both streams are in flight at the old process before the upgrade.
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.in_flight("a") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.in_flight("a"), 2, "both streams reached the server");
    let old = d.pid().unwrap();
    let log = d.dir.path("upgrade.log");
    let (out, err) = to_log(&log);
    let status = Command::new("bash")
        .arg(crate::common::repo_path("deploy/fulcrum-upgrade"))
        .arg("--config")
        .arg(&d.conf)
        .arg("--binary")
        .arg(FULCRUM)
        .env("RUST_LOG", "info")
        .stdout(out)
        .stderr(err)
        .status()
        .unwrap();
    let new = wait_pid_file(&d.pid_file, Some(old), Duration::from_secs(20));
    if let Some(p) = new {
        d.pids.add(p);
    }
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(new.is_some_and(|p| p != old), "a new process took over");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    for l in loops {
        l.join().unwrap();
    }
    let streams = slow.join().unwrap();
    assert_eq!(
        streams.lines().filter(|l| *l == "2 200").count(),
        2,
        "streams in flight: {streams}"
    );
    let (ok, failed) = (ok.load(Relaxed), failed.load(Relaxed));
    println!("upgrade under TLS load: {ok} requests, {failed} failed, 2 HTTP/2 streams across the hand-over");
    assert!(ok > 10, "only {ok} requests");
    assert_eq!(failed, 0, "{failed} of {} failed", ok + failed);
    assert_eq!(served_serial(port, "site.test"), file_serial(&site.cert));
}

/// A TLS 1.3 client (rustls with aws-lc-rs) that offers only the key
/// exchange `groups`, in that order, asks for `/` over HTTP/1.1 with SNI
/// `name`: the group the handshake agreed on and the response's status line.
fn get_with_groups(
    port: u16,
    ca: &std::path::Path,
    name: &str,
    groups: &[rustls::NamedGroup],
) -> Result<(rustls::NamedGroup, String), String> {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups.retain(|g| groups.contains(&g.name()));
    provider
        .kx_groups
        .sort_by_key(|g| groups.iter().position(|n| *n == g.name()));
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("handshake or write: {e}"))?;
    let mut response = Vec::new();
    // Read to the end: fulcrum closes after the answer (Connection: close).
    let _ = tls.read_to_end(&mut response);
    let group = tls
        .conn
        .negotiated_key_exchange_group()
        .ok_or("no key exchange group")?
        .name();
    let text = String::from_utf8_lossy(&response);
    Ok((group, text.lines().next().unwrap_or("").to_string()))
}

#[test]
fn post_quantum_key_exchange_and_rsa_certificates_are_served() {
    use rustls::NamedGroup::{X25519, X25519MLKEM768};
    let pki = Pki::new("fulcrum test CA");
    let ec = pki.server("site.test", &["DNS:site.test"]);
    let rsa = pki.server_rsa("rsa.test", &["DNS:rsa.test"]);
    let b = Backends::start(&["a"], &[]);
    let entry = format!(
        "{{ addr: \"127.0.0.1:{{port}}\", tls: {{ certificates: [{{ cert: {}, key: {} }}, {{ cert: {}, key: {} }}] }} }}",
        yaml_path(&ec.cert),
        yaml_path(&ec.key),
        yaml_path(&rsa.cert),
        yaml_path(&rsa.key)
    );
    let (_f, ports) = Fulcrum::start_listening(&[&entry], &pool_body(&b));
    let (port, ca) = (ports[0], pki.ca());

    // A client that puts the hybrid first, as browsers do, gets it; one
    // that offers nothing else is served too; a classic one gets X25519.
    for (offer, agreed) in [
        (vec![X25519MLKEM768, X25519], X25519MLKEM768),
        (vec![X25519MLKEM768], X25519MLKEM768),
        (vec![X25519], X25519),
    ] {
        let got = get_with_groups(port, &ca, "site.test", &offer);
        assert_eq!(
            got,
            Ok((agreed, "HTTP/1.1 200 OK".to_string())),
            "offered {offer:?}"
        );
    }
    // The RSA certificate, picked by SNI, signs the handshake (OpenSSL's
    // client, curl), and the post-quantum exchange works with it.
    assert_eq!(served_serial(port, "rsa.test"), file_serial(&rsa.cert));
    let resolve = format!("rsa.test:{port}:127.0.0.1");
    let url = format!("https://rsa.test:{port}/");
    let (body, v) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ]);
    assert_eq!(v, "1.1 200", "{body}");
    let got = get_with_groups(port, &ca, "rsa.test", &[X25519MLKEM768]);
    assert_eq!(got, Ok((X25519MLKEM768, "HTTP/1.1 200 OK".to_string())));
}
