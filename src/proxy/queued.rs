//! A request waiting in its pool's queue (`pool/queue.rs`) for a server:
//! until it gets one, the queue's `timeout` passes, or its client goes
//! away, which takes it out of the queue at once.

use super::context::RequestCtx;
use crate::net::downstream::gone;
use crate::pool::{InFlight, Waiting};
use pingora::prelude::*;
use pingora::proxy::Session;

/// Waits in the queue; the attempt it was handed, or the error that ends
/// the request (503 for a timeout, nothing at all for a client gone).
pub(super) async fn wait(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut waiting: Waiting,
) -> Result<InFlight> {
    let answer = tokio::select! {
        // A client gone wins a tie: its attempt would only be cut short.
        biased;
        () = gone::client_gone(session) => None,
        answer = waiting.wait() => Some(answer),
    };
    ctx.queue_time = Some(waiting.waited());
    // Out of the queue now, before anything else waits.
    drop(waiting);
    match answer {
        Some(Ok(attempt)) => Ok(attempt),
        Some(Err(refusal)) => {
            let pool = ctx.routed_pool();
            Err(ctx.refused(&pool, refusal))
        }
        None => {
            let pool = ctx.routed_pool();
            let mut e = Error::new_down(ErrorType::ConnectionClosed);
            e.context =
                Some(format!("client went away while queued in pool {}", pool.name()).into());
            Err(e)
        }
    }
}
