//! Numeric kernels. Each public function picks the best implementation for the running CPU
//! (see [`cpu`]) and has a scalar reference in the same file that the SIMD paths are tested against.
//!
//! Conventions: row-major `f32` slices; weights are stored `[out_features, in_features]` as in
//! PyTorch's `nn.Linear`, so a projection is `y = x · wᵀ` ([`matmul::matmul_nt`]).
//!
//! Layout:
//! * one file per `f32` kernel ([`matmul`], [`vector`], [`attend`], [`norm`], [`activation`],
//!   [`softmax`], [`topk`]) with its public entry point, dispatch, scalar reference and tests;
//!   their SIMD inner loops in one file per instruction set (`x86_avx2.rs`, `x86_avx512.rs`),
//!   except [`attend`]'s two small AVX-512 loops, which sit beside their dispatch;
//! * [`quant`], a folder of its own: the quantized block types (one table of their facts, one
//!   file per type), the packed weight layout, the quantized products with their portable
//!   reference and one file per instruction set (AVX2, AVX-512, NEON), and per-channel int8;
//! * [`cpu`]: which instruction set runs (detected once, `FASTTX_ISA` to force one);
//!   `special.rs`: `erf` for the exact GELU; `testutil.rs`: helpers of the kernel tests.
//!
//! Kernels that parallelise (the matrix products) use the *current* rayon pool, so callers run
//! them inside the model's `pool.install`.

pub mod activation;
pub mod attend;
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
