//! `selection: ewma`: latency-aware least-load (peak-EWMA, as in Linkerd and
//! Finagle) with power of two choices.
//!
//! Every [`Server`] keeps a [`LatencyEwma`] of the time from attempt start to
//! response header. A sample above the estimate replaces it at once (peak
//! sensitivity: a server that turns slow is avoided after one slow answer); a
//! sample below pulls it down with weight `1 - w`, `w = exp(-elapsed/decay)`,
//! `elapsed` being the time since the previous update, so the estimate forgets
//! a spike over about `decay`. Failures count as a high sample (a penalty).
//!
//! The cost of a server is `estimate × (waiting + 1) / weight`, `waiting`
//! being its attempts still without a response header
//! ([`Server::awaiting`]; Linkerd counts a request pending until its
//! response's first data): what follows the header is fulcrum's own work,
//! and counting it let fulcrum's backlog weigh on the busiest server. The
//! selection ([`TwoChoices`], shared with `p2c`) compares two random usable
//! servers, or all of them in pools of up to three. While a server has
//! nothing waiting, the estimate the selection uses decays toward zero with
//! the same time constant, counted from its last update (Linkerd and Finagle
//! decay it the same way when they read it): a server that was slow, or
//! failed, and is not being used is tried again after about
//! `ln(its estimate / the others' cost) × decay`, and its new answers are
//! measured. Without this a server that became fast again would never be
//! measured again.
//!
//! The state is two atomics per server (the estimate as `f64` bits and the
//! time of its last update) plus the pool's settings, shared by every thread
//! and kept across selector rebuilds and reloads with the `Server`. The
//! estimate is updated with a compare-and-swap loop, so no sample is lost;
//! the timestamp is a separate atomic, so two threads updating at the same
//! moment may weigh one sample with a slightly wrong `elapsed`. That only
//! perturbs the average slightly, never the peak rule.

use super::p2c::{Cost, LoadMetric, TwoChoices};
use super::server::Server;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Default time constant of the decay (as Linkerd).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// Default start value for a server without samples. Deliberately
/// optimistic (about a fast LAN answer): an estimate that is too low is
/// corrected by the first answer (peak rule), while one that is too high
/// only comes down over several `decay` periods of idle decay.
pub const DEFAULT_RTT: Duration = Duration::from_millis(1);
/// A failure is a sample this many times the current estimate...
const FAILURE_FACTOR: f64 = 10.0;
/// ...but that multiple stops growing here (µs); a slower real attempt
/// (a read timeout) still counts with its full duration.
const MAX_PENALTY_US: f64 = 10e6;
/// Bit pattern meaning "no sample since the last reset" (a NaN that no
/// arithmetic on finite samples produces).
const NONE: u64 = u64::MAX;

/// The peak-EWMA update rule: `prev` and `sample` in any one unit, `elapsed`
/// since the previous update and `decay` in another.
pub fn update(prev: f64, sample: f64, elapsed: f64, decay: f64) -> f64 {
    if sample >= prev {
        return sample;
    }
    let w = (-elapsed / decay).exp();
    prev * w + sample * (1.0 - w)
}

/// One server's latency estimate, lock-free. Times are µs on the
/// [`now_us`](super::now_us) clock; every method takes `now` so tests can
/// inject time.
pub struct LatencyEwma {
    /// The estimate in µs as `f64` bits, or [`NONE`].
    bits: AtomicU64,
    /// `now` of the last update or reset.
    stamp_us: AtomicU64,
    decay_us: AtomicU64,
    default_us: AtomicU64,
}

impl LatencyEwma {
    /// No samples yet, default settings.
    pub fn new(now: u64) -> Self {
        LatencyEwma {
            bits: AtomicU64::new(NONE),
            stamp_us: AtomicU64::new(now),
            decay_us: AtomicU64::new(DEFAULT_DECAY.as_micros() as u64),
            default_us: AtomicU64::new(DEFAULT_RTT.as_micros() as u64),
        }
    }

    /// Takes the pool's `decay` and `default_rtt`.
    pub fn configure(&self, decay: Duration, default_rtt: Duration) {
        self.decay_us
            .store((decay.as_micros() as u64).max(1), Relaxed);
        self.default_us
            .store(default_rtt.as_micros() as u64, Relaxed);
    }

    fn decay(&self) -> f64 {
        self.decay_us.load(Relaxed).max(1) as f64
    }

    fn default_rtt(&self) -> f64 {
        self.default_us.load(Relaxed) as f64
    }

    /// Forgets every sample: the server starts again at `default_rtt`.
    pub fn reset(&self, now: u64) {
        self.bits.store(NONE, Relaxed);
        self.stamp_us.store(now, Relaxed);
    }

    /// The estimate in µs, `None` without samples.
    pub fn estimate_us(&self) -> Option<f64> {
        match self.bits.load(Relaxed) {
            NONE => None,
            b => Some(f64::from_bits(b)),
        }
    }

    /// The estimate, or `default_rtt` without samples.
    pub fn current_us(&self) -> f64 {
        self.estimate_us().unwrap_or_else(|| self.default_rtt())
    }

    /// What the selection uses at `now`: the estimate, decayed toward zero
    /// since its last update while the server is `idle` (nothing in flight).
    pub fn effective_us(&self, now: u64, idle: bool) -> f64 {
        let cur = self.current_us();
        if !idle {
            return cur;
        }
        let elapsed = now.saturating_sub(self.stamp_us.load(Relaxed)) as f64;
        cur * (-elapsed / self.decay()).exp()
    }

    /// Applies `f(previous estimate or None)` atomically; `None` from `f`
    /// leaves everything unchanged.
    fn change(&self, now: u64, f: impl Fn(Option<f64>, f64) -> Option<f64>) {
        let elapsed = now.saturating_sub(self.stamp_us.load(Relaxed)) as f64;
        let mut old = self.bits.load(Relaxed);
        loop {
            let prev = (old != NONE).then(|| f64::from_bits(old));
            let Some(new) = f(prev, elapsed) else {
                return;
            };
            let new = if new.is_finite() { new.max(0.0) } else { 0.0 };
            match self
                .bits
                .compare_exchange_weak(old, new.to_bits(), Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(actual) => old = actual,
            }
        }
        self.stamp_us.fetch_max(now, Relaxed);
    }

    /// One latency sample (µs). The first sample after a reset replaces the
    /// start value: that was a stand-in, not a measurement.
    pub fn observe(&self, sample: f64, now: u64) {
        let decay = self.decay();
        self.change(now, |prev, elapsed| {
            Some(match prev {
                None => sample,
                Some(p) => update(p, sample, elapsed, decay),
            })
        });
    }

    /// Replaces the estimate by `sample` whatever it was (a probe's answer
    /// after a failure period).
    pub fn restart_with(&self, sample: f64, now: u64) {
        self.change(now, |_, _| Some(sample));
    }

    /// The server took at least `lower` µs without answering (the attempt was
    /// abandoned): raises the estimate to `lower` if it is below, else no
    /// information.
    pub fn observe_at_least(&self, lower: f64, now: u64) {
        let default = self.default_rtt();
        self.change(now, |prev, _| {
            (lower > prev.unwrap_or(default)).then_some(lower)
        });
    }

    /// A failed attempt that took `elapsed` µs: a sample of
    /// `max(estimate, elapsed, min(10 × max(estimate, default_rtt), 10s))`,
    /// which never lowers the estimate and so replaces it (peak rule).
    /// Repeated failures multiply it further, up to 10s (more only if the
    /// attempts themselves took longer, such as read timeouts).
    pub fn penalize(&self, elapsed: f64, now: u64) {
        let default = self.default_rtt();
        self.change(now, |prev, _| {
            let cur = prev.unwrap_or(default);
            let multiple = (cur.max(default) * FAILURE_FACTOR).min(MAX_PENALTY_US);
            Some(cur.max(elapsed).max(multiple))
        });
    }
}

/// Cost of `selection: ewma`: estimate × (waiting + 1) / weight.
pub struct LatencyCost;

impl LoadMetric for LatencyCost {
    fn cost(s: &Server, now_us: u64) -> Cost {
        let n = s.awaiting() as u64;
        Cost {
            est: s.latency.effective_us(now_us, n == 0),
            load: n + 1,
            weight: s.weight() as u64,
        }
    }
}

/// `selection: ewma`.
pub type Ewma = TwoChoices<LatencyCost>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::p2c::tests::{backends, port_of, simulate};
    use crate::pool::server::{now_ms, now_us};
    use pingora_load_balancing::selection::{BackendIter, BackendSelection};
    use proptest::prelude::*;
    use std::sync::Arc;

    const S: u64 = 1_000_000; // one second in µs

    fn ewma() -> LatencyEwma {
        let e = LatencyEwma::new(1);
        e.configure(Duration::from_secs(10), Duration::from_millis(1));
        e
    }

    #[test]
    fn a_higher_sample_replaces_the_estimate_at_once() {
        let e = ewma();
        e.observe(1000.0, S);
        e.observe(20_000.0, S + 1);
        assert_eq!(e.estimate_us(), Some(20_000.0));
    }

    #[test]
    fn a_lower_sample_pulls_down_by_the_elapsed_time() {
        let e = ewma();
        e.observe(20_000.0, S);
        // One decay period later: w = 1/e.
        e.observe(1000.0, 11 * S);
        let w = (-1.0f64).exp();
        let expect = 20_000.0 * w + 1000.0 * (1.0 - w);
        assert!((e.estimate_us().unwrap() - expect).abs() < 1e-6);
        // A lower sample right after barely moves it.
        let before = e.estimate_us().unwrap();
        e.observe(1000.0, 11 * S + 100);
        let after = e.estimate_us().unwrap();
        assert!(after < before && before - after < 1.0, "{before} {after}");
    }

    #[test]
    fn the_first_sample_replaces_the_start_value_and_reset_forgets() {
        let e = ewma();
        assert_eq!(e.estimate_us(), None);
        assert_eq!(e.current_us(), 1000.0);
        e.observe(300.0, S);
        assert_eq!(e.estimate_us(), Some(300.0));
        e.reset(2 * S);
        assert_eq!(e.estimate_us(), None);
        assert_eq!(e.current_us(), 1000.0);
    }

    #[test]
    fn an_idle_estimate_decays_toward_zero_for_the_selection_only() {
        let e = ewma();
        e.observe(20_000.0, S);
        assert_eq!(e.effective_us(S, true), 20_000.0);
        let later = e.effective_us(31 * S, true); // three periods
        assert!((later - 20_000.0 * (-3.0f64).exp()).abs() < 1e-6);
        assert_eq!(e.effective_us(31 * S, false), 20_000.0, "busy: no decay");
        assert_eq!(e.estimate_us(), Some(20_000.0), "reading changes nothing");
    }

    #[test]
    fn failures_are_a_growing_capped_penalty_and_a_probe_restarts() {
        let e = ewma();
        e.penalize(50.0, S); // no samples: 10 × default
        assert_eq!(e.estimate_us(), Some(10_000.0));
        e.penalize(50.0, S + 1);
        assert_eq!(e.estimate_us(), Some(100_000.0));
        for i in 0..10 {
            e.penalize(50.0, S + 2 + i);
        }
        assert_eq!(e.estimate_us(), Some(MAX_PENALTY_US));
        e.penalize(30e6, 2 * S); // a 30s read timeout counts in full
        assert_eq!(e.estimate_us(), Some(30e6));
        e.restart_with(800.0, 3 * S);
        assert_eq!(e.estimate_us(), Some(800.0));
    }

    #[test]
    fn an_abandoned_attempt_only_raises() {
        let e = ewma();
        e.observe(5000.0, S);
        e.observe_at_least(2000.0, S + 10);
        assert_eq!(e.estimate_us(), Some(5000.0));
        e.observe_at_least(9000.0, S + 20);
        assert_eq!(e.estimate_us(), Some(9000.0));
    }

    #[test]
    fn concurrent_updates_lose_no_peak() {
        let e = Arc::new(ewma());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let e = Arc::clone(&e);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        e.observe(100.0 + (i % 50) as f64, S + i);
                    }
                    e.observe(50_000.0 + t as f64, 2 * S);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v = e.estimate_us().unwrap();
        assert!(v >= 50_000.0, "a peak was lost: {v}");
    }

    proptest! {
        #[test]
        fn update_stays_between_sample_and_previous_peak(
            prev in 0.0f64..1e8,
            sample in 0.0f64..1e8,
            elapsed in 0.0f64..1e9,
            decay in 1.0f64..1e8,
        ) {
            let next = update(prev, sample, elapsed, decay);
            if sample >= prev {
                prop_assert_eq!(next, sample);
            } else {
                prop_assert!(next >= sample - 1e-6 && next <= prev + 1e-6);
                // More elapsed time moves it closer to the sample.
                let later = update(prev, sample, elapsed * 2.0 + 1.0, decay);
                prop_assert!(later <= next + 1e-6);
            }
        }

        #[test]
        fn samples_never_make_the_estimate_negative_or_nan(
            samples in proptest::collection::vec((0.0f64..1e7, 0u64..5_000_000, any::<bool>()), 1..60),
        ) {
            let e = ewma();
            let mut now = 1;
            for (sample, step, fail) in samples {
                now += step;
                if fail {
                    e.penalize(sample, now);
                } else {
                    e.observe(sample, now);
                }
                let v = e.estimate_us().unwrap();
                prop_assert!(v.is_finite() && v >= 0.0);
                prop_assert!(e.effective_us(now + step, true) >= 0.0);
            }
        }
    }

    fn ewma_sel(spec: &[(u16, u32, bool)]) -> (Arc<Ewma>, Vec<Arc<Server>>) {
        let (set, servers) = backends(spec);
        for s in &servers {
            s.set_latency_params(Duration::from_secs(10), Duration::from_millis(1));
        }
        (Arc::new(Ewma::build(&set)), servers)
    }

    fn first_at(sel: &Arc<Ewma>, now: u64) -> u16 {
        port_of(sel.iter_at(now, 7).next().unwrap())
    }

    #[test]
    fn the_cheapest_server_wins_by_latency_and_load() {
        let (sel, servers) = ewma_sel(&[(1, 1, false), (2, 1, false)]);
        servers[0].latency.observe(1000.0, S);
        servers[1].latency.observe(20_000.0, S);
        for _ in 0..10 {
            assert_eq!(first_at(&sel, S), 1);
        }
        // 1ms × (19 + 1) = 20ms ties with 20ms × 1; with 20 in flight
        // (1ms × 21 > 20ms) the slow one is cheaper.
        let mut held: Vec<_> = (0..19).map(|_| servers[0].begin(1).unwrap()).collect();
        let picks: Vec<u16> = (0..4).map(|_| first_at(&sel, S)).collect();
        assert!(picks.contains(&1) && picks.contains(&2), "a tie: {picks:?}");
        held.push(servers[0].begin(1).unwrap());
        assert_eq!(first_at(&sel, S), 2);
        // Their headers arrived (1ms), the bodies are still being relayed:
        // the server's part is done, only the waiting count weighs.
        for a in &mut held {
            a.record_response(Duration::from_millis(1));
        }
        assert_eq!(servers[0].in_flight(), 20);
        assert_eq!(first_at(&sel, S), 1);
        drop(held);
        assert_eq!(first_at(&sel, S), 1);
    }

    #[test]
    fn equal_servers_alternate_and_weights_divide_the_cost() {
        let (sel, servers) = ewma_sel(&[(1, 1, false), (2, 1, false)]);
        for s in &servers {
            s.latency.observe(1000.0, S);
        }
        let picks: Vec<u16> = (0..6).map(|_| first_at(&sel, S)).collect();
        assert_eq!(picks, vec![1, 2, 1, 2, 1, 2]);

        let (sel, servers) = ewma_sel(&[(1, 2, false), (2, 1, false)]);
        for s in &servers {
            s.latency.observe(1000.0, S);
        }
        assert_eq!(first_at(&sel, S), 1, "1ms/2 < 1ms/1");
        let _a = servers[0].begin(1).unwrap(); // 1ms × 2 / 2 = 1ms/1: a tie
        let picks: Vec<u16> = (0..4).map(|_| first_at(&sel, S)).collect();
        assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
        let _b = servers[0].begin(1).unwrap(); // 1ms × 3 / 2 > 1ms
        assert_eq!(first_at(&sel, S), 2);
    }

    #[test]
    fn a_slow_idle_server_is_tried_again_after_a_few_decays() {
        let (sel, servers) = ewma_sel(&[(1, 1, false), (2, 1, false)]);
        servers[0].latency.observe(1000.0, S);
        servers[1].latency.observe(20_000.0, S);
        // The fast one stays busy (one in flight: cost 2ms); the slow one
        // idles. 20ms × exp(-t/10s) < 2ms after t = 10s × ln 10 ≈ 23s.
        servers[0].latency.observe(1000.0, 40 * S);
        let _busy = servers[0].begin(1).unwrap();
        assert_eq!(first_at(&sel, 20 * S), 1);
        assert_eq!(first_at(&sel, 25 * S), 2);
    }

    #[test]
    fn backups_only_when_no_primary_is_usable() {
        let (sel, servers) = ewma_sel(&[(1, 1, false), (2, 1, false), (3, 1, true)]);
        servers[0].latency.observe(50_000.0, S);
        servers[1].latency.observe(50_000.0, S);
        servers[2].latency.observe(100.0, S); // fastest, but a backup
        let mut it = sel.iter_at(S, 1);
        let mut order = vec![];
        while let Some(b) = it.next() {
            order.push(port_of(b));
        }
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], 3, "{order:?}");
        servers[0].set_drained(true);
        servers[1].set_drained(true);
        assert_eq!(first_at(&sel, S), 3);
    }

    #[test]
    fn state_survives_a_rebuild() {
        let spec = [(1, 1, false), (2, 1, false)];
        let (set, servers) = backends(&spec);
        servers[0].latency.observe(30_000.0, S);
        servers[1].latency.observe(1000.0, S);
        let again = Arc::new(Ewma::build(&set));
        assert_eq!(port_of(again.iter_at(S, 3).next().unwrap()), 2);
    }

    #[test]
    fn in_a_simulation_the_slow_server_gets_almost_nothing() {
        let (sel, servers) = ewma_sel(&[(1, 1, false), (2, 1, false)]);
        // 1ms and 20ms, 8 requests always outstanding.
        let counts = simulate(&sel, &servers, &[1000, 20_000], 8, 5000, 11);
        assert!(counts[1] < 5000 / 100, "{counts:?}");
    }

    #[test]
    fn in_a_simulation_weights_split_equal_servers_under_load() {
        let (sel, servers) = ewma_sel(&[(1, 3, false), (2, 1, false)]);
        let counts = simulate(&sel, &servers, &[1000, 1000], 16, 8000, 5);
        let share = counts[0] as f64 / 8000.0;
        assert!((0.65..0.9).contains(&share), "weight 3 of 4: {counts:?}");
    }

    #[test]
    fn attempts_feed_the_estimate() {
        let (_set, servers) = backends(&[(1, 1, false)]);
        let s = &servers[0];
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
        let (_set, servers) = backends(&[(1, 1, false), (2, 1, false)]);
        let s = &servers[0];
        s.set_latency_params(Duration::from_secs(10), Duration::from_millis(1));
        s.begin(now_ms()).unwrap().fail(true); // max_fails 1: marked failed
        assert_eq!(s.ewma_ms(), Some(10.0));
        let mut probe = s.begin_last_resort().unwrap();
        probe.record_response(Duration::from_micros(1500));
        probe.succeed();
        drop(probe);
        assert_eq!(s.ewma_ms(), Some(1.5));
    }

    #[test]
    fn the_estimate_survives_a_reload_and_takes_new_settings() {
        let doc = "pools:\n  p:\n    selection: ewma\n    decay: 2s\n    servers: [{addr: \"127.0.0.1:1\"}, {addr: \"127.0.0.1:2\"}]\n";
        let cfg = crate::config::from_str(doc, &|_| None).unwrap().config;
        let pool = crate::pool::Pool::new(cfg.pools[0].clone(), &Default::default());
        pool.servers[0].latency.observe(30_000.0, now_us());
        pool.servers[1].latency.observe(500.0, now_us());
        for _ in 0..5 {
            assert_eq!(pool.select(&[]).unwrap().server().addr.port(), 2);
        }
        let registry: crate::pool::ServerRegistry = pool
            .servers
            .iter()
            .map(|s| (("p".to_string(), s.addr), Arc::clone(s)))
            .collect();
        let doc = doc.replace("decay: 2s", "decay: 5s");
        let cfg = crate::config::from_str(&doc, &|_| None).unwrap().config;
        let reloaded = crate::pool::Pool::new(cfg.pools[0].clone(), &registry);
        assert!(Arc::ptr_eq(&reloaded.servers[0], &pool.servers[0]));
        assert_eq!(reloaded.servers[0].ewma_ms(), Some(30.0));
        assert_eq!(reloaded.servers[0].latency.decay(), 5e6);
        assert_eq!(reloaded.select(&[]).unwrap().server().addr.port(), 2);
        // A retry skips the tried server even though it is the cheapest.
        let tried = [reloaded.servers[1].addr];
        assert_eq!(reloaded.select(&tried).unwrap().server().addr.port(), 1);
    }
}
