//! How a process that is being replaced (SIGQUIT: graceful upgrade) or
//! stopped (SIGTERM) lets its clients go without failing a single request.
//!
//! Pingora's own sequence after SIGQUIT (pingora-core `server/mod.rs`,
//! `Server::main_loop`): send the listening sockets over `upgrade_sock`, keep
//! accepting for a fixed 5 s (`CLOSE_TIMEOUT`), then stop accepting, wait
//! `grace_period_seconds`, and exit. Two details of it would fail requests:
//!
//! - keepalive connections keep being kept alive during those 5 s, because
//!   `Session::is_process_shutting_down()` only turns true later, so clients
//!   learn nothing;
//! - when the accept loops end, the proxy's `http_cleanup` at once drops every
//!   connection that is waiting for a request (pingora-proxy
//!   `HttpProxy::handle_new_request`), including one whose request is on the
//!   wire: that client gets EOF instead of a response.
//!
//! So: from the signal on, every response carries `Connection: close`
//! ([`Leaving::close_connection_if_leaving`]), which moves keepalive clients
//! to the new process at their next request; and the drop of waiting
//! connections is postponed by [`IDLE_CLOSE_DELAY`] ([`LingeringCleanup`]),
//! long enough for a request already sent to be read and answered.
//!
//! The [`Leaving`] flag is made by `lifecycle::service`, set here by the
//! [`SignalWatch`] and read by the proxy.

use crate::access_log::AccessLog;
use crate::lifecycle::notify;
use crate::proxy::Leaving;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// How long connections waiting for their next request are left open after
/// the listeners stopped, before Pingora's cleanup closes them.
const IDLE_CLOSE_DELAY: Duration = Duration::from_secs(1);

/// Pingora's signal mapping (QUIT upgrade, TERM graceful stop), plus marking
/// the process as draining the moment QUIT or TERM arrives rather than 5 s
/// later. INT (fast stop) writes the queued access log lines and exits at
/// once, as nginx's fast shutdown does: Pingora 0.9's own fast shutdown can
/// hang (a listener's accept loop spins on "Tokio context is being shutdown"
/// errors and its runtime thread is never joined; seen in ~5% of stops
/// under test load).
pub(crate) struct SignalWatch {
    access_log: AccessLog,
    leaving: Arc<Leaving>,
}

impl SignalWatch {
    /// Watches the signals: QUIT and TERM start `leaving`; a fast stop
    /// finishes `access_log` first.
    pub(crate) fn new(access_log: AccessLog, leaving: Arc<Leaving>) -> SignalWatch {
        SignalWatch {
            access_log,
            leaving,
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            log::error!("cannot listen for SIGQUIT/SIGTERM/SIGINT; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = quit.recv() => {
                self.leaving.start();
                log::info!(
                    "SIGQUIT: handing the listening sockets to the new process; \
                     responses now carry Connection: close"
                );
                // Before the sockets go: the new process's READY=1 comes after.
                notify::stopping(
                    "handing the listening sockets to the new process; finishing requests",
                );
                ShutdownSignal::GracefulUpgrade
            }
            _ = term.recv() => {
                self.leaving.start();
                log::info!("SIGTERM: graceful stop; responses now carry Connection: close");
                notify::stopping("graceful stop: finishing requests");
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                log::info!("SIGINT: fast stop");
                self.access_log.finish();
                std::process::exit(0);
            }
        }
    }
}

/// Wraps the listening app so that its cleanup (which drops connections
/// waiting for a request) runs [`IDLE_CLOSE_DELAY`] after the listeners
/// stopped instead of at once.
pub(crate) struct LingeringCleanup<A> {
    inner: Arc<A>,
}

impl<A> LingeringCleanup<A> {
    /// Delays the cleanup of `inner`.
    pub(crate) fn new(inner: A) -> Self {
        LingeringCleanup {
            inner: Arc::new(inner),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for LingeringCleanup<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(IDLE_CLOSE_DELAY).await;
        self.inner.cleanup().await
    }
}
