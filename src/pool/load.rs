//! What a server carries now, as the selections weigh it: attempts in
//! flight, attempts still waiting for their response header, and the
//! latency estimate. Kept apart from health and from the selections: these
//! are measurements, fed by the attempt guard ([`InFlight`]) on every path,
//! and read by whichever selection the pool uses.
//!
//! [`InFlight`]: super::InFlight

use super::latency::LatencyEwma;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// One server's load; every count is shared by all threads.
pub(crate) struct Load {
    in_flight: AtomicUsize,
    /// Attempts sent whose response header has not arrived yet.
    awaiting: AtomicUsize,
    /// Peak-EWMA of response latency (selection `ewma`, status pages).
    pub(crate) latency: LatencyEwma,
}

impl Load {
    /// Nothing in flight, no latency sample; `now` in µs.
    pub(super) fn new(now: u64) -> Load {
        Load {
            in_flight: AtomicUsize::new(0),
            awaiting: AtomicUsize::new(0),
            latency: LatencyEwma::new(now),
        }
    }

    /// Attempts in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Attempts waiting for their response header.
    pub(crate) fn awaiting(&self) -> usize {
        self.awaiting.load(Relaxed)
    }

    /// An attempt starts if the server has room under `max_conns` (0: no
    /// limit): in flight, and waiting for its header. The check and the
    /// count are one atomic step, so that threads racing for a server's
    /// last slot cannot both take it.
    pub(super) fn try_start(&self, max_conns: u32) -> bool {
        if max_conns == 0 {
            self.in_flight.fetch_add(1, Relaxed);
        } else if self
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| {
                (n < max_conns as usize).then_some(n + 1)
            })
            .is_err()
        {
            return false;
        }
        self.awaiting.fetch_add(1, Relaxed);
        true
    }

    /// An attempt's response header arrived after `us` µs. A probe's answer
    /// replaces the estimate: it is the first news after a failure period.
    pub(super) fn answered(&self, us: f64, probe: bool, now: u64) {
        self.awaiting.fetch_sub(1, Relaxed);
        if probe {
            self.latency.restart_with(us, now);
        } else {
            self.latency.observe(us, now);
        }
    }

    /// An attempt failed after `elapsed` µs: a high latency sample, so that
    /// `ewma` avoids a failing server before passive health marks it.
    pub(super) fn failed(&self, elapsed: f64, now: u64) {
        self.latency.penalize(elapsed, now);
    }

    /// An attempt ended with neither header nor verdict (a client gave up)
    /// after `waited` µs: the server took at least that long, which only
    /// ever raises the estimate.
    pub(super) fn abandoned(&self, waited: f64, now: u64) {
        self.latency.observe_at_least(waited, now);
    }

    /// An attempt ends; `answered`: its header arrived (then it no longer
    /// waits).
    pub(super) fn end(&self, answered: bool) {
        if !answered {
            self.awaiting.fetch_sub(1, Relaxed);
        }
        self.in_flight.fetch_sub(1, Relaxed);
    }
}
