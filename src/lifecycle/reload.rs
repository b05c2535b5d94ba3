//! SIGHUP: re-read the config file and swap routes and pools in place.
//!
//! Pingora leaves SIGHUP unused. The listener runs as a Pingora background
//! service, so it exists in the daemonized process. A reload validates the
//! whole file first; any error keeps the running generation. On success the
//! new [`Runtime`] is built from the running one (servers that stay keep
//! their in-flight counts and health), swapped in atomically, and servers that
//! left are marked removed: they get no new requests while their in-flight
//! ones finish. Settings that only a new process can apply (sockets, Pingora
//! server settings, the access log target) are reported as needing an
//! upgrade and keep their running values.

use crate::config::{self, AccessLogFormat, AccessLogTarget, ErrorLogConfig, Loaded};
use crate::lifecycle::discovery::{self, Primed};
use crate::lifecycle::notify;
use crate::runtime::{self, retry_limit, Runtime, SharedRuntime};
use crate::status::Reloads;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// What the process was started with that a reload cannot change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fixed {
    /// Pingora's settings as written in the file (before `-d`/`-u` merged in).
    pingora: serde_yaml::Mapping,
    listen: Vec<SocketAddr>,
    access_log: AccessLogTarget,
    access_log_format: AccessLogFormat,
    error_log: ErrorLogConfig,
    /// Pingora's retry ceiling as the process computed it at start.
    retry_limit: usize,
}

impl Fixed {
    /// Records the settings of a loaded file.
    pub(crate) fn of(loaded: &Loaded) -> Fixed {
        Fixed {
            pingora: pingora_settings(&loaded.server),
            listen: crate::config::listen_addrs(&loaded.config.listen),
            access_log: loaded.config.access_log.clone(),
            access_log_format: loaded.config.access_log_format,
            error_log: loaded.config.error_log.clone(),
            retry_limit: retry_limit(&loaded.config, loaded.server.max_retries),
        }
    }

    /// One line per setting that differs in `next`: `key: old -> new`.
    fn changes(&self, next: &Fixed) -> Vec<String> {
        let mut out = vec![];
        let added = next
            .pingora
            .keys()
            .filter(|k| !self.pingora.contains_key(*k));
        for key in self.pingora.keys().chain(added) {
            let (a, b) = (self.pingora.get(key), next.pingora.get(key));
            if a != b {
                out.push(format!(
                    "{}: {} -> {}",
                    short(key),
                    a.map_or("(unset)".into(), short),
                    b.map_or("(unset)".into(), short)
                ));
            }
        }
        if self.listen != next.listen {
            out.push(format!(
                "listen: {} -> {}",
                addrs(&self.listen),
                addrs(&next.listen)
            ));
        }
        if self.access_log_format != next.access_log_format {
            out.push(format!(
                "access_log_format: {:?} -> {:?}",
                self.access_log_format, next.access_log_format
            ));
        }
        if self.access_log != next.access_log {
            out.push(format!(
                "access_log: {} -> {}",
                log_target(&self.access_log),
                log_target(&next.access_log)
            ));
        }
        if self.error_log != next.error_log {
            out.push(format!(
                "error_log: {:?} -> {:?}",
                self.error_log, next.error_log
            ));
        }
        if next.retry_limit > self.retry_limit {
            // A larger pool or retry.tries than the process was started for:
            // Pingora would cut retries short.
            out.push(format!(
                "retry limit (largest pool or retry.tries): {} -> {}",
                self.retry_limit, next.retry_limit
            ));
        }
        out
    }
}

fn pingora_settings(conf: &ServerConf) -> serde_yaml::Mapping {
    match serde_yaml::to_value(conf) {
        Ok(serde_yaml::Value::Mapping(m)) => m,
        _ => Default::default(),
    }
}

/// A YAML value on one line.
fn short(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Null => "(unset)".into(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .replace('\n', " "),
    }
}

fn addrs(list: &[SocketAddr]) -> String {
    let v: Vec<String> = list.iter().map(|a| a.to_string()).collect();
    format!("[{}]", v.join(", "))
}

fn log_target(t: &AccessLogTarget) -> String {
    match t {
        AccessLogTarget::Stdout => "stdout".into(),
        AccessLogTarget::Off => "off".into(),
        AccessLogTarget::File(p) => p.display().to_string(),
    }
}

/// What a successful reload changed, for the summary log line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    /// The generation now running.
    generation: u64,
    /// Pool count in the new generation.
    pools: usize,
    /// Route count in the new generation.
    routes: usize,
    /// `pool/addr` of servers that are new.
    added: Vec<String>,
    /// `pool/addr` of servers that left and now drain.
    removed: Vec<String>,
    /// `pool/addr` of servers whose settings changed.
    changed: Vec<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "generation {} running: {} pools, {} routes; servers added: {}; removed (draining): {}; changed: {}",
            self.generation,
            self.pools,
            self.routes,
            list(&self.added),
            list(&self.removed),
            list(&self.changed)
        )
    }
}

/// Replaces `shared` with a runtime built from `loaded` and the first DNS
/// answers of its new discovery sources. Servers of the old runtime that
/// are not in the new one are marked removed after the swap (before it, a
/// request still on the old runtime could find a pool empty).
fn apply(shared: &SharedRuntime, loaded: Loaded, primed: Primed) -> Summary {
    // No discovery update may land between reading the old runtime and
    // storing the new one: it would be lost.
    let _writer = runtime::writer();
    let old = shared.load_full();
    let mut next = Runtime::build(loaded.config, Some(&old), old.generation + 1);
    primed.seed(&mut next);
    let next = Arc::new(next);
    let before = old.servers();
    let after = next.servers();
    let mut summary = Summary {
        generation: next.generation,
        pools: next.pools.len(),
        routes: next.config.routes.len(),
        ..Summary::default()
    };
    // The pools' own configs: their servers include those from DNS.
    let old_settings: HashMap<(String, SocketAddr), _> = old
        .pools
        .iter()
        .flat_map(|p| {
            let name = &p.config.name;
            p.config
                .servers
                .iter()
                .map(move |s| ((name.clone(), s.addr), s))
        })
        .collect();
    for pool in next.pools.iter().map(|p| &p.config) {
        for s in &pool.servers {
            let key = (pool.name.clone(), s.addr);
            match old_settings.get(&key) {
                None => summary.added.push(format!("{}/{}", pool.name, s.name)),
                Some(prev) if *prev != s => {
                    summary.changed.push(format!("{}/{}", pool.name, s.name))
                }
                Some(_) => {}
            }
        }
    }
    shared.store(Arc::clone(&next));
    // Servers added, raised max_conns, a longer queue: room for waiters.
    for pool in &next.pools {
        pool.wake_queue();
    }
    for (key, server) in &before {
        if !after.contains_key(key) {
            server.set_removed();
            summary.removed.push(format!("{}/{}", key.0, server.name));
        }
    }
    summary
}

/// Re-reads `path` and applies it, logging the outcome: every validation
/// error (one line each, nothing changes), every setting that needs an
/// upgrade (warn), and a summary line; the outcome is counted in `reloads`.
/// Returns the summary on success.
fn reload(
    path: &Path,
    shared: &SharedRuntime,
    fixed: &Fixed,
    reloads: &Reloads,
) -> Option<Summary> {
    let file = path.display();
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors.0 {
                log::error!("reload of {file}: {e}");
            }
            log::error!(
                "reload of {file} failed with {} error(s); still running generation {}",
                errors.0.len(),
                shared.load().generation
            );
            reloads.record(false);
            return None;
        }
    };
    for w in &loaded.warnings {
        log::warn!("reload of {file}: {w}");
    }
    for change in fixed.changes(&Fixed::of(&loaded)) {
        log::warn!(
            "reload of {file}: {change} requires an upgrade (fulcrum-upgrade or \
             systemctl reload fulcrum); the running value stays"
        );
    }
    // DNS lookups for new discovery sources, before the writer lock.
    let primed = discovery::prime(&loaded.config, Some(&shared.load()));
    let summary = apply(shared, loaded, primed);
    reloads.record(true);
    log::info!("reload of {file}: {summary}");
    Some(summary)
}

/// The background service that reloads on SIGHUP.
pub(crate) struct Reloader {
    path: PathBuf,
    runtime: SharedRuntime,
    fixed: Arc<Fixed>,
    reloads: Arc<Reloads>,
}

impl Reloader {
    /// Reloads `path` (an absolute path: a daemon runs in `/`) into `runtime`;
    /// `fixed` is what the process started with; outcomes are counted in
    /// `reloads`.
    pub(crate) fn new(
        path: PathBuf,
        runtime: SharedRuntime,
        fixed: Fixed,
        reloads: Arc<Reloads>,
    ) -> Self {
        Reloader {
            path,
            runtime,
            fixed: Arc::new(fixed),
            reloads,
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reloads are off: {e}");
                return;
            }
        };
        log::info!(
            "SIGHUP to pid {} reloads pools and routes from {}",
            std::process::id(),
            self.path.display()
        );
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    log::info!("SIGHUP: reloading {}", self.path.display());
                    notify::reloading(&format!("reloading {}", self.path.display()));
                    let (path, runtime, fixed, reloads) = (
                        self.path.clone(),
                        Arc::clone(&self.runtime),
                        Arc::clone(&self.fixed),
                        Arc::clone(&self.reloads),
                    );
                    // Loading resolves host names, and new discovery sources
                    // are looked up: keep that off the async thread.
                    let done = tokio::task::spawn_blocking(move || {
                        reload(&path, &runtime, &fixed, &reloads)
                    });
                    let status = match done.await {
                        Ok(Some(summary)) => format!("reloaded: {summary}"),
                        Ok(None) => format!(
                            "reload failed (see the log); still running generation {}",
                            self.runtime.load().generation
                        ),
                        Err(e) => {
                            log::error!("reload of {} failed: {e}", self.path.display());
                            format!("reload failed: {e}")
                        }
                    };
                    notify::reloaded(&status);
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_swap::ArcSwap;

    fn load(doc: &str) -> Loaded {
        config::from_str(doc, &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    const HEAD: &str = "threads: 2\nlisten: [\"127.0.0.1:8080\"]\n";

    fn doc(head: &str, servers: &[(&str, u32)]) -> String {
        let mut s = format!("{head}pools:\n  p:\n    servers:\n");
        for (a, w) in servers {
            s.push_str(&format!("      - {{ addr: \"{a}\", weight: {w} }}\n"));
        }
        s.push_str("routes:\n  - { prefix: /, pool: p }\n");
        s
    }

    fn shared(doc: &str) -> SharedRuntime {
        Arc::new(ArcSwap::from_pointee(Runtime::build(
            load(doc).config,
            None,
            1,
        )))
    }

    #[test]
    fn apply_keeps_state_marks_removed_and_reports() {
        let rt = shared(&doc(HEAD, &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)]));
        let kept = Arc::clone(&rt.load().pools[0].servers[0]);
        let gone = Arc::clone(&rt.load().pools[0].servers[1]);
        let in_flight = kept.begin(crate::pool::now_ms()).unwrap();
        let s = apply(
            &rt,
            load(&doc(HEAD, &[("127.0.0.1:1", 3), ("127.0.0.1:3", 1)])),
            Primed::default(),
        );
        assert_eq!(s.generation, 2);
        assert_eq!(s.added, vec!["p/127.0.0.1:3"]);
        assert_eq!(s.removed, vec!["p/127.0.0.1:2"]);
        assert_eq!(s.changed, vec!["p/127.0.0.1:1"]);
        let now = rt.load();
        assert!(Arc::ptr_eq(&now.pools[0].servers[0], &kept));
        assert_eq!(kept.in_flight(), 1);
        assert_eq!(kept.weight(), 3);
        assert!(gone.is_removed() && !kept.is_removed());
        drop(in_flight);
        assert_eq!(kept.in_flight(), 0);
    }

    #[test]
    fn fixed_settings_changes_are_listed() {
        let a = Fixed::of(&load(&doc(HEAD, &[("127.0.0.1:1", 1)])));
        let b = Fixed::of(&load(&doc(
            "threads: 4\nlisten: [\"127.0.0.1:8081\"]\naccess_log: off\n",
            &[("127.0.0.1:1", 1)],
        )));
        assert!(a.changes(&a).is_empty());
        let many: Vec<(String, u32)> = (1..=20).map(|p| (format!("127.0.0.1:{p}"), 1)).collect();
        let many: Vec<(&str, u32)> = many.iter().map(|(a, w)| (a.as_str(), *w)).collect();
        let big = Fixed::of(&load(&doc(HEAD, &many)));
        assert_eq!(
            a.changes(&big),
            vec!["retry limit (largest pool or retry.tries): 16 -> 20"]
        );
        assert!(big.changes(&a).is_empty());
        let c = b.changes(&a);
        assert_eq!(
            c,
            vec![
                "threads: 4 -> 2",
                "listen: [127.0.0.1:8081] -> [127.0.0.1:8080]",
                "access_log: off -> stdout",
            ]
        );
    }

    #[test]
    fn summary_line() {
        let s = Summary {
            generation: 3,
            pools: 1,
            routes: 2,
            added: vec!["p/a".into()],
            ..Summary::default()
        };
        assert_eq!(
            s.to_string(),
            "generation 3 running: 1 pools, 2 routes; servers added: p/a; removed (draining): none; changed: none"
        );
    }
}
