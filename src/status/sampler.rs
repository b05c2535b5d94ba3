//! A background service that samples every server's request counter once a
//! second, so the JSON status, the page and its charts can show requests per
//! second (also to a page rendered without JavaScript).

use crate::pool::now_ms;
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::Duration;

/// Time between two samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Samples the servers of whatever runtime is current.
pub struct RateSampler {
    runtime: SharedRuntime,
}

impl RateSampler {
    /// A sampler over `runtime`.
    pub fn new(runtime: SharedRuntime) -> Self {
        RateSampler { runtime }
    }

    /// Takes one sample of every server.
    pub fn sample_once(&self) {
        let rt = self.runtime.load();
        let now = now_ms();
        for pool in &rt.pools {
            for s in &pool.servers {
                s.stats.sample(s.requests(), now);
            }
        }
    }
}

#[async_trait]
impl BackgroundService for RateSampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sample_once(),
                _ = shutdown.changed() => return,
            }
        }
    }
}
