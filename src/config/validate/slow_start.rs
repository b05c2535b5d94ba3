//! `slow_start` of a pool (the default of its servers) and of a server.

use super::Checker;
use crate::config::MAX_SLOW_START;
use std::time::Duration;

/// The ramp time written at `path` (`default` when absent): up to
/// [`MAX_SLOW_START`]; 0 turns slow start off.
pub(super) fn slow_start(
    c: &mut Checker,
    path: &str,
    raw: Option<&String>,
    default: Duration,
) -> Duration {
    let d = c.duration(path, raw, default);
    if d > MAX_SLOW_START {
        c.err(
            path,
            format!(
                "{} is above the limit of 1h",
                raw.map_or("value", String::as_str)
            ),
        );
        return default.min(MAX_SLOW_START);
    }
    d
}
