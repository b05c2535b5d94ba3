//! The error log (`error_log: {path, level, format}`): stderr or a file,
//! text or JSON lines, from `level` up (`RUST_LOG` overrides it for a
//! debugging session). On stderr under systemd each line starts with its
//! syslog priority (`<3>` for errors, sd-daemon(3)), so that `journalctl -p
//! err` finds them. A file is reopened on SIGUSR1 like the access log.

use crate::config::ErrorLogConfig;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Reopens the error log file (nothing to do for stderr).
#[derive(Clone, Default)]
pub(crate) struct ErrorLogFile {
    file: Option<(PathBuf, Arc<Mutex<File>>)>,
}

impl ErrorLogFile {
    pub(crate) fn reopen(&self) {
        let Some((path, file)) = &self.file else {
            return;
        };
        match open(path) {
            Ok(f) => {
                *file.lock().unwrap_or_else(|e| e.into_inner()) = f;
                log::info!("error log {}: reopened", path.display());
            }
            Err(e) => log::error!(
                "error log {}: cannot reopen ({e}); still writing to the file open before",
                path.display()
            ),
        }
    }
}

pub(crate) fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Writes through the current file, which a reopen swaps.
struct Shared(Arc<Mutex<File>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// Installs the process's logger. Fails if the file cannot be opened.
pub(crate) fn init(cfg: &ErrorLogConfig) -> Result<ErrorLogFile, String> {
    let mut builder = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(cfg.level.as_str()),
    );
    let mut handle = ErrorLogFile::default();
    // systemd passes JOURNAL_STREAM when stderr is the journal.
    let journal = cfg.path.is_none() && std::env::var_os("JOURNAL_STREAM").is_some();
    if let Some(path) = &cfg.path {
        let file =
            open(path).map_err(|e| format!("error_log {}: cannot open: {e}", path.display()))?;
        let shared = Arc::new(Mutex::new(file));
        builder.target(env_logger::Target::Pipe(Box::new(Shared(Arc::clone(
            &shared,
        )))));
        handle.file = Some((path.clone(), shared));
    }
    let json = cfg.json;
    builder.format(move |buf, record| {
        let ts = buf.timestamp();
        if journal {
            write!(buf, "<{}>", priority(record.level()))?;
        }
        if json {
            let line = serde_json::json!({
                "time": ts.to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        } else {
            writeln!(
                buf,
                "[{ts} {:<5} {}] {}",
                record.level(),
                record.target(),
                record.args()
            )
        }
    });
    builder
        .try_init()
        .map_err(|e| format!("cannot install the error log: {e}"))?;
    Ok(handle)
}

/// syslog priority of a level (sd-daemon(3)).
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        let p: Vec<u8> = [
            log::Level::Error,
            log::Level::Warn,
            log::Level::Info,
            log::Level::Debug,
        ]
        .into_iter()
        .map(priority)
        .collect();
        assert_eq!(p, [3, 4, 6, 7]);
    }
}
