//! `status.path + /json`: every pool and server with counters and health.

use super::counters::Snapshot;
use crate::pool::Pool;
use crate::runtime::Runtime;
use serde_json::{json, Value};

/// The JSON document for the status endpoint.
pub fn render(rt: &Runtime, conns: &Snapshot) -> String {
    let pools: Vec<Value> = rt.pools.iter().map(|p| pool(p)).collect();
    let doc = json!({
        "generation": rt.generation,
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
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

fn pool(p: &Pool) -> Value {
    let servers: Vec<Value> = p
        .servers
        .iter()
        .map(|s| {
            let active = s.active_report();
            let state = if s.is_down() {
                "down"
            } else if s.is_drained() {
                "draining"
            } else if !active.healthy {
                "unhealthy"
            } else if s.passive_failed() {
                "failed"
            } else {
                "up"
            };
            json!({
                "addr": s.name,
                "resolved": s.addr.to_string(),
                "weight": s.weight(),
                "backup": s.is_backup(),
                "max_conns": s.max_conns(),
                "state": state,
                "in_flight": s.in_flight(),
                "requests": s.requests(),
                "failures": s.failures(),
                "drained": s.is_drained(),
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
        })
        .collect();
    let selection = match p.config.selection {
        crate::config::Selection::LeastConn => "least_conn",
        crate::config::Selection::RoundRobin => "round_robin",
        crate::config::Selection::Random => "random",
    };
    json!({
        "name": p.name(),
        "selection": selection,
        "servers": servers,
    })
}
