//! The process's error log: env_logger (`RUST_LOG`, default `info`), with
//! one message of Pingora's demoted to debug.
//!
//! Pingora 0.9 logs "failed to acquire reusable stream" at error level when
//! a pooled upstream connection it has just handed out is still referenced
//! by its idle-watch task, which runs on a random worker thread: the
//! request then opens a new connection and is served normally. With two
//! threads this happened to 2–4% of requests at light load and to 13% in
//! the soak test (44 lines per second), an error the operator can do
//! nothing about. It stays visible with `RUST_LOG=debug`.

use log::{Level, Log, Metadata, Record};

/// Target and text of the demoted message (pingora-core `connectors/mod.rs`).
const REUSE_RACE_TARGET: &str = "pingora_core::connectors";
const REUSE_RACE_TEXT: &str = "failed to acquire reusable stream";

/// env_logger, with the demotion above.
struct Logger {
    inner: env_logger::Logger,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if is_reuse_race(record) {
            let demoted = Record::builder()
                .args(*record.args())
                .level(Level::Debug)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build();
            if self.inner.enabled(demoted.metadata()) {
                self.inner.log(&demoted);
            }
            return;
        }
        self.inner.log(record)
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

fn is_reuse_race(record: &Record) -> bool {
    record.level() == Level::Error
        && record.target() == REUSE_RACE_TARGET
        && record.args().as_str() == Some(REUSE_RACE_TEXT)
}

/// Installs the logger for the process (once, before anything logs).
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Logger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(level: Level, target: &'static str, args: std::fmt::Arguments<'_>) -> bool {
        is_reuse_race(
            &Record::builder()
                .level(level)
                .target(target)
                .args(args)
                .build(),
        )
    }

    #[test]
    fn only_pingoras_reuse_race_error_is_demoted() {
        let text = format_args!("failed to acquire reusable stream");
        assert!(record(Level::Error, REUSE_RACE_TARGET, text));
        let text = format_args!("failed to acquire reusable stream");
        assert!(!record(Level::Error, "fulcrum::proxy", text));
        let text = format_args!("failed to acquire reusable stream");
        assert!(!record(Level::Warn, REUSE_RACE_TARGET, text));
        let other = format_args!("Fail to proxy");
        assert!(!record(Level::Error, REUSE_RACE_TARGET, other));
    }
}
