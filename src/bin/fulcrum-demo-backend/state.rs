//! State of one named listener: its counters, its current misbehaviour modes
//! and the log of recent normal requests, which the control endpoints read
//! and change while requests are served.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::body::Bytes;

use crate::cli::Config;
use crate::reply::Templates;

/// Number of normal requests kept in the `recent` log of the stats endpoint.
pub const RECENT_CAP: usize = 1000;

pub struct RecentEntry {
    pub method: String,
    pub uri: String,
}

/// Atomics keep the normal path lock-free except for the short critical
/// section appending to the recent log.
pub struct Backend {
    pub name: String,
    /// The first headers of its answers.
    pub templates: Templates,
    /// Body for `--body-size`, shared by all responses.
    pub fixed_body: Option<Bytes>,
    pub requests: AtomicU64,
    pub health_requests: AtomicU64,
    pub in_flight: AtomicU64,
    /// TCP connections accepted (a proxy's upstream connection reuse shows here).
    pub connections: AtomicU64,
    pub health_failing: AtomicBool,
    pub delay_ms: AtomicU64,
    pub drop_every: AtomicU64,
    pub close_after_read: AtomicBool,
    /// Default status for normal requests; 0 means 200.
    pub default_status: AtomicU16,
    recent: Mutex<VecDeque<RecentEntry>>,
}

impl Backend {
    pub fn new(name: &str, cfg: &Config, fixed_body: Option<Bytes>) -> Self {
        Backend {
            name: name.to_string(),
            templates: Templates::new(name, fixed_body.as_ref().map(Bytes::len)),
            fixed_body,
            requests: AtomicU64::new(0),
            health_requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            health_failing: AtomicBool::new(cfg.fail_health),
            delay_ms: AtomicU64::new(cfg.delay_ms),
            drop_every: AtomicU64::new(cfg.drop_every),
            close_after_read: AtomicBool::new(cfg.close_after_read),
            default_status: AtomicU16::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_CAP)),
        }
    }

    pub fn recent(&self) -> MutexGuard<'_, VecDeque<RecentEntry>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a normal request and logs it; returns its 1-based sequence number.
    pub fn record(&self, method: &str, uri: &str) -> u64 {
        let seq = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let mut recent = self.recent();
        if recent.len() == RECENT_CAP {
            recent.pop_front();
        }
        recent.push_back(RecentEntry {
            method: method.to_string(),
            uri: uri.to_string(),
        });
        seq
    }

    /// Zeroes the counters (not the `in_flight` gauge) and the recent log.
    pub fn reset(&self) {
        let mut recent = self.recent();
        self.requests.store(0, Ordering::SeqCst);
        self.health_requests.store(0, Ordering::SeqCst);
        recent.clear();
    }
}

/// Keeps `in_flight` accurate on every exit path of a normal request:
/// answered (dropped with the response body once it is written), dropped on
/// purpose, or abandoned by the client (dropped with the request's future).
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub fn enter(backend: &Arc<Backend>) -> Self {
        backend.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(backend))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
