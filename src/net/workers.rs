//! Worker threads for client connections: nginx's worker model inside one
//! process. Each worker thread runs its own single-threaded runtime and its
//! own proxy, and keeps its own idle upstream connections
//! (src/net/upstream/connector.rs); a client connection stays on the worker it was
//! given at accept (round-robin).
//!
//! Why not one proxy for all threads on Pingora's multi-threaded runtime:
//! Pingora 0.9's pool, shared by all threads, watched each idle upstream
//! connection from a task on a random thread. When a request on another
//! thread took the connection while that task was letting go of it, Pingora
//! dropped the connection ("failed to acquire reusable stream") and the
//! request opened a new one: 10 to 30 new connections per 4,000 requests of
//! four keepalive clients on two threads (tests/integration/upstream_pool.rs), 13% of
//! requests in the soak. fulcrum now keeps idle connections itself, but a
//! proxy per worker still keeps what Pingora's connector looks up on every
//! request (its empty pool, behind a lock) from being shared between
//! threads, and a single-threaded runtime needs no cross-thread wake-ups.
//!
//! Worker 0 is the thread Pingora runs the listening service on (a runtime
//! of one thread); the others are started here and stop when Pingora stops
//! that service's runtime, at the end of the grace period, as its own
//! runtimes do. With `work_stealing: true` there is one proxy on Pingora's
//! work-stealing runtime, as before.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// See [`anchor_timers`]: one wake-up per second and worker.
const ANCHOR_PERIOD: Duration = Duration::from_secs(1);

thread_local! {
    /// The index of the worker this thread is (0 outside the workers).
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// One app per worker; each connection uses the one of the thread it runs on.
pub struct PerWorker<A> {
    apps: Box<[Arc<A>]>,
}

impl<A> PerWorker<A> {
    /// `count` apps (at least one), each made by `make`.
    pub fn new(count: usize, mut make: impl FnMut() -> A) -> Self {
        PerWorker {
            apps: (0..count.max(1)).map(|_| Arc::new(make())).collect(),
        }
    }

    /// The calling worker thread's app.
    pub fn current(&self) -> &Arc<A> {
        // Outside a worker (tests, a work-stealing runtime) the index is 0.
        self.apps.get(INDEX.get()).unwrap_or(&self.apps[0])
    }

    /// Every worker's app, for what concerns them all (cleanup).
    pub fn all(&self) -> &[Arc<A>] {
        &self.apps
    }
}

/// The runtimes of the worker threads and the means to stop them.
pub struct Workers {
    handles: Box<[Handle]>,
    next: AtomicUsize,
    /// Workers 1.. (worker 0 belongs to Pingora): a stop signal and the thread.
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Workers {
    /// Makes the calling thread (inside a runtime) worker 0 and starts
    /// `count - 1` more threads named `name`, each with its own runtime.
    pub fn start(name: &str, count: usize) -> std::io::Result<Workers> {
        INDEX.set(0);
        let mut handles = vec![Handle::current()];
        let mut threads = Vec::new();
        for index in 1..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    INDEX.set(index);
                    // Either a stop or its sender dropped: stop.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Dropping the runtime drops the connections still on
                    // it, as Pingora's runtime shutdown does.
                })?;
            threads.push((stop, thread));
        }
        for handle in &handles {
            handle.spawn(anchor_timers());
        }
        Ok(Workers {
            handles: handles.into_boxed_slice(),
            next: AtomicUsize::new(0),
            threads,
        })
    }

    /// The worker for the next connection (round-robin).
    pub fn next(&self) -> &Handle {
        let n = self.next.fetch_add(1, Relaxed);
        &self.handles[n % self.handles.len()]
    }
}

impl Drop for Workers {
    /// Stops workers 1.. and waits for them: nothing of theirs may run once
    /// the process goes on to exit (the access log's last lines are written
    /// after every request has ended).
    fn drop(&mut self) {
        let threads: Vec<JoinHandle<()>> = self
            .threads
            .drain(..)
            .map(|(stop, thread)| {
                let _ = stop.send(());
                thread
            })
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// Keeps a timer of the worker's runtime due within [`ANCHOR_PERIOD`].
///
/// Registering a timer that is due before the time driver's planned wake-up
/// makes tokio wake the driver (an eventfd write, then one more epoll_wait).
/// With idle keepalive connections the planned wake-up is their 75 s
/// timeout, so each proxied request's 60 s upstream read timeout (Pingora's)
/// cost two system calls. With a timer always due within a second, the
/// timeouts of a request are never the earliest.
async fn anchor_timers() {
    loop {
        tokio::time::sleep(ANCHOR_PERIOD).await;
        // The same wake-up closes idle upstream connections that expired
        // or that their server closed, and lets the allocator give back
        // memory freed long enough ago.
        crate::net::upstream::connector::sweep_idle();
        crate::lifecycle::allocator::collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_thread_uses_its_own_app_and_connections_go_round_robin() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let workers = Workers::start("test worker", 3).unwrap();
            let mut made = 0;
            let apps = Arc::new(PerWorker::new(3, || {
                made += 1;
                made
            }));
            let mut seen = Vec::new();
            for _ in 0..6 {
                let apps = Arc::clone(&apps);
                let task = workers.next().spawn(async move {
                    (
                        **apps.current(),
                        std::thread::current().name().map(String::from),
                    )
                });
                seen.push(task.await.unwrap());
            }
            let apps: Vec<usize> = seen.iter().map(|s| s.0).collect();
            assert_eq!(apps, [1, 2, 3, 1, 2, 3]);
            assert_eq!(seen[1].1.as_deref(), Some("test worker"));
            assert_eq!(seen[2].1.as_deref(), Some("test worker"));
            drop(workers); // stops and joins threads 1 and 2
        });
    }
}
