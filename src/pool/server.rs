//! One upstream server's shared state, composed of parts that change for
//! different reasons: its settings from the config, passive health
//! (`passive.rs`), active health (`active.rs`), drain (`drain.rs`), load
//! (`load.rs`), slow start (`slow_start.rs`) and counters (`stats.rs`).
//! Everything is atomic so that all
//! worker threads see the same numbers without a lock on the request path;
//! this object outlives selector rebuilds and reloads (it is found again by
//! pool name and address).

use super::active::{Active, ActiveReport};
use super::drain::Drain;
use super::load::Load;
use super::passive::{Passive, Usability};
use super::slow_start::SlowStart;
use super::stats::{FailureKind, Stats};
use crate::clock::{now_ms, now_us};
use crate::config::ServerConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Shared state of one server.
pub struct Server {
    /// Address as written in the config.
    pub(crate) name: String,
    /// Resolved address.
    pub addr: SocketAddr,
    weight: AtomicU32,
    max_conns: AtomicU32,
    backup: AtomicBool,
    down: AtomicBool,
    /// Reached in clear although the pool has `tls` (`tls: false`).
    clear: AtomicBool,
    pub(super) passive: Passive,
    active: Active,
    drain: Drain,
    pub(super) load: Load,
    slow_start: SlowStart,
    /// Smooth weighted round-robin credit of the selections' tie-break
    /// (`select/ties.rs`); here so that it survives selector rebuilds.
    pub(super) tie_credit: AtomicI64,
    /// Counters for metrics and the status page.
    pub(crate) stats: Stats,
}

impl Server {
    /// A new server, healthy until proven otherwise.
    pub(crate) fn new(cfg: &ServerConfig) -> Arc<Self> {
        let s = Server {
            name: cfg.name.clone(),
            addr: cfg.addr,
            weight: AtomicU32::new(1),
            max_conns: AtomicU32::new(0),
            backup: AtomicBool::new(false),
            down: AtomicBool::new(false),
            clear: AtomicBool::new(false),
            passive: Passive::new(),
            active: Active::new(),
            drain: Drain::default(),
            load: Load::new(now_us()),
            slow_start: SlowStart::new(),
            tie_credit: AtomicI64::new(0),
            stats: Stats::new(),
        };
        s.apply(cfg);
        Arc::new(s)
    }

    /// Takes the tunable settings of `cfg` (on start and on reload).
    pub(crate) fn apply(&self, cfg: &ServerConfig) {
        self.weight.store(cfg.weight.max(1), Relaxed);
        self.passive.configure(cfg.max_fails, cfg.fail_timeout);
        self.max_conns.store(cfg.max_conns, Relaxed);
        self.backup.store(cfg.backup, Relaxed);
        self.clear.store(!cfg.tls, Relaxed);
        self.slow_start.configure(cfg.slow_start);
        if self.down.swap(cfg.down, Relaxed) && !cfg.down {
            // Marked up by a reload: it becomes usable.
            self.warm_up(now_ms());
        }
        self.drain.set_removed(false);
    }

    /// Whether the pool's `tls` applies to this server.
    pub(crate) fn uses_tls(&self) -> bool {
        !self.clear.load(Relaxed)
    }

    /// Relative weight (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }
    /// Whether this is a backup server.
    pub(crate) fn is_backup(&self) -> bool {
        self.backup.load(Relaxed)
    }
    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.load.in_flight()
    }
    /// Attempts waiting for their response header: the load `ewma` weighs,
    /// as Linkerd counts a request pending until its response's first data.
    pub(crate) fn awaiting(&self) -> usize {
        self.load.awaiting()
    }
    /// Attempts sent to this server since start.
    pub fn requests(&self) -> u64 {
        self.stats.requests()
    }
    /// Failures (passive) since start.
    pub(crate) fn failures(&self) -> u64 {
        self.stats.failures()
    }
    /// `max_conns` (0 = unlimited).
    pub(crate) fn max_conns(&self) -> u32 {
        self.max_conns.load(Relaxed)
    }
    /// `down: true` in the config.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }
    /// Drained by an operator.
    pub(crate) fn is_drained(&self) -> bool {
        self.drain.is_drained()
    }
    /// Sets or clears the operator drain; an undrained server warms up.
    pub(crate) fn set_drained(&self, on: bool) {
        let was = self.drain.is_drained();
        self.drain.set_drained(on);
        if was && !on {
            self.warm_up(now_ms());
        }
    }

    /// The server became usable at `now` (health restored, added by a
    /// reload, undrained, no longer `down`): its slow start begins, if it
    /// has one.
    pub(crate) fn warm_up(&self, now: u64) {
        self.slow_start.begin(now);
    }

    /// The weight the selections weigh at `now`, in thousandths of a
    /// weight unit: `weight × 1000`, less while slow start ramps it up.
    /// Every server is scaled alike, so comparisons are unchanged when
    /// none is warming.
    pub(crate) fn effective_weight(&self, now: u64) -> u64 {
        self.weight() as u64 * self.warmth(now)
    }

    /// The share of its weight the server gets at `now`, in thousandths
    /// (1000 unless slow start is ramping it up).
    pub(crate) fn warmth(&self, now: u64) -> u64 {
        self.slow_start.permille(now)
    }

    /// Whether slow start may be ramping the server up (one load; then
    /// ask [`Self::warmth`]).
    pub(crate) fn maybe_warming(&self) -> bool {
        self.slow_start.maybe_warming()
    }

    /// `slow_start` from the config.
    pub(crate) fn slow_start(&self) -> Duration {
        self.slow_start.window()
    }
    /// Removed from its pool by a reload; it only finishes what it has.
    pub(crate) fn set_removed(&self) {
        self.drain.set_removed(true);
    }
    /// Whether a reload removed it.
    pub(crate) fn is_removed(&self) -> bool {
        self.drain.is_removed()
    }

    /// Takes the pool's latency-estimate settings (on start and on reload).
    pub(crate) fn set_latency_params(&self, decay: Duration, default_rtt: Duration) {
        self.load.latency.configure(decay, default_rtt);
    }

    /// Current peak-EWMA of the time from attempt start to response header,
    /// in milliseconds; `None` until the first sample (or since a recovery).
    pub(crate) fn ewma_ms(&self) -> Option<f64> {
        self.load.latency.estimate_us().map(|us| us / 1000.0)
    }

    /// Kept out whatever its passive health and load: `down`, drained,
    /// removed or actively unhealthy.
    fn held_out(&self) -> bool {
        self.is_down() || self.is_drained() || self.is_removed() || !self.active_healthy()
    }

    /// At its `max_conns`.
    pub(super) fn at_max_conns(&self) -> bool {
        let max = self.max_conns();
        max > 0 && self.in_flight() >= max as usize
    }

    /// Whether the selection may offer this server now: the one usability
    /// filter of every selection and of the retry budget.
    pub(crate) fn usability(&self, now: u64) -> Usability {
        if self.held_out() || self.at_max_conns() {
            return Usability::Unusable;
        }
        self.passive.usability(now)
    }

    /// Whether only passive health keeps this server out of the selection.
    pub(crate) fn only_passively_failed(&self) -> bool {
        self.passive.probe_free() && !self.held_out() && !self.at_max_conns()
    }

    /// A failure found after the attempt had ended (bytes past the end of
    /// its response): counted by kind and for passive health.
    pub(crate) fn count_late_failure(&self, kind: FailureKind, passive: bool) {
        self.stats.count_failure(kind);
        self.record_failure(passive, false);
    }

    /// Records a failed attempt. `passive` is false for single-server pools,
    /// which nginx never marks failed.
    pub(super) fn record_failure(&self, passive: bool, probe: bool) {
        self.stats.count_failed_attempt();
        if passive {
            self.passive.record_failure(&self.name, probe, now_ms());
        }
    }

    /// Passive state for status pages: failed until some time?
    pub(crate) fn passive_failed(&self) -> bool {
        self.passive.failed()
    }

    /// Time left in the passive fail period, if failed.
    pub(crate) fn failed_for(&self) -> Option<Duration> {
        self.passive.failed_for(now_ms())
    }

    /// Active health verdict (true until checks say otherwise).
    pub(crate) fn active_healthy(&self) -> bool {
        self.active.healthy()
    }

    /// Applies one active check result with rise/fall hysteresis. Returns the
    /// new state if it changed.
    pub(crate) fn observe_check(
        &self,
        ok: bool,
        error: Option<String>,
        rise: u32,
        fall: u32,
    ) -> Option<bool> {
        // Back from unhealthy: its old latency says nothing any more, and
        // it warms up.
        self.active.observe(ok, error, rise, fall, || {
            self.load.latency.reset(now_us());
            self.warm_up(now_ms());
        })
    }

    /// Snapshot of the active-check bookkeeping for status pages.
    pub(crate) fn active_report(&self) -> ActiveReport {
        self.active.report()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A server on 127.0.0.1:1, weight 1, no limits.
    pub(in crate::pool) fn server(max_fails: u32, fail_timeout_ms: u64) -> Arc<Server> {
        Server::new(&ServerConfig {
            name: "127.0.0.1:1".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
            max_fails,
            fail_timeout: Duration::from_millis(fail_timeout_ms),
            max_conns: 0,
            backup: false,
            down: false,
            tls: true,
            slow_start: Duration::ZERO,
        })
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
