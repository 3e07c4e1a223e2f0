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
    /// Memory for a buffer whose size follows from the request (rows, tokens) could not be had.
    /// Such buffers are allocated fallibly ([`try_alloc`]) so that this is an error, not an abort.
    OutOfMemory(String),
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
            Error::Format(msg) | Error::InvalidInput(msg) | Error::OutOfMemory(msg) => {
                f.write_str(msg)
            }
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

/// A vector of `len` default values (zeros), or [`Error::OutOfMemory`] naming `what` when the
/// allocator refuses (or `len` elements overflow the address space) instead of aborting the process.
pub fn try_alloc<T: Clone + Default>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| out_of_memory::<T>(len, what))?;
    v.resize(len, T::default());
    Ok(v)
}

/// Number types whose all-zero bytes are the value zero (their `Default`).
///
/// # Safety
/// Implementors must be plain numbers: every bit pattern valid, zero bytes meaning zero.
pub unsafe trait Zeroed: Copy + Default {}
// SAFETY: IEEE 754 +0.0 is all zero bits; integers likewise.
unsafe impl Zeroed for f32 {}
// SAFETY: as above.
unsafe impl Zeroed for u8 {}

/// [`try_alloc`] for plain numbers, from zero-filled memory that is not written: large buffers
/// come from fresh pages the OS maps on first write, so a buffer reserved for a whole generation
/// (the KV cache of every position a request may reach) costs resident memory only as it fills.
pub fn try_zeroed<T: Zeroed>(len: usize, what: &str) -> Result<Vec<T>> {
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| out_of_memory::<T>(len, what))?;
    if layout.size() == 0 {
        return Ok(vec![T::default(); len]);
    }
    // SAFETY: the layout has a nonzero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
    if ptr.is_null() {
        return Err(out_of_memory::<T>(len, what));
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `len` values of `T` (what a
    // Vec of capacity `len` frees), and zero bytes are `len` valid values (`Zeroed`).
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Fails as [`try_alloc`] would for `len` values of `T`, without keeping (or touching) the memory:
/// for a buffer that code which cannot fail is about to allocate.
pub fn check_alloc<T>(len: usize, what: &str) -> Result<()> {
    let mut v: Vec<T> = Vec::new();
    let reserved = v.try_reserve_exact(len);
    // An allocation never used may be removed by the optimizer, and with it the check: release
    // builds answered Ok for 2^62 bytes. Looking at the buffer keeps the allocator's answer.
    std::hint::black_box(v.as_ptr());
    reserved.map_err(|_| out_of_memory::<T>(len, what))
}

fn out_of_memory<T>(len: usize, what: &str) -> Error {
    let gib = len as f64 * std::mem::size_of::<T>() as f64 / (1u64 << 30) as f64;
    Error::OutOfMemory(format!(
        "out of memory: {what} needs {gib:.1} GiB ({len} values), which cannot be allocated"
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_alloc_gives_zeros() {
        let v: Vec<f32> = try_alloc(5, "test").unwrap();
        assert_eq!(v, vec![0.0; 5]);
    }

    #[test]
    fn impossible_allocation_is_an_error_not_an_abort() {
        // More bytes than the address space: the allocator is never even asked.
        let err = try_alloc::<f32>(usize::MAX / 2, "the KV cache").unwrap_err();
        assert!(matches!(err, Error::OutOfMemory(_)));
        assert!(err.to_string().contains("the KV cache"), "{err}");
        // Within the address space but beyond any machine (2^62 bytes): the allocator refuses.
        assert!(matches!(
            check_alloc::<u8>(1 << 62, "logits"),
            Err(Error::OutOfMemory(_))
        ));
        assert!(check_alloc::<f32>(1 << 20, "logits").is_ok());
    }
}
