//! Facts about the machine: `memory_bandwidth`, the core's read-bandwidth probe, and
//! `matmul_rate`, a timing of the f32 matrix product (both for `fasttx bench`), and
//! `instruction_set`, the SIMD path the kernels take (for tests and reports).

use pyo3::prelude::*;

use crate::errors::run_native;

/// The machine's memory read bandwidth in GB/s: the best of several parallel reads of a
/// `megabytes` buffer with `threads` threads (GIL released).
#[pyfunction]
#[pyo3(signature = (threads, megabytes = 1024))]
pub fn memory_bandwidth(py: Python<'_>, threads: usize, megabytes: usize) -> PyResult<f64> {
    run_native(py, move || {
        fasttx_core::bandwidth::read_bandwidth(threads, megabytes << 20, 5)
    })
}

/// The instruction set the kernels run with: "avx512", "avx2", "neon" or "scalar" (the names
/// `FASTTX_ISA` takes), after detection and any `FASTTX_ISA` override.
#[pyfunction]
pub fn instruction_set() -> &'static str {
    fasttx_core::kernels::cpu::isa().name()
}

/// Timings of fasttx's f32 matrix product `y = x · wᵀ` (`x: [m, k]`, `w: [n, k]`) on fixed
/// pseudo-random data in a pool of `threads` threads: `(best, median)` seconds of `repeats` runs
/// after a warm-up (GIL released). For `fasttx bench gemm`.
#[pyfunction]
#[pyo3(signature = (m, k, n, threads, repeats = 5))]
pub fn matmul_rate(
    py: Python<'_>,
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
    repeats: usize,
) -> PyResult<(f64, f64)> {
    run_native(py, move || {
        fasttx_core::bandwidth::matmul_rate(m, k, n, threads, repeats)
    })
}
