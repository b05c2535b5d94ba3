//! The access log: one line per request. Requests hand a small record to a
//! writer thread over a bounded channel; formatting and I/O happen there, so
//! the request path never blocks on the log (a full queue drops the line
//! and counts it). The writer lets records gather for [`BATCH_INTERVAL`]
//! and writes them together, and drains the queue when the server stops.

mod formats;

pub use formats::{format_combined, format_json};

use crate::config::{AccessLogFormat, AccessLogTarget};
use std::fmt::Write as _;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// How long the writer lets records gather before it writes them: under
/// load one wake-up and one write() per interval instead of per request,
/// which cost +49% CPU per proxied request (BENCHMARKS.md, scenario a).
/// nginx's `access_log ... buffer= flush=` makes the same trade.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(20);

/// How one upstream attempt ended, for the log.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    /// The server tried.
    pub addr: SocketAddr,
    /// Its status, or the status nginx would log for a failure (502/504).
    pub status: u16,
    /// Time from the attempt's start to its end.
    pub time: Duration,
}

/// Everything one log line needs.
#[derive(Debug, Clone)]
pub struct Record {
    /// When the request finished.
    pub at: SystemTime,
    /// Client address (socket peer).
    pub client: Option<IpAddr>,
    /// Request method.
    pub method: http::Method,
    /// Request target as received.
    pub uri: http::Uri,
    /// HTTP version of the request.
    pub version: http::Version,
    /// `Referer` header, if sent.
    pub referer: Option<String>,
    /// `User-Agent` header, if sent.
    pub user_agent: Option<String>,
    /// Response body bytes sent to the client (nginx `$body_bytes_sent`).
    pub body_bytes_sent: u64,
    /// Status sent to the client (0: none could be sent).
    pub status: u16,
    /// Pool that served it, if routed.
    pub pool: Option<Arc<str>>,
    /// Upstream attempts in order.
    pub attempts: Vec<AttemptLog>,
    /// Total time.
    pub total: Duration,
    /// The request id.
    pub request_id: String,
}

/// Handle to the access log writer. The writer thread starts on first use,
/// because Pingora may fork to daemonize after the handle is built.
#[derive(Clone)]
pub struct AccessLog {
    target: AccessLogTarget,
    format: AccessLogFormat,
    tx: Arc<OnceLock<Option<SyncSender<Option<Record>>>>>,
    /// The writer thread, joined by [`AccessLog::finish`].
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
    dropped: Arc<AtomicU64>,
    /// The file opened by `check()`, so that it is opened before Pingora
    /// switches to an unprivileged `user` (as nginx's master opens logs).
    opened: Arc<std::sync::Mutex<Option<std::fs::File>>>,
}

impl AccessLog {
    /// A log for `target` (`Off`: records are never built).
    pub fn new(target: &AccessLogTarget) -> AccessLog {
        AccessLog {
            target: target.clone(),
            format: AccessLogFormat::Default,
            tx: Arc::new(OnceLock::new()),
            writer: Arc::default(),
            dropped: Arc::new(AtomicU64::new(0)),
            opened: Arc::default(),
        }
    }

    /// Writes lines in `format` (`access_log_format`).
    pub fn with_format(mut self, format: AccessLogFormat) -> AccessLog {
        self.format = format;
        self
    }

    /// Opens the target at startup: fails early, and keeps the file for the
    /// writer, which starts later (possibly after a switch of user).
    pub fn check(&self) -> std::io::Result<()> {
        if let AccessLogTarget::File(p) = &self.target {
            *self.opened.lock().unwrap_or_else(|e| e.into_inner()) = Some(open(p)?);
        }
        Ok(())
    }

    /// Whether records are wanted at all (skip building them when off).
    pub fn enabled(&self) -> bool {
        self.target != AccessLogTarget::Off
    }

    /// Queues a record; never blocks.
    pub fn log(&self, r: Record) {
        let tx = self.tx.get_or_init(|| self.spawn_writer());
        if let Some(tx) = tx {
            if let Err(TrySendError::Full(_)) = tx.try_send(Some(r)) {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Writes every queued line and stops the writer (when the server has
    /// stopped: no request logs after this).
    pub fn finish(&self) {
        if let Some(Some(tx)) = self.tx.get() {
            let _ = tx.send(None); // None: write what is queued and end
        }
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }

    fn spawn_writer(&self) -> Option<SyncSender<Option<Record>>> {
        let out: Box<dyn Write + Send> = match &self.target {
            AccessLogTarget::Off => return None,
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(p) => match self.take_opened().map_or_else(|| open(p), Ok) {
                Ok(f) => Box::new(f),
                Err(e) => {
                    log::error!("access log {}: {e}; access logging disabled", p.display());
                    return None;
                }
            },
        };
        let (tx, rx) = sync_channel(16 * 1024);
        let format = self.format;
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, out, format))
            .map_err(|e| log::error!("cannot start the access log writer: {e}"))
            .ok()?;
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
        Some(tx)
    }

    fn take_opened(&self) -> Option<std::fs::File> {
        self.opened.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

fn open(p: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}

fn write_loop(rx: Receiver<Option<Record>>, out: Box<dyn Write + Send>, format: AccessLogFormat) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = String::with_capacity(256);
    let mut write = |r: &Record, out: &mut std::io::BufWriter<_>| {
        line.clear();
        match format {
            AccessLogFormat::Default => format_line(r, &mut line),
            AccessLogFormat::Combined => format_combined(r, &mut line),
            AccessLogFormat::Json => format_json(r, &mut line),
        }
        let _ = out.write_all(line.as_bytes());
    };
    // Idle: blocked in recv. A record wakes the writer, which then sleeps
    // while more gather (senders do not wake a sleeping thread), writes
    // everything queued and flushes once.
    while let Ok(first) = rx.recv() {
        if first.is_some() {
            std::thread::sleep(BATCH_INTERVAL);
        }
        let mut stop = false;
        for m in std::iter::once(first).chain(rx.try_iter()) {
            match m {
                Some(r) => write(&r, &mut out),
                None => stop = true,
            }
        }
        let _ = out.flush();
        if stop {
            return;
        }
    }
}

/// The default line:
/// `client [time] "METHOD uri" status pool=P upstream=a:1, b:2 upstream_status=502, 200 upstream_time=0.001, 0.002 total=0.004 id=...`
pub fn format_line(r: &Record, line: &mut String) {
    let client = r.client.map_or("-".to_string(), |c| c.to_string());
    let ts =
        r.at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
    let _ = write!(
        line,
        "{client} [{}.{:03}] \"{} {}\" {} pool={}",
        ts.as_secs(),
        ts.subsec_millis(),
        r.method,
        r.uri,
        r.status,
        r.pool.as_deref().unwrap_or("-"),
    );
    if r.attempts.is_empty() {
        line.push_str(" upstream=- upstream_status=- upstream_time=-");
    } else {
        line.push_str(" upstream=");
        join(line, &r.attempts, |l, a| {
            let _ = write!(l, "{}", a.addr);
        });
        line.push_str(" upstream_status=");
        join(line, &r.attempts, |l, a| {
            let _ = write!(l, "{}", a.status);
        });
        line.push_str(" upstream_time=");
        join(line, &r.attempts, |l, a| {
            let _ = write!(l, "{:.3}", a.time.as_secs_f64());
        });
    }
    let _ = writeln!(
        line,
        " total={:.3} id={}",
        r.total.as_secs_f64(),
        r.request_id
    );
}

fn join(line: &mut String, items: &[AttemptLog], f: impl Fn(&mut String, &AttemptLog)) {
    for (i, a) in items.iter().enumerate() {
        if i > 0 {
            line.push_str(", ");
        }
        f(line, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_attempt_nginx_style() {
        let r = formats::tests::record();
        let mut line = String::new();
        format_line(&r, &mut line);
        assert_eq!(
            line,
            "10.0.0.9 [971211336.123] \"GET /api/users/7?x=1\" 200 pool=user_service upstream=10.0.0.2:3001, 10.0.0.1:3011 upstream_status=502, 200 upstream_time=0.001, 0.002 total=0.004 id=abc\n"
        );
    }
}
