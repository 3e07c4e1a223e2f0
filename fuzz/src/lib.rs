//! What the fuzz targets share: putting fuzzed bytes where fasttx-core's readers can open them,
//! and driving a loaded model through one decoding step.
//!
//! The readers take paths and memory-map the file (as the real loader does), so each input is
//! written to a file on a RAM-backed filesystem (`/dev/shm` where there is one): a copy and two
//! system calls per run, cheap beside the parsing, and it exercises the same `open` the Python
//! side calls. Each fuzzing process (`-jobs`/`-workers` start several) has its own directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fasttx_core::models::{Model, StepInput, TokenBatch, Want};

/// This process's scratch directory, made on first use.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("fasttx-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the fuzzing scratch directory");
        dir
    })
}

/// Writes `bytes` to the scratch file `name` (the extension matters: the loader reads a single
/// `.gguf` file as GGUF) and returns its path. Nothing may still map the previous contents of
/// that name: rewriting a mapped file would fault the reader (see README, "Untrusted files").
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, bytes).expect("cannot write the fuzzing scratch file");
    path
}

/// Starts a session on a one-token prompt and runs one decoding step: what `generate` does first,
/// so sizes that only matter once the model runs (heads, head dims, positions) are exercised too.
/// Errors are fine; panics and aborts are what the fuzzer reports.
pub fn run_one_step(model: &dyn Model) {
    if model.vocab_size() == 0 {
        return;
    }
    let Ok(batch) = TokenBatch::new(vec![0], None, 1, 1) else {
        return;
    };
    let Ok(mut session) = model.start(&batch) else {
        return;
    };
    let mut logits = Vec::new();
    let want = Want {
        last_only: true,
        log_softmax: true,
    };
    // Decoder-only models take the prompt as their first step; T5 starts its decoder from one token.
    let _ = session.step(&StepInput::tokens(&[0], 1), want, &mut logits);
}
