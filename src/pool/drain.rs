//! Why a healthy server may still get no new requests: an operator drained
//! it (the status page's drain endpoints), or a reload removed it from its
//! pool and it only finishes what it has. Neither is health: active checks
//! keep running against a drained server, and both states outlive any
//! failure.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// One server's drain state.
#[derive(Default)]
pub(crate) struct Drain {
    drained: AtomicBool,
    removed: AtomicBool,
}

impl Drain {
    /// Drained by an operator.
    pub(super) fn is_drained(&self) -> bool {
        self.drained.load(Relaxed)
    }

    /// Sets or clears the operator drain.
    pub(super) fn set_drained(&self, on: bool) {
        self.drained.store(on, Relaxed);
    }

    /// Removed from its pool by a reload.
    pub(super) fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    /// A reload removed the server (`true`) or has it again (`false`).
    pub(super) fn set_removed(&self, on: bool) {
        self.removed.store(on, Relaxed);
    }
}
