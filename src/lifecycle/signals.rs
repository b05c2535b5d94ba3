//! The signals nginx, logrotate and systemd send that Pingora does not
//! handle, whose default action would end the process: SIGHUP (reload,
//! lifecycle/reload.rs), SIGUSR1 (reopen the log files, what logrotate's
//! `postrotate` sends), SIGUSR2 and SIGWINCH.
//!
//! SIGUSR2 is nginx's "start the new binary" and SIGWINCH its "stop the old
//! workers"; fulcrum logs both and ignores them. Its binary upgrade is one
//! step instead of nginx's three: `fulcrum -u` takes the listening sockets
//! when the old process gets SIGQUIT (`fulcrum-upgrade`, `systemctl reload
//! fulcrum`). A new process started on SIGUSR2 would wait for a SIGQUIT
//! that nginx's procedure sends only after SIGWINCH, and fail if it never
//! came; one process with threads has no workers to stop on SIGWINCH.

use super::error_log::ErrorLogFile;
use crate::access_log::AccessLog;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

/// The signals handled here or in reload.rs.
fn kinds() -> [(SignalKind, &'static str); 4] {
    [
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
        (SignalKind::window_change(), "SIGWINCH"),
    ]
}

/// Installs the handlers now, before the services that act on them run, so
/// that one of these signals arriving during startup is not fatal. Tokio
/// keeps a handler installed for good once registered, across the daemon's
/// fork too.
pub(crate) fn guard() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            log::warn!("cannot install the signal handlers early: {e}");
            return;
        }
    };
    rt.block_on(async {
        for (kind, name) in kinds() {
            if let Err(e) = signal(kind) {
                log::warn!("cannot install the {name} handler early: {e}");
            }
        }
    });
}

/// SIGUSR1 reopens the log files; SIGUSR2 and SIGWINCH are logged.
pub(crate) struct OtherSignals {
    access_log: AccessLog,
    error_log: ErrorLogFile,
}

impl OtherSignals {
    pub(crate) fn new(access_log: AccessLog, error_log: ErrorLogFile) -> OtherSignals {
        OtherSignals {
            access_log,
            error_log,
        }
    }
}

#[async_trait]
impl BackgroundService for OtherSignals {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let streams = (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
            signal(SignalKind::window_change()),
        );
        let (Ok(mut usr1), Ok(mut usr2), Ok(mut winch)) = streams else {
            log::error!("cannot listen for SIGUSR1/SIGUSR2/SIGWINCH: log reopening is off");
            return;
        };
        loop {
            tokio::select! {
                _ = usr1.recv() => {
                    log::info!("SIGUSR1: reopening the log files");
                    self.error_log.reopen();
                    self.access_log.reopen();
                }
                _ = usr2.recv() => log::info!(
                    "SIGUSR2 ignored: fulcrum upgrades its binary with `fulcrum -u` and \
                     SIGQUIT to the old process (fulcrum-upgrade, systemctl reload fulcrum)"
                ),
                _ = winch.recv() => log::info!(
                    "SIGWINCH ignored: fulcrum has no worker processes to stop"
                ),
                _ = shutdown.changed() => return,
            }
        }
    }
}
