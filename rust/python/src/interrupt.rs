//! Ctrl-C during a native call. Python handles a signal only between bytecodes of its main thread,
//! so a prefill that runs for seconds in one native call would ignore Ctrl-C until it ends. Instead,
//! the work runs on the model's pool while the calling thread waits for it, and every [`POLL`]
//! takes the GIL for a moment to let Python run its signal handlers. If a handler raises
//! (`KeyboardInterrupt`), the core is asked to stop at its next check (between sublayers) and
//! that exception is raised once the work has returned. The model stays usable: an interrupted
//! step leaves its session as it was before the step. Loading a model runs the same way on a
//! thread of its own (there is no model pool yet) and stops before its next tensor.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
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
    watch_signals(py, |interrupt, watch| {
        pool.in_place_scope(|scope| {
            let (done, finished) = channel();
            scope.spawn(move |_| {
                // The receiver lives until the scope ends, so the send cannot fail.
                let _ = done.send(work(interrupt));
            });
            watch(finished)
        })
    })
}

/// [`run_interruptible`] for work that has no pool of its own yet (loading a model): it runs on a
/// thread of its own, its parallel parts on rayon's global pool, as without the watch.
pub fn run_interruptible_on_thread<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&Arc<Interrupt>) -> fasttx_core::Result<T> + Send,
{
    watch_signals(py, |interrupt, watch| {
        std::thread::scope(|scope| {
            let (done, finished) = channel();
            scope.spawn(move || {
                let _ = done.send(work(interrupt));
            });
            watch(finished)
        })
    })
}

/// What a spawned computation reports back: its result, once.
type Finished<T> = Receiver<fasttx_core::Result<T>>;

/// Runs `start` (which spawns the work with the interrupt and then calls the watch it is given on
/// the work's result channel) with the GIL released; the watch waits for the result, looking for
/// a signal every [`POLL`] and raising the interrupt when a handler raised.
fn watch_signals<T, S>(py: Python<'_>, start: S) -> PyResult<T>
where
    T: Send,
    S: FnOnce(
            &Arc<Interrupt>,
            &mut dyn FnMut(Finished<T>) -> fasttx_core::Result<T>,
        ) -> fasttx_core::Result<T>
        + Send,
{
    let interrupt = Arc::new(Interrupt::default());
    let mut signal: Option<PyErr> = None;
    let result = run_native(py, || {
        let mut watch = |finished: Finished<T>| loop {
            match finished.recv_timeout(POLL) {
                Ok(result) => return result,
                // The work panicked; its scope re-raises that panic once this returns.
                Err(RecvTimeoutError::Disconnected) => return Err(Error::Interrupted),
                Err(RecvTimeoutError::Timeout) if signal.is_none() => {
                    if let Err(err) = Python::attach(|py| py.check_signals()) {
                        signal = Some(err);
                        interrupt.request();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        };
        start(&interrupt, &mut watch)
    });
    match signal {
        Some(err) => Err(err),
        None => result,
    }
}
