//! The listening sockets and their accept loops, in place of Pingora's
//! listening service (`pingora_core::services::listening::Service`).
//!
//! Pingora runs each client connection as a task whose future is sized for
//! a TLS handshake (~1.9 KB, kept for the connection's whole life, TLS or
//! not), and wraps the socket in its L4 stream (~0.4 KB, plus a timing
//! digest allocated per request). Here a connection's task holds the app's
//! future and a [`ClientSocket`]: about 2 KB less per idle keepalive
//! connection (deploy/bench, scenario e). A TLS handshake, when the address
//! has `tls`, is done by the app once the connection is admitted
//! (handshake.rs), and its state lives only in TLS connections.
//!
//! The sockets are shared with Pingora's upgrade machinery as its own
//! listeners do: taken by address from the table of inherited descriptors
//! (an old process's, or the ones bound as root before dropping
//! privileges), else bound here and added to that table, so that the next
//! process gets them on `SIGQUIT`.

use super::handshake::Pending;
use super::socket::ClientSocket;
use crate::net::workers::Workers;
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};

/// Pending connections per listening socket (Pingora's `LISTENER_BACKLOG`;
/// the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 65535;
/// Binding an address in use is retried this many times, this far apart,
/// as nginx does (5 × 500 ms), before the process gives up.
const BIND_TRIES: u32 = 5;
const BIND_RETRY: Duration = Duration::from_millis(500);

/// The service that accepts client connections on every `listen` address
/// and hands each to the app on one of the worker threads.
pub(crate) struct Listeners<A> {
    name: String,
    addrs: Vec<String>,
    app: Option<A>,
    /// Worker threads of our own (src/net/workers.rs); 0: Pingora's
    /// work-stealing runtime runs the connections.
    workers: usize,
    /// Where each address's TLS and HTTP/2 settings are read, at each
    /// accept (a reload may change them).
    runtime: SharedRuntime,
    /// Called once every address listens (lifecycle/notify.rs).
    on_listening: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<A> Listeners<A> {
    /// `app` serves the connections accepted on `addrs`, on `workers`
    /// threads of fulcrum's own, or on Pingora's work-stealing runtime if 0.
    pub(crate) fn new(
        name: &str,
        addrs: &[SocketAddr],
        app: A,
        workers: usize,
        runtime: SharedRuntime,
    ) -> Self {
        Listeners {
            name: name.to_string(),
            // The key of each socket in the inherited table (as Pingora's).
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            app: Some(app),
            workers,
            runtime,
            on_listening: None,
        }
    }

    /// Calls `f` once every address listens, before the first accept.
    pub(crate) fn when_listening(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.on_listening = Some(Box::new(f));
        self
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> Service for Listeners<A> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let app = Arc::new(self.app.take().expect("start_service runs once"));
        let workers = match Workers::start(&self.name, self.workers) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                log::error!("cannot start worker threads: {e}");
                std::process::exit(1);
            }
        };
        let mut loops = Vec::new();
        for addr in &self.addrs {
            let listener = match listen(addr, fds.as_ref()).await {
                Ok(l) => Arc::new(l),
                Err(e) => {
                    // Nobody would serve this address: stop, as nginx does.
                    log::error!("listen {addr}: {e}");
                    std::process::exit(1);
                }
            };
            for _ in 0..listeners_per_fd.max(1) {
                let (listener, app) = (Arc::clone(&listener), Arc::clone(&app));
                let (addr, shutdown) = (addr.clone(), shutdown.clone());
                let workers = Arc::clone(&workers);
                let runtime = Arc::clone(&self.runtime);
                loops.push(tokio::spawn(accept_loop(
                    listener, addr, app, workers, runtime, shutdown,
                )));
            }
        }
        if let Some(f) = self.on_listening.take() {
            f();
        }
        for l in loops {
            let _ = l.await;
        }
        // The listeners are closed: the app lets its waiting connections go.
        app.cleanup().await;
        // The connections left run until Pingora stops this service's
        // runtime after the grace period, dropping this future and with it
        // the other worker threads.
        std::future::pending::<()>().await;
    }

    /// One thread for the accept loops and worker 0; the other workers are
    /// our own. Pingora's default (`threads`) for a work-stealing runtime.
    fn threads(&self) -> Option<usize> {
        (self.workers > 0).then_some(1)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.addrs.clone())
    }
}

/// The listening socket for `addr`: the inherited one if the table has it,
/// else a new one, added to the table.
async fn listen(addr: &str, fds: Option<&ListenFds>) -> io::Result<TcpListener> {
    let inherited = fds.and_then(|t| t.lock().get(addr).copied());
    let listener = match inherited {
        Some(fd) => {
            // SAFETY: the table holds each listening descriptor once, by
            // address, and this service is the only one listening on it.
            let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            // Bound elsewhere (std's backlog is 128): raise it as Pingora does.
            if unsafe { libc::listen(l.as_raw_fd(), BACKLOG as i32) } != 0 {
                return Err(io::Error::last_os_error());
            }
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)?
        }
        None => {
            let l = bind(addr).await?;
            if let Some(t) = fds {
                t.lock().add(addr.to_string(), l.as_raw_fd());
            }
            l
        }
    };
    log::info!("listening on {addr}");
    Ok(listener)
}

/// Binds `addr` with `SO_REUSEADDR` (a restarted process must not wait out
/// the old one's TIME_WAIT connections), retrying while it is in use.
async fn bind(addr: &str) -> io::Result<TcpListener> {
    let sock_addr: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))?;
    let mut tries = 0;
    loop {
        let socket = match sock_addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(sock_addr) {
            Ok(()) => return socket.listen(BACKLOG),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries + 1 < BIND_TRIES => {
                tries += 1;
                log::warn!("listen {addr}: {e}; trying again");
                tokio::time::sleep(BIND_RETRY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the current config asks of a connection to `local` before HTTP.
fn pending_for(runtime: &SharedRuntime, local: Option<SocketAddr>) -> Option<Pending> {
    let rt = runtime.load();
    let l = rt.config.listen.iter().find(|l| Some(l.addr) == local)?;
    match (&l.tls, l.http2) {
        (Some(tls), _) => Some(Pending::Tls(tls.clone())),
        (None, true) => Some(Pending::H2c),
        (None, false) => None,
    }
}

/// Accepts connections until the process shuts down.
async fn accept_loop<A: ServerApp + Send + Sync + 'static>(
    listener: Arc<TcpListener>,
    addr: String,
    app: Arc<A>,
    workers: Arc<Workers>,
    runtime: SharedRuntime,
    mut shutdown: ShutdownWatch,
) {
    let local: Option<SocketAddr> = addr.parse().ok();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            changed = shutdown.changed() => match changed {
                Ok(()) if !*shutdown.borrow() => continue,
                _ => break,
            },
        };
        match accepted {
            Ok((tcp, peer)) => {
                // As Pingora: responses are written whole, Nagle only delays them.
                if let Err(e) = tcp.set_nodelay(true) {
                    log::debug!("client connection from {peer}: TCP_NODELAY: {e}");
                }
                let fd = tcp.as_raw_fd();
                let mut socket = ClientSocket::new(tcp, fd, peer);
                if let Some(pending) = pending_for(&runtime, local) {
                    socket = socket.with_pending(pending);
                }
                let stream: Stream = Box::new(socket);
                let (app, shutdown) = (Arc::clone(&app), shutdown.clone());
                workers.next().spawn(async move {
                    let mut next = Some(stream);
                    while let Some(stream) = next {
                        next = app.process_new(stream, &shutdown).await;
                    }
                });
            }
            Err(e) => {
                log::error!("accept on {addr}: {e}");
                // Out of descriptors: retrying at once would only spin.
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    log::info!("stopped accepting on {addr}");
}
