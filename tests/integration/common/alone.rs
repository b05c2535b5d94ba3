//! Who shares the machine. The tests of every module run in parallel
//! threads of one process; most tolerate another test's processes beside
//! theirs, but a test that measures latency-driven shares (ewma) or that
//! loads every core (the benchmark smoke test) must run with no other
//! test's processes. Such a test takes [`alone`] before it starts any
//! process; every helper that starts processes (fulcrum, demo backends,
//! daemons, nginx, Chromium, the two-machine demo) holds a [`Shared`] for
//! as long as they run.
//!
//! - [`alone`] waits until no [`Shared`] is held, and while it is held a
//!   test that has not started processes yet waits in [`shared`] (so that
//!   a queued alone test gets its turn between two tests).
//! - A test that already holds a [`Shared`] is never made to wait for a
//!   queued alone test (that test waits for it); it only waits, in a later
//!   [`shared`], if an alone test took the machine while it held none.

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard};

struct State {
    /// An alone test is running.
    alone: bool,
    /// Alone tests waiting for their turn.
    queued: usize,
    /// [`Shared`] tokens held.
    shared: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    alone: false,
    queued: 0,
    shared: 0,
});
static CHANGED: Condvar = Condvar::new();

thread_local! {
    /// This thread took [`alone`] and has not dropped it.
    static OWNS_ALONE: Cell<bool> = const { Cell::new(false) };
    /// This thread took a [`Shared`] (libtest runs each test on a thread of
    /// its own, so: this test has started processes).
    static STARTED: Cell<bool> = const { Cell::new(false) };
}

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held while no other test's processes run; see the module doc.
#[must_use = "the test runs alone only while this is held"]
pub struct Alone(());

/// Waits until no other test's processes run and keeps new ones from
/// starting until the returned guard is dropped. Call it first, before
/// the test starts any process, and start them from the test's own thread
/// (one it spawns would wait for the guard).
pub fn alone() -> Alone {
    assert!(
        !STARTED.get(),
        "alone() must come before the test starts processes (it would wait for its own)"
    );
    let mut s = state();
    s.queued += 1;
    while s.alone || s.shared > 0 {
        s = CHANGED.wait(s).unwrap_or_else(|e| e.into_inner());
    }
    s.queued -= 1;
    s.alone = true;
    OWNS_ALONE.set(true);
    Alone(())
}

impl Drop for Alone {
    fn drop(&mut self) {
        state().alone = false;
        OWNS_ALONE.set(false);
        CHANGED.notify_all();
    }
}

/// Held by whatever runs processes of a test; see the module doc.
pub struct Shared(());

/// A token for processes about to start: waits while an alone test runs
/// (unless this is that test), and, on a test's own thread (libtest names
/// it after the test) that has taken none yet, while one is queued.
/// Unnamed threads, which a test spawns, never wait for a queued one: their
/// test may hold tokens the queued one waits for.
pub fn shared() -> Shared {
    let mut s = state();
    if !OWNS_ALONE.get() {
        let test_thread = std::thread::current().name().is_some();
        let fresh = test_thread && !STARTED.get();
        while s.alone || (fresh && s.queued > 0) {
            s = CHANGED.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
    s.shared += 1;
    STARTED.set(true);
    Shared(())
}

impl Drop for Shared {
    fn drop(&mut self) {
        state().shared -= 1;
        CHANGED.notify_all();
    }
}
