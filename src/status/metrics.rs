//! `status.path + /metrics`: Prometheus text exposition format.
//!
//! Nothing is registered or looked up by label on the request path: gauges
//! and counters are read at scrape time from the atomics the servers, routes
//! and connection counters keep anyway, and each server's histograms are
//! lock-free `prometheus::Histogram`s owned by the server. A scrape builds the
//! metric families from the current runtime and encodes them with the
//! `prometheus` crate's text encoder.

use super::counters::Snapshot;
use super::{server_state, ReloadStats, SERVER_STATES};
use crate::clock::now_ms;
use crate::pool::{FailureKind, Pool, QueueExit, Server, STATUS_CLASSES};
use crate::runtime::Runtime;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Collects the families of one scrape.
struct Scrape {
    families: Vec<MetricFamily>,
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

fn counter(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels(pairs));
    m.set_gauge(g);
    m
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

impl Scrape {
    /// Adds a family; families without samples are left out (the format
    /// has no use for them and the encoder rejects them).
    fn add(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) {
        if metrics.is_empty() {
            return;
        }
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        f.set_metric(metrics);
        self.families.push(f);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.add(name, help, MetricType::GAUGE, vec![gauge(&[], value)]);
    }

    fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.add(name, help, MetricType::COUNTER, vec![counter(&[], value)]);
    }

    /// A family with one sample per server of every pool.
    fn per_server(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        rt: &Runtime,
        mut samples: impl FnMut(&Pool, &Server, &[(&str, &str)], &mut Vec<Metric>),
    ) {
        let mut out = vec![];
        for p in &rt.pools {
            for s in &p.servers {
                samples(p, s, &[("pool", p.name()), ("server", &s.name)], &mut out);
            }
        }
        self.add(name, help, kind, out);
    }
}

/// The whole exposition for the current runtime.
pub fn render(rt: &Runtime, conns: &Snapshot, reloads: &ReloadStats) -> String {
    let mut s = Scrape { families: vec![] };
    process(&mut s, rt, conns, reloads);
    routes(&mut s, rt);
    pools(&mut s, rt);
    discovery(&mut s, rt);
    servers(&mut s, rt);
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode(&s.families, &mut out) {
        log::error!("encoding metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

fn process(s: &mut Scrape, rt: &Runtime, c: &Snapshot, r: &ReloadStats) {
    s.add(
        "fulcrum_build_info",
        "Always 1; the version label names the running fulcrum.",
        MetricType::GAUGE,
        vec![gauge(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    );
    s.gauge(
        "fulcrum_connections_active",
        "Open client connections (stub_status: Active connections).",
        c.active as f64,
    );
    s.gauge(
        "fulcrum_connections_reading",
        "Connections reading a request header (stub_status: Reading).",
        c.reading as f64,
    );
    s.gauge(
        "fulcrum_connections_writing",
        "Connections with a request in progress (stub_status: Writing).",
        c.writing as f64,
    );
    s.gauge(
        "fulcrum_connections_waiting",
        "Idle keepalive connections (stub_status: Waiting).",
        c.waiting as f64,
    );
    s.counter(
        "fulcrum_connections_accepted_total",
        "Client connections accepted (stub_status: accepts).",
        c.accepts as f64,
    );
    s.counter(
        "fulcrum_connections_handled_total",
        "Client connections handled (stub_status: handled).",
        c.handled as f64,
    );
    s.counter(
        "fulcrum_http_requests_total",
        "Client requests, including those fulcrum answers itself (stub_status: requests).",
        c.requests as f64,
    );
    s.gauge(
        "fulcrum_config_generation",
        "Generation of the running config: 1 at start, +1 per successful reload.",
        rt.generation as f64,
    );
    s.gauge(
        "fulcrum_config_last_reload_successful",
        "Whether the last SIGHUP reload succeeded (1 before any reload).",
        flag(r.last_ok),
    );
    s.gauge(
        "fulcrum_config_last_reload_timestamp_seconds",
        "Unix time of the last SIGHUP reload attempt (0: none yet).",
        r.last_unix_ms as f64 / 1000.0,
    );
    s.add(
        "fulcrum_config_reloads_total",
        "SIGHUP reload attempts by result.",
        MetricType::COUNTER,
        vec![
            counter(&[("result", "success")], r.successes as f64),
            counter(&[("result", "failure")], r.failures as f64),
        ],
    );
}

fn routes(s: &mut Scrape, rt: &Runtime) {
    let mut requests = vec![];
    let mut responses = vec![];
    for (route, stats) in rt.router.routes().iter().zip(&rt.route_stats) {
        let pool = rt.pools.get(route.pool).map_or("", |p| p.name());
        let l = [("route", route.prefix.as_str()), ("pool", pool)];
        requests.push(counter(&l, stats.requests() as f64));
        for (class, n) in STATUS_CLASSES.iter().zip(stats.responses()) {
            responses.push(counter(&[l[0], l[1], ("code", class)], n as f64));
        }
    }
    s.add(
        "fulcrum_route_requests_total",
        "Requests matched by a route (label route = its prefix).",
        MetricType::COUNTER,
        requests,
    );
    s.add(
        "fulcrum_route_responses_total",
        "Responses to clients of routed requests by status class, including 502/503/504 written by fulcrum.",
        MetricType::COUNTER,
        responses,
    );
}

fn pools(s: &mut Scrape, rt: &Runtime) {
    let servers = rt
        .pools
        .iter()
        .map(|p| gauge(&[("pool", p.name())], p.servers.len() as f64))
        .collect();
    s.add(
        "fulcrum_pool_servers",
        "Servers configured in a pool.",
        MetricType::GAUGE,
        servers,
    );
    let usable = rt
        .pools
        .iter()
        .map(|p| gauge(&[("pool", p.name())], p.usable_count() as f64))
        .collect();
    s.add(
        "fulcrum_pool_usable_servers",
        "Servers of a pool that could take a request now.",
        MetricType::GAUGE,
        usable,
    );
    queues(s, rt);
}

/// The queues of the pools that have one.
fn queues(s: &mut Scrape, rt: &Runtime) {
    let (mut length, mut size, mut full, mut left, mut wait) =
        (vec![], vec![], vec![], vec![], vec![]);
    for p in &rt.pools {
        let Some(q) = p.queue() else { continue };
        let r = q.report();
        let l = [("pool", p.name())];
        length.push(gauge(&l, r.length as f64));
        size.push(gauge(&l, r.size as f64));
        full.push(counter(&l, r.full as f64));
        for (exit, n) in QueueExit::ALL.iter().zip(r.exits) {
            left.push(counter(&[l[0], ("result", exit.as_str())], n as f64));
        }
        let mut m = q.wait_metric();
        m.set_label(labels(&l));
        wait.push(m);
    }
    s.add(
        "fulcrum_pool_queue_length",
        "Requests waiting in a pool's queue for a server below max_conns.",
        MetricType::GAUGE,
        length,
    );
    s.add(
        "fulcrum_pool_queue_size",
        "Requests a pool's queue may hold (queue.size).",
        MetricType::GAUGE,
        size,
    );
    s.add(
        "fulcrum_pool_queue_full_total",
        "Requests answered 503 because the pool's queue was full.",
        MetricType::COUNTER,
        full,
    );
    s.add(
        "fulcrum_pool_queue_left_total",
        "Requests that left a pool's queue, by result: dispatched (got a server), timeout (503), abandoned (the client went away), no_server (502: no server usable).",
        MetricType::COUNTER,
        left,
    );
    s.add(
        "fulcrum_pool_queue_wait_seconds",
        "Time requests spent in a pool's queue, whatever the result.",
        MetricType::HISTOGRAM,
        wait,
    );
}

/// Pools with `resolve:` or `discover:`.
fn discovery(s: &mut Scrape, rt: &Runtime) {
    let (mut lookups, mut last_ok, mut streak, mut changes, mut ignored) =
        (vec![], vec![], vec![], vec![], vec![]);
    for p in &rt.pools {
        let Some(state) = &p.discovery else { continue };
        let r = state.report();
        let l = [("pool", p.name())];
        lookups.push(counter(&[l[0], ("result", "success")], r.successes as f64));
        lookups.push(counter(&[l[0], ("result", "failure")], r.failures as f64));
        let ms = r.last_success_unix_ms.unwrap_or(0);
        last_ok.push(gauge(&l, ms as f64 / 1000.0));
        streak.push(gauge(&l, r.consecutive_failures as f64));
        changes.push(counter(&l, r.changes as f64));
        ignored.push(gauge(
            &[l[0], ("reason", "outside_allow")],
            r.outside_allow as f64,
        ));
        ignored.push(gauge(&[l[0], ("reason", "over_cap")], r.over_cap as f64));
    }
    use MetricType::{COUNTER, GAUGE};
    s.add(
        "fulcrum_discovery_lookups_total",
        "DNS lookups of a pool's resolve: or discover: source by result (a failure keeps the last good servers).",
        COUNTER,
        lookups,
    );
    s.add(
        "fulcrum_discovery_last_success_timestamp_seconds",
        "Unix time of a pool's last good DNS answer (0: none yet).",
        GAUGE,
        last_ok,
    );
    s.add(
        "fulcrum_discovery_consecutive_failures",
        "Failed DNS lookups of a pool in a row now.",
        GAUGE,
        streak,
    );
    s.add(
        "fulcrum_discovery_changes_total",
        "DNS answers that changed a pool's servers.",
        COUNTER,
        changes,
    );
    s.add(
        "fulcrum_discovery_ignored_addresses",
        "Addresses of the last DNS answer left out: outside discover/resolve allow, or over the cap of servers per pool.",
        GAUGE,
        ignored,
    );
}

fn servers(s: &mut Scrape, rt: &Runtime) {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    s.per_server(
        "fulcrum_upstream_requests_total",
        "Attempts sent to a server (a retried request counts once per server tried).",
        COUNTER,
        rt,
        |_, sv, l, out| out.push(counter(l, sv.requests() as f64)),
    );
    s.per_server(
        "fulcrum_upstream_responses_total",
        "Responses received from a server by status class.",
        COUNTER,
        rt,
        |_, sv, l, out| {
            for (class, n) in STATUS_CLASSES.iter().zip(sv.stats.responses()) {
                out.push(counter(&[l[0], l[1], ("code", class)], n as f64));
            }
        },
    );
    s.per_server(
        "fulcrum_upstream_failures_total",
        "Failed attempts by kind: connect (refused/reset), timeout, invalid (closed or not HTTP), status (listed in retry.on).",
        COUNTER,
        rt,
        |_, sv, l, out| {
            for (kind, n) in FailureKind::ALL.iter().zip(sv.stats.failures_by_kind()) {
                out.push(counter(&[l[0], l[1], ("kind", kind.as_str())], n as f64));
            }
        },
    );
    s.per_server(
        "fulcrum_upstream_retries_total",
        "Attempts sent to a server to retry a request that failed on another server.",
        COUNTER,
        rt,
        |_, sv, l, out| out.push(counter(l, sv.stats.retries() as f64)),
    );
    s.per_server(
        "fulcrum_upstream_in_flight",
        "Requests a server is handling now (shared by all worker threads).",
        GAUGE,
        rt,
        |_, sv, l, out| out.push(gauge(l, sv.in_flight() as f64)),
    );
    s.per_server(
        "fulcrum_upstream_awaiting_header",
        "Of those, requests still waiting for the response header (the load selection: ewma weighs).",
        GAUGE,
        rt,
        |_, sv, l, out| out.push(gauge(l, sv.awaiting() as f64)),
    );
    s.per_server(
        "fulcrum_upstream_active_healthy",
        "Active health check verdict: 1 healthy (also without checks), 0 unhealthy.",
        GAUGE,
        rt,
        |_, sv, l, out| out.push(gauge(l, flag(sv.active_healthy()))),
    );
    s.per_server(
        "fulcrum_upstream_passive_healthy",
        "Passive health: 0 while max_fails failures within fail_timeout keep the server out, else 1.",
        GAUGE,
        rt,
        |_, sv, l, out| out.push(gauge(l, flag(!sv.passive_failed()))),
    );
    s.per_server(
        "fulcrum_upstream_drained",
        "1 while an operator drain (or a reload removing it) keeps new requests away.",
        GAUGE,
        rt,
        |_, sv, l, out| out.push(gauge(l, flag(sv.is_drained() || sv.is_removed()))),
    );
    s.per_server(
        "fulcrum_upstream_warming",
        "1 while slow start ramps the server's weight up after it became usable, else 0.",
        GAUGE,
        rt,
        |_, sv, l, out| out.push(gauge(l, flag(sv.warmth(now_ms()) < 1000))),
    );
    s.per_server(
        "fulcrum_upstream_weight_ratio",
        "Share of its configured weight the server gets now: below 1 while slow start ramps it up (from 0.1).",
        GAUGE,
        rt,
        |_, sv, l, out| out.push(gauge(l, sv.warmth(now_ms()) as f64 / 1000.0)),
    );
    s.per_server(
        "fulcrum_upstream_state",
        "1 for the state the status page shows (up, failed, unhealthy, draining, down), 0 for the others.",
        GAUGE,
        rt,
        |_, sv, l, out| {
            let now = server_state(sv);
            for st in SERVER_STATES {
                out.push(gauge(&[l[0], l[1], ("state", st)], flag(st == now)));
            }
        },
    );
    s.per_server(
        "fulcrum_upstream_response_time_seconds",
        "Time from the start of an attempt to the server's response header.",
        HISTOGRAM,
        rt,
        |_, sv, l, out| {
            let mut m = sv.stats.response_time_metric();
            m.set_label(labels(l));
            out.push(m);
        },
    );
    s.per_server(
        "fulcrum_upstream_response_time_ewma_seconds",
        "Decaying peak-EWMA of the response time (failures count as penalty samples), as selection: ewma uses it; absent before the first sample.",
        GAUGE,
        rt,
        |_, sv, l, out| {
            if let Some(ms) = sv.ewma_ms() {
                out.push(gauge(l, ms / 1000.0));
            }
        },
    );
    s.per_server(
        "fulcrum_upstream_connect_time_seconds",
        "Time to establish a new connection to a server (reused connections are not observed).",
        HISTOGRAM,
        rt,
        |_, sv, l, out| {
            let mut m = sv.stats.connect_time_metric();
            m.set_label(labels(l));
            out.push(m);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::time::Duration;

    fn runtime() -> Runtime {
        let loaded = config::from_str(
            "listen: [\"127.0.0.1:8080\"]\npools:\n  p:\n    servers:\n      - addr: \"127.0.0.1:1\"\n      - addr: \"127.0.0.1:2\"\nroutes:\n  - { prefix: /a, pool: p }\n",
            &|_| None,
        )
        .unwrap();
        Runtime::build(loaded.config, None, 1)
    }

    #[test]
    fn renders_every_family_with_labels() {
        let rt = runtime();
        let s = &rt.pools[0].servers[0];
        s.stats.count_response(200, Duration::from_millis(2));
        s.stats.count_failure(FailureKind::Timeout);
        rt.route_stats[0].count_request();
        let snap = crate::status::Counters::default().snapshot();
        let reloads = crate::status::Reloads::default().snapshot();
        let text = render(&rt, &snap, &reloads);
        for needle in [
            "# TYPE fulcrum_upstream_response_time_seconds histogram",
            "fulcrum_upstream_response_time_seconds_count{pool=\"p\",server=\"127.0.0.1:1\"} 1",
            "fulcrum_upstream_failures_total{pool=\"p\",server=\"127.0.0.1:1\",kind=\"timeout\"} 1",
            "fulcrum_upstream_responses_total{pool=\"p\",server=\"127.0.0.1:1\",code=\"2xx\"} 1",
            "fulcrum_route_requests_total{route=\"/a\",pool=\"p\"} 1",
            "fulcrum_upstream_state{pool=\"p\",server=\"127.0.0.1:2\",state=\"up\"} 1",
            "fulcrum_config_generation 1",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
