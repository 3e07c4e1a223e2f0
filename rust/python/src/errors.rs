//! The one place where fasttx-core errors become Python exceptions, and where native work is entered:
//! [`run_native`] releases the GIL and turns a Rust panic into a Python `RuntimeError` instead of
//! letting it unwind into the interpreter.

use std::panic::{catch_unwind, AssertUnwindSafe};

use fasttx_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileNotFoundError, PyKeyboardInterrupt, PyMemoryError, PyOSError, PyRuntimeError,
    PyValueError,
};
use pyo3::prelude::*;

create_exception!(
    fasttx,
    ModelFormatError,
    PyValueError,
    "A weight file or model config is corrupt, inconsistent or of an unsupported kind."
);

pub fn to_pyerr(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        Error::Io { .. } => PyOSError::new_err(msg),
        Error::Format(_) => ModelFormatError::new_err(msg),
        Error::InvalidInput(_) => PyValueError::new_err(msg),
        Error::Interrupted => PyKeyboardInterrupt::new_err(msg),
        Error::OutOfMemory(_) => PyMemoryError::new_err(msg),
    }
}

/// Runs `f` without the GIL; an error or a panic inside comes back as a Python exception.
pub fn run_native<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> fasttx_core::Result<T> + Send,
{
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(result) => result.map_err(to_pyerr),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(PyRuntimeError::new_err(format!(
                "fasttx internal error (please report): {what}"
            )))
        }
    }
}
