//! Binding the listen addresses as root, then running as Pingora's `user`
//! and `group`.
//!
//! Pingora switches user when it daemonizes (`-d`), and its services bind
//! their listeners only after that, so on its own it could not listen on a
//! port below 1024 and then run unprivileged. It does use listening sockets
//! that exist before it daemonizes: the ones an old process hands over
//! through `upgrade_sock` at bootstrap. So a fresh start that will switch
//! user binds every listen address itself, as root, and hands the sockets to
//! its own bootstrap through that socket. Bootstrap takes them, daemonize
//! switches user, and the services listen on the sockets they were given.
//! An upgrade (`-u`) already works this way: the sockets come from the old
//! process, and the new one switches user after taking them.

use crate::config::accounts::{lookup_group, lookup_user};
use nix::unistd::geteuid;
use pingora::server::configuration::ServerConf;
use pingora::server::Fds;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::io::IntoRawFd;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the handoff waits for bootstrap to listen on `upgrade_sock`.
const HANDOFF_WAIT: Duration = Duration::from_secs(10);

/// Whether this start must bind before Pingora switches user: a fresh
/// daemon start, as root, with `user` set.
pub(crate) fn must_prebind(server: &ServerConf, daemon: bool, upgrade: bool) -> bool {
    daemon && !upgrade && server.user.is_some() && geteuid().is_root()
}

/// Checks that Pingora can switch to `user`/`group` when this process
/// daemonizes: they exist, and unless we are root, `user` is who we are
/// already (only root may become someone else).
pub(crate) fn check_switch(server: &ServerConf) -> Result<(), String> {
    let Some(user) = &server.user else {
        return Ok(());
    };
    let uid = lookup_user(user)?;
    if let Some(group) = &server.group {
        lookup_group(group)?;
    }
    let me = geteuid().as_raw();
    if me != 0 && me != uid {
        return Err(format!(
            "user: switching to {user:?} needs a start as root (running as uid {me})"
        ));
    }
    Ok(())
}

/// Says so when a daemon started as root will keep running as root (nginx
/// would switch its workers to `nobody`; Pingora switches only when told).
pub(crate) fn warn_if_staying_root(server: &ServerConf) {
    if server.user.is_none() && geteuid().is_root() {
        log::warn!(
            "running as root: set `user:` and `group:` to run unprivileged after binding \
             (docs/operations.md: Running unprivileged)"
        );
    }
}

/// Listening sockets bound by this process, on their way to its own
/// bootstrap through `upgrade_sock`.
pub(crate) struct Handoff {
    sender: JoinHandle<Result<(), String>>,
}

impl Handoff {
    /// Binds every address (as Pingora would: SO_REUSEADDR, non-blocking;
    /// Pingora sets its own backlog when it takes the socket) and starts sending them to
    /// `upgrade_sock`, where bootstrap (run with `upgrade` set) receives them.
    pub(crate) fn bind(listen: &[SocketAddr], upgrade_sock: &str) -> Result<Handoff, String> {
        let mut fds = Fds::new();
        for addr in listen {
            let l = TcpListener::bind(addr).map_err(|e| format!("listen {addr}: {e}"))?;
            // Tokio takes the socket as it is; a blocking one would stall
            // its accept loop.
            l.set_nonblocking(true)
                .map_err(|e| format!("listen {addr}: {e}"))?;
            // The key is the address string the services are given.
            fds.add(addr.to_string(), l.into_raw_fd());
        }
        // A socket file left by an earlier run would refuse our connect;
        // nobody else waits on it, since no instance holds these ports.
        let _ = std::fs::remove_file(upgrade_sock);
        log::info!(
            "bound {} listen address(es) as root; handing them to bootstrap through {upgrade_sock} \
             (Pingora may log one 'No incoming socket transfer' retry meanwhile)",
            listen.len()
        );
        let path = upgrade_sock.to_string();
        let sender = std::thread::Builder::new()
            .name("listen-handoff".into())
            .spawn(move || send_when_listening(&fds, &path))
            .map_err(|e| format!("cannot start the socket handoff: {e}"))?;
        Ok(Handoff { sender })
    }

    /// Waits until the sockets were sent.
    pub(crate) fn finish(self) -> Result<(), String> {
        self.sender
            .join()
            .map_err(|_| "the socket handoff panicked".to_string())?
    }
}

/// Sends `fds` once bootstrap listens on `path`, then closes our copies
/// (bootstrap received its own).
fn send_when_listening(fds: &Fds, path: &str) -> Result<(), String> {
    let start = Instant::now();
    // Pingora's sender sleeps a whole second when the socket is not there
    // yet; waiting for the file first keeps startup fast.
    while !Path::new(path).exists() {
        if start.elapsed() > HANDOFF_WAIT {
            return Err(format!("upgrade_sock {path}: bootstrap never listened"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let sent = fds
        .send_to_sock(path)
        .map_err(|e| format!("upgrade_sock {path}: cannot hand the sockets over: {e}"));
    for fd in fds.serialize().1 {
        // SAFETY: these are the listeners bound above, owned by nobody else
        // in this process; bootstrap holds duplicates received by SCM_RIGHTS.
        unsafe { libc::close(fd) };
    }
    sent.map(|_| ())
}
