//! Ctrl-C during a native call. Python handles a signal only between bytecodes of its main thread,
//! so a prefill that runs for seconds in one native call would ignore Ctrl-C until it ends. Instead,
//! the work runs on the model's pool while the calling thread waits for it, and every [`POLL`]
//! takes the GIL for a moment to let Python run its signal handlers. If a handler raises
//! (`KeyboardInterrupt`), the core is asked to stop at its next check (between sublayers) and
//! that exception is raised once the work has returned. The model stays usable: an interrupted
//! step leaves its session as it was before the step.

use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use fasttx_core::interrupt::Interrupt;
use fasttx_core::Error;
use pyo3::prelude::*;

use crate::errors::run_native;

/// How often the waiting thread looks for a signal: well within the 0.5 s a user waits for Ctrl-C,
/// and rare enough that taking the GIL costs nothing measurable.
const POLL: Duration = Duration::from_millis(50);

/// [`run_native`] for work that may run long: `work` gets the [`Interrupt`] to hand to the core,
/// runs on `pool`, and is stopped by Ctrl-C (the `KeyboardInterrupt` comes back as the error).
pub fn run_interruptible<T, F>(py: Python<'_>, pool: &rayon::ThreadPool, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&Arc<Interrupt>) -> fasttx_core::Result<T> + Send,
{
    let interrupt = Arc::new(Interrupt::default());
    let mut signal: Option<PyErr> = None;
    let result = run_native(py, || {
        let (done, finished) = channel();
        pool.in_place_scope(|scope| {
            let interrupt = &interrupt;
            scope.spawn(move |_| {
                // The receiver lives until the scope ends, so the send cannot fail.
                let _ = done.send(work(interrupt));
            });
            loop {
                match finished.recv_timeout(POLL) {
                    Ok(result) => return result,
                    // The work panicked; the scope re-raises that panic once this returns.
                    Err(RecvTimeoutError::Disconnected) => return Err(Error::Interrupted),
                    Err(RecvTimeoutError::Timeout) if signal.is_none() => {
                        if let Err(err) = Python::attach(|py| py.check_signals()) {
                            signal = Some(err);
                            interrupt.request();
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
        })
    });
    match signal {
        Some(err) => Err(err),
        None => result,
    }
}
