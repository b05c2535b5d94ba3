//! What a pool's discovery found last and how its lookups went. One
//! [`Discovery`] serves every generation of a pool while the pool keeps its
//! name and its source (the same SRV name, or the same host names): a
//! membership change or a reload builds a new `Pool` around the same state,
//! so the last good answer and the counters carry on.

use super::Found;
use crate::clock::unix_ms;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A failure streak is logged when it starts, then at most this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// One pool's discovery state.
#[derive(Default)]
pub(crate) struct Discovery {
    /// The last good answer; `None` before the first.
    found: Mutex<Option<Arc<Vec<Found>>>>,
    successes: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    last_success_unix_ms: AtomicU64,
    last_failure_unix_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Lookups that changed the pool's servers.
    changes: AtomicU64,
    /// Of the last answer: addresses outside `allow`, and cut by the cap.
    outside_allow: AtomicU64,
    over_cap: AtomicU64,
    /// When a failure was last logged.
    logged: Mutex<Option<Instant>>,
}

/// A copy of the state for the status pages.
#[derive(Debug, Clone, Default)]
pub(crate) struct DiscoveryReport {
    pub found: Option<usize>,
    pub successes: u64,
    pub failures: u64,
    pub consecutive_failures: u64,
    pub last_success_unix_ms: Option<u64>,
    pub last_failure_unix_ms: Option<u64>,
    pub last_error: Option<String>,
    pub changes: u64,
    pub outside_allow: u64,
    pub over_cap: u64,
}

impl Discovery {
    /// The last good answer, if any.
    pub(crate) fn found(&self) -> Option<Arc<Vec<Found>>> {
        self.found.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A lookup answered: `found` is the new set. Returns the length of the
    /// failure streak it ends.
    pub(crate) fn succeeded(
        &self,
        found: Vec<Found>,
        outside_allow: usize,
        over_cap: usize,
    ) -> u64 {
        *self.found.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(found));
        self.successes.fetch_add(1, Relaxed);
        self.last_success_unix_ms.store(unix_ms(), Relaxed);
        self.outside_allow.store(outside_allow as u64, Relaxed);
        self.over_cap.store(over_cap as u64, Relaxed);
        *self.logged.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.consecutive_failures.swap(0, Relaxed)
    }

    /// A lookup failed (or found nothing usable); the last good answer
    /// stays. Returns whether to log it: the first of a streak, then once
    /// per [`FAILURE_LOG_EVERY`].
    pub(crate) fn failed(&self, error: String) -> bool {
        self.failures.fetch_add(1, Relaxed);
        self.consecutive_failures.fetch_add(1, Relaxed);
        self.last_failure_unix_ms.store(unix_ms(), Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let due = logged.is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY);
        if due {
            *logged = Some(Instant::now());
        }
        due
    }

    /// A lookup changed the pool's servers.
    pub(crate) fn changed(&self) {
        self.changes.fetch_add(1, Relaxed);
    }

    /// Failed lookups in a row now.
    pub(crate) fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures.load(Relaxed)
    }

    /// For the status pages.
    pub(crate) fn report(&self) -> DiscoveryReport {
        let some = |v: u64| (v > 0).then_some(v);
        DiscoveryReport {
            found: self.found().map(|f| f.len()),
            successes: self.successes.load(Relaxed),
            failures: self.failures.load(Relaxed),
            consecutive_failures: self.consecutive_failures.load(Relaxed),
            last_success_unix_ms: some(self.last_success_unix_ms.load(Relaxed)),
            last_failure_unix_ms: some(self.last_failure_unix_ms.load(Relaxed)),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            changes: self.changes.load(Relaxed),
            outside_allow: self.outside_allow.load(Relaxed),
            over_cap: self.over_cap.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_the_last_answer_and_are_logged_once_per_streak_start() {
        let d = Discovery::default();
        assert!(d.found().is_none());
        let f = Found {
            addr: "10.0.0.1:80".parse().unwrap(),
            from: 0,
            weight: 1,
            backup: false,
        };
        assert_eq!(d.succeeded(vec![f.clone()], 0, 0), 0);
        assert!(d.failed("timeout".into()), "the first failure is logged");
        assert!(
            !d.failed("timeout".into()),
            "the next ones within a minute are not"
        );
        assert_eq!(d.found().unwrap().as_slice(), std::slice::from_ref(&f));
        let r = d.report();
        assert_eq!((r.failures, r.consecutive_failures, r.successes), (2, 2, 1));
        assert_eq!(r.last_error.as_deref(), Some("timeout"));
        assert!(r.last_success_unix_ms.is_some() && r.last_failure_unix_ms.is_some());
        assert_eq!(d.succeeded(vec![f], 0, 0), 2, "the streak it ended");
        assert!(d.failed("again".into()), "a new streak is logged");
    }
}
