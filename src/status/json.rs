//! `status.path + /json`: every pool and server with counters and health,
//! routes, and reload outcomes. The live page polls it.

use super::counters::Snapshot;
use super::{selection_name, server_state, ReloadStats};
use crate::clock::now_ms;
use crate::config::DiscoverySource;
use crate::pool::{FailureKind, Pool, QueueExit, Server, STATUS_CLASSES};
use crate::runtime::Runtime;
use serde_json::{json, Map, Value};

/// The JSON document for the status endpoint.
pub fn render(rt: &Runtime, conns: &Snapshot, reload: &ReloadStats) -> String {
    let pools: Vec<Value> = rt.pools.iter().map(|p| pool(p)).collect();
    let routes: Vec<Value> = rt
        .router
        .routes()
        .iter()
        .zip(&rt.route_stats)
        .map(|(r, stats)| {
            json!({
                "prefix": r.prefix,
                "pool": rt.pools.get(r.pool).map(|p| p.name()),
                "requests": stats.requests(),
                "responses": classes(&stats.responses()),
            })
        })
        .collect();
    let doc = json!({
        "generation": rt.generation,
        "reload": {
            "successes": reload.successes,
            "failures": reload.failures,
            "last_successful": reload.last_ok,
            "last_unix_ms": (reload.last_unix_ms > 0).then_some(reload.last_unix_ms),
        },
        "connections": {
            "active": conns.active,
            "accepts": conns.accepts,
            "handled": conns.handled,
            "requests": conns.requests,
            "reading": conns.reading,
            "writing": conns.writing,
            "waiting": conns.waiting,
        },
        "pools": pools,
        "routes": routes,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

fn classes(counts: &[u64; 5]) -> Value {
    let m: Map<String, Value> = STATUS_CLASSES
        .iter()
        .zip(counts)
        .map(|(c, n)| (c.to_string(), json!(n)))
        .collect();
    Value::Object(m)
}

/// Rounds a rate for display (two decimals).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn server(p: &Pool, s: &Server) -> Value {
    let active = s.active_report();
    let kinds: Map<String, Value> = FailureKind::ALL
        .iter()
        .zip(s.stats.failures_by_kind())
        .map(|(k, n)| (k.as_str().to_string(), json!(n)))
        .collect();
    let history: Vec<f64> = s.stats.rate_history().into_iter().map(round2).collect();
    json!({
        "addr": s.name,
        "resolved": s.addr.to_string(),
        "weight": s.weight(),
        "backup": s.is_backup(),
        "max_conns": s.max_conns(),
        "state": server_state(s),
        "in_flight": s.in_flight(),
        "awaiting_header": s.awaiting(),
        "requests": s.requests(),
        "requests_per_second": round2(s.stats.requests_per_second()),
        "history": history,
        "failures": s.failures(),
        "ewma_ms": s.ewma_ms().map(|ms| (ms * 1000.0).round() / 1000.0),
        "failures_by_kind": kinds,
        "responses": classes(&s.stats.responses()),
        "retries": s.stats.retries(),
        "drained": s.is_drained(),
        "slow_start": slow_start(s),
        "passive": {
            "failed": s.passive_failed(),
            "failed_for_ms": s.failed_for().map(|d| d.as_millis() as u64),
        },
        "active": {
            "enabled": p.config.health_check.is_some(),
            "checked": active.checked,
            "healthy": active.healthy,
            "since_unix_ms": active.since_unix_ms,
            "consecutive_successes": active.consecutive_ok,
            "consecutive_failures": active.consecutive_fail,
            "last_error": active.last_error,
        },
    })
}

fn pool(p: &Pool) -> Value {
    let servers: Vec<Value> = p.servers.iter().map(|s| server(p, s)).collect();
    json!({
        "name": p.name(),
        "selection": selection_name(p),
        "usable": p.usable_count(),
        "queue": queue(p),
        "discovery": discovery(p),
        "servers": servers,
    })
}

/// A server's slow start: its window, and while it ramps up, the share of
/// its weight it gets now.
fn slow_start(s: &Server) -> Value {
    let percent = s.warmth(now_ms()) / 10;
    json!({
        "window_ms": s.slow_start().as_millis() as u64,
        "warming": percent < 100,
        "percent": percent,
    })
}

/// A pool's queue (null without one): settings, what waits now, and how
/// requests left it.
fn queue(p: &Pool) -> Value {
    let Some(q) = p.queue() else {
        return Value::Null;
    };
    let r = q.report();
    let exits: Map<String, Value> = QueueExit::ALL
        .iter()
        .zip(r.exits)
        .map(|(e, n)| (e.as_str().to_string(), json!(n)))
        .collect();
    let m = q.wait_metric();
    let h = m.get_histogram();
    let count = h.get_sample_count();
    json!({
        "size": r.size,
        "timeout_ms": r.timeout.as_millis() as u64,
        "length": r.length,
        "oldest_wait_ms": r.oldest_wait.map(|d| d.as_millis() as u64),
        "queued": r.joined,
        "full": r.full,
        "left": exits,
        "average_wait_ms": (count > 0)
            .then(|| round2(h.get_sample_sum() * 1000.0 / count as f64)),
    })
}

/// `resolve:`/`discover:` of a pool and how its lookups went; null without.
fn discovery(p: &Pool) -> Value {
    let (Some(d), Some(state)) = (&p.config.discovery, &p.discovery) else {
        return Value::Null;
    };
    let r = state.report();
    let (kind, names): (&str, Vec<&str>) = match &d.source {
        DiscoverySource::Srv { name, .. } => ("srv", vec![name.as_str()]),
        DiscoverySource::Hosts(hosts) => (
            "resolve",
            hosts.iter().map(|h| h.settings.name.as_str()).collect(),
        ),
    };
    let resolvers: Vec<String> = d.resolvers.iter().map(|a| a.to_string()).collect();
    json!({
        "type": kind,
        "names": names,
        "resolvers": (!resolvers.is_empty()).then_some(resolvers),
        "interval_ms": d.interval.map(|i| i.as_millis() as u64),
        "found": r.found,
        "successes": r.successes,
        "failures": r.failures,
        "consecutive_failures": r.consecutive_failures,
        "last_success_unix_ms": r.last_success_unix_ms,
        "last_failure_unix_ms": r.last_failure_unix_ms,
        "last_error": r.last_error,
        "changes": r.changes,
        "ignored_outside_allow": r.outside_allow,
        "ignored_over_cap": r.over_cap,
    })
}
