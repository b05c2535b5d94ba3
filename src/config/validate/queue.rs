//! `pools.*.queue`: where requests wait when every usable server of the
//! pool is at `max_conns`.

use super::Checker;
use crate::config::file::RawQueue;
use crate::config::{QueueConfig, DEFAULT_QUEUE_TIMEOUT, MAX_QUEUE_SIZE};

pub(super) fn queue(c: &mut Checker, path: &str, raw: RawQueue) -> QueueConfig {
    let size = match raw.size {
        None => {
            c.err(
                &format!("{path}.size"),
                "missing (how many requests may wait, 1 to 1000000)",
            );
            1
        }
        Some(n) if n == 0 || n as usize > MAX_QUEUE_SIZE => {
            c.err(
                &format!("{path}.size"),
                format!("{n} is out of range: 1 to {MAX_QUEUE_SIZE}"),
            );
            1
        }
        Some(n) => n as usize,
    };
    let timeout = c.duration(
        &format!("{path}.timeout"),
        raw.timeout.as_ref(),
        DEFAULT_QUEUE_TIMEOUT,
    );
    if timeout.is_zero() {
        c.err(&format!("{path}.timeout"), "must be greater than 0");
    }
    QueueConfig { size, timeout }
}

#[cfg(test)]
mod tests {
    use crate::config::{from_str, QueueConfig};
    use std::time::Duration;

    fn queue_of(q: &str) -> Result<Option<QueueConfig>, Vec<String>> {
        let doc = format!("pools:\n  p:\n{q}    servers: [{{addr: \"127.0.0.1:1\"}}]\n");
        from_str(&doc, &|_| None)
            .map(|l| l.config.pools[0].queue.clone())
            .map_err(|e| e.0)
    }

    #[test]
    fn size_and_timeout_are_checked_naming_the_field() {
        assert_eq!(queue_of(""), Ok(None), "no queue unless asked for");
        assert_eq!(
            queue_of("    queue: {size: 100, timeout: 5s}\n"),
            Ok(Some(QueueConfig {
                size: 100,
                timeout: Duration::from_secs(5)
            }))
        );
        assert_eq!(
            queue_of("    queue: {size: 1000000}\n").unwrap().unwrap(),
            QueueConfig {
                size: 1_000_000,
                timeout: Duration::from_secs(60)
            },
            "the largest size; nginx's timeout"
        );
        for (q, error) in [
            (
                "{size: 0, timeout: 5s}",
                "pools.p.queue.size: 0 is out of range: 1 to 1000000",
            ),
            (
                "{size: 1000001}",
                "pools.p.queue.size: 1000001 is out of range: 1 to 1000000",
            ),
            (
                "{size: -1}",
                "pools.p.queue.size: invalid value: integer `-1`, expected u32",
            ),
            (
                "{timeout: 5s}",
                "pools.p.queue.size: missing (how many requests may wait, 1 to 1000000)",
            ),
            (
                "{size: 10, timeout: 0s}",
                "pools.p.queue.timeout: must be greater than 0",
            ),
            (
                "{size: 10, timeout: 5}",
                "pools.p.queue.timeout: invalid type: integer `5`, expected a string",
            ),
            (
                "{size: 10, timout: 5s}",
                "pools.p.queue.timout: unknown field `timout`, expected `size` or `timeout`",
            ),
        ] {
            assert_eq!(
                queue_of(&format!("    queue: {q}\n")),
                Err(vec![error.to_string()]),
                "{q}"
            );
        }
    }
}
