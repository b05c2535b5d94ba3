//! Passive health, as nginx's `max_fails`/`fail_timeout`: `max_fails`
//! failures within `fail_timeout` make a server unusable for `fail_timeout`;
//! then exactly one probe request may go, whose success restores the server
//! and whose failure starts another period. Judged from real traffic only,
//! so it is a separate state from the active checks' verdict; a server is
//! usable only if neither excludes it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::time::Duration;

/// Why a server is or is not offered to the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usability {
    /// Can take a request.
    Usable,
    /// Its passive fail period is over: one probe request may go.
    ProbeDue,
    /// Cannot take a request now.
    Unusable,
}

/// One server's passive health. Times are ms on the
/// [`now_ms`](super::now_ms) clock, 0 meaning "never".
pub(crate) struct Passive {
    max_fails: AtomicU32,
    fail_timeout_ms: AtomicU64,
    /// Failures in the current window, and when the window began.
    fails: AtomicU32,
    window_start_ms: AtomicU64,
    /// End of the fail period; 0 while not failed.
    failed_until_ms: AtomicU64,
    /// Whether the single probe is out.
    probe_taken: AtomicBool,
}

impl Passive {
    /// Not failed; marking disabled until [`Passive::configure`].
    pub(super) fn new() -> Passive {
        Passive {
            max_fails: AtomicU32::new(0),
            fail_timeout_ms: AtomicU64::new(0),
            fails: AtomicU32::new(0),
            window_start_ms: AtomicU64::new(0),
            failed_until_ms: AtomicU64::new(0),
            probe_taken: AtomicBool::new(false),
        }
    }

    /// Takes the server's `max_fails` (0: never mark) and `fail_timeout`.
    pub(super) fn configure(&self, max_fails: u32, fail_timeout: Duration) {
        self.max_fails.store(max_fails, Relaxed);
        self.fail_timeout_ms
            .store(fail_timeout.as_millis() as u64, Relaxed);
    }

    /// What passive health allows at `now`.
    pub(super) fn usability(&self, now: u64) -> Usability {
        let until = self.failed_until_ms.load(Relaxed);
        if until == 0 {
            Usability::Usable
        } else if now < until || self.probe_taken.load(Relaxed) {
            Usability::Unusable
        } else {
            Usability::ProbeDue
        }
    }

    /// Lets an attempt start at `now`: `Some(false)` for an ordinary one,
    /// `Some(true)` for the probe of a fail period that is over (only the
    /// first caller gets it), `None` when refused.
    pub(super) fn admit(&self, now: u64) -> Option<bool> {
        let until = self.failed_until_ms.load(Relaxed);
        if until == 0 {
            return Some(false);
        }
        if now < until || !self.take_probe() {
            return None;
        }
        Some(true)
    }

    /// Takes the single probe, whether or not the fail period is over (an
    /// early probe, when nothing else is usable); false if it is out already.
    pub(super) fn take_probe(&self) -> bool {
        self.probe_taken
            .compare_exchange(false, true, AcqRel, Relaxed)
            .is_ok()
    }

    /// Hands back a probe that ended without a verdict, so another request
    /// can probe.
    pub(super) fn return_probe(&self) {
        self.probe_taken.store(false, Release);
    }

    /// Failed, with no probe out: an early probe could be taken.
    pub(super) fn probe_free(&self) -> bool {
        self.failed() && !self.probe_taken.load(Relaxed)
    }

    /// Whether a fail period is running (or over but not yet probed).
    pub(super) fn failed(&self) -> bool {
        self.failed_until_ms.load(Relaxed) != 0
    }

    /// Time left in the fail period at `now`, if failed.
    pub(super) fn failed_for(&self, now: u64) -> Option<Duration> {
        let until = self.failed_until_ms.load(Relaxed);
        (until != 0).then(|| Duration::from_millis(until.saturating_sub(now)))
    }

    /// A failed attempt of server `name` at `now`; `probe`: it was the probe.
    pub(super) fn record_failure(&self, name: &str, probe: bool, now: u64) {
        let max_fails = self.max_fails.load(Relaxed);
        if max_fails == 0 {
            return;
        }
        let fail_timeout = self.fail_timeout_ms.load(Relaxed);
        if probe {
            self.failed_until_ms.store(now + fail_timeout, Relaxed);
            self.probe_taken.store(false, Release);
            log::warn!(
                "server {name} failed its probe request; unusable for another {fail_timeout}ms"
            );
            return;
        }
        let start = self.window_start_ms.load(Relaxed);
        let fails = if start == 0 || now.saturating_sub(start) > fail_timeout {
            self.window_start_ms.store(now, Relaxed);
            self.fails.store(1, Relaxed);
            1
        } else {
            self.fails.fetch_add(1, Relaxed) + 1
        };
        if fails >= max_fails && self.failed_until_ms.load(Relaxed) == 0 {
            self.failed_until_ms.store(now + fail_timeout, Relaxed);
            log::warn!(
                "server {name} marked failed: {fails} failures within {fail_timeout}ms (max_fails {max_fails})"
            );
        }
    }

    /// A successful attempt of server `name`; only the probe's success
    /// changes anything: it restores the server.
    pub(super) fn record_success(&self, name: &str, probe: bool) {
        if probe {
            self.fails.store(0, Relaxed);
            self.window_start_ms.store(0, Relaxed);
            self.failed_until_ms.store(0, Relaxed);
            self.probe_taken.store(false, Release);
            log::warn!("server {name} recovered: probe request succeeded");
        }
    }
}
