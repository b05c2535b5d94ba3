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

#[cfg(test)]
mod tests {
    use crate::config::from_str;
    use std::time::Duration;

    const POOL: &str = "pools:\n  p:\n";

    fn errors(doc: &str) -> Vec<String> {
        from_str(doc, &|_| None)
            .err()
            .map(|e| e.0)
            .unwrap_or_default()
    }

    #[test]
    fn pool_default_server_override_and_the_one_hour_limit() {
        let doc = format!(
            "{POOL}    slow_start: 30s\n    servers: [{{addr: \"127.0.0.1:1\"}}, {{addr: \"127.0.0.1:2\", slow_start: 0s}}, {{addr: \"127.0.0.1:3\", slow_start: 1h}}]\n"
        );
        let p = &from_str(&doc, &|_| None).unwrap().config.pools[0];
        let got: Vec<Duration> = p.servers.iter().map(|s| s.slow_start).collect();
        assert_eq!(
            got,
            [30, 0, 3600].map(Duration::from_secs).to_vec(),
            "default, off, the limit itself"
        );
        let doc = format!("{POOL}    servers: [{{addr: \"127.0.0.1:1\"}}]\n");
        let p = &from_str(&doc, &|_| None).unwrap().config.pools[0];
        assert_eq!(p.servers[0].slow_start, Duration::ZERO, "off by default");

        let doc = format!(
            "{POOL}    slow_start: 61m\n    servers: [{{addr: \"127.0.0.1:1\", slow_start: 2h}}, {{addr: \"127.0.0.1:2\", slow_start: soon}}]\n"
        );
        assert_eq!(
            errors(&doc),
            [
                "pools.p.slow_start: 61m is above the limit of 1h",
                "pools.p.servers[0].slow_start: 2h is above the limit of 1h",
                "pools.p.servers[1].slow_start: invalid duration \"soon\": expected a number followed by ms, s, m or h",
            ]
        );
        let doc = format!("{POOL}    slow_start: 30\n    servers: [{{addr: \"127.0.0.1:1\"}}]\n");
        assert_eq!(
            errors(&doc),
            ["pools.p.slow_start: invalid type: integer `30`, expected a string"]
        );
    }
}
