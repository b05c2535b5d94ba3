//! The outcome of SIGHUP reloads, for the metrics and the JSON status.
//! `lifecycle::service` makes one [`Reloads`] for the process; the reloader
//! records each attempt in it and the status pages read it. The running
//! generation itself is read from the runtime.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// Reload attempts of this process, counted as they finish.
#[derive(Debug)]
pub(crate) struct Reloads {
    successes: AtomicU64,
    failures: AtomicU64,
    last_ok: AtomicBool,
    last_unix_ms: AtomicU64,
}

impl Default for Reloads {
    fn default() -> Self {
        Reloads {
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
            last_unix_ms: AtomicU64::new(0),
        }
    }
}

/// The reload outcomes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReloadStats {
    /// Reloads that applied a new generation.
    pub(crate) successes: u64,
    /// Reloads rejected (the running generation stayed).
    pub(crate) failures: u64,
    /// Whether the last reload succeeded (true before any reload).
    pub(crate) last_ok: bool,
    /// When the last reload finished, unix milliseconds (0: none yet).
    pub(crate) last_unix_ms: u64,
}

impl Reloads {
    /// Records the outcome of one reload attempt (`ok`: a new generation runs).
    pub(crate) fn record(&self, ok: bool) {
        if ok {
            self.successes.fetch_add(1, Relaxed);
        } else {
            self.failures.fetch_add(1, Relaxed);
        }
        self.last_ok.store(ok, Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_unix_ms.store(now, Relaxed);
    }

    /// The outcomes so far (each read atomically, not all together).
    pub(crate) fn snapshot(&self) -> ReloadStats {
        ReloadStats {
            successes: self.successes.load(Relaxed),
            failures: self.failures.load(Relaxed),
            last_ok: self.last_ok.load(Relaxed),
            last_unix_ms: self.last_unix_ms.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_outcome_and_keeps_the_last() {
        let r = Reloads::default();
        assert_eq!(
            r.snapshot(),
            ReloadStats {
                successes: 0,
                failures: 0,
                last_ok: true,
                last_unix_ms: 0
            }
        );
        r.record(true);
        r.record(false);
        let s = r.snapshot();
        assert_eq!((s.successes, s.failures, s.last_ok), (1, 1, false));
        assert!(s.last_unix_ms > 0);
    }
}
