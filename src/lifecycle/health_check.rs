//! Active health checks: a background service that probes every server of
//! every pool that has `health_check:`, all servers of a pool in parallel,
//! and applies rise/fall to the shared server state. It always works on the
//! current runtime, so pools added by a reload are checked too.
//!
//! Own code rather than Pingora's `HealthCheck`: we need the last error,
//! consecutive counts and "since" for the status pages, status ranges, and
//! state that survives reloads.

use crate::config::{CheckKind, HealthCheckConfig};
use crate::pool::{Pool, Server};
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Granularity of the scheduler; intervals are rounded up to it.
const TICK: Duration = Duration::from_millis(50);

/// The background service running all active checks.
pub struct HealthChecker {
    runtime: SharedRuntime,
}

impl HealthChecker {
    /// Checks the pools of whatever runtime is current.
    pub fn new(runtime: SharedRuntime) -> Self {
        HealthChecker { runtime }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Next due time per pool name; a round in progress is not restarted.
        let mut due: HashMap<String, Instant> = HashMap::new();
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            let rt = self.runtime.load_full();
            let now = Instant::now();
            for pool in &rt.pools {
                let Some(hc) = pool.config.health_check.clone() else {
                    continue;
                };
                let name = pool.name().to_string();
                if running.get(&name).is_some_and(|h| !h.is_finished()) {
                    continue;
                }
                if due.get(&name).is_some_and(|t| now < *t) {
                    continue;
                }
                due.insert(name.clone(), now + hc.interval);
                let servers: Vec<Arc<Server>> = pool
                    .servers
                    .iter()
                    .filter(|s| !s.is_down())
                    .cloned()
                    .collect();
                let round = check_round(Arc::clone(pool), servers, hc);
                running.insert(name, tokio::spawn(round));
            }
            running.retain(|_, h| !h.is_finished());
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => {
                    for h in running.values() {
                        h.abort();
                    }
                    return;
                }
            }
        }
    }
}

/// Checks all servers of one pool concurrently and applies the results.
async fn check_round(pool: Arc<Pool>, servers: Vec<Arc<Server>>, hc: HealthCheckConfig) {
    let mut set = tokio::task::JoinSet::new();
    for s in servers {
        let hc = hc.clone();
        set.spawn(async move {
            let result = check_once(&s, &hc).await;
            (s, result)
        });
    }
    while let Some(joined) = set.join_next().await {
        let Ok((server, result)) = joined else {
            continue;
        };
        let (ok, err) = match result {
            Ok(()) => (true, None),
            Err(e) => (false, Some(e)),
        };
        let reason = err.clone();
        if let Some(healthy) = server.observe_check(ok, err, hc.rise, hc.fall) {
            if healthy {
                log::warn!(
                    "pool {}: server {} is healthy again ({} consecutive successful checks)",
                    pool.name(),
                    server.name,
                    hc.rise
                );
                // Requests queued while it was out may take it now.
                pool.wake_queue();
            } else {
                log::warn!(
                    "pool {}: server {} is unhealthy ({} consecutive failed checks; last: {})",
                    pool.name(),
                    server.name,
                    hc.fall,
                    reason.as_deref().unwrap_or("?")
                );
            }
        }
    }
}

/// One check within the configured timeout; `Err` carries a short reason.
pub async fn check_once(server: &Server, hc: &HealthCheckConfig) -> Result<(), String> {
    match tokio::time::timeout(hc.timeout, probe(server, &hc.kind)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}ms", hc.timeout.as_millis())),
    }
}

async fn probe(server: &Server, kind: &CheckKind) -> Result<(), String> {
    let mut stream = TcpStream::connect(server.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let CheckKind::Http {
        path,
        expect_status,
    } = kind
    else {
        return Ok(());
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fulcrum-health-check\r\nConnection: close\r\n\r\n",
        server.name
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 256];
    let mut len = 0;
    // The status line is all we need.
    while !buf[..len].contains(&b'\n') && len < buf.len() {
        let n = stream
            .read(&mut buf[len..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let line = String::from_utf8_lossy(&buf[..len]);
    let status = parse_status_line(&line).ok_or_else(|| {
        if len == 0 {
            "connection closed without a response".to_string()
        } else {
            "invalid HTTP response".to_string()
        }
    })?;
    if expect_status
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

fn parse_status_line(text: &str) -> Option<u16> {
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line() {
        assert_eq!(
            parse_status_line("HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status_line("HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH\r\n"), None);
    }
}
