//! The running configuration: routes and pools built from a validated
//! [`Config`], published through an `ArcSwap` so a reload replaces it
//! atomically and requests never take a lock to read it; and the retry
//! ceiling Pingora gets for a config ([`retry_limit`]), which the start
//! sets and a reload checks.

use crate::config::{Config, PoolConfig};
use crate::pool::discover::MAX_SERVERS;
use crate::pool::membership::{self, Joining};
use crate::pool::{Pool, ServerRegistry};
use crate::router::RouteStats;
use crate::router::{Route, Router};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// One generation of routes and pools. (`pub`: the health checker's
/// constructor takes the shared runtime.)
pub struct Runtime {
    /// The config it was built from.
    pub(crate) config: Config,
    /// Prefix routes.
    pub(crate) router: Router,
    /// The routes of listen addresses that have their own.
    pub(crate) listen_routers: Vec<(SocketAddr, Router)>,
    /// Pools, indexed like `config.pools`.
    pub(crate) pools: Vec<Arc<Pool>>,
    /// 1 for the first config, +1 per successful reload.
    pub(crate) generation: u64,
    /// Counters per route, indexed like `router.routes()`.
    pub(crate) route_stats: Vec<Arc<RouteStats>>,
}

/// The current [`Runtime`], shared by the proxy, status pages and health checks.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

impl Runtime {
    /// Builds a runtime; servers already present in `previous` (same pool
    /// name and address) keep their counters and health state.
    pub(crate) fn build(config: Config, previous: Option<&Runtime>, generation: u64) -> Runtime {
        let registry: ServerRegistry = previous.map(Runtime::servers).unwrap_or_default();
        let why = match previous {
            None => Joining::Start,
            Some(_) => Joining::Reload,
        };
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|pc| {
                let prev = previous.and_then(|p| p.pool(&pc.name)).map(|p| &**p);
                let mut pool = if pc.discovery.is_none() {
                    Pool::build(pc.clone(), &registry, why, None)
                } else {
                    let (servers, state) = membership::carry(pc, prev);
                    let pc = PoolConfig {
                        servers,
                        ..pc.clone()
                    };
                    Pool::build(pc, &registry, why, Some(state))
                };
                if let Some(old) = prev {
                    pool.keep_queue_of(old);
                }
                Arc::new(pool)
            })
            .collect();
        let router_of = |routes: &[crate::config::RouteConfig]| {
            Router::new(
                routes
                    .iter()
                    .map(|r| Route {
                        prefix: r.prefix.clone(),
                        pool: r.pool,
                        strip_prefix: r.strip_prefix,
                    })
                    .collect(),
            )
        };
        let router = router_of(&config.routes);
        let listen_routers = config
            .listen
            .iter()
            .filter_map(|l| Some((l.addr, router_of(l.routes.as_deref()?))))
            .collect();
        // A route keeps its counters over a reload if prefix and pool stay.
        let route_key = |rt: &Runtime, r: &Route| {
            let pool = rt.pools.get(r.pool).map(|p| p.name().to_string());
            (r.prefix.clone(), pool)
        };
        let mut rt = Runtime {
            config,
            router,
            listen_routers,
            pools,
            generation,
            route_stats: vec![],
        };
        rt.route_stats = rt
            .router
            .routes()
            .iter()
            .map(|r| {
                let key = route_key(&rt, r);
                previous
                    .and_then(|prev| {
                        let i = prev
                            .router
                            .routes()
                            .iter()
                            .position(|p| route_key(prev, p) == key)?;
                        prev.route_stats.get(i).cloned()
                    })
                    .unwrap_or_default()
            })
            .collect();
        rt
    }

    /// The router for a request that arrived on `local` (`None`: unknown).
    pub(crate) fn router_for(&self, local: impl FnOnce() -> Option<SocketAddr>) -> &Router {
        if self.listen_routers.is_empty() {
            return &self.router; // the usual case: no lookup of the address
        }
        let Some(local) = local() else {
            return &self.router;
        };
        self.listen_routers
            .iter()
            .find(|(a, _)| {
                a.port() == local.port() && (a.ip() == local.ip() || a.ip().is_unspecified())
            })
            .map_or(&self.router, |(_, r)| r)
    }

    /// The counters of `route`, a route of this runtime's router.
    pub(crate) fn route_stats_of(&self, route: &Route) -> Option<&Arc<RouteStats>> {
        let i = self
            .router
            .routes()
            .iter()
            .position(|r| std::ptr::eq(r, route))?;
        self.route_stats.get(i)
    }

    /// Every server by (pool name, address): the state a rebuild carries over.
    pub(crate) fn servers(&self) -> ServerRegistry {
        self.pools
            .iter()
            .flat_map(|p| {
                p.servers
                    .iter()
                    .map(|s| ((p.name().to_string(), s.addr), Arc::clone(s)))
            })
            .collect()
    }

    /// A copy sharing this runtime's pools, routes and counters, to build
    /// the next runtime from when only a pool's members change.
    pub(crate) fn fork(&self) -> Runtime {
        Runtime {
            config: self.config.clone(),
            router: self.router.clone(),
            listen_routers: self.listen_routers.clone(),
            pools: self.pools.clone(),
            generation: self.generation,
            route_stats: self.route_stats.clone(),
        }
    }

    /// Looks a pool up by name.
    pub(crate) fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name() == name)
    }
}

/// Held by whoever replaces the running runtime (a reload, a discovery
/// update) from reading it to storing the next one, so that neither builds
/// on a runtime the other is replacing and undoes its change. Requests
/// never take it.
pub(crate) fn writer() -> MutexGuard<'static, ()> {
    static WRITER: Mutex<()> = Mutex::new(());
    WRITER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pingora stops retrying after `max_retries` attempts; raise it so that our
/// own `retry.tries` policy (0: every server of the pool) is the limit.
pub(crate) fn retry_limit(config: &Config, max_retries: usize) -> usize {
    let largest_pool = config
        .pools
        .iter()
        // A pool from DNS may grow to the cap after the start.
        .map(|p| {
            p.servers.len()
                + if p.discovery.is_some() {
                    MAX_SERVERS
                } else {
                    0
                }
        })
        .max()
        .unwrap_or(1);
    let largest_tries = config
        .pools
        .iter()
        .map(|p| p.retry.tries as usize)
        .max()
        .unwrap_or(1);
    max_retries.max(largest_pool).max(largest_tries)
}
