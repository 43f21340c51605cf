//! A process-wide stop request (Ctrl-C, SIGTERM) for the long stretches that have no step to
//! finish first, such as preparing a dataset: they check it as they go and stop with an error,
//! leaving nothing half-written. The training loop has its own flag and stops after a step.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks the work in progress to stop (called from a signal handler).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// An error when a stop was asked for while doing `what`.
pub fn check(what: &str) -> super::Result<()> {
    if requested() {
        return Err(super::Error::Run(format!(
            "stopped while {what}; nothing was kept of it"
        )));
    }
    Ok(())
}
