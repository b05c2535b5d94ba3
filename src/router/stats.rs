//! Per-route request counters. They live beside the route table in the
//! running `Runtime` (runtime.rs) and are carried over a reload for every
//! route that keeps its prefix and pool.

use crate::pool::STATUS_CLASSES;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one route.
#[derive(Debug, Default)]
pub(crate) struct RouteStats {
    requests: AtomicU64,
    responses: [AtomicU64; 5],
}

impl RouteStats {
    /// A request matched the route.
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// The response sent to the client for a routed request (including the
    /// 502/503/504 fulcrum writes itself; 0 = none could be sent).
    pub(crate) fn count_response(&self, status: u16) {
        if let Some(i) = crate::pool::status_class(status) {
            self.responses[i].fetch_add(1, Relaxed);
        }
    }

    /// Requests routed here since the route appeared.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Responses by status class, indexed like [`STATUS_CLASSES`].
    pub(crate) fn responses(&self) -> [u64; STATUS_CLASSES.len()] {
        std::array::from_fn(|i| self.responses[i].load(Relaxed))
    }
}
