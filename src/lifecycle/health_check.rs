//! Active health checks: a background service that probes every server of
//! every pool that has `health_check:`, all servers of a pool in parallel,
//! and applies rise/fall to the shared server state. It always works on the
//! current runtime, so pools added by a reload are checked too.
//!
//! Own code rather than Pingora's `HealthCheck`: we need the last error,
//! consecutive counts and "since" for the status pages, status ranges, and
//! state that survives reloads.

use crate::config::{CheckKind, HealthCheckConfig, PoolConfig, UpstreamProtocol};
use crate::net::upstream::peer;
use crate::pool::{Pool, Server};
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
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
    let how = Arc::new(Via::of(&pool.config));
    let mut set = tokio::task::JoinSet::new();
    for s in servers {
        let (hc, how) = (hc.clone(), Arc::clone(&how));
        set.spawn(async move {
            let result = check_once(&s, &hc, &how).await;
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

/// How a pool's servers are checked: as the proxy talks to them. Plain
/// HTTP/1.1 over TCP is written here (one connection per check); with TLS
/// or HTTP/2, the pool's settings go through Pingora's connector, as the
/// proxy's requests do (net/upstream/peer.rs).
pub struct Via(Box<PoolConfig>);

impl Via {
    /// How `pool`'s servers are checked.
    pub fn of(pool: &PoolConfig) -> Via {
        Via(Box::new(pool.clone()))
    }
}

/// One check within the configured timeout; `Err` carries a short reason.
pub async fn check_once(server: &Server, hc: &HealthCheckConfig, how: &Via) -> Result<(), String> {
    let probe = async {
        match &hc.kind {
            CheckKind::Http {
                path,
                expect_status,
            } if peer::pingora_connects(&how.0, server) => {
                let status = probe_via_pingora(server, &how.0, path).await?;
                expected(status, expect_status)
            }
            _ => probe(server, &hc.kind).await,
        }
    };
    match tokio::time::timeout(hc.timeout, probe).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}ms", hc.timeout.as_millis())),
    }
}

/// `GET path` through Pingora's connector with the pool's TLS and
/// protocol: the response's status. Each check opens its own connection
/// (dropped after), so a check never rides on a connection that requests
/// keep alive.
async fn probe_via_pingora(server: &Server, pool: &PoolConfig, path: &str) -> Result<u16, String> {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    let connector = CONNECTOR.get_or_init(|| Connector::new(None));
    let mut peer = peer::peer(server, None, pool);
    // Not from, nor back to, the pool that requests use.
    peer.options.idle_timeout = Some(std::time::Duration::ZERO);
    let (mut session, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut req =
        RequestHeader::build("GET", path.as_bytes(), None).map_err(|e| format!("request: {e}"))?;
    // HTTP/2 carries the host as :authority (Pingora makes it from Host,
    // which must then go: a server may refuse both, as nginx does).
    req.insert_header("Host", server.name.as_str())
        .map_err(|e| format!("request: {e}"))?;
    req.insert_header("User-Agent", "fulcrum-health-check")
        .map_err(|e| format!("request: {e}"))?;
    if pool.protocol != UpstreamProtocol::Http1 {
        let uri = format!("https://{}{path}", server.name);
        req.set_uri(
            uri.parse()
                .map_err(|_| format!("request: bad target {uri}"))?,
        );
        req.remove_header("Host");
    }
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(|e| format!("write: {e}"))?;
    session
        .finish_request_body()
        .await
        .map_err(|e| format!("write: {e}"))?;
    session
        .read_response_header()
        .await
        .map_err(|e| format!("read: {e}"))?;
    let status = session.response_header().map(|h| h.status.as_u16());
    session.shutdown().await;
    status.ok_or_else(|| "no response".to_string())
}

fn expected(status: u16, expect_status: &[(u16, u16)]) -> Result<(), String> {
    if expect_status
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    {
        Ok(())
    } else {
        Err(format!("status {status}"))
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
    expected(status, expect_status)
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
