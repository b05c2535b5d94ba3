//! Assembles the Pingora server: the proxy service on every `listen`
//! address, the health checker, and runs it.

use crate::access_log::AccessLog;
use crate::cli::Args;
use crate::config::Loaded;
use crate::health_check::HealthChecker;
use crate::proxy::Fulcrum;
use crate::runtime::{Runtime, SharedRuntime};
use crate::status::{CountConnections, Counters};
use arc_swap::ArcSwap;
use pingora::server::configuration::Opt;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::sync::Arc;

/// Builds every service and runs until a signal stops the process.
pub fn run(args: &Args, loaded: Loaded) -> Result<(), String> {
    let Loaded { config, mut server } = loaded;
    // Pingora stops retrying after `max_retries` attempts; let our own
    // `retry.tries` policy be the limit.
    let largest_pool = config
        .pools
        .iter()
        .map(|p| p.servers.len())
        .max()
        .unwrap_or(1);
    let largest_tries = config
        .pools
        .iter()
        .map(|p| p.retry.tries as usize)
        .max()
        .unwrap_or(1);
    server.max_retries = server.max_retries.max(largest_pool).max(largest_tries);

    let access_log = AccessLog::new(&config.access_log);
    access_log
        .check()
        .map_err(|e| format!("access_log: cannot open: {e}"))?;

    let opt = Opt {
        upgrade: args.upgrade,
        daemon: args.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let listen = config.listen.clone();
    let mut pingora_server = Server::new_with_opt_and_conf(opt, server);
    pingora_server.bootstrap();

    let runtime: SharedRuntime = Arc::new(ArcSwap::from_pointee(Runtime::build(config, None, 1)));
    let counters = Arc::new(Counters::default());
    let proxy = pingora::proxy::http_proxy(
        &pingora_server.configuration,
        Fulcrum::new(Arc::clone(&runtime), Arc::clone(&counters), access_log),
    );
    let mut service = Service::new(
        "fulcrum proxy".to_string(),
        CountConnections::new(proxy, counters),
    );
    for addr in &listen {
        service.add_tcp(&addr.to_string());
    }
    pingora_server.add_service(service);
    pingora_server.add_service(background_service(
        "health checks",
        HealthChecker::new(Arc::clone(&runtime)),
    ));
    pingora_server.run_forever()
}
