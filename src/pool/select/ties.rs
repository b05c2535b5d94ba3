//! The one comparison of every cost-based selection: the cheapest
//! candidate, and among exactly tied ones, smooth weighted round-robin. The
//! tie-break is what makes equal idle servers alternate (5/5 over ten
//! sequential requests) and weights hold exactly when nothing is in flight
//! (3:1 gives 15/5), instead of the first server in config order always
//! winning.

use super::{weight_at, Cost, IndexSet, Metric};
use crate::pool::Server;
use pingora_load_balancing::Backend;
use std::cmp::Ordering;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The cheapest of `candidates` at `now_us` (each priced once). Exact ties
/// are broken by smooth weighted round-robin, visiting the tied ones in the
/// order they appear in `order` (which must list every candidate).
pub(super) fn cheapest<M: Metric>(
    backends: &[(Backend, Arc<Server>)],
    candidates: impl Iterator<Item = usize>,
    order: impl Iterator<Item = usize>,
    now_us: u64,
) -> Option<usize> {
    let mut best: Option<(usize, Cost)> = None;
    let mut tied = IndexSet::default();
    let mut ties = 0;
    for i in candidates {
        let c = M::cost(&backends[i].1, now_us);
        match best.map(|(_, b)| c.compare(&b)) {
            Some(Ordering::Greater) => {}
            Some(Ordering::Equal) => {
                tied.add(i);
                ties += 1;
            }
            _ => {
                best = Some((i, c));
                tied = IndexSet::default();
                tied.add(i);
                ties = 1;
            }
        }
    }
    let (first, _) = best?;
    if ties <= 1 {
        return Some(first);
    }
    let tied = order.filter(|&i| tied.has(i));
    Some(smooth_round_robin(backends, tied, now_us).unwrap_or(first))
}

/// nginx's smooth weighted round-robin over `tied`: each gains its weight in
/// credit, the richest wins (the first of equals) and pays the weights of
/// all. The credit lives in the shared [`Server`], so that it survives
/// selector rebuilds and is the same for every thread.
fn smooth_round_robin(
    backends: &[(Backend, Arc<Server>)],
    tied: impl Iterator<Item = usize>,
    now_us: u64,
) -> Option<usize> {
    let mut pick = None;
    let mut pick_credit = i64::MIN;
    let mut total = 0i64;
    for i in tied {
        let s = &backends[i].1;
        // The effective weight, so that slow start holds when idle
        // servers tie too.
        let w = weight_at(s, now_us) as i64;
        total += w;
        let credit = s.tie_credit.fetch_add(w, Relaxed) + w;
        if credit > pick_credit {
            pick = Some(i);
            pick_credit = credit;
        }
    }
    let i = pick?;
    backends[i].1.tie_credit.fetch_sub(total, Relaxed);
    Some(i)
}
