//! The `/__control/` endpoints of a listener: its counters and recent
//! requests, and changing its health and misbehaviour modes at run time.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::echo::query_pairs;
use crate::reply::Reply;
use crate::state::Backend;

pub fn handle_control(backend: &Backend, method: &str, path: &str, query: &str) -> Reply {
    let ok = || Reply::text(200, "ok");
    match path {
        "/__control/stats" => {
            if method != "GET" && method != "HEAD" {
                return Reply::method_not_allowed("GET, HEAD");
            }
            let recent: Vec<Value> = backend
                .recent()
                .iter()
                .map(|e| json!({"method": e.method, "uri": e.uri}))
                .collect();
            Reply::json(
                200,
                &json!({
                    "server": backend.name,
                    "requests": backend.requests.load(Ordering::SeqCst),
                    "health_requests": backend.health_requests.load(Ordering::SeqCst),
                    "in_flight": backend.in_flight.load(Ordering::SeqCst),
                    "connections": backend.connections.load(Ordering::SeqCst),
                    "recent": recent,
                }),
            )
        }
        "/__control/health" => {
            if method != "POST" {
                return Reply::method_not_allowed("POST");
            }
            let fail = query_pairs(query)
                .find(|(k, _)| *k == "fail")
                .and_then(|(_, v)| parse_flag(v));
            match fail {
                Some(fail) => {
                    backend.health_failing.store(fail, Ordering::SeqCst);
                    ok()
                }
                None => Reply::text(400, "expected ?fail=1 or ?fail=0\n"),
            }
        }
        "/__control/mode" => {
            if method != "POST" {
                return Reply::method_not_allowed("POST");
            }
            match apply_mode(backend, query) {
                Ok(()) => ok(),
                Err(msg) => Reply::text(400, format!("{msg}\n")),
            }
        }
        "/__control/reset" => {
            if method != "POST" {
                return Reply::method_not_allowed("POST");
            }
            backend.reset();
            ok()
        }
        _ => Reply::text(404, "unknown control endpoint\n"),
    }
}

/// Validates every parameter before changing anything, so a bad request
/// leaves the mode untouched.
fn apply_mode(backend: &Backend, query: &str) -> Result<(), String> {
    let (mut delay, mut drop_every, mut close, mut status) = (None, None, None, None);
    for (key, value) in query_pairs(query) {
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key} must be a non-negative integer, got '{value}'"))
        };
        match key {
            "delay_ms" => delay = Some(number()?),
            "drop_every" => drop_every = Some(number()?),
            "close_after_read" => {
                close = Some(
                    parse_flag(value).ok_or_else(|| "close_after_read must be 0 or 1".to_string())?,
                )
            }
            "status" if value == "0" => status = Some(0),
            "status" => status = Some(parse_status(value)?),
            other => {
                return Err(format!(
                    "unknown mode parameter '{other}' (known: delay_ms, drop_every, close_after_read, status)"
                ))
            }
        }
    }
    if let Some(v) = delay {
        backend.delay_ms.store(v, Ordering::SeqCst);
    }
    if let Some(v) = drop_every {
        backend.drop_every.store(v, Ordering::SeqCst);
    }
    if let Some(v) = close {
        backend.close_after_read.store(v, Ordering::SeqCst);
    }
    if let Some(v) = status {
        backend.default_status.store(v, Ordering::SeqCst);
    }
    Ok(())
}

fn parse_flag(value: &str) -> Option<bool> {
    match value {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// Parses a status code for a response; 1xx is refused because an interim
/// response cannot end an exchange.
pub fn parse_status(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(s) if (200..=599).contains(&s) => Ok(s),
        _ => Err(format!(
            "status must be an integer in 200..=599, got '{value}'"
        )),
    }
}
