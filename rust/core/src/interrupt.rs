//! Stopping a long native call from outside. A prefill of thousands of tokens is one call that
//! runs for seconds; the caller (the Python bindings, on Ctrl-C) raises an [`Interrupt`] it handed
//! to the call, and the forward passes check it between layers and sublayers, returning
//! [`Error::Interrupted`]. A check is one relaxed atomic load, so it costs nothing beside a layer.
//!
//! An interrupted step leaves its session as it was before the step: the key/value cache commits a
//! step only when every layer has run, and the row positions are advanced only on success.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// A request to stop, raised by one thread and seen by the computation on others.
#[derive(Debug, Default)]
pub struct Interrupt(AtomicBool);

impl Interrupt {
    /// Asks the computation watching this to stop at its next check.
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `Err(Error::Interrupted)` once `interrupt` (if any) has been requested.
pub(crate) fn check(interrupt: Option<&Interrupt>) -> Result<()> {
    match interrupt {
        Some(i) if i.is_requested() => Err(Error::Interrupted),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_fails_only_after_a_request() {
        let i = Interrupt::default();
        assert!(check(None).is_ok());
        assert!(check(Some(&i)).is_ok());
        i.request();
        assert!(matches!(check(Some(&i)), Err(Error::Interrupted)));
    }
}
