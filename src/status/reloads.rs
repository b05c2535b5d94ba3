//! The outcome of SIGHUP reloads, for the metrics and the JSON status.
//! The reloader reports each attempt with [`record_reload`]; the running
//! generation itself is read from the runtime.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

static SUCCESSES: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicU64 = AtomicU64::new(0);
static LAST_OK: AtomicBool = AtomicBool::new(true);
static LAST_UNIX_MS: AtomicU64 = AtomicU64::new(0);

/// Reload attempts of this process so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadStats {
    /// Reloads that applied a new generation.
    pub successes: u64,
    /// Reloads rejected (the running generation stayed).
    pub failures: u64,
    /// Whether the last reload succeeded (true before any reload).
    pub last_ok: bool,
    /// When the last reload finished, unix milliseconds (0: none yet).
    pub last_unix_ms: u64,
}

/// Records the outcome of one reload attempt (`ok`: a new generation runs).
pub fn record_reload(ok: bool) {
    if ok {
        SUCCESSES.fetch_add(1, Relaxed);
    } else {
        FAILURES.fetch_add(1, Relaxed);
    }
    LAST_OK.store(ok, Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    LAST_UNIX_MS.store(now, Relaxed);
}

/// The reload outcomes so far.
pub fn reload_stats() -> ReloadStats {
    ReloadStats {
        successes: SUCCESSES.load(Relaxed),
        failures: FAILURES.load(Relaxed),
        last_ok: LAST_OK.load(Relaxed),
        last_unix_ms: LAST_UNIX_MS.load(Relaxed),
    }
}
