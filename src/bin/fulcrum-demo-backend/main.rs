//! `fulcrum-demo-backend`: a small HTTP/1.1 backend for the quick start, the
//! namespaced deployment demo, the benchmark and the integration tests of
//! fulcrum. This file wires the parts together: flags (`cli`), per-listener
//! state (`state`), the answers (`echo`, `json`, `control`, `reply`) and
//! hyper (`serve`).
//!
//! It echoes every request back as JSON (or, for benchmarks, a fixed-size
//! body), answers a health endpoint, and can be told to misbehave (delay,
//! fail health, drop connections) through command-line flags or control
//! endpoints at run time. One process can serve several named listeners, each
//! with its own independent counters and modes.
//!
//! HTTP/1.1 is hyper's. Misbehaviour stays real on the wire: a dropped
//! request is read fully, then its connection is closed without a byte of
//! answer (the service returns an error, on which hyper closes).
//!
//! # Usage
//!
//! ```text
//! fulcrum-demo-backend --listen user-m1@127.0.0.1:3001 --listen user-m2@127.0.0.1:3002
//! fulcrum-demo-backend --name api --listen 127.0.0.1:0 --port-file /tmp/ports
//! ```
//!
//! Options:
//!
//! * `--listen NAME@ADDR` (repeatable), or `--name NAME --listen ADDR` once.
//! * `--delay-ms N`: default delay added to every normal request (0).
//! * `--fail-health`: start with `/health` answering 503.
//! * `--drop-every N`: close without answering every Nth normal request (0 = off).
//! * `--close-after-read`: read each normal request fully, then close without answering.
//! * `--body-size N`: normal responses carry N bytes of `x` instead of JSON.
//! * `--port-file PATH`: write `NAME ADDR` lines for the bound addresses.
//! * `--threads N`: tokio worker threads (1).
//!
//! # Endpoints (per listener)
//!
//! * `GET /health`: 200 `ok`, or 503 `unhealthy` while health is failing.
//! * `GET /__control/stats`: JSON counters (requests, connections accepted, ...)
//!   and the last 1000 normal requests.
//! * `POST /__control/health?fail=1|0`: make health fail or pass.
//! * `POST /__control/mode?delay_ms=N&drop_every=N&close_after_read=0|1&status=N`:
//!   change the defaults for later requests.
//! * `POST /__control/reset`: zero the counters and the recent-request log.
//! * Anything else: after the delay (`?delay_ms=N` overrides it), answer with
//!   status `?status=N` (default 200) and a JSON echo of the request.

mod cli;
mod control;
mod echo;
mod json;
mod reply;
mod serve;
mod state;
#[cfg(test)]
mod tests;

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::body::Bytes;
use tokio::net::TcpListener;

use cli::{parse_args, Command, Config, USAGE};
use serve::accept_loop;
use state::Backend;

const PROGRAM: &str = "fulcrum-demo-backend";

// As in fulcrum itself: a request allocates a few small objects (header
// maps, the recent-log entry, hyper's header arrays), cheaper with mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes the port file atomically so a reader never sees a partial file.
fn write_port_file(path: &Path, lines: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, lines)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                log::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds every listener, announces them, and serves until a signal arrives.
/// Returns the process exit code.
async fn run(cfg: Config) -> i32 {
    let fixed_body: Option<Bytes> = cfg.body_size.map(|n| Bytes::from(vec![b'x'; n]));

    // Bind everything before announcing anything, so a port file or a ready
    // line always means every listener accepts connections.
    let mut bound = Vec::with_capacity(cfg.listeners.len());
    for (name, addr) in &cfg.listeners {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{PROGRAM}: error: cannot listen on {addr} for '{name}': {e}");
                return 1;
            }
        };
        let local = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{PROGRAM}: error: cannot read bound address for '{name}': {e}");
                return 1;
            }
        };
        bound.push((name.as_str(), listener, local));
    }

    if let Some(path) = &cfg.port_file {
        let lines: String = bound
            .iter()
            .map(|(name, _, local)| format!("{name} {local}\n"))
            .collect();
        if let Err(e) = write_port_file(path, &lines) {
            eprintln!(
                "{PROGRAM}: error: cannot write port file {}: {e}",
                path.display()
            );
            return 1;
        }
    }

    let mut ready = String::new();
    for (name, listener, local) in bound {
        let backend = Arc::new(Backend::new(name, &cfg, fixed_body.clone()));
        tokio::spawn(accept_loop(listener, backend));
        ready.push_str(&format!("{PROGRAM} {name} listening on {local}\n"));
    }
    {
        // Ignore errors: a closed stdout must not stop the server.
        let mut out = io::stdout().lock();
        let _ = out.write_all(ready.as_bytes());
        let _ = out.flush();
    }

    shutdown_signal().await;
    0
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();

    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return;
        }
        Err(msg) => {
            eprintln!("{PROGRAM}: error: {msg}\nRun '{PROGRAM} --help' for usage.");
            std::process::exit(2);
        }
    };

    // One thread (the default, and the benchmark's setting) runs on the
    // main thread: the single-threaded scheduler costs less per request.
    let mut builder = if cfg.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(cfg.threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{PROGRAM}: error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(cfg));
    // Exit without waiting for connection tasks: shutdown should be prompt.
    std::process::exit(code);
}
