//! A pool: its servers' shared state, a selection over them, and the
//! pool-wide policy (timeouts, retries, health checks).
//!
//! - `server.rs`: one server, composed of `passive.rs` (max_fails /
//!   fail_timeout), `active.rs` (rise/fall verdict of `lifecycle/health_check.rs`),
//!   `drain.rs`, `load.rs` (in flight, waiting, `latency.rs`) and
//!   `stats.rs` (counters), `slow_start.rs` (the ramp after it becomes usable)
//! - `attempt.rs`: the guard of one attempt, through which all of those
//!   learn how it went
//! - `select/`: choosing a server (least_conn, p2c, ewma over one driver;
//!   Pingora's round_robin and random)
//! - `queue.rs`: where requests wait while every server is at `max_conns`

mod active;
mod attempt;
pub(crate) mod discover;
mod drain;
mod latency;
mod load;
pub(crate) mod membership;
mod passive;
mod queue;
mod select;
mod server;
mod slow_start;
mod stats;

pub(crate) use crate::clock::now_ms;
pub use attempt::InFlight;
pub(crate) use passive::Usability;
pub use queue::{Choice, Exit as QueueExit, Queue, QueueReport, Refusal, Waiting};
pub use server::Server;
pub use stats::FailureKind;
pub(crate) use stats::{status_class, HISTORY_LEN, STATUS_CLASSES};

use crate::config::{PoolConfig, ServerConfig};
use discover::Discovery;
use membership::Joining;
use pingora_load_balancing::Backend;
use select::{server_of, Pick};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

/// An upstream pool.
pub struct Pool {
    name: Arc<str>,
    /// Settings from the config; `servers` are the pool's current members
    /// (discovered ones included).
    pub(crate) config: PoolConfig,
    /// Servers in config order, shared with in-flight requests.
    pub servers: Vec<Arc<Server>>,
    selector: Box<dyn Pick>,
    /// Where requests wait while every server is at `max_conns`.
    queue: Option<Arc<Queue>>,
    /// `resolve:`/`discover:` state, shared by the generations of this pool.
    pub(crate) discovery: Option<Arc<Discovery>>,
}

/// Shared server state by (pool, address), carried across reloads.
pub(crate) type ServerRegistry = HashMap<(String, SocketAddr), Arc<Server>>;

impl Pool {
    /// Builds a pool, reusing the state of servers already in `previous`
    /// (same pool name and address), so counts and health survive a reload.
    pub fn new(config: PoolConfig, previous: &ServerRegistry) -> Pool {
        let why = if previous.is_empty() {
            Joining::Start
        } else {
            Joining::Reload
        };
        let discovery = config.discovery.as_ref().map(|_| Arc::default());
        Pool::build(config, previous, why, discovery)
    }

    /// [`Pool::new`] with the reason newcomers join and the discovery state
    /// to carry on.
    pub(crate) fn build(
        config: PoolConfig,
        previous: &ServerRegistry,
        why: Joining,
        discovery: Option<Arc<Discovery>>,
    ) -> Pool {
        let servers: Vec<Arc<Server>> = config
            .servers
            .iter()
            .map(|sc| match previous.get(&(config.name.clone(), sc.addr)) {
                Some(s) => {
                    s.apply(sc);
                    Arc::clone(s)
                }
                None => membership::join(sc, why),
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
        Pool {
            name: config.name.as_str().into(),
            selector: select::selector(config.selection, set),
            queue: config.queue.as_ref().map(|q| Arc::new(Queue::new(q))),
            config,
            servers,
            discovery,
        }
    }

    /// This pool with `members` as its servers: those already here keep
    /// their state, newcomers join; the caller marks the leavers removed
    /// once the new pool is in place.
    pub(crate) fn with_members(&self, members: Vec<ServerConfig>, why: Joining) -> Pool {
        let here: ServerRegistry = self
            .servers
            .iter()
            .map(|s| ((self.config.name.clone(), s.addr), Arc::clone(s)))
            .collect();
        let config = PoolConfig {
            servers: members,
            ..self.config.clone()
        };
        let mut pool = Pool::build(config, &here, why, self.discovery.clone());
        // Requests waiting for this pool keep their places.
        pool.keep_queue_of(self);
        pool
    }

    /// Pool name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Pool name, shared (for log records).
    pub(crate) fn name_arc(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// True when no server is usable only because all are at `max_conns`.
    pub(crate) fn all_busy(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.at_max_conns() && !s.is_down() && !s.is_drained() && s.active_healthy())
    }

    /// Whether passive failures may mark servers (nginx: never in a one-server pool).
    pub(crate) fn passive_enabled(&self) -> bool {
        self.servers.len() > 1
    }

    /// Picks a usable server not in `tried` and starts an attempt on it.
    /// Backups are offered only when no primary is usable. When nothing is
    /// usable but some servers are excluded only by passive health, one of
    /// those is probed early as a last resort: a server that failed a few
    /// seconds ago may well be back, and trying costs little compared with
    /// failing the request.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<InFlight> {
        let mut attempt = self.select_usable(tried).or_else(|| {
            self.servers
                .iter()
                .filter(|s| !tried.contains(&s.addr) && s.only_passively_failed())
                .find_map(|s| s.begin_last_resort())
        })?;
        self.attach_queue(&mut attempt);
        Some(attempt)
    }

    fn select_usable(&self, tried: &[SocketAddr]) -> Option<InFlight> {
        // A probe or a server's last slot may be lost to a concurrent
        // request; then look again.
        for _ in 0..self.servers.len() + 1 {
            let now = now_ms();
            let accept = |s: &Arc<Server>| {
                !tried.contains(&s.addr) && s.usability(now) != Usability::Unusable
            };
            let max = self.servers.len() * 4 + 4;
            let chosen = self.selector.pick(max, &accept)?;
            if let Some(attempt) = server_of(&chosen).begin(now) {
                return Some(attempt);
            }
        }
        None
    }

    /// How many servers could take a request now (for `tries: 0`).
    pub(crate) fn usable_count(&self) -> usize {
        let now = now_ms();
        self.servers
            .iter()
            .filter(|s| s.usability(now) != Usability::Unusable)
            .count()
    }

    /// Whether any server not in `tried` could take a request now
    /// (including a last-resort attempt, see [`Pool::select`]).
    pub(crate) fn has_untried(&self, tried: &[SocketAddr]) -> bool {
        let now = now_ms();
        self.servers.iter().any(|s| {
            !tried.contains(&s.addr)
                && (s.usability(now) != Usability::Unusable || s.only_passively_failed())
        })
    }
}
