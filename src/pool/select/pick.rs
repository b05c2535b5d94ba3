//! The pool's one question to any selection: the next server it accepts,
//! primaries before backups. The cost-based selections order the tiers
//! themselves; Pingora's weighted ones (`round_robin`, `random`) know
//! nothing of backups, so they are asked once per tier.

use super::ewma::Ewma;
use super::least_conn::LeastConn;
use super::p2c::P2c;
use super::rng::Rng;
use super::{Balanced, Metric};
use crate::config::Selection;
use crate::pool::Server;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::weighted::Weighted;
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Random, RoundRobin, SelectionAlgorithm,
};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// A pool's selection.
pub(crate) trait Pick: Send + Sync {
    /// The first server `accept`s, trying at most `max` backends per tier.
    fn pick(&self, max: usize, accept: &dyn Fn(&Arc<Server>) -> bool) -> Option<Backend>;
}

impl<M: Metric> Pick for LoadBalancer<Balanced<M>> {
    fn pick(&self, max: usize, accept: &dyn Fn(&Arc<Server>) -> bool) -> Option<Backend> {
        self.select_with(b"", max, |b, _| accept(server_of(b)))
    }
}

impl<H> Pick for LoadBalancer<Weighted<H>>
where
    H: SelectionAlgorithm + Send + Sync + 'static,
{
    fn pick(&self, max: usize, accept: &dyn Fn(&Arc<Server>) -> bool) -> Option<Backend> {
        [false, true].into_iter().find_map(|backups| {
            let tier = |s: &Arc<Server>| s.is_backup() == backups && accept(s);
            self.select_with(b"", max, |b, _| {
                tier(server_of(b)) && warm_enough(server_of(b))
            })
            // Slow start only shapes the share: a tier whose only
            // taker is warming still gets a server.
            .or_else(|| {
                let warming = self.backends().get_backend().iter().any(|b| {
                    let s = server_of(b);
                    s.maybe_warming() && tier(s)
                });
                warming
                    .then(|| self.select_with(b"", max, |b, _| tier(server_of(b))))
                    .flatten()
            })
        })
    }
}

/// Slow start for Pingora's weighted selections, whose weights are fixed
/// when the pool is built: a warming server offered by them is taken with
/// the probability of its share of its weight, else the next one is asked.
fn warm_enough(s: &Server) -> bool {
    if !s.maybe_warming() {
        return true;
    }
    let permille = s.warmth(crate::clock::now_ms());
    permille >= 1000 || (Rng::new(Rng::seed()).below(1000) as u64) < permille
}

/// The selection `selection` over `backends`, ready to use.
pub(crate) fn selector(selection: Selection, backends: BTreeSet<Backend>) -> Box<dyn Pick> {
    match selection {
        Selection::LeastConn => Box::new(load_balancer::<Balanced<LeastConn>>(backends)),
        Selection::P2c => Box::new(load_balancer::<Balanced<P2c>>(backends)),
        Selection::Ewma => Box::new(load_balancer::<Balanced<Ewma>>(backends)),
        Selection::RoundRobin => Box::new(load_balancer::<RoundRobin>(backends)),
        Selection::Random => Box::new(load_balancer::<Random>(backends)),
    }
}

/// The shared state a pool attached to its backend.
pub(crate) fn server_of(b: &Backend) -> &Arc<Server> {
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
