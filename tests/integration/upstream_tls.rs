//! TLS and HTTP/2 towards servers (a pool's `tls:` and `protocol:`),
//! against servers we did not write: Debian's nginx 1.22 (`listen ... ssl
//! http2` with client certificates optional or required, `listen ... ssl`
//! without HTTP/2, and an h2c `listen ... http2`), and `openssl s_server`
//! where a server must refuse the handshake itself. nginx answers every
//! request with what it saw: `$server_protocol|$ssl_protocol|
//! $ssl_client_s_dn|$http_host|$http_x_forwarded_proto|$scheme`, and logs
//! each request it got (per port) to its access log, so a test can tell
//! that nothing arrived.
//! Clients: fulcrum's plain HTTP/1.1 address (the harness's own client),
//! and curl (OpenSSL, nghttp2) with HTTP/2 on an h2c listener and with
//! HTTP/1.1 and HTTP/2 on a TLS listener.

use crate::common::certs::{Pair, Pki};
use crate::common::{
    free_port, request, shared, stop_child, wait_until, Fulcrum, Response, Shared, TempDir,
};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";

/// What nginx answers: what it saw of the request.
const SEEN: &str = r#""$server_protocol|$ssl_protocol|$ssl_client_s_dn|$http_host|$http_x_forwarded_proto|$scheme\n""#;

/// nginx with four servers: `tls` (TLS + HTTP/2 and HTTP/1.1 by ALPN,
/// client certificate optional), `mtls` (client certificate required),
/// `h1tls` (TLS, HTTP/1.1 only) and `h2c` (HTTP/2 in clear, prior
/// knowledge). One process (`master_process
/// off`), stopped by its pid on drop.
struct Nginx {
    child: Child,
    dir: TempDir,
    tls: u16,
    mtls: u16,
    h1tls: u16,
    h2c: u16,
    _shared: Shared,
}

impl Nginx {
    // The child moves into `Nginx`, whose Drop waits for it.
    #[allow(clippy::zombie_processes)]
    fn start(site: &Pair, ca: &Path) -> Nginx {
        assert!(
            Path::new(NGINX).is_file(),
            "these tests need nginx: apt-get install nginx (deploy/test.sh does)"
        );
        let shared = shared();
        let dir = TempDir::new("nginx-upstream");
        let (tls, mtls, h1tls, h2c) = (free_port(), free_port(), free_port(), free_port());
        let d = dir.0.display();
        let (cert, key, ca) = (site.cert.display(), site.key.display(), ca.display());
        let tls_server = |port: u16, http2: &str, verify: &str| {
            format!(
                "    server {{
        listen 127.0.0.1:{port} ssl{http2};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client {verify};
        location / {{ return 200 {SEEN}; }}
    }}
"
            )
        };
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    default_type text/plain;
    log_format seen '$server_port $server_protocol "$ssl_client_s_dn" $http_host $request_uri "$http_user_agent"';
    access_log {d}/access.log seen;
    ssl_protocols TLSv1.2 TLSv1.3;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{}{}{}    server {{
        listen 127.0.0.1:{h2c} http2;
        location / {{ return 200 {SEEN}; }}
    }}
}}
"#,
            tls_server(tls, " http2", "optional"),
            tls_server(mtls, " http2", "on"),
            tls_server(h1tls, "", "optional"),
        );
        std::fs::write(dir.path("nginx.conf"), conf).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(dir.path("nginx.conf"))
            .arg("-e")
            .arg(dir.path("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx {
            child,
            dir,
            tls,
            mtls,
            h1tls,
            h2c,
            _shared: shared,
        };
        for port in [tls, mtls, h1tls, h2c] {
            wait_listening(&mut n.child, port, || error_log_of(&n.dir));
        }
        n
    }

    /// The access log lines of requests nginx got on `port`.
    fn requests_on(&self, port: u16) -> Vec<String> {
        std::fs::read_to_string(self.dir.path("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&format!("{port} ")))
            .map(str::to_string)
            .collect()
    }
}

/// The loopback address with `port`.
fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn error_log_of(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path("error.log")).unwrap_or_default()
}

/// Waits until something listens on `port` (or panics with `log()` if the
/// process exits or 10 s pass).
fn wait_listening(child: &mut Child, port: u16, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = local(port);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited with {status}; log:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server did not listen on {port}; log:\n{}", log());
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(3));
    }
}

/// `openssl s_server -www` requiring a client certificate of the test CA:
/// unlike nginx (which completes the handshake and answers 400), it
/// refuses a client without one in the handshake itself.
struct SServer {
    child: Child,
    port: u16,
    _dir: TempDir,
    _shared: Shared,
}

impl SServer {
    // The child moves into `SServer`, whose Drop waits for it.
    #[allow(clippy::zombie_processes)]
    fn start(site: &Pair, ca: &Path) -> SServer {
        let shared = shared();
        let dir = TempDir::new("s_server");
        let port = free_port();
        let log = dir.path("s_server.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&site.cert)
            .arg("-key")
            .arg(&site.key)
            .arg("-CAfile")
            .arg(ca)
            .args(["-Verify", "1", "-www", "-quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("run openssl s_server");
        wait_listening(&mut child, port, || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
        SServer {
            child,
            port,
            _dir: dir,
            _shared: shared,
        }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

/// What nginx saw, from its answer.
#[derive(Debug, PartialEq)]
struct Seen {
    protocol: String,
    tls: String,
    client_dn: String,
    host: String,
    forwarded_proto: String,
    scheme: String,
}

impl Seen {
    fn parse(body: &str) -> Seen {
        let f: Vec<&str> = body.trim_end().split('|').collect();
        assert_eq!(f.len(), 6, "not nginx's answer: {body:?}");
        Seen {
            protocol: f[0].into(),
            tls: f[1].into(),
            client_dn: f[2].into(),
            host: f[3].into(),
            forwarded_proto: f[4].into(),
            scheme: f[5].into(),
        }
    }
}

fn yaml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A pool `name` at route `/name` over `server`, with the pool keys `extra`
/// (indented by 4). `max_fails: 0`: a refused handshake is counted as a
/// failure but does not take the only server out, so that every request
/// of a test goes to it.
fn pool(name: &str, server: SocketAddr, extra: &str) -> String {
    format!("  {name}:\n    max_fails: 0\n{extra}    servers: [{{ addr: \"{server}\" }}]\n")
}

/// `tls:` of a pool: verification, CA, SNI `site.test`, and `more` keys.
fn tls(verify: bool, ca: &Path, more: &str) -> String {
    format!(
        "    tls: {{ verify: {verify}, ca: {}, sni: site.test{more} }}\n",
        yaml_path(ca)
    )
}

/// The config body: `pools` (from [`pool`]), each routed at `/its-name`.
fn body(pools: &[(&str, String)]) -> String {
    let mut s = String::from("pools:\n");
    for (_, p) in pools {
        s.push_str(p);
    }
    s.push_str("routes:\n");
    for (name, _) in pools {
        s.push_str(&format!("  - {{ prefix: /{name}, pool: {name} }}\n"));
    }
    s
}

/// fulcrum with the harness's plain address, an h2c address and a TLS
/// address (ALPN h2 and http/1.1, certificate `site`).
fn start_fulcrum(site: &Pair, body: &str) -> (Fulcrum, u16, u16) {
    let tls = format!(
        "{{ addr: \"127.0.0.1:{{port}}\", http2: true, tls: {{ certificates: [{{ cert: {}, key: {} }}] }} }}",
        yaml_path(&site.cert),
        yaml_path(&site.key)
    );
    let (f, ports) =
        Fulcrum::start_listening(&["{ addr: \"127.0.0.1:{port}\", http2: true }", &tls], body);
    (f, ports[0], ports[1])
}

/// curl with `args`: (status, body, HTTP version of the client's side).
fn curl(args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl (deploy/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (version, code) = tail.split_once(' ').unwrap_or(("", "0"));
    let code = code.parse().unwrap_or(0);
    let mut body = body.to_string();
    if code == 0 {
        // No answer: curl says why.
        body.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (code, body, version.to_string())
}

/// The kinds of client in front of fulcrum.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// HTTP/1.1 on the plain address, `Host: Front.Example:1234`.
    Http1,
    /// curl, HTTP/2 prior knowledge on the h2c address, `:authority
    /// front.example:PORT`.
    H2c,
    /// curl, HTTP/1.1 over TLS, `Host: site.test:PORT`.
    TlsHttp1,
    /// curl, HTTP/2 over TLS (ALPN), `:authority site.test:PORT`.
    TlsH2,
}

const CLIENTS: [Client; 4] = [Client::Http1, Client::H2c, Client::TlsHttp1, Client::TlsH2];

struct Front<'a> {
    f: &'a Fulcrum,
    h2c: u16,
    tls: u16,
    ca: &'a Path,
}

impl Front<'_> {
    /// `GET path` from `client`: (status, body, the Host it sent, its scheme).
    fn get(&self, client: Client, path: &str) -> (u16, String, String, &'static str) {
        match client {
            Client::Http1 => {
                let host = "Front.Example:1234";
                let r: Response = request(self.f.addr, "GET", path, &[("Host", host)], b"");
                (r.status, r.body, host.into(), "http")
            }
            Client::H2c => {
                let host = format!("front.example:{}", self.h2c);
                let resolve = format!("{host}:127.0.0.1");
                let url = format!("http://{host}{path}");
                let (code, body, v) =
                    curl(&["--http2-prior-knowledge", "--resolve", &resolve, &url]);
                assert_eq!(v, "2", "curl spoke HTTP/2 to fulcrum: {body}");
                (code, body, host, "http")
            }
            Client::TlsHttp1 | Client::TlsH2 => {
                let host = format!("site.test:{}", self.tls);
                let resolve = format!("{host}:127.0.0.1");
                let url = format!("https://{host}{path}");
                let (flag, want) = match client {
                    Client::TlsH2 => ("--http2", "2"),
                    _ => ("--http1.1", "1.1"),
                };
                let ca = self.ca.to_str().unwrap();
                let (code, body, v) = curl(&[flag, "--cacert", ca, "--resolve", &resolve, &url]);
                assert_eq!(v, want, "curl's protocol towards fulcrum: {body}");
                (code, body, host, "https")
            }
        }
    }
}

#[test]
fn tls_h2_and_h2c_pools_reach_nginx_with_the_protocol_asked_from_every_kind_of_client() {
    let pki = Pki::new("fulcrum upstream test CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let n = Nginx::start(&site, &pki.ca());
    let (ca, tls_addr, h2c_addr) = (pki.ca(), local(n.tls), local(n.h2c));
    // `tls1` and `tls2` differ only in protocol: the same server, SNI and CA.
    let pools = [
        ("tls1", pool("tls1", tls_addr, &tls(true, &ca, ""))),
        (
            "tls2",
            pool(
                "tls2",
                tls_addr,
                &format!("{}    protocol: h2\n", tls(true, &ca, "")),
            ),
        ),
        ("clear2", pool("clear2", h2c_addr, "    protocol: h2c\n")),
    ];
    let (f, h2c, tls_port) = start_fulcrum(&site, &body(&pools));
    let front = Front {
        f: &f,
        h2c,
        tls: tls_port,
        ca: &ca,
    };
    // Twice each: the second may ride on a connection kept from the first.
    for round in 0..2 {
        for client in CLIENTS {
            for (name, protocol, over_tls) in [
                ("tls1", "HTTP/1.1", true),
                ("tls2", "HTTP/2.0", true),
                ("clear2", "HTTP/2.0", false),
            ] {
                let (status, body, host, scheme) = front.get(client, &format!("/{name}/x"));
                let what = format!("{client:?} to pool {name} (round {round}): {body}");
                assert_eq!(status, 200, "{what}");
                let seen = Seen::parse(&body);
                assert_eq!(seen.protocol, protocol, "{what}");
                if over_tls {
                    assert!(seen.tls.starts_with("TLSv1."), "{what}");
                    assert_eq!(seen.scheme, "https", "{what}");
                } else {
                    assert_eq!(
                        (seen.tls.as_str(), seen.scheme.as_str()),
                        ("", "http"),
                        "{what}"
                    );
                }
                assert_eq!(seen.client_dn, "", "no client certificate: {what}");
                assert_eq!(
                    seen.host, host,
                    "Host / :authority as the client sent it: {what}"
                );
                assert_eq!(seen.forwarded_proto, scheme, "{what}");
            }
        }
    }
    for (name, addr) in [("tls1", tls_addr), ("tls2", tls_addr), ("clear2", h2c_addr)] {
        let s = f.server_status(name, addr);
        assert_eq!(s["requests"], 8, "{name}: {s}");
        assert_eq!(s["responses"]["2xx"], 8, "{name}: {s}");
        assert_eq!(s["failures"], 0, "{name}: {s}");
    }
    assert_eq!(n.requests_on(n.tls).len(), 16);
    assert_eq!(n.requests_on(n.h2c).len(), 8);
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_client_certificate_is_presented_and_a_server_that_requires_one_is_served() {
    let pki = Pki::new("fulcrum upstream test CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let me = pki.client("fulcrum client");
    let n = Nginx::start(&site, &pki.ca());
    let ca = pki.ca();
    let cert = format!(
        ", client_cert: {}, client_key: {}",
        yaml_path(&me.cert),
        yaml_path(&me.key)
    );
    let mtls = local(n.mtls);
    let h2 = "    protocol: h2\n";
    let pools = [
        ("h1cert", pool("h1cert", mtls, &tls(true, &ca, &cert))),
        (
            "h2cert",
            pool("h2cert", mtls, &format!("{}{h2}", tls(true, &ca, &cert))),
        ),
        ("nocert", pool("nocert", mtls, &tls(true, &ca, ""))),
    ];
    let (f, h2c, tls_port) = start_fulcrum(&site, &body(&pools));
    let front = Front {
        f: &f,
        h2c,
        tls: tls_port,
        ca: &ca,
    };
    for client in CLIENTS {
        for (name, protocol) in [("h1cert", "HTTP/1.1"), ("h2cert", "HTTP/2.0")] {
            let (status, body, _, _) = front.get(client, &format!("/{name}"));
            assert_eq!(status, 200, "{client:?} via {name}: {body}");
            let seen = Seen::parse(&body);
            assert_eq!(seen.client_dn, "CN=fulcrum client", "{client:?} via {name}");
            assert_eq!(seen.protocol, protocol, "{client:?} via {name}");
        }
    }
    // nginx completes the handshake without a certificate and answers 400
    // itself (ssl_verify_client on): an answer from the server, passed on,
    // and no failure of the server's.
    let r = f.get("/nocert");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("No required SSL certificate was sent"),
        "{}",
        r.body
    );
    let s = f.server_status("nocert", mtls);
    assert_eq!(s["failures"], 0, "{s}");
    assert_eq!(s["responses"]["4xx"], 1, "{s}");
    let dns: Vec<String> = n.requests_on(n.mtls);
    assert_eq!(dns.len(), 2 * CLIENTS.len() + 1, "{dns:#?}");
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_server_that_refuses_the_handshake_without_a_client_certificate_is_a_502_and_a_failure() {
    let pki = Pki::new("fulcrum upstream test CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let me = pki.client("fulcrum client");
    let ss = SServer::start(&site, &pki.ca());
    let ca = pki.ca();
    let addr = local(ss.port);
    let cert = format!(
        ", client_cert: {}, client_key: {}",
        yaml_path(&me.cert),
        yaml_path(&me.key)
    );
    let pools = [
        ("with", pool("with", addr, &tls(true, &ca, &cert))),
        ("without", pool("without", addr, &tls(true, &ca, ""))),
    ];
    let (f, _, _) = start_fulcrum(&site, &body(&pools));
    let r = f.get("/with");
    assert_eq!(
        r.status, 200,
        "s_server's page with a certificate: {}",
        r.body
    );
    let r = f.get("/without");
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("pool without"), "{}", r.body);
    let s = f.server_status("without", addr);
    assert!(s["failures"].as_u64().unwrap() >= 1, "a failure: {s}");
    let with = f.server_status("with", addr);
    assert_eq!(with["failures"], 0, "{with}");
    f.assert_in_flight_returns_to_zero();
}

#[test]
fn verification_refuses_a_server_outside_the_ca_or_the_name_and_nothing_reaches_it() {
    let pki = Pki::new("fulcrum upstream test CA");
    let other = Pki::new("some other CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let n = Nginx::start(&site, &pki.ca());
    let (ca, wrong) = (pki.ca(), other.ca());
    let addr = local(n.tls);
    let h2 = "    protocol: h2\n";
    let other_name = format!(
        "    tls: {{ verify: true, ca: {}, sni: other.test }}\n",
        yaml_path(&ca)
    );
    let pools = [
        ("wrongca", pool("wrongca", addr, &tls(true, &wrong, ""))),
        (
            "wrongca2",
            pool("wrongca2", addr, &format!("{}{h2}", tls(true, &wrong, ""))),
        ),
        ("wrongname", pool("wrongname", addr, &other_name)),
        ("noverify", pool("noverify", addr, &tls(false, &wrong, ""))),
    ];
    let (f, h2c, tls_port) = start_fulcrum(&site, &body(&pools));
    let front = Front {
        f: &f,
        h2c,
        tls: tls_port,
        ca: &ca,
    };
    for client in CLIENTS {
        for name in ["wrongca", "wrongca2", "wrongname"] {
            let (status, body, _, _) = front.get(client, &format!("/{name}"));
            assert_eq!(status, 502, "{client:?} via {name}: {body}");
            assert!(body.contains(&format!("pool {name}")), "{body}");
        }
    }
    assert_eq!(
        n.requests_on(n.tls),
        Vec::<String>::new(),
        "no request reached nginx"
    );
    for name in ["wrongca", "wrongca2", "wrongname"] {
        let s = f.server_status(name, addr);
        assert!(
            s["failures"].as_u64().unwrap() >= CLIENTS.len() as u64,
            "each refused handshake is a failure: {s}"
        );
    }
    let log = f.log_text();
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(log.contains("not valid for name \"other.test\""), "{log}");

    for client in CLIENTS {
        let (status, body, _, _) = front.get(client, "/noverify");
        assert_eq!(status, 200, "verify: false serves: {client:?}: {body}");
        assert_eq!(Seen::parse(&body).protocol, "HTTP/1.1");
    }
    assert_eq!(n.requests_on(n.tls).len(), CLIENTS.len());
    f.assert_in_flight_returns_to_zero();
}

/// `protocol: h2` means HTTP/2: a TLS server that offers only HTTP/1.1
/// refuses the ALPN (nginx sends no_application_protocol), and fulcrum
/// answers 502 rather than falling back to HTTP/1.1; `http1` to the same
/// server is served.
#[test]
fn an_h2_pool_is_refused_by_a_tls_server_without_http2_and_does_not_fall_back() {
    let pki = Pki::new("fulcrum upstream test CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let n = Nginx::start(&site, &pki.ca());
    let addr = local(n.h1tls);
    let t = tls(true, &pki.ca(), "");
    let pools = [
        ("h2", pool("h2", addr, &format!("{t}    protocol: h2\n"))),
        ("h1", pool("h1", addr, &t)),
    ];
    let (f, _, _) = start_fulcrum(&site, &body(&pools));
    for _ in 0..2 {
        let r = f.get("/h2");
        assert_eq!(r.status, 502, "{}", r.body);
    }
    assert_eq!(n.requests_on(n.h1tls), Vec::<String>::new());
    let s = f.server_status("h2", addr);
    assert_eq!(s["failures"], 2, "{s}");
    let log = f.log_text();
    assert!(log.contains("NoApplicationProtocol"), "{log}");
    let r = f.get("/h1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(Seen::parse(&r.body).protocol, "HTTP/1.1");
    f.assert_in_flight_returns_to_zero();
}

/// Pingora's connection pool does not tell two pools apart by their CA
/// (its reuse hash has the address, SNI, client certificate and the
/// verify flags, not the trusted CAs): a connection that pool `good`
/// verified against the right CA must not serve pool `wrong`, whose CA
/// does not vouch for the server. Over HTTP/1.1 and over HTTP/2.
#[test]
fn a_pool_does_not_ride_on_a_connection_that_another_pool_verified_with_another_ca() {
    let pki = Pki::new("fulcrum upstream test CA");
    let other = Pki::new("some other CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let n = Nginx::start(&site, &pki.ca());
    let addr = local(n.tls);
    let h2 = "    protocol: h2\n";
    let (good, wrong) = (tls(true, &pki.ca(), ""), tls(true, &other.ca(), ""));
    let pools = [
        ("good", pool("good", addr, &good)),
        ("wrong", pool("wrong", addr, &wrong)),
        ("good2", pool("good2", addr, &format!("{good}{h2}"))),
        ("wrong2", pool("wrong2", addr, &format!("{wrong}{h2}"))),
    ];
    let (f, _, _) = start_fulcrum(&site, &body(&pools));
    let mut served = vec![];
    for (good, wrong) in [("/good", "/wrong"), ("/good2", "/wrong2")] {
        for round in 0..4 {
            // Two in a row: each of fulcrum's two threads keeps a verified
            // connection idle (each new client connection goes to the
            // other thread).
            for _ in 0..2 {
                assert_eq!(f.get(good).status, 200);
            }
            std::thread::sleep(Duration::from_millis(50));
            for _ in 0..2 {
                let r = f.get(wrong);
                if r.status != 502 {
                    let body = r.body.trim_end();
                    served.push(format!("{wrong} round {round}: {} {body}", r.status));
                }
            }
        }
    }
    assert!(
        served.is_empty(),
        "pools `wrong` and `wrong2` trust only another CA, yet nginx served them {} of 16 \
         times (on connections that `good` and `good2` had verified):\n{}",
        served.len(),
        served.join("\n")
    );
    assert_eq!(
        n.requests_on(n.tls).len(),
        16,
        "only the good pools' requests"
    );
}

#[test]
fn health_checks_of_tls_h2_and_h2c_pools_keep_a_healthy_nginx_up() {
    let pki = Pki::new("fulcrum upstream test CA");
    let other = Pki::new("some other CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let me = pki.client("fulcrum client");
    let n = Nginx::start(&site, &pki.ca());
    let ca = pki.ca();
    let (tls_addr, mtls, h2c_addr) = (local(n.tls), local(n.mtls), local(n.h2c));
    let hc = "    health_check: { type: http, path: /health, interval: 200ms, timeout: 1s, rise: 1, fall: 1 }\n";
    let cert = format!(
        ", client_cert: {}, client_key: {}",
        yaml_path(&me.cert),
        yaml_path(&me.key)
    );
    let h2 = "    protocol: h2\n";
    let pools = [
        (
            "tls1",
            pool("tls1", tls_addr, &format!("{}{hc}", tls(true, &ca, ""))),
        ),
        (
            "tls2",
            pool("tls2", tls_addr, &format!("{}{h2}{hc}", tls(true, &ca, ""))),
        ),
        (
            "mtls",
            pool("mtls", mtls, &format!("{}{h2}{hc}", tls(true, &ca, &cert))),
        ),
        (
            "clear2",
            pool("clear2", h2c_addr, &format!("    protocol: h2c\n{hc}")),
        ),
        // A check that must fail: the server is outside this pool's CA.
        (
            "wrongca",
            pool(
                "wrongca",
                tls_addr,
                &format!("{}{hc}", tls(true, &other.ca(), "")),
            ),
        ),
    ];
    let (f, _, _) = start_fulcrum(&site, &body(&pools));
    let healthy = [
        ("tls1", tls_addr),
        ("tls2", tls_addr),
        ("mtls", mtls),
        ("clear2", h2c_addr),
    ];
    let ok = wait_until(Duration::from_secs(10), || {
        healthy.iter().all(|(p, a)| {
            let s = f.server_status(p, *a);
            s["active"]["checked"] == true
                && s["active"]["consecutive_successes"].as_u64().unwrap_or(0) >= 3
        })
    });
    let doc = f.status_json();
    assert!(ok, "every check passed three times in a row: {doc:#}");
    for (p, a) in healthy {
        let s = f.server_status(p, a);
        assert_eq!(s["state"], "up", "{p}: {s}");
        assert_eq!(s["active"]["healthy"], true, "{p}: {s}");
        assert_eq!(s["active"]["consecutive_failures"], 0, "{p}: {s}");
    }
    let s = f.server_status("wrongca", tls_addr);
    assert!(
        wait_until(Duration::from_secs(5), || f
            .server_status("wrongca", tls_addr)["state"]
            == "unhealthy"),
        "a check against a server outside the CA fails: {s}"
    );
    // The checks went as the pool's requests go: HTTP/2 where the pool
    // speaks it, with the client certificate where the pool has one.
    let checks = |port: u16| -> Vec<String> {
        n.requests_on(port)
            .into_iter()
            .filter(|l| l.contains(" /health ") && l.contains("fulcrum-health-check"))
            .collect()
    };
    let tls_checks = checks(n.tls);
    assert!(
        tls_checks.iter().any(|l| l.contains(" HTTP/1.1 ")),
        "{tls_checks:#?}"
    );
    assert!(
        tls_checks.iter().any(|l| l.contains(" HTTP/2.0 ")),
        "{tls_checks:#?}"
    );
    let mtls_checks = checks(n.mtls);
    assert!(
        !mtls_checks.is_empty()
            && mtls_checks
                .iter()
                .all(|l| l.contains(" HTTP/2.0 \"CN=fulcrum client\" ")),
        "{mtls_checks:#?}"
    );
    let h2c_checks = checks(n.h2c);
    assert!(
        !h2c_checks.is_empty() && h2c_checks.iter().all(|l| l.contains(" HTTP/2.0 ")),
        "{h2c_checks:#?}"
    );
    // And the pools serve.
    for p in ["tls1", "tls2", "mtls", "clear2"] {
        let r = f.get(&format!("/{p}"));
        assert_eq!(r.status, 200, "{p}: {}", r.body);
    }
}

/// A TLS server of rustls's (aws-lc-rs) that agrees only to the
/// post-quantum hybrid X25519MLKEM768: a client that does not offer it
/// fails the handshake. It answers every HTTP/1.1 request on a connection
/// with the key exchange group agreed, and stops when dropped.
struct PqOnlyServer {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl PqOnlyServer {
    fn start(site: &Pair) -> PqOnlyServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider
            .kx_groups
            .retain(|g| g.name() == rustls::NamedGroup::X25519MLKEM768);
        let certs = CertificateDer::pem_file_iter(&site.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&site.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let accept = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let config = config.clone();
                        std::thread::spawn(move || Self::serve(config, sock));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        PqOnlyServer {
            addr,
            stop,
            accept: Some(accept),
        }
    }

    /// One connection: requests without bodies, answered until the peer
    /// closes or a read fails (a refused handshake ends here too).
    fn serve(config: std::sync::Arc<rustls::ServerConfig>, sock: TcpStream) {
        use std::io::{BufRead, BufReader, Write};
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = BufReader::new(rustls::StreamOwned::new(conn, sock));
        loop {
            let mut line = String::new();
            loop {
                line.clear();
                match tls.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line == "\r\n" => break,
                    Ok(_) => {}
                }
            }
            let s = tls.get_mut();
            let group = s.conn.negotiated_key_exchange_group().map(|g| g.name());
            let body = format!("{group:?}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }
}

impl Drop for PqOnlyServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// fulcrum's upstream TLS is Pingora's connector with the process's rustls
/// provider, which fulcrum sets to aws-lc-rs before Pingora would install
/// ring (`config::tls::install_crypto_provider`): its ClientHello offers
/// X25519MLKEM768, so a server that insists on the post-quantum exchange
/// is served (with ring it would refuse every handshake). Servers without
/// it (nginx with OpenSSL 3.0, the other tests here) get X25519.
#[test]
fn upstream_tls_offers_the_post_quantum_key_exchange() {
    let pki = Pki::new("fulcrum upstream test CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let server = PqOnlyServer::start(&site);
    let ca = pki.ca();
    let pools = [("pq", pool("pq", server.addr, &tls(true, &ca, "")))];
    let (f, _, _) = start_fulcrum(&site, &body(&pools));
    for _ in 0..3 {
        let r = f.get("/pq");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body, "Some(X25519MLKEM768)");
    }
    assert_eq!(f.server_status("pq", server.addr)["failures"], 0);
    drop(f);
}
