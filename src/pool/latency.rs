//! One server's latency estimate: peak-EWMA of the time from attempt start
//! to response header, as in Linkerd and Finagle. Measuring is kept apart
//! from choosing (`select/ewma.rs` prices servers with it): the estimate is
//! shown for every pool, whatever its selection.
//!
//! A sample above the estimate replaces it at once (peak sensitivity: a
//! server that turns slow is avoided after one slow answer); a sample below
//! pulls it down with weight `1 - w`, `w = exp(-elapsed/decay)`, `elapsed`
//! being the time since the previous update, so the estimate forgets a spike
//! over about `decay`. Failures count as a high sample (a penalty).
//!
//! The state is two atomics (the estimate as `f64` bits and the time of its
//! last update) plus the pool's settings, shared by every thread and kept
//! across selector rebuilds and reloads with the `Server`. The estimate is
//! updated with a compare-and-swap loop, so no sample is lost; the timestamp
//! is a separate atomic, so two threads updating at the same moment may
//! weigh one sample with a slightly wrong `elapsed`. That only perturbs the
//! average slightly, never the peak rule.

use crate::config::{DEFAULT_DECAY, DEFAULT_RTT};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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
fn update(prev: f64, sample: f64, elapsed: f64, decay: f64) -> f64 {
    if sample >= prev {
        return sample;
    }
    let w = (-elapsed / decay).exp();
    prev * w + sample * (1.0 - w)
}

/// One server's latency estimate, lock-free. Times are µs on the
/// [`now_us`](crate::clock::now_us) clock; every method takes `now` so tests can
/// inject time.
pub(crate) struct LatencyEwma {
    /// The estimate in µs as `f64` bits, or [`NONE`].
    bits: AtomicU64,
    /// `now` of the last update or reset.
    stamp_us: AtomicU64,
    decay_us: AtomicU64,
    default_us: AtomicU64,
}

impl LatencyEwma {
    /// No samples yet, default settings.
    pub(crate) fn new(now: u64) -> Self {
        LatencyEwma {
            bits: AtomicU64::new(NONE),
            stamp_us: AtomicU64::new(now),
            decay_us: AtomicU64::new(DEFAULT_DECAY.as_micros() as u64),
            default_us: AtomicU64::new(DEFAULT_RTT.as_micros() as u64),
        }
    }

    /// Takes the pool's `decay` and `default_rtt`.
    pub(crate) fn configure(&self, decay: Duration, default_rtt: Duration) {
        self.decay_us
            .store((decay.as_micros() as u64).max(1), Relaxed);
        self.default_us
            .store(default_rtt.as_micros() as u64, Relaxed);
    }

    pub(super) fn decay(&self) -> f64 {
        self.decay_us.load(Relaxed).max(1) as f64
    }

    fn default_rtt(&self) -> f64 {
        self.default_us.load(Relaxed) as f64
    }

    /// Forgets every sample: the server starts again at `default_rtt`.
    pub(crate) fn reset(&self, now: u64) {
        self.bits.store(NONE, Relaxed);
        self.stamp_us.store(now, Relaxed);
    }

    /// The estimate in µs, `None` without samples.
    pub(crate) fn estimate_us(&self) -> Option<f64> {
        match self.bits.load(Relaxed) {
            NONE => None,
            b => Some(f64::from_bits(b)),
        }
    }

    /// The estimate, or `default_rtt` without samples.
    pub(crate) fn current_us(&self) -> f64 {
        self.estimate_us().unwrap_or_else(|| self.default_rtt())
    }

    /// What the selection uses at `now`: the estimate, decayed toward zero
    /// since its last update while the server is `idle` (nothing in flight).
    pub(crate) fn effective_us(&self, now: u64, idle: bool) -> f64 {
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
    pub(crate) fn observe(&self, sample: f64, now: u64) {
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
    pub(crate) fn restart_with(&self, sample: f64, now: u64) {
        self.change(now, |_, _| Some(sample));
    }

    /// The server took at least `lower` µs without answering (the attempt was
    /// abandoned): raises the estimate to `lower` if it is below, else no
    /// information.
    pub(crate) fn observe_at_least(&self, lower: f64, now: u64) {
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
    pub(crate) fn penalize(&self, elapsed: f64, now: u64) {
        let default = self.default_rtt();
        self.change(now, |prev, _| {
            let cur = prev.unwrap_or(default);
            let multiple = (cur.max(default) * FAILURE_FACTOR).min(MAX_PENALTY_US);
            Some(cur.max(elapsed).max(multiple))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
