//! One upstream server's shared state: counters, passive and active health.
//! Everything is atomic so that all worker threads see the same numbers
//! without a lock on the request path; this object outlives selector rebuilds
//! and reloads (it is found again by pool name and address).

use super::ewma::LatencyEwma;
use super::stats::{FailureKind, Stats};
use crate::config::ServerConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the process started: a cheap monotonic clock for atomics.
pub fn now_ms() -> u64 {
    // +1 so that 0 can mean "never".
    process_start().elapsed().as_millis() as u64 + 1
}

/// Microseconds since the process started (same clock as [`now_ms`]), for
/// the latency estimate.
pub fn now_us() -> u64 {
    process_start().elapsed().as_micros() as u64 + 1
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why a server is or is not offered to the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usability {
    /// Can take a request.
    Usable,
    /// Its passive fail period is over: one probe request may go.
    ProbeDue,
    /// Cannot take a request now.
    Unusable,
}

/// What the active checker last concluded, for status pages.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Error of the last failed check.
    pub last_error: Option<String>,
}

/// Shared state of one server.
pub struct Server {
    /// Address as written in the config.
    pub name: String,
    /// Resolved address.
    pub addr: SocketAddr,
    weight: AtomicU32,
    max_fails: AtomicU32,
    fail_timeout_ms: AtomicU64,
    max_conns: AtomicU32,
    backup: AtomicBool,
    down: AtomicBool,
    /// Set by an operator (drain) or by a reload that removed the server.
    drained: AtomicBool,
    removed: AtomicBool,

    in_flight: AtomicUsize,
    /// Attempts sent whose response header has not arrived yet.
    awaiting: AtomicUsize,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Smooth weighted round-robin state for breaking least_conn ties.
    pub(crate) swrr_current: std::sync::atomic::AtomicI64,

    // Passive health (nginx max_fails / fail_timeout).
    fails: AtomicU32,
    window_start_ms: AtomicU64,
    failed_until_ms: AtomicU64,
    probe_taken: AtomicBool,

    // Active health.
    active_healthy: AtomicBool,
    consecutive_ok: AtomicU32,
    consecutive_fail: AtomicU32,
    active_since_unix_ms: AtomicU64,
    checked: AtomicBool,
    report: Mutex<CheckReport>,

    /// Counters for metrics and the status page.
    pub stats: Stats,
    /// Peak-EWMA of response latency (selection `ewma`, status pages).
    pub(crate) latency: LatencyEwma,
}

impl Server {
    /// A new server, healthy until proven otherwise.
    pub fn new(cfg: &ServerConfig) -> Arc<Self> {
        let s = Server {
            name: cfg.name.clone(),
            addr: cfg.addr,
            weight: AtomicU32::new(1),
            max_fails: AtomicU32::new(0),
            fail_timeout_ms: AtomicU64::new(0),
            max_conns: AtomicU32::new(0),
            backup: AtomicBool::new(false),
            down: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            awaiting: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            swrr_current: Default::default(),
            fails: AtomicU32::new(0),
            window_start_ms: AtomicU64::new(0),
            failed_until_ms: AtomicU64::new(0),
            probe_taken: AtomicBool::new(false),
            active_healthy: AtomicBool::new(true),
            consecutive_ok: AtomicU32::new(0),
            consecutive_fail: AtomicU32::new(0),
            active_since_unix_ms: AtomicU64::new(unix_ms()),
            checked: AtomicBool::new(false),
            report: Mutex::new(CheckReport::default()),
            stats: Stats::new(),
            latency: LatencyEwma::new(now_us()),
        };
        s.apply(cfg);
        Arc::new(s)
    }

    /// Takes the tunable settings of `cfg` (on start and on reload).
    pub fn apply(&self, cfg: &ServerConfig) {
        self.weight.store(cfg.weight.max(1), Relaxed);
        self.max_fails.store(cfg.max_fails, Relaxed);
        self.fail_timeout_ms
            .store(cfg.fail_timeout.as_millis() as u64, Relaxed);
        self.max_conns.store(cfg.max_conns, Relaxed);
        self.backup.store(cfg.backup, Relaxed);
        self.down.store(cfg.down, Relaxed);
        self.removed.store(false, Relaxed);
    }

    /// Relative weight (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }
    /// Whether this is a backup server.
    pub fn is_backup(&self) -> bool {
        self.backup.load(Relaxed)
    }
    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }
    /// Attempts waiting for their response header: the load `ewma` weighs,
    /// as Linkerd counts a request pending until its response's first data.
    pub fn awaiting(&self) -> usize {
        self.awaiting.load(Relaxed)
    }
    /// Attempts sent to this server since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }
    /// Failures (passive) since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }
    /// `max_conns` (0 = unlimited).
    pub fn max_conns(&self) -> u32 {
        self.max_conns.load(Relaxed)
    }
    /// `down: true` in the config.
    pub fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }
    /// Drained by an operator.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Relaxed)
    }
    /// Sets or clears the operator drain.
    pub fn set_drained(&self, on: bool) {
        self.drained.store(on, Relaxed);
    }
    /// Removed from its pool by a reload; it only finishes what it has.
    pub fn set_removed(&self) {
        self.removed.store(true, Relaxed);
    }
    /// Whether a reload removed it.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    /// Takes the pool's latency-estimate settings (on start and on reload).
    pub fn set_latency_params(&self, decay: Duration, default_rtt: Duration) {
        self.latency.configure(decay, default_rtt);
    }

    /// Current peak-EWMA of the time from attempt start to response header,
    /// in milliseconds; `None` until the first sample (or since a recovery).
    pub fn ewma_ms(&self) -> Option<f64> {
        self.latency.estimate_us().map(|us| us / 1000.0)
    }

    /// Whether the selection may offer this server now.
    pub fn usability(&self, now: u64) -> Usability {
        if self.is_down() || self.is_drained() || self.is_removed() || !self.active_healthy() {
            return Usability::Unusable;
        }
        let max = self.max_conns.load(Relaxed);
        if max > 0 && self.in_flight() >= max as usize {
            return Usability::Unusable;
        }
        let until = self.failed_until_ms.load(Relaxed);
        if until == 0 {
            Usability::Usable
        } else if now < until || self.probe_taken.load(Relaxed) {
            Usability::Unusable
        } else {
            Usability::ProbeDue
        }
    }

    /// Starts an attempt on this server. For a server whose fail period is
    /// over, only the first caller gets the single probe; others get `None`.
    pub fn begin(self: &Arc<Self>, now: u64) -> Option<InFlight> {
        let mut probe = false;
        let until = self.failed_until_ms.load(Relaxed);
        if until != 0 {
            if now < until
                || self
                    .probe_taken
                    .compare_exchange(false, true, AcqRel, Relaxed)
                    .is_err()
            {
                return None;
            }
            probe = true;
        }
        self.in_flight.fetch_add(1, Relaxed);
        self.awaiting.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        Some(InFlight {
            server: Arc::clone(self),
            probe,
            settled: false,
            started_us: now_us(),
            sampled: false,
        })
    }

    /// Starts a last-resort attempt on a server excluded only by passive
    /// health (used when nothing else is usable): an early probe. Like any
    /// probe only one runs at a time, so when every server is dead the other
    /// requests still get their 502 at once. Its success restores the
    /// server, its failure restarts the fail period.
    pub fn begin_last_resort(self: &Arc<Self>) -> Option<InFlight> {
        self.probe_taken
            .compare_exchange(false, true, AcqRel, Relaxed)
            .ok()?;
        self.in_flight.fetch_add(1, Relaxed);
        self.awaiting.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        Some(InFlight {
            server: Arc::clone(self),
            probe: true,
            settled: false,
            started_us: now_us(),
            sampled: false,
        })
    }

    /// Whether only passive health keeps this server out of the selection.
    pub fn only_passively_failed(&self) -> bool {
        let max = self.max_conns.load(Relaxed);
        self.passive_failed()
            && !self.probe_taken.load(Relaxed)
            && !self.is_down()
            && !self.is_drained()
            && !self.is_removed()
            && self.active_healthy()
            && (max == 0 || self.in_flight() < max as usize)
    }

    /// A failure found after the attempt had ended (bytes past the end of
    /// its response): counted by kind and for passive health.
    pub fn count_late_failure(&self, kind: FailureKind, passive: bool) {
        self.stats.count_failure(kind);
        self.record_failure(passive, false);
    }

    /// Records a failed attempt. `passive` is false for single-server pools,
    /// which nginx never marks failed.
    fn record_failure(&self, passive: bool, probe: bool) {
        self.failures.fetch_add(1, Relaxed);
        let max_fails = self.max_fails.load(Relaxed);
        if !passive || max_fails == 0 {
            return;
        }
        let now = now_ms();
        let fail_timeout = self.fail_timeout_ms.load(Relaxed);
        if probe {
            self.failed_until_ms.store(now + fail_timeout, Relaxed);
            self.probe_taken.store(false, Release);
            log::warn!(
                "server {} failed its probe request; unusable for another {fail_timeout}ms",
                self.name
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
                "server {} marked failed: {fails} failures within {fail_timeout}ms (max_fails {max_fails})",
                self.name
            );
        }
    }

    fn record_success(&self, probe: bool) {
        if probe {
            self.fails.store(0, Relaxed);
            self.window_start_ms.store(0, Relaxed);
            self.failed_until_ms.store(0, Relaxed);
            self.probe_taken.store(false, Release);
            log::warn!("server {} recovered: probe request succeeded", self.name);
        }
    }

    /// Passive state for status pages: failed until some time?
    pub fn passive_failed(&self) -> bool {
        self.failed_until_ms.load(Relaxed) != 0
    }

    /// Active health verdict (true until checks say otherwise).
    pub fn active_healthy(&self) -> bool {
        self.active_healthy.load(Relaxed)
    }

    /// Applies one active check result with rise/fall hysteresis. Returns the
    /// new state if it changed.
    pub fn observe_check(
        &self,
        ok: bool,
        error: Option<String>,
        rise: u32,
        fall: u32,
    ) -> Option<bool> {
        self.checked.store(true, Relaxed);
        let healthy = self.active_healthy();
        if ok {
            self.consecutive_fail.store(0, Relaxed);
            let n = self.consecutive_ok.fetch_add(1, Relaxed) + 1;
            if !healthy && n >= rise {
                self.set_active(true);
                return Some(true);
            }
        } else {
            self.consecutive_ok.store(0, Relaxed);
            if let Ok(mut r) = self.report.lock() {
                r.last_error = error;
            }
            let n = self.consecutive_fail.fetch_add(1, Relaxed) + 1;
            if healthy && n >= fall {
                self.set_active(false);
                return Some(false);
            }
        }
        None
    }

    fn set_active(&self, healthy: bool) {
        if healthy {
            // Back from unhealthy: its old latency says nothing any more.
            self.latency.reset(now_us());
        }
        self.active_healthy.store(healthy, Relaxed);
        self.active_since_unix_ms.store(unix_ms(), Relaxed);
    }

    /// Snapshot of the active-check bookkeeping for status pages.
    pub fn active_report(&self) -> ActiveReport {
        ActiveReport {
            checked: self.checked.load(Relaxed),
            healthy: self.active_healthy(),
            since_unix_ms: self.active_since_unix_ms.load(Relaxed),
            consecutive_ok: self.consecutive_ok.load(Relaxed),
            consecutive_fail: self.consecutive_fail.load(Relaxed),
            last_error: self.report.lock().ok().and_then(|r| r.last_error.clone()),
        }
    }

    /// Time left in the passive fail period, if failed.
    pub fn failed_for(&self) -> Option<Duration> {
        let until = self.failed_until_ms.load(Relaxed);
        (until != 0).then(|| Duration::from_millis(until.saturating_sub(now_ms())))
    }
}

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
}

impl InFlight {
    /// The server this attempt went to.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The attempt failed; `passive` says whether failures may mark the server.
    /// It also counts as a high latency sample (see [`LatencyEwma::penalize`]),
    /// so `ewma` avoids a failing server before passive health marks it.
    pub fn fail(&mut self, passive: bool) {
        if !self.settled {
            self.settled = true;
            self.server.record_failure(passive, self.probe);
            let now = now_us();
            let elapsed = now.saturating_sub(self.started_us) as f64;
            self.server.latency.penalize(elapsed, now);
        }
    }

    /// The response header arrived `latency` after the attempt started: one
    /// latency sample (only the first call of an attempt counts). A probe's
    /// sample replaces the estimate: it is the first news after a failure.
    pub fn record_response(&mut self, latency: Duration) {
        if self.sampled {
            return;
        }
        self.sampled = true;
        self.server.awaiting.fetch_sub(1, Relaxed);
        let us = latency.as_secs_f64() * 1e6;
        if self.probe {
            self.server.latency.restart_with(us, now_us());
        } else {
            self.server.latency.observe(us, now_us());
        }
    }

    /// The attempt failed in a known way: counted by kind for the metrics
    /// (once per attempt), then handled like [`InFlight::fail`].
    pub fn fail_as(&mut self, kind: FailureKind, passive: bool) {
        if !self.settled {
            self.server.stats.count_failure(kind);
        }
        self.fail(passive);
    }

    /// The attempt succeeded.
    pub fn succeed(&mut self) {
        if !self.settled {
            self.settled = true;
            self.server.record_success(self.probe);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.settled && !self.sampled {
            // Abandoned before any answer (client abort): the server took at
            // least this long, which only ever raises the estimate.
            let now = now_us();
            let waited = now.saturating_sub(self.started_us) as f64;
            self.server.latency.observe_at_least(waited, now);
        }
        if !self.sampled {
            self.server.awaiting.fetch_sub(1, Relaxed);
        }
        self.server.in_flight.fetch_sub(1, Relaxed);
        if self.probe && !self.settled {
            self.server.probe_taken.store(false, Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(max_fails: u32, fail_timeout_ms: u64) -> Arc<Server> {
        Server::new(&ServerConfig {
            name: "127.0.0.1:1".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
            max_fails,
            fail_timeout: Duration::from_millis(fail_timeout_ms),
            max_conns: 0,
            backup: false,
            down: false,
        })
    }

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
    fn max_fails_then_one_probe_then_recovery() {
        let s = server(3, 50);
        for _ in 0..2 {
            s.begin(now_ms()).unwrap().fail(true);
        }
        assert_eq!(s.usability(now_ms()), Usability::Usable);
        s.begin(now_ms()).unwrap().fail(true);
        assert_eq!(s.usability(now_ms()), Usability::Unusable);
        assert!(s.begin(now_ms()).is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.usability(now_ms()), Usability::ProbeDue);
        let mut probe = s.begin(now_ms()).unwrap();
        assert!(s.begin(now_ms()).is_none(), "only one probe at a time");
        assert_eq!(s.usability(now_ms()), Usability::Unusable);
        probe.succeed();
        drop(probe);
        assert_eq!(s.usability(now_ms()), Usability::Usable);
    }

    #[test]
    fn failed_probe_restarts_the_fail_period_and_abandoned_probe_is_returned() {
        let s = server(1, 40);
        s.begin(now_ms()).unwrap().fail(true);
        std::thread::sleep(Duration::from_millis(50));
        drop(s.begin(now_ms()).unwrap()); // abandoned: no verdict
        assert_eq!(s.usability(now_ms()), Usability::ProbeDue);
        s.begin(now_ms()).unwrap().fail(true);
        assert_eq!(s.usability(now_ms()), Usability::Unusable);
    }

    #[test]
    fn last_resort_is_one_early_probe_at_a_time() {
        let s = server(1, 60_000);
        s.begin(now_ms()).unwrap().fail(true);
        assert!(s.only_passively_failed());
        let mut early = s.begin_last_resort().expect("first early probe");
        assert!(s.begin_last_resort().is_none(), "one at a time");
        assert!(!s.only_passively_failed());
        early.succeed();
        drop(early);
        assert_eq!(s.usability(now_ms()), Usability::Usable);
        assert!(!s.only_passively_failed());
    }

    #[test]
    fn single_server_pools_and_max_fails_zero_never_mark() {
        let s = server(1, 1000);
        s.begin(now_ms()).unwrap().fail(false);
        assert_eq!(s.usability(now_ms()), Usability::Usable);
        let z = server(0, 1000);
        for _ in 0..10 {
            z.begin(now_ms()).unwrap().fail(true);
        }
        assert_eq!(z.usability(now_ms()), Usability::Usable);
        assert_eq!(z.failures(), 10);
    }

    #[test]
    fn rise_and_fall() {
        let s = server(1, 1000);
        assert_eq!(s.observe_check(false, Some("503".into()), 2, 2), None);
        assert_eq!(
            s.observe_check(false, Some("503".into()), 2, 2),
            Some(false)
        );
        assert_eq!(s.usability(now_ms()), Usability::Unusable);
        assert_eq!(s.observe_check(true, None, 2, 2), None);
        assert_eq!(s.observe_check(true, None, 2, 2), Some(true));
        assert_eq!(s.active_report().last_error.as_deref(), Some("503"));
    }
}
