//! Whether this process is leaving: handing its sockets over (SIGQUIT, an
//! upgrade) or stopping (SIGTERM). From then on every answer carries
//! `Connection: close`, which moves keepalive clients to the new process at
//! their next request (lifecycle/drain.rs says why Pingora's own flag comes
//! too late). Made by `lifecycle::service`, set by its signal watch.

use pingora::proxy::Session;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// Set once SIGQUIT or SIGTERM arrived, never cleared.
#[derive(Debug, Default)]
pub(crate) struct Leaving {
    flag: AtomicBool,
}

impl Leaving {
    pub(crate) fn start(&self) {
        self.flag.store(true, Relaxed);
    }

    /// Turns keepalive off for this request's answer when the process is
    /// leaving, so the client reconnects (to the new process after an upgrade).
    pub(crate) fn close_connection_if_leaving(&self, session: &mut Session) {
        if self.flag.load(Relaxed) || session.is_process_shutting_down() {
            session.set_keepalive(None);
        }
    }
}
