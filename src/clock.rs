//! The process's one clock for state kept in atomics (server health and
//! latency, header deadlines): plain integers counted from the process
//! start, so that 0 is free to mean "never" or "none". The parts that
//! compute with time take it as an argument, so that tests can inject it.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The instant the clock counts from.
pub(crate) fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the process started: a cheap monotonic clock for atomics.
pub(crate) fn now_ms() -> u64 {
    // +1 so that 0 can mean "never".
    process_start().elapsed().as_millis() as u64 + 1
}

/// Microseconds since the process started (same clock as [`now_ms`]), for
/// the latency estimate.
pub(crate) fn now_us() -> u64 {
    process_start().elapsed().as_micros() as u64 + 1
}

/// Both clocks from one reading, for a selection that needs the one for
/// health and the other for latency.
pub(crate) fn now_ms_us() -> (u64, u64) {
    let t = process_start().elapsed();
    (t.as_millis() as u64 + 1, t.as_micros() as u64 + 1)
}

/// Wall-clock milliseconds, for "since" times shown to people.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
