//! `limits:`: what a client may send, with nginx's names and defaults.

use super::Checker;
use crate::config::file::{parse_section, RawLimits};
use crate::config::{LimitsConfig, PINGORA_MAX_HEADER_COUNT, PINGORA_MAX_HEADER_SIZE};
use serde_yaml::Value;
use std::time::Duration;

pub(super) fn limits(c: &mut Checker, v: Option<&Value>) -> LimitsConfig {
    let raw = v
        .and_then(|v| parse_section::<RawLimits>(v, "limits", &mut c.errors))
        .unwrap_or_default();
    let d = LimitsConfig::default();
    let mut size = |field: &str, raw: Option<&Value>, default: u64| match raw {
        None => default,
        Some(v) => super::size::parse_size(v).unwrap_or_else(|e| {
            c.err(&format!("limits.{field}"), e);
            default
        }),
    };
    let header_size = size(
        "max_header_size",
        raw.max_header_size.as_ref(),
        d.max_header_size as u64,
    );
    let body_size = size(
        "client_max_body_size",
        raw.client_max_body_size.as_ref(),
        d.client_max_body_size,
    );
    if !(1024..=PINGORA_MAX_HEADER_SIZE as u64).contains(&header_size) {
        c.err(
            "limits.max_header_size",
            format!(
                "{header_size} is out of range: 1k to {PINGORA_MAX_HEADER_SIZE} bytes \
                 (Pingora answers larger headers with 400 itself)"
            ),
        );
    }
    let header_count = raw.max_header_count.unwrap_or(d.max_header_count as u32) as usize;
    if !(1..=PINGORA_MAX_HEADER_COUNT).contains(&header_count) {
        c.err(
            "limits.max_header_count",
            format!(
                "{header_count} is out of range: 1 to {PINGORA_MAX_HEADER_COUNT} \
                 (Pingora answers more fields with 400 itself)"
            ),
        );
    }
    let mut timeout = |field: &str, raw: Option<&String>, default: Duration, zero_ok: bool| {
        let t = c.duration(&format!("limits.{field}"), raw, default);
        if t.is_zero() && !zero_ok {
            c.err(&format!("limits.{field}"), "must be greater than 0");
        }
        t
    };
    let client_header_timeout = timeout(
        "client_header_timeout",
        raw.client_header_timeout.as_ref(),
        d.client_header_timeout,
        false,
    );
    let client_body_timeout = timeout(
        "client_body_timeout",
        raw.client_body_timeout.as_ref(),
        d.client_body_timeout,
        false,
    );
    let keepalive_timeout = timeout(
        "keepalive_timeout",
        raw.keepalive_timeout.as_ref(),
        d.keepalive_timeout,
        true,
    );
    let send_timeout = timeout(
        "send_timeout",
        raw.send_timeout.as_ref(),
        d.send_timeout,
        false,
    );
    LimitsConfig {
        send_timeout,
        max_header_size: header_size.min(PINGORA_MAX_HEADER_SIZE as u64) as usize,
        max_header_count: header_count,
        client_max_body_size: body_size,
        client_header_timeout,
        client_body_timeout,
        keepalive_timeout,
        max_connections: raw.max_connections.unwrap_or(0) as usize,
    }
}
