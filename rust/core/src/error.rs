//! The one error type of fasttx-core. The bindings map each variant to one Python exception class
//! (see `rust/python/src/errors.rs`), so every message must name its cause: file, tensor, option, value.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Error {
    /// A file could not be opened or read.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A weight file or config is corrupt, inconsistent or of an unsupported kind.
    Format(String),
    /// The caller passed a bad value (token id out of range, empty batch, bad shape, ...).
    InvalidInput(String),
    /// The caller asked the computation to stop (see [`crate::interrupt`]).
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            Error::Format(msg) | Error::InvalidInput(msg) => f.write_str(msg),
            Error::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `format_err!("...")` builds an [`Error::Format`].
#[macro_export]
macro_rules! format_err {
    ($($arg:tt)*) => { $crate::error::Error::Format(format!($($arg)*)) };
}

/// `input_err!("...")` builds an [`Error::InvalidInput`].
#[macro_export]
macro_rules! input_err {
    ($($arg:tt)*) => { $crate::error::Error::InvalidInput(format!($($arg)*)) };
}
