//! Slow start (`slow_start: 30s`): a server that becomes usable again
//! takes a share of traffic that grows over that time, instead of its full
//! share at once, so that a service that just restarted (cold caches, JIT,
//! connection pools still empty) is not flooded while it warms up.
//!
//! Its effective weight ramps linearly from [`START_PERMILLE`] (1/10) of its
//! weight to all of it. Why 1/10 rather than 0: a warming server must still
//! get a few requests at once, so that it is measured (latency, passive
//! health) and its caches start warming; a zero weight would also make
//! least_conn's in-flight/weight undefined. It is the floor Envoy uses
//! (`min_weight_percent`, 10 by default).
//!
//! What counts as becoming usable is decided by the server's other states
//! (`server.rs`): health restored by active or passive health, added by a
//! reload, undrained, or no longer `down` after a reload. Never at process
//! start or after a binary upgrade: those servers were serving before, so
//! nothing about them is new.
//!
//! Times are ms on the [`now_ms`](crate::clock::now_ms) clock, 0 meaning
//! "not warming"; functions take `now` so that tests can choose it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A full weight, in thousandths.
pub(crate) const FULL_PERMILLE: u64 = 1000;
/// Where the ramp starts, in thousandths of the weight: 1/10.
pub(crate) const START_PERMILLE: u64 = 100;

/// The share of its weight, in thousandths, that a server gets `elapsed_ms`
/// into a ramp of `window_ms`: linear from [`START_PERMILLE`] to
/// [`FULL_PERMILLE`], full once the window is over (or without one).
pub(crate) fn ramp_permille(elapsed_ms: u64, window_ms: u64) -> u64 {
    if elapsed_ms >= window_ms {
        return FULL_PERMILLE;
    }
    START_PERMILLE + (FULL_PERMILLE - START_PERMILLE) * elapsed_ms / window_ms
}

/// One server's slow start: its window from the config, and when its
/// current ramp began.
pub(crate) struct SlowStart {
    window_ms: AtomicU64,
    /// Start of the running ramp; 0: none (full weight).
    since_ms: AtomicU64,
}

impl SlowStart {
    /// Off, not warming.
    pub(super) fn new() -> SlowStart {
        SlowStart {
            window_ms: AtomicU64::new(0),
            since_ms: AtomicU64::new(0),
        }
    }

    /// Takes `slow_start` from the config (start and reload). A ramp in
    /// progress continues over the new window; 0 ends it.
    pub(super) fn configure(&self, window: Duration) {
        self.window_ms.store(window.as_millis() as u64, Relaxed);
    }

    /// The configured window.
    pub(super) fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms.load(Relaxed))
    }

    /// The server became usable at `now`: a ramp starts (when configured).
    pub(super) fn begin(&self, now: u64) {
        if self.window_ms.load(Relaxed) > 0 {
            self.since_ms.store(now.max(1), Relaxed);
        }
    }

    /// Whether a ramp may be running: one load, so that a selection pays
    /// nothing more for servers that are not warming.
    pub(super) fn maybe_warming(&self) -> bool {
        self.since_ms.load(Relaxed) != 0
    }

    /// The share of its weight the server gets at `now`, in thousandths.
    pub(super) fn permille(&self, now: u64) -> u64 {
        let since = self.since_ms.load(Relaxed);
        if since == 0 {
            return FULL_PERMILLE;
        }
        let p = ramp_permille(now.saturating_sub(since), self.window_ms.load(Relaxed));
        if p == FULL_PERMILLE {
            // Over: later reads take the fast path. A ramp begun meanwhile
            // by another thread is left alone.
            let _ = self.since_ms.compare_exchange(since, 0, Relaxed, Relaxed);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_is_linear_from_a_tenth_to_full() {
        let w = 30_000;
        assert_eq!(ramp_permille(0, w), 100);
        assert_eq!(ramp_permille(7_500, w), 325);
        assert_eq!(ramp_permille(15_000, w), 550);
        assert_eq!(ramp_permille(22_500, w), 775);
        assert_eq!(ramp_permille(29_999, w), 999);
        assert_eq!(ramp_permille(30_000, w), 1000);
        assert_eq!(ramp_permille(u64::MAX, w), 1000);
        assert_eq!(ramp_permille(0, 0), 1000, "no window: full at once");
        // Never decreasing, step by step.
        let mut last = 0;
        for t in (0..=w).step_by(7) {
            let p = ramp_permille(t, w);
            assert!(p >= last && (100..=1000).contains(&p), "{t}: {p}");
            last = p;
        }
        // The largest window does not overflow.
        let hour = 3_600_000;
        assert_eq!(ramp_permille(hour / 2, hour), 550);
    }

    #[test]
    fn a_ramp_runs_once_begun_and_ends_by_itself() {
        let s = SlowStart::new();
        s.begin(1_000);
        assert!(!s.maybe_warming(), "off without a window");
        assert_eq!(s.permille(1_000), 1000);
        s.configure(Duration::from_secs(10));
        assert_eq!(s.permille(1_000), 1000, "configuring alone starts nothing");
        s.begin(1_000);
        assert!(s.maybe_warming());
        assert_eq!(s.permille(1_000), 100);
        assert_eq!(s.permille(6_000), 550);
        // A clock read just before the ramp began counts as its start.
        assert_eq!(s.permille(999), 100);
        assert_eq!(s.permille(11_000), 1000);
        assert!(!s.maybe_warming(), "over: back on the fast path");
        // Restarted by a later event, and cut short by a reload to 0.
        s.begin(20_000);
        assert_eq!(s.permille(22_500), 325);
        s.configure(Duration::ZERO);
        assert_eq!(s.permille(22_500), 1000);
        assert!(!s.maybe_warming());
    }

    /// Whether `s` is ramping up now.
    fn warming(s: &crate::pool::Server) -> bool {
        s.warmth(crate::clock::now_ms()) < FULL_PERMILLE
    }

    #[test]
    fn what_makes_a_server_warm_up_and_what_does_not() {
        use crate::runtime::Runtime;
        let doc = |second: &str| {
            let text = format!(
                "pools:\n  p:\n    slow_start: 10s\n    servers:\n      - {{addr: \"127.0.0.1:1\"}}\n      - {{addr: \"127.0.0.1:2\"{second}}}\n      - {{addr: \"127.0.0.1:3\", slow_start: 0s}}\n"
            );
            crate::config::from_str(&text, &|_| None).unwrap().config
        };
        // At process start (and so after an upgrade) nothing is new.
        let rt = Runtime::build(doc(""), None, 1);
        let [a, b, c] = [0, 1, 2].map(|i| std::sync::Arc::clone(&rt.pools[0].servers[i]));
        assert!(!warming(&a) && !warming(&b) && !warming(&c));
        assert_eq!(a.slow_start(), Duration::from_secs(10));
        assert_eq!(
            c.slow_start(),
            Duration::ZERO,
            "the server's own value wins"
        );
        // Health restored by active checks.
        a.observe_check(false, Some("down".into()), 1, 1);
        assert!(!warming(&a), "going out is not becoming usable");
        a.observe_check(true, None, 1, 1);
        assert!(warming(&a));
        // Restored by passive health (a probe's success).
        b.begin(crate::clock::now_ms()).unwrap().fail(true);
        assert!(!warming(&b));
        let mut probe = b.begin_last_resort().unwrap();
        probe.succeed();
        drop(probe);
        assert!(warming(&b));
        // Undrained; not with slow_start: 0.
        c.set_drained(true);
        c.set_drained(false);
        assert!(!warming(&c));
        let rt = Runtime::build(doc(""), None, 1);
        let d = &rt.pools[0].servers[0];
        d.set_drained(true);
        assert!(!warming(d));
        d.set_drained(false);
        assert!(warming(d));
        // A reload: a server it adds warms up, one it keeps does not; one
        // marked up from `down` does.
        let rt = Runtime::build(doc(", down: true"), None, 1);
        let next = Runtime::build(doc(""), Some(&rt), 2);
        let kept = &next.pools[0].servers;
        assert!(std::sync::Arc::ptr_eq(&kept[0], &rt.pools[0].servers[0]));
        assert!(!warming(&kept[0]) && warming(&kept[1]) && !warming(&kept[2]));
        let text = "pools:\n  p:\n    slow_start: 10s\n    servers: [{addr: \"127.0.0.1:1\"}, {addr: \"127.0.0.1:9\"}]\n";
        let added = crate::config::from_str(text, &|_| None).unwrap().config;
        let next = Runtime::build(added, Some(&rt), 2);
        assert!(!warming(&next.pools[0].servers[0]));
        assert!(warming(&next.pools[0].servers[1]), "added by a reload");
    }
}
