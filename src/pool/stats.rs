//! Per-server counters for the metrics and the status page: what happened,
//! as opposed to what a server carries now (`load.rs`), which is what the
//! selections weigh. Everything on the request path is an atomic add or a
//! lock-free histogram observation; the only lock guards the
//! requests-per-second history, which just the once-a-second sampler and
//! status readers touch.

use prometheus::core::Collector;
use prometheus::proto::Metric;
use prometheus::{Histogram, HistogramOpts};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// How many one-second samples of requests per second a server keeps.
pub const HISTORY_LEN: usize = 60;

/// Bucket bounds (seconds) of the upstream response time histogram.
pub const RESPONSE_TIME_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bucket bounds (seconds) of the upstream connect time histogram.
pub const CONNECT_TIME_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How an attempt on a server failed, as the metrics break failures down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be established (refused, reset, unreachable).
    Connect,
    /// Connect, read or write timeout.
    Timeout,
    /// The server closed or answered something that is not HTTP.
    Invalid,
    /// A status listed in `retry.on`.
    Status,
}

impl FailureKind {
    /// Every kind, in the order of [`Stats::failures_by_kind`].
    pub const ALL: [FailureKind; 4] = [
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::Invalid,
        FailureKind::Status,
    ];

    /// The label value used in metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Invalid => "invalid",
            FailureKind::Status => "status",
        }
    }
}

/// Label values of the status classes counted by [`Stats::responses`].
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`STATUS_CLASSES`] for a status code, if it is 100..=599.
pub fn status_class(status: u16) -> Option<usize> {
    matches!(status, 100..=599).then(|| status as usize / 100 - 1)
}

/// Requests per second over the last minute, one sample per second.
#[derive(Debug, Default)]
struct History {
    last_requests: Option<u64>,
    last_at_ms: u64,
    rates: VecDeque<f64>,
}

/// Counters of one server for metrics and the status page.
pub struct Stats {
    /// Attempts sent to the server, and those that failed (of any kind,
    /// whether or not the kind is known).
    attempts: AtomicU64,
    failed_attempts: AtomicU64,
    responses: [AtomicU64; 5],
    failures: [AtomicU64; 4],
    retries: AtomicU64,
    response_time: Histogram,
    connect_time: Histogram,
    history: Mutex<History>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

fn histogram(name: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, name).buckets(buckets.to_vec()))
        .expect("constant histogram options are valid")
}

impl Stats {
    /// Zeroed counters.
    pub fn new() -> Stats {
        Stats {
            attempts: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            responses: Default::default(),
            failures: Default::default(),
            retries: AtomicU64::new(0),
            response_time: histogram("response_time_seconds", RESPONSE_TIME_BUCKETS),
            connect_time: histogram("connect_time_seconds", CONNECT_TIME_BUCKETS),
            history: Mutex::new(History::default()),
        }
    }

    /// An attempt starts on the server.
    pub(crate) fn count_attempt(&self) {
        self.attempts.fetch_add(1, Relaxed);
    }

    /// An attempt failed, whatever the way (see also [`Stats::count_failure`]).
    pub(crate) fn count_failed_attempt(&self) {
        self.failed_attempts.fetch_add(1, Relaxed);
    }

    /// Attempts sent to this server since start.
    pub fn requests(&self) -> u64 {
        self.attempts.load(Relaxed)
    }

    /// Failed attempts since start.
    pub fn failures(&self) -> u64 {
        self.failed_attempts.load(Relaxed)
    }

    /// The server answered with `status` after `elapsed` (attempt start to
    /// response header). Only final headers are timed, not `100 Continue`.
    pub fn count_response(&self, status: u16, elapsed: Duration) {
        if let Some(i) = status_class(status) {
            self.responses[i].fetch_add(1, Relaxed);
        }
        if status >= 200 || status == 101 {
            self.response_time.observe(elapsed.as_secs_f64());
        }
    }

    /// A new connection to the server was established after `elapsed`.
    pub fn count_connect(&self, elapsed: Duration) {
        self.connect_time.observe(elapsed.as_secs_f64());
    }

    /// An attempt failed in a known way: counted by kind.
    pub fn count_failure(&self, kind: FailureKind) {
        self.failures[kind as usize].fetch_add(1, Relaxed);
    }

    /// An attempt that retries a request which failed on another server.
    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// Responses by status class, indexed like [`STATUS_CLASSES`].
    pub fn responses(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses[i].load(Relaxed))
    }

    /// Failures by kind, indexed like [`FailureKind::ALL`].
    pub fn failures_by_kind(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.failures[i].load(Relaxed))
    }

    /// Retry attempts sent to this server.
    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    /// The response time histogram as an unlabelled metric.
    pub fn response_time_metric(&self) -> Metric {
        single_metric(&self.response_time)
    }

    /// The connect time histogram as an unlabelled metric.
    pub fn connect_time_metric(&self) -> Metric {
        single_metric(&self.connect_time)
    }

    /// Takes a sample of the request counter (`requests` attempts so far at
    /// `now_ms`) and records the rate since the previous sample.
    pub fn sample(&self, requests: u64, now_ms: u64) {
        let Ok(mut h) = self.history.lock() else {
            return;
        };
        if let Some(prev) = h.last_requests {
            let secs = now_ms.saturating_sub(h.last_at_ms) as f64 / 1000.0;
            if secs > 0.0 {
                let rate = requests.saturating_sub(prev) as f64 / secs;
                if h.rates.len() == HISTORY_LEN {
                    h.rates.pop_front();
                }
                h.rates.push_back(rate);
            }
        }
        h.last_requests = Some(requests);
        h.last_at_ms = now_ms;
    }

    /// Requests per second, oldest first (at most [`HISTORY_LEN`] samples).
    pub fn rate_history(&self) -> Vec<f64> {
        self.history
            .lock()
            .map(|h| h.rates.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The latest requests-per-second sample (0 before the first one).
    pub fn requests_per_second(&self) -> f64 {
        self.history
            .lock()
            .ok()
            .and_then(|h| h.rates.back().copied())
            .unwrap_or(0.0)
    }
}

fn single_metric(h: &Histogram) -> Metric {
    h.collect()
        .pop()
        .and_then(|mut mf| mf.take_metric().pop())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_kinds() {
        assert_eq!(status_class(99), None);
        assert_eq!(status_class(100), Some(0));
        assert_eq!(status_class(204), Some(1));
        assert_eq!(status_class(599), Some(4));
        assert_eq!(status_class(600), None);
        let s = Stats::new();
        s.count_response(503, Duration::from_millis(3));
        s.count_failure(FailureKind::Status);
        s.count_failure(FailureKind::Connect);
        assert_eq!(s.responses(), [0, 0, 0, 0, 1]);
        assert_eq!(s.failures_by_kind(), [1, 0, 0, 1]);
        let m = s.response_time_metric();
        assert_eq!(m.get_histogram().get_sample_count(), 1);
    }

    #[test]
    fn history_keeps_a_minute_of_rates() {
        let s = Stats::new();
        s.sample(0, 1000);
        assert!(s.rate_history().is_empty());
        s.sample(10, 2000);
        s.sample(15, 2500);
        assert_eq!(s.rate_history(), vec![10.0, 10.0]);
        for i in 0..100 {
            s.sample(15, 3000 + i * 1000);
        }
        assert_eq!(s.rate_history().len(), HISTORY_LEN);
        assert_eq!(s.requests_per_second(), 0.0);
    }
}
