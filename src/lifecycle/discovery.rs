//! Servers from DNS, kept current: one background service runs a task per
//! pool with `resolve:` or `discover:`, which looks the pool's source up
//! every interval and swaps in a new pool when the answer changes its
//! servers. The service follows the current runtime, as the health checker
//! does: a reload that changes or removes a pool's discovery aborts that
//! pool's task, with its lookup in flight and its resolver (no task
//! outlives its config), and an answer that lands for a discovery a
//! reload has just replaced is dropped.
//!
//! A start or a reload first looks up, before serving, the pools whose
//! source has no answer yet ([`prime`]), so a pool does not start empty
//! while DNS answers; a failure there leaves the pool with its `ip:port`
//! servers (or, on reload, the servers it had) until the background gets
//! an answer.

use crate::config::{Config, DiscoveryConfig, DiscoverySource};
use crate::pool::discover::{lookup, next_wait, Answer, Discovery, Found, Resolver};
use crate::pool::membership::{self, Diff, Joining};
use crate::runtime::{self, Runtime, SharedRuntime};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How soon a reload's change of discovery is picked up.
const TICK: Duration = Duration::from_millis(100);
/// Longest a start or a reload waits for its first answers.
const PRIME_TIMEOUT: Duration = Duration::from_secs(5);

/// The background service.
pub(crate) struct Discoverer {
    runtime: SharedRuntime,
}

impl Discoverer {
    /// Keeps the pools of whatever runtime is current up to date.
    pub(crate) fn new(runtime: SharedRuntime) -> Self {
        Discoverer { runtime }
    }
}

/// One pool's discovery as the service runs it: a task that looks up,
/// waits, and looks up again until it is aborted (dropping the watch).
struct Watch {
    config: DiscoveryConfig,
    state: Arc<Discovery>,
    task: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Also ends its resolver, which the task owns.
        self.task.abort();
    }
}

#[async_trait]
impl BackgroundService for Discoverer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut watches: HashMap<String, Watch> = HashMap::new();
        loop {
            let rt = self.runtime.load_full();
            // A pool gone, or whose discovery a reload changed.
            watches.retain(|name, w| {
                rt.pool(name).is_some_and(|p| {
                    p.config.discovery.as_ref() == Some(&w.config)
                        && p.discovery
                            .as_ref()
                            .is_some_and(|s| Arc::ptr_eq(s, &w.state))
                })
            });
            for pool in &rt.pools {
                let (Some(config), Some(state)) = (&pool.config.discovery, &pool.discovery) else {
                    continue;
                };
                let name = pool.name();
                if watches.contains_key(name) {
                    continue;
                }
                // An answer at hand (primed, or carried over a reload) is
                // fresh: the first lookup waits its turn.
                let first = match state.found() {
                    Some(_) => next_wait(config.interval, None),
                    None => Duration::ZERO,
                };
                let task = tokio::spawn(watch(
                    Arc::clone(&self.runtime),
                    name.to_string(),
                    config.clone(),
                    Arc::clone(state),
                    first,
                ));
                watches.insert(
                    name.to_string(),
                    Watch {
                        config: config.clone(),
                        state: Arc::clone(state),
                        task,
                    },
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// A pool's lookups, `first` from now, then each `interval` (or TTL) after
/// the start of the one before.
async fn watch(
    shared: SharedRuntime,
    pool: String,
    config: DiscoveryConfig,
    state: Arc<Discovery>,
    first: Duration,
) {
    tokio::time::sleep(first).await;
    let servers = || shared.load().pool(&pool).map_or(0, |p| p.servers.len());
    let resolver = loop {
        match Resolver::new(&config.resolvers) {
            Ok(r) => break r,
            Err(e) => {
                failed(&pool, &config, &state, servers(), e);
                tokio::time::sleep(next_wait(config.interval, None)).await;
            }
        }
    };
    loop {
        let started = tokio::time::Instant::now();
        let wait = once(&shared, &pool, &config, &state, &resolver).await;
        tokio::time::sleep_until(started + wait).await;
    }
}

/// One lookup of a pool and its outcome; returns the wait until the next.
async fn once(
    shared: &SharedRuntime,
    pool: &str,
    config: &DiscoveryConfig,
    state: &Arc<Discovery>,
    resolver: &Resolver,
) -> Duration {
    let last = state.found();
    let result = lookup(resolver, config, last.as_deref().map(Vec::as_slice)).await;
    let servers = || shared.load().pool(pool).map_or(0, |p| p.servers.len());
    match result {
        Ok(answer) => {
            answered(
                pool,
                config,
                state,
                &answer.found,
                answer.outside_allow,
                answer.over_cap,
            );
            if !answer.partial.is_empty() {
                failed(pool, config, state, servers(), answer.partial.join("; "));
            }
            if let Some(diff) = update(shared, pool, config, state, &answer.found) {
                log::info!("pool {pool}: DNS ({}): {}", source(config), describe(&diff));
            }
            next_wait(config.interval, answer.ttl)
        }
        Err(e) => {
            failed(pool, config, state, servers(), e);
            next_wait(config.interval, None)
        }
    }
}

/// Records a good answer, logging the end of a failure streak and what the
/// answer had to leave out.
fn answered(
    pool: &str,
    config: &DiscoveryConfig,
    state: &Discovery,
    found: &[Found],
    outside_allow: usize,
    over_cap: usize,
) {
    let before = state.report();
    let streak = state.succeeded(found.to_vec(), outside_allow, over_cap);
    if streak > 0 {
        log::info!(
            "pool {pool}: DNS ({}) answers again after {streak} failed lookup(s)",
            source(config)
        );
    }
    if outside_allow > 0 && outside_allow as u64 != before.outside_allow {
        log::warn!(
            "pool {pool}: DNS ({}): {outside_allow} address(es) outside allow ignored",
            source(config)
        );
    }
    if over_cap > 0 && over_cap as u64 != before.over_cap {
        log::warn!(
            "pool {pool}: DNS ({}) gave {} addresses; the first {} are servers (primaries first, then by address), {over_cap} ignored",
            source(config),
            found.len() + over_cap,
            found.len()
        );
    }
}

/// Records a failed lookup; the pool keeps its servers. Logged when a
/// streak starts, then once a minute.
fn failed(pool: &str, config: &DiscoveryConfig, state: &Discovery, servers: usize, e: String) {
    let log = state.failed(e.clone());
    if log {
        log::warn!(
            "pool {pool}: DNS lookup ({}) failed: {e}; keeping its {servers} server(s) ({} failure(s) in a row)",
            source(config),
            state.consecutive_failures()
        );
    }
}

/// What a pool looks up, for log lines.
fn source(config: &DiscoveryConfig) -> String {
    let names = match &config.source {
        DiscoverySource::Srv { name, .. } => format!("SRV {name}"),
        DiscoverySource::Hosts(hosts) => hosts
            .iter()
            .map(|h| h.settings.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    };
    match config.resolvers.as_slice() {
        [] => names,
        list => {
            let r: Vec<String> = list.iter().map(|a| a.to_string()).collect();
            format!("{names} at {}", r.join(", "))
        }
    }
}

fn describe(d: &Diff) -> String {
    let list = |v: &[std::net::SocketAddr]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    format!(
        "servers joined: {}; left (draining): {}; changed: {}",
        list(&d.joined),
        list(&d.left),
        list(&d.changed)
    )
}

/// Makes `found` the servers of pool `name` in the running runtime, if
/// that pool still has this discovery (a reload may have replaced it while
/// the lookup ran) and the servers change. Servers that stay are the same
/// objects; servers that leave are marked removed after the swap (before
/// it, a request on the old runtime could find the pool empty), so they
/// finish their requests in flight and get no new ones.
pub(crate) fn update(
    shared: &SharedRuntime,
    name: &str,
    config: &DiscoveryConfig,
    state: &Arc<Discovery>,
    found: &[Found],
) -> Option<Diff> {
    let _writer = runtime::writer();
    let cur = shared.load_full();
    let i = cur.pools.iter().position(|p| p.name() == name)?;
    let pool = &cur.pools[i];
    let ours = pool.config.discovery.as_ref() == Some(config)
        && pool
            .discovery
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, state));
    if !ours {
        return None;
    }
    let members = membership::members(&cur.config.pools[i], found);
    let diff = membership::diff(&pool.config.servers, &members);
    if diff.is_empty() {
        return None;
    }
    let mut next = cur.fork();
    next.pools[i] = Arc::new(pool.with_members(members, Joining::Discovered));
    shared.store(Arc::new(next));
    for s in &pool.servers {
        if diff.left.contains(&s.addr) {
            s.set_removed();
        }
    }
    state.changed();
    Some(diff)
}

/// The first answers of a start or a reload, by pool name.
#[derive(Default)]
pub(crate) struct Primed(Vec<(String, Result<Answer, String>)>);

/// Looks up, all at once and within [`PRIME_TIMEOUT`], the pools of
/// `config` whose source has no answer in `running` to carry on. Runs on
/// a thread and runtime of its own: a start has no runtime yet, a reload
/// runs on a blocking thread of one.
pub(crate) fn prime(config: &Config, running: Option<&Runtime>) -> Primed {
    let todo: Vec<(String, DiscoveryConfig)> = config
        .pools
        .iter()
        .filter(|p| {
            let prev = running.and_then(|r| r.pool(&p.name)).map(|p| &**p);
            p.discovery.is_some() && !membership::has_answer(p, prev)
        })
        .map(|p| (p.name.clone(), p.discovery.clone().expect("filtered")))
        .collect();
    if todo.is_empty() {
        return Primed::default();
    }
    let lookups = async {
        let all = todo.iter().map(|(name, d)| async move {
            let result = async {
                let resolver = Resolver::new(&d.resolvers)?;
                match tokio::time::timeout(PRIME_TIMEOUT, lookup(&resolver, d, None)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {}s", PRIME_TIMEOUT.as_secs())),
                }
            }
            .await;
            (name.clone(), result)
        });
        futures_util::future::join_all(all).await
    };
    let done = std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(lookups))
                .map_err(|e| e.to_string())
        })
        .join()
    });
    match done {
        Ok(Ok(results)) => Primed(results),
        Ok(Err(e)) => {
            log::error!("DNS lookups before serving: cannot start a runtime: {e}");
            Primed::default()
        }
        Err(_) => {
            log::error!("DNS lookups before serving: the lookup thread panicked");
            Primed::default()
        }
    }
}

impl Primed {
    /// Gives the pools of `rt`, not yet running, their first answers.
    pub(crate) fn seed(self, rt: &mut Runtime) {
        for (name, result) in self.0 {
            let Some(i) = rt.pools.iter().position(|p| p.name() == name) else {
                continue;
            };
            let pool = Arc::clone(&rt.pools[i]);
            let (Some(config), Some(state)) = (&pool.config.discovery, &pool.discovery) else {
                continue;
            };
            match result {
                Ok(answer) => {
                    answered(
                        &name,
                        config,
                        state,
                        &answer.found,
                        answer.outside_allow,
                        answer.over_cap,
                    );
                    if !answer.partial.is_empty() {
                        failed(&name, config, state, 0, answer.partial.join("; "));
                    }
                    let members = membership::members(&rt.config.pools[i], &answer.found);
                    let why = if rt.generation == 1 {
                        Joining::Start
                    } else {
                        Joining::Reload
                    };
                    rt.pools[i] = Arc::new(pool.with_members(members, why));
                    log::info!(
                        "pool {name}: DNS ({}): {} server(s)",
                        source(config),
                        rt.pools[i].servers.len()
                    );
                }
                Err(e) => failed(&name, config, state, pool.servers.len(), e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::now_ms;
    use arc_swap::ArcSwap;

    const DOC: &str = "listen: [\"127.0.0.1:8080\"]\npools:\n  p:\n    max_fails: 2\n    discover: { srv: _p._tcp.example, resolvers: [\"127.0.0.1:53\"], interval: 1s }\n  q:\n    servers: [{ addr: \"127.0.0.1:9\" }]\nroutes:\n  - { prefix: /, pool: p }\n";

    fn config(doc: &str) -> Config {
        crate::config::from_str(doc, &|_| None).unwrap().config
    }

    fn found(list: &[(&str, u32, bool)]) -> Vec<Found> {
        list.iter()
            .map(|(a, weight, backup)| Found {
                addr: a.parse().unwrap(),
                from: 0,
                weight: *weight,
                backup: *backup,
            })
            .collect()
    }

    fn servers(shared: &SharedRuntime) -> Vec<(String, u32, bool)> {
        shared.load().pools[0]
            .servers
            .iter()
            .map(|s| (s.addr.to_string(), s.weight(), s.is_backup()))
            .collect()
    }

    #[test]
    fn an_answer_joins_keeps_and_drains_servers() {
        let shared: SharedRuntime =
            Arc::new(ArcSwap::from_pointee(Runtime::build(config(DOC), None, 1)));
        let rt = shared.load_full();
        assert!(rt.pools[0].servers.is_empty(), "no answer yet");
        let d = rt.pools[0].config.discovery.clone().unwrap();
        let state = Arc::clone(rt.pools[0].discovery.as_ref().unwrap());
        let other_pool = Arc::clone(&rt.pools[1]);

        let first = found(&[("10.0.0.1:80", 5, false), ("10.0.0.2:80", 1, true)]);
        let diff = update(&shared, "p", &d, &state, &first).unwrap();
        assert_eq!(diff.joined.len(), 2);
        assert_eq!(
            servers(&shared),
            [
                ("10.0.0.1:80".to_string(), 5, false),
                ("10.0.0.2:80".to_string(), 1, true)
            ]
        );
        let a = Arc::clone(&shared.load().pools[0].servers[0]);
        let b = Arc::clone(&shared.load().pools[0].servers[1]);
        let in_flight = a.begin(now_ms()).unwrap();
        let on_b = b.begin(now_ms()).unwrap();

        // b leaves, c joins, a stays (same state) with a new weight.
        let second = found(&[("10.0.0.1:80", 7, false), ("10.0.0.3:80", 1, false)]);
        let diff = update(&shared, "p", &d, &state, &second).unwrap();
        assert_eq!(
            (diff.joined.len(), diff.changed.len(), diff.left.len()),
            (1, 1, 1)
        );
        let now = shared.load();
        assert!(Arc::ptr_eq(&now.pools[0].servers[0], &a));
        assert_eq!((a.in_flight(), a.weight()), (1, 7));
        assert!(b.is_removed() && !a.is_removed());
        assert_eq!(b.in_flight(), 1, "b finishes what it has");
        assert!(
            Arc::ptr_eq(&now.pools[1], &other_pool),
            "other pools are untouched"
        );
        assert_eq!(now.generation, 1, "not a reload");
        drop((in_flight, on_b));
        assert_eq!((a.in_flight(), b.in_flight()), (0, 0));

        // The same answer changes nothing; one for a replaced discovery is dropped.
        assert!(update(&shared, "p", &d, &state, &second).is_none());
        let mut other = d.clone();
        other.interval = Some(std::time::Duration::from_secs(2));
        let third = found(&[("10.0.0.9:80", 1, false)]);
        assert!(update(&shared, "p", &other, &state, &third).is_none());
        assert!(update(&shared, "p", &d, &Arc::default(), &third).is_none());
        assert_eq!(state.report().changes, 2);
    }

    #[test]
    fn a_reload_carries_the_last_answer_under_new_settings() {
        let shared: SharedRuntime =
            Arc::new(ArcSwap::from_pointee(Runtime::build(config(DOC), None, 1)));
        let rt = shared.load_full();
        let d = rt.pools[0].config.discovery.clone().unwrap();
        let state = Arc::clone(rt.pools[0].discovery.as_ref().unwrap());
        let answer = found(&[("10.0.0.1:80", 1, false)]);
        state.succeeded(answer.clone(), 0, 0);
        update(&shared, "p", &d, &state, &answer).unwrap();
        let a = Arc::clone(&shared.load().pools[0].servers[0]);

        // Same SRV name, other interval and max_fails: nothing looked up again.
        let doc = DOC
            .replace("interval: 1s", "interval: 3s")
            .replace("max_fails: 2", "max_fails: 4");
        let next_config = config(&doc);
        let old = shared.load_full();
        assert!(prime(&next_config, Some(&old)).0.is_empty());
        let next = Runtime::build(next_config, Some(&old), 2);
        let p = &next.pools[0];
        assert!(Arc::ptr_eq(&p.servers[0], &a));
        assert!(Arc::ptr_eq(p.discovery.as_ref().unwrap(), &state));
        assert_eq!(p.config.servers[0].max_fails, 4);

        // Another SRV name: the servers stay until its first answer, the
        // state starts over.
        let moved = config(&DOC.replace("_p._tcp", "_other._tcp"));
        let next = Runtime::build(moved, Some(&old), 2);
        let p = &next.pools[0];
        assert!(Arc::ptr_eq(&p.servers[0], &a));
        assert!(!Arc::ptr_eq(p.discovery.as_ref().unwrap(), &state));
        assert!(p.discovery.as_ref().unwrap().found().is_none());
    }
}
