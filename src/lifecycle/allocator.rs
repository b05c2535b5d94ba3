//! Settings of mimalloc, the fulcrum binary's global allocator
//! (src/main.rs).
//!
//! mimalloc gives memory that has been free for `purge_delay` back to the
//! kernel; memory used again after that is faulted in afresh, zeroed by the
//! kernel. Its default, 1 s, is shorter than the cycles of HTTP/2 under
//! load: at 1,000 streams in flight fulcrum took 0.07–0.10 page faults per
//! request and about 10% more CPU per request than with a 10 s delay
//! (0–0.01 faults; docs/measurements.md). Plain HTTP/1 keepalive load
//! showed no fault to save (0.005 per request). The cost is that memory
//! freed after a burst goes back to the kernel 10 s later instead of 1 s.
//!
//! mimalloc purges only when a thread allocates or frees, so an idle
//! fulcrum kept its peak: 1,000 HTTP/2 connections idle after 100 KB
//! answers held 242 KB each for good; with [`collect`] once a second per
//! worker, 58 KB after 14 s (docs/measurements.md).

use std::os::raw::c_long;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (mimalloc.h);
/// libmimalloc-sys, pinned in Cargo.toml, does not export it by name.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc 3's default for it (ms): [`tune`] changes the option only when
/// it finds this there, so an index that names another option after an
/// upgrade changes nothing (and the unit test below fails).
const MIMALLOC_DEFAULT_PURGE_DELAY_MS: c_long = 1_000;

/// How long freed memory stays with fulcrum before it goes back (ms).
pub const PURGE_DELAY_MS: c_long = 10_000;

/// Sets fulcrum's purge delay, unless `MIMALLOC_PURGE_DELAY` is set (the
/// operator's choice wins). Call first thing in `main`.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mimalloc's option calls take a plain integer and are
    // thread-safe; PURGE_DELAY is within mimalloc's option range.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == MIMALLOC_DEFAULT_PURGE_DELAY_MS {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

/// Lets mimalloc give back what this thread freed more than the purge
/// delay ago. It does so only when the thread allocates or frees, so
/// after a burst an idle fulcrum would keep its peak memory for good
/// (docs/measurements.md); each worker calls this once a second (with
/// `work_stealing: true` there are no workers of fulcrum's, and no call).
pub fn collect() {
    // SAFETY: collects the calling thread's heap; no arguments to misuse.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index still names the purge delay: its default is mimalloc 3's,
    /// and `tune` moves it (the test binary has no MIMALLOC_PURGE_DELAY).
    #[test]
    fn tune_sets_mimallocs_purge_delay() {
        assert!(std::env::var_os("MIMALLOC_PURGE_DELAY").is_none());
        let before = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert!(
            before == MIMALLOC_DEFAULT_PURGE_DELAY_MS || before == PURGE_DELAY_MS,
            "option {PURGE_DELAY} is {before}: not mimalloc 3's purge_delay"
        );
        tune();
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) },
            PURGE_DELAY_MS
        );
    }
}
