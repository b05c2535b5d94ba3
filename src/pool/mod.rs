//! A pool: its servers' shared state, a Pingora `LoadBalancer` for selection,
//! and the pool-wide policy (timeouts, retries, health checks).

mod ewma;
pub mod health_check;
mod least_conn;
mod p2c;
mod server;
mod stats;

pub use ewma::{Ewma, LatencyEwma, DEFAULT_DECAY, DEFAULT_RTT};
pub use least_conn::LeastConn;
pub use p2c::P2c;
pub use server::{now_ms, ActiveReport, InFlight, Server, Usability};
pub use stats::{status_class, FailureKind, Stats, HISTORY_LEN, STATUS_CLASSES};

use crate::config::{PoolConfig, Selection};
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::{BackendIter, BackendSelection, Random, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// The selection algorithm, wrapped around Pingora's `LoadBalancer`.
enum Selector {
    LeastConn(LoadBalancer<LeastConn>),
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Ewma(LoadBalancer<Ewma>),
    P2c(LoadBalancer<P2c>),
}

/// An upstream pool.
pub struct Pool {
    name: Arc<str>,
    /// Settings from the config.
    pub config: PoolConfig,
    /// Servers in config order, shared with in-flight requests.
    pub servers: Vec<Arc<Server>>,
    selector: Selector,
}

/// Shared server state by (pool, address), carried across reloads.
pub type ServerRegistry = HashMap<(String, SocketAddr), Arc<Server>>;

impl Pool {
    /// Builds a pool, reusing the state of servers already in `previous`
    /// (same pool name and address), so counts and health survive a reload.
    pub fn new(config: PoolConfig, previous: &ServerRegistry) -> Pool {
        let servers: Vec<Arc<Server>> = config
            .servers
            .iter()
            .map(|sc| match previous.get(&(config.name.clone(), sc.addr)) {
                Some(s) => {
                    s.apply(sc);
                    Arc::clone(s)
                }
                None => Server::new(sc),
            })
            .collect();
        for s in &servers {
            s.set_latency_params(config.decay, config.default_rtt);
        }
        let set: BTreeSet<Backend> = servers
            .iter()
            .map(|s| {
                let mut b = Backend::new_with_weight(&s.addr.to_string(), s.weight() as usize)
                    .expect("a SocketAddr always parses");
                b.ext.insert(Arc::clone(s));
                b
            })
            .collect();
        let selector = match config.selection {
            Selection::LeastConn => Selector::LeastConn(load_balancer(set)),
            Selection::RoundRobin => Selector::RoundRobin(load_balancer(set)),
            Selection::Random => Selector::Random(load_balancer(set)),
            Selection::Ewma => Selector::Ewma(load_balancer(set)),
            Selection::P2c => Selector::P2c(load_balancer(set)),
        };
        Pool {
            name: config.name.as_str().into(),
            config,
            servers,
            selector,
        }
    }

    /// Pool name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pool name, shared (for log records).
    pub fn name_arc(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// True when no server is usable only because all are at `max_conns`.
    pub fn all_busy(&self) -> bool {
        self.servers.iter().any(|s| {
            s.max_conns() > 0
                && s.in_flight() >= s.max_conns() as usize
                && !s.is_down()
                && !s.is_drained()
                && s.active_healthy()
        })
    }

    /// Whether passive failures may mark servers (nginx: never in a one-server pool).
    pub fn passive_enabled(&self) -> bool {
        self.servers.len() > 1
    }

    /// Picks a usable server not in `tried` and starts an attempt on it.
    /// Backups are offered only when no primary is usable. When nothing is
    /// usable but some servers are excluded only by passive health, one of
    /// those is probed early as a last resort: a server that failed a few
    /// seconds ago may well be back, and trying costs little compared with
    /// failing the request.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<InFlight> {
        self.select_usable(tried).or_else(|| {
            self.servers
                .iter()
                .filter(|s| !tried.contains(&s.addr) && s.only_passively_failed())
                .find_map(|s| s.begin_last_resort())
        })
    }

    fn select_usable(&self, tried: &[SocketAddr]) -> Option<InFlight> {
        // A probe may be lost to a concurrent request; then look again.
        for _ in 0..self.servers.len() + 1 {
            let now = now_ms();
            let accept = |b: &Backend, backups: bool| {
                let s = server_of(b);
                s.is_backup() == backups
                    && !tried.contains(&s.addr)
                    && s.usability(now) != Usability::Unusable
            };
            let max = self.servers.len() * 4 + 4;
            let chosen = match &self.selector {
                // These iterators already order primaries before backups.
                Selector::LeastConn(lb) => {
                    lb.select_with(b"", max, |b, _| accept(b, false) || accept(b, true))
                }
                Selector::Ewma(lb) => {
                    lb.select_with(b"", max, |b, _| accept(b, false) || accept(b, true))
                }
                Selector::P2c(lb) => {
                    lb.select_with(b"", max, |b, _| accept(b, false) || accept(b, true))
                }
                Selector::RoundRobin(lb) => lb
                    .select_with(b"", max, |b, _| accept(b, false))
                    .or_else(|| lb.select_with(b"", max, |b, _| accept(b, true))),
                Selector::Random(lb) => lb
                    .select_with(b"", max, |b, _| accept(b, false))
                    .or_else(|| lb.select_with(b"", max, |b, _| accept(b, true))),
            }?;
            if let Some(attempt) = server_of(&chosen).begin(now) {
                return Some(attempt);
            }
        }
        None
    }

    /// How many servers could take a request now (for `tries: 0`).
    pub fn usable_count(&self) -> usize {
        let now = now_ms();
        self.servers
            .iter()
            .filter(|s| s.usability(now) != Usability::Unusable)
            .count()
    }

    /// Whether any server not in `tried` could take a request now
    /// (including a last-resort attempt, see [`Pool::select`]).
    pub fn has_untried(&self, tried: &[SocketAddr]) -> bool {
        let now = now_ms();
        self.servers.iter().any(|s| {
            !tried.contains(&s.addr)
                && (s.usability(now) != Usability::Unusable || s.only_passively_failed())
        })
    }
}

fn server_of(b: &Backend) -> &Arc<Server> {
    b.ext
        .get::<Arc<Server>>()
        .expect("every backend of a pool carries its Server")
}

fn load_balancer<S>(set: BTreeSet<Backend>) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let lb = LoadBalancer::from_backends(Backends::new(Static::new(set)));
    // Static discovery completes without waiting; drive it to completion here
    // so the pool is ready before it is published.
    {
        let mut fut = std::pin::pin!(lb.update());
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r.expect("static discovery cannot fail"),
            Poll::Pending => unreachable!("static discovery does not wait"),
        }
    }
    lb
}
