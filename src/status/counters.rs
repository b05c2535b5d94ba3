//! Process-wide connection and request counters (the stub_status numbers),
//! shared by all worker threads, and the listener wrapper that feeds them.

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Counters for the whole process, as nginx's stub_status reports them.
#[derive(Debug, Default)]
pub struct Counters {
    accepts: AtomicU64,
    active: AtomicU64,
    requests: AtomicU64,
    writing: AtomicU64,
    /// Connections whose request header has begun but is not complete
    /// (kept by the client connections' header deadline, `client_conn`).
    reading: Arc<AtomicUsize>,
    /// Connections closed at once because `limits.max_connections` was reached.
    dropped: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Connections open now.
    pub active: u64,
    /// Connections accepted since start.
    pub accepts: u64,
    /// Connections handled: accepts minus those closed at once because
    /// `limits.max_connections` was reached (as nginx counts them).
    pub handled: u64,
    /// Requests since start.
    pub requests: u64,
    /// Connections reading a request header: its first bytes arrived, the
    /// rest has not (nginx counts a connection here from the first byte too).
    pub reading: u64,
    /// Connections with a request being processed.
    pub writing: u64,
    /// Idle keepalive connections.
    pub waiting: u64,
}

impl Counters {
    /// Reads all counters (each one atomically, not all together).
    pub fn snapshot(&self) -> Snapshot {
        let active = self.active.load(Relaxed);
        let writing = self.writing.load(Relaxed).min(active);
        let reading = (self.reading.load(Relaxed) as u64).min(active - writing);
        let accepts = self.accepts.load(Relaxed);
        Snapshot {
            active,
            accepts,
            handled: accepts.saturating_sub(self.dropped.load(Relaxed)),
            requests: self.requests.load(Relaxed),
            reading,
            writing,
            waiting: active - writing - reading,
        }
    }

    /// The count of connections in the middle of a request header, for the
    /// code that sees those bytes arrive.
    pub fn reading_count(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.reading)
    }

    /// A connection was closed at once: `limits.max_connections` was reached.
    pub fn connection_dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }

    /// A request header was read; the guard ends the "writing" phase on drop.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Relaxed);
        self.writing.fetch_add(1, Relaxed);
        RequestGuard(Arc::clone(self))
    }
}

/// Marks one request in progress.
pub struct RequestGuard(Arc<Counters>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.writing.fetch_sub(1, Relaxed);
    }
}

struct ConnectionGuard(Arc<Counters>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// Wraps the HTTP app so each downstream connection is counted from accept
/// to close (one `process_new` call spans a whole HTTP/1 keepalive connection).
pub struct CountConnections<A> {
    inner: Arc<A>,
    counters: Arc<Counters>,
}

impl<A> CountConnections<A> {
    /// Counts the connections served by `inner`.
    pub fn new(inner: A, counters: Arc<Counters>) -> Self {
        CountConnections {
            inner: Arc::new(inner),
            counters,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for CountConnections<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.counters.accepts.fetch_add(1, Relaxed);
        self.counters.active.fetch_add(1, Relaxed);
        let _open = ConnectionGuard(Arc::clone(&self.counters));
        let mut next = self.inner.process_new(stream, shutdown).await;
        // Pingora's HTTP app loops over keepalive requests itself; loop here
        // too in case an app hands the stream back, so it stays one connection.
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}
