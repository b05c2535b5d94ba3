//! Differential conformance: the same raw requests go through nginx (the
//! reverse proxy fulcrum replaces) and through fulcrum, both in front of
//! the same recording upstream, and what the client receives and what the
//! upstream receives must be the same, except for the deliberate
//! differences listed in [`DELIBERATE`].
//!
//! - nginx: Debian's nginx 1.22, configured as a user migrating to fulcrum
//!   would have it (conformance/nginx.rs says why each line is there).
//! - fulcrum: one pool whose only server is the recorder, tried once.
//! - The recorder (conformance/upstream.rs) is an HTTP/1.1 server
//!   written here: it records every request (target as received, fields in
//!   order, decoded body, connection) and answers with scripted raw bytes.
//! - Corpus: raw requests (conformance/requests.rs) and raw upstream
//!   responses (conformance/responses.rs).
//! - Compared (conformance/compare.rs): for the client, the final
//!   responses (count, statuses, order, bodies), 1xx answers, end-to-end
//!   fields the upstream sent, hop-by-hop fields of the upstream that got
//!   through, and whether the connection stays open for 300 ms after the
//!   answers; for the upstream, the requests (count, method, target,
//!   version), Host, bodies, end-to-end fields and the client's hop-by-hop
//!   fields that got through. Host: the same value when the client sent
//!   one; otherwise any non-empty value. Malformed requests only on "a 4xx,
//!   the connection closes, the upstream receives nothing".
//!
//! Cases run on several connections at once, each from its own loopback
//! source address, which the proxies pass to the upstream in X-Real-IP: the
//! recorder files each request under it and answers with that case's
//! script.
//!
//! The test prints every case with agree/differ and fails on any
//! difference not in [`DELIBERATE`] (and on a listed one that does not
//! occur: the listed behaviour of fulcrum is then missing).
//! `CONFORMANCE_ONLY=text` runs the cases whose name contains `text` and
//! prints all that the client and the upstream saw in each.

pub(crate) mod case;
mod client;
mod compare;
pub(crate) mod differential;
pub(crate) mod nginx;
mod requests;
mod responses;
pub(crate) mod upstream;
pub(crate) mod wire;

use self::case::Case;
use self::client::Seen;
use self::compare::{compare, describe, Aspect, Run};
use self::differential::{in_lanes, only, report, Deliberate, Outcome};
use self::nginx::Nginx;
use self::upstream::Recorder;
use crate::common::{one_pool, Fulcrum};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const HOP_UP: &[&str] = &["hop-by-hop to upstream"];
const HOP_DOWN: &[&str] = &["hop-by-hop to client"];
const REFUSED: &[&str] = &["responses", "connection after", "upstream requests"];
const INTERIM: &[&str] = &["responses", "interim 1xx", "upstream requests"];
const OUTCOME: &[&str] = &["4xx+close, nothing upstream"];

/// Every deliberate difference between nginx and fulcrum: only where
/// fulcrum is stricter for safety, or where nginx's behaviour is its own
/// peculiarity; never a behaviour of fulcrum that is merely wrong.
#[rustfmt::skip]
const DELIBERATE: &[Deliberate] = &[
    Deliberate { case: "TRACE", aspects: REFUSED,
        reason: "nginx refuses TRACE with 405 whatever its configuration (hard-coded); fulcrum forwards it like any method and lets the server decide" },
    Deliberate { case: "lowercase method token", aspects: REFUSED,
        reason: "nginx's parser takes only A-Z, '_' and '-' in a method (400); a method is a case-sensitive token (RFC 9110 9.1), so fulcrum forwards `get` as the unknown method it is" },
    Deliberate { case: "CONNECT host:443", aspects: &["responses"],
        reason: "both refuse CONNECT and forward nothing; nginx's parser rejects the authority-form target (400), fulcrum refuses the method (405)" },
    Deliberate { case: "underscore in a field name", aspects: &["upstream fields"],
        reason: "nginx drops fields whose name contains '_' (underscores_in_headers off, its default); the name is a valid token and fulcrum forwards it" },
    Deliberate { case: "absolute-form target with a different Host", aspects: REFUSED,
        reason: "the target and Host name different hosts: fulcrum (Pingora) refuses the ambiguous request with 400 instead of picking one the server may not route by; nginx forwards it with the client's Host" },
    Deliberate { case: "Connection: foo with Foo: bar", aspects: HOP_UP,
        reason: "nginx ignores the client's connection options and forwards the fields they name; RFC 9110 7.6.1 requires removing them, as fulcrum does" },
    Deliberate { case: "Connection: keep-alive, foo, bar with Foo and Bar", aspects: HOP_UP,
        reason: "as `Connection: foo`: nginx forwards fields named as connection options, fulcrum removes them (RFC 9110 7.6.1)" },
    Deliberate { case: "Connection: close, foo with Foo", aspects: HOP_UP,
        reason: "as `Connection: foo`: nginx forwards fields named as connection options, fulcrum removes them (RFC 9110 7.6.1)" },
    Deliberate { case: "Proxy-Connection field", aspects: HOP_UP,
        reason: "nginx clears only Connection, Keep-Alive, TE, Expect and Upgrade by default and forwards Proxy-Connection, which RFC 9110 7.6.1 says to remove" },
    Deliberate { case: "Trailer field with a chunked body", aspects: HOP_UP,
        reason: "nginx forwards Trailer although it drops the trailers it announces (it sends the body with Content-Length); fulcrum drops both" },
    Deliberate { case: "WebSocket upgrade request, answered 200", aspects: HOP_UP,
        reason: "a WebSocket handshake (Connection: Upgrade, Upgrade: websocket): fulcrum (Pingora) passes it on so that the server may switch protocols (101); nginx drops Upgrade unless configured for WebSockets (proxy_set_header Upgrade/Connection)" },
    Deliberate { case: "malformed: request line without version", aspects: OUTCOME,
        reason: "nginx still serves HTTP/0.9 (a request line without a version is forwarded and answered with a bare body); fulcrum speaks HTTP/1.x only and answers 400" },
    Deliberate { case: "malformed: chunk size not hex", aspects: OUTCOME,
        reason: "nginx reads a whole body before it contacts the upstream (proxy_request_buffering on); fulcrum streams bodies, so the upstream has the head when the bad chunk arrives, then sees the connection close mid-body (docs/behaviour.md, Hostile requests and limits)" },
    Deliberate { case: "malformed: field line without a colon", aspects: OUTCOME,
        reason: "nginx skips a field line it cannot parse and forwards the request (ignore_invalid_headers on); fulcrum refuses it with 400 (RFC 9112 2.2)" },
    Deliberate { case: "100 Continue before the answer", aspects: INTERIM,
        reason: "nginx 1.22 has no handling of an upstream's interim answer: the client gets nothing, neither the 1xx nor the final answer, while the upstream keeps the connection open; fulcrum forwards the 1xx and then the answer, as RFC 9110 15.2 asks of a proxy" },
    Deliberate { case: "102 Processing before the answer", aspects: INTERIM,
        reason: "as 100 before the answer: nginx 1.22 cannot pass an upstream's 1xx, fulcrum forwards it (RFC 9110 15.2)" },
    Deliberate { case: "103 Early Hints before the answer", aspects: INTERIM,
        reason: "as 100 before the answer: nginx 1.22 cannot pass an upstream's 1xx, fulcrum forwards it (RFC 9110 15.2)" },
    Deliberate { case: "not HTTP at all", aspects: REFUSED,
        reason: "nginx passes an answer without a status line to the client as an HTTP/0.9 response (raw bytes, no status, no framing) and keeps the connection; fulcrum answers 502 and closes, as after any failed proxy attempt (see `closed without answering`)" },
    Deliberate { case: "closed without answering", aspects: REFUSED,
        reason: "both answer 502; nginx keeps the client's connection and serves the next request on it, fulcrum answers with `Connection: close` and closes: Pingora 0.9.1 ends the client connection after any failed proxy attempt (its proxy loop does not consult fail_to_proxy's can_reuse_downstream), so the next request must come on a new connection" },
    Deliberate { case: "upstream sends Connection: x-hop with X-Hop", aspects: HOP_DOWN,
        reason: "nginx ignores the upstream's connection options and forwards the fields they name; RFC 9110 7.6.1 requires removing them, as fulcrum does" },
    Deliberate { case: "upstream sends Proxy-Connection", aspects: HOP_DOWN,
        reason: "nginx forwards an upstream's Proxy-Connection, which RFC 9110 7.6.1 says to remove, as fulcrum does" },
    Deliberate { case: "upstream sends Trailer with a Content-Length body", aspects: HOP_DOWN,
        reason: "nginx forwards Trailer, announcing trailers it does not send; fulcrum removes it" },
    Deliberate { case: "upstream sends Upgrade on a 200", aspects: HOP_DOWN,
        reason: "Upgrade is hop-by-hop and means nothing outside a 101 (RFC 9110 7.8); nginx forwards it on a 200, fulcrum removes it" },
];

/// Cases that run at once.
const WORKERS: usize = 8;

/// How long after the client is done the upstream may still log a request
/// of the case.
const SETTLE: Duration = Duration::from_millis(20);

/// Both proxies in front of one recorder.
struct Proxies {
    recorder: Recorder,
    nginx: Nginx,
    fulcrum: Fulcrum,
}

impl Proxies {
    fn start() -> Proxies {
        let recorder = Recorder::start();
        let nginx = Nginx::start(recorder.addr);
        let fulcrum = Fulcrum::start(&fulcrum_config(recorder.addr));
        Proxies {
            recorder,
            nginx,
            fulcrum,
        }
    }

    /// Runs `case` through the proxy at `to` from source address `lane`.
    fn run(&self, case: &Case, to: SocketAddr, lane: IpAddr) -> Run {
        let key = lane.to_string();
        self.recorder.begin(&key, case.script.clone());
        let seen: Seen = client::run(lane, to, &case.steps);
        std::thread::sleep(SETTLE);
        Run {
            upstream: self.recorder.recorded(&key),
            lane: key,
            seen,
        }
    }
}

/// fulcrum as the nginx config: one pool, the recorder its only server,
/// tried once, retried (not at all, with one server) on error and timeout.
fn fulcrum_config(upstream: SocketAddr) -> String {
    format!(
        "access_log: off\n{}",
        one_pool(
            "recorder",
            "/",
            &[upstream],
            "retry: { tries: 1, on: [error, timeout] }"
        )
    )
}

/// Runs every case, `WORKERS` at a time; worker `w` sends from
/// 127.0.1.w to nginx and from 127.0.2.w to fulcrum.
fn run_all(p: &Proxies, cases: &[Case]) -> Vec<Outcome> {
    in_lanes(cases, WORKERS, (1, 2), |case, nginx_lane, fulcrum_lane| {
        let a = p.run(case, p.nginx.addr, nginx_lane);
        let b = p.run(case, p.fulcrum.addr, fulcrum_lane);
        if only().is_some() {
            println!(
                "=== {}\nnginx:\n{}fulcrum:\n{}",
                case.name,
                describe(&a),
                describe(&b)
            );
        }
        Outcome {
            name: case.name.clone(),
            kind: format!("{:?}", case.kind),
            aspects: compare(case, &a, &b),
        }
    })
}

#[test]
fn nginx_and_fulcrum_agree_on_the_corpus() {
    let started = Instant::now();
    let p = Proxies::start();
    let mut cases = requests::corpus();
    let n_requests = cases.len();
    cases.extend(responses::corpus());
    let n_responses = cases.len() - n_requests;
    assert!(n_requests >= 80 && n_responses >= 30);
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    if let Some(text) = only() {
        cases.retain(|c| c.name.contains(&text));
    }
    let outcomes = run_all(&p, &cases);
    let failures = report(&outcomes, DELIBERATE);
    let orphans = p.recorder.orphans();
    println!(
        "\n{n_requests} request cases, {n_responses} response cases, {} differing, {} unexplained; {} requests reached no lane; {:.1} s",
        outcomes.iter().filter(|o| o.aspects.iter().any(Aspect::differs)).count(),
        failures.len(),
        orphans.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} unexplained difference(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
