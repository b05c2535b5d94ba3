//! The process around the proxy: assembling and running the Pingora server
//! (`service`), SIGHUP reloads (`reload`), leaving on upgrade or stop
//! (`drain`), and running unprivileged after binding (`privileges`).

pub mod drain;
pub mod privileges;
pub mod reload;
pub mod service;
