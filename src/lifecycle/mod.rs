//! The process around the proxy: assembling and running the Pingora server
//! (`service`), SIGHUP reloads (`reload`), leaving on upgrade or stop
//! (`drain`), active health checks of the current pools
//! (`health_check`), servers from DNS (`discovery`), running unprivileged
//! after binding (`privileges`), systemd's readiness notifications
//! (`notify`), and `fulcrum -s` (`control`).

pub mod allocator;
pub mod control;
pub(crate) mod discovery;
pub(crate) mod drain;
pub(crate) mod error_log;
pub(crate) mod health_check;
pub(crate) mod notify;
pub(crate) mod privileges;
pub(crate) mod reload;
pub mod service;
pub(crate) mod signals;
