//! `routes:`: prefixes and the pools they go to.

use super::Checker;
use crate::config::file::{parse_section, RawRoute};
use crate::config::{PoolConfig, RouteConfig};
use serde_yaml::Value;
use std::collections::HashSet;

/// The routes at `at` (`routes`, or a listener's `listen[i].routes`).
pub(super) fn routes(
    c: &mut Checker,
    at: &str,
    v: Option<&Value>,
    pools: &[PoolConfig],
) -> Vec<RouteConfig> {
    let Some(v) = v else {
        return vec![];
    };
    let Some(list) = v.as_sequence() else {
        c.err(at, "must be a list of {prefix, pool}");
        return vec![];
    };
    let mut seen = HashSet::new();
    let mut out = vec![];
    for (i, v) in list.iter().enumerate() {
        let path = format!("{at}[{i}]");
        let Some(raw) = parse_section::<RawRoute>(v, &path, &mut c.errors) else {
            continue;
        };
        let prefix = match raw.prefix {
            None => {
                c.err(&format!("{path}.prefix"), "missing");
                continue;
            }
            Some(p) => p,
        };
        if !prefix.starts_with('/') {
            c.err(
                &format!("{path}.prefix"),
                format!("{prefix:?} must start with '/'"),
            );
        } else if prefix.contains(['?', '#', '%', '\\', ' '])
            || prefix.split('/').any(|s| s == "." || s == "..")
        {
            c.err(
                &format!("{path}.prefix"),
                format!("{prefix:?} must be a plain normalized path (no ?, #, %, \\, spaces or dot segments)"),
            );
        }
        // `/api/` and `/api` route the same requests.
        let normalized = if prefix.len() > 1 {
            prefix.trim_end_matches('/').to_string()
        } else {
            prefix.clone()
        };
        if !seen.insert(normalized.clone()) {
            c.err(
                &format!("{path}.prefix"),
                format!("duplicate prefix {prefix:?}"),
            );
        }
        let pool = match raw.pool {
            None => {
                c.err(&format!("{path}.pool"), "missing");
                None
            }
            Some(name) => {
                let idx = pools.iter().position(|p| p.name == name);
                if idx.is_none() {
                    c.err(&format!("{path}.pool"), format!("no pool named {name:?}"));
                }
                idx
            }
        };
        if let Some(pool) = pool {
            out.push(RouteConfig {
                prefix: normalized,
                pool,
                strip_prefix: raw.strip_prefix.unwrap_or(false),
            });
        }
    }
    out
}
