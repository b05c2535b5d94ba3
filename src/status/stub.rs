//! nginx stub_status text, byte for byte, so existing exporters keep working.

use super::counters::Snapshot;
use std::fmt::Write;

/// Renders the page exactly like nginx (note the trailing spaces).
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(128);
    let _ = write!(
        out,
        "Active connections: {} \nserver accepts handled requests\n {} {} {} \nReading: {} Writing: {} Waiting: {} \n",
        s.active, s.accepts, s.handled, s.requests, s.reading, s.writing, s.waiting
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_nginx_layout() {
        let s = Snapshot {
            active: 2,
            accepts: 10,
            handled: 10,
            requests: 31,
            reading: 0,
            writing: 1,
            waiting: 1,
        };
        assert_eq!(
            render(&s),
            "Active connections: 2 \nserver accepts handled requests\n 10 10 31 \nReading: 0 Writing: 1 Waiting: 1 \n"
        );
    }
}
