//! Active health: the verdict of the background checks
//! (`health_check.rs`), with rise/fall hysteresis, and what the status pages
//! show about it. A separate state from passive health: the checks keep
//! running against a server that traffic avoids (failed, drained), and
//! their verdict survives reloads with the server.

use crate::clock::unix_ms;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Active-check bookkeeping as shown by the status pages.
#[derive(Debug, Clone)]
pub struct ActiveReport {
    /// Whether any check ran yet.
    pub checked: bool,
    /// Current verdict.
    pub healthy: bool,
    /// When the verdict last changed (unix ms; start time if never).
    pub since_unix_ms: u64,
    /// Consecutive successful checks.
    pub consecutive_ok: u32,
    /// Consecutive failed checks.
    pub consecutive_fail: u32,
    /// Error of the last failed check.
    pub last_error: Option<String>,
}

/// One server's active health; healthy until checks say otherwise.
pub(crate) struct Active {
    healthy: AtomicBool,
    consecutive_ok: AtomicU32,
    consecutive_fail: AtomicU32,
    since_unix_ms: AtomicU64,
    checked: AtomicBool,
    /// Error of the last failed check; only the checker and status readers
    /// take this lock, never the request path.
    last_error: Mutex<Option<String>>,
}

impl Active {
    /// Healthy, never checked.
    pub(super) fn new() -> Active {
        Active {
            healthy: AtomicBool::new(true),
            consecutive_ok: AtomicU32::new(0),
            consecutive_fail: AtomicU32::new(0),
            since_unix_ms: AtomicU64::new(unix_ms()),
            checked: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }

    /// The current verdict.
    pub(super) fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Applies one check result: `rise` consecutive good ones make the
    /// server healthy, `fall` failed ones unhealthy. Returns the new verdict
    /// if it changed. `on_recovery` runs before a recovered server is
    /// offered again.
    pub(super) fn observe(
        &self,
        ok: bool,
        error: Option<String>,
        rise: u32,
        fall: u32,
        on_recovery: impl FnOnce(),
    ) -> Option<bool> {
        self.checked.store(true, Relaxed);
        let healthy = self.healthy();
        if ok {
            self.consecutive_fail.store(0, Relaxed);
            let n = self.consecutive_ok.fetch_add(1, Relaxed) + 1;
            if !healthy && n >= rise {
                on_recovery();
                self.turn(true);
                return Some(true);
            }
        } else {
            self.consecutive_ok.store(0, Relaxed);
            if let Ok(mut e) = self.last_error.lock() {
                *e = error;
            }
            let n = self.consecutive_fail.fetch_add(1, Relaxed) + 1;
            if healthy && n >= fall {
                self.turn(false);
                return Some(false);
            }
        }
        None
    }

    fn turn(&self, healthy: bool) {
        self.healthy.store(healthy, Relaxed);
        self.since_unix_ms.store(unix_ms(), Relaxed);
    }

    /// A snapshot for the status pages.
    pub(super) fn report(&self) -> ActiveReport {
        ActiveReport {
            checked: self.checked.load(Relaxed),
            healthy: self.healthy(),
            since_unix_ms: self.since_unix_ms.load(Relaxed),
            consecutive_ok: self.consecutive_ok.load(Relaxed),
            consecutive_fail: self.consecutive_fail.load(Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}
