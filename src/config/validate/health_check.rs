//! `pools.*.health_check`: active checks of a pool's servers.

use super::Checker;
use crate::config::file::RawHealthCheck;
use crate::config::{CheckKind, HealthCheckConfig};
use serde_yaml::Value;
use std::time::Duration;

pub(super) fn health_check(c: &mut Checker, path: &str, raw: RawHealthCheck) -> HealthCheckConfig {
    let interval = c.duration(
        &format!("{path}.interval"),
        raw.interval.as_ref(),
        Duration::from_secs(10),
    );
    let timeout = c.duration(
        &format!("{path}.timeout"),
        raw.timeout.as_ref(),
        Duration::from_secs(2),
    );
    for (field, d) in [("interval", interval), ("timeout", timeout)] {
        if d.is_zero() {
            c.err(&format!("{path}.{field}"), "must be greater than 0");
        }
    }
    let mut count = |field: &str, v: Option<u32>, default: u32| {
        let n = v.unwrap_or(default);
        if n == 0 {
            c.err(&format!("{path}.{field}"), "must be at least 1");
        }
        n.max(1)
    };
    let rise = count("rise", raw.rise, 2);
    let fall = count("fall", raw.fall, 3);
    let kind = match raw.kind.as_deref() {
        None | Some("http") => {
            let hpath = c.abs_path(&format!("{path}.path"), raw.path, "/health");
            let expect_status = match raw.expect_status {
                None => vec![(200, 399)],
                Some(list) if list.is_empty() => {
                    c.err(
                        &format!("{path}.expect_status"),
                        "must list at least one status or range",
                    );
                    vec![]
                }
                Some(list) => list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| match status_range(v) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            c.err(&format!("{path}.expect_status[{i}]"), e);
                            None
                        }
                    })
                    .collect(),
            };
            CheckKind::Http {
                path: hpath,
                expect_status,
            }
        }
        Some("tcp") => {
            if raw.path.is_some() || raw.expect_status.is_some() {
                c.err(path, "path and expect_status apply to type http only");
            }
            CheckKind::Tcp
        }
        Some(other) => {
            c.err(
                &format!("{path}.type"),
                format!("unknown type {other:?} (expected http or tcp)"),
            );
            CheckKind::Tcp
        }
    };
    HealthCheckConfig {
        kind,
        interval,
        timeout,
        rise,
        fall,
    }
}

/// `200`, `"200"` or `"200-399"`.
fn status_range(v: &Value) -> Result<(u16, u16), String> {
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n))
            .ok_or_else(|| format!("{s:?} is not a status code (100-599)"))
    };
    let (lo, hi) = match v {
        Value::Number(n) => {
            let s = n.to_string();
            (code(&s)?, code(&s)?)
        }
        Value::String(s) => match s.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => (code(s)?, code(s)?),
        },
        other => {
            return Err(format!(
                "expected a status or a range like 200-399, got {other:?}"
            ))
        }
    };
    if lo > hi {
        return Err(format!("range {lo}-{hi} is empty"));
    }
    Ok((lo, hi))
}
