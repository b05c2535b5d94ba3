//! gRPC through fulcrum, end to end, between a client and a server we did
//! not write: Python's grpcio (its C core's HTTP/2) on both sides
//! (grpc/peer.py: generic handlers over raw bytes, no protoc). The server
//! listens in clear (h2c) behind a pool with `protocol: h2c`; the client
//! comes in on an h2c listener (prior knowledge) and on a TLS listener with
//! ALPN h2, trusting the test CA. Each case runs over both listeners:
//! unary calls, a bidirectional stream whose messages interleave with the
//! replies, a non-OK status with its message and trailing metadata, custom
//! initial and trailing metadata, a deadline shorter than the server's
//! work, a call the client cancels, and 50 calls at once on one connection. fulcrum's status JSON and
//! access log count one request per gRPC call (one HTTP/2 stream).

use crate::common::certs::Pki;
use crate::common::{repo_path, run_bounded, wait_until, Fulcrum, PyServer};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The gRPC peers (server and client), run by `python3`.
fn peer_script() -> PathBuf {
    repo_path("tests/integration/grpc/peer.py")
}

/// A grpcio server on a loopback port (h2c), stopped by its pid on drop.
struct GrpcServer {
    py: PyServer,
}

impl GrpcServer {
    /// `args`: after the port file (`--max-connection-age-ms N`).
    fn start(args: &[&str]) -> GrpcServer {
        let py = PyServer::start(&peer_script(), args, "the grpcio server", "grpcio");
        GrpcServer { py }
    }

    fn addr(&self) -> SocketAddr {
        self.py.addr
    }

    /// The server's own counts (`calls` per method, `max_active`,
    /// `cancelled`, `forwarded_proto`), asked directly, not through fulcrum.
    fn stats(&self) -> Value {
        client("stats", &Listener::Direct(self.addr()), 1)
    }
}

/// Where a gRPC client connects.
enum Listener {
    /// fulcrum's h2c listener (or the server itself): prior knowledge.
    Direct(SocketAddr),
    /// fulcrum's TLS listener: ALPN h2, the test CA as the only root, and
    /// `site.test` as the name to verify (and the :authority).
    Tls(SocketAddr, PathBuf),
}

impl Listener {
    fn name(&self) -> &'static str {
        match self {
            Listener::Direct(_) => "h2c",
            Listener::Tls(..) => "tls",
        }
    }
}

/// Runs `python3 peer.py client CASE ...` (at most 60 s) and returns the
/// JSON line it prints.
fn client(case: &str, to: &Listener, n: usize) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(peer_script()).args(["client", case]);
    match to {
        Listener::Direct(a) => cmd.arg(a.to_string()),
        Listener::Tls(a, ca) => cmd
            .arg(a.to_string())
            .arg("--ca")
            .arg(ca)
            .args(["--name", "site.test"]),
    };
    cmd.args(["--n", &n.to_string()]);
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpc client {case} via {}: {}\n{stdout}{}",
        to.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("grpc client {case}: not JSON ({e}): {stdout}"))
}

/// A grpcio server behind fulcrum (pool `grpc`, `protocol: h2c`, route
/// `/test.Echo/`), which listens on an h2c address and a TLS one.
struct Setup {
    server: GrpcServer,
    f: Fulcrum,
    listeners: [Listener; 2],
    _pki: Pki,
}

fn setup() -> Setup {
    setup_with(&[])
}

/// [`setup`] with `server_args` for the grpcio server.
fn setup_with(server_args: &[&str]) -> Setup {
    let pki = Pki::new("fulcrum grpc test CA");
    let site = pki.server("site.test", &["DNS:site.test"]);
    let server = GrpcServer::start(server_args);
    let tls = format!(
        "{{ addr: \"127.0.0.1:{{port}}\", http2: true, tls: {{ certificates: [{{ cert: {:?}, key: {:?} }}] }} }}",
        site.cert.display().to_string(),
        site.key.display().to_string()
    );
    let body = format!(
        "pools:\n  grpc:\n    protocol: h2c\n    servers: [{{ addr: \"{}\" }}]\n\
         routes:\n  - {{ prefix: /test.Echo/, pool: grpc }}\n",
        server.addr()
    );
    let (f, ports) = Fulcrum::start_listening(
        &["{ addr: \"127.0.0.1:{port}\", http2: true }", &tls],
        &body,
    );
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let listeners = [
        Listener::Direct(at(ports[0])),
        Listener::Tls(at(ports[1]), pki.ca()),
    ];
    Setup {
        server,
        f,
        listeners,
        _pki: pki,
    }
}

impl Setup {
    /// The grpc server's entry in fulcrum's status JSON.
    fn upstream(&self) -> Value {
        self.f.server_status("grpc", self.server.addr())
    }

    /// The route's entry in fulcrum's status JSON.
    fn route(&self) -> Value {
        let doc = self.f.status_json();
        doc["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["pool"] == "grpc")
            .unwrap_or_else(|| panic!("the route in the status JSON: {doc}"))
            .clone()
    }

    /// Waits until fulcrum's access log has `n` lines of the grpc pool.
    fn access_log(&self, n: usize) -> Vec<crate::common::AccessLine> {
        let lines = self.f.wait_access_log(n);
        assert_eq!(lines.len(), n, "exactly {n} access log lines: {lines:#?}");
        lines
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn unary_calls_over_h2c_and_tls_listeners_are_counted_once_each() {
    let s = setup();
    let requests_before = s.f.status_json()["connections"]["requests"]
        .as_u64()
        .unwrap();
    for l in &s.listeners {
        let r = client("unary", l, 3);
        assert_eq!(
            strings(&r["replies"]),
            ["echo:hello 0", "echo:hello 1", "echo:hello 2"],
            "via {}",
            l.name()
        );
    }
    // The status request itself is the one more.
    let requests = s.f.status_json()["connections"]["requests"]
        .as_u64()
        .unwrap();
    assert_eq!(requests - requests_before, 6 + 1, "stub_status requests");
    let up = s.upstream();
    assert_eq!(up["requests"], 6, "one request per call: {up}");
    assert_eq!(up["responses"]["2xx"], 6, "{up}");
    assert_eq!(up["failures"], 0, "{up}");
    assert_eq!(up["state"], "up", "{up}");
    let route = s.route();
    assert_eq!(route["requests"], 6, "{route}");
    assert_eq!(route["responses"]["2xx"], 6, "{route}");

    for line in s.access_log(6) {
        assert_eq!(
            (line.method.as_str(), line.uri.as_str(), line.status),
            ("POST", "/test.Echo/Unary", 200),
            "{}",
            line.raw
        );
        assert_eq!(line.upstreams, vec![s.server.addr()], "{}", line.raw);
        assert_eq!(line.upstream_statuses, vec![200], "{}", line.raw);
    }
    let stats = s.server.stats();
    assert_eq!(stats["calls"]["Unary"], 6, "{stats}");
    assert_eq!(
        strings(&stats["forwarded_proto"]),
        ["http", "https"],
        "X-Forwarded-Proto as metadata: {stats}"
    );
    s.f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_bidirectional_stream_interleaves_messages_and_replies_in_order() {
    let s = setup();
    const N: usize = 20;
    for l in &s.listeners {
        // The client sends message i only once reply i-1 is in: a proxy
        // that held either direction until the stream's end would hang it.
        let r = client("chat", l, N);
        let want: Vec<String> = (0..N).map(|i| format!("reply:msg {i}")).collect();
        assert_eq!(strings(&r["replies"]), want, "via {}: {r}", l.name());
        assert_eq!(r["code"], "OK", "via {}: {r}", l.name());
    }
    let up = s.upstream();
    assert_eq!(
        up["requests"], 2,
        "one request per stream, not per message: {up}"
    );
    assert_eq!(up["failures"], 0, "{up}");
    let log = s.access_log(2);
    assert!(
        log.iter()
            .all(|l| l.uri == "/test.Echo/Chat" && l.status == 200),
        "{log:#?}"
    );
    assert_eq!(s.server.stats()["calls"]["Chat"], 2);
    s.f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_non_ok_status_its_message_and_trailing_metadata_reach_the_client() {
    let s = setup();
    for l in &s.listeners {
        let r = client("fail", l, 1);
        assert_eq!(r["code"], "NOT_FOUND", "via {}: {r}", l.name());
        assert_eq!(r["details"], "no such user", "via {}: {r}", l.name());
        assert_eq!(r["trailing"]["x-why"], "missing", "via {}: {r}", l.name());

        let r = client("meta", l, 1);
        assert_eq!(
            (&r["code"], &r["reply"]),
            (&"OK".into(), &"meta".into()),
            "{r}"
        );
        assert_eq!(r["initial"]["x-initial"], "hello", "via {}: {r}", l.name());
        assert_eq!(r["trailing"]["x-trailer"], "done", "via {}: {r}", l.name());
        assert_eq!(
            r["trailing"]["x-trailer-bin"],
            "0001ff",
            "binary trailing metadata, byte for byte, via {}: {r}",
            l.name()
        );
    }
    // A gRPC error travels in an HTTP 200's trailers: the server answered,
    // so it is no failure of the server's.
    let up = s.upstream();
    assert_eq!(up["requests"], 4, "{up}");
    assert_eq!(up["responses"]["2xx"], 4, "{up}");
    assert_eq!(up["failures"], 0, "{up}");
    assert_eq!(up["state"], "up", "{up}");
    s.f.assert_in_flight_returns_to_zero();
}

#[test]
fn a_deadline_ends_the_call_on_time_and_fulcrum_goes_on_serving() {
    let s = setup();
    for l in &s.listeners {
        // 0.5 s deadline on a call the server works on for 2 s.
        let r = client("deadline", l, 1);
        assert_eq!(r["code"], "DEADLINE_EXCEEDED", "via {}: {r}", l.name());
        let elapsed = r["elapsed"].as_f64().unwrap();
        assert!(
            (0.45..1.9).contains(&elapsed),
            "the client gave up at its deadline, not the server's 2 s: {elapsed:.3} s via {}",
            l.name()
        );
        assert_eq!(
            r["after"], "echo:after",
            "the same connection serves on: {r}"
        );
    }
    // And a new client too.
    for l in &s.listeners {
        assert_eq!(strings(&client("unary", l, 1)["replies"]), ["echo:hello 0"]);
    }
    // The server saw both slow calls end early (the client's stream reset,
    // or the grpc-timeout that fulcrum forwarded).
    assert!(
        wait_until(Duration::from_secs(5), || s.server.stats()["cancelled"]
            == 2),
        "{}",
        s.server.stats()
    );
    // A client that gives up is not the server's failure.
    let up = s.upstream();
    assert_eq!(up["requests"], 6, "2 slow + 2 after + 2 new: {up}");
    assert_eq!(up["failures"], 0, "{up}");
    assert_eq!(up["state"], "up", "{up}");
    s.f.assert_in_flight_returns_to_zero();
    let log = s.access_log(6);
    let slow: Vec<_> = log.iter().filter(|l| l.uri == "/test.Echo/Slow").collect();
    assert_eq!(slow.len(), 2, "{log:#?}");
    for l in slow {
        // No response went out: 0 in the default format (499 in
        // combined and json, as nginx logs it); it was 400 once, an answer
        // written to a stream the client had reset.
        assert_eq!(
            l.status, 0,
            "a call the client gave up on got no response: {}",
            l.raw
        );
    }
}

#[test]
fn a_call_the_client_cancels_is_cancelled_at_the_server_at_once() {
    let s = setup();
    for l in &s.listeners {
        // Cancelled at 0.3 s; the client's connection stays open till 1.5 s.
        let r = client("cancel", l, 1);
        assert_eq!(r["cancelled"], true, "via {}: {r}", l.name());
        assert_eq!(r["after"], "echo:after", "the connection serves on: {r}");
    }
    let stats = s.server.stats();
    let after: Vec<f64> = stats["cancelled_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(
        after.len(),
        2,
        "both calls ended early at the server: {stats}"
    );
    eprintln!("grpc: cancelled calls ended at the server after {after:?} s");
    assert!(
        after.iter().all(|&t| t < 1.2),
        "fulcrum passed the client's RST_STREAM on to the server's stream \
         (not only when the client's connection closed at 1.5 s): {stats}"
    );
    let up = s.upstream();
    assert_eq!(up["failures"], 0, "{up}");
    s.f.assert_in_flight_returns_to_zero();
}

#[test]
fn fifty_concurrent_calls_on_one_client_connection_all_succeed() {
    let s = setup();
    const N: usize = 50;
    for l in &s.listeners {
        let accepts = |f: &Fulcrum| f.status_json()["connections"]["accepts"].as_u64().unwrap();
        let before = accepts(&s.f);
        let r = client("concurrent", l, N);
        let after = accepts(&s.f);
        assert_eq!(r["errors"], serde_json::json!([]), "via {}", l.name());
        let mut got = strings(&r["replies"]);
        got.sort();
        let mut want: Vec<String> = (0..N).map(|i| format!("echo:c{i}")).collect();
        want.sort();
        assert_eq!(got, want, "via {}", l.name());
        // The client's one connection, and the status request's.
        assert_eq!(after - before, 2, "one client connection via {}", l.name());
        eprintln!(
            "grpc: {N} concurrent calls via {} in {:.3} s",
            l.name(),
            r["elapsed"].as_f64().unwrap()
        );
    }
    let up = s.upstream();
    assert_eq!(up["requests"], 2 * N as u64, "{up}");
    assert_eq!(up["responses"]["2xx"], 2 * N as u64, "{up}");
    assert_eq!(up["failures"], 0, "{up}");
    // Each call holds the server 50 ms: calls overlapped there, so fulcrum
    // multiplexed them towards the server too rather than one at a time.
    let stats = s.server.stats();
    let most = stats["max_active"].as_u64().unwrap();
    eprintln!("grpc: at most {most} calls at once at the server");
    assert!(most >= 10, "calls ran at once at the server: {stats}");
    s.access_log(2 * N);
    s.f.assert_in_flight_returns_to_zero();
}

/// A gRPC server that retires each connection after 200 ms (GOAWAY, as
/// `max_connection_age` does in gRPC deployments) while calls keep coming:
/// fulcrum moves to new connections and no call fails. (grpcio's own
/// client, talking to that server directly, had 3 of 3,000 calls fail with
/// UNAVAILABLE "GOAWAY received" on 2026-12-07.)
#[test]
fn a_server_that_retires_its_connections_costs_no_failed_call() {
    let s = setup_with(&["--max-connection-age-ms", "200"]);
    // One call at a time for about 2 s (50 ms each): fulcrum would use one
    // connection throughout, unless the server retires them.
    let r = client("unary", &s.listeners[0], 40);
    assert_eq!(strings(&r["replies"]).len(), 40, "{r}");
    let conns = s.server.stats()["connections"].as_u64().unwrap();
    assert!(
        conns >= 4,
        "40 calls in a row came on {conns} connection(s)"
    );
    // And under load: 2,000 calls at once.
    const N: usize = 2000;
    let r = client("concurrent", &s.listeners[0], N);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(strings(&r["replies"]).len(), N);
    let up = s.upstream();
    assert_eq!(up["failures"], 0, "{up}");
}
