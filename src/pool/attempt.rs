//! One attempt on a server, as a guard: the only way load, passive health
//! and counters learn how an attempt went, and the reason in-flight counts
//! cannot leak. Dropping it releases the attempt on every path (errors,
//! client aborts, panics). Starting one (`Server::begin`) is here too, so
//! that `server.rs` does not depend on its attempts.

use super::queue::Queue;
use super::server::Server;
use super::stats::FailureKind;
use crate::clock::{now_ms, now_us};
use std::sync::Arc;
use std::time::Duration;

impl Server {
    /// Starts an attempt on this server. For a server whose fail period is
    /// over, only the first caller gets the single probe; others get `None`.
    /// So does a caller that finds the server at `max_conns`.
    pub(crate) fn begin(self: &Arc<Self>, now: u64) -> Option<InFlight> {
        let probe = self.passive.admit(now)?;
        self.take_slot(probe)?;
        Some(InFlight::start(self, probe))
    }

    /// Takes an in-flight slot under `max_conns`; without one, a probe
    /// taken for the attempt is handed back.
    fn take_slot(&self, probe: bool) -> Option<()> {
        if self.load.try_start(self.max_conns()) {
            return Some(());
        }
        if probe {
            self.passive.return_probe();
        }
        None
    }

    /// Starts a last-resort attempt on a server excluded only by passive
    /// health (used when nothing else is usable): an early probe. Like any
    /// probe only one runs at a time, so when every server is dead the other
    /// requests still get their 502 at once. Its success restores the
    /// server, its failure restarts the fail period.
    pub(crate) fn begin_last_resort(self: &Arc<Self>) -> Option<InFlight> {
        if !self.passive.take_probe() {
            return None;
        }
        self.take_slot(true)?;
        Some(InFlight::start(self, true))
    }
}

/// One attempt in progress on a server. Dropping it releases the in-flight
/// slot on every path (errors, client aborts, panics); a probe that never
/// reported is handed back so another request can probe.
pub struct InFlight {
    server: Arc<Server>,
    probe: bool,
    settled: bool,
    /// [`now_us`] when the attempt began.
    started_us: u64,
    /// Whether a latency sample was taken (response header seen).
    sampled: bool,
    /// The queue of the pool that chose the server, told when the slot
    /// frees (only pools with a `queue`).
    pub(super) queue: Option<Arc<Queue>>,
}

impl InFlight {
    /// Starts an attempt that passive health has let through, on the slot
    /// taken for it.
    fn start(server: &Arc<Server>, probe: bool) -> InFlight {
        server.stats.count_attempt();
        InFlight {
            server: Arc::clone(server),
            probe,
            settled: false,
            started_us: now_us(),
            sampled: false,
            queue: None,
        }
    }

    /// The server this attempt went to.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The attempt failed; `passive` says whether failures may mark the server.
    /// It also counts as a high latency sample, so `ewma` avoids a failing
    /// server before passive health marks it.
    pub fn fail(&mut self, passive: bool) {
        if !self.settled {
            self.settled = true;
            self.server.record_failure(passive, self.probe);
            let now = now_us();
            let elapsed = now.saturating_sub(self.started_us) as f64;
            self.server.load.failed(elapsed, now);
        }
    }

    /// The response header arrived `latency` after the attempt started: one
    /// latency sample (only the first call of an attempt counts).
    pub(crate) fn record_response(&mut self, latency: Duration) {
        if self.sampled {
            return;
        }
        self.sampled = true;
        let us = latency.as_secs_f64() * 1e6;
        self.server.load.answered(us, self.probe, now_us());
    }

    /// The attempt failed in a known way: counted by kind for the metrics
    /// (once per attempt), then handled like [`InFlight::fail`].
    pub(crate) fn fail_as(&mut self, kind: FailureKind, passive: bool) {
        if !self.settled {
            self.server.stats.count_failure(kind);
        }
        self.fail(passive);
    }

    /// The attempt succeeded. A probe's success restores the server, which
    /// then warms up.
    pub fn succeed(&mut self) {
        if !self.settled {
            self.settled = true;
            self.server
                .passive
                .record_success(&self.server.name, self.probe);
            if self.probe {
                self.server.warm_up(now_ms());
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let load = &self.server.load;
        if !self.settled && !self.sampled {
            let now = now_us();
            load.abandoned(now.saturating_sub(self.started_us) as f64, now);
        }
        load.end(self.sampled);
        if self.probe && !self.settled {
            self.server.passive.return_probe();
        }
        // Last: the slot (and a returned probe) is there for whom it wakes.
        if let Some(queue) = self.queue.take() {
            queue.slot_freed();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::pool::now_ms;
    use crate::pool::server::tests::server;
    use std::time::Duration;

    #[test]
    fn guard_releases_in_flight_on_drop() {
        let s = server(1, 1000);
        let a = s.begin(now_ms()).unwrap();
        let b = s.begin(now_ms()).unwrap();
        assert_eq!(s.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.requests(), 2);
    }

    #[test]
    fn awaiting_ends_at_the_response_header_or_with_the_attempt() {
        let s = server(1, 1000);
        let mut answered = s.begin(now_ms()).unwrap();
        let mut failed = s.begin(now_ms()).unwrap();
        let abandoned = s.begin(now_ms()).unwrap();
        assert_eq!((s.in_flight(), s.awaiting()), (3, 3));
        answered.record_response(Duration::from_millis(1));
        answered.record_response(Duration::from_millis(1)); // counted once
        assert_eq!((s.in_flight(), s.awaiting()), (3, 2), "body still coming");
        failed.fail(true);
        drop(failed);
        drop(abandoned);
        assert_eq!((s.in_flight(), s.awaiting()), (1, 0));
        answered.succeed();
        drop(answered);
        assert_eq!((s.in_flight(), s.awaiting()), (0, 0));
    }

    #[test]
    fn attempts_feed_the_estimate() {
        let s = server(1, 10_000);
        let mut a = s.begin(now_ms()).unwrap();
        a.record_response(Duration::from_millis(7));
        a.record_response(Duration::from_millis(70)); // only the first counts
        a.succeed();
        drop(a);
        assert_eq!(s.ewma_ms(), Some(7.0));
        // A failure: ten times the estimate.
        s.begin(now_ms()).unwrap().fail(false);
        assert_eq!(s.ewma_ms(), Some(70.0));
        // An abandoned attempt only raises (it took far less than 70ms).
        drop(s.begin(now_ms()).unwrap());
        assert_eq!(s.ewma_ms(), Some(70.0));
        // Recovery through active health forgets the old estimate.
        s.observe_check(false, None, 1, 1);
        s.observe_check(true, None, 1, 1);
        assert_eq!(s.ewma_ms(), None);
    }

    #[test]
    fn a_probe_answer_replaces_the_penalty() {
        let s = server(1, 10_000);
        s.set_latency_params(Duration::from_secs(10), Duration::from_millis(1));
        s.begin(now_ms()).unwrap().fail(true); // max_fails 1: marked failed
        assert_eq!(s.ewma_ms(), Some(10.0));
        let mut probe = s.begin_last_resort().unwrap();
        probe.record_response(Duration::from_micros(1500));
        probe.succeed();
        drop(probe);
        assert_eq!(s.ewma_ms(), Some(1.5));
    }
}
