//! Numeric kernels. Each public function picks the best implementation for the running CPU
//! (see [`cpu`]) and has a scalar reference in the same file that the SIMD paths are tested against.
//!
//! Conventions: row-major `f32` slices; weights are stored `[out_features, in_features]` as in
//! PyTorch's `nn.Linear`, so a projection is `y = x · wᵀ` ([`matmul::matmul_nt`]).
//!
//! The SIMD code lives in one file per instruction set (`x86_avx2.rs`, `x86_avx512.rs`); the
//! files named after a kernel hold its public entry point, dispatch, scalar reference and tests.
//! Kernels that parallelise (the matrix products) use the *current* rayon pool, so callers run
//! them inside the model's `pool.install`.

pub mod activation;
pub mod cpu;
pub mod matmul;
pub mod norm;
pub mod quant;
pub mod softmax;
mod special;
pub mod topk;
pub mod vector;

#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

#[cfg(test)]
mod testutil;
