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
