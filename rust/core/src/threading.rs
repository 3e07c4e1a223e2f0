//! Each model owns a rayon pool sized by `threads` (or `FASTTX_NUM_THREADS`, or the physical core
//! count, resolved on the Python side). Kernels never spawn threads themselves: they split work with
//! rayon inside `pool.install`, so a model's work uses exactly its own threads and two models in one
//! process do not oversubscribe each other's pools.

use crate::error::{Error, Result};

/// Compute threads beyond this many per CPU the process may use only add switching: more is
/// refused before any thread starts (a typo like `threads=10**6` would start threads until the OS
/// refused, then leave them behind).
pub const MAX_THREADS_PER_CPU: usize = 4;

/// The most compute threads a model may have on this machine.
pub fn max_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    MAX_THREADS_PER_CPU * cpus
}

pub fn build_pool(threads: usize) -> Result<rayon::ThreadPool> {
    if threads == 0 {
        return Err(Error::InvalidInput("threads must be at least 1".into()));
    }
    let limit = max_threads();
    if threads > limit {
        return Err(Error::InvalidInput(format!(
            "threads must be at most {limit} ({MAX_THREADS_PER_CPU} per CPU this process may use), got {threads}"
        )));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fasttx-{i}"))
        .build()
        .map_err(|e| Error::InvalidInput(format!("cannot start {threads} compute threads: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_thread_counts_are_refused_before_any_thread_starts() {
        let err = build_pool(1_000_000).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        assert!(err.to_string().contains("at most"), "{err}");
        assert!(build_pool(max_threads() + 1).is_err());
        assert!(build_pool(1).is_ok());
    }
}
