//! Assembles the Pingora server: the proxy service on every `listen`
//! address, the health checker, DNS discovery, the SIGHUP reloader, and
//! runs it.
//!
//! Order matters for upgrades (`-u`): everything that can fail is done
//! before `bootstrap()`, which is where Pingora takes the listening sockets
//! from the running process; after that, failing would leave nobody serving.

use crate::access_log::AccessLog;
use crate::cli::Args;
use crate::config::Loaded;
use crate::lifecycle::discovery::{self, Discoverer};
use crate::lifecycle::drain::{LingeringCleanup, SignalWatch};
use crate::lifecycle::error_log;
use crate::lifecycle::health_check::HealthChecker;
use crate::lifecycle::notify;
use crate::lifecycle::privileges;
use crate::lifecycle::reload::{Fixed, Reloader};
use crate::lifecycle::signals::{self, OtherSignals};
use crate::net::downstream::connection::ClientLimits;
use crate::net::downstream::listener::Listeners;
use crate::net::workers::PerWorker;
use crate::proxy::Fulcrum;
use crate::proxy::Leaving;
use crate::runtime::{retry_limit, Runtime, SharedRuntime};
use crate::status::{CountConnections, Counters, RateSampler, Reloads};
use arc_swap::ArcSwap;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Pingora's default `grace_period_seconds` when the file sets none.
const DEFAULT_GRACE_PERIOD: u64 = 300;
/// Pingora's default `graceful_shutdown_timeout_seconds`.
const DEFAULT_SHUTDOWN_TIMEOUT: u64 = 5;
/// Seconds an old process keeps accepting after handing its sockets over
/// (`CLOSE_TIMEOUT` in pingora-core's server/mod.rs, not configurable).
const HANDOVER_ACCEPT_SECONDS: u64 = 5;

/// Builds every service and runs until a signal stops the process.
pub fn run(args: &Args, loaded: Loaded) -> Result<(), String> {
    let error_log = error_log::init(&loaded.config.error_log)?;
    let fixed = Fixed::of(&loaded);
    let Loaded {
        config,
        mut server,
        warnings,
    } = loaded;
    for w in &warnings {
        log::warn!("{w}");
    }
    server.max_retries = retry_limit(&config, server.max_retries);

    let access_log = AccessLog::new(&config.access_log).with_format(config.access_log_format);
    access_log
        .check()
        .map_err(|e| format!("access_log: cannot open: {e}"))?;
    hand_logs_to_user(&config, &server);
    // Under -d, Pingora points the daemon's stderr (panics, anything not
    // logged) at this file; without it the daemon keeps its caller's.
    server.error_log = config
        .error_log
        .path
        .as_ref()
        .map(|p| p.display().to_string());
    check_pid_dir(&server.pid_file)?;
    let listen = crate::config::listen_addrs(&config.listen);
    let h2 = h2_settings(&config);
    // Pools from DNS get their first answer before anything is served.
    let primed = discovery::prime(&config, None);
    let mut first = Runtime::build(config, None, 1);
    primed.seed(&mut first);
    let runtime: SharedRuntime = Arc::new(ArcSwap::from_pointee(first));
    signals::guard();

    if args.daemon {
        privileges::check_switch(&server)?;
        privileges::warn_if_staying_root(&server);
        // Under systemd's Type=notify, the process systemd started exits
        // only once its daemon has told systemd it is the main process.
        notify::wait_for_daemon(&mut server);
    }
    // Bound here, as root, when Pingora will switch user before its services
    // bind; bootstrap then takes them as if from an old process.
    let handoff = if privileges::must_prebind(&server, args.daemon, args.upgrade) {
        Some(privileges::Handoff::bind(&listen, &server.upgrade_sock)?)
    } else {
        None
    };

    let opt = Opt {
        upgrade: args.upgrade || handoff.is_some(),
        daemon: args.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut pingora_server = Server::new_with_opt_and_conf(opt, server);
    // With -u: waits on upgrade_sock for the old process's sockets (exits 1
    // if none come). From here on this process is the one serving.
    pingora_server.bootstrap();
    if let Some(h) = handoff {
        h.finish()?;
    }
    if !args.daemon {
        // Pingora writes the pid file only when it daemonizes; the upgrade
        // script and status tools need it in the foreground too.
        write_pid_file(&pingora_server.configuration.pid_file);
    }

    // The process's shared state, handed to whoever needs it.
    let counters = Arc::new(Counters::default());
    let reloads = Arc::new(Reloads::default());
    let leaving = Arc::new(Leaving::default());
    // One proxy, and so one upstream connection pool, per worker thread
    // (workers.rs); a single one on Pingora's work-stealing runtime.
    let conf = Arc::clone(&pingora_server.configuration);
    let workers = if conf.work_stealing { 0 } else { conf.threads };
    let proxies = PerWorker::new(workers, || {
        let mut proxy = pingora::proxy::http_proxy(
            &conf,
            Fulcrum::new(
                Arc::clone(&runtime),
                Arc::clone(&counters),
                Arc::clone(&reloads),
                Arc::clone(&leaving),
                access_log.clone(),
                conf.upstream_keepalive_pool_size,
            ),
        );
        (proxy.h2_options, proxy.server_options) = h2.clone();
        proxy
    });
    // Our own accept loops instead of Pingora's listening service: a
    // lighter task and socket per connection (listener.rs).
    let service = Listeners::new(
        "fulcrum proxy",
        &listen,
        LingeringCleanup::new(CountConnections::new(
            ClientLimits::new(proxies, Arc::clone(&runtime), Arc::clone(&counters)),
            counters,
        )),
        workers,
        Arc::clone(&runtime),
    )
    .when_listening(serving_status(&listen, args.upgrade));
    pingora_server.add_service(service);
    pingora_server.add_service(background_service(
        "health checks",
        HealthChecker::new(Arc::clone(&runtime)),
    ));
    pingora_server.add_service(background_service(
        "discovery",
        Discoverer::new(Arc::clone(&runtime)),
    ));
    pingora_server.add_service(background_service(
        "status sampler",
        RateSampler::new(Arc::clone(&runtime)),
    ));
    pingora_server.add_service(background_service(
        "log reopening",
        OtherSignals::new(access_log.clone(), error_log),
    ));
    pingora_server.add_service(background_service(
        "reload",
        Reloader::new(args.config.clone(), runtime, fixed, reloads),
    ));
    pingora_server.run(RunArgs {
        shutdown_signal: Box::new(SignalWatch::new(access_log.clone(), leaving)),
    });
    // Every request has ended: write the lines still queued.
    access_log.finish();
    Ok(())
}

/// What tells systemd that the listeners serve (lifecycle/notify.rs), with
/// the `STATUS=` line it shows.
fn serving_status(listen: &[std::net::SocketAddr], upgrade: bool) -> impl FnOnce() + Send + Sync {
    let addrs: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
    let how = if upgrade {
        "; took the listening sockets over from the previous process"
    } else {
        ""
    };
    let status = format!("serving on {}{how}", addrs.join(", "));
    move || notify::serving(&status)
}

/// Log files opened here as root belong to `user:` (as nginx hands its logs
/// to its workers' user), so that the process can reopen them in place on
/// SIGUSR1 once it runs as that user. A failure is logged, not fatal: the
/// files are open already.
fn hand_logs_to_user(config: &crate::config::Config, server: &ServerConf) {
    let Some(user) = &server.user else { return };
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let uid = crate::config::accounts::lookup_user(user).ok();
    let gid = server
        .group
        .as_deref()
        .and_then(|g| crate::config::accounts::lookup_group(g).ok());
    let access = match &config.access_log {
        crate::config::AccessLogTarget::File(p) => Some(p),
        _ => None,
    };
    for path in [access, config.error_log.path.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Err(e) = std::os::unix::fs::chown(path, uid, gid) {
            log::warn!(
                "{}: cannot hand it to user {user} ({e}); reopening it on SIGUSR1 may fail",
                path.display()
            );
        }
    }
}

/// `fulcrum -t`: the log files can be opened for appending (created if
/// missing), as `nginx -t` checks its logs; every failure, one per line.
pub fn check_log_files(loaded: &Loaded) -> Result<(), String> {
    let c = &loaded.config;
    let access = match &c.access_log {
        crate::config::AccessLogTarget::File(p) => Some(("access_log", p)),
        _ => None,
    };
    let error = c.error_log.path.as_ref().map(|p| ("error_log.path", p));
    let errors: Vec<String> = [access, error]
        .into_iter()
        .flatten()
        .filter_map(|(key, p)| {
            error_log::open(p)
                .err()
                .map(|e| format!("{key}: cannot open {}: {e}", p.display()))
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// Fails unless the pid file's directory takes a new file: found out after
/// `bootstrap()`, with `-d` Pingora would panic holding the sockets.
fn check_pid_dir(pid_file: &str) -> Result<(), String> {
    let dir = match std::path::Path::new(pid_file).parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let probe = dir.join(format!(".fulcrum-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            format!(
                "pid_file {pid_file}: cannot create files in {}: {e}",
                dir.display()
            )
        })
}

/// Writes our pid to `path` the way Pingora's daemon mode does: an existing
/// file is first moved to `path.old`. The content appears atomically.
fn write_pid_file(path: &str) {
    let old = format!("{path}.old");
    let tmp = format!("{path}.{}.tmp", std::process::id());
    let _ = std::fs::rename(path, &old);
    let written = std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        // Not fatal: the sockets may already be ours, so exiting would leave
        // nobody serving. Upgrades need the file, so say so loudly.
        log::error!("cannot write pid file {path}: {e}; upgrades need it");
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Pingora's HTTP/2 server settings for client connections (fixed at
/// start: the proxies are built once). Streams per connection as nginx's
/// `http2_max_concurrent_streams` (128); a header list as large as
/// `limits.max_header_size`; an idle connection (no stream open) closes
/// after `limits.keepalive_timeout`, as an idle HTTP/1 one.
fn h2_settings(
    config: &crate::config::Config,
) -> (
    Option<pingora::protocols::http::v2::server::H2Options>,
    Option<pingora::apps::HttpServerOptions>,
) {
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS);
    h2.max_header_list_size(config.limits.max_header_size.min(u32::MAX as usize) as u32);
    let mut server = pingora::apps::HttpServerOptions::default();
    server.h2_idle_timeout = Some(config.limits.keepalive_timeout);
    (Some(h2), Some(server))
}

/// nginx's `http2_max_concurrent_streams` default.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// One line per TLS certificate of the listeners, for `fulcrum -t`: the
/// names it is chosen for and the end of its validity.
pub fn tls_summary(loaded: &Loaded) -> Vec<String> {
    let mut out = vec![];
    for l in &loaded.config.listen {
        let Some(tls) = &l.tls else { continue };
        for c in &tls.certificates {
            let until =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(c.not_after.max(0) as u64);
            let days = until
                .duration_since(std::time::SystemTime::now())
                .map_or(0, |d| d.as_secs() / 86400);
            out.push(format!(
                "{}: certificate {} for {} (valid {days} more day(s))",
                l.addr,
                c.cert.display(),
                c.names.join(", "),
            ));
        }
    }
    out
}

/// The settings an upgrade script needs, as `key=value` lines (`fulcrum -T`).
pub fn settings_text(loaded: &Loaded) -> String {
    let s = &loaded.server;
    let c = &loaded.config;
    let grace = s.grace_period_seconds.unwrap_or(DEFAULT_GRACE_PERIOD);
    let shutdown = s
        .graceful_shutdown_timeout_seconds
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    let mut out = format!(
        "pid_file={}\nupgrade_sock={}\ngrace_period_seconds={grace}\n\
         graceful_shutdown_timeout_seconds={shutdown}\n\
         old_process_exit_seconds={}\n",
        s.pid_file,
        s.upgrade_sock,
        HANDOVER_ACCEPT_SECONDS + grace + shutdown,
    );
    // The first plain address, else the first (probed with https).
    let first = c
        .listen
        .iter()
        .find(|l| l.tls.is_none())
        .or(c.listen.first());
    if let Some(first) = first {
        let scheme = if first.tls.is_some() { "https" } else { "http" };
        let first = first.addr;
        // A wildcard address is probed on loopback.
        let ip = match first.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let host = match ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        out.push_str(&format!(
            "health_url={scheme}://{host}:{}{}\n",
            first.port(),
            c.health_path
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_for_the_upgrade_script() {
        let loaded = crate::config::from_str(
            "pid_file: /run/f/f.pid\nupgrade_sock: /run/f/u.sock\ngrace_period_seconds: 3\n\
             listen: [\"0.0.0.0:8080\", \"127.0.0.1:9\"]\nhealth_path: /hc\n",
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            settings_text(&loaded),
            "pid_file=/run/f/f.pid\nupgrade_sock=/run/f/u.sock\ngrace_period_seconds=3\n\
             graceful_shutdown_timeout_seconds=5\nold_process_exit_seconds=13\n\
             health_url=http://127.0.0.1:8080/hc\n"
        );
    }

    #[test]
    fn pid_dir_must_take_files() {
        assert!(check_pid_dir("/nonexistent-dir/f.pid")
            .unwrap_err()
            .starts_with(
                "pid_file /nonexistent-dir/f.pid: cannot create files in /nonexistent-dir"
            ));
        let tmp = std::env::temp_dir().join("f.pid");
        assert!(check_pid_dir(tmp.to_str().unwrap()).is_ok());
    }

    #[test]
    fn pid_file_moves_the_old_one_aside() {
        let dir = std::env::temp_dir().join(format!("fulcrum-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.pid");
        std::fs::write(&path, "1\n").unwrap();
        write_pid_file(path.to_str().unwrap());
        let me = format!("{}\n", std::process::id());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), me);
        assert_eq!(
            std::fs::read_to_string(dir.join("f.pid.old")).unwrap(),
            "1\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
