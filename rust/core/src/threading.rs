//! Each model owns a rayon pool sized by `threads` (or `FASTTX_NUM_THREADS`, or the physical core
//! count, resolved on the Python side). Kernels never spawn threads themselves: they split work with
//! rayon inside `pool.install`, so a model's work uses exactly its own threads and two models in one
//! process do not oversubscribe each other's pools.

use crate::error::{Error, Result};

pub fn build_pool(threads: usize) -> Result<rayon::ThreadPool> {
    if threads == 0 {
        return Err(Error::InvalidInput("threads must be at least 1".into()));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fasttx-{i}"))
        .build()
        .map_err(|e| Error::InvalidInput(format!("cannot start {threads} compute threads: {e}")))
}
